"""The messages of the kiosk reader protocol: what each frame's payload means.

Each message is a small frozen dataclass with ``encode() -> bytes`` and a
``decode(payload)`` class method that raises
:class:`~kiosk_builtins.ble_reader.framing.ProtocolError` (kind ``payload``) and
nothing else.  A card result carries a processor token or an opaque encrypted
payload plus brand, last 4 and expiry: there is no field a card number could
travel in, and reader text is scrubbed of anything that looks like one.
"""
from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from enum import IntEnum

from kiosk import looks_like_card_number

from .framing import Frame, ProtocolError
from .profile import MAX_CARD_TIMEOUT, MAX_FRAME_SIZE, PROTOCOL_VERSION


class MessageType(IntEnum):
    # kiosk -> reader
    GET_INFO = 0x01
    START_PAYMENT = 0x02
    CANCEL = 0x03
    RESET = 0x04
    # reader -> kiosk
    INFO = 0x81
    CARD_RESULT = 0x82
    ERROR = 0x83
    STATUS = 0x84


class ErrorCode(IntEnum):
    CANCELLED = 0x0001
    CARD_TIMEOUT = 0x0002
    CARD_READ_FAILED = 0x0003
    OFFLINE_NOT_SUPPORTED = 0x0004
    BUSY = 0x0005
    BAD_FRAME = 0x0006
    UNSUPPORTED_COMMAND = 0x0007
    BAD_REQUEST = 0x0008
    BATTERY_TOO_LOW = 0x0009
    CARD_REFUSED = 0x000A


class ReaderState(IntEnum):
    IDLE = 0
    WAITING_FOR_CARD = 1
    READING_CARD = 2


class ResultKind(IntEnum):
    PROCESSOR_TOKEN = 0x01      # e.g. a Stripe payment-method id, pm_...
    ENCRYPTED_PAYLOAD = 0x02    # opaque bytes only the processor can open


BATTERY_UNKNOWN = 0xFF
FLAG_OFFLINE_ALLOWED = 0x01     # START_PAYMENT flags
FLAG_SUPPORTS_OFFLINE = 0x01    # INFO flags
FLAG_CHARGING = 0x02            # INFO and STATUS flags
MAX_TEXT = 120                  # reader text shown to the vendor
MAX_NAME = 32
MAX_BRAND = 20
MAX_TOKEN = 400

_CARD_TAIL = struct.Struct("<BHH")     # exp_month, exp_year, token length
_CARD_NUMBER = re.compile(r"(?:\d[\s./_-]*){12,19}")   # as kiosk.interfaces.looks_like_card_number


def scrub(text: str, limit: int = MAX_TEXT) -> str:
    """Reader-supplied text made safe to show and log: one printable line,
    bounded, with any run of 12+ digits (a card number?) removed."""
    text = "".join(ch if ch.isprintable() else " " for ch in text)
    text = _CARD_NUMBER.sub("[redacted]", " ".join(text.split()))
    return text[:limit]


class _Reader:
    """Reads fields off a payload; every shortfall is a ProtocolError."""

    def __init__(self, payload: bytes, what: str):
        self.data, self.pos, self.what = bytes(payload), 0, what

    def fail(self, detail: str) -> ProtocolError:
        return ProtocolError("payload", f"{self.what}: {detail}")

    def take(self, size: int) -> bytes:
        if self.pos + size > len(self.data):
            raise self.fail(f"payload ends {self.pos + size - len(self.data)} byte(s) early")
        chunk = self.data[self.pos:self.pos + size]
        self.pos += size
        return chunk

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return struct.unpack("<H", self.take(2))[0]

    def u32(self) -> int:
        return struct.unpack("<I", self.take(4))[0]

    def text(self, limit: int, length_size: int = 1) -> str:
        length = self.u8() if length_size == 1 else self.u16()
        if length > limit:
            raise self.fail(f"text of {length} bytes is over the {limit}-byte limit")
        try:
            return self.take(length).decode("utf-8")
        except UnicodeDecodeError:
            raise self.fail("text is not UTF-8") from None

    def done(self) -> None:
        if self.pos != len(self.data):
            raise self.fail(f"{len(self.data) - self.pos} unexpected byte(s) at the end")


class _Failure:
    """The error half of :class:`_Reader`, for decoders that read by offsets."""
    __slots__ = ("what",)

    def __init__(self, what: str):
        self.what = what

    def fail(self, detail: str) -> ProtocolError:
        return ProtocolError("payload", f"{self.what}: {detail}")


def _text(value: str, limit: int) -> bytes:
    raw = value.encode("utf-8")
    if len(raw) > limit:
        raise ValueError(f"text of {len(raw)} bytes is over the {limit}-byte limit")
    return bytes([len(raw)]) + raw


# -- kiosk -> reader -----------------------------------------------------------

@dataclass(frozen=True)
class GetInfo:
    TYPE = MessageType.GET_INFO

    def encode(self) -> bytes:
        return b""

    @classmethod
    def decode(cls, payload: bytes) -> GetInfo:
        _Reader(payload, "GET_INFO").done()
        return cls()


