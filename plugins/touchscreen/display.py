"""The vendor's touchscreen: a pygame-ce loop that draws screens and takes touches.

:class:`TouchscreenDisplay` is the Display interface (``run(stop)``): it sets
pygame up, runs the event loop, turns touches, clicks and keys into actions
for the :class:`~.controller.SaleController`, and draws a frame -- widgets
from :func:`.screens.build`, pixels by :class:`~.paint.Painter` -- whenever
something changed.  The rooms around it:

- :mod:`.controller` -- what a tap does (the sale flow, every button);
- :mod:`.chores` -- the background thread that reads the queue and writes
  "followed up";
- :mod:`.screens` / :mod:`.paint` -- what is drawn, and the drawing of it.

The UI thread never waits on the network, Bluetooth or the disk: a sale runs
on its own thread (``Kiosk.take_sale`` checks Stripe, waits for the reader,
charges), and queue reads and "followed up" writes run on a chores thread.
Both hand their results back through an inbox the loop drains (:meth:`post`).
The loop is idle-cheap: it sleeps on a ``threading.Event`` between short
input polls (``pygame.event.wait`` busy-polls every millisecond inside
pygame-ce, which costs a few % of a core), and draws only when something
changed -- the status-bar clock at most once a minute.  This module holds no
sale rules: it never decides what a button does.

Never logs or draws card data beyond brand and last 4, and never logs a
customer contact.
"""
from __future__ import annotations

import collections
import logging
import os
import threading
import time

from kiosk import heartbeat

from . import OPEN_DISPLAYS
from .catalog import Catalog
from .chores import Chores, read_snapshot
from .controller import REPLAYED_NOTICES, SaleController
from .fonts import Fonts, bold_sibling, find_cjk, find_latin
from .keypad import AmountEntry
from .paint import Painter, ellipsize, wrap
from .screens import Context, build
from .state import UiState

os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")   # pygame prints a banner on stdout otherwise
import pygame  # noqa: E402  (only imported when a display opens: see plugins/touchscreen/__init__.py)

# Chores, read_snapshot, wrap and ellipsize lived here before the split; still importable from here.
__all__ = ["TouchscreenDisplay", "parse_size", "Chores", "read_snapshot", "wrap", "ellipsize"]

log = logging.getLogger("kiosk.touchscreen")

POLL_ACTIVE = 1 / 30     # s between input polls while the vendor is using the screen
POLL_IDLE = 1 / 12       # s between input polls when nobody has touched it for a while
ACTIVE_FOR = 15.0        # s after the last touch that count as "in use"
FRAME_RATE = 30          # most frames a second while payments stream in; touches are drawn at once


def parse_size(text: str) -> tuple[int, int]:
    """``"800x480"`` -> (800, 480); ValueError with one line otherwise."""
    width, sep, height = str(text).lower().partition("x")
    if not sep or not width.strip().isdigit() or not height.strip().isdigit():
        raise ValueError(f"screen size {text!r} must look like 800x480")
    size = (int(width), int(height))
    if not (320 <= size[0] <= 7680 and 240 <= size[1] <= 7680):
        raise ValueError(f"screen size {text!r} is out of range (320x240 to 7680x7680)")
    return size


