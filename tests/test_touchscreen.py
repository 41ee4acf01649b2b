"""The vendor's touchscreen, driven like a vendor drives it.

Real kiosks against the FakeStripe peer, the real display plugin opened
through its hook on SDL's dummy video driver, and real pygame touch and mouse
events posted at the buttons' positions in the frame last drawn.  What the
vendor sees is checked in the drawn frame (pixels and the strings drawn), what
happened in the engine's store and notices.
"""
from __future__ import annotations

import os

os.environ["SDL_VIDEODRIVER"] = "dummy"      # before pygame is imported anywhere in this process
os.environ["SDL_AUDIODRIVER"] = "dummy"

import subprocess  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from datetime import timedelta  # noqa: E402

import pytest  # noqa: E402

from conftest import ROOT, run_kiosk, write_config  # noqa: E402
from kiosk.engine import SaleResult  # noqa: E402
from kiosk.payment import FAILED, PENDING, SUCCEEDED, utcnow  # noqa: E402

pygame = pytest.importorskip("pygame")

from kiosk import QuickItem, notices  # noqa: E402
from kiosk_builtins.touchscreen import catalog, fonts, money_screens, screens  # noqa: E402
from kiosk_builtins.touchscreen.layout import MIN_TARGET, MIN_TEXT  # noqa: E402
from kiosk_builtins.touchscreen.state import Alert, Sale  # noqa: E402

SIZES = [(800, 480), (1024, 600), (720, 1280)]


@pytest.fixture(autouse=True)
def _headless(monkeypatch):
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    monkeypatch.setenv("SDL_AUDIODRIVER", "dummy")


@pytest.fixture
def screen(tmp_path, fake_stripe, open_kiosk, touchscreens):
    """Open a kiosk and its touchscreen: ``kiosk, display = screen(language=..., size=...)``."""
    def open_screen(language="en", currency="usd", size=None, **sections):
        kiosk_section = {"language": language, "currency": currency, **sections.pop("kiosk", {})}
        config = write_config(tmp_path, fake_stripe.url, display={"use": "touchscreen"}, kiosk=kiosk_section,
                              **sections)
        kiosk = open_kiosk(config)
        display = touchscreens(kiosk, size)
        return kiosk, display

    return open_screen


# -- driving it ---------------------------------------------------------------------

def tap(display, name: str, finger: bool = True) -> None:
    """A real touch (or mouse click) at the middle of button ``name`` as last drawn."""
    widget = display.widget(name)
    targets = [w.name for w in display.scene.targets]
    assert widget is not None and widget.target, f"no button {name!r} on screen; there are {targets}"
    assert widget.enabled, f"button {name!r} is drawn disabled"
    x, y = widget.box.center
    if finger:
        width, height = display.size
        for kind in (pygame.FINGERDOWN, pygame.FINGERUP):
            pygame.event.post(pygame.event.Event(kind, x=x / width, y=y / height, finger_id=7, touch_id=1,
                                                 dx=0.0, dy=0.0, pressure=1.0))
    else:
        for kind in (pygame.MOUSEBUTTONDOWN, pygame.MOUSEBUTTONUP):
            pygame.event.post(pygame.event.Event(kind, pos=(x, y), button=1))
    display.step()


def tap_keys(display, text: str, key: str = "type_") -> None:
    """Tap one key per character: ``type_`` the contact keyboard, ``key_`` the
    sale's keypad, ``refund_key_`` the refund's."""
    for char in text:
        tap(display, f"{key}{char}")


def type_amount(display, text: str) -> None:
    tap_keys(display, text, "key_")