@dataclass(frozen=True)
class StartPayment:
    """Take a card for ``amount`` minor units of ``currency``."""
    TYPE = MessageType.START_PAYMENT
    amount: int
    currency: str
    offline_allowed: bool
    card_timeout: int
    test_card: str = ""          # names a test card for emulated readers; real readers ignore it

    def encode(self) -> bytes:
        currency = self.currency.lower().encode("ascii")
        if len(currency) != 3 or not currency.isalpha():
            raise ValueError(f"currency {self.currency!r} is not a 3-letter ISO 4217 code")
        if not 0 < self.amount <= 0xFFFFFFFF:
            raise ValueError(f"amount {self.amount} does not fit the protocol's u32")
        timeout = max(1, min(int(self.card_timeout), MAX_CARD_TIMEOUT))
        return (struct.pack("<I", self.amount) + currency
                + bytes([FLAG_OFFLINE_ALLOWED if self.offline_allowed else 0])
                + struct.pack("<H", timeout) + _text(self.test_card, MAX_NAME))

    @classmethod
    def decode(cls, payload: bytes) -> StartPayment:
        r = _Reader(payload, "START_PAYMENT")
        amount = r.u32()
        currency = r.take(3)
        flags = r.u8()
        timeout = r.u16()
        test_card = r.text(MAX_NAME)
        r.done()
        if amount == 0:
            raise r.fail("amount is zero")
        if not (currency.isalpha() and currency.isascii()):
            raise r.fail("currency is not 3 ASCII letters")
        if flags & ~FLAG_OFFLINE_ALLOWED:
            raise r.fail(f"unknown flags 0x{flags:02x}")
        return cls(amount, currency.decode("ascii").lower(), bool(flags & FLAG_OFFLINE_ALLOWED), timeout, test_card)


@dataclass(frozen=True)
class Cancel:
    """Cancel the payment started by the START_PAYMENT with sequence ``payment_seq``."""
    TYPE = MessageType.CANCEL
    payment_seq: int

    def encode(self) -> bytes:
        return struct.pack("<H", self.payment_seq)

    @classmethod
    def decode(cls, payload: bytes) -> Cancel:
        r = _Reader(payload, "CANCEL")
        seq = r.u16()
        r.done()
        return cls(seq)


@dataclass(frozen=True)
class Reset:
    """Abandon any payment and partial frame; answer with INFO."""
    TYPE = MessageType.RESET

    def encode(self) -> bytes:
        return b""

    @classmethod
    def decode(cls, payload: bytes) -> Reset:
        _Reader(payload, "RESET").done()
        return cls()


# -- reader -> kiosk -----------------------------------------------------------

@dataclass(frozen=True)
class Info:
    TYPE = MessageType.INFO
    name: str
    firmware: str
    supports_offline: bool
    battery: int | None          # percent; None when the reader does not know
    charging: bool = False
    max_frame: int = MAX_FRAME_SIZE
    protocol_version: int = PROTOCOL_VERSION

    def encode(self) -> bytes:
        flags = (FLAG_SUPPORTS_OFFLINE if self.supports_offline else 0) | (FLAG_CHARGING if self.charging else 0)
        battery = BATTERY_UNKNOWN if self.battery is None else self.battery
        return (bytes([self.protocol_version, flags, battery]) + struct.pack("<H", self.max_frame)
                + _text(self.name, MAX_NAME) + _text(self.firmware, MAX_NAME))

    @classmethod
    def decode(cls, payload: bytes) -> Info:
        r = _Reader(payload, "INFO")
        version, flags, battery = r.u8(), r.u8(), r.u8()
        max_frame = r.u16()
        name = r.text(MAX_NAME)
        firmware = r.text(MAX_NAME)
        r.done()
        if battery != BATTERY_UNKNOWN and battery > 100:
            raise r.fail(f"battery {battery}% is over 100")
        if not 64 <= max_frame <= MAX_FRAME_SIZE:
            raise r.fail(f"max frame {max_frame} is outside 64..{MAX_FRAME_SIZE}")
        return cls(name=scrub(name, MAX_NAME) or "Bluetooth card reader", firmware=scrub(firmware, MAX_NAME),
                   supports_offline=bool(flags & FLAG_SUPPORTS_OFFLINE),
                   battery=None if battery == BATTERY_UNKNOWN else battery,
                   charging=bool(flags & FLAG_CHARGING), max_frame=max_frame, protocol_version=version)


