"""Simulated card reader for the demo and the tests.

Returns what a real reader plugin returns -- a Stripe test payment-method
token, brand, last 4 and expiry -- never a card number.  ``mode =
"tap_to_pay"`` behaves like a phone's Tap to Pay: it cannot take payments
offline.
"""
from __future__ import annotations

import threading

from kiosk import CardResult, ReaderError, ReaderInfo, Setting, hookimpl

# name -> (Stripe test token, brand, last 4)
TEST_CARDS = {
    "visa": ("pm_card_visa", "visa", "4242"),
    "mastercard": ("pm_card_mastercard", "mastercard", "4444"),
    "amex": ("pm_card_amex", "amex", "8431"),
    "insufficient_funds": ("pm_card_chargeDeclinedInsufficientFunds", "visa", "9995"),
    "expired_card": ("pm_card_chargeDeclinedExpiredCard", "visa", "0069"),
    "declined": ("pm_card_chargeDeclined", "visa", "0002"),
    "incorrect_cvc": ("pm_card_chargeDeclinedIncorrectCvc", "visa", "0127"),
    "lost_card": ("pm_card_chargeDeclinedLostCard", "visa", "9987"),
    "stolen_card": ("pm_card_chargeDeclinedStolenCard", "visa", "9979"),
    "customer_fail": ("pm_card_chargeCustomerFail", "visa", "0341"),  # localstripe's decline
    "processing_error": ("pm_card_chargeDeclinedProcessingError", "visa", "0119"),  # declined for now
    "authentication_required": ("pm_card_authenticationRequired", "visa", "3184"),  # asks for 3-D Secure
}

SETTINGS = {
    "reader.simulated": {
        "mode": Setting(str, "chip", "chip (works offline) or tap_to_pay (online only)",
                        choices=("chip", "tap_to_pay")),
        "card": Setting(str, "visa", "Test card presented when a sale names none",
                        choices=tuple(TEST_CARDS)),
        "delay_seconds": Setting(float, 0.0, "Pretend the customer takes this long to tap"),
    },
}


class SimulatedReader:
    def __init__(self, mode: str = "chip", card: str = "visa", delay_seconds: float = 0.0):
        self.mode, self.default_card, self.delay = mode, card, delay_seconds

    def info(self) -> ReaderInfo:
        name = "Simulated Tap to Pay" if self.mode == "tap_to_pay" else "Simulated chip reader"
        return ReaderInfo(name=name, supports_offline=self.mode != "tap_to_pay",
                          battery=100, firmware="sim-1")

    def read_card(self, amount, currency, offline, cancel: threading.Event, card=None) -> CardResult:
        name = card or self.default_card
        if name not in TEST_CARDS:
            raise ReaderError(f"unknown test card {name!r} (try: {', '.join(TEST_CARDS)})")
        if self.delay and cancel.wait(self.delay):
            raise ReaderError("cancelled at the reader")
        if cancel.is_set():
            raise ReaderError("cancelled at the reader")
        token, brand, last4 = TEST_CARDS[name]
        return CardResult(token=token, brand=brand, last4=last4, exp_month=12, exp_year=2034)

    def close(self) -> None:
        pass


class SimulatedReaderPlugin:
    @hookimpl
    def kiosk_settings(self):
        return SETTINGS

    @hookimpl
    def kiosk_open_reader(self, settings):
        own = settings["reader.simulated"]
        return SimulatedReader(own["mode"], own["card"], own["delay_seconds"])


plugin = SimulatedReaderPlugin()
