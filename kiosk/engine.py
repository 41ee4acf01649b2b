"""The sale engine: the life of a payment from card read to settled.

Rules it keeps:

- every state change is durable (the store fsyncs) before any notice, hook
  or return value tells anyone about it;
- a payment's idempotency key and request are stored with the sale, before
  the first attempt, and reused on every retry;
- an attempt whose outcome is unknown is looked up at Stripe before it is
  sent again;
- notifier and display plugins can fail without touching a sale.

:class:`Kiosk` is the facade: it owns the plugins' objects (``config``,
``host``, ``store``, ``reader``, ``sync``, ``clock``) and the parts that do
the work, each in its own module --

- :mod:`kiosk.payment_states`: every change to a payment, as a named move;
- :mod:`kiosk.selling`: taking a sale, the offline limits, charging at the till;
- :mod:`kiosk.forwarding`: sending stored payments to Stripe;
- :mod:`kiosk.reminders`: the 24-hour window, "last synced", follow-ups;
- :mod:`kiosk.refunding`: void and refund;
- :mod:`kiosk.status`: online or not, ``kiosk status``, readiness;
- :mod:`kiosk.telling`: notices, the payment-changed hook, once-only alarms;
- :mod:`kiosk.background`: the loop ``kiosk run`` keeps going;
- :mod:`kiosk.clock`: which time the kiosk can defend (``clock``).

The parts read the plugins' objects off the kiosk each time (the demo swaps
the reader, tests the clock), and reach each other through it.  The facade
itself opens and closes the kiosk and does no other work.
"""
from __future__ import annotations

import logging
import threading
from contextlib import contextmanager
from datetime import date

from . import background, local_time, notices, report
from .clock import KioskClock
from .forwarding import Forwarding, SyncReport
from .interfaces import CardResult, Outcome, ReaderError, optional
from .limits import History, LimitRefused, Limits, Stored
from .notices import Notice
from .payment import FAILED, FORWARDING, PENDING, SUCCEEDED, Card, Payment, iso, new_payment_id, parse_iso, utcnow
from .receipt_printing import ReceiptPrinting
from .refunding import Refunding, RefundResult
from .reminders import SYNC_NOTE_SECONDS, Reminders
from .sale_result import (APPROVED, APPROVED_OFFLINE, CANCELLED, DECLINED, REFUSED, UNCONFIRMED,
                          WINDOW_HOURS, OfflineOffer, SaleResult, check_contact)
from .selling import Selling
from .status import Health
from .telling import Telling
from .view import KioskView

READINESS_SECONDS = background.READINESS_SECONDS

# names other modules and tests import from here
__all__ = [
    "Kiosk", "SyncReport", "READINESS_SECONDS", "SYNC_NOTE_SECONDS",
    "SaleResult", "OfflineOffer", "APPROVED", "APPROVED_OFFLINE", "CANCELLED", "DECLINED", "REFUSED",
    "UNCONFIRMED", "WINDOW_HOURS", "check_contact",
    "Payment", "Card", "PENDING", "FORWARDING", "SUCCEEDED", "FAILED", "iso", "parse_iso", "utcnow",
    "new_payment_id", "Notice", "Outcome", "CardResult", "ReaderError", "History", "Limits", "Stored",
    "LimitRefused",
]

log = logging.getLogger("kiosk.engine")


