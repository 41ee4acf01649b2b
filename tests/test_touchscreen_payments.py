"""The touchscreen's Payments detail (void, refund, reprint) and Today, driven by touch.

Real kiosks against the FakeStripe peer, the real display plugin on SDL's
dummy driver, real touch events at the buttons as last drawn (the helpers of
tests/test_touchscreen.py).  What the vendor sees is checked in the drawn
frame; what happened, in the store, at FakeStripe and in ``kiosk report``.
"""
from __future__ import annotations

import json
import os

os.environ["SDL_VIDEODRIVER"] = "dummy"      # before pygame is imported anywhere in this process
os.environ["SDL_AUDIODRIVER"] = "dummy"

import pytest  # noqa: E402

from conftest import run_kiosk, write_config  # noqa: E402
from kiosk import hookimpl  # noqa: E402
from kiosk.payment import FAILED, PENDING, SUCCEEDED, VOIDED  # noqa: E402

pygame = pytest.importorskip("pygame")

from kiosk_builtins.touchscreen import money_screens, screens  # noqa: E402
from kiosk_builtins.touchscreen.state import Alert  # noqa: E402
from test_touchscreen import SIZES, _headless, fits_the_screen, on_screen, tap, tap_keys, type_amount, until  # noqa: E402,F401

BUTTONS = ("void", "refund", "reprint")


@pytest.fixture
def screen(tmp_path, fake_stripe, open_kiosk, touchscreens):
    """``kiosk, display, config = screen(language=..., size=..., printer=...)``."""
    def open_screen(language="en", currency="usd", size=None, printer=None, **sections):
        config = write_config(tmp_path, fake_stripe.url, display={"use": "touchscreen"},
                              kiosk={"language": language, "currency": currency, "timezone": "Asia/Tokyo"},
                              **sections)
        kiosk = open_kiosk(config)
        if printer is not None:
            kiosk.host.register(printer, "bench-printer")
        display = touchscreens(kiosk, size)
        return kiosk, display, config

    return open_screen


class BenchPrinter:
    """A receipt-printer plugin on the kiosk's own hooks: keeps what it printed, or fails like a jammed one."""

    def __init__(self, fail: str | None = None):
        self.fail = fail
        self.printed = []

    @hookimpl
    def kiosk_receipt_printer(self):
        return "bench:printer"

    @hookimpl
    def kiosk_print_receipt(self, receipt, automatic):
        if self.fail:
            raise OSError(self.fail)
        self.printed.append((receipt.payment_id, automatic))
        return "bench printer"


def open_payment(display, payment_id: str) -> None:
    """Payments -> the payment's row, as the vendor taps it; waits for its detail."""
    tap(display, "nav_payments")
    display.catch_up()
    tap(display, f"payment:{payment_id}")
    assert display.ui.screen == "payment_detail"
    until(display, lambda: display.ui.detail is not None and display.widget("detail_amount") is not None)


def refunds_of(fake_stripe, sale) -> list[dict]:
    """The refunds Stripe holds against ``sale``'s PaymentIntent."""
    return [r for r in fake_stripe.refunds if r["payment_intent"] == sale.payment_intent]


def buttons(display) -> set[str]:
    return {w.name for w in display.scene.targets if w.name in BUTTONS}


def answered(display) -> None:
    """Until the chores thread's answer to a void, refund or reprint is on screen (and its detail re-read)."""
    until(display, lambda: not display.ui.money_busy and display.ui.money_said is not None)
    display.catch_up()
    display._chores.read_detail(display.ui.detail_id)
    seen = display.ui.detail
    until(display, lambda: display.ui.detail is not seen)


# -- void ------------------------------------------------------------------------------

