"""Quick items and tips: the stall's catalog (``[[catalog.items]]``), the cart a
sale is built from, the tip on top of it, and the one-line summary of what was sold.

Money here is an ``int`` in the currency's minor unit, as everywhere inside the
kiosk; only a price read from ``config.toml`` is converted (Babel's digits).
A tip is rounded half up to the smallest step Stripe charges in: the minor
unit (15% of $3.33 is $0.50, of ¥333 is ¥50), or 10 fils for the
three-decimal currencies (10% of KWD 3.350 is KWD 0.340).

This module never stores, sends or logs anything; it refuses an item name that
looks like a card number (:mod:`kiosk.card_numbers`) without repeating it.
"""
from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

from .card_numbers import contains_card_number, refuse_card_number
from .money import MoneyError, charge_step, currency_code, minor_digits, to_stripe_amount

MAX_NAME = 40           # a button's label: longer names do not fit the screen
MAX_TIPS = 4            # tip buttons the screen shows beside "no tip"
MAX_QUANTITY = 999
ITEM_KEYS = ("name", "price", "currency")
DESCRIPTION_MAX = 1000  # Stripe's PaymentIntent `description`
METADATA_MAX = 500      # Stripe's limit for one metadata value
TIMES = "×"


class CatalogError(ValueError):
    """A bad ``[[catalog.items]]`` entry or ``[kiosk] tips``; ``str()`` is one line naming it."""


@dataclass(frozen=True)
class QuickItem:
    name: str
    price: int          # minor units of ``currency``, each
    currency: str       # lowercase ISO 4217


# -- the catalog, read from config ------------------------------------------------

def check_catalog(raw: list, default_currency: str) -> list[dict]:
    """``[[catalog.items]]`` as parsed TOML -> ``[{"name", "price", "currency"}]``
    (price in minor units).  ``CatalogError`` naming the entry, counted from 1."""
    checked, seen = [], set()
    for number, entry in enumerate(raw, start=1):
        where = f"catalog.items[{number}]"
        if not isinstance(entry, dict):
            raise CatalogError(f"{where} must be a table with name and price ([[catalog.items]])")
        unknown = sorted(set(entry) - set(ITEM_KEYS))
        if unknown:
            raise CatalogError(f"{where}: unknown key {unknown[0]!r} (an item has name, price, currency)")
        name = entry.get("name")
        if not isinstance(name, str) or not name.strip():
            raise CatalogError(f"{where}.name must be some text, like \"Coffee\"")
        try:
            refuse_card_number(name, f"{where}.name")
        except ValueError as exc:
            raise CatalogError(str(exc)) from None
        name = " ".join(name.split())
        if len(name) > MAX_NAME:
            raise CatalogError(f"{where}.name is longer than {MAX_NAME} characters")
        if name.casefold() in seen:
            raise CatalogError(f"{where}.name {name!r} is already the name of another item")
        seen.add(name.casefold())
        try:
            currency = currency_code(entry.get("currency") or default_currency)
        except MoneyError as exc:
            raise CatalogError(f"{where}.currency: {exc}") from None
        if "price" not in entry:
            raise CatalogError(f"{where}.price is missing")
        try:
            price = price_of(entry["price"], currency)
        except MoneyError as exc:
            raise CatalogError(f"{where}.price: {exc}") from None
        checked.append({"name": name, "price": price, "currency": currency})
    return checked