@dataclass(frozen=True)
class CardResultMessage:
    """A card was read: a processor token or an encrypted payload, plus what
    the vendor may see.  ``token`` is text for PROCESSOR_TOKEN and raw bytes
    for ENCRYPTED_PAYLOAD."""
    TYPE = MessageType.CARD_RESULT
    kind: ResultKind
    brand: str
    last4: str
    exp_month: int
    exp_year: int
    token: bytes

    def encode(self) -> bytes:
        last4 = self.last4.encode("ascii")
        if len(last4) != 4:
            raise ValueError("last 4 must be 4 characters")
        if not 0 < len(self.token) <= MAX_TOKEN:
            raise ValueError(f"token of {len(self.token)} bytes is outside 1..{MAX_TOKEN}")
        return (bytes([int(self.kind)]) + _text(self.brand, MAX_BRAND) + last4
                + struct.pack("<BHH", self.exp_month, self.exp_year, len(self.token)) + bytes(self.token))

    @classmethod
    def decode(cls, payload: bytes) -> CardResultMessage:
        # read by offsets rather than field by field: this one is on every sale's path
        data = bytes(payload)
        r = _Failure("CARD_RESULT")
        if len(data) < 2:
            raise r.fail("payload ends early")
        kind, brand_size = data[0], data[1]
        fixed = 2 + brand_size
        if brand_size > MAX_BRAND:
            raise r.fail(f"text of {brand_size} bytes is over the {MAX_BRAND}-byte limit")
        if len(data) < fixed + 9:
            raise r.fail(f"payload ends {fixed + 9 - len(data)} byte(s) early")
        brand, last4 = data[2:fixed], data[fixed:fixed + 4]
        exp_month, exp_year, length = _CARD_TAIL.unpack_from(data, fixed + 4)
        if not 0 < length <= MAX_TOKEN:
            raise r.fail(f"token of {length} bytes is outside 1..{MAX_TOKEN}")
        if len(data) != fixed + 9 + length:
            raise r.fail(f"payload is {len(data)} bytes where its fields make {fixed + 9 + length}")
        token = data[fixed + 9:]
        if kind not in (ResultKind.PROCESSOR_TOKEN, ResultKind.ENCRYPTED_PAYLOAD):
            raise r.fail(f"unknown result kind 0x{kind:02x}")
        if not (last4.isdigit() and last4.isascii()):
            raise r.fail("last 4 are not 4 ASCII digits")
        if not (brand and brand.isascii() and brand[:1].isalpha()
                and all(ch.isalpha() or ch in "_-" for ch in brand.decode("ascii"))):
            raise r.fail("brand is not a short ASCII word of letters")
        if looks_like_card_number(token.decode("latin-1")):
            raise r.fail("token holds what looks like a card number")
        if exp_month > 12 or (exp_year and not 2000 <= exp_year <= 2099):
            raise r.fail(f"expiry {exp_month}/{exp_year} is not a date")
        if kind == ResultKind.PROCESSOR_TOKEN and not (token.isascii() and token.decode("ascii").isprintable()
                                                       and b" " not in token):
            raise r.fail("processor token is not printable ASCII")
        return cls(ResultKind(kind), brand.decode("ascii").lower(), last4.decode("ascii"), exp_month, exp_year,
                   token)


@dataclass(frozen=True)
class ErrorMessage:
    TYPE = MessageType.ERROR
    code: int
    message: str = ""

    def encode(self) -> bytes:
        return struct.pack("<H", self.code) + _text(self.message, MAX_TEXT)

    @classmethod
    def decode(cls, payload: bytes) -> ErrorMessage:
        r = _Reader(payload, "ERROR")
        code = r.u16()
        message = r.text(MAX_TEXT)
        r.done()
        return cls(code, scrub(message))


@dataclass(frozen=True)
class Status:
    """The reader's state and battery; the answer to START_PAYMENT and CANCEL
    (same sequence number) and, with sequence 0, an unsolicited update."""
    TYPE = MessageType.STATUS
    state: ReaderState
    battery: int | None
    charging: bool = False

    def encode(self) -> bytes:
        return bytes([int(self.state), BATTERY_UNKNOWN if self.battery is None else self.battery,
                      FLAG_CHARGING if self.charging else 0])

    @classmethod
    def decode(cls, payload: bytes) -> Status:
        r = _Failure("STATUS")
        if len(payload) != 3:
            raise r.fail(f"payload is {len(payload)} bytes, not 3")
        state, battery, flags = payload[0], payload[1], payload[2]
        if state not in ReaderState._value2member_map_:
            raise r.fail(f"unknown reader state {state}")
        if battery != BATTERY_UNKNOWN and battery > 100:
            raise r.fail(f"battery {battery}% is over 100")
        return cls(ReaderState(state), None if battery == BATTERY_UNKNOWN else battery, bool(flags & FLAG_CHARGING))


MESSAGES = {cls.TYPE: cls for cls in (GetInfo, StartPayment, Cancel, Reset, Info, CardResultMessage,
                                      ErrorMessage, Status)}
Message = GetInfo | StartPayment | Cancel | Reset | Info | CardResultMessage | ErrorMessage | Status


def to_frame(message: Message, seq: int) -> Frame:
    return Frame(type=int(message.TYPE), seq=seq, payload=message.encode())


def parse(frame: Frame) -> Message:
    """The message a frame carries; ProtocolError for an unknown type or a bad payload."""
    cls = MESSAGES.get(frame.type)
    if cls is None:
        raise ProtocolError("type", f"unknown message type 0x{frame.type:02x}")
    return cls.decode(frame.payload)
