"""Opening a kiosk from a tool (a plugin's command, a script) rather than
from ``kiosk run``: the same plugins and checks, handed out as the view."""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path


@contextmanager
def opened_kiosk(config_path, *, create: bool = False, overrides: dict | None = None, clock=None,
                 plugins: dict | None = None):
    from .boot import load_host, open_kiosk
    host = load_host()
    for name, plugin in (plugins or {}).items():
        host.register(plugin, name)
    host.check()
    kiosk = open_kiosk(Path(config_path), create=create, overrides=overrides, clock=clock, host=host)
    try:
        yield kiosk.view
    finally:
        kiosk.close()
