"""An emulated card reader: the kiosk reader profile on a bumble peripheral.

It advertises the profile's service, pairs with LE Secure Connections
(passkey entry), answers GET_INFO, START_PAYMENT, CANCEL and RESET, and
returns the same Stripe test tokens as the simulated reader
(``kiosk_builtins.simulated_reader.TEST_CARDS``).  What a test needs from a faulty
reader is in :class:`Behaviour`: no offline payments, a battery level, a slow
customer, a refused pairing, a switch-off in the middle of a payment, and bad
frames of every kind.

It runs on the loop of its :class:`~kiosk_builtins.ble_reader.emulated_radio.EmulatedRadio`;
call its coroutines there.  It never sees or sends a card number.
"""
from __future__ import annotations

import asyncio
import logging
import random
import struct
from dataclasses import dataclass

from bumble import hci, pairing
from bumble.core import AdvertisingData, UUID
from bumble.gatt import (GATT_CLIENT_CHARACTERISTIC_CONFIGURATION_DESCRIPTOR, Characteristic,
                         CharacteristicValue, Descriptor, Service)

from kiosk_builtins.simulated_reader import TEST_CARDS

from . import messages as m
from .emulated_radio import EmulatedRadio
from .framing import FIRST, LAST, ProtocolError, Reassembler, crc32, encode_frame, split_segments
from .profile import COMMAND_UUID, EVENT_UUID, MAX_FRAME_SIZE, SERVICE_UUID, UNSOLICITED_SEQ, segment_size

log = logging.getLogger("kiosk.ble_reader.emulator")

READER_ADDRESS = "C0:FF:EE:4B:52:01"
BAD_FRAMES = ("truncated", "oversized", "wrong_version", "bad_crc", "random")
FAULTS = ("", "power_off", *BAD_FRAMES)
ADVERTISING_INTERVAL_MS = 20


@dataclass
class Behaviour:
    """How the emulated reader behaves; tests may change it at any time."""
    supports_offline: bool = True
    battery: int | None = 87
    card_delay: float = 0.0          # seconds the customer takes to present the card
    refuse_pairing: bool = False
    default_card: str = "visa"       # presented when a payment names no test card
    fault: str = ""                  # one of FAULTS, hitting payment number ``fault_in_payment``
    fault_in_payment: int = 1
    power_on_after: float = 0.0      # after a power_off fault: switch on again after this long (0: stay off)
    name: str = "Emulated card reader"
    firmware: str = "emu-1.0"


class _ReaderPairing(pairing.PairingDelegate):
    def __init__(self, reader: EmulatedReader):
        # a static address and no privacy: the reader hands out its encryption key only, no IRK
        only_ltk = pairing.PairingDelegate.KeyDistribution.DISTRIBUTE_ENCRYPTION_KEY
        super().__init__(io_capability=pairing.PairingDelegate.DISPLAY_OUTPUT_ONLY,
                         local_initiator_key_distribution=only_ltk, local_responder_key_distribution=only_ltk)
        self.reader = reader

    async def accept(self) -> bool:
        return not self.reader.behaviour.refuse_pairing

    async def generate_passkey(self) -> int:
        return random.SystemRandom().randrange(1_000_000)

    async def display_number(self, number: int, digits: int) -> None:
        self.reader.radio.show_passkey(number)


