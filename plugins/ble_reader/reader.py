"""The Bluetooth LE card reader as the kiosk sees it: a synchronous
:class:`kiosk.interfaces.Reader`.

The kiosk calls ``info()`` and ``read_card()`` from its sale thread; bleak
needs asyncio.  So the reader owns one background thread running one event
loop, where the :class:`~kiosk_builtins.ble_reader.link.ReaderLink` (and, with
``emulator = true``, the emulated radio and reader) live.  Opening, closing
and tests cross over with ``asyncio.run_coroutine_threadsafe``; a payment,
the one crossing on a customer's time, with ``loop.call_soon_threadsafe``
and a two-lock handshake, which bench/reader measured at about a third of
the cost.  ``close()`` stops the loop and joins the thread.

Reader state changes become notices (kind ``"reader"``): connected,
disconnected, battery low, pairing refused, not found.  They are handed to
the kiosk on a thread of their own, so a slow notifier never holds up the
radio.  Never logs or raises with a token or card number in it.
"""
from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import logging
import threading
import time

from kiosk import CardResult, Notice, ReaderError, ReaderInfo
from kiosk import notices

from . import messages as m
from .link import LinkSettings, LinkState, ReaderLink, ReaderLinkError

log = logging.getLogger("kiosk.ble_reader")

NOTICE_KIND = notices.READER
DEFAULT_NAME = "Bluetooth card reader"
ENCRYPTED_PREFIX = "enc1_"        # CardResult.token for an encrypted payload: enc1_<base64url>
_CANCEL_POLL = 0.1                # seconds between looks at the vendor's cancel button


