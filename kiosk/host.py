"""The pluggy host: finds plugins, checks them, and calls them safely.

Built-in plugins in ``plugins/`` are found through the same ``kiosk``
entry-point group as third-party ones.  ``KIOSK_DISABLE_PLUGINS`` (comma
separated names) switches plugins off.  A plugin that fails to import is logged
and skipped, unless it is the one configured for a kind; a plugin with a hook
the contract does not know fails loudly at start.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from importlib.metadata import entry_points

import pluggy

from . import hookspecs
from .config import ConfigError, Setting
from .interfaces import ReaderError, StoreAlarm, StoreBusy

log = logging.getLogger("kiosk.host")

ENTRY_POINT_GROUP = hookspecs.PROJECT

# The hook that makes a plugin a given kind.
KIND_HOOKS = {
    "kiosk_open_reader": "reader",
    "kiosk_open_storage": "storage",
    "kiosk_open_sync": "sync",
    "kiosk_notify": "notifier",
    "kiosk_open_display": "display",
    "kiosk_offline_limits": "limits",
}


class PluginError(Exception):
    """A plugin problem that stops the kiosk; ``str()`` names the plugin."""


@dataclass
class PluginInfo:
    name: str
    version: str
    module: str
    hooks: list[str] = field(default_factory=list)

    @property
    def kinds(self) -> list[str]:
        return [KIND_HOOKS[h] for h in self.hooks if h in KIND_HOOKS]

    def as_dict(self) -> dict:
        return {"name": self.name, "version": self.version, "kind": self.kinds,
                "hooks": self.hooks, "module": self.module}


def disabled_names() -> set[str]:
    return {n.strip() for n in os.environ.get("KIOSK_DISABLE_PLUGINS", "").split(",") if n.strip()}


class Host:
    def __init__(self):
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.versions: dict[str, tuple[str, str]] = {}
        self.failed: dict[str, str] = {}     # plugin name -> one-line import error

    # -- loading -------------------------------------------------------------

    def load_entry_points(self) -> None:
        disabled = disabled_names()
        for entry in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            if entry.name in disabled or self.pm.has_plugin(entry.name):
                continue
            try:
                plugin = entry.load()
            except Exception as exc:  # a broken plugin must not brick the kiosk
                self.failed[entry.name] = f"{type(exc).__name__}: {exc}".splitlines()[0]
                log.error("plugin %s failed to load and is skipped: %s", entry.name, self.failed[entry.name])
                continue
            version = entry.dist.version if entry.dist else "?"
            self.register(plugin, entry.name, version)

    def register(self, plugin, name: str, version: str = "") -> None:
        if name in disabled_names():
            return
        try:
            self.pm.register(plugin, name=name)
        except ValueError as exc:
            raise PluginError(f"plugin {name}: {exc}") from None
        except pluggy.PluginValidationError as exc:
            raise PluginError(f"plugin {name}: {exc}") from None
        module = getattr(plugin, "__name__", type(plugin).__module__)
        self.versions[name] = (version, module)

    def check(self) -> None:
        """Fail loudly on a hook the contract does not know (tox does the same)."""
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            name = self.pm.get_name(exc.plugin) if exc.plugin else "?"
            raise PluginError(f"plugin {name}: {str(exc).splitlines()[0]}") from None

    # -- what is loaded -------------------------------------------------------

    def plugins(self) -> list[PluginInfo]:
        infos = []
        for name, plugin in sorted(self.pm.list_name_plugin(), key=lambda np: np[0]):
            version, module = self.versions.get(name, ("", ""))
            hooks = sorted(caller.name for caller in self.pm.get_hookcallers(plugin) or [])
            infos.append(PluginInfo(name=name, version=version, module=module, hooks=hooks))
        return infos

    def settings_schema(self) -> dict[str, dict[str, Setting]]:
        merged: dict[str, dict[str, Setting]] = {}
        for result in self.pm.hook.kiosk_settings():
            for section, keys in (result or {}).items():
                merged.setdefault(section, {}).update(keys)
        return merged

    def settings_of(self, name: str) -> dict[str, dict[str, Setting]]:
        plugin = self.pm.get_plugin(name)
        impl = getattr(plugin, "kiosk_settings", None)
        return (impl() or {}) if impl else {}

    # -- calling -------------------------------------------------------------

    def call_on(self, name: str, hook: str, **kwargs):
        """Call ``hook`` on the one plugin chosen in config for a kind."""
        kind = KIND_HOOKS.get(hook, hook)
        caller = self.chosen(name, hook)
        try:
            result = caller(**kwargs)
        except PluginError:
            raise
        except (StoreAlarm, StoreBusy, ConfigError, ReaderError):
            raise
        except Exception as exc:
            raise PluginError(f"{kind} plugin {name!r} failed to open: {type(exc).__name__}: {exc}".splitlines()[0]) from exc
        if result is None:
            raise PluginError(f"{kind} plugin {name!r} returned nothing from {hook}")
        return result

    def chosen(self, name: str, hook: str):
        """The hook caller for the one plugin ``name``; a one-line error when it
        is missing, failed to load, is switched off or is of another kind."""
        kind = KIND_HOOKS.get(hook, hook)
        plugin = self.pm.get_plugin(name)
        if plugin is None:
            if name in self.failed:
                raise PluginError(f"{kind} plugin {name!r} failed to load: {self.failed[name]}")
            if name in disabled_names():
                raise PluginError(f"{kind} plugin {name!r} is switched off by KIOSK_DISABLE_PLUGINS")
            known = sorted(info.name for info in self.plugins() if kind in info.kinds)
            raise PluginError(f"no {kind} plugin named {name!r} (loaded: {', '.join(known) or 'none'})")
        others = [p for p in self.pm.get_plugins() if p is not plugin]
        caller = self.pm.subset_hook_caller(hook, remove_plugins=others)
        if not caller.get_hookimpls():
            raise PluginError(f"plugin {name!r} is not a {kind} plugin (it has no {hook})")
        return caller

    def call_isolated(self, hook: str, only: list[str] | None = None, **kwargs) -> None:
        """Call every implementation, each on its own: one that raises is
        logged by name and the rest still run (pluggy alone stops at the first
        error)."""
        for impl in reversed(getattr(self.pm.hook, hook).get_hookimpls()):
            if only is not None and impl.plugin_name not in only:
                continue
            args = {name: kwargs[name] for name in impl.argnames if name in kwargs}
            try:
                impl.function(**args)
            except Exception:
                log.exception("plugin %s raised in %s; carrying on", impl.plugin_name, hook)

    def offline_limits(self, base, history):
        return self.pm.hook.kiosk_offline_limits(base=base, history=history)