def price_of(value, currency: str) -> int:
    """A price as written in config (``3.50``, ``350`` in JPY, ``"3.50"``) in minor units.
    Not :func:`kiosk.money.parse_amount`: one item may cost less than Stripe's minimum charge."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise MoneyError(f"must be a number like 3.50, not {type(value).__name__}")
    raw = str(value).strip()
    try:
        number = Decimal(raw)
    except InvalidOperation:
        raise MoneyError(f"{raw[:20]!r} is not a number like 3.50") from None
    if not number.is_finite():
        raise MoneyError(f"{raw[:20]!r} is not a number like 3.50")
    if number <= 0:
        raise MoneyError(f"must be more than zero, not {raw}")
    digits = minor_digits(currency)
    minor = number.scaleb(digits)
    if minor != minor.to_integral_value():
        unit = "no decimals" if digits == 0 else f"{digits} decimals at most"
        raise MoneyError(f"{currency.upper()} has {unit}: {raw}")
    price = int(minor)
    step = charge_step(currency)
    if price % step:            # Stripe could never charge a sale made of it (the three-decimal currencies)
        raise MoneyError(f"{currency.upper()} is charged in steps of {Decimal(step).scaleb(-digits)} "
                         f"(the last digit 0): {raw}")
    if len(str(to_stripe_amount(price, currency))) > 8:
        raise MoneyError(f"{raw} is over Stripe's 8-digit maximum")
    return price


def check_tips(percents: list) -> list[int]:
    """``[kiosk] tips``: at most :data:`MAX_TIPS` whole percents, each 1 to 100."""
    if len(percents) > MAX_TIPS:
        raise CatalogError(f"[kiosk] tips: at most {MAX_TIPS} choices, not {len(percents)}")
    for percent in percents:
        if not 1 <= percent <= 100:
            raise CatalogError(f"[kiosk] tips: each tip is a percent from 1 to 100, not {percent}")
    if len(set(percents)) != len(percents):
        raise CatalogError("[kiosk] tips: a percent is listed twice")
    return list(percents)


def catalog(config) -> list[QuickItem]:
    """The quick items of a checked config, in the order written."""
    return [QuickItem(entry["name"], entry["price"], entry["currency"])
            for entry in config["catalog"].get("items", ())]


def find(items: list[QuickItem], name: str) -> QuickItem | None:
    """The item called ``name`` (case and spacing ignored), or None."""
    wanted = " ".join(name.split()).casefold()
    return next((item for item in items if item.name.casefold() == wanted), None)


# -- the cart ---------------------------------------------------------------------

@dataclass(frozen=True)
class Line:
    item: QuickItem
    quantity: int

    @property
    def total(self) -> int:
        return self.item.price * self.quantity


class Cart:
    """What the customer is buying: quick items and how many of each, all in one currency."""

    def __init__(self):
        self._lines: dict[str, Line] = {}       # by name, in the order first added

    def add(self, item: QuickItem, quantity: int = 1) -> None:
        line = self._lines.get(item.name)
        self.set_quantity(item, (line.quantity if line else 0) + quantity)

    def set_quantity(self, item: QuickItem, quantity: int) -> None:
        """``quantity`` of ``item`` (0 removes it)."""
        if isinstance(quantity, bool) or not isinstance(quantity, int) or not 0 <= quantity <= MAX_QUANTITY:
            raise ValueError(f"quantity of {item.name} must be a whole number from 0 to {MAX_QUANTITY}")
        if quantity == 0:
            self._lines.pop(item.name, None)
            return
        if self._lines and item.name not in self._lines and self.currency != item.currency:
            raise ValueError(f"{item.name} is priced in {item.currency.upper()} and the cart in "
                             f"{self.currency.upper()}: one currency per sale")
        self._lines[item.name] = Line(item, quantity)

    def remove(self, item: QuickItem | str) -> None:
        self._lines.pop(item if isinstance(item, str) else item.name, None)

    def clear(self) -> None:
        self._lines.clear()

    def lines(self) -> list[Line]:
        return list(self._lines.values())

    @property
    def currency(self) -> str | None:
        return next(iter(self._lines.values())).item.currency if self._lines else None

    @property
    def total(self) -> int:
        return sum(line.total for line in self._lines.values())

    def __len__(self) -> int:
        return sum(line.quantity for line in self._lines.values())

    def items(self) -> list[dict]:
        """The list stored on the sale (:attr:`kiosk.payment.Payment.items`)."""
        return [{"name": line.item.name, "price": line.item.price, "quantity": line.quantity}
                for line in self._lines.values()]


def check_items(items: list, what: str = "items") -> int:
    """A sale's ``items`` (``[{"name", "price", "quantity"}]``) checked; returns their total
    in minor units.  ``ValueError`` in one line, never repeating a name that looks like a card number."""
    if not isinstance(items, list):
        raise ValueError(f"{what} must be a list of {{name, price, quantity}}")
    total = 0
    for number, entry in enumerate(items, start=1):
        where = f"{what}[{number}]"
        if not isinstance(entry, dict) or set(entry) != {"name", "price", "quantity"}:
            raise ValueError(f"{where} must have exactly name, price and quantity")
        name, price, quantity = entry["name"], entry["price"], entry["quantity"]
        if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME:
            raise ValueError(f"{where}.name must be text of 1 to {MAX_NAME} characters")
        refuse_card_number(name, f"{where}.name")
        for key, value, low in (("price", price, 1), ("quantity", quantity, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{where}.{key} must be a whole number of at least {low}")
        if quantity > MAX_QUANTITY:
            raise ValueError(f"{where}.quantity must be at most {MAX_QUANTITY}")
        total += price * quantity
    return total


# -- tips -------------------------------------------------------------------------

def tip_amount(amount: int, percent, currency: str) -> int:
    """``percent`` of ``amount`` (minor units), rounded half up to the smallest step
    Stripe charges in: the minor unit, or 10 fils for the three-decimal currencies."""
    step = charge_step(currency)
    if isinstance(percent, bool) or not 0 <= Decimal(str(percent)) <= 100:
        raise ValueError(f"a tip is a percent from 0 to 100, not {percent}")
    exact = Decimal(amount) * Decimal(str(percent)) / 100 / step
    return int(exact.quantize(Decimal(1), rounding=ROUND_HALF_UP)) * step


def parse_tip(text: str, amount: int, currency: str) -> int:
    """``--tip``: ``"15%"`` of ``amount``, or an amount like ``"1.50"``; ``"0"`` is no tip."""
    raw = str(text).strip()
    if raw.endswith("%"):
        try:
            percent = Decimal(raw[:-1].strip())
        except InvalidOperation:
            raise ValueError(f"tip {raw!r} is not a percent like 15%") from None
        if not percent.is_finite() or not 0 <= percent <= 100:
            raise ValueError(f"tip {raw!r} must be a percent from 0 to 100")
        return tip_amount(amount, percent, currency)
    try:
        if Decimal(raw) == 0:
            return 0
    except InvalidOperation:
        raise ValueError(f"tip {raw[:20]!r} is neither a percent like 15% nor an amount like 1.50") from None
    try:
        return price_of(raw, currency)    # no minimum of its own: only the sale's total has one
    except MoneyError as exc:
        raise ValueError(f"tip: {exc}") from None


def parse_item(text: str) -> tuple[str, int]:
    """``--item "Coffee*2"`` -> ("Coffee", 2); ``"Coffee"`` -> ("Coffee", 1)."""
    name, star, count = str(text).rpartition("*")
    if star and count.strip().isascii() and count.strip().isdigit():
        quantity = int(count)
        if not 1 <= quantity <= MAX_QUANTITY:
            raise ValueError(f"--item {name.strip()!r}: quantity must be from 1 to {MAX_QUANTITY}")
        return name.strip(), quantity
    return str(text).strip(), 1


# -- the summary ------------------------------------------------------------------

def describe(items: list[dict], limit: int | None = None) -> str:
    """``"2 × Coffee, 1 × Bun"``; cut to ``limit`` characters with "…" (Stripe's limits)."""
    text = ", ".join(f"{entry['quantity']} {TIMES} {entry['name']}" for entry in items)
    if limit is not None and len(text) > limit:
        text = text[:limit - 1].rstrip(", ") + "…"
    return text


def safe_describe(items: list[dict]) -> str:
    """:func:`describe` for the books: a name that looks like a card number (stored before
    names were checked) is never written out."""
    text = describe(items)
    return "(withheld: looks like a card number)" if contains_card_number(text) else text
