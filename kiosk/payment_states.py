"""A payment's state machine: every change the kiosk makes to a stored
payment, as a named move, in one place.

States and the moves allowed between them (``MOVES``)::

    pending ──> forwarding ──> succeeded
       ^          │  ^  │ └───> failed     (declined, or permanently refused)
       └──────────┘  └──┘
    retry later,     a crash cut the attempt short:
    declined for now the next one begins from forwarding
    pending, forwarding ──> moved          (exported: another kiosk forwards it)
    pending, forwarding ──> voided         (the vendor voided it; Stripe never charged it)

``succeeded``, ``failed``, ``moved`` and ``voided`` are final.  A refund
record (``refund_of`` set) makes the same moves as a sale, voided excepted.
Besides the state, the moves here are the only writers of a payment's
attempt bookkeeping (``attempts``, ``next_attempt_at``, ``settled_at``,
``decline_code``, ``message``, ``last_outcome``, ``soft_declines`` ...), of
the vendor's marks on it (``followed_up``, ``interrupted_told``,
``reminded_hours``) and of a sale's reserved refunds (``refunds``).  An
illegal move raises :class:`IllegalMove` and changes nothing.

This module changes the payment in memory only.  It never stores, notifies or
calls a plugin: the caller saves the payment (durable) right after the move,
before anyone is told of it.
"""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import Callable

from .interfaces import Outcome, Request
from .payment import FAILED, FORWARDING, LIVE_STATES, MOVED, PENDING, SUCCEEDED, VOIDED, Payment, iso

MOVES: dict[str, frozenset[str]] = {
    PENDING: frozenset({FORWARDING, MOVED, VOIDED}),
    # an attempt ends pending (retry later, declined for now) or settled; a crash
    # between the mark and the answer leaves it forwarding, and the next attempt starts from there;
    # a void's own lookup (in the held slot) that finds nothing charged ends it voided
    FORWARDING: frozenset({FORWARDING, PENDING, SUCCEEDED, FAILED, MOVED, VOIDED}),
    SUCCEEDED: frozenset(),
    FAILED: frozenset(),
    MOVED: frozenset(),
    VOIDED: frozenset(),
}


class IllegalMove(RuntimeError):
    """A move the state machine does not allow: a bug in the kiosk, never a sale's fault."""


def _move(payment: Payment, to: str) -> None:
    if to not in MOVES.get(payment.state, ()):
        raise IllegalMove(f"payment {payment.id}: {payment.state} -> {to} is not allowed")
    payment.state = to


def _require(payment: Payment, states: tuple[str, ...], what: str) -> None:
    if payment.state not in states:
        raise IllegalMove(f"payment {payment.id}: {what} while {payment.state}")


# -- before the first attempt ----------------------------------------------------

def prepared(payment: Payment, request: Request) -> None:
    """A new sale gets its idempotency key and exact request, before any attempt."""
    _require(payment, (PENDING,), "preparing a request")
    if payment.attempts:
        raise IllegalMove(f"payment {payment.id}: preparing a request after an attempt")
    payment.idempotency_key, payment.request = request.idempotency_key, request.params


def upgraded(payment: Payment, request: Request) -> None:
    """A stored request brought to today's API shape: same idempotency key."""
    _require(payment, LIVE_STATES, "upgrading the request")
    if request.idempotency_key != payment.idempotency_key:
        raise IllegalMove(f"payment {payment.id}: upgrading the request may not change its idempotency key")
    payment.request = request.params


# -- an attempt --------------------------------------------------------------------

def outcome_unknown(payment: Payment) -> bool:
    """An attempt was made whose answer may have been lost: look it up at
    Stripe before sending again.  A request Stripe refused outright did
    nothing, so it needs no lookup."""
    return payment.attempts > 0 and payment.last_outcome != "request_rejected"


def begin_attempt(payment: Payment, now: datetime, stripe_now: Callable[[], float | None],
                  may_send: bool = True) -> str:
    """Mark an attempt started; returns the state it started from.
    ``stripe_now()`` (Stripe's clock, for lookups) is asked on the first attempt only.
    ``may_send``: False for a lookup that never sends, which leaves ``last_attempt_at``
    (when Stripe was last asked to charge, which a void waits out) as it was."""
    previous = payment.state
    _move(payment, FORWARDING)
    payment.last_outcome = None              # durable with the mark: a crash from here is "unknown"
    at = iso(now)
    payment.attempts = payment.attempts + 1
    if may_send or payment.last_attempt_at is None:
        payment.last_attempt_at = at
    if payment.first_attempt_at is None:
        payment.first_attempt_at = at
        payment.first_attempt_stripe_at = stripe_now()
    return previous


