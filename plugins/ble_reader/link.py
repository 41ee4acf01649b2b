"""The kiosk's side of one Bluetooth LE link to a card reader, on bleak.

Finds the reader (by the profile's service UUID, or a configured address),
connects with ``bleak_retry_connector.establish_connection`` (pairing with
LE Secure Connections), speaks the frames of ``docs/reader-protocol.md``,
reconnects on its own after a drop, and keeps what it knows about the reader
(info, battery, connected) up to date.

Everything here runs on one asyncio loop -- the reader plugin's background
thread.  Every failure leaves as :class:`ReaderLinkError` with one line for
the vendor.  Never logs a token: card results are logged by brand only.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace

from bleak import BleakClient, BleakScanner
from bleak.exc import BleakError
from bleak_retry_connector import BleakNotFoundError, establish_connection

from . import messages as m
from .errors import ReaderGone, ReaderLinkError, describe_error, is_pairing_refusal
from .framing import ProtocolError, Reassembler, encode_frame, split_segments
from .payment import ReaderPayment
from .profile import (COMMAND_TIMEOUT, COMMAND_UUID, EVENT_UUID, MAX_SEQ, PROTOCOL_VERSION, SERVICE_UUID,
                      UNSOLICITED_SEQ)

log = logging.getLogger("kiosk.ble_reader")

RECONNECT_FIRST_DELAY = 0.5
RECONNECT_MAX_DELAY = 30.0


class _BadFrame(Exception):
    """A bad frame arrived while an answer was awaited."""


@dataclass(frozen=True)
class LinkSettings:
    address: str = ""                 # empty: the first reader advertising the service
    scan_timeout: float = 5.0
    connect_timeout: float = 10.0
    command_timeout: float = COMMAND_TIMEOUT
    connect_attempts: int = 3
    pair: bool = True
    adapter: str = ""                 # BlueZ adapter (hci0); empty: the default one


@dataclass(frozen=True)
class LinkState:
    """What the kiosk knows about its reader; replaced whole on every change."""
    connected: bool = False
    info: m.Info | None = None
    battery: int | None = None
    charging: bool = False
    address: str | None = None
    problem: str | None = None        # the last connection failure, one line
    problem_kind: str | None = None


class ReaderLink:
    def __init__(self, settings: LinkSettings, *, scanner_backend=None, client_backend=None,
                 on_change: Callable[[str | None, LinkState], None] | None = None):
        self.settings = settings
        self.state = LinkState(address=settings.address or None)
        self._scanner_backend, self._client_backend = scanner_backend, client_backend
        self._on_change = on_change or (lambda event, state: None)
        self._client: BleakClient | None = None
        self._command_char = None
        self._segment_size = 19
        self._reassembler = Reassembler()
        self._waiters: dict[int, asyncio.Queue] = {}     # commands awaiting their answer, by sequence
        self._payment: ReaderPayment | None = None           # the START_PAYMENT in flight
        self._seq = 0
        self._connect_lock = asyncio.Lock()
        self._reconnect_task: asyncio.Task | None = None
        self._background: set[asyncio.Task] = set()
        self._closing = False

    # -- state -----------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._client is not None and self._client.is_connected

    def _update(self, event: str | None = None, **changes) -> None:
        """Replace the state and tell the listener (``event`` None: nothing to announce)."""
        self.state = replace(self.state, **changes)
        try:
            self._on_change(event, self.state)
        except Exception:
            log.exception("reader state listener failed on %s", event)

    def next_seq(self) -> int:
        """The next command's sequence number."""
        self._seq = self._seq % MAX_SEQ + 1      # 1..65535; 0 is the reader's
        return self._seq

    # -- finding and connecting --------------------------------------------------

    def _backend_args(self, client: bool) -> dict:
        backend = self._client_backend if client else self._scanner_backend
        args: dict = {"backend": backend} if backend is not None else {}
        if self.settings.adapter:
            args["bluez"] = {"adapter": self.settings.adapter}
        return args

    async def _find(self):
        s = self.settings
        try:
            if s.address:
                device = await BleakScanner.find_device_by_address(s.address, timeout=s.scan_timeout,
                                                                   **self._backend_args(False))
            else:
                device = await BleakScanner.find_device_by_filter(
                    lambda d, ad: SERVICE_UUID in (u.lower() for u in ad.service_uuids),
                    timeout=s.scan_timeout, service_uuids=[SERVICE_UUID], **self._backend_args(False))
        except (FileNotFoundError, ConnectionRefusedError) as exc:      # no D-Bus socket, or no one on it
            raise ReaderLinkError("no_bluetooth", "Bluetooth is not available on this kiosk: cannot reach BlueZ "
                                                  "over D-Bus — is the bluetooth service running?") from exc
        except Exception as exc:     # no adapter, adapter off, permission refused
            raise ReaderLinkError("no_bluetooth", f"Bluetooth is not available on this kiosk: "
                                                  f"{_one_line(exc)}") from exc
        if device is None:
            if s.address:
                raise ReaderLinkError("not_found", f"card reader {s.address} not found within {s.scan_timeout:g} s "
                                                   "— is it switched on and near the kiosk?")
            raise ReaderLinkError("not_found", f"no card reader found within {s.scan_timeout:g} s "
                                               "— is it switched on and near the kiosk?")
        return device

    async def connect(self) -> None:
        """Connected when it returns, or :class:`ReaderLinkError`.  One attempt
        at a time; a caller arriving during an attempt shares its outcome."""
        if self.connected:
            return
        async with self._connect_lock:
            if self.connected:
                return
            if self._closing:
                raise ReaderLinkError("disconnected", "the card reader is closed")
            try:
                await self._connect_once()
            except ReaderLinkError as exc:
                first_time = self.state.problem_kind != exc.kind
                self._update("problem" if first_time else None, problem=str(exc), problem_kind=exc.kind)
                raise

    async def _connect_once(self) -> None:
        s = self.settings
        device = await self._find()
        try:
            async with asyncio.timeout(s.connect_timeout):
                client = await establish_connection(
                    BleakClient, device, device.name or device.address, disconnected_callback=self._on_disconnect,
                    max_attempts=max(1, s.connect_attempts), pair=s.pair, timeout=s.connect_timeout,
                    services=[SERVICE_UUID], **self._backend_args(True))
        except TimeoutError:
            raise ReaderLinkError("connect_failed", f"could not connect to the card reader {device.address} "
                                                    f"within {s.connect_timeout:g} s") from None
        except BleakError as exc:
            if is_pairing_refusal(exc):
                raise ReaderLinkError("pairing_refused", f"the card reader {device.address} refused pairing — put it "
                                                         "in pairing mode and pair it with the kiosk again") from exc
            if isinstance(exc, BleakNotFoundError):
                raise ReaderLinkError("not_found", f"card reader {device.address} went away before it could be "
                                                   "connected — is it switched on and near the kiosk?") from exc
            raise ReaderLinkError("connect_failed", f"could not connect to the card reader {device.address}: "
                                                    f"{_one_line(exc)}") from exc
        try:
            await self._start_session(client, device.address)
        except BaseException:
            self._client = None
            await _quietly(client.disconnect())
            raise

    async def _start_session(self, client: BleakClient, address: str) -> None:
        command = client.services.get_characteristic(COMMAND_UUID)
        event = client.services.get_characteristic(EVENT_UUID)
        if command is None or event is None:
            raise ReaderLinkError("not_a_reader", f"{address} does not offer the kiosk reader service")
        self._reassembler.reset()
        self._command_char = command
        self._segment_size = max(1, command.max_write_without_response_size - 1)
        try:
            await client.start_notify(event, self._on_notification)
        except BleakError as exc:
            raise ReaderLinkError("connect_failed", f"the card reader {address} would not send events: "
                                                    f"{_one_line(exc)}") from exc
        self._client = client
        info = await self.exchange(m.GetInfo(), m.Info)
        if info.protocol_version < PROTOCOL_VERSION:       # INFO says the highest version it speaks
            raise ReaderLinkError("not_a_reader", f"{info.name} speaks reader protocol version "
                                                  f"{info.protocol_version}; this kiosk speaks {PROTOCOL_VERSION}")
        log.info("card reader %s connected: %s, firmware %s, battery %s%%, %s", address, info.name, info.firmware,
                 "?" if info.battery is None else info.battery,
                 "takes offline payments" if info.supports_offline else "online payments only")
        self._update("connected", connected=True, info=info, battery=info.battery, charging=info.charging,
                     address=address, problem=None, problem_kind=None)

    def _on_disconnect(self, client) -> None:
        if client is not self._client:
            return
        self._client = None
        self._fail_waiters(ReaderGone())
        if self._payment is not None:
            self._payment.gone()
        if self.state.connected:          # not for a link that dropped while still being set up
            log.warning("card reader %s disconnected", self.state.address)
            self._update("disconnected", connected=False)
        if not self._closing:
            self.start_reconnecting()

    def start_reconnecting(self) -> None:
        """Keep trying to connect in the background (backing off to 30 s) until connected."""
        if self._closing or (self._reconnect_task is not None and not self._reconnect_task.done()):
            return
        self._reconnect_task = asyncio.get_running_loop().create_task(self._reconnect())

    async def _reconnect(self) -> None:
        delay = RECONNECT_FIRST_DELAY
        while not self._closing and not self.connected:
            try:
                await self.connect()
                return
            except ReaderLinkError as exc:
                log.info("card reader not connected (%s); trying again in %.1f s", exc, delay)
            except Exception:
                log.exception("reconnecting to the card reader failed; trying again in %.1f s", delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX_DELAY)

    async def close(self) -> None:
        self._closing = True
        tasks = [t for t in (self._reconnect_task, *self._background) if t is not None and not t.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        client, self._client = self._client, None
        self._fail_waiters(ReaderGone())
        if self._payment is not None:
            self._payment.gone()
        if client is not None:
            await _quietly(asyncio.wait_for(client.disconnect(), 3.0))
        self._update(None, connected=False)

    # -- frames ------------------------------------------------------------------

    def _on_notification(self, _characteristic, data: bytearray) -> None:
        try:
            frame = self._reassembler.feed(data)
            if frame is None:
                return
            message = m.parse(frame)
        except ProtocolError as exc:
            log.warning("card reader sent a bad frame (%s): %s", exc.kind, exc)
            payment = self._payment
            if payment is not None and payment.listening:
                payment.bad_frame(exc)
            elif self._waiters:
                self._fail_waiters(_BadFrame(str(exc)))
            else:
                self.in_background(self.reset())
            return
        if frame.seq == UNSOLICITED_SEQ:
            self._on_unsolicited(message)
            return
        payment = self._payment
        if payment is not None and payment.seq == frame.seq and payment.listening:
            payment.on_message(message)
            return
        queue = self._waiters.get(frame.seq)
        if queue is None:
            # an answer nobody waits for: a payment already cancelled, timed out or lost
            log.warning("card reader answered sequence %d, which the kiosk no longer waits for (%s); dropped",
                        frame.seq, type(message).__name__)
            return
        queue.put_nowait(message)

    def _on_unsolicited(self, message) -> None:
        if isinstance(message, m.Status):
            if message.battery != self.state.battery or message.charging != self.state.charging:
                self._update("battery", battery=message.battery, charging=message.charging)
        elif isinstance(message, m.ErrorMessage):
            error = describe_error(message)
            log.warning("card reader error: %s", error)
            payment = self._payment
            if error.kind == "bad_frame" and payment is not None and payment.listening:
                payment.bad_frame(ProtocolError("reader", str(error)))
            elif self._waiters:
                self._fail_waiters(error)
        else:
            log.warning("card reader sent an unexpected %s with sequence 0; ignored", type(message).__name__)

    def _fail_waiters(self, error: Exception) -> None:
        for queue in self._waiters.values():
            queue.put_nowait(error)

    def in_background(self, coro) -> None:
        """Run ``coro`` on this loop; :meth:`close` cancels it."""
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def send(self, message, seq: int) -> None:
        """Frame, segment and write one message (Write Without Response)."""
        client = self._client
        if client is None:
            raise ReaderGone()
        frame = encode_frame(m.to_frame(message, seq))
        try:
            for segment in split_segments(frame, self._segment_size):
                await client.write_gatt_char(self._command_char, segment, response=False)
        except BleakError as exc:
            raise ReaderGone() from exc

    @staticmethod
    async def _next(queue: asyncio.Queue, timeout: float):
        async with asyncio.timeout(timeout):
            item = await queue.get()
        if isinstance(item, BaseException):
            raise item
        return item

    async def exchange(self, message, answer_type, timeout: float | None = None):
        """Send a command and return its answer of ``answer_type``."""
        seq = self.next_seq()
        queue = self._waiters[seq] = asyncio.Queue()
        try:
            await self.send(message, seq)
            answer = await self._next(queue, timeout or self.settings.command_timeout)
        except TimeoutError:
            raise ReaderLinkError("timeout", f"the card reader did not answer within "
                                             f"{timeout or self.settings.command_timeout:g} s") from None
        except ReaderGone:
            raise ReaderLinkError("disconnected", "the card reader disconnected") from None
        except _BadFrame as exc:
            raise ReaderLinkError("bad_frame", f"the card reader sent a bad frame ({exc})") from None
        finally:
            self._waiters.pop(seq, None)
        if isinstance(answer, m.ErrorMessage):
            raise describe_error(answer)
        if not isinstance(answer, answer_type):
            raise ReaderLinkError("bad_frame", f"the card reader answered {type(message).__name__} "
                                               f"with {type(answer).__name__}")
        return answer

    async def reset(self) -> None:
        """After a bad frame or a silent reader: both ends drop what they were
        doing.  A reader that cannot even answer RESET is disconnected, and the
        reconnect loop starts over clean."""
        self._reassembler.reset()
        if not self.connected:
            return
        try:
            info = await self.exchange(m.Reset(), m.Info)
            self._update(None, info=info, battery=info.battery)
            log.info("card reader reset")
        except ReaderLinkError as exc:
            log.warning("card reader did not come back from a reset (%s); reconnecting", exc)
            client = self._client
            if client is not None:
                await _quietly(client.disconnect())
                self._on_disconnect(client)

    # -- payments ------------------------------------------------------------------

    def begin_payment(self, amount: int, currency: str, offline: bool, card_timeout: float, test_card: str,
                      done: Callable[[m.CardResultMessage | None, ReaderLinkError | None], None]) -> None:
        """Start a payment; ``done(result, None)`` or ``done(None, error)`` is
        called exactly once, on this loop.  A card result settles it straight
        from the notification that carries it.  Plain function: the sale thread
        calls it with ``loop.call_soon_threadsafe``."""
        if self._payment is not None:
            done(None, ReaderLinkError("busy", "the card reader is already taking a payment"))
            return
        if self._closing:
            done(None, ReaderLinkError("disconnected", "the card reader is closed"))
            return
        payment = self._payment = ReaderPayment(self, card_timeout, done)
        self.in_background(payment.start(amount, currency, offline, test_card))

    async def take_card(self, amount: int, currency: str, offline: bool, card_timeout: float,
                        test_card: str = "") -> m.CardResultMessage:
        """:meth:`begin_payment` for callers on this loop."""
        outcome = asyncio.get_running_loop().create_future()

        def done(result, error):
            if outcome.done():
                return
            if error is not None:
                outcome.set_exception(error)
            else:
                outcome.set_result(result)
        self.begin_payment(amount, currency, offline, card_timeout, test_card, done)
        return await outcome

    def payment_settled(self, payment: ReaderPayment) -> None:
        if self._payment is payment:
            self._payment = None

    def cancel_payment(self) -> None:
        """The vendor cancelled: ask the reader to stop the payment in progress."""
        if self._payment is not None:
            self._payment.cancel()


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:160]


async def _quietly(awaitable) -> None:
    try:
        await awaitable
    except Exception:
        log.debug("ignored while tidying up the reader link", exc_info=True)
