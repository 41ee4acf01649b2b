"""The pluggy host: finds plugins, checks them, and calls them safely.

Built-ins first, then the world: the built-in plugins are registered from
:data:`kiosk.defaults.DEFAULT_PLUGINS`, then third-party plugins from the
``kiosk`` entry-point group (skipped in safe mode).  ``KIOSK_DISABLE_PLUGINS``
(comma separated names) switches plugins off.  A plugin that fails to import
is skipped with one line; only a broken reader, storage or sync plugin stops
the kiosk, when config names it.  A plugin with a hook the contract does not
know fails loudly at start.  ``KIOSK_TRACE_PLUGINS=1`` logs every hook call
and its time (pluggy's hook-call monitoring).
"""
from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, entry_points, version

import pluggy

from . import hookspecs
from .defaults import DEFAULT_PLUGINS, import_builtin
from .config import ConfigError, Setting
from .interfaces import ReaderError, StoreAlarm, StoreBusy

log = logging.getLogger("kiosk.host")
trace_log = logging.getLogger("kiosk.trace")

ENTRY_POINT_GROUP = hookspecs.PROJECT

# The hook that makes a plugin a given kind.
KIND_HOOKS = {
    "kiosk_open_reader": "reader",
    "kiosk_open_storage": "storage",
    "kiosk_storage_files": "storage",
    "kiosk_open_sync": "sync",
    "kiosk_notify": "notifier",
    "kiosk_open_display": "display",
    "kiosk_offline_limits": "limits",
    "kiosk_print_receipt": "printer",
}
# Kinds the kiosk cannot sell without: when config names one that is broken, stop.
ESSENTIAL_KINDS = ("reader", "storage", "sync")


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
        return list(dict.fromkeys(KIND_HOOKS[h] for h in self.hooks if h in KIND_HOOKS))

    builtin: bool = False

    def as_dict(self) -> dict:
        return {"name": self.name, "version": self.version, "kind": self.kinds,
                "hooks": self.hooks, "module": self.module, "builtin": self.builtin}


def disabled_names() -> set[str]:
    return {n.strip() for n in os.environ.get("KIOSK_DISABLE_PLUGINS", "").split(",") if n.strip()}


def package_version() -> str:
    """This kiosk's release: the built-ins' version, and ``kiosk --version``."""
    try:
        return version("offline-kiosk")
    except PackageNotFoundError:
        return "0+checkout"


def _one_line(exc: BaseException) -> str:
    return (f"{type(exc).__name__}: {exc}".splitlines() or [type(exc).__name__])[0]


