"""``kiosk screenshot``: draw any screen headless, with realistic sample data.

The sample data is made by the real engine: a throw-away kiosk in a
temporary directory takes sales against a :class:`kiosk.testing.fake_stripe.FakeStripe`
on 127.0.0.1 (online, offline, one declined when forwarded), so every screen
shows what a vendor would see.  It never touches the user's data directory
or Stripe, and it always uses SDL's dummy video driver.
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path

from kiosk import hookimpl

SCREENS = ("sale", "present_card", "confirm_offline", "contact", "result_approved", "result_approved_offline",
           "result_declined", "result_refused", "result_unconfirmed", "payments", "attention", "sync",
           "sale_items", "cart", "tip", "result_items", "payment_detail", "refund", "today")
ITEM_SCREENS = ("sale_items", "cart", "tip", "result_items")   # with the sample stall's quick items and tips
MONEY_SCREENS = ("payment_detail", "refund", "today")  # the morning's online sale, part refunded; the day
# Zones to draw Today in: the first where the whole sample morning (the last 14 h 20 min) falls on one day.
TODAY_ZONES = ("America/New_York", "Europe/London", "Asia/Tokyo", "America/Los_Angeles", "Pacific/Auckland",
               "Pacific/Honolulu")
FAKE_KEY = "sk_test_screenshot_" + "0" * 16      # a made-up key for the local fake only

# Amounts typed by the sample vendor, per currency digits (USD-like / JPY-like).
SAMPLE = {
    2: {"typed": "12.50", "sales": [("visa", "8.00", None), ("mastercard", "23.50", None),
                                    ("insufficient_funds", "15.00", "+1 555 0100")],
        "later": [("amex", "4.50"), ("visa", "12.00"), ("mastercard", "6.25")], "contact": "+1 555 0142"},
    0: {"typed": "1200", "sales": [("visa", "800", None), ("mastercard", "2350", None),
                                   ("insufficient_funds", "1500", "090-1234-5678")],
        "later": [("amex", "450"), ("visa", "1200"), ("mastercard", "620")], "contact": "090-5555-0142"},
}
# The sample stall's quick items (name, price in the currency's units) and tips, per language.
SAMPLE_ITEMS = {
    "en": [("Coffee", "3.50"), ("Tea", "3.00"), ("Croissant", "2.75"), ("Cinnamon bun", "3.25"),
           ("Orange juice", "4.00"), ("Cookie", "1.50"), ("Sandwich", "6.50"), ("Water", "1.00"),
           ("Granola bar", "2.00"), ("Muffin", "2.50"), ("Bagel", "2.25"), ("Smoothie", "5.50"),
           ("Hot chocolate", "3.75"), ("Soup", "5.00")],
    "ja": [("コーヒー", "450"), ("紅茶", "400"), ("クロワッサン", "350"), ("あんパン", "280"),
           ("オレンジジュース", "500"), ("クッキー", "200"), ("サンドイッチ", "650"), ("水", "150"),
           ("おにぎり", "180"), ("マフィン", "300"), ("ベーグル", "320"), ("スムージー", "600"),
           ("ココア", "420"), ("スープ", "550")],
}
SAMPLE_TIPS = [10, 15, 20]
SAMPLE_CART = ((0, 2), (2, 1), (4, 1))        # (item, taps): two coffees, a croissant, a juice


class ScreenshotError(ValueError):
    """A bad screen name or size; ``str()`` is one line."""


def check_request(screen: str, size: str | None) -> tuple[int, int] | None:
    if screen not in SCREENS:
        raise ScreenshotError(f"unknown screen {screen!r} (choose from: {', '.join(SCREENS)})")
    if size is None:
        return None
    width, sep, height = size.lower().partition("x")
    if not (sep and width.isdigit() and height.isdigit()):
        raise ScreenshotError(f"size {size!r} must look like 800x480")
    if not (320 <= int(width) <= 7680 and 240 <= int(height) <= 7680):
        raise ScreenshotError(f"size {size!r} is out of range (320x240 to 7680x7680)")
    return int(width), int(height)


def _sample_config(directory: Path, language: str, items: bool = False) -> Path:
    currency = "jpy" if language == "ja" else "usd"
    text = (f'[kiosk]\nid = "market-stall-1"\ncurrency = "{currency}"\nlanguage = "{language}"\n'
            + (f'tips = {SAMPLE_TIPS}\n' if items else '')
            + '[limits]\nper_transaction = 100.0\ntotal = 500.0\n'
            '[limits.currencies.jpy]\nper_transaction = 15000\ntotal = 75000\n')
    if items:
        text += "".join(f'[[catalog.items]]\nname = "{name}"\nprice = "{price}"\n'
                        for name, price in SAMPLE_ITEMS[language])
    path = directory / "config.toml"
    path.write_text(text)
    return path


class _ShiftedClock:
    def __init__(self):
        self.offset = timedelta(0)

    def __call__(self):
        from kiosk import utcnow
        return utcnow() - self.offset


def command():
    """``kiosk screenshot``, added to the CLI through ``kiosk_commands``."""
    from kiosk import Command
    return Command("screenshot", "draw a touchscreen screen with sample data to a PNG (headless)",
                   run=_run_command, arguments=_arguments)


def _arguments(parser) -> None:
    parser.add_argument("screen", help=", ".join(SCREENS[:-2]) + f", {SCREENS[-2]} or {SCREENS[-1]}")
    parser.add_argument("--out", required=True, help="PNG file to write")
    parser.add_argument("--lang", choices=("en", "ja"), help="language (default: [kiosk] language)")
    parser.add_argument("--size", help="WIDTHxHEIGHT (default: [display.touchscreen] size)")


def _run_command(args) -> int:
    from kiosk import CommandError
    try:
        check_request(args.screen, args.size)
    except ScreenshotError as exc:
        raise CommandError(str(exc)) from None
    config = Path(args.config)
    if not config.exists():
        if args.config_given:
            raise CommandError(f"{config}: no such configuration file")
        config = None           # no config here: the built-in sample stall
    out = take_screenshot(args.screen, Path(args.out), language=args.lang, size=args.size, config=config)
    print(f"wrote {out}")
    return 0


class _LoseAnswers:
    """A plugin handed to the screenshot's own kiosk at open: while armed,
    Stripe takes the next sale's charge but its answer and the look-up after
    it are lost (an "unconfirmed" result to draw)."""

    def __init__(self, fake):
        self.fake, self.armed = fake, False

    @hookimpl
    def kiosk_payment_changed(self, payment, previous_state):
        if self.armed and previous_state is None:
            self.fake.fail_next(2, 500)


def take_screenshot(screen: str, out: Path, language: str | None = None, size: str | None = None,
                    config: Path | None = None) -> Path:
    """Draw ``screen`` and write it to ``out`` (PNG).  Returns ``out``."""
    from kiosk import opened_kiosk
    from kiosk.testing.fake_stripe import FakeStripe
    from . import SETTINGS
    window = check_request(screen, size)
    notice_log = logging.getLogger("kiosk.notice")
    notice_level = notice_log.level
    notice_log.setLevel(logging.CRITICAL)          # the sample day's notices are not news
    os.environ["SDL_VIDEODRIVER"] = "dummy"     # forced: a screenshot never opens a window
    os.environ["SDL_AUDIODRIVER"] = "dummy"

    work = Path(tempfile.mkdtemp(prefix="kiosk-screenshot-"))
    saved_key = os.environ.get("STRIPE_API_KEY")
    os.environ["STRIPE_API_KEY"] = FAKE_KEY                  # this process only, for the local fake
    fake = FakeStripe(rate_limit=None).start()
    lose_answers = _LoseAnswers(fake)
    display = None
    try:
        sample_config = config is None
        if config is None:
            config = _sample_config(work, language or "en", items=screen in ITEM_SCREENS)
        overrides = {"storage": {"path": str(work / "data"), "use": "tinydb"},
                     "reader": {"use": "simulated"}, "reader.simulated": {"mode": "chip", "delay_seconds": 0.0},
                     "sync": {"use": "stripe", "retry_base_seconds": 0.0},
                     "stripe": {"api_base": fake.url, "api_key_file": "", "max_network_retries": 0,
                                "reachability_timeout": 1.0, "concurrency": 1, "max_requests_per_second": 0.0},
                     "notifier": {"use": ["feed"]}, "display": {"use": "touchscreen"}}
        if language:
            overrides["kiosk"] = {"language": language}
        if screen == "today" and sample_config:
            overrides.setdefault("kiosk", {})["timezone"] = _zone_for_today(language or "en")
        clock = _ShiftedClock()
        clock.offset = timedelta(hours=14, minutes=20)   # the sample day starts before the kiosk opens:
        fake.clock = lambda: clock().timestamp()      # its clock only moves on, and Stripe's keeps it
        with opened_kiosk(Path(config), create=True, overrides=overrides, clock=clock,
                          plugins={"screenshot-lose-answers": lose_answers}) as kiosk:
            sample = _fill(kiosk, fake, clock)
            from .display import TouchscreenDisplay, parse_size
            settings = {section: dict(kiosk.config[section]) for section in SETTINGS}
            window = window or parse_size(settings["display.touchscreen"]["size"])    # never full screen
            display = TouchscreenDisplay(kiosk, settings, size=window)
            _stage(display, kiosk, fake, screen, sample, lose_answers)
            display.save(out)
            display.close()
            display = None
        return Path(out)
    finally:
        if display is not None:
            display.close()
        fake.stop()
        if saved_key is None:
            os.environ.pop("STRIPE_API_KEY", None)
        else:
            os.environ["STRIPE_API_KEY"] = saved_key
        shutil.rmtree(work, ignore_errors=True)
        notice_log.setLevel(notice_level)


def _fill(kiosk, fake, clock) -> dict:
    """A market morning: an online sale, signal lost, offline sales, back online
    (one declined when forwarded), signal lost again and more offline sales,
    the oldest now 13 hours old."""
    from kiosk import minor_digits, parse_amount
    currency = kiosk.config.currency
    sample = SAMPLE[2 if minor_digits(currency) else 0]
    yes = lambda offer: True   # noqa: E731
    clock.offset = timedelta(hours=14, minutes=20)
    kiosk.take_sale(parse_amount(sample["typed"], currency), card="visa")
    fake.set_offline(True)
    for card, amount, customer in sample["sales"]:
        clock.offset -= timedelta(minutes=9)
        kiosk.take_sale(parse_amount(amount, currency), card=card, customer=customer, confirm=yes)
    fake.set_offline(False)
    clock.offset = timedelta(hours=13, minutes=30)
    kiosk.forward()
    kiosk.readiness()              # what `kiosk run` found while it was online
    fake.set_offline(True)
    clock.offset = timedelta(hours=13, minutes=5)
    for card, amount in sample["later"]:
        clock.offset -= timedelta(minutes=17)
        kiosk.take_sale(parse_amount(amount, currency), card=card, confirm=yes)
    clock.offset = timedelta(0)
    fake.set_offline(False)
    kiosk.check_online()           # Stripe's clock heard now: the kiosk's clock is trusted (docs/clock.md)
    fake.set_offline(True)
    kiosk.check_online()           # offline, as the stall is now
    return sample


def _stage(display, kiosk, fake, screen: str, sample: dict, lose_answers) -> None:
    """Bring the display to ``screen`` the way a vendor would get there."""
    from .state import Sale
    currency = kiosk.config.currency
    ui = display.ui
    for key in sample["typed"]:
        display.act(f"key_{key}")
    amount = ui.entry.minor
    if screen in ("present_card", "confirm_offline", "contact"):
        ui.sale = Sale(amount, currency)
        if screen != "present_card":
            offers = []
            kiosk.take_sale(amount, currency, confirm=lambda offer: offers.append(offer) or False)
            ui.sale.offer = offers[0]
            ui.contact = sample["contact"] if screen == "confirm_offline" else sample["contact"][:7]
    elif screen.startswith("result_") and screen not in ITEM_SCREENS:
        ui.result, ui.result_amount = _sale_for(kiosk, fake, screen[len("result_"):], amount, currency, lose_answers), \
            (amount, currency)
        screen = "result"
    elif screen == "sync":
        _half_a_pass(display, kiosk, fake)
        return
    elif screen in MONEY_SCREENS:
        _money_screen(display, kiosk, fake, screen)
        return
    elif screen in ITEM_SCREENS:
        ui.entry.clear()
        for index, taps in SAMPLE_CART:
            for _ in range(taps):
                display.act(f"item:{index}")
        if screen == "result_items":
            _sale_with_items(display, kiosk, currency)
        elif screen != "sale_items":
            display.act("open_cart" if screen == "cart" else "charge")
        screen = ui.screen
    display.show(screen)
    display.catch_up()


def _sale_for(kiosk, fake, status: str, amount: int, currency: str, lose_answers):
    """A real sale through the engine that ends in ``status``."""
    from kiosk import minor_digits
    card = "insufficient_funds" if status == "declined" else "visa"
    fake.set_offline(status not in ("approved", "declined", "unconfirmed"))
    if status == "refused":
        limits = kiosk.effective_limits(currency)
        if limits is not None:
            amount = limits.per_transaction + 10 ** minor_digits(currency)
    if status == "unconfirmed":
        result = _unconfirmed_sale(kiosk, lose_answers, amount, currency)
    else:
        result = kiosk.take_sale(amount, currency, card=card, confirm=lambda offer: True)
    fake.set_offline(True)
    kiosk.check_online()
    if result.status != status:
        raise RuntimeError(f"sample sale ended {result.status}, not {status}: {result.message}")
    return result


def _sale_with_items(display, kiosk, currency: str) -> None:
    """The cart sold offline with the middle tip and a receipt e-mail, through the engine."""
    from kiosk import tip_amount
    ui = display.ui
    amount, items = display.controller.cart.goods()
    tip = tip_amount(amount, SAMPLE_TIPS[1], currency)
    # a card without offline sales waiting: the sample morning's cards would meet the repeated-card guard
    result = kiosk.take_sale(amount, currency, card="lost_card", confirm=lambda offer: True, items=items, tip=tip,
                             receipt_email="ana@example.com")
    if result.status != "approved_offline":
        raise RuntimeError(f"sample sale ended {result.status}, not approved_offline: {result.message}")
    display.controller.cart.sold()
    ui.result, ui.result_amount, ui.screen = result, (amount + tip, currency), "result"


def _half_a_pass(display, kiosk, fake) -> None:
    """Forwarding under way: Stripe answers slowly, one payment at a time."""
    fake.set_offline(False)
    kiosk.check_online()
    fake.latency = 0.5
    passing = threading.Thread(target=kiosk.forward, daemon=True)
    passing.start()
    display.show("sync")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not 0 < kiosk.sync_progress[0] < kiosk.sync_progress[1]:
        display.step(0.02)
    display.catch_up()
    passing.join(30)


def _unconfirmed_sale(kiosk, lose_answers, amount, currency):
    """Stripe takes the charge, but the answer and the look-up after it are lost."""
    lose_answers.armed = True
    try:
        return kiosk.take_sale(amount, currency, card="visa")
    finally:
        lose_answers.armed = False


def _zone_for_today(language: str) -> str:
    """A real zone where the sample morning is all today (the language's own when it is)."""
    from datetime import datetime, timezone
    from zoneinfo import ZoneInfo
    now = datetime.now(timezone.utc)
    for name in ("Asia/Tokyo" if language == "ja" else TODAY_ZONES[0], *TODAY_ZONES):
        here = now.astimezone(ZoneInfo(name))
        if (here - timedelta(hours=14, minutes=30)).date() == here.date():
            return name
    return TODAY_ZONES[0]


def _money_screen(display, kiosk, fake, screen: str) -> None:
    """Payments -> the morning's online sale: its refund keypad, or its detail once
    part of it was refunded from the screen; or Today."""
    from kiosk import SUCCEEDED, minor_digits
    ui = display.ui

    def wait(done) -> None:
        deadline = time.monotonic() + 20
        while not done():
            if time.monotonic() > deadline:
                raise RuntimeError(f"the sample {screen} screen did not come up: {display.texts()}")
            display.step(0.02)

    sale = next(p for p in kiosk.store.settled() if p.state == SUCCEEDED and not p.offline and not p.is_refund)
    if screen == "today":            # the day with a void and a refund in it
        kiosk.void(kiosk.store.live()[-1].id)
        fake.set_offline(False)
        kiosk.refund(sale.id, 400)        # $4.00, or ¥400
        fake.set_offline(True)
        kiosk.check_online()
        display.act("nav_today")
        asked = display._chores.read_day()
        wait(lambda: ui.day_seq >= asked)
        display.catch_up()
        return
    display.act(f"payment:{sale.id}")
    wait(lambda: ui.detail is not None)
    display.act("refund")
    if screen == "payment_detail":
        fake.set_offline(False)
        kiosk.check_online()
        for key in "4" if minor_digits(sale.currency) else "400":
            display.act(f"refund_key_{key}")
        display.act("refund_next")
        display.act("money_confirm")
        wait(lambda: ui.money_said is not None and ui.detail is not None and ui.detail.refunds)
        fake.set_offline(True)
        kiosk.check_online()
    display.catch_up()
