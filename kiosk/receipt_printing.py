"""Printing receipts off the sale path: one worker thread hands each receipt
to the receipt-printer plugin (``kiosk_print_receipt``), one at a time.

A sale's result is returned first; only then is its receipt queued here, and
queueing never waits (a full queue drops the receipt with a log line: it can
be printed again).  A printer that fails or hangs is a log line and a notice;
it never stops, slows or changes a sale.  This module never changes a payment
or the store: it only reads them.
"""
from __future__ import annotations

import logging
import queue
import threading
import time

from . import local_time, notices
from .notices import Notice
from .payment import Payment
from .receipts import Receipt, receipt_of

log = logging.getLogger("kiosk.receipts")

PRINT_SECONDS = 30.0        # how long `kiosk receipt` and the screen wait for the printer
QUEUE_MAX = 20              # receipts waiting for a slow printer; more are dropped (reprint them)
NO_PRINTER = "no receipt printer is set up ([receipt_printer] connection in config.toml)"


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().replace("\n", " ")
    return (f"{type(exc).__name__}: {text}" if text else type(exc).__name__)[:200]


class _Job:
    __slots__ = ("payment", "payment_id", "automatic", "why", "done", "abandoned")

    def __init__(self, payment_id: str, payment: Payment | None, automatic: bool):
        self.payment_id, self.payment, self.automatic = payment_id, payment, automatic
        self.why: str | None = None
        self.done = threading.Event()
        self.abandoned = False          # the vendor stopped waiting: not printed later by surprise


class ReceiptPrinting:
    def __init__(self, kiosk):
        self.kiosk = kiosk
        self._jobs: queue.Queue[_Job | None] = queue.Queue(maxsize=QUEUE_MAX)
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    # -- what the kiosk asks -------------------------------------------------------

    def printer(self) -> str | None:
        """The printer a plugin would print on (``kiosk_receipt_printer``), or None."""
        for _name, answer in self.kiosk.host.answers("kiosk_receipt_printer"):
            if answer:
                return str(answer)
        return None

    def after(self, payment: Payment | None) -> None:
        """A sale was approved or a refund taken: queue its receipt, if a plugin
        prints them unasked.  On the sale's thread: never waits, never raises."""
        if payment is None:
            return
        try:
            copy = Payment.from_record(payment.to_record())     # the caller keeps its own
            self._submit(_Job(payment.id, copy, automatic=True))
        except Exception:       # a receipt is never worth a sale
            log.exception("receipt for %s not queued", payment.id)

    def print_now(self, payment_id: str) -> str | None:
        """Print ``payment_id``'s receipt (the vendor asked): None once printed,
        else one line saying why not."""
        job = _Job(payment_id, None, automatic=False)
        try:
            self._submit(job)
        except queue.Full:
            return f"{QUEUE_MAX} receipts are already waiting for the printer: try again once they are out"
        if not job.done.wait(PRINT_SECONDS):
            job.abandoned = True
            return (f"the receipt printer did not finish within {PRINT_SECONDS:.0f} s "
                    "(is it on, connected, out of paper?)")
        return job.why

    def close(self) -> None:
        """Let the receipts already queued print (`kiosk charge` exits right after its
        sale), waiting at most PRINT_SECONDS: a hung printer never holds the exit for long."""
        thread = self._thread
        if thread is None or not thread.is_alive():
            return
        deadline = time.monotonic() + PRINT_SECONDS
        try:
            self._jobs.put(None, timeout=PRINT_SECONDS)
        except queue.Full:
            pass
        thread.join(max(deadline - time.monotonic(), 0))
        if thread.is_alive():
            log.warning("the receipt printer did not finish within %.0f s; receipts still waiting are not "
                        "printed (reprint them: kiosk receipt PAYMENT_ID)", PRINT_SECONDS)

    # -- the worker -------------------------------------------------------------------

    def _submit(self, job: _Job) -> None:
        with self._start_lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._work, name="kiosk-receipts", daemon=True)
                self._thread.start()
        try:
            self._jobs.put_nowait(job)
        except queue.Full:
            if job.automatic:
                log.warning("receipt for %s not printed: %d receipts already wait for the printer "
                            "(reprint it: kiosk receipt %s)", job.payment_id, QUEUE_MAX, job.payment_id)
                return
            raise

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            if job.abandoned:
                continue
            try:
                job.why = self._print(job)
            except Exception as exc:        # the worker outlives any one receipt
                log.debug("receipt for %s", job.payment_id, exc_info=True)
                job.why = f"receipt not printed: {_one_line(exc)}"
            finally:
                job.done.set()
            if job.automatic and job.why and job.why is not _UNASKED:
                log.debug("receipt for %s not printed: %s", job.payment_id, job.why)
                self._tell(job)         # the notifiers log it, in one line

    def _print(self, job: _Job) -> str | None:
        payment = job.payment or self.kiosk.store.get(job.payment_id)
        if payment is None:
            return f"no payment {job.payment_id} on this kiosk"
        receipt = self.receipt(payment)
        for impl in reversed(self.kiosk.host.pm.hook.kiosk_print_receipt.get_hookimpls()):
            args = {"receipt": receipt, "automatic": job.automatic}
            try:
                printed = impl.function(**{name: args[name] for name in impl.argnames if name in args})
            except Exception as exc:
                log.debug("plugin %s raised in kiosk_print_receipt", impl.plugin_name, exc_info=True)
                return f"printing failed ({impl.plugin_name}): {_one_line(exc)}"
            if printed is not None:
                return None
        return _UNASKED if job.automatic else NO_PRINTER

    def receipt(self, payment: Payment) -> Receipt:
        """The receipt of a stored payment as this kiosk prints it."""
        config = self.kiosk.config
        sale = self.kiosk.store.get(payment.refund_of) if payment.refund_of else None
        return receipt_of(payment, shop_name=config["receipt_printer"].get("shop_name", ""),
                          zone=local_time.kiosk_zone(config), language=config["kiosk"].get("language", "en"),
                          sale=sale)

    def _tell(self, job: _Job) -> None:
        payment = job.payment
        self.kiosk.notify(Notice(notices.RECEIPT, "Receipt not printed",
                                 f"{job.why} — the sale stands; reprint it from Payments or "
                                 f"`kiosk receipt {job.payment_id}`", "warning",
                                 payment.public() if payment is not None else None))


# an automatic receipt nobody prints (no printer, or not unasked): nothing to tell
_UNASKED = "no printer prints receipts unasked"
