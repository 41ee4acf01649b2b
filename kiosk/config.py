"""Reading and checking ``config.toml``.

Every key is declared (here for the core, through ``kiosk_settings`` for
plugins) with its type and default; an unknown key or a wrong type stops the
kiosk with one line naming the key.  The Stripe key is never a setting here:
it comes from ``STRIPE_API_KEY`` or a key file.
"""
from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import platformdirs

from .card_numbers import refuse_card_number
from .local_time import zone_problem
from .money import MoneyError, currency_code
from .quick_items import CatalogError, check_catalog, check_tips

OFFLINE_BEHAVIORS = ("prefer_online", "require_online", "force_offline")
MAX_NUMBER = 1e9    # no setting needs more; also keeps out inf and nan
MAX_DECLINE_RETRIES = 8   # well under Mastercard's 10 attempts a day and Visa's 15 in 30 days


class ConfigError(Exception):
    """A bad configuration; ``str()`` is one line naming the key."""


@dataclass(frozen=True)
class Setting:
    """One declared key: its type (``str``, ``int``, ``float``, ``bool``,
    ``list``, ``dict``), default and one-line description.  ``choices`` limits
    a ``str``; ``check(value)`` returns one line saying what is wrong, or
    ``None`` (a folder that must exist...)."""
    type: type
    default: Any
    help: str = ""
    choices: tuple = ()
    item_type: type | None = None   # for lists
    path: bool = False              # a file path: relative to the config file's folder
    check: Callable[[Any], str | None] | None = None  # the value (a path resolved) -> one line of trouble, or None


CORE_SETTINGS: dict[str, dict[str, Setting]] = {
    "kiosk": {
        "id": Setting(str, "kiosk-1", "Name of this kiosk, sent to Stripe as metadata.kiosk_id"),
        "currency": Setting(str, "usd", "Currency of sales unless a sale names another"),
        "offline_behavior": Setting(str, "prefer_online", "prefer_online, require_online or force_offline",
                                    choices=OFFLINE_BEHAVIORS),
        "language": Setting(str, "en", "Language of screens and notices", choices=("en", "ja")),
        "reminder_hours": Setting(list, [12.0, 20.0, 23.0],
                                  "Remind the vendor when the oldest pending payment is this many hours old",
                                  item_type=float),
        "clock_tolerance_seconds": Setting(float, 300.0, "How far the system clock may be from Stripe's, or "
                                           "behind what the kiosk can prove, before it is not trusted"),
        "timezone": Setting(str, "", "Time zone of the vendor's days and the times shown (an IANA name like "
                            "Europe/Paris; empty: the system's)", check=zone_problem),
        "tips": Setting(list, [], "Tip choices offered after the amount, in percent (at most 4, each 1 to 100; "
                        "empty: no tip asked)", item_type=int),
    },
    "catalog": {
        "items": Setting(list, [], "Quick items ([[catalog.items]]: name, price in the currency's units, "
                         "optional currency, default [kiosk] currency)", item_type=dict),
    },
    "storage": {
        "use": Setting(str, "tinydb", "Storage plugin"),
        "path": Setting(str, "", "Data directory (default: the platform's user data directory)", path=True),
        "mirror": Setting(str, "", "A second copy of the queue in this folder (a USB stick, another "
                          "partition): every sale lands in both before it is approved; each heals the other",
                          path=True),
        "keep_days": Setting(int, 0, "Forget settled payments this many days after they settled "
                             "(0: keep everything; Stripe keeps the ledger). Never a pending or "
                             "unresolved one"),
        "min_free_mb": Setting(float, 64.0, "Warn (`kiosk status`, a notice) when the data partition has "
                               "less free space than this, in MB, before sales cannot be stored"),
    },
    "sync": {
        "use": Setting(str, "stripe", "Sync plugin"),
        "poll_seconds": Setting(float, 15.0, "How often `kiosk run` checks whether Stripe is reachable"),
        "retry_base_seconds": Setting(float, 5.0, "First back-off after a failed attempt; doubles each time"),
        "retry_max_seconds": Setting(float, 300.0, "Longest back-off"),
        "decline_retry_minutes": Setting(list, [15.0, 60.0, 180.0, 360.0],
                                         "Waits before each new try of a card declined for now (issuer "
                                         "unavailable...); as many tries as entries, at most 8 and "
                                         "24 h in all", item_type=float),
    },
    "reader": {
        "use": Setting(str, "simulated", "Reader plugin"),
        "timeout_seconds": Setting(float, 60.0, "How long to wait for a card"),
    },
    "notifier": {
        "use": Setting(list, ["feed"], "Notifier plugins that get every notice", item_type=str),
    },
    "display": {
        "use": Setting(str, "", "Display plugin (empty: none)"),
    },
    "limits": {
        "per_transaction": Setting(float, 100.0, "Largest offline sale, in [kiosk] currency"),
        "total": Setting(float, 500.0, "Largest total stored offline per currency, in [kiosk] currency"),
        "max_pending": Setting(int, 50, "Most payments waiting to be forwarded"),
        "same_card_max": Setting(int, 2, "Most offline sales waiting on one card (brand, last 4 and expiry); "
                                 "one more is refused, and the confirm step warns before"),
        "currencies": Setting(dict, {}, "Per-currency limits: [limits.currencies.jpy] per_transaction, total"),
        "floor": Setting(float, 0.1, "Fraction of the limits left once the oldest pending payment is 24 h old"),
        "growth_per_success": Setting(float, 0.02, "Limits grow by this fraction per offline payment forwarded"),
        "max_growth": Setting(float, 2.0, "Limits grow to at most this multiple"),
        "shrink_per_decline": Setting(float, 0.2, "Limits shrink by this fraction per offline payment declined"),
        "min_trust": Setting(float, 0.25, "Declines shrink the limits to at most this multiple"),
    },
}