class BleReader:
    def __init__(self, settings: dict, emulated: dict | None = None, report=None):
        self.settings = settings
        self.card_timeout = float(settings["card_timeout"])
        self.battery_low = int(settings["battery_low"])
        self.emulator = None              # the EmulatedReader, when emulator = true
        # the kiosk's ``report``, set before the link starts: it holds what comes
        # before the kiosk is up, so nothing is held here
        self._notify = report
        self._notice_lock = threading.Lock()
        self._notices = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="ble-reader-notices")
        self._battery_warned = False
        self._info = ReaderInfo(name=DEFAULT_NAME, supports_offline=True, connected=False)
        self._closed = False
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run_loop, name="ble-reader", daemon=True)
        self._thread.start()
        self._first_attempted = threading.Event()
        self._first_task: asyncio.Task | None = None
        try:
            self.link = self._call(self._open(emulated), timeout=30)
        except BaseException:
            self.close()
            raise

    # -- the loop thread -------------------------------------------------------

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    def _call(self, coro, timeout: float | None = None):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def run(self, coro, timeout: float | None = 30):
        """Run a coroutine on the reader's loop and wait (tests drive the emulator this way)."""
        return self._call(coro, timeout)

    async def _open(self, emulated: dict | None) -> ReaderLink:
        s = self.settings
        scanner_backend = client_backend = None
        if s["emulator"]:
            # only now: a kiosk with real hardware never imports bumble
            from .bumble_backend import backends_for
            from .emulated_radio import EmulatedRadio
            from .emulated_reader import Behaviour, EmulatedReader
            radio = EmulatedRadio()
            self.emulator = EmulatedReader(radio, Behaviour(**(emulated or {})))
            await self.emulator.switch_on()
            scanner_backend, client_backend = backends_for(radio)
        link_settings = LinkSettings(address=s["address"], scan_timeout=s["scan_timeout"],
                                     connect_timeout=s["connect_timeout"], command_timeout=s["command_timeout"],
                                     connect_attempts=s["connect_attempts"], pair=s["pair"], adapter=s["adapter"])
        link = ReaderLink(link_settings, scanner_backend=scanner_backend, client_backend=client_backend,
                          on_change=self._on_link_change)
        # the first connection is made in the background: the kiosk starts even with the reader off
        self._first_task = asyncio.get_running_loop().create_task(self._first_connect(link))
        return link

    async def _first_connect(self, link: ReaderLink) -> None:
        try:
            await link.connect()
        except ReaderLinkError as exc:
            log.warning("card reader: %s", exc)
            link.start_reconnecting()
        finally:
            self._first_attempted.set()

    async def _shutdown(self) -> None:
        if self._first_task is not None:
            self._first_task.cancel()
        link = getattr(self, "link", None)
        if link is not None:
            await link.close()
        if self.emulator is not None:
            await self.emulator.switch_off()
        await asyncio.sleep(0.02)        # let HCI commands in flight get their answers
        # whatever the stacks still have scheduled ends here, not at interpreter exit
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)

    # -- state and notices -------------------------------------------------------

    def _on_link_change(self, event: str | None, state: LinkState) -> None:
        """On the loop thread, whenever the link's state changes; ``event`` names
        a change the vendor may hear of."""
        info = state.info
        self._info = ReaderInfo(name=info.name if info else DEFAULT_NAME,
                                supports_offline=info.supports_offline if info else True,
                                battery=state.battery, firmware=info.firmware if info else None,
                                connected=state.connected)
        name = self._info.name
        if event == "connected":
            battery = "" if state.battery is None else f", battery {state.battery}%"
            self._tell(Notice(NOTICE_KIND, "Card reader connected", f"{name}{battery}", "success"))
        elif event == "disconnected":
            self._tell(Notice(NOTICE_KIND, "Card reader disconnected",
                              f"{name} switched off or out of range; reconnecting", "warning"))
        elif event == "problem" and state.problem_kind == "pairing_refused":
            self._tell(Notice(NOTICE_KIND, "Card reader refused pairing", state.problem, "error"))
        elif event == "problem" and state.problem_kind in ("not_found", "no_bluetooth", "connect_failed"):
            self._tell(Notice(NOTICE_KIND, "Card reader not connected", state.problem, "warning"))
        if state.battery is not None and event in ("connected", "battery"):
            if state.battery <= self.battery_low and not self._battery_warned:
                self._battery_warned = True
                self._tell(Notice(NOTICE_KIND, "Card reader battery low",
                                  f"{name}: {state.battery}% — charge it soon", "warning"))
            elif state.battery > self.battery_low + 5:     # a little hysteresis: one warning per discharge
                self._battery_warned = False

    def _tell(self, notice: Notice) -> None:
        with self._notice_lock:
            notify = self._notify
        if notify is not None and not self._closed:
            self._notices.submit(self._deliver, notify, notice)

    @staticmethod
    def _deliver(notify, notice: Notice) -> None:
        try:
            notify(notice)
        except Exception:
            log.exception("telling the kiosk about the card reader failed")

    def detach(self) -> None:
        with self._notice_lock:
            self._notify = None

    # -- the Reader interface -----------------------------------------------------

    def info(self) -> ReaderInfo:
        """What the reader said last.  The first call waits for the first
        connection attempt (at most the scan and connect timeouts).  A reader
        never heard from is reported able to work offline: ``read_card`` then
        finds out for real, and says why it cannot."""
        if not self._first_attempted.is_set():
            self._first_attempted.wait(self.settings["scan_timeout"] + self.settings["connect_timeout"] + 1.0)
        return self._info

    def read_card(self, amount: int, currency: str, offline: bool, cancel: threading.Event,
                  card: str | None = None) -> CardResult:
        if self._closed:
            raise ReaderError("the card reader is closed")
        if cancel.is_set():
            raise ReaderError("cancelled at the kiosk; nothing was charged")
        outcome = _Outcome()
        self._loop.call_soon_threadsafe(self.link.begin_payment, amount, currency, offline, self.card_timeout,
                                        card or "", outcome.settle)
        s = self.settings
        # the link always answers (its own timers); this is only a backstop against a wedged loop
        deadline = time.monotonic() + s["scan_timeout"] + s["connect_timeout"] + self.card_timeout \
            + 4 * s["command_timeout"] + 10
        cancelling = False
        while not outcome.wait(_CANCEL_POLL):
            if cancel.is_set() and not cancelling:
                cancelling = True
                self._loop.call_soon_threadsafe(self.link.cancel_payment)
            if time.monotonic() > deadline:
                self._loop.call_soon_threadsafe(self.link.cancel_payment)
                raise ReaderError("the card reader plugin stopped responding; nothing was charged")
        if outcome.error is not None:
            raise ReaderError(str(outcome.error))
        if cancel.is_set():       # the card came in as the vendor cancelled: it is never charged
            raise ReaderError("cancelled at the kiosk; nothing was charged")
        return card_result(outcome.result)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.detach()
        try:
            if self._loop.is_running():
                self._call(self._shutdown(), timeout=15)
        except Exception:
            log.exception("closing the card reader link failed")
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            if not self._thread.is_alive():
                self._loop.close()
            self._notices.shutdown(wait=True)


class _Outcome:
    """A payment's answer, handed from the reader's loop to the sale thread.

    Two bare locks make a handshake: the loop releases ``ready`` and then
    blocks (at most ``HANDOVER`` seconds) until the sale thread has woken
    and released ``taken``.  Blocking is what hands the sale thread the GIL
    at once; otherwise it can sit out CPython's 5 ms switch interval while
    the loop finishes the radio's housekeeping."""

    HANDOVER = 0.002

    def __init__(self):
        self.result, self.error = None, None
        self._ready, self._taken = threading.Lock(), threading.Lock()
        self._ready.acquire()
        self._taken.acquire()

    def settle(self, result, error) -> None:
        """On the loop thread, exactly once."""
        self.result, self.error = result, error
        self._ready.release()
        self._taken.acquire(timeout=self.HANDOVER)

    def wait(self, timeout: float) -> bool:
        """On the sale thread."""
        if not self._ready.acquire(timeout=timeout):
            return False
        self._taken.release()
        return True


def card_result(message: m.CardResultMessage) -> CardResult:
    """The kiosk's CardResult for a reader's card result (which refuses
    anything that looks like a card number)."""
    if message.kind == m.ResultKind.PROCESSOR_TOKEN:
        token = message.token.decode("ascii")
    else:
        token = ENCRYPTED_PREFIX + base64.urlsafe_b64encode(message.token).decode("ascii").rstrip("=")
    return CardResult(token=token, brand=message.brand, last4=message.last4,
                      exp_month=message.exp_month or None, exp_year=message.exp_year or None)