def until(display, predicate, seconds: float = 15.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, f"timed out on screen {display.ui.screen}: {display.texts()}"
        display.step(0.02)
    display.step()


def on_screen(display, words: str) -> bool:
    return any(words in text for text in display.texts())


def pixel(display, name: str):
    """The colour drawn near the right edge, half way down, of widget ``name``."""
    box = display.widget(name).box
    return tuple(pygame.display.get_surface().get_at((box.right - 4, box.y + box.h // 2)))[:3]


# -- whole sales ------------------------------------------------------------------------

def test_online_sale_is_approved_by_touch(screen, fake_stripe):
    kiosk, display = screen()
    assert display.ui.screen == "sale" and not display.widget("charge").enabled
    type_amount(display, "12.50")
    assert on_screen(display, "Charge $12.50")
    tap(display, "charge")
    until(display, lambda: display.ui.screen == "result")
    assert on_screen(display, "Approved") and on_screen(display, "$12.50  visa •••• 4242")
    [payment] = list(kiosk.store.settled())
    assert payment.state == SUCCEEDED and payment.amount == 1250 and not payment.offline
    assert fake_stripe.intents_for(payment.id)[0]["amount"] == 1250
    assert pixel(display, "status_pill") == screens.ONLINE and on_screen(display, "● Online")
    assert pixel(display, "result_panel") == screens.RESULT["approved"]
    tap(display, "new_sale", finger=False)                       # a mouse click works too
    assert display.ui.screen == "sale" and display.ui.entry.empty


def test_offline_sale_is_confirmed_with_a_customer_contact(screen, fake_stripe):
    kiosk, display = screen()
    fake_stripe.set_offline(True)
    type_amount(display, "8")
    tap(display, "charge")
    until(display, lambda: display.ui.screen == "confirm_offline")
    assert on_screen(display, "$8.00") and on_screen(display, "of $500.00 offline limit left")
    assert on_screen(display, "a decline then is your loss") and on_screen(display, "Up to $100.00 per sale")
    assert pixel(display, "status_pill") == screens.OFFLINE and on_screen(display, "● Offline")
    assert kiosk.store.live() == []                              # nothing stored before Confirm
    tap(display, "contact")
    tap_keys(display, "+1555")
    tap(display, "contact_mode")                                 # the e-mail keyboard has digits too
    tap_keys(display, "0100")
    tap(display, "contact_done")
    assert display.ui.screen == "confirm_offline" and on_screen(display, "+15550100")
    tap(display, "offline_confirm")
    until(display, lambda: display.ui.screen == "result")
    assert on_screen(display, "Approved offline") and on_screen(display, "Will be sent when back online")
    [payment] = kiosk.store.live()
    assert payment.state == PENDING and payment.offline and payment.customer == "+15550100"
    assert fake_stripe.payment_intents == []
    display.catch_up()
    assert on_screen(display, "1 pending")


def test_a_bad_contact_is_refused_on_screen_before_the_sale(screen, fake_stripe):
    kiosk, display = screen()
    fake_stripe.set_offline(True)
    type_amount(display, "5")
    tap(display, "charge")
    until(display, lambda: display.ui.screen == "confirm_offline")
    tap(display, "contact")
    tap_keys(display, "12")
    tap(display, "contact_done")
    assert display.ui.screen == "contact" and on_screen(display, "Not a phone number or e-mail address")
    tap(display, "contact_clear")
    tap(display, "contact_done")
    tap(display, "offline_cancel")
    until(display, lambda: display.ui.screen == "sale")
    assert on_screen(display, "Offline sale not confirmed — nothing stored") and kiosk.store.live() == []


def test_declined_at_forwarding_shows_until_acknowledged_and_is_followed_up(screen, fake_stripe):
    kiosk, display = screen(reader__simulated={"card": "insufficient_funds"})
    fake_stripe.set_offline(True)
    type_amount(display, "15")
    tap(display, "charge")
    until(display, lambda: display.ui.screen == "confirm_offline")
    tap(display, "contact")
    tap_keys(display, "5550100123")
    tap(display, "contact_done")
    tap(display, "offline_confirm")
    until(display, lambda: display.ui.screen == "result")
    tap(display, "new_sale")
    fake_stripe.set_offline(False)
    report = kiosk.forward()                     # what the background loop does once Stripe is back
    assert report.failed == 1
    until(display, lambda: display.widget("banner_alert") is not None)
    assert on_screen(display, "Payment declined — follow up: $15.00 visa •••• 9995 — Insufficient funds")
    assert pixel(display, "banner_alert") == screens.BANNER["alert"]
    [notice] = [n for n in kiosk.store.notices() if n["kind"] == "declined"]
    assert "insufficient_funds" in notice["message"] and "5550100123" in notice["message"]
    tap(display, "nav_payments")                 # the notice stays while the vendor looks elsewhere
    display.catch_up()
    assert display.widget("banner_alert") is not None and on_screen(display, "Failed")
    tap(display, "alert_view")
    until(display, lambda: display.ui.screen == "attention" and display.widget("attention_row") is not None)
    assert display.widget("banner_alert") is None
    assert on_screen(display, "$15.00   visa •••• 9995")
    assert on_screen(display, "Insufficient funds: Your card has insufficient funds.")
    assert on_screen(display, "Customer: 5550100123")
    [payment] = kiosk.needs_attention()
    assert payment.state == FAILED and payment.decline_code == "insufficient_funds"
    tap(display, f"followed_up:{payment.id}")
    until(display, lambda: display.widget("attention_empty") is not None)
    assert kiosk.store.get(payment.id).followed_up and kiosk.needs_attention() == []
    assert on_screen(display, "Nothing needs attention") and on_screen(display, "Marked as followed up")


def test_offline_sale_over_the_limit_is_refused_and_nothing_is_stored(screen, fake_stripe):
    kiosk, display = screen()
    fake_stripe.set_offline(True)
    type_amount(display, "150")
    tap(display, "charge")
    until(display, lambda: display.ui.screen == "result")
    assert on_screen(display, "Refused") and on_screen(display, "Over the offline limit per sale")
    assert pixel(display, "result_panel") == screens.RESULT["refused"]
    assert kiosk.store.live() == [] and kiosk.store.notices()[-1]["kind"] == "limit_reached"
    assert fake_stripe.payment_intents == []


def test_online_decline_is_shown_with_its_reason(screen):
    kiosk, display = screen(reader__simulated={"card": "expired_card"})
    type_amount(display, "9")
    tap(display, "charge")
    until(display, lambda: display.ui.screen == "result")
    assert on_screen(display, "Declined") and on_screen(display, "Expired card")
    assert next(kiosk.store.settled()).decline_code == "expired_card"


def test_online_sale_whose_answer_is_lost_says_not_confirmed_until_it_settles(screen, fake_stripe):
    from kiosk.hookspecs import hookimpl
    kiosk, display = screen()

    class LoseAnswers:             # Stripe takes the charge; the answer and the look-up after it are lost
        @hookimpl
        def kiosk_payment_changed(self, payment, previous_state):
            if previous_state is None:
                fake_stripe.fail_next(2, 500)

    kiosk.host.register(LoseAnswers(), "lose-answers")
    type_amount(display, "10")
    tap(display, "charge")
    until(display, lambda: display.ui.screen == "result")
    assert on_screen(display, "Not confirmed") and on_screen(display, "do not charge the card again")
    [payment] = kiosk.store.live()
    assert payment.state == PENDING and payment.interrupted_told
    tap(display, "new_sale")
    assert kiosk.forward().succeeded == 1           # settled once Stripe answers
    until(display, lambda: on_screen(display, "Sent: $10.00 visa •••• 4242"))


def test_cancel_while_waiting_for_the_card_stores_nothing(screen, fake_stripe):
    kiosk, display = screen(reader__simulated={"delay_seconds": 20.0})
    type_amount(display, "4")
    tap(display, "charge")
    assert display.ui.screen == "present_card" and on_screen(display, "Present card")
    assert on_screen(display, "Waiting for the card reader…")
    started = time.monotonic()
    tap(display, "cancel_sale")
    until(display, lambda: display.ui.screen == "sale")
    assert time.monotonic() - started < 5
    assert on_screen(display, "Cancelled — nothing stored") and kiosk.store.live() == list(kiosk.store.settled()) == []
    assert fake_stripe.payment_intents == []


def test_forwarded_payments_toast_and_sync_progress(screen, fake_stripe):
    kiosk, display = screen()
    fake_stripe.set_offline(True)
    for _ in range(3):
        assert kiosk.take_sale(600, confirm=lambda offer: True).ok
    display.catch_up()
    tap(display, "nav_sync")
    assert on_screen(display, "3 waiting: $18.00") and on_screen(display, "3 pending")
    fake_stripe.set_offline(False)
    tap(display, "sync_now")
    assert kiosk.wake.is_set() and on_screen(display, "Syncing now")
    kiosk.forward()
    until(display, lambda: on_screen(display, "Sent 3 payments") or on_screen(display, "Sent: $6.00"))
    display.catch_up()
    assert on_screen(display, "Last pass: 3 answered") and on_screen(display, "Nothing waiting")
    bar = display.widget("sync_bar")
    assert bar.value == 1.0 and pixel(display, "sync_bar") == screens.PRIMARY


def test_the_sync_page_says_whether_the_kiosk_is_ready_to_sell_offline(screen, fake_stripe):
    kiosk, display = screen()
    tap(display, "nav_sync")
    assert display.widget("sync_ready") is None          # not asked yet: nothing claimed
    kiosk.readiness()
    display.catch_up()
    assert on_screen(display, "Ready to sell offline") and display.widget("sync_ready").colour == screens.ONLINE
    fake_stripe.clock = lambda: time.time() + 3600       # Stripe's clock an hour ahead of the kiosk's
    kiosk.readiness()
    display.catch_up()
    assert on_screen(display, "Not ready to sell offline: clock differs from Stripe's")
    assert display.widget("sync_ready").colour == screens.DANGER


def test_a_card_declined_for_now_is_told_and_kept_waiting(screen, fake_stripe):
    kiosk, display = screen(sync={"decline_retry_minutes": [60.0]})
    fake_stripe.set_offline(True)
    assert kiosk.take_sale(1250, confirm=lambda offer: True).ok
    fake_stripe.set_offline(False)
    fake_stripe.decline_next(1, decline_code="issuer_not_available")
    kiosk.forward()
    until(display, lambda: on_screen(display, "Declined for now, will retry: $12.50 visa •••• 4242"))
    display.catch_up()
    assert on_screen(display, "1 pending") and display.ui.alerts == []


@pytest.mark.parametrize("language, words", [("en", "A plugin is not working and is skipped"),
                                              ("ja", "動作しないプラグインをスキップしました")])
def test_a_skipped_plugin_and_safe_mode_are_told_on_the_screen(screen, fake_stripe, language, words):
    from kiosk import hookimpl

    class Jammed:
        @hookimpl
        def kiosk_payment_changed(self, payment):
            raise RuntimeError("receipt printer jammed")
    kiosk, display = screen(language=language, currency="jpy" if language == "ja" else "usd")
    kiosk.host.register(Jammed(), "jammed_printer")
    assert kiosk.take_sale(1250 if language == "en" else 1200, card="visa").ok      # the sale goes on
    until(display, lambda: on_screen(display, words))
    assert on_screen(display, "jammed_printer")
    kiosk.notify(notices.safe_mode("Asked for with --safe"))
    display.act("alert_ok")
    until(display, lambda: on_screen(display, "Safe mode" if language == "en" else "セーフモード"))


def test_the_sync_page_readiness_in_japanese(screen):
    kiosk, display = screen(language="ja", kiosk={"offline_behavior": "require_online"})
    kiosk.readiness()
    display.catch_up()
    tap(display, "nav_sync")
    assert on_screen(display, "オフライン販売の準備ができていません：オフライン販売がオフです")


def test_touch_mirrored_as_mouse_counts_once(screen):
    _, display = screen()
    x, y = display.widget("key_7").box.center
    width, height = display.size
    pygame.event.post(pygame.event.Event(pygame.FINGERDOWN, x=x / width, y=y / height, finger_id=1, touch_id=1,
                                         dx=0.0, dy=0.0, pressure=1.0))
    pygame.event.post(pygame.event.Event(pygame.MOUSEBUTTONDOWN, pos=(x, y), button=1, touch=True))
    pygame.event.post(pygame.event.Event(pygame.FINGERUP, x=x / width, y=y / height, finger_id=1, touch_id=1,
                                         dx=0.0, dy=0.0, pressure=1.0))
    pygame.event.post(pygame.event.Event(pygame.MOUSEBUTTONUP, pos=(x, y), button=1, touch=True))
    display.step()
    assert display.ui.entry.whole == "7"
    # a finger that slides off a button before lifting does not press it
    other = display.widget("key_9").box.center
    pygame.event.post(pygame.event.Event(pygame.MOUSEBUTTONDOWN, pos=(x, y), button=1))
    pygame.event.post(pygame.event.Event(pygame.MOUSEBUTTONUP, pos=other, button=1))
    display.step()
    assert display.ui.entry.whole == "7"


# -- money on the keypad --------------------------------------------------------------------

def test_yen_keypad_has_no_decimal_key(screen):
    _, display = screen(currency="jpy", limits={"currencies": {"jpy": {"per_transaction": 15000, "total": 75000}}})
    names = {w.name for w in display.scene.targets}
    assert "key_." not in names and "key_00" in names
    type_amount(display, "12")
    tap(display, "key_00")
    assert display.ui.entry.minor == 1200 and on_screen(display, "¥1,200")


def test_dinar_keypad_takes_three_decimals(screen):
    _, display = screen(currency="kwd")
    type_amount(display, "1.2345")               # the fourth decimal does not go in
    assert display.ui.entry.minor == 1234 and on_screen(display, "KWD1.234")
    tap(display, "key_back")
    tap(display, "key_back")
    assert display.ui.entry.minor == 1200 and on_screen(display, "KWD1.200")


def test_amount_below_stripes_minimum_is_refused_on_the_keypad(screen):
    kiosk, display = screen()
    type_amount(display, "0.3")
    tap(display, "charge")
    assert display.ui.screen == "sale" and on_screen(display, "The smallest charge is $0.50")
    assert kiosk.store.live() == []


# -- languages and fonts -------------------------------------------------------------------

def test_japanese_is_drawn_with_a_cjk_font(screen):
    _, display = screen(language="ja", currency="jpy",
                        limits={"currencies": {"jpy": {"per_transaction": 15000, "total": 75000}}})
    assert display.language == "ja" and not display.font_note and "CJK" in display.font_path
    assert on_screen(display, "販売") and on_screen(display, "支払い一覧")
    assert not on_screen(display, "Japanese font not found")
    font = display.fonts.get(24)
    assert fonts.has_glyphs(font, "販売支払い一覧要対応同期")
    assert all(m is not None and m[4] > 0 for m in font.metrics("販売"))     # real advances, not boxes
    type_amount(display, "1200")
    assert on_screen(display, "￥1,200 を請求")                              # Babel, ja_JP


def test_japanese_falls_back_to_english_with_a_note_when_the_font_is_missing(screen, tmp_path, monkeypatch,
                                                                            caplog):
    monkeypatch.setattr(fonts, "CJK_PATHS", [])
    monkeypatch.setattr(fonts, "FC_MATCH", str(tmp_path / "no-fc-match"))
    caplog.set_level("WARNING", logger="kiosk.touchscreen")
    _, display = screen(language="ja", display__touchscreen={"cjk_font": str(tmp_path / "gone.ttc")})
    assert display.language == "en" and display.font_note
    assert on_screen(display, "Japanese font not found (install fonts-noto-cjk) — showing English")
    assert on_screen(display, "Sale") and not any(ord(c) > 0x3000 for text in display.texts() for c in text)
    warnings = [r for r in caplog.records if "showing English" in r.getMessage()]
    assert len(warnings) == 1


def test_catalogue_has_every_string_in_both_languages():
    assert set(catalog.EN) == set(catalog.JA)
    assert set(catalog.DECLINES["en"]) == set(catalog.DECLINES["ja"])


# -- layout at every size ---------------------------------------------------------------------

def _every_screen(kiosk, display):
    """Each screen in its busiest state: rows to list, every banner up, a toast."""
    ui = display.ui
    offers = []
    kiosk.take_sale(800, confirm=lambda offer: offers.append(offer) or False)
    ui.alerts.append(Alert("declined", "Payment declined — follow up: $15.00 visa •••• 9995", "x"))
    ui.toast, ui.toast_until = "Sent: $8.00 visa •••• 4242", time.monotonic() + 60
    payment = kiosk.store.live()[0]
    results = [SaleResult("approved", "approved", payment), SaleResult("approved_offline", "stored", payment),
               SaleResult("declined", "declined: no", kiosk.needs_attention()[0]),
               SaleResult("refused", "over the offline limit per sale: $150.00 is more than $100.00", None,
                          "per_transaction"),
               SaleResult("unconfirmed", "not confirmed", payment)]
    for name in ("sale", "payments", "attention", "sync"):
        yield name, lambda: None
    for name in ("present_card", "confirm_offline", "contact"):
        def stage(name=name):
            ui.sale = Sale(800, "usd", offer=offers[0])
            ui.contact = "ana@example.com"
        yield name, stage
    yield "contact", lambda: setattr(ui, "contact_mode", "email")
    for result in results:
        yield "result", lambda result=result: (setattr(ui, "result", result),
                                               setattr(ui, "result_amount", (800, "usd")))

    def with_items():       # twenty quick items, all in the cart, four tips (tests/test_touchscreen_sale.py)
        ui.quick_items = [QuickItem(f"Item number {n}", 100 * n, "usd") for n in range(1, 21)]
        ui.tips = [10, 15, 20, 25]
        for item in ui.quick_items:
            ui.cart.set_quantity(item, 1)
    for name in ("sale", "cart", "tip"):
        yield name, with_items


def fits_the_screen(display, name: str) -> None:
    """The frame just drawn: every widget inside the screen, every touch target
    big enough and apart from the others, no text too small to read."""
    scene, bounds = display.scene, pygame.Rect(0, 0, *display.size)
    for widget in scene.widgets:
        assert bounds.contains(pygame.Rect(widget.box.tuple())), (name, widget.name, widget.box)
    targets = scene.targets
    for i, target in enumerate(targets):
        assert target.box.w >= MIN_TARGET and target.box.h >= MIN_TARGET, (name, target.name, target.box)
        for other in targets[i + 1:]:
            assert not target.box.overlaps(other.box), (name, target.name, other.name)
    assert all(px >= MIN_TEXT for _, _, px in display.drawn), name


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_every_screen_fits_with_targets_apart_and_big_enough(screen, fake_stripe, size):
    kiosk, display = screen(size=size)
    clock_now = utcnow()
    kiosk.clock = lambda: clock_now - timedelta(hours=21)       # sales from 21 h ago: reminder banner up
    fake_stripe.set_offline(True)
    for n in range(12):
        card = "insufficient_funds" if n < 3 else "visa"
        assert kiosk.take_sale(700, card=card, confirm=lambda offer: True, customer="+1 555 0100").ok
    fake_stripe.set_offline(False)
    kiosk.forward()
    fake_stripe.set_offline(True)
    for _ in range(3):
        assert kiosk.take_sale(600, confirm=lambda offer: True).ok
    kiosk.clock = lambda: clock_now
    display.font_note = True                     # and the missing-font banner: all three banners at once
    display.catch_up()
    assert display.size == size
    seen = set()
    for name, stage in _every_screen(kiosk, display):
        stage()
        display.show(name)
        display.step()
        seen.add(name)
        fits_the_screen(display, name)
        targets = display.scene.targets
        assert targets, name
        # every button is really drawn: its middle is its own colour, not the background's
        for target in targets:
            if target.fill != screens.BACKGROUND:
                x, y = target.box.x + 3, target.box.center[1]
                assert tuple(pygame.display.get_surface().get_at((x, y)))[:3] != screens.BACKGROUND, target.name
        if name in ("sale", "payments", "attention", "sync"):
            assert display.widget("banner_reminder") and display.widget("banner_alert"), name
            assert display.widget("banner_font"), name
    # one payment's screens and Today: laid out in tests/test_touchscreen_payments.py
    assert seen == set(screens.SCREENS) - set(money_screens.SCREENS)
    display.show("payments")
    display.step()
    assert len([w for w in display.scene.widgets if w.name == "payment_row"]) >= 3
    assert display.widget("payments_down").enabled


def test_reminder_banner_escalates_as_the_window_closes(screen):
    kiosk, display = screen(kiosk={"offline_behavior": "force_offline"})
    start = utcnow()
    kiosk.clock = lambda: start
    assert kiosk.take_sale(500).ok
    seen = []
    for hours, level, words in ((11, None, None), (12.5, 1, "Go online soon"), (20.5, 2, "Go online now"),
                                (23.5, 3, "min left! Connect now to send 1 payment(s)"),
                                (25, 3, "24-hour window passed")):
        kiosk.clock = lambda hours=hours: start + timedelta(hours=hours)
        display.catch_up()
        banner = display.widget("banner_reminder")
        if level is None:
            assert banner is None
            continue
        assert pixel(display, "banner_reminder") == screens.BANNER[level] and on_screen(display, words)
        seen.append(level)
    assert seen == [1, 2, 3, 3]


# -- the loop --------------------------------------------------------------------------------

def test_idle_screen_draws_nothing_and_run_returns_soon_after_stop(screen):
    _, display = screen()
    display.step(0.5)                            # whatever start-up left to draw
    frames = display.frames
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    started = time.monotonic()
    display.run(stop)
    assert time.monotonic() - started < 1.0
    assert display.frames - frames <= 1          # nothing changed: no frames (but perhaps the minute tick)


def test_a_display_error_never_loses_a_sale(screen, fake_stripe):
    kiosk, display = screen(reader__simulated={"delay_seconds": 0.5})
    type_amount(display, "20")
    tap(display, "charge")
    assert display.ui.screen == "present_card"
    pygame.display.quit()                        # the screen breaks while the customer holds the card
    with pytest.raises(pygame.error):
        display.run(threading.Event())
    [payment] = list(kiosk.store.settled())
    assert payment.state == SUCCEEDED and payment.amount == 2000
    assert len(fake_stripe.intents_for(payment.id)) == 1


def test_an_unanswered_offline_offer_is_refused_when_the_screen_closes(screen, fake_stripe):
    kiosk, display = screen()
    fake_stripe.set_offline(True)
    type_amount(display, "7")
    tap(display, "charge")
    until(display, lambda: display.ui.screen == "confirm_offline")
    display.close()
    assert kiosk.store.live() == []


def test_plugin_loads_without_importing_pygame():
    code = ("import sys; from kiosk.boot import load_host; host = load_host(); "
            "print('touchscreen' in [p.name for p in host.plugins()], 'pygame' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.stdout.split() == ["True", "False"], out.stderr


# -- kiosk screenshot and the demo ------------------------------------------------------------

def test_screenshot_command_writes_a_png_of_the_size_asked(tmp_path):
    out = tmp_path / "attention.png"
    result = run_kiosk("screenshot", "attention", "--out", out, "--size", "1024x600", "--lang", "ja", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    image = pygame.image.load(str(out))
    assert image.get_size() == (1024, 600)
    assert not (tmp_path / "kiosk-data").exists() and not (tmp_path / "data").exists()


@pytest.mark.parametrize("args, words", [(["nope"], "unknown screen 'nope'"),
                                         (["sale", "--size", "800by480"], "must look like 800x480")])
def test_screenshot_refuses_unknown_screens_and_bad_sizes(tmp_path, args, words):
    result = run_kiosk("screenshot", *args, "--out", tmp_path / "x.png", cwd=tmp_path)
    assert result.returncode == 2 and words in result.stderr and result.stderr.count("\n") == 1
    assert not (tmp_path / "x.png").exists()


def test_demo_opens_the_touchscreen_when_a_display_is_present(tmp_path, fake_stripe, open_kiosk, monkeypatch,
                                                              capsys):
    from kiosk import demo
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert demo.screen_skip_reason(True) == "--no-screen was given"
    assert demo.screen_skip_reason(False) in ("SDL_VIDEODRIVER=dummy",)
    monkeypatch.setenv("SDL_VIDEODRIVER", "offscreen")          # a display SDL can open without a monitor
    if not os.path.exists("/dev/dri/card0"):
        assert "no display found" in demo.screen_skip_reason(False)
    monkeypatch.setenv("DISPLAY", ":0")
    assert demo.screen_skip_reason(False) is None
    kiosk = open_kiosk(write_config(tmp_path, fake_stripe.url))
    def close_the_window():             # the vendor closes the window once it is up
        for _ in range(200):
            time.sleep(0.05)
            try:
                pygame.event.post(pygame.event.Event(pygame.QUIT))
                return
            except pygame.error:        # not open yet
                continue
    threading.Thread(target=close_the_window, daemon=True).start()
    started = time.monotonic()
    demo._show_touchscreen(kiosk, no_screen=False)
    assert time.monotonic() - started < 10
    assert "close its window to finish" in capsys.readouterr().out