def test_void_from_the_screen_is_stored_voided_and_never_reaches_stripe(screen, fake_stripe):
    kiosk, display, _ = screen()
    fake_stripe.set_offline(True)
    sale = kiosk.take_sale(800, confirm=lambda offer: True).payment
    open_payment(display, sale.id)
    assert on_screen(display, "$8.00") and on_screen(display, "visa •••• 4242")
    assert on_screen(display, "Pending · offline")
    assert on_screen(display, "Taken ") and on_screen(display, " JST")      # the kiosk's zone, Asia/Tokyo
    assert buttons(display) == {"void"}                # pending: void only; no printer set up, no reprint
    tap(display, "void")
    assert display.ui.screen == "money_confirm" and on_screen(display, "Void this sale?")
    assert kiosk.store.get(sale.id).state == PENDING   # nothing happens before the confirm
    tap(display, "money_confirm")
    answered(display)
    assert display.ui.money_said[0] == "voided" and on_screen(display, "it will never be charged")
    assert kiosk.store.get(sale.id).state == VOIDED
    assert buttons(display) == set() and on_screen(display, "Voided")
    fake_stripe.set_offline(False)
    kiosk.forward()
    assert fake_stripe.intents_for(sale.id) == [] and fake_stripe.payment_intents == []
    tap(display, "detail_back")
    display.catch_up()
    assert display.ui.screen == "payments" and on_screen(display, "Voided")


def test_cancel_on_the_confirm_voids_nothing(screen, fake_stripe):
    kiosk, display, _ = screen()
    fake_stripe.set_offline(True)
    sale = kiosk.take_sale(800, confirm=lambda offer: True).payment
    open_payment(display, sale.id)
    tap(display, "void")
    tap(display, "money_cancel")
    assert display.ui.screen == "payment_detail" and kiosk.store.get(sale.id).state == PENDING


# -- refund ------------------------------------------------------------------------------

def test_refund_from_the_screen_reaches_stripe_once(screen, fake_stripe):
    kiosk, display, _ = screen()
    sale = kiosk.take_sale(1250).payment
    assert sale.state == SUCCEEDED
    open_payment(display, sale.id)
    assert buttons(display) == {"refund"} and on_screen(display, "$12.50 can still be refunded")
    tap(display, "refund")
    assert display.ui.screen == "refund" and on_screen(display, "Amount to refund (up to $12.50)")
    assert display.ui.refund_entry.minor == 1250                 # prefilled with what is refundable
    type_amount_on(display, "15")                                # the first key replaces the prefill
    tap(display, "refund_next")
    assert display.ui.screen == "refund" and on_screen(display, "At most $12.50 can be refunded")
    tap(display, "refund_key_back")
    tap(display, "refund_key_back")
    type_amount_on(display, "5")
    tap(display, "refund_next")
    assert display.ui.screen == "money_confirm" and on_screen(display, "Give this back to the customer's card?")
    assert fake_stripe.refunds == []                             # nothing before the confirm
    tap(display, "money_confirm")
    answered(display)
    assert display.ui.money_said[0] == "refunded" and on_screen(display, "Refunded $5.00 to visa •••• 4242")
    [refund] = refunds_of(fake_stripe, sale)
    assert refund["amount"] == 500 and refund["payment_intent"] == sale.payment_intent
    assert on_screen(display, "Refunds: $5.00 Sent") and on_screen(display, "$7.50 can still be refunded")
    kiosk.forward()                                              # nothing is sent again
    assert len(fake_stripe.refunds) == 1
    [record] = [p for p in kiosk.view.settled() if p.is_refund]
    assert record.refund_of == sale.id and record.amount == 500 and record.state == SUCCEEDED
    tap(display, "detail_back")                                  # the refund record is a row of its own
    display.catch_up()
    assert on_screen(display, "Refund $5.00")
    tap(display, f"payment:{record.id}")
    until(display, lambda: display.widget("detail_refund_of") is not None)
    assert on_screen(display, "Refund of $12.50 visa •••• 4242") and buttons(display) == set()


def type_amount_on(display, text: str) -> None:
    tap_keys(display, text, "refund_key_")


