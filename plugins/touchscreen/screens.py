"""Each screen as a list of widgets: what to draw, where, and which are touch targets.

``build(ui, ...)`` turns the UI state and the last snapshot into widgets
placed by :mod:`.layout`; the display draws them in order and hit-tests its
touches against the buttons of the frame it last drew.  No pygame here, no
store reads, no I/O: building a frame is pure and cheap.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone, tzinfo

from kiosk import (APPROVED, APPROVED_OFFLINE, DECLINED, REFUSED, UNCONFIRMED, WINDOW_HOURS,
                   format_amount, short_time)

from .cart_actions import sale_goods, tip_choices
from .catalog import Catalog
from .keypad import EMAIL_ROWS, PHONE_ROWS
from .layout import MIN_TARGET, Box, Geometry, column, grid, row
from .state import MAIN_SCREENS, UiState

# Colours: dark text on light panels reads best in sunlight; state is never colour alone.
BACKGROUND = (244, 245, 247)
INK = (17, 20, 24)
MUTED = (88, 96, 105)
WHITE = (255, 255, 255)
STATUS_BAR = (34, 38, 43)
ONLINE = (27, 122, 52)
OFFLINE = (196, 40, 28)
UNKNOWN = (110, 116, 124)
PRIMARY = (25, 90, 180)
CHARGE = (24, 128, 56)
DANGER = (190, 36, 30)
KEY = (255, 255, 255)
KEY_BORDER = (196, 201, 208)
DISABLED = (200, 204, 210)
NAV = (226, 229, 233)
NAV_ACTIVE = (25, 90, 180)
PANEL = (255, 255, 255)
ATTENTION_ROW = (253, 236, 234)
TOAST = (21, 101, 192)
BANNER = {1: (255, 224, 130), 2: (255, 167, 38), 3: (198, 40, 40), "alert": (198, 40, 40),
          "font": (255, 236, 179)}
RESULT = {APPROVED: (27, 122, 52), APPROVED_OFFLINE: (0, 121, 107), DECLINED: (190, 36, 30),
          REFUSED: (214, 84, 0), UNCONFIRMED: (176, 112, 0)}
STATE_COLOUR = {"pending": (176, 112, 0), "forwarding": (25, 90, 180), "succeeded": (27, 122, 52),
                "failed": (190, 36, 30), "voided": (88, 96, 105)}


@dataclass
class Widget:
    kind: str                     # "fill", "text", "button", "bar"
    box: Box
    name: str = ""                # buttons: the action; others: a label for tests
    text: str = ""
    role: str = "body"            # text size: small, body, large, title, huge
    colour: tuple = INK
    fill: tuple | None = None
    align: str = "center"         # left, center, right
    bold: bool = False
    enabled: bool = True
    value: float = 0.0            # bars: 0..1
    icon: str = ""                # buttons drawn with a shape: up, down, back
    lines: int = 1                # text may wrap onto this many lines
    border: tuple | None = None

    @property
    def target(self) -> bool:
        return self.kind == "button"


class Scene:
    """Widgets of one frame, in drawing order."""

    def __init__(self, geometry: Geometry):
        self.geometry = geometry
        self.widgets: list[Widget] = []

    def add(self, kind: str, box: Box, **options) -> Widget:
        widget = Widget(kind, box, **options)
        self.widgets.append(widget)
        return widget

    def text(self, box: Box, text: str, **options) -> Widget:
        return self.add("text", box, text=text, **options)

    def button(self, box: Box, name: str, text: str = "", style: str = "primary", enabled: bool = True,
               **options) -> Widget:
        fill, colour, border = {
            "primary": (PRIMARY, WHITE, None), "charge": (CHARGE, WHITE, None),
            "danger": (DANGER, WHITE, None), "key": (KEY, INK, KEY_BORDER),
            "nav": (NAV, INK, None), "nav_active": (NAV_ACTIVE, WHITE, None),
            "light": (WHITE, INK, KEY_BORDER),
        }[style]
        if not enabled:
            fill, colour, border = DISABLED, MUTED, None
        options.setdefault("bold", True)
        return self.add("button", box, name=name, text=text, fill=fill, colour=colour, border=border,
                        enabled=enabled, **options)

    @property
    def targets(self) -> list[Widget]:
        return [w for w in self.widgets if w.target]


class Context:
    """What a frame is built from, besides the UI state."""

    def __init__(self, catalog: Catalog, currency: str, reminder_hours: list, font_note: bool,
                 online: bool | None, now: datetime | None = None, zone: tzinfo | None = None):
        self.t = catalog
        self.currency = currency
        self.reminder_hours = sorted(reminder_hours)
        self.font_note = font_note
        self.online = online
        self.now = now or datetime.now(timezone.utc)
        self.zone = zone or datetime.now().astimezone().tzinfo      # the kiosk's (KioskView.zone)

    def money(self, amount: int, currency: str | None = None) -> str:
        return format_amount(amount, currency or self.currency, self.t.locale)

    def card(self, payment) -> str:
        return f"{payment.card.brand} •••• {payment.card.last4}"

    def when(self, iso_text: str | None) -> str:
        """A stored time in the kiosk's zone: "14:03" today, "12/05 14:03" another day."""
        return short_time(iso_text, self.zone, self.now) or self.t("never")