@dataclass
class Config:
    path: Path | None
    values: dict[str, dict[str, Any]]

    def __getitem__(self, section: str) -> dict[str, Any]:
        return self.values.get(section, {})

    @property
    def kiosk_id(self) -> str:
        return self["kiosk"]["id"]

    @property
    def currency(self) -> str:
        return self["kiosk"]["currency"]

    @property
    def data_dir(self) -> Path:
        raw = self["storage"]["path"]
        return Path(raw) if raw else default_data_dir()

    def sections_of(self, schema: dict[str, dict[str, Setting]]) -> dict[str, dict[str, Any]]:
        """The checked values of the sections a plugin declared."""
        return {name: dict(self.values.get(name, {})) for name in schema}


def default_data_dir() -> Path:
    """``[storage] path`` when it is empty: the platform's user data directory."""
    return Path(platformdirs.user_data_dir("kiosk", appauthor=False))


def resolve_path(base: Path, value: str) -> Path:
    """A path setting as written in ``config.toml``: relative to the file's folder, ``~`` expanded."""
    return base / os.path.expanduser(value)


def default_path() -> Path:
    return Path(os.environ.get("KIOSK_CONFIG") or "config.toml")


def read_toml(path: Path) -> dict:
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such configuration file (run from the project folder or pass --config)") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None


def _flatten(raw: dict, prefix: str = "") -> dict[str, dict]:
    """``{"reader": {"use": .., "simulated": {..}}}`` -> sections by dotted name."""
    sections: dict[str, dict] = {}
    for key, value in raw.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            sections.setdefault(name, {})
            for sub_key, sub_value in value.items():
                if isinstance(sub_value, dict) and f"{name}.{sub_key}" not in ("limits.currencies",):
                    sections.update(_flatten({sub_key: sub_value}, prefix=f"{name}."))
                else:
                    sections[name][sub_key] = sub_value
        else:
            raise ConfigError(f"config key {name!r} must be inside a [section]")
    return sections


def _check(section: str, key: str, value: Any, setting: Setting) -> Any:
    where = f"[{section}] {key}"
    kind = setting.type
    for item in value if isinstance(value, list) else [value]:
        # a path is not free text (a temp folder's name may hold a long run of digits)
        if isinstance(item, (str, int)) and not isinstance(item, bool) and not setting.path:
            try:    # before any message below repeats the value: a card number is never printed back
                refuse_card_number(str(item), f"config {where}")
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
    if isinstance(value, bool) and kind is not bool:
        raise ConfigError(f"config {where} must be {kind.__name__}, not {value!r}")
    if kind is float and isinstance(value, int):
        value = float(value)
    if not isinstance(value, kind):
        raise ConfigError(f"config {where} must be {kind.__name__}, not {type(value).__name__} {value!r}")
    if setting.choices and value not in setting.choices:
        raise ConfigError(f"config {where} must be one of {', '.join(setting.choices)}, not {value!r}")
    if kind is list and setting.item_type is not None:
        checked = []
        for item in value:
            if setting.item_type is float and isinstance(item, int) and not isinstance(item, bool):
                item = float(item)
            if not isinstance(item, setting.item_type) or isinstance(item, bool):
                raise ConfigError(f"config {where} must list {setting.item_type.__name__} values, not {item!r}")
            checked.append(item)
        value = checked
    if kind in (int, float) and not 0 <= value <= MAX_NUMBER:
        raise ConfigError(f"config {where} must be a number from 0 to {MAX_NUMBER:g}, not {value!r}")
    return value


