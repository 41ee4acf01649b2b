"""Offline limits: how much the kiosk may hold before it has talked to Stripe.

The policy itself is a hook (``kiosk_offline_limits``); this module holds the
values it works on and the check the sale engine applies.  Amounts are minor
units of one currency.
"""
from __future__ import annotations

from dataclasses import dataclass

from .money import format_amount, minor_digits, to_decimal
from decimal import Decimal


@dataclass(frozen=True)
class Limits:
    currency: str
    per_transaction: int   # largest single offline sale
    total: int             # largest total stored offline
    count: int             # most payments waiting to be forwarded

    def as_dict(self) -> dict:
        return {"currency": self.currency, "per_transaction": self.per_transaction,
                "total": self.total, "count": self.count}


@dataclass(frozen=True)
class History:
    forwarded: int                 # offline payments Stripe accepted, ever
    declined: int                  # offline payments Stripe declined, ever
    hours_since_sync: float        # since the last successful contact with Stripe
    oldest_pending_hours: float | None   # age of the oldest payment still to forward


@dataclass(frozen=True)
class Stored:
    """What is already waiting in one currency."""
    amount: int
    count: int          # all pending payments, every currency


class LimitRefused(Exception):
    """An offline sale over a limit; ``str()`` names the limit.  ``which`` is
    ``per_transaction``, ``total`` or ``count``."""

    def __init__(self, which: str, message: str):
        super().__init__(message)
        self.which = which


def base_limits(limits_config: dict, kiosk_currency: str, currency: str) -> Limits | None:
    """The configured limits for ``currency``, or ``None`` when none are set."""
    table = limits_config["currencies"].get(currency)
    if table is None and currency == kiosk_currency:
        table = limits_config
    if table is None:
        return None
    return Limits(currency=currency,
                  per_transaction=_minor(table["per_transaction"], currency),
                  total=_minor(table["total"], currency),
                  count=int(limits_config["max_pending"]))


def _minor(major: float, currency: str) -> int:
    return int(Decimal(str(major)).scaleb(minor_digits(currency)))


def check_sale(amount: int, limits: Limits, stored: Stored) -> None:
    """Raise :class:`LimitRefused` when this sale would break a limit."""
    cur = limits.currency
    if stored.count + 1 > limits.count:
        raise LimitRefused("count", f"offline limit reached: {stored.count} payments already waiting "
                                    f"(limit {limits.count} now); go online to send them")
    if amount > limits.per_transaction:
        raise LimitRefused("per_transaction",
                           f"over the offline limit per sale: {format_amount(amount, cur)} is more than "
                           f"{format_amount(limits.per_transaction, cur)} allowed now")
    if stored.amount + amount > limits.total:
        left = max(0, limits.total - stored.amount)
        raise LimitRefused("total",
                           f"over the total offline limit: {format_amount(left, cur)} left of "
                           f"{format_amount(limits.total, cur)} for {cur.upper()}")


def describe_left(limits: Limits, stored: Stored) -> str:
    left = max(0, limits.total - stored.amount)
    return f"{format_amount(left, limits.currency)} of {format_amount(limits.total, limits.currency)} offline limit left"


__all__ = ["Limits", "History", "Stored", "LimitRefused", "base_limits", "check_sale",
           "describe_left", "to_decimal"]