def test_a_refund_taken_offline_is_kept_and_sent_once_back_online(screen, fake_stripe):
    kiosk, display, _ = screen()
    sale = kiosk.take_sale(2000).payment
    fake_stripe.set_offline(True)
    kiosk.check_online()
    open_payment(display, sale.id)
    tap(display, "refund")
    tap(display, "refund_next")                                  # the whole of it, as prefilled
    assert on_screen(display, "Offline now: the refund is kept and sent once back online.")
    tap(display, "money_confirm")
    answered(display)
    assert display.ui.money_said[0] == "refund_queued" and fake_stripe.refunds == []
    assert buttons(display) == set()                             # nothing left to refund
    fake_stripe.set_offline(False)
    kiosk.forward()
    kiosk.forward()
    [refund] = refunds_of(fake_stripe, sale)
    assert refund["amount"] == 2000
    until(display, lambda: on_screen(display, "Refund sent: $20.00 visa •••• 4242"))   # money back, not "Sent"


def test_a_refund_stripe_refuses_once_back_online_is_an_alert_not_a_decline(screen, fake_stripe):
    from test_void_refund import stripe_client
    kiosk, display, _ = screen()
    sale = kiosk.take_sale(2000).payment
    fake_stripe.set_offline(True)
    kiosk.check_online()
    assert kiosk.refund(sale.id).status == "refund_queued"
    fake_stripe.set_offline(False)
    # refunded in Stripe's Dashboard meanwhile: Stripe refuses the kiosk's refund of the whole
    stripe_client(fake_stripe).v1.refunds.create(params={"payment_intent": sale.payment_intent, "amount": 500})
    kiosk.forward()
    until(display, lambda: on_screen(display, "Refund refused by Stripe — nothing given back: $20.00"))
    assert not on_screen(display, "Payment declined")


def test_a_slow_refund_never_holds_the_screen(screen, fake_stripe):
    kiosk, display, _ = screen()
    sale = kiosk.take_sale(1000).payment
    open_payment(display, sale.id)
    tap(display, "refund")
    tap(display, "refund_next")
    fake_stripe.slow_next(2, 1.5)                                # Stripe answers slowly: the screen goes on
    tap(display, "money_confirm")
    assert display.ui.money_busy == "refund" and on_screen(display, "Refunding…")
    assert not display.widget("refund").enabled                  # no second refund while one is under way
    tap(display, "detail_back")                                  # the vendor moves on; the answer follows
    assert display.ui.screen == "payments"
    until(display, lambda: on_screen(display, "Refunded $10.00 to visa •••• 4242"))     # told in a toast
    assert len(refunds_of(fake_stripe, sale)) == 1


# -- which buttons, and failures ---------------------------------------------------------

def test_buttons_that_do_not_apply_are_not_drawn(screen, fake_stripe):
    printer = BenchPrinter()
    kiosk, display, _ = screen(reader__simulated={"card": "visa"}, printer=printer)
    charged = kiosk.take_sale(900).payment
    declined = kiosk.take_sale(700, card="insufficient_funds").payment
    fake_stripe.set_offline(True)
    pending = kiosk.take_sale(600, confirm=lambda offer: True).payment
    assert declined.state == FAILED
    expected = {charged.id: {"refund", "reprint"}, declined.id: set(), pending.id: {"void", "reprint"}}
    for payment_id, shown in expected.items():
        open_payment(display, payment_id)
        assert buttons(display) == shown, payment_id
        for name in set(BUTTONS) - shown:
            assert display.widget(name) is None
        tap(display, "detail_back")
    open_payment(display, charged.id)
    tap(display, "reprint")
    answered(display)
    assert display.ui.money_said == ("printed", "Receipt printed")
    assert (charged.id, False) in printer.printed


