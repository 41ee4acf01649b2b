"""The touchscreen's sale put together: quick items, the cart, the tip, the receipt e-mail.

Driven like tests/test_touchscreen.py: a real kiosk against FakeStripe, the
real display plugin on SDL's dummy driver, real touch events at the buttons of
the frame last drawn.  What the vendor sees is checked in the drawn strings;
what was sold in the store and in the PaymentIntent FakeStripe holds.
"""
from __future__ import annotations

import os

os.environ["SDL_VIDEODRIVER"] = "dummy"      # before pygame is imported anywhere in this process
os.environ["SDL_AUDIODRIVER"] = "dummy"

import pytest  # noqa: E402

from kiosk.payment import PENDING, SUCCEEDED  # noqa: E402

pygame = pytest.importorskip("pygame")

from kiosk_builtins.touchscreen import screens  # noqa: E402
from kiosk_builtins.touchscreen.layout import MIN_TARGET  # noqa: E402
from test_touchscreen import _headless, fits_the_screen, on_screen, screen, tap, tap_keys, type_amount, until  # noqa: E402,F401

MENU = [{"name": "Coffee", "price": 3.5}, {"name": "Bun", "price": 2.25}, {"name": "Juice", "price": 4.0}]
TWENTY = [{"name": f"Item number {n}", "price": 1.0 + n} for n in range(1, 21)]
YEN_MENU = [{"name": "コーヒー", "price": 450}, {"name": "パン", "price": 280}]
YEN_LIMITS = {"currencies": {"jpy": {"per_transaction": 15000, "total": 75000}}}


def shop(screen, items=MENU, tips=(10, 15, 20), **options):
    kiosk_section = {"tips": list(tips), **options.pop("kiosk", {})}
    return screen(catalog={"items": items}, kiosk=kiosk_section, **options)


def intent_of(fake_stripe, payment):
    [intent] = fake_stripe.intents_for(payment.id)
    return intent


# -- whole sales ----------------------------------------------------------------------

def test_three_items_and_a_tip_are_charged_by_touch(screen, fake_stripe):
    kiosk, display = shop(screen)
    assert on_screen(display, "Coffee") and on_screen(display, "$3.50") and on_screen(display, "No items yet")
    tap(display, "item:0")
    tap(display, "item:0")
    tap(display, "item:1")
    assert on_screen(display, "$3.50  × 2") and on_screen(display, "Cart: 3 · $9.25")
    assert on_screen(display, "Charge $9.25") and kiosk.store.live() == []
    tap(display, "charge")
    assert display.ui.screen == "tip" and on_screen(display, "Add a tip?") and on_screen(display, "$9.25")
    assert on_screen(display, "No tip") and on_screen(display, "15%")
    assert on_screen(display, "+$1.39")           # 15% of $9.25 = $1.3875, rounded half up
    tap(display, "tip:15")
    until(display, lambda: display.ui.screen == "result")
    assert on_screen(display, "Approved") and on_screen(display, "$10.64  visa •••• 4242")
    assert on_screen(display, "3 item(s) · tip $1.39")
    [payment] = list(kiosk.store.settled())
    assert payment.state == SUCCEEDED and (payment.amount, payment.tip) == (1064, 139)
    assert payment.items == [{"name": "Coffee", "price": 350, "quantity": 2},
                             {"name": "Bun", "price": 225, "quantity": 1}]
    intent = intent_of(fake_stripe, payment)
    assert intent["amount"] == 1064 and intent["description"] == "2 × Coffee, 1 × Bun"
    tap(display, "new_sale")                       # the next customer starts with an empty cart
    assert on_screen(display, "No items yet") and not display.widget("charge").enabled


def test_the_cart_changes_quantities_removes_lines_and_takes_a_typed_amount(screen, fake_stripe):
    kiosk, display = shop(screen, tips=())
    for index in (0, 1, 2):
        tap(display, f"item:{index}")
    type_amount(display, "5")                     # an amount typed beside the items: a line of its own
    assert on_screen(display, "$5.00 typed: a line of its own beside the items")
    assert on_screen(display, "Charge $14.75")
    tap(display, "open_cart")
    assert display.ui.screen == "cart" and on_screen(display, "Total $14.75")
    tap(display, "line_plus:0")
    tap(display, "line_plus:0")                   # 3 coffees
    tap(display, "line_minus:1")                  # the bun's last one: the line goes
    tap(display, "line_remove:1")                 # now the juice
    assert [(line.item.name, line.quantity) for line in display.ui.cart.lines()] == [("Coffee", 3)]
    assert on_screen(display, "$10.50") and on_screen(display, "Total $15.50") and on_screen(display, "Amount")
    tap(display, "charge")                        # no tips configured: straight to the card
    until(display, lambda: display.ui.screen == "result")
    [payment] = list(kiosk.store.settled())
    assert (payment.amount, payment.tip) == (1550, 0)
    assert payment.items == [{"name": "Coffee", "price": 350, "quantity": 3},
                             {"name": "Amount", "price": 500, "quantity": 1}]
    assert intent_of(fake_stripe, payment)["amount"] == 1550


