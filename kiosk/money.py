"""Money at the edges: parse what the vendor typed, format what they see, convert for Stripe.

Inside the kiosk an amount is always an ``int`` in the currency's minor unit as
Babel (CLDR) defines it: JPY and KRW have none, KWD, BHD, JOD, OMR and TND have
three.  Stripe's API uses its own exponent for a few currencies (ISK and HUF,
say, are sent as two-decimal amounts), so :func:`to_stripe_amount` converts at
the very last step.
"""
from __future__ import annotations

from decimal import Decimal, InvalidOperation

from babel.numbers import format_currency, get_currency_precision

# Every presentment currency Stripe accepts (docs: "Supported currencies").
STRIPE_CURRENCIES = frozenset("""
usd aed afn all amd ang aoa ars aud awg azn bam bbd bdt bgn bhd bif bmd bnd bob
brl bsd bwp byn bzd cad cdf chf clp cny cop crc cve czk djf dkk dop dzd egp etb
eur fjd fkp gbp gel gip gmd gnf gtq gyd hkd hnl htg huf idr ils inr isk jmd jod
jpy kes kgs khr kmf krw kwd kyd kzt lak lbp lkr lrd lsl mad mdl mga mkd mmk mnt
mop mur mvr mwk mxn myr mzn nad ngn nio nok npr nzd omr pab pen pgk php pkr pln
pyg qar ron rsd rub rwf sar sbd scr sek sgd shp sle sos srd std szl thb tjs tnd
top try ttd twd tzs uah ugx uyu uzs vnd vuv wst xaf xcd xcg xof xpf yer zar zmw
""".split())

# Stripe's exponent where it is not 2 (docs: "Zero-decimal" and "Three-decimal currencies").
_STRIPE_ZERO_DECIMAL = frozenset(
    "bif clp djf gnf jpy kmf krw mga pyg rwf ugx vnd vuv xaf xof xpf".split())
_STRIPE_THREE_DECIMAL = frozenset("bhd jod kwd omr tnd".split())

# Stripe's minimum charge per currency, in Stripe's own units (docs: "Minimum and
# maximum charge amounts").  Other currencies: the USD 0.50 equivalent, which
# only Stripe can work out; we require at least one minor unit and Stripe has
# the last word when the payment is forwarded.
_STRIPE_MINIMUM = {
    "usd": 50, "aed": 200, "aud": 50, "bgn": 100, "brl": 50, "cad": 50, "chf": 50,
    "czk": 1500, "dkk": 250, "eur": 50, "gbp": 30, "hkd": 400, "huf": 17500,
    "inr": 50, "jpy": 50, "mxn": 1000, "myr": 200, "nok": 300, "nzd": 50,
    "pln": 200, "ron": 200, "sek": 300, "sgd": 50, "thb": 1000,
}

# Stripe's largest amount is eight digits in its own units.
_MAX_STRIPE_DIGITS = 8


class MoneyError(ValueError):
    """An amount or currency the kiosk cannot take; ``str()`` is one line for the vendor."""


def currency_code(currency: str) -> str:
    """Normalise ``"USD"``/``" usd "`` to ``"usd"``; refuse what Stripe does not take."""
    code = str(currency).strip().lower()
    if code not in STRIPE_CURRENCIES:
        raise MoneyError(f"unknown currency {currency!r}: Stripe does not take it")
    return code


def minor_digits(currency: str) -> int:
    """Digits after the decimal point for this currency (Babel/CLDR)."""
    return get_currency_precision(currency_code(currency).upper())


def _stripe_digits(code: str) -> int:
    if code in _STRIPE_ZERO_DECIMAL:
        return 0
    if code in _STRIPE_THREE_DECIMAL:
        return 3
    return 2


def to_stripe_amount(amount: int, currency: str) -> int:
    """Minor units as Stripe's API wants them (ISK 500 is sent as 50000)."""
    code = currency_code(currency)
    shift = _stripe_digits(code) - minor_digits(code)
    return amount * 10 ** shift if shift >= 0 else amount // 10 ** -shift


