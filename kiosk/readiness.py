""""Ready to sell offline?" -- asked before the signal goes, not after.

Each part answers for itself: the sync plugin for the processor (key, API
version, clock), the reader for working offline, the queue for opening
cleanly, the configuration for allowing offline sales, and the queue's age
for the time left to forward.  ``kiosk check`` prints every line; the
touchscreen's Sync page shows the first that is not ready.  Never shows a key.
"""
from __future__ import annotations

import logging
from datetime import datetime

from .interfaces import Readiness, optional
from .payment import parse_iso

log = logging.getLogger("kiosk.readiness")


def processor(sync) -> list[Readiness]:
    """The sync plugin's own check, or a plain online check if it has none."""
    check = optional(sync, "Forwarder", "check")
    if check is None:
        ok = sync.reachable()
        return [Readiness("processor", ok, "the processor can be reached" if ok else "the processor cannot be reached",
                          None if ok else "connect the kiosk and check again")]
    try:
        return list(check())
    except Exception as exc:   # a broken check must not hide the others
        log.exception("the sync plugin's readiness check failed")
        return [Readiness("processor", False, f"the sync plugin's check failed ({type(exc).__name__})")]


def reader(kiosk) -> Readiness:
    info = kiosk.reader.info()
    if not info.supports_offline:
        return Readiness("reader", False, f"{info.name} cannot take payments offline",
                         "use a chip reader for offline sales")
    if not info.connected:
        return Readiness("reader", False, f"{info.name} is not connected", "switch the reader on and pair it")
    battery = f", battery {info.battery}%" if info.battery is not None else ""
    return Readiness("reader", True, f"{info.name} works offline{battery}")


def store_alarms(store) -> list[str]:
    """Damage the store salvaged and still alarms about (``kiosk recover`` clears it)."""
    alarms = optional(store, "PaymentStore", "alarms")
    return list(alarms()) if alarms else []


def queue(live: list, alarms: list[str] = ()) -> Readiness:
    if alarms:       # salvaged: sales go on, but the vendor must deal with what could not be read
        return Readiness("queue", False, alarms[0], "run `kiosk recover`, and get the card checked")
    return Readiness("queue", True, f"the queue opens cleanly ({len(live)} waiting)")


def selling(kiosk) -> Readiness:
    behavior = kiosk.config["kiosk"]["offline_behavior"]
    if behavior == "require_online":
        return Readiness("offline_sales", False, "[kiosk] offline_behavior = require_online: offline sales are refused",
                         "set prefer_online to take offline sales")
    currency = kiosk.config.currency
    try:
        limits = kiosk.effective_limits(currency)
    except Exception as exc:
        return Readiness("offline_sales", False, f"the offline-limits policy failed ({type(exc).__name__})")
    if limits is None or limits.per_transaction <= 0 or limits.total <= 0 or limits.count <= 0:
        return Readiness("offline_sales", False, f"no offline limit in force for {currency.upper()}",
                         "set [limits] for it")
    return Readiness("offline_sales", True, f"offline sales allowed ({behavior})")


def window(kiosk, live: list, now: datetime) -> Readiness:
    """The time since the last sync, and whether what waits can still be sent in time."""
    last = kiosk.store.get_meta("last_sync_at")
    since = f"last sync {_ago(now, parse_iso(last))}" if last else "never synced"
    if not live:
        return Readiness("sync", True, f"{since}; nothing waiting")
    age = (now - min(p.created() for p in live)).total_seconds() / 3600
    first_reminder = (kiosk.config["kiosk"]["reminder_hours"] or [12.0])[0]
    if age >= first_reminder:
        return Readiness("sync", False, f"{since}; the oldest waiting payment is {age:.0f} h old",
                         "sync before going offline: the 24-hour window is closing")
    return Readiness("sync", True, f"{since}; the oldest waiting payment is {age:.1f} h old")


def _ago(now: datetime, then: datetime) -> str:
    minutes = max(0.0, (now - then).total_seconds() / 60)
    return f"{minutes:.0f} min ago" if minutes < 120 else f"{minutes / 60:.1f} h ago"


def check(kiosk) -> list[Readiness]:
    """Every line, processor first."""
    live = kiosk.store.live()
    return [*processor(kiosk.sync), reader(kiosk), queue(live, store_alarms(kiosk.store)), selling(kiosk),
            window(kiosk, live, kiosk.clock())]


def ready(lines: list[Readiness]) -> bool:
    return all(line.ok for line in lines)
