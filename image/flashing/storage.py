"""Which files on the card hold its payments.  Not this tool's to say: the
storage plugin the card's config names (``[storage] use``) answers, through
the kiosk's ``kiosk_storage_files`` hook, loaded by the kiosk's own plugin
host -- so a card whose kiosk keeps its queue with another plugin has that
plugin's files read and counted."""
from __future__ import annotations

import contextlib
import logging
import re
import tomllib
from pathlib import Path

from .common import EXIT_USAGE, Stop
from .tools import Unreadable, debugfs, listing

CARD_CONFIG = "system/config.toml"     # on the data partition: the settings kiosk-firstboot applied
DEFAULT_STORAGE = "tinydb"             # [storage] use when the card's config does not say
PLAIN_NAME = re.compile(r"[A-Za-z0-9_.][A-Za-z0-9_.+-]*")     # what this tool can ask debugfs to copy


def card_storage(device: str, work: Path) -> str:
    """The storage plugin the card's config on DEVICE (its data partition)
    names; the kiosk's default if the card has no config or the config
    does not say.  A config that cannot be read is Unreadable: what it
    names is not guessed."""
    folder, name = CARD_CONFIG.split("/")
    if folder not in listing(device, "/", work) or name not in listing(device, f"/{folder}", work):
        return DEFAULT_STORAGE
    try:
        settings = tomllib.loads(debugfs(device, f"cat /{CARD_CONFIG}", work))
    except tomllib.TOMLDecodeError as exc:
        raise Unreadable(f"/{CARD_CONFIG} on the data partition is not valid TOML ({exc})") from None
    storage = settings.get("storage", {})
    use = storage.get("use", DEFAULT_STORAGE) if isinstance(storage, dict) else None
    if not isinstance(use, str) or not use:
        raise Unreadable(f"/{CARD_CONFIG} on the data partition names no storage plugin ([storage] use)")
    return use


def storage_files(name: str) -> list[str]:
    """The files, in its data folder, that storage plugin NAME keeps the
    queue in (the payments, the notices, the queue's key; never the Stripe
    key), asked with the plugin's declared default settings.  A plugin that
    is not installed here, fails to load, or cannot answer stops the run:
    without its answer nothing on the card can be counted."""
    def cannot(why: str) -> Stop:
        return Stop(f"cannot ask the card's storage plugin {name!r} which files hold its payments ({why}); "
                    f"nothing written", EXIT_USAGE)
    try:
        from kiosk.boot import load_host
    except ImportError as exc:
        raise cannot(f"the kiosk's plugin host cannot be imported: {exc}") from None
    try:
        with quiet_plugins():
            host = load_host(only={name})      # the one plugin asked: not every plugin's imports
            defaults = {section: {key: setting.default for key, setting in keys.items()}
                        for section, keys in host.settings_of(name).items()}
            files = host.call_on(name, "kiosk_storage_files", settings=defaults)
    except Exception as exc:    # plugins' own code: whatever it raises is one line here
        raise cannot((str(exc).splitlines() or [type(exc).__name__])[0]) from None
    if not isinstance(files, (list, tuple)) or not files or not all(isinstance(f, str) for f in files):
        raise cannot(f"it answered {files!r}, not a list of file names")
    odd = [f for f in files if not PLAIN_NAME.fullmatch(f) or f in (".", "..")]
    if odd:
        raise cannot(f"{odd[0]!r} is not a plain file name in its data folder, which this tool can copy")
    return list(dict.fromkeys(files))


@contextlib.contextmanager
def quiet_plugins():
    """The kiosk's log lines (a plugin that failed to load, and the like) are
    not for the vendor here: the one plugin that matters is the storage
    plugin, and what goes wrong with it is the one line storage_files tells."""
    logger, handler = logging.getLogger("kiosk"), logging.NullHandler()
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