def from_stripe_amount(amount: int, currency: str) -> int:
    code = currency_code(currency)
    shift = _stripe_digits(code) - minor_digits(code)
    return amount // 10 ** shift if shift >= 0 else amount * 10 ** -shift


def minimum_charge(currency: str) -> int:
    """Smallest amount Stripe charges, in our minor units (at least 1)."""
    code = currency_code(currency)
    stripe_min = _STRIPE_MINIMUM.get(code)
    if stripe_min is None:
        return 1
    return max(1, -(-stripe_min // 10 ** max(0, _stripe_digits(code) - minor_digits(code))))


def charge_step(currency: str) -> int:
    """The smallest step of a charge, in our minor units: Stripe takes BHD, JOD,
    KWD, OMR and TND only in amounts whose last digit is 0 (docs: "Three-decimal
    currencies"), so their step is 10 fils; 1 for every other currency."""
    code = currency_code(currency)
    if code in _STRIPE_THREE_DECIMAL:
        return max(1, 10 // 10 ** max(0, _stripe_digits(code) - minor_digits(code)))
    return 1


def check_amount(amount: int, currency: str, minimum: bool = True) -> int:
    """Validate an amount already in minor units; returns it.  ``minimum``:
    hold it to Stripe's minimum charge (a refund has none)."""
    code = currency_code(currency)
    if isinstance(amount, bool) or not isinstance(amount, int):
        raise MoneyError(f"amount must be a whole number of minor units, not {amount!r}")
    if amount <= 0:
        raise MoneyError("amount must be more than zero")
    step = charge_step(code)
    if amount % step:
        raise MoneyError(f"amount {format_amount(amount, code)}: Stripe takes {code.upper()} only in steps of "
                         f"{format_amount(step, code)} (the last digit 0)")
    if len(str(to_stripe_amount(amount, code))) > _MAX_STRIPE_DIGITS:
        raise MoneyError(f"amount {format_amount(amount, code)} is over Stripe's 8-digit maximum")
    if minimum and amount < minimum_charge(code):
        raise MoneyError(f"amount {format_amount(amount, code)} is below Stripe's minimum charge "
                         f"of {format_amount(minimum_charge(code), code)}")
    return amount


def parse_amount(text: str, currency: str, minimum: bool = True) -> int:
    """``"12.50"`` in USD -> 1250; ``"1200"`` in JPY -> 1200; ``"1.234"`` in KWD -> 1234."""
    code = currency_code(currency)
    digits = minor_digits(code)
    raw = str(text).strip()
    if len(raw) > 20:
        raise MoneyError(f"amount {raw[:20]!r}… is too long")
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise MoneyError(f"amount {raw!r} is not a number") from None
    plain = raw.replace(".", "", 1).lstrip("+-")
    # ASCII digits only: str.isdigit() and Decimal also take "１２" and "١٢", which no keypad sends
    if not value.is_finite() or not (plain.isascii() and plain.isdigit()):
        raise MoneyError(f"amount {raw!r} is not a plain number like 12.50")
    exponent = value.as_tuple().exponent
    if -exponent > digits and value != value.quantize(Decimal(1).scaleb(-digits)):
        if digits == 0:
            raise MoneyError(f"{code.upper()} has no decimals: {raw!r}")
        raise MoneyError(f"{code.upper()} has {digits} decimals at most: {raw!r}")
    if value <= 0:
        raise MoneyError(f"amount must be more than zero, not {raw}")
    return check_amount(int(value.scaleb(digits)), code, minimum)


def to_decimal(amount: int, currency: str) -> Decimal:
    return Decimal(amount).scaleb(-minor_digits(currency))


def format_amount(amount: int, currency: str, locale: str = "en_US") -> str:
    """What the vendor sees: ``$12.50``, ``￥1,200``, ``KWD 1.234``."""
    code = currency_code(currency)
    return format_currency(to_decimal(amount, code), code.upper(), locale=locale)
