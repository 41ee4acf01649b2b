"""Void and refund: taking back a sale the customer changed their mind about.

- A **void** settles a sale Stripe never charged as ``voided`` (durable before
  anyone hears of it), so it is never forwarded.  A sale being forwarded at
  that moment is waited for, and the void acts on what the attempt came to; a
  sale whose last answer was lost is looked up at Stripe first.  A sale that
  turns out charged is refunded instead.
- A **refund** of a charged sale is a record of its own in the live queue
  (``refund_of`` names the sale), stored, forwarded, looked up and settled by
  the same machinery as a sale (:mod:`kiosk.forwarding`), so it is sent
  exactly once.  Taken offline, it waits for the next pass.

Rules it keeps: one void or refund decision at a time (``_deciding``); what
is still refundable is the sale's amount less its refund records that exist
and did not fail -- never more is asked back, in total; each step is durable
before the next: the refund record's id is reserved on the sale, then the
record is stored with its prepared request, then it is sent.  A reserved id
whose record was never stored (a power cut in between) counts as nothing.

It never changes a payment except through :mod:`kiosk.payment_states`, never
sends a refund its sync plugin did not declare it can send (``refunds``), and
never holds a card number: a refund record carries the sale's brand and last
4, and no token.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from datetime import timedelta

from . import notices
from . import payment_states as states
from .faults import crash_point
from .interfaces import optional
from .local_time import shown_time
from .money import charge_step, format_amount
from .payment import FAILED, MOVED, SUCCEEDED, VOIDED, Card, Payment, iso, new_payment_id, parse_iso

log = logging.getLogger("kiosk.refunding")

VOIDED_STATUS, REFUNDED, REFUND_QUEUED, REFUSED, UNCONFIRMED = (
    "voided", "refunded", "refund_queued", "refused", "unconfirmed")
STATUSES = (VOIDED_STATUS, REFUNDED, REFUND_QUEUED, REFUSED, UNCONFIRMED)
CHARGED_INSTEAD = "it was already charged: refunded instead"
# how long after an attempt began Stripe may still finish it (a timed-out request goes on at Stripe): a
# lookup that finds nothing sooner proves nothing, so a void waits this long (requests time out in 20 s)
STRIPE_MAY_STILL_ANSWER = timedelta(minutes=10)
# why a void or refund was refused (or, the last two, not confirmed)
REASONS = ("no_such_payment", "a_refund", "moved", "declined", "voided", "not_sent", "not_settled",
           "may_be_charged", "no_refunds", "no_payment_intent", "refunded_in_full", "bad_amount",
           "nothing_to_refund", "not_a_step", "too_much", "stripe_refused", "just_sent", "stripe_did_not_say")


@dataclass(frozen=True)
class RefundResult:
    """What a void or refund came to.

    - ``voided``: the sale is settled voided (or already was); never charged.
    - ``refunded``: Stripe refunded it; ``payment`` is the refund record.
    - ``refund_queued``: the refund is stored and sent by the next forwarding
      pass (offline, or Stripe did not answer); a notice tells how it ends.
    - ``refused``: nothing done; ``message`` says why (Stripe's reason when
      Stripe refused the refund: then ``payment`` is the failed refund record).
    - ``unconfirmed``: Stripe could not say whether the sale was charged;
      nothing changed: try again when it answers.

    A refusal or an unconfirmed void also carries ``reason``, one of
    :data:`REASONS` (stable: screens say it in their own language, scripts
    branch on it), and ``details``, the values its sentence names.
    """
    status: str
    message: str                    # one line for the vendor, in English
    payment: Payment | None = None  # the voided sale or the refund record
    reason: str = ""                # why refused or unconfirmed: one of REASONS
    details: dict = field(default_factory=dict)    # e.g. {"left": 300, "currency": "eur"}, {"until": "14:05"}

    @property
    def ok(self) -> bool:
        return self.status in (VOIDED_STATUS, REFUNDED, REFUND_QUEUED)


class Refunding:
    def __init__(self, kiosk):
        self.kiosk = kiosk
        self._deciding = threading.Lock()     # one void or refund decision at a time

    # -- how much is left ----------------------------------------------------------

    def refundable(self, payment_id: str) -> int:
        """Minor units of ``payment_id`` still refundable (0 when it is not a charged sale)."""
        sale = self.kiosk.store.get(payment_id)
        if sale is None or sale.is_refund or sale.state != SUCCEEDED:
            return 0
        return self._left(sale)

    def _left(self, sale: Payment) -> int:
        # a reserved id with no record (a power cut before it was stored) counts as nothing; a refund
        # waiting in the queue counts even if the sale does not name it (an older copy of history put back)
        ids = set(sale.refunds) | {p.id for p in self.kiosk.store.live() if p.refund_of == sale.id}
        records = (self.kiosk.store.get(refund_id) for refund_id in ids)
        taken = sum(r.amount for r in records if r is not None and r.state != FAILED)
        return max(0, sale.amount - taken)

    # -- void ------------------------------------------------------------------------

    def void(self, payment_id: str) -> RefundResult:
        """Void a sale not yet charged; a charged one is refunded instead (what is left of it)."""
        kiosk = self.kiosk
        with self._deciding, kiosk.forwarding.deciding(payment_id) as sale:
            result = self._void(payment_id, sale)
        return self._send(result)

    def _void(self, payment_id: str, sale: Payment | None) -> RefundResult:
        kiosk = self.kiosk
        refused = self._not_a_sale(payment_id, sale)
        if refused is not None:
            return refused
        if sale.state == VOIDED:
            return RefundResult(VOIDED_STATUS, f"{payment_id} already voided", sale)
        if sale.state == MOVED:
            return RefundResult(REFUSED, f"{payment_id} moved to another kiosk ({sale.message}): void it there",
                                reason="moved")
        if sale.state == FAILED:
            return RefundResult(REFUSED, f"{payment_id} declined: nothing to void", sale, "declined")
        if sale.state == SUCCEEDED:
            return self._refund(sale, None, because=CHARGED_INSTEAD)
        if states.outcome_unknown(sale):
            # an attempt was made and its answer lost: only Stripe can say whether it was charged
            if not kiosk.check_online():
                return RefundResult(REFUSED, f"{payment_id} may already be charged at Stripe: void it when "
                                             "online", sale, "may_be_charged")
            started = parse_iso(sale.last_attempt_at)
            if started is not None and kiosk.clock() - started < STRIPE_MAY_STILL_ANSWER:
                # a lookup now may miss a request Stripe is still working on: nothing is settled on it
                until = shown_time(started + STRIPE_MAY_STILL_ANSWER, kiosk.zone)
                return RefundResult(UNCONFIRMED, f"{payment_id} was just sent to Stripe, which may still be "
                                                 f"charging it: void it after {until}, or refund it once it "
                                                 "shows as charged; nothing voided", sale, "just_sent",
                                    {"until": until})
            outcome = kiosk.forwarding.look_up_deciding(sale)
            if sale.state == SUCCEEDED:
                return self._refund(sale, None, because=CHARGED_INSTEAD)
            if sale.state == FAILED:
                return RefundResult(REFUSED, f"{payment_id} declined: nothing to void", sale, "declined")
            if outcome.kind not in ("not_found", "declined_for_now"):
                return RefundResult(UNCONFIRMED, f"Stripe did not say whether {payment_id} was charged "
                                                 f"({outcome.message or outcome.kind}): nothing voided; "
                                                 "try again when it answers", sale, "stripe_did_not_say")
        previous = sale.state
        states.voided(sale, kiosk.clock(), "voided by the vendor before it was sent")   # settled_at says when
        kiosk.store.save(sale)                          # durable before anyone hears of it
        kiosk.telling.payment_changed(sale, previous)
        kiosk.notify(notices.voided(sale, kiosk.zone))
        return RefundResult(VOIDED_STATUS, f"voided {format_amount(sale.amount, sale.currency)} "
                                           f"{sale.card.brand} •••• {sale.card.last4}: it will never be charged",
                            sale)

    # -- refund ----------------------------------------------------------------------

    def refund(self, payment_id: str, amount: int | None = None) -> RefundResult:
        """Refund ``amount`` (minor units; default all that is left) of a charged sale."""
        kiosk = self.kiosk
        with self._deciding, kiosk.forwarding.deciding(payment_id) as sale:
            refused = self._not_a_sale(payment_id, sale)
            if refused is None and sale.state != SUCCEEDED:
                reason = {VOIDED: "voided", FAILED: "declined", MOVED: "moved"}.get(
                    sale.state, "not_settled" if states.outcome_unknown(sale) else "not_sent")
                refused = RefundResult(REFUSED, {
                    "voided": f"{payment_id} was voided: nothing was charged",
                    "declined": f"{payment_id} was declined: nothing was charged",
                    "moved": f"{payment_id} moved to another kiosk: refund it there",
                    "not_settled": f"{payment_id} is not settled yet (Stripe's answer was lost): void it "
                                   "instead, the kiosk asks Stripe first",
                    "not_sent": f"{payment_id} is not sent yet: void it instead"}[reason], sale, reason)
            result = refused or self._refund(sale, amount)
        return self._send(result)

    def _not_a_sale(self, payment_id: str, sale: Payment | None) -> RefundResult | None:
        if sale is None:
            return RefundResult(REFUSED, f"no payment {payment_id} on this kiosk", reason="no_such_payment")
        if sale.is_refund:
            return RefundResult(REFUSED, f"{payment_id} is a refund (of {sale.refund_of}), not a sale", sale,
                                "a_refund")
        return None

    def _refund(self, sale: Payment, amount: int | None, because: str = "") -> RefundResult:
        """Reserve, then store, a refund record (each durable); sent by :meth:`_send`."""
        kiosk = self.kiosk
        prefix = f"{because}; " if because else ""
        but = "it was already charged, but " if because else ""     # a void that cannot become a refund
        if not optional(kiosk.sync, "Forwarder", "refunds"):
            return RefundResult(REFUSED, f"{but}the sync plugin ({kiosk.sync.name}) cannot send refunds: "
                                         "refund it in Stripe's Dashboard", sale, "no_refunds")
        if not sale.payment_intent:
            return RefundResult(REFUSED, f"{but}{sale.id} has no PaymentIntent recorded: refund it in Stripe's "
                                         "Dashboard", sale, "no_payment_intent")
        left = self._left(sale)
        what = format_amount(sale.amount, sale.currency)
        if left <= 0:
            return RefundResult(REFUSED, f"{but}{sale.id} ({what}) is already refunded in full", sale,
                                "refunded_in_full")
        amount = left if amount is None else amount
        if isinstance(amount, bool) or not isinstance(amount, int):
            return RefundResult(REFUSED, f"a refund is a whole number of minor units, not {amount!r}", sale,
                                "bad_amount")
        if amount <= 0:
            return RefundResult(REFUSED, f"a refund must be more than {format_amount(0, sale.currency)}", sale,
                                "nothing_to_refund")
        step = charge_step(sale.currency)
        if amount % step:       # Stripe takes three-decimal currencies in steps of 10 only, refunds too
            return RefundResult(REFUSED, f"a refund in {sale.currency.upper()} is a multiple of "
                                         f"{format_amount(step, sale.currency)}, not "
                                         f"{format_amount(amount, sale.currency)}", sale, "not_a_step",
                                {"step": step, "currency": sale.currency})
        if amount > left:
            return RefundResult(REFUSED, f"at most {format_amount(left, sale.currency)} of {sale.id} ({what}) is "
                                         f"left to refund, not {format_amount(amount, sale.currency)}", sale,
                                "too_much", {"left": left, "currency": sale.currency})
        online = kiosk.check_online()
        record = Payment(id=new_payment_id(), amount=amount, currency=sale.currency,
                         created_at=iso(kiosk.clock()), offline=not online,
                         card=Card(**sale.card.__dict__), token="", reader=sale.reader,
                         payment_intent=sale.payment_intent, refund_of=sale.id)
        states.prepared(record, kiosk.sync.prepare(record))     # no I/O: a bad record reserves nothing
        states.refund_reserved(sale, record.id)
        kiosk.store.save(sale)                          # durable: the id is reserved against the sale
        crash_point("refund:after_reserve")
        kiosk.store.add(record)                         # durable: key and request before any attempt
        crash_point("refund:after_store")
        kiosk.telling.payment_changed(record, None)
        return RefundResult(REFUND_QUEUED, prefix, record)

    def _send(self, result: RefundResult) -> RefundResult:
        """A refund record just stored is sent now when Stripe is reachable (outside
        the decision: another may be decided meanwhile); anything else is as it is."""
        record = result.payment
        if result.status != REFUND_QUEUED or record is None:
            return result
        kiosk = self.kiosk
        prefix = result.message
        what = f"{format_amount(record.amount, record.currency)} to {record.card.brand} •••• {record.card.last4}"
        if record.offline:
            return RefundResult(REFUND_QUEUED, f"{prefix}offline: the refund of {what} is kept and sent once "
                                               "Stripe is reachable (a notice tells how it ends)", record)
        kiosk.forward_one(record)                       # told through the refund's own notices
        record = kiosk.store.get(record.id) or record
        if record.state == SUCCEEDED:
            return RefundResult(REFUNDED, f"{prefix}refunded {what} ({record.refund_id or 'refund'})", record)
        if record.state == FAILED:
            # the built-in sync plugin's record says "Stripe refused the refund: why": said once here
            why = (record.message or "refused").removeprefix("Stripe refused the refund: ")
            return RefundResult(REFUSED, f"{prefix}Stripe refused the refund of {what}: {why}", record,
                                "stripe_refused", {"why": why})
        if record.refund_id:        # Stripe holds it, pending with the card network: looked up until it ends
            return RefundResult(REFUND_QUEUED, f"{prefix}Stripe accepted the refund of {what} ({record.refund_id});"
                                               " it is pending with the card network — a notice tells how it "
                                               "ends", record)
        return RefundResult(REFUND_QUEUED, f"{prefix}Stripe did not answer: the refund of {what} is kept and sent "
                                           "by the next pass (a notice tells how it ends)", record)