def test_a_typed_amount_alone_is_a_sale_without_items_and_no_tip_is_a_choice(screen, fake_stripe):
    kiosk, display = shop(screen)
    type_amount(display, "12")
    tap(display, "charge")
    tap(display, "tip:0")
    until(display, lambda: display.ui.screen == "result")
    assert on_screen(display, "$12.00  visa •••• 4242") and display.widget("result_summary") is None
    [payment] = list(kiosk.store.settled())
    assert (payment.amount, payment.tip, payment.items) == (1200, 0, [])
    assert not intent_of(fake_stripe, payment).get("description")


def test_clear_empties_the_typed_amount_then_the_cart_and_back_keeps_the_sale(screen):
    kiosk, display = shop(screen)
    tap(display, "item:2")
    type_amount(display, "3")
    tap(display, "charge")
    tap(display, "tip_back")                      # the vendor changes their mind before the card
    assert display.ui.screen == "sale" and on_screen(display, "Charge $7.00")
    tap(display, "clear")
    assert on_screen(display, "Charge $4.00") and len(display.ui.cart) == 1
    tap(display, "clear")
    assert len(display.ui.cart) == 0 and not display.widget("charge").enabled
    assert kiosk.store.live() == [] and list(kiosk.store.settled()) == []


def test_a_cart_under_stripes_minimum_is_refused_before_the_tip(screen):
    kiosk, display = shop(screen, items=[{"name": "Sticker", "price": 0.3}])
    tap(display, "item:0")
    tap(display, "charge")
    assert display.ui.screen == "sale" and on_screen(display, "The smallest charge is $0.50")
    assert kiosk.store.live() == []


def test_the_tip_counts_against_the_offline_limit_and_a_refusal_keeps_the_cart(screen, fake_stripe):
    kiosk, display = shop(screen, limits={"per_transaction": 7.0})
    fake_stripe.set_offline(True)
    tap(display, "item:0")
    tap(display, "item:0")                        # $7.00 of goods: at the limit
    tap(display, "charge")
    tap(display, "tip:10")                        # $7.70 with the tip: over it
    until(display, lambda: display.ui.screen == "result")
    assert on_screen(display, "Refused") and on_screen(display, "Over the offline limit per sale")
    assert kiosk.store.live() == []
    tap(display, "new_sale")
    assert on_screen(display, "Cart: 2 · $7.00")   # nothing to type again
    tap(display, "charge")
    tap(display, "tip:0")
    until(display, lambda: display.ui.screen == "confirm_offline")
    tap(display, "offline_confirm")
    until(display, lambda: display.ui.screen == "result")
    [payment] = kiosk.store.live()
    assert (payment.amount, payment.tip, payment.offline) == (700, 0, True)


def test_a_line_stops_at_the_most_a_cart_takes(screen):
    kiosk, display = shop(screen)
    tap(display, "item:0")
    display.ui.cart.set_quantity(display.ui.quick_items[0], 999)
    tap(display, "open_cart")
    tap(display, "line_plus:0")
    assert display.ui.cart.lines()[0].quantity == 999
    assert on_screen(display, "That is the most of one item a sale takes") and on_screen(display, "$3,496.50")
    tap(display, "line_minus:0")
    assert display.ui.cart.lines()[0].quantity == 998 and not on_screen(display, "That is the most")


# -- the receipt e-mail -------------------------------------------------------------------

def _type_receipt(display, address: str) -> None:
    tap(display, "receipt")
    assert display.ui.screen == "contact" and on_screen(display, "Customer's e-mail for the receipt")
    assert on_screen(display, "for an offline sale, once it is sent")
    tap_keys(display, address)
    tap(display, "contact_done")


def test_an_offline_sale_with_a_receipt_e_mail_says_when_stripe_sends_it(screen, fake_stripe):
    kiosk, display = shop(screen)
    fake_stripe.set_offline(True)
    _type_receipt(display, "ana@ex.com")
    assert display.ui.screen == "sale" and on_screen(display, "ana@ex.com")
    tap(display, "item:0")
    tap(display, "item:1")
    tap(display, "charge")
    tap(display, "tip:20")
    until(display, lambda: display.ui.screen == "confirm_offline")
    assert on_screen(display, "$6.90")          # $5.75 and 20%: what the card is asked for
    assert on_screen(display, "ana@ex.com")       # the receipt address offered as the customer contact
    tap(display, "offline_confirm")
    until(display, lambda: display.ui.screen == "result")
    assert on_screen(display, "Approved offline") and on_screen(display, "2 item(s) · tip $1.15")
    assert on_screen(display, "Stripe e-mails the receipt to ana@ex.com once the sale is sent")
    [payment] = kiosk.store.live()
    assert payment.state == PENDING and payment.receipt_email == "ana@ex.com" and payment.tip == 115
    assert fake_stripe.payment_intents == []
    fake_stripe.set_offline(False)
    assert kiosk.forward().succeeded == 1
    intent = intent_of(fake_stripe, payment)
    assert intent["receipt_email"] == "ana@ex.com" and intent["amount"] == 690