# -- the frame around every screen ---------------------------------------------------

def reminder_level(ui: UiState, ctx: Context) -> tuple[int, str] | None:
    """Escalates with each configured reminder hour the oldest pending payment passes."""
    snap = ui.snapshot
    if snap is None or not snap.pending or snap.oldest_at is None or not ctx.reminder_hours:
        return None
    age = (ctx.now - snap.oldest_at).total_seconds() / 3600
    left = WINDOW_HOURS - age
    if left <= 0:
        return 3, ctx.t("remind_over")
    crossed = sum(1 for h in ctx.reminder_hours if age >= h)
    if not crossed:
        return None
    level = 3 if crossed == len(ctx.reminder_hours) else min(crossed, 2)
    return level, ctx.t(f"remind_{level}", n=snap.pending, left=ctx.t.age(left))


def banners(ui: UiState, ctx: Context) -> list[tuple]:
    """(kind, level, text) of every banner this frame shows, top first."""
    shown = []
    if ctx.font_note:
        shown.append(("font", "font", ctx.t("font_missing")))
    if ui.alerts:
        # one alert at a time, oldest first; declines are grouped (they share a screen)
        first = ui.alerts[0]
        declined = [a for a in ui.alerts if a.kind == "declined"]
        text = ctx.t("failure_many", n=len(declined)) if first.kind == "declined" and len(declined) > 1 \
            else first.text
        hidden = len(ui.alerts) - (len(declined) if first.kind == "declined" else 1)
        if hidden:
            text += f" (+{hidden})"
        shown.append(("alert", "alert", text))
    level = reminder_level(ui, ctx)
    if level is not None:
        shown.append(("reminder", level[0], level[1]))
    clock = clock_banner(ui, ctx)
    if clock is not None:
        shown.append(("clock", *clock))
    return shown


def clock_banner(ui: UiState, ctx: Context) -> tuple[int, str] | None:
    """The clock is not known to be right: the ages on screen may be short (kiosk/clock.py)."""
    clock = ui.snapshot.clock if ui.snapshot is not None else None
    if not clock or clock["trusted"]:
        return None
    if "behind" in clock["reasons"]:
        return 2, ctx.t("clock_behind", gap=ctx.t.age(clock["offset_seconds"] / 3600))
    if "ahead_of_stripe" in clock["reasons"]:
        return 2, ctx.t("clock_ahead", gap=ctx.t.age(-(clock["stripe_offset_seconds"] or 0.0) / 3600))
    return 1, ctx.t("clock_unchecked")


def build(ui: UiState, ctx: Context, size: tuple[int, int]) -> Scene:
    main = ui.screen in MAIN_SCREENS
    shown = banners(ui, ctx) if main else []
    geo = Geometry(size[0], size[1], banners=len(shown), nav=main)
    scene = Scene(geo)
    scene.add("fill", geo.screen, name="background", fill=BACKGROUND)
    status_bar(scene, ui, ctx)
    for box, (kind, level, text) in zip(geo.banners, shown):
        banner(scene, box, kind, level, text, ui, ctx)
    SCREENS[ui.screen](scene, ui, ctx)
    if main:
        nav_bar(scene, ui, ctx)
    if ui.toast:
        toast(scene, ui.toast)
    return scene


