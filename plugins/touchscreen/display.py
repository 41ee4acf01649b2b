"""The vendor's touchscreen: a pygame-ce loop that draws screens and takes touches.

The UI thread never waits on the network, Bluetooth or the disk: a sale runs
on its own thread (``Kiosk.take_sale`` checks Stripe, waits for the reader,
charges), and queue reads and "followed up" writes run on a chores thread.
Both hand their results back through an inbox the loop drains.  The loop is
idle-cheap: it sleeps on a ``threading.Event`` between short input polls
(``pygame.event.wait`` busy-polls every millisecond inside pygame-ce, which
costs a few % of a core), and draws only when something changed -- the
status-bar clock at most once a minute.

Never logs or draws card data beyond brand and last 4, and never logs a
customer contact.
"""
from __future__ import annotations

import collections
import logging
import os
import queue
import re
import threading
import time

from kiosk import (CANCELLED, FAILED, FORWARDING, PENDING, REFUSED, SUCCEEDED, MoneyError,
                   SaleResult, check_amount, check_contact, format_amount, minimum_charge, parse_iso)

from . import OPEN_DISPLAYS
from .catalog import Catalog
from .fonts import Fonts, bold_sibling, find_cjk, find_latin
from .keypad import AmountEntry, type_contact
from .layout import MIN_TEXT
from .screens import Context, build
from .state import Alert, Sale, Snapshot, UiState

os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")   # pygame prints a banner on stdout otherwise
import pygame  # noqa: E402  (only imported when a display opens: see plugins/touchscreen/__init__.py)

log = logging.getLogger("kiosk.touchscreen")