def test_a_failing_void_refund_or_print_never_takes_the_screen_down(screen, fake_stripe):
    kiosk, display, _ = screen(printer=BenchPrinter(fail="out of paper"))
    sale = kiosk.take_sale(1000).payment
    open_payment(display, sale.id)
    tap(display, "reprint")                                      # the printer fails
    answered(display)
    assert display.ui.money_said[0] == "not_printed" and on_screen(display, "Not printed:")
    assert on_screen(display, "out of paper")
    fake_stripe.fail_next(4, 500)                                # Stripe errs on the refund (and its retries)
    tap(display, "refund")
    tap(display, "refund_next")
    tap(display, "money_confirm")
    answered(display)
    assert display.ui.money_said[0] == "refund_queued" and on_screen(display, "the refund of $10.00")
    assert kiosk.store.get(sale.id).state == SUCCEEDED
    for _ in range(3):                                           # the next passes send it, once
        kiosk.forward()
    [refund] = refunds_of(fake_stripe, sale)
    assert refund["amount"] == 1000
    fake_stripe.set_offline(True)
    other = kiosk.take_sale(500, confirm=lambda offer: True).payment
    tap(display, "detail_back")
    open_payment(display, other.id)
    tap(display, "void")
    kiosk.store.close()                                          # the store breaks under the void
    tap(display, "money_confirm")
    until(display, lambda: not display.ui.money_busy and display.ui.money_said is not None)
    assert display.ui.money_said[0] == "failed" and on_screen(display, "Could not finish")
    tap(display, "detail_back")                                  # the screen still answers every tap
    tap(display, "nav_today")
    tap(display, "nav_sale")
    type_amount(display, "3")
    assert display.ui.entry.minor == 300 and on_screen(display, "Charge $3.00")


# -- Today -----------------------------------------------------------------------------------

def day_read(display) -> dict:
    """Until the Today screen shows a read asked for after everything before this call."""
    asked = display._chores.read_day()
    until(display, lambda: display.ui.day_seq >= asked)
    return display.ui.day


def test_today_adds_up_to_kiosk_report_and_follows_each_payment(screen, fake_stripe, open_kiosk):
    kiosk, display, config = screen()
    kiosk.take_sale(1250)                                        # online
    kiosk.take_sale(700, card="insufficient_funds")              # declined at the till
    refunded = kiosk.take_sale(2000).payment
    assert kiosk.refund(refunded.id, 500).status == "refunded"
    fake_stripe.set_offline(True)
    kiosk.check_online()
    voided = kiosk.take_sale(300, confirm=lambda offer: True).payment
    kiosk.take_sale(800, confirm=lambda offer: True)             # pending
    assert kiosk.void(voided.id).status == "voided"
    tap(display, "nav_today")
    assert display.ui.screen == "today"
    day = day_read(display)
    usd = day["currencies"]["usd"]
    assert on_screen(display, f"Today, {day['date']} (Asia/Tokyo)")
    assert display.widget("day_net_usd").text == screens.format_amount(usd["net"], "usd", "en_US")
    assert on_screen(display, f"$8.00 ({usd['pending']['count']})")
    sales = usd["sales"]["count"]
    kiosk.take_sale(450, confirm=lambda offer: True)             # a payment changes: Today reads again
    until(display, lambda: display.ui.day["currencies"]["usd"]["sales"]["count"] == sales + 1)
    day = day_read(display)
    shown = {name: display.widget(f"day_{name}_usd").text for name in money_screens.DAY_LINES}
    display.close()
    kiosk.close()
    reported = json.loads(run_kiosk("report", "--config", config, "--json").stdout)
    assert reported["date"] == day["date"] and reported["currencies"] == day["currencies"]
    usd = reported["currencies"]["usd"]
    for name in money_screens.DAY_LINES:
        if name == "net":
            assert shown[name] == screens.format_amount(usd["net"], "usd", "en_US")
        else:
            line = usd[name]
            assert shown[name] == f"{screens.format_amount(line['amount'], 'usd', 'en_US')} ({line['count']})"


