"""Spotting a card number typed into free text: a customer contact, a kiosk
id, a setting, a command-line value.

A run of 13 to 19 digits, with or without spaces or dashes between the
groups (as people type card numbers), that passes the Luhn check is taken
for a card number and refused where it was typed.  The trade-off is meant:
a 13-15 digit phone number that happens to pass the Luhn check (one in ten
of them) is refused too, and the vendor takes an e-mail address instead.

A reader's payment token is held to a stricter rule (any long digit run,
Luhn or not: :func:`kiosk.interfaces.looks_like_card_number`), since a token
never holds one.  This module never logs, stores or returns the text it is
given, and the refusal it words never repeats it.
"""
from __future__ import annotations

import re

MIN_DIGITS, MAX_DIGITS = 13, 19         # card numbers (PANs) in use are 13 to 19 digits long

# digits (any script: a Japanese keyboard types ４２４２) in groups split by
# spaces or dashes; other punctuation ends the run, as it does in a date or an address
_SEPARATOR = r"[\s\-\u2010-\u2015\u2212\u30fc\uff0d]+"
_RUN = re.compile(rf"\d+(?:{_SEPARATOR}\d+)*")
_SPLIT = re.compile(_SEPARATOR)

REFUSAL = "looks like a card number (13-19 digits passing the card-number check): refused, never stored"
PHONE_ADVICE = "a phone number that long can look like one — give an e-mail address instead"


def luhn_ok(digits: str) -> bool:
    """The Luhn check digit is right.  Six lines here rather than
    python-stdnum (a 1 MB collection of 200 formats) as a new dependency of the
    pinned SD image."""
    total = 0
    for position, digit in enumerate(int(ch) for ch in reversed(digits)):
        total += (digit * 2 - 9 if digit > 4 else digit * 2) if position % 2 else digit
    return total % 10 == 0


def contains_card_number(text: str) -> bool:
    """True when ``text`` holds a card number: within a run of digit groups,
    any stretch of whole groups that is 13-19 digits long and passes Luhn
    (so "4242 4242 4242 4242 123", a number and its CVV, is caught too)."""
    for run in _RUN.finditer(text):
        groups = _SPLIT.split(run.group(0))
        for first in range(len(groups)):
            digits = ""
            for group in groups[first:]:
                digits += group
                if len(digits) > MAX_DIGITS:
                    break
                if len(digits) >= MIN_DIGITS and luhn_ok(digits):
                    return True
    return False


def refuse_card_number(text: str, what: str, advice: str = "") -> None:
    """Raise ``ValueError`` naming ``what`` (never ``text``) if ``text`` holds a card number."""
    if contains_card_number(text):
        raise ValueError(f"{what} {REFUSAL}" + (f"; {advice}" if advice else ""))
