"""The kiosk as a plugin sees it: what ``kiosk_startup``, ``kiosk_shutdown``
and ``kiosk_open_display`` receive.

Every member here is contract (``docs/plugins.md``, "The kiosk handed to
hooks", lists each with its type; ``tests/test_docs.py`` keeps the two in
step).  A plugin never reaches past it -- not for the host, the reader or the
sync plugin's object: what a built-in needs is here, so a third-party plugin
can do the same.
"""
from __future__ import annotations

import itertools
import threading
from datetime import date, datetime, tzinfo
from typing import Callable

from .config import Config
from .interfaces import PaymentStore, Readiness
from .limits import Limits
from .notices import Notice
from .payment import Payment
from .refunding import RefundResult
from .sale_result import OfflineOffer, SaleResult


class KioskView:
    """A narrow, stable face of the running kiosk."""

    __slots__ = ("_kiosk",)

    def __init__(self, kiosk):
        self._kiosk = kiosk

    # -- what it is ------------------------------------------------------------

    @property
    def config(self) -> Config:
        """The checked ``config.toml``: ``config[section][key]``, ``config.currency``,
        ``config.kiosk_id``, ``config.data_dir``."""
        return self._kiosk.config

    def clock(self) -> datetime:
        """Now, as the kiosk counts time (UTC, timezone-aware)."""
        return self._kiosk.clock()

    @property
    def store(self) -> PaymentStore:
        """The payment queue (the :class:`~kiosk.interfaces.PaymentStore` interface).
        Read it; change payments only through the methods below."""
        return self._kiosk.store

    # -- online or not ---------------------------------------------------------

    @property
    def online(self) -> bool | None:
        """Whether Stripe answered the last check (``None`` before the first)."""
        return self._kiosk.online

    def check_online(self) -> bool:
        """Ask the sync plugin now (within 2 s) and tell the notifiers if it changed."""
        return self._kiosk.check_online()

    @property
    def problem(self) -> str | None:
        """One line of trouble the sync plugin reports (a rejected key...), or ``None``."""
        return self._kiosk.sync_problem()

    # -- selling ---------------------------------------------------------------

    def take_sale(self, amount: int, currency: str | None = None, *, behavior: str | None = None,
                  confirm: Callable[[OfflineOffer], bool] | None = None, customer: str | None = None,
                  card: str | None = None, cancel: threading.Event | None = None, items: list | None = None,
                  tip: int = 0, receipt_email: str | None = None) -> SaleResult:
        """Take one sale through the reader (see :meth:`kiosk.engine.Kiosk.take_sale`): ``amount``
        is the goods (``items``' total when given), the card is charged ``amount + tip``."""
        return self._kiosk.take_sale(amount, currency, behavior=behavior, confirm=confirm, customer=customer,
                                     card=card, cancel=cancel, items=items, tip=tip, receipt_email=receipt_email)

    def effective_limits(self, currency: str) -> Limits | None:
        """The offline limits in force now for ``currency`` (``None``: no offline sales)."""
        return self._kiosk.effective_limits(currency)

    def pause_sales(self, reason: str) -> None:
        """From now on every new sale is refused with ``reason`` (one line, shown
        to the vendor); a sale already started finishes (see :meth:`wait_for_sales`)."""
        self._kiosk.selling.pause(reason)

    def resume_sales(self) -> None:
        """Take sales again after :meth:`pause_sales`."""
        self._kiosk.selling.resume()

    @property
    def sales_paused(self) -> str | None:
        """Why new sales are refused (:meth:`pause_sales`), or ``None``."""
        return self._kiosk.selling.paused

    def wait_for_sales(self, timeout: float | None = None) -> bool:
        """Wait until no sale is under way (after :meth:`pause_sales` none can
        start); ``True`` when none is, ``False`` when ``timeout`` seconds passed first."""
        return self._kiosk.selling.wait(timeout)

    # -- forwarding ------------------------------------------------------------

    def forward(self):
        """Forward every pending payment now, on this thread; returns a ``SyncReport``
        (``reached``, ``succeeded``, ``failed``, ``pending``, ``auth_error``)."""
        return self._kiosk.forward()

    def request_sync(self) -> None:
        """"Sync now": the background loop forwards at once (returns immediately)."""
        self._kiosk.request_sync()

    @property
    def wake(self) -> threading.Event:
        """Set to wake the background loop; ``request_sync()`` says it better."""
        return self._kiosk.wake

    @property
    def sync_progress(self) -> tuple[int, int]:
        """``(done, total)`` of the forwarding pass under way, or of the last one."""
        return tuple(self._kiosk.sync_progress)

    # -- what the vendor sees --------------------------------------------------

    def status(self, check: bool = True) -> dict:
        """What ``kiosk status --json`` prints (``check=False``: without asking Stripe)."""
        return self._kiosk.status(check=check)

    def live(self) -> list[Payment]:
        """Payments still to forward, oldest first (copies)."""
        return self._kiosk.store.live()

    def settled(self, limit: int = 100) -> list[Payment]:
        """The newest ``limit`` settled payments, newest first (copies); history
        may hold millions, so there is no "all"."""
        limit = 100 if limit is None else limit
        return list(itertools.islice(self._kiosk.store.settled(limit), limit))

    def needs_attention(self) -> list[Payment]:
        """Failed payments the vendor has not followed up, newest first."""
        return self._kiosk.needs_attention()

    def mark_followed_up(self, payment_id: str) -> Payment:
        """The vendor dealt with a failed payment; ``ValueError`` if there is none."""
        return self._kiosk.mark_followed_up(payment_id)

    def void(self, payment_id: str) -> RefundResult:
        """Void a sale not yet charged: it is never forwarded.  One being forwarded is
        waited for; one already charged is refunded instead.  Network: call it off your UI thread."""
        return self._kiosk.void(payment_id)

    def refund(self, payment_id: str, amount: int | None = None) -> RefundResult:
        """Refund ``amount`` minor units (default: all that is left) of a charged sale;
        kept and sent later when offline.  Network: call it off your UI thread."""
        return self._kiosk.refund(payment_id, amount)

    def refundable(self, payment_id: str) -> int:
        """Minor units of a sale still refundable (0 if none: not charged, or refunded in full)."""
        return self._kiosk.refundable(payment_id)

    def print_receipt(self, payment_id: str) -> str | None:
        """Print a payment's receipt again (waits for the printer, up to 30 s: call it
        off your UI thread): ``None`` once printed, else one line saying why not."""
        return self._kiosk.print_receipt(payment_id)

    def receipt_printer_ready(self) -> bool:
        """A receipt printer is set up, so "Reprint" can be offered (no hardware is asked)."""
        return self._kiosk.receipt_printer_ready()

    @property
    def zone(self) -> tzinfo:
        """The kiosk's time zone (``[kiosk] timezone``, or the system's): show
        every time in it (:func:`kiosk.short_time`, :func:`kiosk.shown_time`)."""
        return self._kiosk.zone

    def day_report(self, day: date | None = None) -> dict:
        """A day's totals per currency, as ``kiosk report --json`` has them:
        ``{"date", "timezone", "from", "to", "currencies"}``; ``day`` in the
        kiosk's zone, today when not given."""
        return self._kiosk.day_report(day)

    def recent_notices(self) -> list[Notice]:
        """The last notices sent (up to 50), oldest first: for a screen that opens late."""
        return list(self._kiosk.recent_notices)

    def notify(self, notice: Notice) -> None:
        """Tell the vendor something, through every notifier in use and the screen."""
        self._kiosk.notify(notice)

    @property
    def last_readiness(self) -> list[Readiness] | None:
        """The last "ready to sell offline?" lines (``None`` before the first check)."""
        return self._kiosk.last_readiness

    def readiness(self) -> list[Readiness]:
        """Ask every part now whether the kiosk is ready to sell offline (network)."""
        return self._kiosk.readiness()

    def __repr__(self) -> str:
        return f"<KioskView {self._kiosk.config.kiosk_id}>"
