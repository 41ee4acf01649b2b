"""Putting a kiosk together: load plugins, check config.toml, open the
reader, storage and sync plugins that config names."""
from __future__ import annotations

from pathlib import Path

from .config import CORE_SETTINGS, Config, ConfigError, check, read_toml
from .host import Host


def load_host() -> Host:
    host = Host()
    host.load_entry_points()
    host.check()
    return host


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
    return check(raw, schema, path=path)


def plugin_settings(host: Host, config: Config, name: str) -> dict:
    return config.sections_of(host.settings_of(name))


def open_sync(host: Host, config: Config):
    """The forwarder of the sync plugin ``[sync] use`` names."""
    name = config["sync"]["use"]
    return host.call_on(name, "kiosk_open_sync", settings=plugin_settings(host, config, name),
                        kiosk_id=config.kiosk_id)


def open_kiosk(path: Path, *, create: bool = False, host: Host | None = None,
               overrides: dict | None = None):
    """Everything ``kiosk`` commands need.  ``create`` is for ``kiosk init``;
    ``overrides`` (``{section: {key: value}}``) is laid over the file."""
    from .engine import Kiosk
    host = host or load_host()
    config = load_config(host, path, overrides)
    for section, hook in (("storage", "kiosk_open_storage"), ("reader", "kiosk_open_reader"),
                          ("sync", "kiosk_open_sync")):
        host.chosen(config[section]["use"], hook)      # all named plugins exist before anything opens
    for name in config["notifier"]["use"]:
        host.chosen(name, "kiosk_notify")
    storage_name = config["storage"]["use"]
    store = host.call_on(storage_name, "kiosk_open_storage",
                         settings=plugin_settings(host, config, storage_name),
                         data_dir=config.data_dir, create=create)
    try:
        reader_name = config["reader"]["use"]
        reader = host.call_on(reader_name, "kiosk_open_reader",
                              settings=plugin_settings(host, config, reader_name))
        sync = open_sync(host, config)
    except BaseException:
        store.close()
        raise
    return Kiosk(config=config, host=host, store=store, reader=reader, sync=sync)