class TouchscreenDisplay:
    """The Display interface (``run(stop)``) plus ``step()`` for tests and benches."""

    def __init__(self, kiosk, settings: dict, size: tuple[int, int] | None = None,
                 language: str | None = None):
        own = dict(settings.get("display.touchscreen", {}))
        self.kiosk = kiosk
        self.currency = kiosk.config.currency
        requested = language or kiosk.config["kiosk"].get("language", "en")
        window = size or parse_size(own.get("size", "800x480"))
        driver = own.get("driver", "")
        if driver and not os.environ.get("SDL_VIDEODRIVER"):   # the environment wins: headless runs set dummy
            os.environ["SDL_VIDEODRIVER"] = driver
        pygame.display.init()
        try:
            pygame.font.init()
            if own.get("fullscreen") and size is None:
                self.surface = pygame.display.set_mode((0, 0), pygame.FULLSCREEN)
                pygame.mouse.set_visible(False)
            else:
                self.surface = pygame.display.set_mode(window)
            pygame.display.set_caption(f"Kiosk {kiosk.config.kiosk_id}")
            self.size = self.surface.get_size()
            self._load_fonts(requested, own)
        except BaseException:
            pygame.display.quit()
            raise
        self.painter = Painter(self.surface, self.fonts)
        self.ui = UiState(entry=AmountEntry(self.currency))
        self.scene = None                       # the widgets of the last frame drawn
        self.drawn: list[tuple[str, str, int]] = []   # (widget name, text, px) of the last frame
        self.frames = 0
        self.frame_times: collections.deque = collections.deque(maxlen=5000)   # s, draw + flip
        self._inbox: collections.deque = collections.deque()
        self._wake = threading.Event()
        self._dirty = True
        self._urgent = False                    # a touch to answer: draw without waiting for the frame rate
        self._last_frame = 0.0
        self._quit = False
        self._closed = False
        self._stop: threading.Event | None = None
        self._pressed: str | None = None
        self._finger = None
        self._last_touch = 0.0
        self._next_tick = self._minute_after(time.time())
        self._online = kiosk.online
        self._chores = Chores(kiosk, self.post)
        self.controller = SaleController(kiosk, self.ui, self.catalog, self._chores, self.post, self._rows_shown)
        self._chores.start()                    # its first read waits for the first frame: start-up is faster
        OPEN_DISPLAYS.append(self)
        for notice in kiosk.recent_notices():   # sent before the screen existed
            if notice.kind in REPLAYED_NOTICES:
                self.notice(notice)

    # -- fonts and language ----------------------------------------------------------

    def _load_fonts(self, requested: str, own: dict) -> None:
        self.requested_language = requested
        self.font_note = False
        if requested == "ja":
            path, font = find_cjk(own.get("cjk_font", ""), lambda p: pygame.font.Font(p, 24))
            if path is None:
                log.warning("touchscreen: no font with Japanese glyphs found (install fonts-noto-cjk or set "
                            "[display.touchscreen] cjk_font); showing English")
                self.font_note = True
                requested = "en"
            else:
                self.font_path = path
                self.fonts = Fonts(pygame, path, bold_sibling(path), first=font)
        if requested == "en":
            path = find_latin(own.get("font", ""))
            self.font_path = path
            self.fonts = Fonts(pygame, path, bold_sibling(path) if path else None)
        self.language = requested
        self.catalog = Catalog(requested)

    # -- the loop ------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Show the screen until ``stop`` is set or the window is closed."""
        self._stop = stop
        try:
            while not stop.is_set() and not self._quit:
                heartbeat()     # systemd's watchdog: the screen's loop is turning (a step waits 5 s at most)
                self.step(self._until_next_timer())
        except BaseException:
            self.close(cancel_sale=False)     # a sale under way still finishes and is stored
            raise
        self.close()

    def step(self, timeout: float = 0.0) -> bool:
        """Handle what is pending -- touches, results from other threads,
        timers -- and draw a frame if anything changed.  Waits up to
        ``timeout`` seconds for something to happen.  True if a frame was drawn."""
        deadline = time.monotonic() + timeout
        while True:
            self._wake.clear()
            self._pump()
            now = time.monotonic()
            stopping = self._quit or (self._stop is not None and self._stop.is_set())
            if self._dirty:
                # a touch is answered at once; anything else at most FRAME_RATE times a second
                if self._urgent or now >= deadline or stopping or now - self._last_frame >= 1 / FRAME_RATE:
                    break
                time.sleep(min(deadline, self._last_frame + 1 / FRAME_RATE) - now)
                continue
            if now >= deadline or stopping:
                break
            self._wake.wait(min(deadline - now, self._poll_interval()))
        self._timers()
        if self._dirty:
            self._draw()
            return True
        return False

    def _poll_interval(self) -> float:
        busy = self.ui.sale is not None or time.monotonic() - self._last_touch < ACTIVE_FOR
        return POLL_ACTIVE if busy else POLL_IDLE

    def _until_next_timer(self) -> float:
        wait = self._next_tick - time.time()
        if self.ui.toast:
            wait = min(wait, self.ui.toast_until - time.monotonic())
        return max(0.0, min(wait, 5.0))

    @staticmethod
    def _minute_after(now: float) -> float:
        return (int(now) // 60 + 1) * 60

    def _timers(self) -> None:
        now = time.time()
        if now >= self._next_tick:              # the status-bar clock and the ages it shows
            self._next_tick = self._minute_after(now)
            self._dirty = True
            self._chores.refresh()
        if self.ui.toast and time.monotonic() >= self.ui.toast_until:
            self.ui.toast, self.ui.sent_count = "", 0
            self._dirty = True

    def _pump(self) -> bool:
        handled = False
        for event in pygame.event.get():
            handled = True
            self._handle(event)
        while self._inbox:
            kind, payload = self._inbox.popleft()
            handled = True
            self._dirty = True
            self.controller.receive(kind, payload)
        online = self.kiosk.online                 # a plain attribute: no I/O
        if online != self._online:
            self._online = online
            self._dirty = True
            self._chores.refresh()
        progress = tuple(self.kiosk.sync_progress)
        if progress != self.ui.progress:
            self.ui.progress = progress
            self._dirty = True
        return handled

    # -- input: touches, clicks and keys become actions ------------------------------------

    def _handle(self, event) -> None:
        kind = event.type
        if kind == pygame.QUIT:
            self._quit = True
        elif kind in (pygame.MOUSEBUTTONDOWN, pygame.MOUSEBUTTONUP):
            if getattr(event, "touch", False) or getattr(event, "button", 1) != 1:
                return     # SDL's mouse copy of a touch: the FINGER event is handled instead
            (self._press if kind == pygame.MOUSEBUTTONDOWN else self._release)(event.pos)
        elif kind == pygame.FINGERDOWN:
            if self._finger is None:
                self._finger = event.finger_id
                self._press(self._finger_pos(event))
        elif kind == pygame.FINGERUP:
            if event.finger_id == self._finger:
                self._finger = None
                self._release(self._finger_pos(event))
        elif kind == pygame.MOUSEWHEEL:
            if self.controller.scroll(-event.y):
                self._dirty = True
        elif kind == pygame.KEYDOWN:
            self._key(event)
        elif kind in (pygame.WINDOWEXPOSED, pygame.WINDOWRESTORED, pygame.WINDOWSHOWN, pygame.VIDEOEXPOSE):
            self._dirty = True

    def _finger_pos(self, event) -> tuple[int, int]:
        return (int(event.x * self.size[0]), int(event.y * self.size[1]))

    def _hit(self, pos) -> str | None:
        if self.scene is None:
            return None
        for widget in reversed(self.scene.widgets):
            if widget.target and widget.box.contains(pos):
                return widget.name if widget.enabled else None
        return None

    def _press(self, pos) -> None:
        self._last_touch = time.monotonic()
        self._pressed = self._hit(pos)
        if self._pressed:
            self._dirty = self._urgent = True        # drawn pressed

    def _release(self, pos) -> None:
        self._last_touch = time.monotonic()
        pressed, self._pressed = self._pressed, None
        if pressed is not None:
            self._dirty = self._urgent = True
            if self._hit(pos) == pressed:      # a finger that slid off the button cancels the tap
                self.act(pressed)

    def _key(self, event) -> None:
        """A keyboard on a desktop: digits, Backspace, Enter, Escape."""
        names = {pygame.K_BACKSPACE: "key_back", pygame.K_RETURN: "charge", pygame.K_KP_ENTER: "charge"}
        if self.ui.screen == "sale":
            name = names.get(event.key) or (f"key_{event.unicode}" if event.unicode in "0123456789." else None)
            if name and self._has_target(name):
                self.act(name)
        elif self.ui.screen == "contact" and event.unicode and event.unicode.isprintable():
            self.act(f"type_{event.unicode}")
        elif self.ui.screen == "contact" and event.key == pygame.K_BACKSPACE:
            self.act("contact_back")

    def _has_target(self, name: str) -> bool:
        return self.scene is not None and any(w.name == name and w.enabled for w in self.scene.targets)

    def _rows_shown(self, name: str | None) -> int:
        """How many widgets called ``name`` the last frame drew (the controller's page size)."""
        return len([w for w in (self.scene.widgets if self.scene else []) if w.name == name])

    def act(self, name: str) -> None:
        """Do what the button ``name`` does (the touch handlers call this)."""
        self._dirty = True
        self.controller.act(name)

    # -- from other threads --------------------------------------------------------------

    def post(self, kind: str, payload=None) -> None:
        """Hand something to the UI thread (any thread may call this)."""
        self._inbox.append((kind, payload))
        self._wake.set()

    def payment_changed(self, payment, previous_state) -> None:
        self.post("payment", (payment, previous_state))

    def sync_progress(self, done: int, total: int) -> None:
        self._wake.set()           # the loop reads kiosk.sync_progress itself

    def notice(self, notice) -> None:
        self.post("notice", notice)

    # -- drawing -------------------------------------------------------------------------

    def context(self) -> Context:
        return Context(self.catalog, self.currency, self.kiosk.config["kiosk"]["reminder_hours"], self.font_note,
                       self._online, now=self.kiosk.clock(), zone=self.kiosk.zone)

    def _draw(self) -> None:
        started = time.perf_counter()
        scene = build(self.ui, self.context(), self.size)
        self.drawn = []                         # a frame that fails to draw claims no strings
        self.drawn = self.painter.paint(scene, self._pressed)
        pygame.display.flip()
        now = time.perf_counter()
        self.frame_times.append(now - started)
        self.scene = scene
        if not self.frames:
            self._chores.refresh(attention=True)
        self.frames += 1
        self._dirty = self._urgent = False
        self._last_frame = time.monotonic()

    # -- for tests, screenshots and benches -------------------------------------------------

    def widget(self, name: str):
        """The widget called ``name`` in the last frame drawn (None if not shown)."""
        for widget in (self.scene.widgets if self.scene else []):
            if widget.name == name:
                return widget
        return None

    def texts(self) -> list[str]:
        """Every string drawn in the last frame."""
        return [text for _, text, _ in self.drawn]

    def catch_up(self, timeout: float = 10.0) -> bool:
        """Run the loop until the screen shows the queue as it is now (a fresh
        read of the store and of the failed payments), then draw."""
        seq = self._chores.refresh(attention=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.step(0.02)
            snapshot = self.ui.snapshot
            if snapshot is not None and snapshot.seq >= seq and self.controller.attention_seq >= seq:
                self._dirty = True
                self.step()
                return True
        return False

    def save(self, path) -> None:
        pygame.image.save(self.surface, str(path))

    def show(self, screen: str) -> None:
        self.ui.screen = screen
        self._dirty = True

    # -- closing -------------------------------------------------------------------------

    def close(self, cancel_sale: bool = True) -> None:
        """Stop the threads and close the window.  A sale waiting for the card
        is cancelled (nothing is read, nothing stored) unless ``cancel_sale``
        is False; a sale already charging always finishes first."""
        if self._closed:
            return
        self._closed = True
        self.controller.close(cancel_sale)
        self._chores.stop()
        if self in OPEN_DISPLAYS:
            OPEN_DISPLAYS.remove(self)
        pygame.display.quit()
