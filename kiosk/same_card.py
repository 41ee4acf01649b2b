"""The repeated-card guard: how many offline sales one card already has waiting.

Offline, a card is only checked once the kiosk is back online, so the same
card used again and again is the main fraud risk.  A card is known by brand,
last 4 and expiry -- what the reader hands over for display and what every
stored payment already holds (``Payment.card``) inside the encrypted queue.
The guard compares against those pending payments in memory and writes
nothing of its own: no list of cards, no fingerprint, no new file.

It never sees or keeps a card number, and never logs what it compares.
"""
from __future__ import annotations

from collections.abc import Iterable

from .interfaces import CardResult
from .limits import LimitRefused
from .payment import Card, Payment

SAME_CARD = "same_card"     # SaleResult.limit when the guard refuses


def same_card(stored: Card, read: CardResult) -> bool:
    """Brand, last 4 and expiry all equal (a reader that gives no expiry matches on brand and last 4)."""
    return ((stored.brand.lower(), stored.last4, stored.exp_month, stored.exp_year)
            == (read.brand.lower(), read.last4, read.exp_month, read.exp_year))


def pending_on_card(live: Iterable[Payment], card: CardResult) -> int:
    """Offline sales on ``card`` not yet forwarded (pending or being forwarded), every currency."""
    return sum(1 for payment in live if payment.offline and not payment.settled and not payment.is_refund
               and same_card(payment.card, card))


def check_card(pending: int, maximum: int) -> None:
    """Raise :class:`LimitRefused` (``which == "same_card"``) when one more would be above ``maximum``."""
    if pending + 1 > maximum:
        raise LimitRefused(SAME_CARD, f"this card already has {pending} offline sale{'s' if pending != 1 else ''} "
                                      f"waiting (limit [limits] same_card_max = {maximum}): take another card "
                                      "or wait until the kiosk is back online; nothing stored")


def warning(pending: int, maximum: int) -> str | None:
    """One line for the confirm step when the card already has offline sales waiting; None when it has none."""
    if pending <= 0:
        return None
    return (f"this card already has {pending} offline sale{'s' if pending != 1 else ''} waiting "
            f"(at most {maximum} per card)")
