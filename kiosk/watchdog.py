"""systemd's service watchdog for ``kiosk run``: ``READY=1`` once the kiosk
is up, ``WATCHDOG=1`` only while every loop that proves it alive keeps
turning, ``STOPPING=1`` on the way out (the image's ``kiosk.service`` has
``Type=notify`` and ``WatchdogSec=``; docs/image.md).

The loops tick it themselves -- the background loop at every pass, between
slices of its sleep and per payment forwarded; a display's event loop on
every turn (``kiosk.heartbeat()``) -- and a beat goes out only when every
watched loop has ticked since the last one.  A loop that hangs therefore
stops the beats and systemd restarts the kiosk.  It never beats from a thread
of its own: that would beat on while the loop it stands for hangs.

Outside systemd (no ``$NOTIFY_SOCKET``) it sends nothing and ``heartbeat()``
costs one comparison.  A notification that cannot be sent is logged, never
raised: the watchdog must not stop a sale.
"""
from __future__ import annotations

import logging
import os
import threading
import time

log = logging.getLogger("kiosk")

BACKGROUND = "background"   # the background loop (kiosk/background.py), on the forwarder thread
SCREEN = "screen"           # a display's event loop, watched from its first heartbeat()

SLICES = 4                  # a watched loop ticks at least this often per WatchdogSec while it sleeps
MIN_GAP = 10                # beats at most this often per WatchdogSec (a fast pass ticks per payment)


class Watchdog:
    """What ``kiosk run`` tells systemd.  ``timeout`` is ``WatchdogSec`` in
    seconds (None: no watchdog, READY/STOPPING only); ``send(state)`` sends
    one notification, or is None outside systemd."""

    def __init__(self, send=None, timeout: float | None = None):
        self._send = send
        self.timeout = timeout if send is not None else None
        self._lock = threading.Lock()
        self._watched: set[str] = set()
        self._ticked: set[str] = set()
        self._ready = False
        self._stopping = False
        self._last_beat = 0.0
        self._failed = False

    @classmethod
    def from_environment(cls) -> "Watchdog":
        """The watchdog systemd asked for (``NOTIFY_SOCKET``, ``WATCHDOG_USEC``,
        ``WATCHDOG_PID``, as ``sd_watchdog_enabled(3)`` reads them), or a silent one."""
        environ = os.environ          # libsystemd's sd_notify() reads NOTIFY_SOCKET from here too
        if not environ.get("NOTIFY_SOCKET"):
            return cls()
        from cysystemd.daemon import Notification, notify   # libsystemd's own sd_notify()

        def send(state: str) -> None:
            name, _, value = state.partition("=")
            notify(Notification[name], None if value == "1" else value, return_exceptions=False)

        timeout = None
        usec, pid = environ.get("WATCHDOG_USEC", ""), environ.get("WATCHDOG_PID", "")
        # WATCHDOG_PID names the process the watchdog is for: not a child that inherited it
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            timeout = int(usec) / 1_000_000
        return cls(send, timeout)

    @property
    def active(self) -> bool:
        return self._send is not None

    @property
    def tick_every(self) -> float | None:
        """How long a watched loop may sleep between ticks (None: as long as it likes)."""
        return self.timeout / SLICES if self.timeout else None

    def watch(self, loop: str) -> None:
        """``loop`` must keep ticking from now on (the beats wait for it)."""
        with self._lock:
            self._watched.add(loop)

    def forget(self, loop: str) -> None:
        """``loop`` has ended as it should: the beats no longer wait for it."""
        with self._lock:
            self._watched.discard(loop)
            self._ticked.discard(loop)

    def tick(self, loop: str) -> None:
        """``loop`` has turned; beat if every watched loop has turned since the last beat."""
        if self.timeout is None:
            return
        now = time.monotonic()
        with self._lock:
            self._watched.add(loop)
            self._ticked.add(loop)
            if (not self._ready or self._stopping or self._ticked < self._watched
                    or now - self._last_beat < self.timeout / MIN_GAP):
                return
            self._ticked.clear()
            self._last_beat = now
        self._notify("WATCHDOG=1")

    def ready(self) -> None:
        """The kiosk is up: systemd's start-up is complete and its watchdog starts now."""
        with self._lock:
            self._ready = True
            self._ticked.clear()
            self._last_beat = time.monotonic()
        if self.active:
            log.info("told systemd the kiosk is ready%s", f"; watchdog {self.timeout:g} s, beaten while "
                     f"these loops turn: {', '.join(sorted(self._watched))}" if self.timeout else "")
        self._notify("READY=1")

    def stopping(self) -> None:
        """The kiosk is shutting down (once; no beats after it)."""
        with self._lock:
            if self._stopping:
                return
            self._stopping = True
        self._notify("STOPPING=1")

    def _notify(self, state: str) -> None:
        if self._send is None:
            return
        try:
            self._send(state)
        except (OSError, ValueError, RuntimeError) as exc:
            if not self._failed:     # once: a socket gone for good would fill the log
                log.error("could not tell systemd %s: %s", state, exc)
            self._failed = True


_current = Watchdog()


def start() -> Watchdog:
    """The watchdog for this ``kiosk run``, from systemd's environment; the
    loops' heartbeats go to it from now on."""
    global _current
    _current = Watchdog.from_environment()
    return _current


def heartbeat(loop: str = SCREEN) -> None:
    """The loop ``loop`` has turned.  A display's event loop calls
    ``heartbeat()`` on every turn (at least every few seconds): under
    systemd's watchdog the kiosk is restarted once it stops."""
    _current.tick(loop)


def wait(event: threading.Event, seconds: float, loop: str) -> bool:
    """``event.wait(seconds)`` for a watched loop, ticking between slices:
    a loop asleep is a loop alive.  True if ``event`` was set."""
    dog = _current
    every = dog.tick_every
    if every is None:
        return event.wait(seconds)
    deadline = time.monotonic() + seconds
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return event.is_set()
        if event.wait(min(left, every)):
            return True
        dog.tick(loop)
