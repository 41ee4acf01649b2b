"""The rooms keep their doors: read every module's imports with ``ast``.

- a built-in plugin imports from the kiosk only through ``kiosk`` itself (the
  one import surface a third-party plugin has) or ``kiosk.testing`` (the test
  peers, public as gpiozero's ``pins.mock``);
- the core (``kiosk/``) never imports a plugin; it names the built-ins in
  ``kiosk.defaults.DEFAULT_PLUGINS`` as strings;
- nothing on the sale path imports ``kiosk.testing``.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

import kiosk

ROOT = Path(__file__).resolve().parent.parent
PLUGIN_DOORS = {"kiosk", "kiosk.testing"}
TOOLS = {"kiosk/demo.py", "kiosk/cli.py"}      # may start the fake Stripe for the demo


def imports_of(path: Path) -> list[tuple[int, str]]:
    """Every module ``path`` imports, absolute, with its line number."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module
            found.append((node.lineno, module))
            # `from kiosk import engine` imports a module, not a name from the surface
            if module == "kiosk":
                found += [(node.lineno, f"kiosk.{a.name}") for a in node.names
                          if (ROOT / "kiosk" / f"{a.name}.py").exists() and a.name != "notices"]
    return found


def python_files(folder: str) -> list[Path]:
    return sorted(p for p in (ROOT / folder).rglob("*.py") if "__pycache__" not in p.parts)


@pytest.mark.parametrize("path", python_files("plugins"), ids=lambda p: str(p.relative_to(ROOT)))
def test_a_built_in_plugin_uses_only_the_one_door(path):
    wrong = [f"{path.relative_to(ROOT)}:{line}: {module}" for line, module in imports_of(path)
             if (module == "kiosk" or module.startswith("kiosk.")) and module not in PLUGIN_DOORS
             and not module.startswith("kiosk.testing.")]
    assert not wrong, "imports past the plugin surface (use `from kiosk import ...`):\n" + "\n".join(wrong)


@pytest.mark.parametrize("path", python_files("kiosk"), ids=lambda p: str(p.relative_to(ROOT)))
def test_the_core_never_imports_a_plugin(path):
    wrong = [f"{path.relative_to(ROOT)}:{line}: {module}" for line, module in imports_of(path)
             if module.split(".")[0] in ("plugins", "kiosk_builtins")]
    assert not wrong, "the core imports a plugin:\n" + "\n".join(wrong)


@pytest.mark.parametrize("path", [p for p in python_files("kiosk") if "testing" not in p.parts],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_the_sale_path_never_imports_the_test_peers(path):
    if str(path.relative_to(ROOT)) in TOOLS:
        pytest.skip("a tool: the demo starts the fake Stripe on purpose")
    wrong = [f"{path.relative_to(ROOT)}:{line}: {module}" for line, module in imports_of(path)
             if module.startswith("kiosk.testing")]
    assert not wrong, "\n".join(wrong)


def test_the_check_sees_a_plugin_reaching_past_the_door(tmp_path):
    """The reader of imports is not blind: a plugin importing the engine is caught."""
    bad = ROOT / "plugins" / "_boundary_probe.py"
    bad.write_text("from kiosk.engine import Kiosk\nfrom kiosk import engine\nfrom kiosk import hookimpl\n")
    try:
        modules = [m for _, m in imports_of(bad)]
    finally:
        bad.unlink()
    assert "kiosk.engine" in modules and modules.count("kiosk.engine") == 2


def test_everything_the_surface_names_exists():
    missing = [name for name in kiosk.__all__ if not hasattr(kiosk, name)]
    assert not missing


def test_the_built_ins_install_under_a_name_that_cannot_collide():
    import tomllib
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    setuptools = project["tool"]["setuptools"]
    assert setuptools["package-dir"]["kiosk_builtins"] == "plugins"
    assert "plugins" not in setuptools["packages"]
    # every package folder is listed, so a wheel carries all of them
    folders = {".".join(("kiosk_builtins",) + p.parent.relative_to(ROOT / "plugins").parts)
               for p in (ROOT / "plugins").rglob("__init__.py")}
    folders |= {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "kiosk").rglob("__init__.py")}
    assert folders <= set(setuptools["packages"])
    assert "kiosk" not in project["project"].get("entry-points", {}), \
        "built-ins are registered from DEFAULT_PLUGINS, not entry points"
