"""What a sale comes to, as the vendor's screen and the CLI see it.

``SaleResult`` is what ``take_sale`` returns; ``OfflineOffer`` is what the
confirm step shows before a sale is stored offline.  Part of the plugin
contract: a display plugin reads both.
"""
from __future__ import annotations

from dataclasses import dataclass

from .limits import Limits, Stored, describe_left
from .payment import Payment

WINDOW_HOURS = 24.0     # Stripe keeps an offline payment's idempotency key this long: forward within it

APPROVED, APPROVED_OFFLINE, DECLINED, REFUSED, CANCELLED, UNCONFIRMED = (
    "approved", "approved_offline", "declined", "refused", "cancelled", "unconfirmed")


@dataclass
class OfflineOffer:
    """What the vendor sees before confirming an offline sale."""
    amount: int
    currency: str
    limits: Limits
    stored: Stored
    customer: str | None = None   # the confirm step may fill this in, for follow-up
    risk_note: str = ("Offline: the card is checked only when the kiosk is back online; "
                      "a decline then is the vendor's loss.")

    @property
    def left(self) -> str:
        return describe_left(self.limits, self.stored)


@dataclass
class SaleResult:
    status: str                 # approved, approved_offline, declined, refused, cancelled, unconfirmed
    message: str
    payment: Payment | None = None
    limit: str | None = None    # which limit refused it

    @property
    def ok(self) -> bool:
        return self.status in (APPROVED, APPROVED_OFFLINE)


def check_contact(contact: str) -> str:
    """An e-mail address or a phone number, for following up a decline."""
    text = contact.strip()
    digits = [c for c in text if c.isdigit()]
    if "@" in text:
        local, _, domain = text.partition("@")
        if local and "." in domain and " " not in text and len(text) <= 254:
            return text
        raise ValueError(f"customer contact {contact!r} is not an e-mail address")
    if all(c.isdigit() or c in "+-() ." for c in text) and 7 <= len(digits) <= 15:
        return text
    raise ValueError(f"customer contact {contact!r} is neither an e-mail address nor a phone number")