def test_payment_detail_and_today_in_japanese(screen, fake_stripe):
    kiosk, display, _ = screen(language="ja", currency="jpy",
                               limits={"currencies": {"jpy": {"per_transaction": 15000, "total": 75000}}})
    sale = kiosk.take_sale(1200).payment
    open_payment(display, sale.id)
    assert on_screen(display, "返金") and on_screen(display, "送信済み") and on_screen(display, "戻る")
    tap(display, "detail_back")
    tap(display, "nav_today")
    day_read(display)
    assert on_screen(display, "本日") and on_screen(display, "売上") and on_screen(display, "￥1,200（1件）")


def test_a_void_that_cannot_be_confirmed_says_why_in_japanese(screen, fake_stripe):
    """The send timed out while Stripe may still be charging: the void is not
    confirmed, and the Japanese screen says why and until when in Japanese
    (the reason code), not the kiosk's English sentence."""
    kiosk, display, _ = screen(language="ja", currency="jpy",
                               stripe={"api_base": fake_stripe.url, "max_network_retries": 0,
                                       "reachability_timeout": 1.0, "request_timeout": 1.0},
                               limits={"currencies": {"jpy": {"per_transaction": 15000, "total": 75000}}})
    sale = kiosk.take_sale(1200, behavior="force_offline", confirm=lambda offer: True).payment
    fake_stripe.slow_next(1, 3.0)               # Stripe takes the create, answers after the kiosk gave up
    kiosk.forward_one(sale)
    assert kiosk.store.get(sale.id).state == PENDING and kiosk.store.get(sale.id).attempts == 1
    open_payment(display, sale.id)
    tap(display, "void")
    tap(display, "money_confirm")
    answered(display)
    status, said = display.ui.money_said
    assert status == "unconfirmed" and "以降に取消" in said and "取り消していません" in said, said
    assert not any(word in said for word in ("Stripe may", "void it", "nothing voided")), said
    assert on_screen(display, "以降に取消")
    assert kiosk.store.get(sale.id).state == PENDING          # nothing voided


# -- layout at every size -----------------------------------------------------------------

@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_payment_screens_fit_with_targets_apart_and_big_enough(screen, fake_stripe, size):
    kiosk, display, _ = screen(size=size, printer=BenchPrinter())
    sale = kiosk.take_sale(1250).payment
    assert kiosk.refund(sale.id, 250).ok
    fake_stripe.set_offline(True)
    kiosk.check_online()
    pending = kiosk.take_sale(600, confirm=lambda offer: True).payment
    steps = [("payment_detail", sale.id, ()), ("refund", sale.id, ("refund",)),
             ("money_confirm", sale.id, ("refund", "refund_next")),
             ("money_confirm", pending.id, ("void",)), ("today", None, ("nav_today",))]
    for name, payment_id, taps in steps:
        if payment_id:
            open_payment(display, payment_id)
        for button in taps:
            tap(display, button)
        if name == "today":                      # a main screen: under the banners too
            display.font_note = True
            display.ui.alerts.append(Alert("declined", "Payment declined — follow up: $15.00 visa •••• 9995",
                                           "x"))
            day_read(display)
            display.catch_up()
            assert display.widget("banner_font") and display.widget("banner_alert")
            assert display.widget("day_net_usd") is not None
        assert display.ui.screen == name
        fits_the_screen(display, name)
        if name == "payment_detail":
            assert buttons(display) == {"refund", "reprint"}
        if name != "today":
            tap(display, "money_cancel" if name == "money_confirm" else
                "refund_cancel" if name == "refund" else "detail_back")
            if display.ui.screen == "payment_detail":
                tap(display, "detail_back")


@pytest.mark.parametrize("name, language", [("payment_detail", "en"), ("refund", "ja"), ("today", "ja")])
def test_screenshot_draws_the_payment_screens_with_sample_data(tmp_path, name, language):
    out = tmp_path / f"{name}.png"
    result = run_kiosk("screenshot", name, "--out", out, "--lang", language, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert pygame.image.load(str(out)).get_size() == (800, 480)
