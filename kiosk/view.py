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
from datetime import datetime
from typing import Callable

from .config import Config
from .interfaces import PaymentStore, Readiness
from .limits import Limits
from .notices import Notice
from .payment import Payment
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
                  card: str | None = None, cancel: threading.Event | None = None) -> SaleResult:
        """Take one sale through the reader (see :meth:`kiosk.engine.Kiosk.take_sale`)."""
        return self._kiosk.take_sale(amount, currency, behavior=behavior, confirm=confirm, customer=customer,
                                     card=card, cancel=cancel)

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
