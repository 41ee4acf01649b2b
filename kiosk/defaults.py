"""The built-in plugins, registered before any third-party one (as datasette's
``DEFAULT_PLUGINS``).

They live in the repository's ``plugins/`` folder and install as the
``kiosk_builtins`` package.  The core names them here, as strings, and never
imports their code for its own use: they reach the kiosk through the same
hooks as anyone's plugin.  A checkout that is not installed still finds them:
the folder beside ``kiosk/`` is loaded under the installed name.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

BUILTINS_PACKAGE = "kiosk_builtins"

# (name in config.toml and `kiosk plugins`, module holding ``plugin``)
DEFAULT_PLUGINS: tuple[tuple[str, str], ...] = (
    ("tinydb", "kiosk_builtins.tinydb_store"),
    ("stripe", "kiosk_builtins.stripe_sync"),
    ("simulated", "kiosk_builtins.simulated_reader"),
    ("ble", "kiosk_builtins.ble_reader"),
    ("feed", "kiosk_builtins.feed_notifier"),
    ("standard_limits", "kiosk_builtins.standard_limits"),
    ("status_light", "kiosk_builtins.status_light"),
    ("touchscreen", "kiosk_builtins.touchscreen"),
    ("power", "kiosk_builtins.power"),
    ("receipt_printer", "kiosk_builtins.receipt_printer"),
)


def import_builtin(module_name: str):
    """Import one built-in plugin module, from the installed package or, in a
    checkout that is not installed, from ``plugins/`` beside ``kiosk/``."""
    if BUILTINS_PACKAGE not in sys.modules and importlib.util.find_spec(BUILTINS_PACKAGE) is None:
        _load_checkout_folder()
    return importlib.import_module(module_name)


def _load_checkout_folder() -> None:
    folder = Path(__file__).resolve().parent.parent / "plugins"
    if not (folder / "__init__.py").is_file():
        raise ModuleNotFoundError(f"the built-in plugins ({BUILTINS_PACKAGE}) are not installed "
                                  f"and there is no {folder}", name=BUILTINS_PACKAGE)
    spec = importlib.util.spec_from_file_location(BUILTINS_PACKAGE, folder / "__init__.py",
                                                  submodule_search_locations=[str(folder)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[BUILTINS_PACKAGE] = module
    spec.loader.exec_module(module)
