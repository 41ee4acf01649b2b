"""Errors the link, the payment and the bleak backends share, and what the
reader's error codes mean to the vendor.

A backend that can tell a refused pairing from other connection failures
raises :class:`PairingRefused`; the link also recognises BlueZ's own
authentication errors, so the kiosk says the same thing on real hardware.
"""
from __future__ import annotations

from bleak.exc import BleakError

from . import messages as m

# BlueZ (D-Bus) errors that mean the reader would not pair.
BLUEZ_PAIRING_ERRORS = (
    "org.bluez.Error.AuthenticationFailed",
    "org.bluez.Error.AuthenticationRejected",
    "org.bluez.Error.AuthenticationCanceled",
    "org.bluez.Error.AuthenticationTimeout",
)


class PairingRefused(BleakError):
    """The reader refused LE Secure Connections pairing."""


def is_pairing_refusal(exc: BaseException | None) -> bool:
    """Whether ``exc``, or anything it was raised from, is a refused pairing."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, PairingRefused):
            return True
        if any(name in str(exc) for name in BLUEZ_PAIRING_ERRORS):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


class ReaderLinkError(Exception):
    """One line for the vendor.  ``kind``: not_found, no_bluetooth, pairing_refused,
    connect_failed, not_a_reader, disconnected, timeout, bad_frame, cancelled,
    offline_not_supported, busy, reader_error."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


class ReaderGone(Exception):
    """The link dropped while an answer was awaited."""


# what the reader's error codes mean to the vendor, and whether the reader's own words add anything
_ERROR_TEXT = {
    m.ErrorCode.CANCELLED: ("cancelled", "cancelled at the reader", False),
    m.ErrorCode.CARD_TIMEOUT: ("timeout", "no card was presented in time", False),
    m.ErrorCode.CARD_READ_FAILED: ("reader_error", "the card could not be read", True),
    m.ErrorCode.OFFLINE_NOT_SUPPORTED: ("offline_not_supported", "the card reader cannot take payments offline",
                                        False),
    m.ErrorCode.BUSY: ("busy", "the card reader is busy with another payment", False),
    m.ErrorCode.BAD_FRAME: ("bad_frame", "the card reader could not read the kiosk's command", True),
    m.ErrorCode.UNSUPPORTED_COMMAND: ("reader_error", "the card reader does not support this command", True),
    m.ErrorCode.BAD_REQUEST: ("reader_error", "the card reader refused the payment request", True),
    m.ErrorCode.BATTERY_TOO_LOW: ("reader_error", "the card reader's battery is too low to take a card", False),
    m.ErrorCode.CARD_REFUSED: ("reader_error", "the card refused the payment", True),
}


def describe_error(error: m.ErrorMessage) -> ReaderLinkError:
    try:
        kind, text, detailed = _ERROR_TEXT[m.ErrorCode(error.code)]
    except (KeyError, ValueError):
        kind, text, detailed = "reader_error", f"the card reader reported error 0x{error.code:04x}", True
    if detailed and error.message:
        text = f"{text}: {error.message}"
    return ReaderLinkError(kind, text)