def test_an_online_receipt_is_promised_once_the_payment_goes_through(screen, fake_stripe):
    kiosk, display = shop(screen, tips=())
    _type_receipt(display, "bo@ex.org")
    type_amount(display, "8")
    tap(display, "charge")
    until(display, lambda: display.ui.screen == "result")
    assert on_screen(display, "Stripe e-mails the receipt to bo@ex.org")
    [payment] = list(kiosk.store.settled())
    assert intent_of(fake_stripe, payment)["receipt_email"] == "bo@ex.org"
    tap(display, "new_sale")
    assert on_screen(display, "Receipt by e-mail")        # the next customer's receipt is their own


def test_a_bad_receipt_address_is_refused_and_a_card_number_wiped(screen):
    kiosk, display = shop(screen)
    tap(display, "receipt")
    tap_keys(display, "5550100")
    tap(display, "contact_done")
    assert display.ui.screen == "contact" and on_screen(display, "Not an e-mail address")
    tap(display, "contact_clear")
    tap_keys(display, "4242424242424242")
    tap(display, "contact_done")
    assert display.ui.contact == "" and on_screen(display, "Looks like a card number")
    assert not on_screen(display, "4242424242424242")
    tap(display, "contact_done")                  # nothing typed: no receipt
    assert display.ui.screen == "sale" and display.ui.receipt_email == ""


# -- Japanese ---------------------------------------------------------------------------

def test_items_and_tips_in_japanese_with_yen(screen, fake_stripe):
    kiosk, display = shop(screen, items=YEN_MENU, tips=(10,), language="ja", currency="jpy", limits=YEN_LIMITS)
    tap(display, "item:0")
    tap(display, "item:1")
    assert on_screen(display, "カート：2点 · ￥730") and on_screen(display, "￥730 を請求")
    tap(display, "charge")
    assert on_screen(display, "チップを追加しますか？") and on_screen(display, "チップなし")
    assert on_screen(display, "+￥73")             # 10% of ¥730
    tap(display, "tip:10")
    until(display, lambda: display.ui.screen == "result")
    assert on_screen(display, "承認されました") and on_screen(display, "2点 · チップ ￥73")
    [payment] = list(kiosk.store.settled())
    assert (payment.amount, payment.tip) == (803, 73)


# -- twenty items on small screens -------------------------------------------------------------

@pytest.mark.parametrize("language", ["en", "ja"])
@pytest.mark.parametrize("size", [(800, 480), (480, 320), (720, 1280)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_twenty_items_fit_and_every_one_can_be_reached(screen, size, language):
    currency = "jpy" if language == "ja" else "usd"
    kiosk, display = shop(screen, items=TWENTY, tips=(10, 15, 20, 25), size=size, language=language,
                          currency=currency, limits=YEN_LIMITS)
    kiosk.check_online()        # Stripe's clock heard: no banner (at 480x320 a banner leaves the keypad too little)
    display.catch_up()
    assert not [w for w in display.scene.widgets if w.name.startswith("banner")]
    ui = display.ui
    if display.widget("pad_items") is not None:           # narrow: the items take the keypad's place
        fits_the_screen(display, "sale keypad")
        tap(display, "pad_items")
    sold = set()
    for _ in range(20):
        fits_the_screen(display, "sale items")
        shown = sorted(int(w.name.partition(":")[2]) for w in display.scene.targets if w.name.startswith("item:"))
        assert shown, "no quick items drawn"
        for index in shown:
            if index not in sold:
                tap(display, f"item:{index}")
                sold.add(index)
        if len(sold) == 20:
            break
        tap(display, "items_down")
    assert sold == set(range(20)) and len(ui.cart) == 20
    type_amount_if_shown = display.widget("pad_keypad")
    if type_amount_if_shown is not None:
        tap(display, "pad_keypad")
    tap(display, "open_cart")
    named = set()
    for _ in range(20):
        fits_the_screen(display, "cart")
        named |= {text for name, text, _ in display.drawn if name == "cart_line_name"}
        if not display.widget("cart_down").enabled:
            break
        tap(display, "cart_down")
    assert named == {item["name"] for item in TWENTY}
    tap(display, "charge")
    fits_the_screen(display, "tip")
    assert len([w for w in display.scene.targets if w.name.startswith("tip:")]) == 5
    tap(display, "tip_back")
    tap(display, "receipt")
    if size[0] >= 720:          # the e-mail keyboard (shared with the customer contact) needs 720 px across
        fits_the_screen(display, "receipt keyboard")


def test_the_sale_screen_without_quick_items_keeps_its_keypad(screen):
    kiosk, display = screen()
    names = {w.name for w in display.scene.targets}
    assert "open_cart" not in names and "pad_items" not in names and "key_7" in names and "receipt" in names
    assert on_screen(display, "Type the amount, then Charge")
    assert display.widget("charge").box.h >= MIN_TARGET and display.widget("receipt").box.h >= MIN_TARGET
    assert screens.SCREENS["cart"] and screens.SCREENS["tip"]