def status_bar(scene: Scene, ui: UiState, ctx: Context) -> None:
    geo, t = scene.geometry, ctx.t
    bar = geo.status
    scene.add("fill", bar, name="status_bar", fill=STATUS_BAR)
    inner = bar.inset(geo.gap, max(4, geo.gap // 2))
    pill_w = max(int(geo.u * 2.6), int(bar.w * 0.2))
    clock_w = int(geo.u * 1.6)
    pill, middle, clock = row(inner, [(pill_w, 0), (0, 1), (clock_w, 0)], geo.gap)
    online = ctx.online
    colour, words = {True: (ONLINE, t("online")), False: (OFFLINE, t("offline"))}.get(online, (UNKNOWN, t("checking")))
    scene.add("fill", pill, name="status_pill", fill=colour)
    scene.text(pill, f"● {words}", name="status_online", colour=WHITE, bold=True, role="body")
    snap = ui.snapshot
    parts = []
    if snap is not None and snap.key_problem and not online:
        parts.append(t(f"key_{snap.key_problem}"))     # a key to fix, not a signal to wait for
    if snap is not None:
        if snap.pending:
            parts.append(t("pending", n=snap.pending))
            if snap.oldest_at is not None:
                parts.append(t("oldest", age=t.age((ctx.now - snap.oldest_at).total_seconds() / 3600)))
        else:
            parts.append(t("all_sent"))
    done, total = ui.progress
    if total and done < total:
        parts.append(t("sending", done=done, total=total))
    scene.text(middle, " · ".join(parts), name="status_pending", colour=WHITE, role="body", align="left")
    scene.text(clock, short_time(ctx.now, ctx.zone, ctx.now), name="status_clock", colour=WHITE, role="body",
               align="right")


def banner(scene: Scene, box: Box, kind: str, level, text: str, ui: UiState, ctx: Context) -> None:
    geo = scene.geometry
    fill = BANNER[level]
    ink = WHITE if level in (3, "alert") else INK
    scene.add("fill", box, name=f"banner_{kind}", fill=fill)
    buttons = []
    if kind == "alert":
        if any(a.kind == "declined" for a in ui.alerts):
            buttons.append(("alert_view", ctx.t("view")))
        buttons.append(("alert_ok", ctx.t("ok")))
    text_box, button_boxes = geo.banner_buttons(box, len(buttons))
    scene.text(text_box, text, name=f"banner_{kind}_text", colour=ink, bold=True, role="body", align="left",
               lines=2)
    for button_box, (name, label) in zip(button_boxes, buttons):
        scene.button(button_box, name, label, style="light")


def nav_bar(scene: Scene, ui: UiState, ctx: Context) -> None:
    geo, t = scene.geometry, ctx.t
    scene.add("fill", geo.nav, name="nav_bar", fill=NAV)
    inner = Box(geo.gap, geo.nav.y + geo.gap // 2, geo.width - 2 * geo.gap, geo.u)
    count = len(ui.attention or [])
    labels = [("sale", t("nav_sale")), ("payments", t("nav_payments")), ("today", t("nav_today")),
              ("attention", t("nav_attention_n", n=count) if count else t("nav_attention")),
              ("sync", t("nav_sync"))]
    for box, (screen, label) in zip(row(inner, [(0, 1)] * len(labels), geo.gap), labels):
        style = "nav_active" if ui.screen == screen else "nav"
        if screen == "attention" and count and ui.screen != screen:
            style = "danger"
        scene.button(box, f"nav_{screen}", label, style=style)


def toast(scene: Scene, text: str) -> None:
    """Over the status bar's words (never over a touch target), for a few seconds."""
    geo = scene.geometry
    pill = scene.widgets[[w.name for w in scene.widgets].index("status_pill")].box
    bar = geo.status
    box = Box(pill.right + geo.gap, bar.y + 2, bar.right - pill.right - 2 * geo.gap, bar.h - 4)
    scene.add("fill", box, name="toast", fill=TOAST)
    scene.text(box.inset(geo.gap, 0), text, name="toast_text", colour=WHITE, role="body", bold=True)


# -- the screens -------------------------------------------------------------------

def sale_screen(scene: Scene, ui: UiState, ctx: Context) -> None:
    geo, t = scene.geometry, ctx.t
    u, gap, c = geo.u, geo.gap, geo.content
    info_h = geo.text["small"] + 10
    items = ui.quick_items
    wide = bool(items) and c.w >= 13 * u        # room for quick items, the amount and the keypad side by side
    items_box = toggle = receipt_row = None
    if geo.portrait:
        parts = column(c, [(u, 16), (info_h, 4), (u, 0)] + ([(2 * u, 40)] if items else []) + [(4 * u, 60), (u, 16)],
                       gap)
        amount_box, info, extras, pad, charge = parts[:3] + parts[-2:]
        items_box = parts[3] if items else None
    else:
        if wide:        # the cart and the receipt on rows of their own if they fit: the middle column is narrow
            items_box, left, pad = row(c, [(0, 42), (0, 26), (0, 32)], gap)
            if left.h >= 4 * (u + gap) + info_h:
                amount_box, info, extras, receipt_row, charge = column(
                    left, [(u, 30), (info_h, 20), (u, 0), (u, 0), (u, 40)], gap)
            else:
                amount_box, info, extras, charge = column(left, [(u, 40), (info_h, 16), (u, 10), (u, 40)], gap)
        else:
            left, pad = row(c, [(0, 46), (0, 54)], gap)
            if items and ui.pad == "items":           # narrow: the quick items take the keypad's place
                items_box, pad = pad, None
            amount_box, info, extras, bottom = column(left, [(u, 40), (info_h, 16), (u, 10), (u, 40)], gap)
            toggle, charge = row(bottom, [(int(u * 1.7), 0), (0, 1)], gap) if items else (None, bottom)
    amount_text, clear = row(amount_box, [(0, 1), (int(u * 1.7), 0)], gap)
    scene.add("fill", amount_text, name="amount_panel", fill=PANEL, border=KEY_BORDER)
    entry, cart = ui.entry, ui.cart
    in_cart = len(cart) if cart is not None else 0
    goods, _ = sale_goods(ui, "")
    shown = entry.minor if not entry.empty or not in_cart else goods     # what is typed, else the cart's total
    scene.text(amount_text.inset(gap), ctx.money(shown, entry.currency), name="amount", role="huge",
               bold=True, align="right")
    scene.button(clear, "clear", t("clear"), style="light", enabled=not entry.empty or bool(in_cart))
    if ui.sale_error:
        scene.text(info, ui.sale_error, name="sale_error", colour=DANGER, role="small", bold=True, lines=2)
    elif in_cart and not entry.empty:
        scene.text(info, t("typed_line", amount=ctx.money(entry.minor, entry.currency)), name="sale_hint",
                   colour=MUTED, role="small", lines=2)
    else:
        scene.text(info, t("items_hint" if items else "take_card_hint"), name="sale_hint", colour=MUTED,
                   role="small", lines=2)
    receipt_box = extras
    if items:
        cart_box, receipt_box = (extras, receipt_row) if receipt_row else row(extras, [(0, 55), (0, 45)], gap)
        label = t("cart_summary", n=in_cart, total=ctx.money(cart.total, entry.currency)) if in_cart \
            else t("cart_empty")
        scene.button(cart_box, "open_cart", label, style="light", enabled=bool(in_cart))
    scene.button(receipt_box, "receipt", ui.receipt_email or t("receipt_email"), style="light",
                 bold=bool(ui.receipt_email))
    if toggle is not None:
        scene.button(toggle, "pad_keypad" if ui.pad == "items" else "pad_items",
                     t("pad_keypad") if ui.pad == "items" else t("pad_items"), style="primary")
    if items_box is not None:
        quick_items_grid(scene, items_box, ui, ctx)
    if pad is not None:
        keypad(scene, pad, entry, gap)
    label = t("charge", amount=ctx.money(goods, entry.currency)) if goods else t("enter_amount")
    scene.button(charge, "charge", label, style="charge", enabled=bool(goods), role="large")


def keypad(scene: Scene, pad: Box, entry, gap: int, prefix: str = "key_") -> None:
    """The amount keypad's 4 x 3 keys in ``pad``, named ``<prefix><key>`` (the sale's, a refund's)."""
    keys = entry.keys()
    for i, line in enumerate(grid(pad, 4, 3, gap)):
        for j, box in enumerate(line):
            key = keys[i * 3 + j]
            if key == "back":
                scene.button(box, f"{prefix}back", style="key", icon="back")
            else:
                scene.button(box, f"{prefix}{key}", key, style="key", role="large")


def quick_items_grid(scene: Scene, box: Box, ui: UiState, ctx: Context) -> None:
    """The quick items as buttons (name, price, how many in the cart), a page at a time."""
    geo = scene.geometry
    u, gap = geo.u, geo.gap
    items = ui.quick_items
    cell_w, cell_h = int(u * 1.8), u

    def fits(area: Box) -> tuple[int, int]:
        return max(1, (area.w + gap) // (cell_w + gap)), max(1, (area.h + gap) // (cell_h + gap))

    cols, rows = fits(box)
    pager = None
    if len(items) > cols * rows:                # more than one page: up/down under them
        box, pager = column(box, [(0, 1), (u, 0)], gap)
        cols, rows = fits(box)
    rows = min(rows, max(3, -(-len(items) // cols)))      # a few items: taller buttons, not empty rows
    page = cols * rows
    offset = clamp_scroll(ui, "items", page, len(items))
    counts = {line.item.name: line.quantity for line in ui.cart.lines()} if ui.cart is not None else {}
    cells = [cell for line in grid(box, rows, cols, gap) for cell in line]
    for index, (cell, item) in enumerate(zip(cells, items[offset:offset + page]), start=offset):
        count = counts.get(item.name, 0)
        scene.button(cell, f"item:{index}", style="primary" if count else "light")
        ink = WHITE if count else INK
        name_box, price_box = column(cell.inset(max(4, gap // 2), 2), [(0, 55), (0, 45)], 0)
        scene.text(name_box, item.name, name="quick_item", colour=ink, bold=True, role="body")
        price = ctx.money(item.price, item.currency)
        scene.text(price_box, f"{price}  × {count}" if count else price, name="quick_item_price", colour=ink,
                   role="small")
    if pager is not None:
        up, down = row(pager, [(0, 1), (0, 1)], gap)
        scene.button(up, "items_up", style="light", icon="up", enabled=offset > 0)
        scene.button(down, "items_down", style="light", icon="down", enabled=offset + page < len(items))


def cart_screen(scene: Scene, ui: UiState, ctx: Context) -> None:
    """The cart's lines: quantity with - and +, remove, each line's total and the sale's."""
    geo, t = scene.geometry, ctx.t
    u, gap = geo.u, geo.gap
    header, body, bottom = column(geo.content, [(geo.text["body"] + 10, 0), (0, 1), (int(u * 1.2), 0)], gap)
    goods, _ = sale_goods(ui, "")
    currency = ui.entry.currency
    title, total = row(header, [(0, 62), (0, 38)], gap)
    if ui.sale_error:
        scene.text(title, ui.sale_error, name="sale_error", role="small", bold=True, align="left", colour=DANGER,
                   lines=2)
    else:
        scene.text(title, t("cart_title"), role="body", bold=True, align="left")
    scene.text(total, t("cart_total", total=ctx.money(goods, currency)), name="cart_total", role="body",
               bold=True, align="right")
    listing, side = row(body, [(0, 1), (int(u * 1.3), 0)], gap)
    lines = ui.cart.lines() if ui.cart is not None else []
    if not ui.entry.empty:              # the typed amount, a line of its own (changed on the keypad)
        lines = lines + [None]
    row_h = u + gap
    page = max(1, (listing.h + gap) // row_h)
    offset = clamp_scroll(ui, "cart", page, len(lines))
    for i, line in enumerate(lines[offset:offset + page]):
        index = offset + i
        box = Box(listing.x, listing.y + i * row_h, listing.w, u)
        scene.add("fill", box, name="cart_line", fill=PANEL if i % 2 == 0 else BACKGROUND)
        name_box, total_box, minus, quantity, plus, remove = row(
            box, [(0, 62), (0, 38), (u, 0), (int(u * 0.9), 0), (u, 0), (u, 0)], gap)
        if line is None:
            scene.text(name_box.inset(gap // 2, 0), t("custom_item"), align="left", name="cart_line_name")
            scene.text(total_box, ctx.money(ui.entry.minor, currency), align="right", bold=True)
            continue
        scene.text(name_box.inset(gap // 2, 0), line.item.name, align="left", name="cart_line_name")
        scene.text(total_box, ctx.money(line.total, currency), align="right", bold=True, name="cart_line_total")
        scene.button(minus, f"line_minus:{index}", "−", style="key", role="large")
        scene.text(quantity, str(line.quantity), name="cart_line_quantity", role="large", bold=True)
        scene.button(plus, f"line_plus:{index}", "+", style="key", role="large")
        scene.button(remove, f"line_remove:{index}", "×", style="danger", role="large")
    _page_buttons(scene, side, "cart", offset, page, len(lines))
    back, charge = row(bottom, [(0, 35), (0, 65)], gap)
    scene.button(back, "cart_back", t("sale_back"), style="light", role="large")
    scene.button(charge, "charge", t("charge", amount=ctx.money(goods, currency)), style="charge",
                 enabled=bool(goods), role="large")


def tip_screen(scene: Scene, ui: UiState, ctx: Context) -> None:
    """After Charge: no tip, or one of ``[kiosk] tips`` with what it comes to."""
    geo, t = scene.geometry, ctx.t
    u, gap = geo.u, geo.gap
    title, amount_box, options, _, bottom = column(
        geo.content, [(geo.text["title"] + 8, 10), (u, 20), (int(u * 1.6), 40), (0, 4), (int(u * 1.2), 0)], gap)
    goods, _ = sale_goods(ui, "")
    currency = ui.entry.currency
    scene.text(title, t("tip_title"), name="tip_title", role="title", bold=True)
    scene.text(amount_box, ctx.money(goods, currency), name="amount", role="huge", bold=True)
    choices = [(0, 0)] + tip_choices(ui, goods)
    per_row = len(choices) if options.w // len(choices) >= int(u * 1.8) else (len(choices) + 1) // 2
    lines = -(-len(choices) // per_row)
    cells = [cell for line in grid(options, lines, per_row, gap) for cell in line]
    for cell, (percent, tip) in zip(cells, choices):
        scene.button(cell, f"tip:{percent}", style="primary" if percent else "light")
        ink = WHITE if percent else INK
        top, below = column(cell.inset(max(4, gap // 2), 2), [(0, 55), (0, 45)], 0)
        scene.text(top, f"{percent}%" if percent else t("no_tip"), name="tip_choice", colour=ink, bold=True,
                   role="large")
        scene.text(below, f"+{ctx.money(tip, currency)}" if percent else ctx.money(goods, currency),
                   name="tip_amount", colour=ink, role="body")
    _, button, _ = row(bottom, [(0, 1), (max(u * 3, int(bottom.w * 0.5)), 0), (0, 1)], gap)
    scene.button(button, "tip_back", t("sale_back"), style="light", role="large")


def present_card_screen(scene: Scene, ui: UiState, ctx: Context) -> None:
    geo, t = scene.geometry, ctx.t
    u, gap = geo.u, geo.gap
    sale = ui.sale
    title, amount, hint, waiting, _, bottom = column(
        geo.content, [(geo.text["title"] + 8, 14), (u, 30), (geo.text["body"] + 8, 10),
                      (geo.text["body"] + 8, 10), (0, 6), (int(u * 1.2), 0)], gap)
    scene.text(title, t("present_title"), name="present_title", role="title", bold=True)
    if sale is not None:
        scene.text(amount, ctx.money(sale.amount + sale.tip, sale.currency), name="amount", role="huge", bold=True)
    scene.text(hint, t("present_hint"), colour=MUTED)
    scene.text(waiting, t("present_offline") if sale is not None and sale.offline else t("present_waiting"),
               name="present_waiting", colour=MUTED)
    cancelling = sale is not None and sale.cancel.is_set()
    _, button, _ = row(bottom, [(0, 1), (max(u * 3, int(bottom.w * 0.5)), 0), (0, 1)], gap)
    scene.button(button, "cancel_sale", t("cancelling") if cancelling else t("cancel"), style="danger",
                 enabled=not cancelling, role="large")


def confirm_screen(scene: Scene, ui: UiState, ctx: Context) -> None:
    geo, t = scene.geometry, ctx.t
    u, gap = geo.u, geo.gap
    offer = ui.sale.offer if ui.sale is not None else None
    title, amount, risk, left, per_sale, contact, buttons = column(
        geo.content, [(geo.text["body"] + 10, 8), (u, 24), (geo.text["small"] + 8, 10),
                      (geo.text["body"] + 8, 8), (geo.text["small"] + 8, 4), (u, 0), (int(u * 1.2), 4)], gap)
    because = getattr(offer, "because", "unreachable")
    title_key = f"confirm_title_{because}" if t.has(f"confirm_title_{because}") else "confirm_title"
    scene.text(title, t(title_key), name="confirm_title", role="large", bold=True, colour=OFFLINE)
    if offer is not None:
        scene.text(amount, ctx.money(offer.amount, offer.currency), name="amount", role="huge", bold=True)
        limits, stored = offer.limits, offer.stored
        scene.text(left, t("limit_left", left=ctx.money(max(0, limits.total - stored.amount), offer.currency),
                           total=ctx.money(limits.total, offer.currency)), name="limit_left", bold=True)
        repeats = getattr(offer, "same_card", 0)
        if repeats:     # asked again once the card is read: it already has offline sales waiting
            scene.text(per_sale, t("same_card_warning", n=repeats, max=offer.same_card_max),
                       name="same_card_warning", colour=DANGER, role="small", bold=True)
        else:
            scene.text(per_sale, t("per_sale", amount=ctx.money(limits.per_transaction, offer.currency)),
                       colour=MUTED, role="small")
    scene.text(risk, t("risk_note"), name="risk_note", role="small", colour=INK, lines=2)
    label, field = row(contact, [(0, 45), (0, 55)], gap)
    scene.text(label, t("contact_label"), align="left", role="body")
    scene.button(field, "contact", ui.contact or t("contact_add"), style="light", bold=bool(ui.contact))
    cancel, confirm = row(buttons, [(0, 40), (0, 60)], gap)
    scene.button(cancel, "offline_cancel", t("cancel"), style="danger", role="large")
    scene.button(confirm, "offline_confirm", t("confirm"), style="charge", role="large")


def contact_screen(scene: Scene, ui: UiState, ctx: Context) -> None:
    geo, t = scene.geometry, ctx.t
    u, gap = geo.u, geo.gap
    title, field, error, keyboard = column(
        geo.content, [(geo.text["body"] + 8, 4), (u, 6), (geo.text["small"] + 6, 2), (5 * u, 88)], gap)
    receipt = ui.contact_for == "receipt"
    scene.text(title, t("receipt_title" if receipt else "contact_title"), role="body", bold=True)
    scene.add("fill", field, name="contact_field", fill=PANEL, border=PRIMARY)
    scene.text(field.inset(gap), ui.contact + "|", name="contact_text", role="large", align="left")
    if ui.contact_error:
        scene.text(error, ui.contact_error, name="contact_error", colour=DANGER, role="small", bold=True)
    elif receipt:       # when Stripe sends it: offline, not before the sale is forwarded
        scene.text(error, t("receipt_note"), name="receipt_note", colour=MUTED, role="small")
    rows = EMAIL_ROWS if ui.contact_mode == "email" else PHONE_ROWS
    lines = column(keyboard, [(0, 1)] * (len(rows) + 1), gap)
    for line, keys in zip(lines, rows):
        for box, key in zip(row(line, [(0, 1)] * len(keys), gap), keys):
            scene.button(box, f"type_{key}", key, style="key", role="large", bold=False)
    mode_label = t("mode_123") if ui.contact_mode == "email" else t("mode_abc")
    actions = [("contact_mode", mode_label, "light", 1.0)]
    if ui.contact_mode == "email":
        actions.append(("type_.com", ".com", "key", 1.2))
    actions += [("contact_back", "", "key", 1.0), ("contact_clear", t("clear"), "light", 1.2),
                ("contact_done", t("done"), "charge", 1.6)]
    for box, (name, label, style, _) in zip(row(lines[-1], [(0, a[3]) for a in actions], gap), actions):
        scene.button(box, name, label, style=style, icon="back" if name == "contact_back" else "")


def result_screen(scene: Scene, ui: UiState, ctx: Context) -> None:
    geo, t = scene.geometry, ctx.t
    u, gap = geo.u, geo.gap
    result = ui.result
    headline, amount, summary, detail, detail2, _, bottom = column(
        geo.content, [(u, 30), (geo.text["large"] + 8, 14), (geo.text["small"] + 6, 4), (geo.text["body"] + 8, 10),
                      (geo.text["body"] + 8, 10), (0, 4), (int(u * 1.2), 0)], gap)
    status = result.status if result is not None else APPROVED
    scene.add("fill", headline, name="result_panel", fill=RESULT.get(status, UNKNOWN))
    scene.text(headline.inset(gap), t(f"result_{status}"), name="result_title", role="huge", bold=True,
               colour=WHITE)
    payment = result.payment if result is not None else None
    money = ctx.money(*ui.result_amount) if ui.result_amount else ""
    scene.text(amount, f"{money}  {ctx.card(payment)}" if payment else money, name="result_amount",
               role="large", bold=True)
    if payment is not None and (payment.items or payment.tip):
        scene.text(summary, sale_summary(payment, ctx), name="result_summary", colour=MUTED, role="small")
    lines = result_lines(result, ctx)
    if payment is not None and payment.receipt_email and status in (APPROVED, APPROVED_OFFLINE):
        note = "receipt_after_forward" if status == APPROVED_OFFLINE else "receipt_on_success"
        lines.append((t(note, email=payment.receipt_email), MUTED))
    for box, (text, colour) in zip((detail, detail2), lines):
        scene.text(box, text, name="result_detail", colour=colour, lines=2)
    _, button, _ = row(bottom, [(0, 1), (max(u * 3, int(bottom.w * 0.5)), 0), (0, 1)], gap)
    scene.button(button, "new_sale", t("new_sale"), role="large")


def sale_summary(payment, ctx: Context) -> str:
    """"3 items · tip $3.60": what the result screen says beside the amount."""
    parts = []
    if payment.items:
        parts.append(ctx.t("items_count", n=sum(entry["quantity"] for entry in payment.items)))
    if payment.tip:
        parts.append(ctx.t("tip_line", tip=ctx.money(payment.tip, payment.currency)))
    return " · ".join(parts)


def result_lines(result, ctx: Context) -> list[tuple[str, tuple]]:
    """One or two lines saying why, in the vendor's language."""
    if result is None:
        return []
    t, payment = ctx.t, result.payment
    if result.disk and result.status != DECLINED:
        # the kiosk's disk refused a write: how far the sale got ("charged at Stripe — do not charge again")
        return [(result.message[:1].upper() + result.message[1:] if t.language == "en"
                 else t(f"disk_{result.disk}"), DANGER)]
    if result.status == APPROVED_OFFLINE:
        return [(t("result_offline_note"), INK)]
    if result.status == DECLINED and payment is not None:
        lines = [(t.decline(payment.decline_code, payment.message), DANGER)]
        if t.language == "en" and payment.message:
            lines.append((payment.message, MUTED))
        return lines
    if result.status == REFUSED:
        if result.message.startswith("reader: "):
            return [(t("refused_reader", detail=result.message[len("reader: "):]), DANGER)]
        if t.language == "en":
            return [(result.message[:1].upper() + result.message[1:], DANGER)]
        key = f"limit_{result.limit}" if result.limit else (
            ("limit_online_only_key" if "API key" in result.message else "limit_online_only")
            if "online sales only" in result.message else None)
        return [(t(key), DANGER)] if key and key in t.table else [(result.message, DANGER)]
    if result.status == UNCONFIRMED:
        return [(t("result_unconfirmed_note"), INK)]
    return []


def _page_buttons(scene: Scene, box: Box, name: str, offset: int, page: int, total: int) -> None:
    up, down = column(box, [(0, 1), (0, 1)], scene.geometry.gap)
    scene.button(up, f"{name}_up", style="light", icon="up", enabled=offset > 0)
    scene.button(down, f"{name}_down", style="light", icon="down", enabled=offset + page < total)


def clamp_scroll(ui: UiState, name: str, page: int, total: int) -> int:
    offset = max(0, min(ui.scroll.get(name, 0), max(0, total - page)))
    ui.scroll[name] = offset
    return offset


def payments_screen(scene: Scene, ui: UiState, ctx: Context) -> None:
    geo, t = scene.geometry, ctx.t
    gap = geo.gap
    snap = ui.snapshot
    payments = (snap.live + snap.settled) if snap is not None else []
    listing, side = row(geo.content, [(0, 1), (int(geo.u * 1.3), 0)], gap)
    header_h = geo.text["body"] + 10
    header, rows_box = column(listing, [(header_h, 0), (0, 1)], gap)
    scene.text(header, t("payments_title"), role="body", bold=True, align="left")
    two_lines = geo.portrait          # narrow rows: amount and state above, time and card below
    row_h = int(geo.text["body"] * 1.45 + geo.text["small"] * 1.45) + gap if two_lines \
        else max(MIN_TARGET + 2, int(geo.text["body"] * 1.8))      # a row is a touch target
    page = max(1, rows_box.h // row_h)
    offset = clamp_scroll(ui, "payments", page, len(payments))
    scene.text(header, t("payments_count", n=len(payments)), role="small", colour=MUTED, align="right")
    if not payments:
        scene.text(rows_box, t("no_payments"), colour=MUTED, name="payments_empty")
    for i, payment in enumerate(payments[offset:offset + page]):
        line = Box(rows_box.x, rows_box.y + i * row_h, rows_box.w, row_h - 2)
        shade = PANEL if i % 2 == 0 else BACKGROUND
        scene.add("fill", line, name="payment_row", fill=shade)
        scene.add("button", line, name=f"payment:{payment.id}", fill=shade)     # opens it: money_screens.py
        inner = line.inset(gap // 2, 0)
        if two_lines:
            top, bottom = column(inner, [(0, 55), (0, 45)], 0)
            amount, state = row(top, [(0, 55), (0, 45)], gap)
            when, card = row(bottom, [(0, 40), (0, 60)], gap)
        else:
            when, amount, card, state = row(inner, [(0, 18), (0, 28), (0, 30), (0, 24)], gap)
        scene.text(when, ctx.when(payment.created_at), align="left", role="small", colour=MUTED)
        money = ctx.money(payment.amount, payment.currency)
        scene.text(amount, t("refund_row", amount=money) if payment.is_refund else money,
                   align="left" if two_lines else "right",
                   bold=True)
        scene.text(card, ctx.card(payment), align="right" if two_lines else "left", role="small")
        scene.text(state, t(f"state_{payment.state}"), name=f"state_{payment.state}",
                   align="right" if two_lines else "left", bold=True, colour=STATE_COLOUR.get(payment.state, INK))
    _page_buttons(scene, side, "payments", offset, page, len(payments))


def attention_screen(scene: Scene, ui: UiState, ctx: Context) -> None:
    geo, t = scene.geometry, ctx.t
    u, gap = geo.u, geo.gap
    failed = ui.attention or []
    listing, side = row(geo.content, [(0, 1), (int(u * 1.3), 0)], gap)
    header, rows_box = column(listing, [(geo.text["body"] + 10, 0), (0, 1)], gap)
    scene.text(header, t("attention_title"), role="body", bold=True, align="left")
    row_h = max(u + 2 * gap, int(geo.text["body"] * 1.5 + geo.text["small"] * 2.6) + gap)
    page = max(1, rows_box.h // row_h)
    offset = clamp_scroll(ui, "attention", page, len(failed))
    if not failed:
        scene.text(rows_box, t("nothing_attention"), colour=MUTED, name="attention_empty")
    for i, payment in enumerate(failed[offset:offset + page]):
        line = Box(rows_box.x, rows_box.y + i * row_h, rows_box.w, row_h - gap)
        scene.add("fill", line, name="attention_row", fill=ATTENTION_ROW)
        words, button = row(line.inset(gap // 2), [(0, 1), (max(int(u * 2.4), int(line.w * 0.24)), 0)], gap)
        top, middle, bottom = column(words, [(0, 36), (0, 32), (0, 32)], 0)
        head = f"{ctx.money(payment.amount, payment.currency)}   {ctx.card(payment)}   {ctx.when(payment.created_at)}"
        scene.text(top, head, align="left", bold=True, name="attention_head")
        reason = t.decline(payment.decline_code, payment.message)
        if t.language == "en" and payment.message and payment.decline_code:
            reason = f"{reason}: {payment.message}"
        if not payment.offline:
            reason = f"{reason} ({t('online_lost')})"
        scene.text(middle, reason, align="left", role="small", name="attention_reason", colour=DANGER)
        contact = t("customer", contact=payment.customer) if payment.customer else t("no_contact")
        scene.text(bottom, contact, align="left", role="small", name="attention_contact", bold=bool(payment.customer))
        busy = payment.id in ui.following
        scene.button(button, f"followed_up:{payment.id}", t("followed_up"), enabled=not busy)
    _page_buttons(scene, side, "attention", offset, page, len(failed))


def sync_screen(scene: Scene, ui: UiState, ctx: Context) -> None:
    geo, t = scene.geometry, ctx.t
    u, gap = geo.u, geo.gap
    snap = ui.snapshot
    body = geo.text["body"] + 8
    state, waiting, window, last, ready, progress_text, bar, _, bottom = column(
        geo.content, [(geo.text["large"] + 8, 8), (body, 6), (body, 6), (body, 6), (body, 6), (body, 6),
                      (max(24, u // 2), 4), (0, 2), (int(u * 1.2), 0)], gap)
    online = ctx.online
    words = {True: t("online"), False: t("offline")}.get(online, t("checking"))
    colour = {True: ONLINE, False: OFFLINE}.get(online, UNKNOWN)
    problem = t(f"key_{snap.key_problem}") if snap and snap.key_problem and not online else snap and snap.problem
    scene.text(state, f"● {words}" + (f" — {problem}" if problem else ""),
               name="sync_state", role="large", bold=True, colour=colour, align="left")
    if snap is not None:
        if snap.pending:
            totals = ", ".join(ctx.money(amount, code) for code, amount in sorted(snap.totals.items()))
            scene.text(waiting, t("waiting_line", n=snap.pending, totals=totals), align="left", name="sync_waiting")
            if snap.oldest_at is not None:
                left = WINDOW_HOURS - (ctx.now - snap.oldest_at).total_seconds() / 3600
                scene.text(window, t("window_left", left=t.age(max(0.0, left))), align="left",
                           colour=DANGER if left < 2 else INK)
        else:
            scene.text(waiting, t("nothing_waiting"), align="left", name="sync_waiting")
        scene.text(last, t("last_sync", when=ctx.when(snap.last_sync_at)), align="left", colour=MUTED)
        if snap.readiness:
            blocked = next((line for line in snap.readiness if not line.ok), None)
            if blocked is None:
                scene.text(ready, t("ready_offline"), align="left", name="sync_ready", colour=ONLINE, bold=True)
            else:
                name = "key_rejected" if blocked.name == "stripe" and snap.key_problem == "rejected" else blocked.name
                reason = t(f"ready_{name}") if t.has(f"ready_{name}") else blocked.detail
                scene.text(ready, t("not_ready_offline", reason=reason), align="left", name="sync_ready",
                           colour=DANGER, bold=True)
    done, total = ui.progress
    if total and done < total:
        label = t("sync_progress", done=done, total=total)
    elif total:
        label = t("sync_finished", total=total)
    else:
        label = t("sync_idle")
    scene.text(progress_text, label, name="sync_progress", align="left", bold=True)
    scene.add("bar", bar, name="sync_bar", value=(done / total) if total else 0.0, fill=PRIMARY,
              border=KEY_BORDER)
    _, button, _ = row(bottom, [(0, 1), (max(u * 3, int(bottom.w * 0.5)), 0), (0, 1)], gap)
    scene.button(button, "sync_now", t("sync_now"), role="large")


SCREENS = {
    "sale": sale_screen,
    "present_card": present_card_screen,
    "confirm_offline": confirm_screen,
    "contact": contact_screen,
    "result": result_screen,
    "cart": cart_screen,
    "tip": tip_screen,
    "payments": payments_screen,
    "attention": attention_screen,
    "sync": sync_screen,
}

# one payment's screens (void, refund, reprint) and Today: they add themselves to SCREENS
from . import money_screens  # noqa: E402,F401