class Kiosk:
    def __init__(self, config, host, store, reader, sync, clock=utcnow):
        self.config, self.host, self.store, self.reader, self.sync = config, host, store, reader, sync
        # the time the kiosk can defend (kiosk.clock): ``clock`` is the system clock it guards against
        self.timekeeper = KioskClock(store, sync, config["kiosk"]["clock_tolerance_seconds"], system=clock)
        self.clock = self.timekeeper
        self.wake = threading.Event()            # "sync now"
        self.telling = Telling(self, host.skipped)
        self.health = Health(self)
        self.selling = Selling(self)
        self.receipt_printing = ReceiptPrinting(self)
        self.forwarding = Forwarding(self)
        self.reminders = Reminders(self)
        self.refunding = Refunding(self)
        if self.store.get_meta("initialized_at") is None:
            self.store.set_meta("initialized_at", iso(self.clock()))
        self.view = KioskView(self)                 # what hooks see
        host.on_trouble = self.telling.plugin_failed
        self.host.call_isolated("kiosk_startup", kiosk=self.view)
        if host.safe_mode:
            self.notify(notices.safe_mode(host.safe_mode if isinstance(host.safe_mode, str) else "Asked for"))
        for line in host.skipped.values():
            self.notify(notices.plugin_trouble(line))
        for storage in optional(store, "PaymentStore", "recovered"):
            known = getattr(storage, "nothing_lost_known", True)
            self.notify(Notice(notices.STORE_RECOVERED, "Queue recovered after power loss",
                               "an unfinished write was set aside; " + (
                                   "nothing acknowledged was lost" if known else
                                   "this file keeps no record of what was acknowledged, so check the "
                                   "last sales"), "warning"))
        for line in optional(store, "PaymentStore", "healed"):
            self.notify(Notice(notices.STORE_RECOVERED, "Queue copy healed", line, "warning"))
        self.forwarding.upgrade_requests()
        self.selling.tell_interrupted_sales()

    # -- what the parts keep -----------------------------------------------------

    @property
    def online(self) -> bool | None:
        """Whether Stripe answered the last check (``None`` before the first)."""
        return self.health.online

    @online.setter
    def online(self, value: bool | None) -> None:
        self.health.online = value

    @property
    def last_readiness(self) -> list | None:
        """The last "ready to sell offline?" answer, for screens."""
        return self.health.last_readiness

    @last_readiness.setter
    def last_readiness(self, value: list | None) -> None:
        self.health.last_readiness = value

    @property
    def sync_progress(self) -> tuple[int, int]:
        """(done, total) of the current or last forwarding pass."""
        return self.forwarding.sync_progress

    @sync_progress.setter
    def sync_progress(self, value: tuple[int, int]) -> None:
        self.forwarding.sync_progress = value

    @property
    def zone(self):
        """The kiosk's time zone (``[kiosk] timezone``, or the system's): days and times the vendor reads."""
        return local_time.kiosk_zone(self.config)

    def day_report(self, day: date | None = None) -> dict:
        """A day's totals per currency (:func:`kiosk.report.day_report`), ``day``
        in the kiosk's zone: today by the kiosk's clock when not given."""
        zone = self.zone
        day = day or local_time.day_of(self.clock(), zone)
        return report.day_report(self.store, day, zone)

    @property
    def recent_notices(self):
        """The last 50 notices (a deque), for a screen that opens later."""
        return self.telling.recent_notices

    @property
    def plugin_trouble(self) -> dict[str, str]:
        """Plugin -> one line of trouble, for status and screens (the appliance adds to it)."""
        return self.telling.plugin_trouble

    # -- telling people --------------------------------------------------------

    def notify(self, notice: Notice) -> None:
        """To every notifier in ``[notifier] use`` and to the display in use."""
        self.telling.notify(notice)

    # -- online or not, and what the vendor asks -------------------------------

    def check_online(self) -> bool:
        return self.health.check_online()

    def status(self, check: bool = True) -> dict:
        return self.health.status(check)

    def readiness(self) -> list:
        """Every "ready to sell offline?" line (see :mod:`kiosk.readiness`);
        kept in ``last_readiness`` for screens, which must not ask the network."""
        return self.health.readiness()

    def sync_problem(self) -> str | None:
        """The sync plugin's one line of trouble, if it has one."""
        return optional(self.sync, "Forwarder", "problem")

    # -- selling -----------------------------------------------------------------

    def take_sale(self, amount: int, currency: str | None = None, *, behavior: str | None = None,
                  confirm=None, customer: str | None = None, card: str | None = None,
                  cancel: threading.Event | None = None, items: list | None = None, tip: int = 0,
                  receipt_email: str | None = None) -> SaleResult:
        """Take one sale through the reader.  ``confirm(offer) -> bool`` is asked
        before an offline sale in ``prefer_online``; without it the sale is refused.
        ``amount`` is the goods (``items``' total when given); the card is charged ``amount + tip``."""
        result = self.selling.take_sale(amount, currency, behavior=behavior, confirm=confirm, customer=customer,
                                        card=card, cancel=cancel, items=items, tip=tip, receipt_email=receipt_email)
        if result.ok:       # after the result, on the receipt thread: a printer never holds a sale
            self.receipt_printing.after(result.payment)
        return result

    def _store_sale(self, amount, currency, offline, card: CardResult, customer) -> Payment:
        """Build, prepare and durably store a sale (``bench/`` times this)."""
        return self.selling.store_sale(amount, currency, offline, card, customer)

    def history(self) -> History:
        return self.selling.history()

    def effective_limits(self, currency: str) -> Limits | None:
        return self.selling.effective_limits(currency)

    def stored(self, currency: str) -> Stored:
        return self.selling.stored(currency)

    @contextmanager
    def reader_swapped(self, reader):
        """Take sales through another reader for a while (the demo's Tap to Pay phone)."""
        previous, self.reader = self.reader, reader
        try:
            yield reader
        finally:
            self.reader = previous
            reader.close()

    # -- receipts ----------------------------------------------------------------

    def print_receipt(self, payment_id: str) -> str | None:
        """Print (again) a payment's receipt: ``None`` once printed, else one line saying why not."""
        return self.receipt_printing.print_now(payment_id)

    def receipt_printer_ready(self) -> bool:
        """A plugin has a receipt printer set up (it may still be off or out of paper)."""
        return self.receipt_printing.printer() is not None

    # -- forwarding --------------------------------------------------------------

    def forward(self, force: bool = True, stop: threading.Event | None = None,
                progress=None) -> SyncReport:
        """Forward what is waiting.  ``force`` ignores back-off ("sync now").
        ``progress(done, total)`` is called as payments settle."""
        return self.forwarding.forward(force=force, stop=stop, progress=progress)

    def forward_one(self, payment: Payment, tell: bool = True, lookup_only: bool = False,
                    at_till: bool = False, lookup_first: bool = False) -> Outcome:
        """One attempt for one payment (see :meth:`kiosk.forwarding.Forwarding.forward_one`)."""
        return self.forwarding.forward_one(payment, tell=tell, lookup_only=lookup_only, at_till=at_till,
                                           lookup_first=lookup_first)

    def _record(self, payment: Payment, outcome: Outcome, at_till: bool = False) -> None:
        """Record what an attempt under way came to (durable)."""
        self.forwarding.record(payment, outcome, at_till)

    def request_sync(self) -> None:
        """"Sync now" from a button or screen: the background loop forwards at once."""
        self.wake.set()

    def run_background(self, stop: threading.Event) -> None:
        """Forward whenever Stripe is reachable, send reminders, tidy the store
        (:func:`kiosk.background.run`).  Wakes early on ``self.wake``."""
        background.run(self, stop)

    # -- the 24-hour window and follow-ups ---------------------------------------

    def remind(self) -> list[Notice]:
        """Remind the vendor as the oldest pending payment crosses each configured age."""
        return self.reminders.remind()

    def note_synced(self, force: bool = False) -> None:
        self.reminders.note_synced(force)

    def needs_attention(self) -> list[Payment]:
        """Failed forwards the vendor has not followed up yet, newest first."""
        return self.reminders.needs_attention()

    def mark_followed_up(self, payment_id: str) -> Payment:
        """The vendor has dealt with a failed payment (called the customer...)."""
        return self.reminders.mark_followed_up(payment_id)

    # -- void and refund ---------------------------------------------------------

    def void(self, payment_id: str) -> RefundResult:
        """Void a sale not yet charged (a charged one is refunded instead): :mod:`kiosk.refunding`."""
        return self._refund_receipt(self.refunding.void(payment_id))

    def refund(self, payment_id: str, amount: int | None = None) -> RefundResult:
        """Refund ``amount`` minor units (default: all that is left) of a charged sale."""
        return self._refund_receipt(self.refunding.refund(payment_id, amount))

    def _refund_receipt(self, result: RefundResult) -> RefundResult:
        """A refund taken or kept for sending: its "REFUND" receipt, on the receipt thread."""
        if result.ok and result.payment is not None and result.payment.is_refund:
            self.receipt_printing.after(result.payment)
        return result

    def refundable(self, payment_id: str) -> int:
        """Minor units of a sale still refundable (0 if none)."""
        return self.refunding.refundable(payment_id)

    # -- closing -----------------------------------------------------------------

    def close(self) -> None:
        try:
            self.selling.write_shown()              # which offline sales were seen approved
        except Exception as exc:                    # a full or damaged disk: one line; the next start tells
            log.warning("which offline sales were shown approved was not recorded (the next start will "
                        "name them): %s", (str(exc).splitlines() or [type(exc).__name__])[0])
        try:
            self.timekeeper.save()                  # the last known good time, for the next start
        except Exception as exc:                    # a full or damaged disk: said once, in one line
            log.warning("the clock's last known good time was not saved: %s",
                        (str(exc).splitlines() or [type(exc).__name__])[0])
        # after what must be durable (a hung printer may hold this up to 30 s), before the plugins stop
        self.receipt_printing.close()
        self.host.call_isolated("kiosk_shutdown", kiosk=self.view)
        for part in (self.reader, self.sync, self.store):
            try:
                part.close()
            except Exception:
                log.exception("closing %s failed", type(part).__name__)