POLL_ACTIVE = 1 / 30     # s between input polls while the vendor is using the screen
POLL_IDLE = 1 / 12       # s between input polls when nobody has touched it for a while
ACTIVE_FOR = 15.0        # s after the last touch that count as "in use"
TOAST_SECONDS = 4.0
FRAME_RATE = 30          # most frames a second while payments stream in; touches are drawn at once
REFRESH_GAP = 0.25       # s: at most four queue reads a second while payments stream in
SETTLED_SHOWN = 100      # settled payments on the Payments screen (the newest)
TEXT_CACHE_BYTES = 1024 * 1024   # rendered strings kept, least recently drawn dropped first
SALE_JOIN_SECONDS = 90.0  # a sale's reader wait and charge finish before the kiosk closes


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
        self._text_cache: collections.OrderedDict = collections.OrderedDict()
        self._text_cache_bytes = 0
        self._sale_thread: threading.Thread | None = None
        self._chores = Chores(self)
        self._attention_seq = -1
        self._chores.start()                    # its first read waits for the first frame: start-up is faster
        OPEN_DISPLAYS.append(self)
        for notice in kiosk.recent_notices():   # sent before the screen existed
            if notice.kind in ("store_recovered", "interrupted", "auth_failed", "reader", "needs_update"):
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
            self._receive(kind, payload)
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

    # -- input -----------------------------------------------------------------------

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
            self._scroll(-event.y)
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

    def _scroll(self, rows: int) -> None:
        if self.ui.screen in ("payments", "attention") and rows:
            self.ui.scroll[self.ui.screen] = max(0, self.ui.scroll[self.ui.screen] + rows)
            self._dirty = True

    # -- what each button does ---------------------------------------------------------

    def act(self, name: str) -> None:
        """Do what the button ``name`` does (the touch handlers call this)."""
        ui, t = self.ui, self.catalog
        self._dirty = True
        if name.startswith("key_"):
            ui.entry.press(name[4:])
            ui.sale_error = ""
        elif name == "clear":
            ui.entry.clear()
            ui.sale_error = ""
        elif name == "charge":
            self._start_sale()
        elif name == "cancel_sale" and ui.sale is not None:
            ui.sale.cancel.set()
        elif name == "contact":
            ui.screen, ui.contact_error = "contact", ""
        elif name.startswith("type_"):
            ui.contact, ui.contact_error = type_contact(ui.contact, name[5:]), ""
        elif name in ("contact_back", "contact_clear"):
            ui.contact, ui.contact_error = type_contact(ui.contact, name[8:]), ""
        elif name == "contact_mode":
            ui.contact_mode = "email" if ui.contact_mode == "phone" else "phone"
        elif name == "contact_done":
            if self._contact_ok():
                ui.screen = "confirm_offline"
        elif name == "offline_confirm":
            if self._contact_ok():
                self._answer(True)
        elif name == "offline_cancel":
            self._answer(False)
        elif name == "new_sale":
            ui.screen, ui.result = "sale", None
        elif name.startswith("nav_"):
            ui.screen = name[4:]
            if ui.screen == "attention":
                self._chores.refresh(attention=True)
        elif name.endswith("_up") or name.endswith("_down"):
            screen, _, direction = name.rpartition("_")
            page = self._page_size(screen)
            ui.scroll[screen] = max(0, ui.scroll.get(screen, 0) + (page if direction == "down" else -page))
        elif name.startswith("followed_up:"):
            payment_id = name.partition(":")[2]
            ui.following.add(payment_id)
            self._chores.submit(lambda: self._mark_followed_up(payment_id))
        elif name == "sync_now":
            self.kiosk.request_sync()        # only sets an Event: the forwarder does the work
            self._toast(t("toast_sync"))
        elif name == "alert_view":
            ui.alerts[:] = [a for a in ui.alerts if a.kind != "declined"]   # they are all on that screen
            ui.screen = "attention"
            self._chores.refresh(attention=True)
        elif name == "alert_ok" and ui.alerts:
            # only what the vendor saw: the grouped declines, or the one alert shown
            if ui.alerts[0].kind == "declined":
                ui.alerts[:] = [a for a in ui.alerts if a.kind != "declined"]
            else:
                ui.alerts.pop(0)

    def _page_size(self, screen: str) -> int:
        row_name = {"payments": "payment_row", "attention": "attention_row"}.get(screen)
        rows = [w for w in (self.scene.widgets if self.scene else []) if w.name == row_name]
        return max(1, len(rows))

    def _contact_ok(self) -> bool:
        ui = self.ui
        if not ui.contact.strip():
            ui.contact = ""
            return True
        try:
            ui.contact = check_contact(ui.contact)
            return True
        except ValueError:
            ui.contact_error = self.catalog("contact_invalid")
            ui.screen = "contact"
            return False

    def _toast(self, text: str) -> None:
        self.ui.toast, self.ui.toast_until = text, time.monotonic() + TOAST_SECONDS
        self.ui.sent_count = 0
        self._dirty = True

    # -- a sale ----------------------------------------------------------------------

    def _start_sale(self) -> None:
        ui = self.ui
        if ui.sale is not None:
            return
        amount, currency = ui.entry.minor, ui.entry.currency
        try:
            check_amount(amount, currency)
        except MoneyError:
            low = minimum_charge(currency)
            ui.sale_error = (self.catalog("below_minimum", amount=format_amount(low, currency, self.catalog.locale))
                             if amount < low else self.catalog("too_large"))
            return
        sale = Sale(amount, currency)
        ui.sale, ui.screen, ui.contact, ui.contact_mode = sale, "present_card", "", "phone"
        self._sale_thread = threading.Thread(target=self._sell, args=(sale,), name="touchscreen-sale", daemon=True)
        self._sale_thread.start()

    def _sell(self, sale: Sale) -> None:
        """On the sale thread: the whole sale, as the engine runs it."""
        try:
            result = self.kiosk.take_sale(sale.amount, sale.currency, confirm=lambda offer: self._confirm(sale, offer),
                                          cancel=sale.cancel)
        except (MoneyError, ValueError) as exc:
            result = SaleResult(REFUSED, str(exc))
        except Exception as exc:      # an engine or plugin bug: say so, keep the screen alive
            log.exception("sale failed")
            result = SaleResult(REFUSED, f"sale failed ({type(exc).__name__})")
        self.post("result", (sale, result))

    def _confirm(self, sale: Sale, offer) -> bool:
        """On the sale thread: ask the vendor about an offline sale and wait for the answer."""
        sale.offer = offer
        self.post("confirm", sale)
        while not sale.answered.wait(0.5):
            if self._closed or sale.cancel.is_set():
                return False
        if sale.answer:
            offer.customer = sale.customer
        return bool(sale.answer)

    def _answer(self, yes: bool) -> None:
        sale = self.ui.sale
        if sale is None or sale.offer is None or sale.answered.is_set():
            return
        sale.answer, sale.offline = yes, yes
        sale.customer = self.ui.contact or None
        sale.answered.set()
        self.ui.screen = "present_card"

    def _finish_sale(self, sale: Sale, result) -> None:
        ui = self.ui
        if sale is not ui.sale:
            return
        ui.sale = None
        if result.status == CANCELLED or (sale.cancel.is_set() and result.payment is None):
            ui.screen = "sale"
            self._toast(self.catalog("toast_cancelled" if sale.cancel.is_set() else "toast_not_confirmed"))
            return
        ui.result, ui.result_amount, ui.screen = result, (sale.amount, sale.currency), "result"
        if result.ok or result.status == "unconfirmed":   # never leave it ready to charge again
            ui.entry.clear()
        self._chores.refresh(attention=result.payment is not None and result.payment.state == FAILED)

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

    def _receive(self, kind: str, payload) -> None:
        ui = self.ui
        self._dirty = True
        if kind == "snapshot":
            ui.snapshot = payload
        elif kind == "attention":
            self._attention_seq, ui.attention = payload
            ui.following &= {p.id for p in ui.attention}
        elif kind == "confirm":
            if payload is ui.sale:
                ui.screen, ui.contact = "confirm_offline", payload.offer.customer or ""
        elif kind == "result":
            self._finish_sale(*payload)
        elif kind == "payment":
            self._payment(*payload)
        elif kind == "followed":
            payment_id, error = payload
            ui.following.discard(payment_id)
            self._toast(error or self.catalog("toast_followed"))
        elif kind == "notice":
            self._notice(payload)

    def _payment(self, payment, previous) -> None:
        t, ui = self.catalog, self.ui
        # settled after the customer left: an offline sale, or an online one whose answer was lost
        forwarded = previous in (PENDING, FORWARDING) and (payment.offline or payment.interrupted_told)
        what = (f"{format_amount(payment.amount, payment.currency, t.locale)} "
                f"{payment.card.brand} •••• {payment.card.last4}")
        if forwarded and payment.state == SUCCEEDED:
            if ui.toast and ui.sent_count:
                ui.sent_count += 1
                ui.toast = t("toast_sent_n", n=ui.sent_count)
                ui.toast_until = time.monotonic() + TOAST_SECONDS
            else:
                self._toast(t("toast_sent", what=what))
                ui.sent_count = 1
        elif forwarded and payment.state == FAILED:
            reason = t.decline(payment.decline_code, payment.message)
            ui.alerts.append(Alert("declined", t("failure_one", what=f"{what} — {reason}"), payment.id))
        self._chores.refresh(attention=payment.state == FAILED)

    def _notice(self, notice) -> None:
        if notice.kind == "reader":
            what = f"{notice.title}: {notice.message}" if notice.message else notice.title
            if notice.level == "success":
                self._toast(self.catalog("notice_reader", what=what))
            else:      # off, not found, pairing refused, battery low: the vendor must see it
                self.ui.alerts.append(Alert("reader", self.catalog("notice_reader", what=what)))
            return
        key = {"auth_failed": "notice_auth_failed", "store_recovered": "notice_store_recovered",
               "interrupted": "notice_interrupted", "needs_update": "notice_needs_update",
               "declined_for_now": "notice_declined_for_now"}.get(notice.kind)
        if key is None:
            return     # the rest are on screen already: results, toasts, the status bar and its banner
        payment = notice.payment or {}
        what = ""
        if payment:
            what = (f"{format_amount(payment['amount'], payment['currency'], self.catalog.locale)} "
                    f"{payment['card']['brand']} •••• {payment['card']['last4']}")
        if notice.kind == "declined_for_now":
            self._toast(self.catalog(key, what=what))     # nothing to do yet: the kiosk tries again
            return
        self.ui.alerts.append(Alert(notice.kind, self.catalog(key, what=what)))

    def _mark_followed_up(self, payment_id: str) -> None:
        """On the chores thread: durable before the screen says so."""
        error = None
        try:
            self.kiosk.mark_followed_up(payment_id)
        except ValueError as exc:
            error = str(exc)
        self.post("followed", (payment_id, error))
        self._chores.refresh(attention=True)

    # -- drawing -------------------------------------------------------------------------

    def context(self) -> Context:
        return Context(self.catalog, self.currency, self.kiosk.config["kiosk"]["reminder_hours"], self.font_note,
                       self._online, now=self.kiosk.clock())

    def _draw(self) -> None:
        started = time.perf_counter()
        scene = build(self.ui, self.context(), self.size)
        self.drawn = []
        surface = self.surface
        for widget in scene.widgets:
            self._draw_widget(surface, widget, scene.geometry)
        pygame.display.flip()
        now = time.perf_counter()
        self.frame_times.append(now - started)
        self.scene = scene
        if not self.frames:
            self._chores.refresh(attention=True)
        self.frames += 1
        self._dirty = self._urgent = False
        self._last_frame = time.monotonic()

    def _draw_widget(self, surface, widget, geo) -> None:
        box = widget.box
        rect = pygame.Rect(box.tuple())
        kind = widget.kind
        if kind == "fill":
            radius = 0 if widget.name in ("background", "status_bar", "nav_bar") or widget.name.startswith("banner") \
                else geo.gap
            pygame.draw.rect(surface, widget.fill, rect, border_radius=radius)
            if widget.border:
                pygame.draw.rect(surface, widget.border, rect, width=2, border_radius=radius)
        elif kind == "button":
            fill = widget.fill
            if widget.name == self._pressed:
                fill = tuple(int(c * 0.75) for c in fill)
            pygame.draw.rect(surface, fill, rect, border_radius=geo.gap)
            if widget.border:
                pygame.draw.rect(surface, widget.border, rect, width=2, border_radius=geo.gap)
            if widget.icon:
                self._draw_icon(surface, widget, rect)
            if widget.text:
                self._draw_text(surface, widget, box.inset(max(4, geo.gap), 2), geo)
        elif kind == "text":
            self._draw_text(surface, widget, box, geo)
        elif kind == "bar":
            pygame.draw.rect(surface, (255, 255, 255), rect, border_radius=geo.gap)
            filled = rect.copy()
            filled.width = int(rect.width * max(0.0, min(1.0, widget.value)))
            if filled.width:
                pygame.draw.rect(surface, widget.fill, filled, border_radius=geo.gap)
            pygame.draw.rect(surface, widget.border, rect, width=2, border_radius=geo.gap)

    def _draw_icon(self, surface, widget, rect) -> None:
        cx, cy = rect.center
        s = max(8, min(rect.width, rect.height) // 4)
        colour = widget.colour
        if widget.icon == "up":
            pygame.draw.polygon(surface, colour, [(cx - s, cy + s // 2), (cx + s, cy + s // 2), (cx, cy - s)])
        elif widget.icon == "down":
            pygame.draw.polygon(surface, colour, [(cx - s, cy - s // 2), (cx + s, cy - s // 2), (cx, cy + s)])
        elif widget.icon == "back":       # a backspace key: a tag pointing left with an x
            w = int(s * 1.6)
            points = [(cx - w, cy), (cx - w // 2, cy - s), (cx + w, cy - s), (cx + w, cy + s), (cx - w // 2, cy + s)]
            pygame.draw.polygon(surface, colour, points, width=3)
            d = s // 2
            pygame.draw.line(surface, colour, (cx - d + s // 3, cy - d), (cx + d + s // 3, cy + d), 3)
            pygame.draw.line(surface, colour, (cx - d + s // 3, cy + d), (cx + d + s // 3, cy - d), 3)

    def _draw_text(self, surface, widget, box, geo) -> None:
        if not widget.text or box.w <= 0 or box.h <= 0:
            return
        image, px = self._text_image(widget.text, geo.text[widget.role], widget.bold, widget.colour, box.w, box.h,
                                     widget.lines, widget.align)
        self.drawn.append((widget.name, widget.text, px))
        width, height = image.get_size()
        if widget.align == "left":
            x = box.x
        elif widget.align == "right":
            x = box.right - width
        else:
            x = box.x + (box.w - width) // 2
        y = box.y + (box.h - height) // 2
        clip = surface.get_clip()
        surface.set_clip(pygame.Rect(box.tuple()))      # text never spills out of its widget
        surface.blit(image, (x, y))
        surface.set_clip(clip)

    def _text_image(self, text: str, px: int, bold: bool, colour, width: int, height: int, lines: int = 1,
                    align: str = "center"):
        """Rendered text that fits ``width`` x ``height`` on at most ``lines``
        lines: smaller type first, then an ellipsis."""
        key = (text, px, bold, colour, width, height, lines, align)
        cached = self._text_cache.get(key)
        if cached is not None:
            self._text_cache.move_to_end(key)
            return cached
        size = max(MIN_TEXT, min(px, int(height / 1.2)))
        while True:
            font = self.fonts.get(size, bold)
            rows = [text] if lines == 1 else wrap(text, font, width)
            tall = len(rows) * font.get_linesize() if len(rows) > 1 else 0
            fits = len(rows) <= lines and tall <= height and all(font.size(r)[0] <= width for r in rows)
            if fits or size <= MIN_TEXT:
                break
            size = max(MIN_TEXT, int(size * 0.9))
        rows = rows[:lines]
        if len(rows) == lines and lines > 1 and len(wrap(text, font, width)) > lines:
            rows[-1] = rows[-1] + "…"
        rows = [ellipsize(r, font, width) for r in rows]
        if len(rows) == 1:
            image = font.render(rows[0], True, colour)
        else:
            images = [font.render(r, True, colour) for r in rows]
            step = font.get_linesize()
            image = pygame.Surface((max(i.get_width() for i in images), step * len(images)), pygame.SRCALPHA)
            for n, line in enumerate(images):
                x = {"left": 0, "right": image.get_width() - line.get_width()}.get(
                    align, (image.get_width() - line.get_width()) // 2)
                image.blit(line, (x, n * step))
        self._text_cache[key] = (image, size)
        self._text_cache_bytes += image.get_width() * image.get_height() * image.get_bytesize()
        while self._text_cache_bytes > TEXT_CACHE_BYTES and len(self._text_cache) > 1:
            _, (old, _) = self._text_cache.popitem(last=False)
            self._text_cache_bytes -= old.get_width() * old.get_height() * old.get_bytesize()
        return image, size

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
            if snapshot is not None and snapshot.seq >= seq and self._attention_seq >= seq:
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
        sale = self.ui.sale
        if sale is not None:
            if cancel_sale:
                sale.cancel.set()
            sale.answered.set()          # an unanswered offline offer is a "no": nothing read yet
        if self._sale_thread is not None:
            self._sale_thread.join(SALE_JOIN_SECONDS)
        self._chores.stop()
        if self in OPEN_DISPLAYS:
            OPEN_DISPLAYS.remove(self)
        pygame.display.quit()


def wrap(text: str, font, width: int) -> list[str]:
    """Break ``text`` into lines no wider than ``width``: at spaces, or between
    any two characters where there are none (Japanese)."""
    rows: list[str] = []
    line = ""
    for word in re.findall(r"\S+\s*", text):
        if font.size(line + word.rstrip())[0] <= width:
            line += word
            continue
        if line:
            rows.append(line.rstrip())
            line = ""
        while font.size(word.rstrip())[0] > width:      # a word (or a Japanese sentence) wider than a line
            low, high = 1, len(word)
            while low < high:
                mid = (low + high + 1) // 2
                if font.size(word[:mid])[0] <= width:
                    low = mid
                else:
                    high = mid - 1
            rows.append(word[:low])
            word = word[low:]
        line = word
    if line.strip():
        rows.append(line.rstrip())
    return rows or [""]


def ellipsize(text: str, font, width: int) -> str:
    if font.size(text)[0] <= width:
        return text
    low, high = 0, len(text)
    while low < high:             # the longest prefix that fits with the ellipsis
        mid = (low + high + 1) // 2
        if font.size(text[:mid].rstrip() + "…")[0] <= width:
            low = mid
        else:
            high = mid - 1
    return text[:low].rstrip() + "…"


class Chores(threading.Thread):
    """The one thread that reads the queue and writes "followed up" for the screen."""

    def __init__(self, display: TouchscreenDisplay):
        super().__init__(name="touchscreen-chores", daemon=True)
        self.display = display
        self.jobs: queue.Queue = queue.Queue()
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._queued = False
        self._attention = False
        self._last = 0.0
        self.requested = 0

    def run(self) -> None:
        while True:
            job = self.jobs.get()
            if job is None:
                return
            try:
                job()
            except Exception:
                log.exception("touchscreen: reading the queue failed")

    def submit(self, job) -> None:
        self.jobs.put(job)

    def stop(self) -> None:
        self.stopping.set()
        self.jobs.put(None)
        self.join(10)

    def refresh(self, attention: bool = False) -> int:
        """Read the queue again soon; many calls in a burst make one read.
        Returns a number the snapshot answering this request will carry."""
        with self._lock:
            self.requested += 1
            self._attention |= attention
            if self._queued:
                return self.requested
            self._queued = True
        self.jobs.put(self._refresh)
        return self.requested

    def _refresh(self) -> None:
        delay = self._last + REFRESH_GAP - time.monotonic()
        if delay > 0 and self.stopping.wait(delay):
            return
        with self._lock:
            self._queued = False
            attention, self._attention = self._attention, False
            seq = self.requested
        kiosk = self.display.kiosk
        snapshot = read_snapshot(kiosk)
        snapshot.seq = seq
        if attention:
            self.display.post("attention", (seq, kiosk.needs_attention()))
        self.display.post("snapshot", snapshot)
        self._last = time.monotonic()


def read_snapshot(kiosk) -> Snapshot:
    """Everything the status bar, Payments and Sync show, in one read (never on the UI thread)."""
    status = kiosk.status(check=False)
    return Snapshot(
        online=status["online"],
        pending=status["pending"]["count"],
        totals={code: entry["amount"] for code, entry in status["pending"]["by_currency"].items()},
        oldest_at=parse_iso(status["oldest_pending_at"]),
        last_sync_at=status["last_sync_at"],
        live=kiosk.live()[::-1],
        settled=kiosk.settled(SETTLED_SHOWN),
        problem=kiosk.problem,
        readiness=kiosk.last_readiness,
    )
