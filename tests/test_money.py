"""Money: minor units from Babel for every currency Stripe takes."""
from __future__ import annotations

import re
from decimal import Decimal

import pytest
from hypothesis import given, strategies as st

from kiosk.money import (STRIPE_CURRENCIES, MoneyError, charge_step, check_amount, format_amount, from_stripe_amount,
                         minimum_charge,
                         minor_digits, parse_amount, to_stripe_amount)


@pytest.mark.parametrize("currency, digits", [
    ("usd", 2), ("eur", 2), ("jpy", 0), ("krw", 0), ("kwd", 3), ("bhd", 3), ("jod", 3), ("omr", 3), ("tnd", 3),
])
def test_minor_units(currency, digits):
    assert minor_digits(currency) == digits


def test_every_stripe_currency_has_digits_and_round_trips():
    for currency in STRIPE_CURRENCIES:
        digits = minor_digits(currency)
        assert digits in (0, 2, 3), currency
        amount = max(minimum_charge(currency), 10 ** digits * 7)
        assert from_stripe_amount(to_stripe_amount(amount, currency), currency) == amount
        assert format_amount(amount, currency)


@pytest.mark.parametrize("text, currency, amount", [
    ("12.50", "usd", 1250), ("12.5", "USD", 1250), ("0.50", "usd", 50), ("1200", "jpy", 1200),
    ("1.230", "kwd", 1230), ("7", "kwd", 7000), ("99999999", "jpy", 99999999), ("500", "isk", 500),
])
def test_parse(text, currency, amount):
    assert parse_amount(text, currency) == amount


@pytest.mark.parametrize("text, currency, words", [
    ("12.505", "usd", "2 decimals at most"), ("1.5", "jpy", "no decimals"), ("1.2345", "kwd", "3 decimals"),
    ("1.234", "kwd", "only in steps of KWD0.010"), ("0.005", "bhd", "the last digit 0"),   # Stripe: 3-decimal
    ("0", "usd", "more than zero"), ("-1", "usd", "more than zero"), ("abc", "usd", "not a number"),
    ("1e5", "usd", "plain number"), ("NaN", "usd", "plain number"), ("", "usd", "not a number"),
    ("123456789", "usd", "8-digit maximum"), ("0.49", "usd", "minimum charge of $0.50"),
    ("0.29", "gbp", "minimum"), ("49", "jpy", "minimum"), ("5", "xyz", "unknown currency"),
    ("1000000", "isk", "8-digit maximum"),  # ISK goes to Stripe x100
    ("１２", "jpy", "plain number"), ("١٢.٥٠", "usd", "plain number"),   # digits no keypad sends
])
def test_parse_refuses_with_one_line(text, currency, words):
    with pytest.raises(MoneyError, match=re.escape(words)) as info:
        parse_amount(text, currency)
    assert "\n" not in str(info.value)


def test_stripe_units_differ_where_stripe_says_so():
    assert to_stripe_amount(500, "isk") == 50000      # ISK: no decimals in CLDR, two at Stripe
    assert to_stripe_amount(1200, "jpy") == 1200
    assert to_stripe_amount(1234, "kwd") == 1234
    assert [charge_step(code) for code in ("kwd", "bhd", "jod", "omr", "tnd", "usd", "jpy", "isk")] == [
        10, 10, 10, 10, 10, 1, 1, 1]
    assert check_amount(20, "usd", minimum=False) == 20        # a refund: no minimum charge
    assert minimum_charge("jpy") == 50 and minimum_charge("usd") == 50


def test_formatting():
    assert format_amount(1250, "usd") == "$12.50"
    assert format_amount(1200, "jpy", "ja_JP") == "￥1,200"
    assert format_amount(1234, "kwd").endswith("1.234")


@given(st.sampled_from(sorted(STRIPE_CURRENCIES)), st.integers(min_value=1, max_value=99_999))
def test_format_then_parse_round_trips(currency, units):
    step = charge_step(currency)            # 10 fils for the three-decimal currencies, else 1
    amount = max(units * step, minimum_charge(currency))
    text = str(Decimal(amount).scaleb(-minor_digits(currency)))
    try:
        assert parse_amount(text, currency) == amount
    except MoneyError as exc:
        assert "8-digit maximum" in str(exc)
