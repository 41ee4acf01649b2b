"""Putting a kiosk together: load plugins, check config.toml, open the
reader, storage and sync plugins that config names."""
from __future__ import annotations

import threading
from pathlib import Path

from .config import CORE_SETTINGS, Config, ConfigError, check, read_toml
from .host import Host


def load_host(safe_mode: bool | str = False, only: set[str] | None = None) -> Host:
    """Built-ins first, then the world (none of it in safe mode).  ``only``
    names the plugins a tool needs (``image/flash``: the storage plugin)."""
    host = Host(safe_mode=safe_mode)
    host.load_builtins(only)
    host.load_entry_points(only)
    host.check()
    return host


class ReaderReport:
    """What a reader plugin gets as ``report``: its own notices (battery low,
    connected, lost) go to the vendor through it.  Notices sent before the
    kiosk is up are held and delivered once it is."""

    def __init__(self):
        self._lock = threading.Lock()
        self._kiosk = None
        self._held: list = []

    def __call__(self, notice) -> None:
        with self._lock:
            if self._kiosk is None:
                self._held.append(notice)
                return
            kiosk = self._kiosk
        kiosk.notify(notice)

    def deliver_to(self, kiosk) -> None:
        with self._lock:
            self._kiosk, held, self._held = kiosk, self._held, []
        for notice in held:
            kiosk.notify(notice)


def load_config(host: Host, path: Path, overrides: dict | None = None) -> Config:
    raw = read_toml(path)
    for section, keys in (overrides or {}).items():
        target = raw
        for part in section.split("."):
            target = target.setdefault(part, {})
        target.update(keys)
    schema = dict(CORE_SETTINGS)
    for section, keys in host.settings_schema().items():
        if section in schema:
            raise ConfigError(f"a plugin declares the core section [{section}]")
        schema[section] = keys
    return check(raw, schema, path=path, absent=frozenset(host.absent_names()))


def plugin_settings(host: Host, config: Config, name: str) -> dict:
    return config.sections_of(host.settings_of(name))


def open_sync(host: Host, config: Config):
    """The forwarder of the sync plugin ``[sync] use`` names."""
    name = config["sync"]["use"]
    return host.call_on(name, "kiosk_open_sync", settings=plugin_settings(host, config, name),
                        kiosk_id=config.kiosk_id)


def open_kiosk(path: Path, *, create: bool = False, host: Host | None = None,
               overrides: dict | None = None, clock=None, safe_mode: bool = False):
    """Everything ``kiosk`` commands need.  ``create`` is for ``kiosk init``;
    ``overrides`` (``{section: {key: value}}``) is laid over the file."""
    from .engine import Kiosk
    host = host or load_host(safe_mode=safe_mode)
    config = load_config(host, path, overrides)
    for section, hook in (("storage", "kiosk_open_storage"), ("reader", "kiosk_open_reader"),
                          ("sync", "kiosk_open_sync")):
        host.chosen(config[section]["use"], hook)      # all named plugins exist before anything opens
    for name in config["notifier"]["use"]:
        host.optional_plugin(name, "kiosk_notify")      # a broken notifier is skipped, never fatal
    storage_name = config["storage"]["use"]
    # the storage plugin also gets the core's [storage] section (path, keep_days, mirror)
    store = host.call_on(storage_name, "kiosk_open_storage",
                         settings={**plugin_settings(host, config, storage_name), "storage": config["storage"]},
                         data_dir=config.data_dir, create=create)
    report = ReaderReport()
    try:
        reader_name = config["reader"]["use"]
        reader = host.call_on(reader_name, "kiosk_open_reader",
                              settings=plugin_settings(host, config, reader_name), report=report)
        sync = open_sync(host, config)
    except BaseException:
        store.close()
        raise
    kiosk = Kiosk(config=config, host=host, store=store, reader=reader, sync=sync,
                  **({"clock": clock} if clock is not None else {}))
    report.deliver_to(kiosk)
    return kiosk