class EmulatedReader:
    def __init__(self, radio: EmulatedRadio, behaviour: Behaviour | None = None, address: str = READER_ADDRESS):
        self.radio, self.behaviour, self.address = radio, behaviour or Behaviour(), address
        self.controller, self.device = radio.new_device("reader", address)
        self.device.pairing_config_factory = lambda connection: pairing.PairingConfig(
            sc=True, mitm=True, bonding=True, delegate=_ReaderPairing(self))
        self.events = Characteristic(EVENT_UUID, Characteristic.Properties.NOTIFY,
                                     Characteristic.READABLE | Characteristic.READ_REQUIRES_AUTHENTICATION, b"")
        # the profile's CCCD needs an authenticated link to subscribe (bumble's default one would not)
        self.events.descriptors = [Descriptor(
            GATT_CLIENT_CHARACTERISTIC_CONFIGURATION_DESCRIPTOR,
            Descriptor.READABLE | Descriptor.WRITEABLE | Descriptor.WRITE_REQUIRES_AUTHENTICATION,
            self.device.gatt_server.make_descriptor_value(self.events))]
        self.commands = Characteristic(
            COMMAND_UUID, Characteristic.Properties.WRITE | Characteristic.Properties.WRITE_WITHOUT_RESPONSE,
            Characteristic.WRITEABLE | Characteristic.WRITE_REQUIRES_AUTHENTICATION,
            CharacteristicValue(write=self._on_command_segment))
        self.device.add_service(Service(SERVICE_UUID, [self.commands, self.events]))
        self.powered = False
        self.payments_started = 0
        self.frames_received: list[m.Message] = []   # what the kiosk sent, for tests
        self.bad_frames_received = 0
        self._booted = False
        self._reassembler = Reassembler()
        self._payment: asyncio.Task | None = None
        self._payment_seq: int | None = None
        self._connection = None
        self._tasks: set[asyncio.Task] = set()
        self.device.on("connection", self._on_connection)

    # -- power -----------------------------------------------------------------

    async def switch_on(self) -> None:
        """Boot once, then join the air and advertise the reader service."""
        if self.powered:
            return
        if not self._booted:
            await self.device.power_on()
            self._booted = True
        if self.controller not in self.radio.link.controllers:
            self.radio.link.add_controller(self.controller)
        advertising = AdvertisingData([
            (AdvertisingData.FLAGS, bytes([AdvertisingData.LE_GENERAL_DISCOVERABLE_MODE_FLAG
                                           | AdvertisingData.BR_EDR_NOT_SUPPORTED_FLAG])),
            (AdvertisingData.COMPLETE_LIST_OF_128_BIT_SERVICE_CLASS_UUIDS, bytes(UUID(SERVICE_UUID))),
            (AdvertisingData.COMPLETE_LOCAL_NAME, self.behaviour.name.encode()[:20]),
        ])
        await self.device.start_advertising(advertising_data=bytes(advertising), auto_restart=True,
                                            advertising_interval_min=ADVERTISING_INTERVAL_MS,
                                            advertising_interval_max=ADVERTISING_INTERVAL_MS)
        self.powered = True

    async def switch_off(self) -> None:
        """As the power button does: end the connection (reason: power off),
        stop advertising and leave the air.  Bonds are kept, as in flash."""
        if not self.powered:
            return
        self.powered = False
        self._abandon_payment()
        await self.device.stop_advertising()
        for connection in list(self.device.connections.values()):
            try:
                await connection.disconnect(
                    hci.HCI_ErrorCode.REMOTE_DEVICE_TERMINATED_CONNECTION_DUE_TO_POWER_OFF_ERROR)
            except Exception:   # already gone
                log.debug("emulated reader: disconnect on switch-off failed", exc_info=True)
        if self.controller in self.radio.link.controllers:
            self.radio.link.remove_controller(self.controller)

    async def set_battery(self, percent: int | None) -> None:
        """Change the battery level and tell the kiosk (unsolicited STATUS)."""
        self.behaviour.battery = percent
        state = m.ReaderState.WAITING_FOR_CARD if self._payment else m.ReaderState.IDLE
        await self._send(m.Status(state, percent), UNSOLICITED_SEQ)

    # -- the link --------------------------------------------------------------

    def _on_connection(self, connection) -> None:
        self._connection = connection
        self._reassembler.reset()
        connection.on("disconnection", lambda reason: self._on_disconnection(connection))

    def _on_disconnection(self, connection) -> None:
        if self._connection is connection:
            self._connection = None
            # a payment never outlives its connection: no result is kept for later
            self._abandon_payment()

    async def send_segments(self, segments: list[bytes]) -> None:
        """Notify raw segments, exactly as given (tests: bad frames on the live link)."""
        connection = self._connection
        if connection is None:
            return
        for segment in segments:
            await self.device.notify_subscriber(connection, self.events, bytes(segment))

    async def send_frame_bytes(self, frame_bytes: bytes) -> None:
        connection = self._connection
        if connection is None:
            return
        await self.send_segments(split_segments(frame_bytes, segment_size(connection.att_mtu)))

    async def _send(self, message: m.Message, seq: int) -> None:
        await self.send_frame_bytes(encode_frame(m.to_frame(message, seq)))

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _on_command_segment(self, connection, value: bytes) -> None:
        frame = None
        try:
            frame = self._reassembler.feed(value)
            if frame is None:
                return
            message = m.parse(frame)
        except ProtocolError as exc:
            self.bad_frames_received += 1
            log.info("emulated reader: bad frame from the kiosk (%s): %s", exc.kind, exc)
            codes = {"type": m.ErrorCode.UNSUPPORTED_COMMAND, "payload": m.ErrorCode.BAD_REQUEST}
            code = codes.get(exc.kind, m.ErrorCode.BAD_FRAME)
            seq = frame.seq if frame is not None else UNSOLICITED_SEQ
            await self._send(m.ErrorMessage(code, str(exc)[:m.MAX_TEXT]), seq)
            return
        self.frames_received.append(message)
        await self._dispatch(message, frame.seq)

    async def _dispatch(self, message: m.Message, seq: int) -> None:
        b = self.behaviour
        if isinstance(message, m.GetInfo):
            await self._send(self._info(), seq)
        elif isinstance(message, m.Reset):
            self._abandon_payment()
            self._reassembler.reset()
            await self._send(self._info(), seq)
        elif isinstance(message, m.Cancel):
            if self._payment is not None and self._payment_seq == message.payment_seq:
                self._abandon_payment()
                await self._send(m.ErrorMessage(m.ErrorCode.CANCELLED, "cancelled by the kiosk"), message.payment_seq)
            await self._send(m.Status(m.ReaderState.IDLE, b.battery), seq)
        elif isinstance(message, m.StartPayment):
            if self._payment is not None:
                await self._send(m.ErrorMessage(m.ErrorCode.BUSY, "a payment is already in progress"), seq)
            elif message.offline_allowed and not b.supports_offline:
                await self._send(m.ErrorMessage(m.ErrorCode.OFFLINE_NOT_SUPPORTED,
                                                "this reader cannot take payments offline"), seq)
            else:
                self.payments_started += 1
                await self._send(m.Status(m.ReaderState.WAITING_FOR_CARD, b.battery), seq)
                self._payment_seq = seq
                self._payment = self._spawn(self._take_card(message, seq, self.payments_started))
        else:   # a reader -> kiosk message sent the wrong way
            await self._send(m.ErrorMessage(m.ErrorCode.UNSUPPORTED_COMMAND,
                                            f"{type(message).__name__} is not a command"), seq)

    def _info(self) -> m.Info:
        b = self.behaviour
        return m.Info(name=b.name, firmware=b.firmware, supports_offline=b.supports_offline, battery=b.battery)

    def _abandon_payment(self) -> None:
        if self._payment is not None:
            self._payment.cancel()
        self._payment, self._payment_seq = None, None

    async def _take_card(self, start: m.StartPayment, seq: int, number: int) -> None:
        b = self.behaviour
        fault = b.fault if number == b.fault_in_payment else ""
        try:
            if b.card_delay > start.card_timeout:
                await asyncio.sleep(start.card_timeout)
                await self._finish(m.ErrorMessage(m.ErrorCode.CARD_TIMEOUT, "no card presented"), seq)
                return
            if b.card_delay:
                await asyncio.sleep(b.card_delay)
            if fault == "power_off":
                self._payment = None
                await self.switch_off()
                if b.power_on_after:
                    asyncio.get_running_loop().call_later(b.power_on_after, lambda: self._spawn(self.switch_on()))
                return
            if fault in BAD_FRAMES:
                self._payment = None
                await self.send_segments(self.bad_frame(fault, seq))
                return
            card = start.test_card or b.default_card
            if card not in TEST_CARDS:
                await self._finish(m.ErrorMessage(m.ErrorCode.CARD_READ_FAILED, f"unknown test card {card!r}"), seq)
                return
            token, brand, last4 = TEST_CARDS[card]
            await self._finish(m.CardResultMessage(m.ResultKind.PROCESSOR_TOKEN, brand, last4, 12, 2034,
                                                   token.encode("ascii")), seq)
        except asyncio.CancelledError:
            pass

    async def _finish(self, message: m.Message, seq: int) -> None:
        self._payment, self._payment_seq = None, None
        await self._send(message, seq)

    def bad_frame(self, kind: str, seq: int) -> list[bytes]:
        """Segments of a bad card result of the given kind."""
        token, brand, last4 = TEST_CARDS[self.behaviour.default_card]
        good = encode_frame(m.to_frame(m.CardResultMessage(m.ResultKind.PROCESSOR_TOKEN, brand, last4, 12, 2034,
                                                           token.encode()), seq))
        size = segment_size(self._connection.att_mtu if self._connection else 23)
        if kind == "truncated":
            return [bytes([FIRST | LAST]) + good[:len(good) // 2]]
        if kind == "oversized":
            body = struct.pack("<BBHH", 1, m.MessageType.CARD_RESULT, seq, MAX_FRAME_SIZE) + bytes(MAX_FRAME_SIZE)
            return split_segments(body + struct.pack("<I", crc32(body)), size)
        if kind == "wrong_version":
            body = bytes([2]) + good[1:-4]
            return split_segments(body + struct.pack("<I", crc32(body)), size)
        if kind == "bad_crc":
            flipped = bytearray(good)
            flipped[10] ^= 0x01
            return split_segments(bytes(flipped), size)
        if kind == "random":
            noise = random.Random(seq).randbytes(37)
            return [bytes([FIRST | LAST]) + noise]
        raise ValueError(f"unknown bad frame kind {kind!r}")