def check(raw: dict, schema: dict[str, dict[str, Setting]], path: Path | None = None,
          absent: frozenset[str] = frozenset()) -> Config:
    """Check ``raw`` (parsed TOML) against ``schema``; fill in defaults.
    Sections of a plugin in ``absent`` (it failed to load, is switched off or
    held back by safe mode) are left unchecked: that plugin is skipped with
    its own one line, and its settings must not stop the sale."""
    sections = _flatten(raw)
    values: dict[str, dict[str, Any]] = {}
    for section, keys in sections.items():
        declared = schema.get(section)
        if declared is None and absent & set(section.split(".")):
            continue
        if declared is None:
            raise ConfigError(f"config: unknown section [{section}] (no loaded plugin reads it)")
        for key, value in keys.items():
            if key not in declared:
                raise ConfigError(f"config: unknown key [{section}] {key}")
    for section, declared in schema.items():
        given = sections.get(section, {})
        values[section] = {key: (_check(section, key, given[key], setting) if key in given
                                 else _copy(setting.default))
                           for key, setting in declared.items()}
    base = path.parent if path is not None else Path.cwd()
    for section, declared in schema.items():
        for key, setting in declared.items():
            value = values[section][key]
            if setting.path and value:
                values[section][key] = str(resolve_path(base, value))
            problem = setting.check(values[section][key]) if setting.check else None
            if problem:     # the plugin's own rule: one line naming the key, as every setting
                raise ConfigError(f"config [{section}] {key}: {problem}")
    config = Config(path=path, values=values)
    _check_core(config)
    return config


def _copy(value):
    return list(value) if isinstance(value, list) else dict(value) if isinstance(value, dict) else value


def _check_core(config: Config) -> None:
    kiosk = config.values["kiosk"]
    try:
        kiosk["currency"] = currency_code(kiosk["currency"])
    except MoneyError as exc:
        raise ConfigError(f"config [kiosk] currency: {exc}") from None
    if not kiosk["id"].strip():
        raise ConfigError("config [kiosk] id must not be empty")
    limits = config.values["limits"]
    currencies = {}
    for code, table in limits["currencies"].items():
        where = f"[limits.currencies.{code}]"
        try:
            normal = currency_code(code)
        except MoneyError as exc:
            raise ConfigError(f"config {where}: {exc}") from None
        if not isinstance(table, dict):
            raise ConfigError(f"config {where} must be a table with per_transaction and total")
        unknown = set(table) - {"per_transaction", "total"}
        if unknown:
            raise ConfigError(f"config: unknown key {where} {sorted(unknown)[0]}")
        for key in ("per_transaction", "total"):
            if key not in table:
                raise ConfigError(f"config {where} {key} is missing")
            value = table[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= MAX_NUMBER:
                raise ConfigError(f"config {where} {key} must be a number from 0 to {MAX_NUMBER:g}, not {value!r}")
        currencies[normal] = dict(table)
    limits["currencies"] = currencies
    for key in ("floor", "min_trust"):
        if not 0 <= limits[key] <= 1:
            raise ConfigError(f"config [limits] {key} must be between 0 and 1, not {limits[key]}")
    if config.values["storage"]["keep_days"] > 36500:
        raise ConfigError(f"config [storage] keep_days must be at most 36500 (100 years; 0 keeps everything), "
                          f"not {config.values['storage']['keep_days']}")
    if limits["same_card_max"] < 1:
        raise ConfigError(f"config [limits] same_card_max must be at least 1 (to refuse every offline sale, set "
                          f"[kiosk] offline_behavior = \"require_online\"), not {limits['same_card_max']}")
    if limits["max_growth"] < 1:
        raise ConfigError(f"config [limits] max_growth must be at least 1, not {limits['max_growth']}")
    retries = config.values["sync"]["decline_retry_minutes"]
    if len(retries) > MAX_DECLINE_RETRIES or sum(retries) > 24 * 60:
        # card networks penalise excessive retries (docs/stripe.md: "Declined for now"); all
        # within the day an offline payment has to reach Stripe
        raise ConfigError(f"config [sync] decline_retry_minutes: at most {MAX_DECLINE_RETRIES} tries, "
                          "1440 minutes in all")
    hours = kiosk["reminder_hours"]
    if any(not 0 < h < 24 for h in hours):
        raise ConfigError("config [kiosk] reminder_hours must be between 0 and 24 hours")
    kiosk["reminder_hours"] = sorted(hours)
    try:
        kiosk["tips"] = check_tips(kiosk["tips"])
        config.values["catalog"]["items"] = check_catalog(config.values["catalog"]["items"], kiosk["currency"])
    except CatalogError as exc:
        raise ConfigError(f"config {exc}") from None