class Host:
    def __init__(self, safe_mode: bool = False):
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.safe_mode = safe_mode           # built-ins only (`kiosk run --safe`, or the last start failed)
        self.versions: dict[str, tuple[str, str]] = {}
        self.builtins: set[str] = set()
        self.failed: dict[str, str] = {}     # plugin name -> one-line import error
        self.skipped: dict[str, str] = {}    # plugin name -> why it is not in use (notifiers, displays)
        self.withheld: set[str] = set()      # third-party plugins safe mode did not load
        self._told: set[tuple[str, str]] = set()   # (plugin, hook) whose failure was told once
        self.tracing = False
        self.on_trouble = None               # callable(line): the kiosk shows plugin trouble on the screen
        if os.environ.get("KIOSK_TRACE_PLUGINS", "").strip() not in ("", "0"):
            self.trace()

    # -- loading -------------------------------------------------------------

    def load_builtins(self, only: set[str] | None = None) -> None:
        """Register the built-in plugins (``DEFAULT_PLUGINS``), first;
        ``only`` (names) for a tool that needs one plugin, not all."""
        disabled = disabled_names()
        for name, module_name in DEFAULT_PLUGINS:
            if name in disabled or self.pm.has_plugin(name) or (only is not None and name not in only):
                continue
            try:
                plugin = import_builtin(module_name).plugin
            except Exception as exc:
                self._failed_to_load(name, exc)
                continue
            self.register(plugin, name, package_version())
            self.builtins.add(name)

    def load_entry_points(self, only: set[str] | None = None) -> None:
        """Register third-party plugins from the ``kiosk`` entry-point group
        (none in safe mode).  A name a built-in has is not taken again."""
        if self.safe_mode:
            self.withheld = {entry.name for entry in entry_points(group=ENTRY_POINT_GROUP)}
            return
        disabled = disabled_names()
        for entry in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            if entry.name in disabled or self.pm.has_plugin(entry.name) or (only is not None and entry.name not in only):
                continue
            try:
                plugin = entry.load()
            except Exception as exc:  # a broken plugin must not brick the kiosk
                self._failed_to_load(entry.name, exc)
                continue
            version = entry.dist.version if entry.dist else "?"
            self.register(plugin, entry.name, version)

    def absent_names(self) -> set[str]:
        """Plugins that exist but are not loaded: failed, switched off, or held back by safe mode."""
        return (set(self.failed) | disabled_names() | self.withheld) - set(self.versions)

    def _failed_to_load(self, name: str, exc: Exception) -> None:
        self.failed[name] = _one_line(exc)
        # one line later, once config says whether it is in use: an error for a
        # reader, storage or sync it names, "skipped" for a notifier or display
        log.info("plugin %s failed to load: %s", name, self.failed[name])
        log.debug("plugin %s failed to load", name, exc_info=exc)

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
            infos.append(PluginInfo(name=name, version=version, module=module, hooks=hooks,
                                    builtin=name in self.builtins))
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
            if self.safe_mode:
                raise PluginError(f"{kind} plugin {name!r} is not built in and the kiosk is in safe mode "
                                  "(the last start did not complete, or --safe)")
            known = sorted(info.name for info in self.plugins() if kind in info.kinds)
            raise PluginError(f"no {kind} plugin named {name!r} (loaded: {', '.join(known) or 'none'})")
        others = [p for p in self.pm.get_plugins() if p is not plugin]
        caller = self.pm.subset_hook_caller(hook, remove_plugins=others)
        if not caller.get_hookimpls():
            raise PluginError(f"plugin {name!r} is not a {kind} plugin (it has no {hook})")
        return caller

    def optional_plugin(self, name: str, hook: str) -> bool:
        """Is the notifier or display ``name`` that config names usable?  If
        not, it is skipped with one line (never an error: a broken notifier
        or screen never stops a sale) and remembered in ``skipped``."""
        try:
            self.chosen(name, hook)
            return True
        except PluginError as exc:
            self.skipped[name] = str(exc)
            log.warning("%s; skipped, sales go on", exc)
            return False

    def call_isolated(self, hook: str, only: list[str] | None = None, **kwargs) -> None:
        """Call every implementation, each on its own: one that raises is
        told in one line (the first time; the traceback goes to the debug log)
        and the rest still run (pluggy alone stops at the first error)."""
        for _ in self.answers(hook, only, **kwargs):
            pass

    def answers(self, hook: str, only: list[str] | None = None, **kwargs):
        """As :meth:`call_isolated`, yielding ``(plugin name, result)`` for
        each implementation that answered."""
        for impl in reversed(getattr(self.pm.hook, hook).get_hookimpls()):
            if only is not None and impl.plugin_name not in only:
                continue
            args = {name: kwargs[name] for name in impl.argnames if name in kwargs}
            started, failure = time.perf_counter(), None
            try:
                result = impl.function(**args)
            except Exception as exc:
                failure = exc
            if self.tracing:
                trace_log.debug("hook %s -> %s: %.1f ms", hook, impl.plugin_name,
                                (time.perf_counter() - started) * 1000)
            if failure is not None:     # told outside the except: the screen's notice is not chained to it
                self._hook_failed(impl.plugin_name, hook, failure)
            else:
                yield impl.plugin_name, result

    def _hook_failed(self, plugin: str, hook: str, exc: Exception) -> None:
        log.debug("plugin %s raised in %s", plugin, hook, exc_info=exc)
        if (plugin, hook) in self._told:
            return
        self._told.add((plugin, hook))
        line = f"plugin {plugin} raised in {hook}: {_one_line(exc)}"
        log.error("%s; carrying on (the traceback is in the debug log: kiosk -v)", line)
        if self.on_trouble is not None:
            self.on_trouble(plugin, line)

    def trace(self) -> None:
        """Log every hook call, its plugins and its time (``KIOSK_TRACE_PLUGINS=1``)."""
        trace_log.setLevel(logging.DEBUG)
        self.tracing = True
        started = threading.local()

        def before(hook_name, hook_impls, kwargs):
            started.__dict__.setdefault("stack", []).append(time.perf_counter())

        def after(outcome, hook_name, hook_impls, kwargs):
            took = (time.perf_counter() - started.stack.pop()) * 1000
            trace_log.debug("hook %s -> %s: %.1f ms%s", hook_name,
                            ", ".join(i.plugin_name for i in hook_impls) or "nobody", took,
                            " (raised)" if outcome.exception is not None else "")
        self.pm.add_hookcall_monitoring(before, after)

    def offline_limits(self, base, history):
        return self.pm.hook.kiosk_offline_limits(base=base, history=history)
