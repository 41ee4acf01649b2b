"""What the vendor asks and screens show: is Stripe reachable, the
``kiosk status`` dict, and the last "ready to sell offline?" answer.

It reads the kiosk (and asks the sync plugin whether Stripe can be reached,
telling the vendor when that changes); it never changes a payment, never
forwards, and a failing offline-limits policy is a line in the answer, not an
exception.
"""
from __future__ import annotations

import logging
import time

from . import notices
from .interfaces import optional
from .money import format_amount
from .notices import Notice
from .payment import iso
from .readiness import check as check_readiness
from .sale_result import WINDOW_HOURS

log = logging.getLogger("kiosk.engine")     # the engine's log lines keep their name


class Health:
    def __init__(self, kiosk):
        self.kiosk = kiosk
        self.online: bool | None = None
        self.last_readiness: list | None = None  # the last "ready to sell offline?" answer, for screens
        self._readiness_at: float | None = None

    # -- online or not -------------------------------------------------------

    def check_online(self) -> bool:
        kiosk = self.kiosk
        online = kiosk.sync.reachable()
        refused = optional(kiosk.sync, "Forwarder", "request_refused")
        if not online and refused:
            kiosk.telling.alert_request(refused)
        if online != self.online:
            kiosk.notify(Notice(notices.ONLINE, "Online", "Stripe is reachable", "success") if online
                         else Notice(notices.OFFLINE, "Offline", "sales are stored on the kiosk", "warning"))
        self.online = online
        return online

    # -- ready to sell offline? ----------------------------------------------

    def readiness(self) -> list:
        """Every "ready to sell offline?" line (see :mod:`kiosk.readiness`);
        kept in ``last_readiness`` for screens, which must not ask the network."""
        lines = check_readiness(self.kiosk)
        self.last_readiness, self._readiness_at = lines, time.monotonic()
        return lines

    def readiness_older_than(self, seconds: float) -> bool:
        """Never asked, or asked more than ``seconds`` ago."""
        return self._readiness_at is None or time.monotonic() - self._readiness_at > seconds

    # -- kiosk status ----------------------------------------------------------

    def status(self, check: bool = True) -> dict:
        kiosk = self.kiosk
        online = kiosk.check_online() if check else self.online
        now = kiosk.clock()
        live = kiosk.store.live()
        by_currency: dict[str, dict] = {}
        for p in live:
            entry = by_currency.setdefault(p.currency, {"count": 0, "amount": 0})
            entry["count"] += 1
            entry["amount"] += p.amount
        for code, entry in by_currency.items():
            entry["formatted"] = format_amount(entry["amount"], code)
        oldest = min((p.created() for p in live), default=None)
        settled_count = optional(kiosk.store, "PaymentStore", "settled_count")
        currencies = sorted({kiosk.config.currency, *by_currency, *kiosk.config["limits"]["currencies"]})
        limits = {}
        for code in currencies:
            try:
                effective = kiosk.effective_limits(code)
            except Exception as exc:
                log.exception("offline-limits policy failed")
                limits[code] = {"error": f"offline-limits policy failed ({type(exc).__name__})"}
                continue
            if effective is not None:
                limits[code] = dict(effective.as_dict(), left=max(0, effective.total - by_currency.get(code, {}).get("amount", 0)))
        info = kiosk.reader.info()
        return {
            "kiosk_id": kiosk.config.kiosk_id,
            "online": online,
            "offline_behavior": kiosk.config["kiosk"]["offline_behavior"],
            "pending": {"count": len(live), "by_currency": by_currency},
            "oldest_pending_at": iso(oldest),
            "oldest_pending_age_hours": None if oldest is None else round((now - oldest).total_seconds() / 3600, 3),
            "window_hours_left": None if oldest is None else round(max(0.0, WINDOW_HOURS - (now - oldest).total_seconds() / 3600), 3),
            "limits": limits,
            "settled": {"count": settled_count()} if settled_count else None,
            "last_sync_at": kiosk.store.get_meta("last_sync_at"),
            "reader": {"name": info.name, "supports_offline": info.supports_offline,
                       "battery": info.battery, "connected": info.connected},
            "safe_mode": bool(kiosk.host.safe_mode),
            "plugin_trouble": dict(kiosk.plugin_trouble),
        }
