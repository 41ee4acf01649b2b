"""One sale's record, from card read to settled.

States::

    pending ──> forwarding ──> succeeded
       ^            │    └───> failed      (declined, or permanently refused)
       └────────────┘  retry later (network, 429, 5xx, outcome unknown)
    pending, forwarding ──> moved          (exported to another kiosk: final here)
    pending ──> voided                     (the vendor voided it before it was sent: final)

A refund is a record of its own in the same queue (``refund_of`` names the
sale): it is stored, forwarded, looked up and settled like a sale, so it
keeps every promise a sale keeps (durable before it is told, sent exactly once).

Every move between states, and every change to the attempt bookkeeping below,
is made in :mod:`kiosk.payment_states` (which also checks the move is allowed).

A payment holds a processor token and brand/last4/expiry for display, never a
card number.  Its ``request`` (idempotency key and exact parameters) is set
when the sale is stored, before any attempt; it changes only when a newer
release brings it to the API version it speaks, keeping its idempotency key.
"""
from __future__ import annotations

import secrets
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone

PENDING, FORWARDING, SUCCEEDED, FAILED = "pending", "forwarding", "succeeded", "failed"
STATES = (PENDING, FORWARDING, SUCCEEDED, FAILED)
LIVE_STATES = (PENDING, FORWARDING)
# left this kiosk in an export file (``kiosk export``): final here, kept in
# history, never forwarded from here; ``message`` names the file and the time
MOVED = "moved"
# voided by the vendor before it was ever sent: final, never forwarded, kept in history
VOIDED = "voided"
SETTLED_STATES = (SUCCEEDED, FAILED, MOVED, VOIDED)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_iso(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def new_payment_id() -> str:
    return "kp_" + secrets.token_hex(12)


@dataclass
class Card:
    brand: str
    last4: str
    exp_month: int | None = None
    exp_year: int | None = None


@dataclass
class Payment:
    id: str
    amount: int                 # minor units of ``currency``
    currency: str               # lowercase ISO 4217
    created_at: str             # ISO 8601 UTC
    offline: bool               # stored offline, forwarded later
    card: Card
    token: str                  # processor payment-method token; never shown
    reader: str
    state: str = PENDING
    customer: str | None = None     # optional contact for follow-up
    idempotency_key: str | None = None
    request: dict | None = None     # exact parameters, stored before the first attempt
    attempts: int = 0
    first_attempt_at: str | None = None
    first_attempt_stripe_at: float | None = None   # Stripe's clock then (unix), for lookups
    last_attempt_at: str | None = None
    next_attempt_at: str | None = None
    payment_intent: str | None = None
    decline_code: str | None = None
    message: str = ""
    settled_at: str | None = None
    reminded_hours: list = field(default_factory=list)
    followed_up: bool = False
    interrupted_told: bool = False  # an online sale cut short: the vendor was told once
    soft_declines: int = 0          # declines a later try may turn round ("declined for now")
    declined_attempt: str | None = None   # the processor's id of the last of those, counted once
    last_outcome: str | None = None # what the last finished attempt came to; None while one is under way
    unshown: bool = False           # an offline sale stored, not yet known to have been shown approved
    # what was sold: [{"name": str, "price": int (minor units, each), "quantity": int}], from quick items
    items: list = field(default_factory=list)
    tip: int = 0                    # minor units, part of ``amount`` (stored apart for the books)
    receipt_email: str | None = None    # Stripe e-mails its receipt here once the payment succeeds
    # a refund is a record of its own: ``refund_of`` is the sale's id, ``amount`` what is given back,
    # ``payment_intent`` the sale's PaymentIntent, ``refund_id`` Stripe's refund once it answered
    refund_of: str | None = None
    refund_id: str | None = None
    refunds: list = field(default_factory=list)    # on a sale: ids of the refund records taken against it

    @property
    def settled(self) -> bool:
        return self.state in SETTLED_STATES

    def created(self) -> datetime:
        return parse_iso(self.created_at)

    def to_record(self) -> dict:
        # by hand, not dataclasses.asdict: its deep copy was half the sale path's CPU
        record = dict(self.__dict__)
        record["card"] = dict(self.card.__dict__)
        record["reminded_hours"] = list(self.reminded_hours)
        record["items"] = _copied(self.items)
        record["refunds"] = list(self.refunds)
        record["request"] = _copied(self.request)     # a store may keep the record: share nothing with it
        return record

    @classmethod
    def from_record(cls, record: dict) -> "Payment":
        data = {k: v for k, v in record.items() if k in _FIELDS}
        data["card"] = Card(**record["card"])
        data["request"] = _copied(data.get("request"))
        data["reminded_hours"] = list(data.get("reminded_hours", ()))
        data["items"] = _copied(data.get("items") or [])
        data["refunds"] = list(data.get("refunds") or ())
        return cls(**data)

    @property
    def is_refund(self) -> bool:
        return self.refund_of is not None

    @property
    def needs_follow_up(self) -> bool:
        """Failed after the customer left (an offline sale, or an online sale
        whose answer was lost) and not followed up by the vendor yet: not a
        decline at the till, which the customer saw, and not a refund Stripe
        refused (its own notice tells the vendor; no card was charged)."""
        return (self.state == FAILED and not self.followed_up and not self.is_refund
                and (self.offline or self.interrupted_told))

    def public(self) -> dict:
        """The view for ``kiosk queue --json``, notices and screens: no token,
        no request parameters."""
        return {
            "id": self.id, "state": self.state, "amount": self.amount,
            "currency": self.currency, "created_at": self.created_at,
            "offline": self.offline,
            "card": {"brand": self.card.brand, "last4": self.card.last4,
                     "exp_month": self.card.exp_month, "exp_year": self.card.exp_year},
            "payment_intent": self.payment_intent, "decline_code": self.decline_code,
            "message": self.message, "customer": self.customer,
            "attempts": self.attempts, "settled_at": self.settled_at,
            "followed_up": self.followed_up,
            "kind": "refund" if self.refund_of else "sale",
            "items": _copied(self.items), "tip": self.tip, "receipt_email": self.receipt_email,
            "refund_of": self.refund_of, "refund_id": self.refund_id, "refunds": list(self.refunds),
        }


# what from_record keeps of a record (computed once: from_record is on the sale path)
_FIELDS = frozenset(f.name for f in fields(Payment))


def _copied(value):
    """A copy of a JSON value sharing no dict or list with it (cheaper than copy.deepcopy)."""
    if isinstance(value, dict):
        return {k: _copied(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copied(v) for v in value]
    return value
