"""One payment at the reader: START_PAYMENT in flight until the card result.

Driven by the reader's answers (delivered by the link, straight from the
notification that carries them) and one deadline -- acknowledgement, then
card.  It settles exactly once, with the card result or a
:class:`~kiosk_builtins.ble_reader.errors.ReaderLinkError`, and never takes an
answer meant for another payment.  Runs on the link's event loop.
"""
from __future__ import annotations

import asyncio
import logging

from . import messages as m
from .errors import ReaderGone, ReaderLinkError, describe_error
from .framing import ProtocolError

log = logging.getLogger("kiosk.ble_reader")


class ReaderPayment:
    """One START_PAYMENT in flight, driven by the reader's answers and a
    deadline (acknowledgement, then card).  Settles exactly once.  After a bad
    frame or a silence the reader is reset before the kiosk hears of it, so a
    late answer can never be taken for the next payment."""

    def __init__(self, link, card_timeout: float, done):
        self.link, self.card_timeout, self.done = link, card_timeout, done
        self.seq: int | None = None
        self.accepted = self.settled = self.cancelling = False
        self.listening = True        # False once it is being reset: later answers for it are dropped
        self.timer: asyncio.TimerHandle | None = None
        self.deadline = 0.0

    async def start(self, amount: int, currency: str, offline: bool, test_card: str) -> None:
        link = self.link
        try:
            if not link.connected:
                await link.connect()
            info = link.state.info
            if offline and info is not None and not info.supports_offline:
                raise ReaderLinkError("offline_not_supported", f"{info.name} cannot take payments offline")
            if self.settled:            # cancelled while connecting
                return
            self.seq = link.next_seq()
            loop = asyncio.get_running_loop()
            self.deadline = loop.time() + link.settings.command_timeout
            self.timer = loop.call_at(self.deadline, self._check_deadline)
            await link.send(m.StartPayment(amount, currency, offline, round(self.card_timeout), test_card),
                             self.seq)
        except ReaderLinkError as exc:
            self.settle(None, exc)
        except ReaderGone:
            self.gone()
        except Exception as exc:         # a bug here must still end the sale thread's wait
            log.exception("starting the payment failed")
            self.settle(None, ReaderLinkError("reader_error", f"the card reader plugin failed ({type(exc).__name__})"))

    def _check_deadline(self) -> None:
        # one timer per payment: moving the deadline is a store, and the timer follows it when it fires
        loop = asyncio.get_running_loop()
        if loop.time() < self.deadline:
            self.timer = loop.call_at(self.deadline, self._check_deadline)
        else:
            self.silent()

    def on_message(self, message) -> None:
        """An answer with this payment's sequence number."""
        if self.settled:
            return
        if isinstance(message, m.Status):            # accepted: now the customer
            if not self.accepted:
                self.accepted = True
                self.deadline = asyncio.get_running_loop().time() + self.card_timeout \
                    + self.link.settings.command_timeout
        elif isinstance(message, m.CardResultMessage):
            if self.cancelling:                       # the vendor said stop: never charge it
                log.info("card result arrived after the vendor cancelled; dropped")
                return
            self.settle(message, None)
            log.info("card reader read a %s card ending %s", message.brand, message.last4)   # after: the sale goes on
        elif isinstance(message, m.ErrorMessage):
            error = describe_error(message)
            if self.cancelling and error.kind == "cancelled":
                error = ReaderLinkError("cancelled", "cancelled at the kiosk; nothing was charged")
            self.settle(None, error)
        else:
            self.bad_frame(ProtocolError("type", f"answer to START_PAYMENT was {type(message).__name__}"))

    def gone(self) -> None:
        self.settle(None, ReaderLinkError("disconnected", "the card reader switched off or went out of range "
                                                          "during the payment; nothing was charged — switch it "
                                                          "on and try again"))

    def bad_frame(self, error: ProtocolError) -> None:
        self._recover(ReaderLinkError("bad_frame", f"the card reader sent a bad frame ({error}); it was reset "
                                                   "and nothing was charged — try again"))

    def silent(self) -> None:
        self._recover(ReaderLinkError("timeout", "the card reader stopped answering; it was reset and nothing "
                                                 "was charged — try again"))

    def cancel(self) -> None:
        if self.settled or self.cancelling:
            return
        self.cancelling = True
        self.link.in_background(self._cancel_at_reader())

    async def _cancel_at_reader(self) -> None:
        if self.seq is not None and self.link.connected:
            try:
                await self.link.exchange(m.Cancel(self.seq), m.Status)
            except ReaderLinkError as exc:
                log.warning("card reader did not confirm the cancel (%s); resetting it", exc)
                await self.link.reset()
        self.settle(None, ReaderLinkError("cancelled", "cancelled at the kiosk; nothing was charged"))

    def _recover(self, error: ReaderLinkError) -> None:
        if self.settled or not self.listening:
            return
        self.listening = False           # nothing more is taken for this sequence number
        if self.timer is not None:
            self.timer.cancel()

        async def reset_then_settle():
            await self.link.reset()
            self.settle(None, error)
        self.link.in_background(reset_then_settle())

    def settle(self, result, error) -> None:
        if self.settled:
            return
        self.settled, self.listening = True, False
        if self.timer is not None:
            self.timer.cancel()
        self.link.payment_settled(self)
        self.done(result, error)
