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

from . import disk_space, notices
from .interfaces import optional
from .money import format_amount
from .notices import Notice
from .payment import iso
from .readiness import check as check_readiness
from .readiness import store_alarms
from .sale_result import OFFLINE_BECAUSE, WINDOW_HOURS

log = logging.getLogger("kiosk.engine")     # the engine's log lines keep their name


class Health:
    def __init__(self, kiosk):
        self.kiosk = kiosk
        self.online: bool | None = None
        self.last_readiness: list | None = None  # the last "ready to sell offline?" answer, for screens
        self._readiness_at: float | None = None
        self._clock_told: tuple = ()             # the reasons the vendor was last told the clock is not trusted

    # -- online or not -------------------------------------------------------

    def check_online(self) -> bool:
        kiosk = self.kiosk
        online = kiosk.sync.reachable()
        refused = optional(kiosk.sync, "Forwarder", "request_refused")
        if not online and refused:
            kiosk.telling.alert_request(refused)
        if online != self.online:
            because = "" if online else self.offline_because()
            why = "" if because in ("", "unreachable") else f"{OFFLINE_BECAUSE[because]} — "
            kiosk.notify(Notice(notices.ONLINE, "Online", "Stripe is reachable", "success") if online
                         else Notice(notices.OFFLINE, "Offline", f"{why}sales are stored on the kiosk", "warning"))
        self.online = online
        return online

    def key_problem(self) -> str | None:
        """``"missing"`` (no API key set) or ``"rejected"`` (the processor refused it), else None."""
        if optional(self.kiosk.sync, "Forwarder", "key_missing"):
            return "missing"
        if optional(self.kiosk.sync, "Forwarder", "key_rejected"):
            return "rejected"
        return None

    def offline_because(self) -> str:
        """Why the last online check failed, as :data:`kiosk.sale_result.OFFLINE_BECAUSE` names it:
        a key missing or rejected is never called "unreachable"."""
        key = self.key_problem()
        if key is not None:
            return f"key_{key}"
        return "request_refused" if optional(self.kiosk.sync, "Forwarder", "request_refused") else "unreachable"

    def check_clock(self) -> None:
        """Tell the vendor when the clock stops being trusted, for a new
        reason, or is trusted again (:mod:`kiosk.clock`)."""
        state = self.kiosk.timekeeper.state()
        if state.reasons == self._clock_told:
            return
        if state.reasons:
            self.kiosk.notify(notices.clock_untrusted(state.why))
        else:
            self.kiosk.notify(notices.clock_trusted(state.source))
        self._clock_told = state.reasons

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

    def disk(self) -> dict | None:
        """Free space on the data partition against ``[storage] min_free_mb``; None if it cannot be asked."""
        kiosk = self.kiosk
        room = disk_space.space(kiosk.config.data_dir)
        if room is None:
            return None
        minimum = kiosk.config["storage"]["min_free_mb"]
        return {"path": str(kiosk.config.data_dir), "free_mb": round(room.free_mb, 3),
                "total_mb": round(room.total_bytes / 1_000_000, 3), "min_free_mb": minimum,
                "low": room.free_mb < minimum}

    def status(self, check: bool = True) -> dict:
        kiosk = self.kiosk
        online = kiosk.check_online() if check else self.online
        now = kiosk.clock()
        queue = kiosk.store.live()
        # a refund waiting to be sent is money going back: not a sale, not held against the offline limits
        live = [p for p in queue if not p.is_refund]
        by_currency = _by_currency(live)
        refunds = [p for p in queue if p.is_refund]
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
        status = {
            "kiosk_id": kiosk.config.kiosk_id,
            "online": online,
            "offline_behavior": kiosk.config["kiosk"]["offline_behavior"],
            "pending": {"count": len(live), "by_currency": by_currency},
            "refunds_pending": {"count": len(refunds), "by_currency": _by_currency(refunds)},
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
            "disk": self.disk(),
            "key_problem": self.key_problem(),
            "clock": kiosk.timekeeper.state().as_dict(),
            "sales_paused": kiosk.selling.paused,
            "store_alarms": store_alarms(kiosk.store),
        }
        for plugin, part in kiosk.host.answers("kiosk_status", kiosk=kiosk.view):
            for key, value in (part or {}).items():
                if key in status:     # a plugin never overwrites what the core (or another plugin) says
                    log.warning("plugin %s: status key %r is taken; left out", plugin, key)
                    continue
                status[key] = value
        return status


def _by_currency(payments) -> dict[str, dict]:
    totals: dict[str, dict] = {}
    for p in payments:
        entry = totals.setdefault(p.currency, {"count": 0, "amount": 0})
        entry["count"] += 1
        entry["amount"] += p.amount
    for code, entry in totals.items():
        entry["formatted"] = format_amount(entry["amount"], code)
    return totals
