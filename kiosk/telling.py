"""Telling people: notices to the vendor, the hook that reports a payment's
change to plugins, and the alarms raised once per trouble rather than once
per payment or per poll.

Notifier and display plugins are called through the host's isolated calls:
one that raises is named on the screen and skipped, and the sale goes on.

It must never be asked to tell of a change before that change is durable,
and it never changes a payment or the store.
"""
from __future__ import annotations

import logging
import threading
from collections import deque

from . import notices
from .notices import Notice
from .payment import Payment

log = logging.getLogger("kiosk.engine")     # the engine's log lines keep their name


class Telling:
    def __init__(self, kiosk, skipped: dict[str, str]):
        self.kiosk = kiosk
        self.recent_notices: deque[Notice] = deque(maxlen=50)   # for a screen that opens later
        self.plugin_trouble: dict[str, str] = dict(skipped)    # plugin -> one line, for status and screens
        self._key_alerted = False                # the vendor has been told the key is rejected
        self._request_alerts: set[str] = set()   # "needs an update" alarms already raised, by message
        self._alerts_lock = threading.Lock()     # forwarding threads raise them at once

    def notify(self, notice: Notice) -> None:
        """To every notifier in ``[notifier] use`` and to the display in use."""
        config = self.kiosk.config
        self.recent_notices.append(notice)
        only = list(config["notifier"]["use"])
        if config["display"]["use"]:
            only.append(config["display"]["use"])
        self.kiosk.host.call_isolated("kiosk_notify", only=only, notice=notice)

    def plugin_failed(self, plugin: str, line: str) -> None:
        """A notifier or display raised (told once per hook): on the screen, sales go on."""
        self.plugin_trouble[plugin] = line
        self.notify(notices.plugin_trouble(line))

    def payment_changed(self, payment: Payment, previous: str | None) -> None:
        """``kiosk_payment_changed`` with a copy: a plugin cannot touch the kiosk's payment."""
        self.kiosk.host.call_isolated("kiosk_payment_changed", payment=Payment.from_record(payment.to_record()),
                                      previous_state=previous)

    def alert_store(self, message: str) -> None:
        """The store raised its alarm while the kiosk runs: tell the vendor once per alarm."""
        if self._first_time(message):
            log.error("store alarm: %s", message)
            self.notify(notices.store_alarm(message))

    def alert_request(self, message: str) -> None:
        """Stripe refused the kiosk's own request: tell the vendor once per
        kind of refusal, not once per payment."""
        if self._first_time(message):
            log.error("%s", message)
            self.notify(notices.needs_update(message))

    def _first_time(self, message: str) -> bool:
        with self._alerts_lock:
            if message in self._request_alerts:
                return False
            self._request_alerts.add(message)
            return True

    def alert_key(self, message: str, missing: bool = False) -> None:
        """The key was rejected, or none is set (``missing``): tell the vendor
        once per outage, not every poll."""
        if not self._key_alerted:
            self._key_alerted = True
            self.notify(notices.key_missing(message) if missing else notices.auth_failed(message))

    def key_accepted(self) -> None:
        """Stripe answered a whole pass: the next rejected key is a new outage."""
        self._key_alerted = False
