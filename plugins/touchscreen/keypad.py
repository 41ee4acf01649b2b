"""What the keypads type: an amount the way its currency works, and a contact.

An amount is kept as the digits the vendor typed and read back as an integer
in the currency's minor unit (Babel's digits: none for JPY, three for KWD),
so the keypad never offers a decimal key a currency does not have.
"""
from __future__ import annotations

from kiosk import currency_code, minor_digits

MAX_DIGITS = 8          # Stripe takes at most eight digits; check_amount has the last word


class AmountEntry:
    def __init__(self, currency: str):
        self.currency = currency_code(currency)
        self.digits = minor_digits(self.currency)
        self.clear()

    def clear(self) -> None:
        self.whole = ""
        self.fraction: str | None = None     # None until the decimal key is pressed

    def keys(self) -> list[str]:
        """The twelve keypad keys, row by row."""
        last = "." if self.digits else "00"
        return ["7", "8", "9", "4", "5", "6", "1", "2", "3", last, "0", "back"]

    def press(self, key: str) -> bool:
        """Apply one key; False when the key cannot apply (too many digits, ...)."""
        if key == "clear":
            self.clear()
            return True
        if key == "back":
            if self.fraction:
                self.fraction = self.fraction[:-1]
            elif self.fraction is not None:
                self.fraction = None
            elif self.whole:
                self.whole = self.whole[:-1]
            else:
                return False
            return True
        if key == "00":
            return self.press("0") and self.press("0")
        if key == ".":
            if not self.digits or self.fraction is not None:
                return False
            self.fraction = ""
            return True
        if len(key) == 1 and key.isdigit():
            if self.fraction is not None:
                if len(self.fraction) >= self.digits:
                    return False
                self.fraction += key
                return True
            if len(self.whole) + self.digits >= MAX_DIGITS:
                return False
            if key == "0" and not self.whole:
                return False        # no leading zeros
            self.whole += key
            return True
        return False

    @property
    def minor(self) -> int:
        """The amount in minor units (cents, yen, fils)."""
        fraction = (self.fraction or "").ljust(self.digits, "0")
        return int(self.whole or 0) * 10 ** self.digits + int(fraction or 0)

    @property
    def empty(self) -> bool:
        return self.minor == 0


# The customer-contact keyboards: rows of keys; "mode", "back", "clear" and
# "done" are actions, everything else is typed.
EMAIL_ROWS = ["1234567890", "qwertyuiop", "asdfghjkl@", "zxcvbnm.-_"]
PHONE_ROWS = ["123", "456", "789", "+0-"]
MAX_CONTACT = 64


def type_contact(text: str, key: str) -> str:
    if key == "back":
        return text[:-1]
    if key == "clear":
        return ""
    return (text + key)[:MAX_CONTACT]
