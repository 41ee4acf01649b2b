"""What a sale comes to, as the vendor's screen and the CLI see it.

``SaleResult`` is what ``take_sale`` returns; ``OfflineOffer`` is what the
confirm step shows before a sale is stored offline.  Part of the plugin
contract: a display plugin reads both.
"""
from __future__ import annotations

from dataclasses import dataclass

from .card_numbers import PHONE_ADVICE, refuse_card_number
from . import same_card as repeated_card
from .limits import Limits, Stored, describe_left
from .payment import Payment

WINDOW_HOURS = 24.0     # Stripe keeps an offline payment's idempotency key this long: forward within it

APPROVED, APPROVED_OFFLINE, DECLINED, REFUSED, CANCELLED, UNCONFIRMED = (
    "approved", "approved_offline", "declined", "refused", "cancelled", "unconfirmed")

# SaleResult.disk: how far a sale got when the data partition refused a write (full, over quota, failing)
NOT_STORED = "not_stored"                    # nothing stored, nothing charged: take the sale again later
KEPT_NOT_CHARGED = "kept_not_charged"        # stored, never sent: charged once it can be written
CHARGED_NOT_STORED = "charged_not_stored"    # Stripe charged it; the kiosk records it once it can write
SENT_NOT_STORED = "sent_not_stored"          # sent; Stripe's answer could be neither checked nor recorded
MAYBE_STORED = "maybe_stored"                # the card failed mid-write: the sale may be kept


# OfflineOffer.because: why Stripe cannot take the sale now, in words.  A key
# missing or rejected is named as such, never "unreachable": the vendor must fix it.
OFFLINE_BECAUSE = {
    "unreachable": "Stripe cannot be reached",
    "key_missing": "no Stripe API key is set",
    "key_rejected": "Stripe rejected the API key",
    "request_refused": "Stripe refuses this kiosk's requests (it needs an update)",
}


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
    because: str = "unreachable"  # a key of OFFLINE_BECAUSE
    same_card: int = 0            # offline sales this card already has waiting (asked again once it is read)
    same_card_max: int = 0        # [limits] same_card_max

    @property
    def same_card_warning(self) -> str | None:
        """One line when the card already has offline sales waiting, else None."""
        return repeated_card.warning(self.same_card, self.same_card_max)

    @property
    def left(self) -> str:
        return describe_left(self.limits, self.stored)

    @property
    def reason(self) -> str:
        """Why the sale would be offline, one line: it is still sent once Stripe takes it."""
        return OFFLINE_BECAUSE.get(self.because, OFFLINE_BECAUSE["unreachable"])


@dataclass
class SaleResult:
    status: str                 # approved, approved_offline, declined, refused, cancelled, unconfirmed
    message: str
    payment: Payment | None = None
    limit: str | None = None    # which limit refused it
    disk: str | None = None     # the data partition refused a write: how far the sale got (NOT_STORED...)

    @property
    def ok(self) -> bool:
        return self.status in (APPROVED, APPROVED_OFFLINE)


def check_contact(contact: str) -> str:
    """An e-mail address or a phone number, for following up a decline.
    ``ValueError`` otherwise, never repeating what was typed (it may be a card number)."""
    text = contact.strip()
    refuse_card_number(text, "customer contact", PHONE_ADVICE)
    digits = [c for c in text if c.isdigit()]
    if "@" in text:
        local, _, domain = text.partition("@")
        if local and "." in domain and " " not in text and len(text) <= 254:
            return text
        raise ValueError("customer contact is not an e-mail address (name@example.com)")
    if all(c.isdigit() or c in "+-() ." for c in text) and 7 <= len(digits) <= 15:
        return text
    raise ValueError("customer contact is neither an e-mail address nor a phone number (7-15 digits)")