def intent_found(payment: Payment, payment_intent: str) -> None:
    """A lookup found the sale's PaymentIntent at Stripe, unfinished: the send carries on with it."""
    _require(payment, (FORWARDING,), "recording a PaymentIntent")
    payment.payment_intent = payment_intent


def answered(payment: Payment, outcome: Outcome) -> None:
    """What the attempt came to, before deciding what it means."""
    _require(payment, (FORWARDING,), "recording an answer")
    payment.last_outcome = outcome.kind
    if outcome.payment_intent:
        payment.payment_intent = outcome.payment_intent   # every later step acts on that one
    if outcome.refund and payment.is_refund:
        payment.refund_id = outcome.refund                # Stripe's refund: what a later lookup names


def succeeded(payment: Payment, now: datetime) -> None:
    _move(payment, SUCCEEDED)
    payment.message = ""
    payment.decline_code, payment.settled_at = None, iso(now)


def failed(payment: Payment, now: datetime, decline_code: str | None, message: str) -> None:
    """Declined (``decline_code`` set) or refused for good (``None``)."""
    _move(payment, FAILED)
    payment.decline_code = decline_code
    payment.message, payment.settled_at = message, iso(now)


def declined_for_now(payment: Payment, now: datetime, outcome: Outcome, waits_minutes: list) -> None:
    """The issuer may approve a later try: wait the next of ``waits_minutes``."""
    _move(payment, PENDING)
    payment.soft_declines = payment.soft_declines + 1
    payment.declined_attempt = outcome.attempt
    reason = outcome.decline_code or "not finished"
    payment.message = f"declined for now ({reason}): {outcome.message}"
    delay = waits_minutes[payment.soft_declines - 1] * 60
    payment.next_attempt_at = iso(now + timedelta(seconds=delay))


def retry_later(payment: Payment, now: datetime, message: str, delay_seconds: float) -> None:
    """Not settled (network, 429, 5xx, a refused request): try again after the delay."""
    _move(payment, PENDING)
    payment.message = message
    payment.next_attempt_at = iso(now + timedelta(seconds=delay_seconds))


def moved_out(payment: Payment, now: datetime, note: str) -> None:
    """The payment left this kiosk in an export file, durable before this
    move: never forwarded from here again; ``note`` says where and when."""
    _move(payment, MOVED)
    payment.message, payment.settled_at = note, iso(now)
    payment.next_attempt_at = None


def voided(payment: Payment, now: datetime, note: str) -> None:
    """The vendor voided a sale Stripe never charged (never attempted, refused
    outright, or just looked up and not found): final, never forwarded; ``note`` says when and why."""
    if payment.is_refund:
        raise IllegalMove(f"payment {payment.id}: a refund record is never voided")
    _move(payment, VOIDED)
    payment.message, payment.settled_at = note, iso(now)
    payment.next_attempt_at = None
    # never to be charged: the reader's token (it could still be used) goes with the void
    payment.token = ""
    if payment.request:
        payment.request = {k: v for k, v in payment.request.items() if k != "payment_method"}


def refund_reserved(sale: Payment, refund_id: str) -> None:
    """A refund record's id reserved against the sale it refunds, before that record is stored."""
    _require(sale, (SUCCEEDED,), "reserving a refund")
    if sale.is_refund:
        raise IllegalMove(f"payment {sale.id}: a refund of a refund")
    sale.refunds = [*sale.refunds, refund_id]


# -- the vendor's marks ------------------------------------------------------------

def told_interrupted(payment: Payment) -> None:
    """The vendor has been told a sale was cut short (once): an online one
    whose answer was lost, or an offline one perhaps never shown approved."""
    _require(payment, LIVE_STATES, "telling of an interrupted sale")
    payment.interrupted_told = True


def seen_approved(payment: Payment) -> None:
    """An offline sale's "approved" has been shown (written after, never on the sale path)."""
    _require(payment, LIVE_STATES, "marking a sale shown")
    payment.unshown = False


def reminded(payment: Payment, hours: list) -> None:
    """The 24-hour window reminders sent for this payment, at these ages."""
    _require(payment, LIVE_STATES, "reminding")
    payment.reminded_hours = sorted(set(payment.reminded_hours) | set(hours))


def followed_up(payment: Payment) -> None:
    """The vendor dealt with a failed payment."""
    _require(payment, (FAILED,), "following up")
    payment.followed_up = True
