"""The screen's background chores: the one thread that reads the queue and
writes "followed up" for the touchscreen.

Its one job is to do, off the UI thread, what may wait on the disk: read the
snapshot the status bar, Payments and Sync show (and the payments that need
attention), record "followed up" durably before the screen says so, and
read one payment's detail and the day's totals, and void, refund or reprint
for the vendor (the kiosk makes each durable before it returns).  It
talks back only through ``post(kind, payload)``, the display's inbox, which
the UI thread drains.

It never touches pygame or the UI state (:class:`~.state.UiState` belongs to
the UI thread), and the UI thread never waits for it: asking for a refresh
only queues a job.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Callable

from kiosk import SUCCEEDED, parse_iso, shown_time

from .state import Detail, Snapshot

log = logging.getLogger("kiosk.touchscreen")

REFRESH_GAP = 0.25       # s: at most four queue reads a second while payments stream in
SETTLED_SHOWN = 100      # settled payments on the Payments screen (the newest)


class Chores(threading.Thread):
    """The one thread that reads the queue and writes "followed up" for the screen.

    ``kiosk`` is the :class:`kiosk.KioskView` the display was opened with;
    ``post`` hands a result to the UI thread (any thread may call it)."""

    def __init__(self, kiosk, post: Callable[[str, object], None]):
        super().__init__(name="touchscreen-chores", daemon=True)
        self.kiosk = kiosk
        self.post = post
        self.jobs: queue.Queue = queue.Queue()
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._queued = False
        self._attention = False
        self._last = 0.0
        self.requested = 0
        self.day_asked, self._day_queued = 0, False      # Today's reads (read_day)

    def run(self) -> None:
        while True:
            job = self.jobs.get()
            if job is None:
                return
            try:
                job()
            except Exception:
                log.exception("touchscreen: reading the queue failed")

    def submit(self, job) -> None:
        self.jobs.put(job)

    def stop(self) -> None:
        self.stopping.set()
        self.jobs.put(None)
        self.join(10)

    def refresh(self, attention: bool = False) -> int:
        """Read the queue again soon; many calls in a burst make one read.
        Returns a number the snapshot answering this request will carry."""
        with self._lock:
            self.requested += 1
            self._attention |= attention
            if self._queued:
                return self.requested
            self._queued = True
        self.jobs.put(self._refresh)
        return self.requested

    def follow_up(self, payment_id: str) -> None:
        """Mark ``payment_id`` followed up on this thread; the UI hears
        ``("followed", (payment_id, error or None))`` once it is durable."""
        self.submit(lambda: self._mark_followed_up(payment_id))

    def _refresh(self) -> None:
        delay = self._last + REFRESH_GAP - time.monotonic()
        if delay > 0 and self.stopping.wait(delay):
            return
        with self._lock:
            self._queued = False
            attention, self._attention = self._attention, False
            seq = self.requested
        kiosk = self.kiosk
        snapshot = read_snapshot(kiosk)
        snapshot.seq = seq
        if attention:
            self.post("attention", (seq, kiosk.needs_attention()))
        self.post("snapshot", snapshot)
        self._last = time.monotonic()

    def _mark_followed_up(self, payment_id: str) -> None:
        """On the chores thread: durable before the screen says so."""
        error = None
        try:
            self.kiosk.mark_followed_up(payment_id)
        except ValueError as exc:
            error = str(exc)
        self.post("followed", (payment_id, error))
        self.refresh(attention=True)

    # -- one payment (void, refund, reprint) and the day's totals, for money_actions.py --------

    def read_detail(self, payment_id: str) -> None:
        """Read one payment for its detail screen; the UI hears ``("detail",
        (payment_id, Detail or None))`` (None: no such payment, or the read failed)."""
        self.submit(lambda: self.post("detail", (payment_id, _guarded(read_detail, self.kiosk, payment_id))))

    def read_day(self) -> int:
        """Read today's totals soon (a burst makes one read); the UI hears
        ``("day", (seq, report or None))``.  Returns the seq that read will carry."""
        with self._lock:
            self.day_asked += 1
            if self._day_queued:
                return self.day_asked
            self._day_queued = True
        self.submit(self._read_day)
        return self.day_asked

    def _read_day(self) -> None:
        with self._lock:
            self._day_queued = False
            seq = self.day_asked
        self.post("day", (seq, _guarded(self.kiosk.day_report)))

    def money(self, action: str, payment_id: str, amount: int | None = None) -> None:
        """Void, refund or reprint on this thread; the UI hears ``("money",
        (action, payment_id, outcome))``: a RefundResult (void, refund), None
        or one line why not (print), or the exception that stopped it."""
        self.submit(lambda: self._money(action, payment_id, amount))

    def _money(self, action: str, payment_id: str, amount: int | None) -> None:
        try:
            if action == "void":
                outcome = self.kiosk.void(payment_id)
            elif action == "refund":
                outcome = self.kiosk.refund(payment_id, amount)
            else:
                outcome = self.kiosk.print_receipt(payment_id)
        except Exception as exc:      # a broken store, sync plugin or printer never takes the screen down
            log.exception("touchscreen: %s of %s failed", action, payment_id)
            outcome = exc
        self.post("money", (action, payment_id, outcome))
        self.refresh(attention=True)
        self.read_detail(payment_id)


def read_snapshot(kiosk) -> Snapshot:
    """Everything the status bar, Payments and Sync show, in one read (never on the UI thread)."""
    status = kiosk.status(check=False)
    return Snapshot(
        online=status["online"],
        pending=status["pending"]["count"],
        totals={code: entry["amount"] for code, entry in status["pending"]["by_currency"].items()},
        oldest_at=parse_iso(status["oldest_pending_at"]),
        last_sync_at=status["last_sync_at"],
        live=kiosk.live()[::-1],
        settled=kiosk.settled(SETTLED_SHOWN),
        problem=kiosk.problem,
        key_problem=status.get("key_problem"),
        readiness=kiosk.last_readiness,
        clock=status.get("clock"),
    )


def read_detail(kiosk, payment_id: str) -> Detail | None:
    """One payment as its detail screen shows it (never on the UI thread);
    None when the store has no such payment."""
    payment = kiosk.store.get(payment_id)
    if payment is None:
        return None
    detail = Detail(payment, when=shown_time(payment.created_at, kiosk.zone))
    if payment.is_refund:
        detail.sale = kiosk.store.get(payment.refund_of)
    else:
        detail.refunds = [r for r in map(kiosk.store.get, payment.refunds) if r is not None]
        if payment.state == SUCCEEDED:
            detail.refundable = _guarded(kiosk.refundable, payment_id) or 0
    detail.printer_ready = bool(_guarded(kiosk.receipt_printer_ready))
    return detail


def _guarded(read, *args):
    """``read(*args)``, or None (logged) when it fails: a screen shows what it can."""
    try:
        return read(*args)
    except Exception:
        log.exception("touchscreen: %s failed", getattr(read, "__name__", read))
        return None
