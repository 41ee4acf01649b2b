"""Quick items, tips and the receipt e-mail: from ``[[catalog.items]]`` and
``[kiosk] tips`` through ``take_sale`` and ``kiosk charge`` to the strict fake
Stripe over HTTP (which checks every request against stripe-python's params),
across an offline stretch and a restart, into ``kiosk report``.

Attacks: bad config lines (each one line, exit 2, nothing stored lost), an
amount the items do not add up to, a card number typed as an item name or a
receipt e-mail, a tip that takes a sale over the offline limit, a cart whose
summary is longer than Stripe keeps."""
from __future__ import annotations

import csv
import io
import json
import re

import pytest

from kiosk import quick_items
from kiosk.engine import APPROVED, APPROVED_OFFLINE, REFUSED
from kiosk.payment import PENDING, SUCCEEDED
from kiosk.quick_items import Cart, QuickItem, describe, parse_tip, tip_amount

from conftest import run_json, run_kiosk, write_config

CARD_NUMBER = "4242 4242 4242 4242"
CATALOG = [{"name": "Coffee", "price": 3.5}, {"name": "Bun", "price": "2.25"},
           {"name": "Onigiri", "price": 180, "currency": "jpy"}]


def yes(offer):
    return True


def config_with_items(tmp_path, fake_stripe, **sections):
    sections.setdefault("catalog", {"items": CATALOG})
    kiosk = {"tips": [10, 15, 20], **sections.pop("kiosk", {})}
    return write_config(tmp_path, fake_stripe.url, kiosk=kiosk, **sections)


def cart_of(kiosk, **quantities) -> Cart:
    items = {item.name: item for item in quick_items.catalog(kiosk.config)}
    cart = Cart()
    for name, quantity in quantities.items():
        cart.add(items[name], quantity)
    return cart


# -- the catalog and the cart ---------------------------------------------------------

def test_catalog_is_read_from_config_in_minor_units(tmp_path, fake_stripe, open_kiosk):
    kiosk = open_kiosk(config_with_items(tmp_path, fake_stripe))
    assert quick_items.catalog(kiosk.config) == [QuickItem("Coffee", 350, "usd"), QuickItem("Bun", 225, "usd"),
                                                 QuickItem("Onigiri", 180, "jpy")]
    assert kiosk.config["kiosk"]["tips"] == [10, 15, 20]


def test_cart_adds_sets_removes_and_keeps_one_currency():
    coffee, bun, onigiri = QuickItem("Coffee", 350, "usd"), QuickItem("Bun", 225, "usd"), QuickItem("Onigiri", 180, "jpy")
    cart = Cart()
    cart.add(coffee)
    cart.add(bun)
    cart.add(coffee)
    assert cart.items() == [{"name": "Coffee", "price": 350, "quantity": 2},
                            {"name": "Bun", "price": 225, "quantity": 1}]
    assert cart.total == 925 and len(cart) == 3 and cart.currency == "usd"
    assert describe(cart.items()) == "2 × Coffee, 1 × Bun"
    with pytest.raises(ValueError, match="one currency per sale"):
        cart.add(onigiri)
    cart.set_quantity(bun, 4)
    assert cart.total == 700 + 900 and [line.total for line in cart.lines()] == [700, 900]
    cart.set_quantity(coffee, 0)
    cart.remove("Bun")
    assert cart.items() == [] and cart.total == 0 and cart.currency is None
    cart.add(onigiri, 3)                         # an empty cart takes any currency
    assert cart.total == 540 and cart.currency == "jpy"
    with pytest.raises(ValueError, match="whole number"):
        cart.set_quantity(onigiri, -1)


def test_tip_rounds_half_up_to_the_minor_unit_in_jpy_usd_and_a_three_decimal_currency():
    # 15% of $12.50 is $1.875: $1.88; of ¥1,250 is ¥187.5: ¥188; 10% of KWD 3.350 is 0.335: KWD 0.340
    # (Stripe charges the three-decimal currencies in steps of 10 fils: the last digit 0)
    assert tip_amount(1250, 15, "usd") == 188
    assert tip_amount(1250, 15, "jpy") == 188
    assert tip_amount(3350, 10, "kwd") == 340
    assert tip_amount(3330, 10, "kwd") == 330           # 0.333 rounds down to 0.330
    assert tip_amount(1250, 15, "kwd") == 190           # 0.1875: 1.250 + 0.190 = 1.440, one Stripe takes
    assert tip_amount(1249, 10, "jpy") == 125           # ¥124.9 rounds up
    assert tip_amount(1001, 20, "usd") == 200           # $2.002 rounds down
    assert tip_amount(5, 10, "usd") == 1                # half a cent goes up, never lost to the customer
    assert tip_amount(999, 0, "usd") == 0
    # --tip: a percent of the goods, or an amount in the currency's units (no minimum of its own)
    assert parse_tip("15%", 1250, "jpy") == 188 and parse_tip("1.50", 1000, "usd") == 150
    assert parse_tip("0.25", 1000, "usd") == 25 and parse_tip("0", 1000, "usd") == 0
    assert parse_tip("0.120", 3000, "kwd") == 120
    with pytest.raises(ValueError, match="steps of 0.010"):
        parse_tip("0.125", 3000, "kwd")
    for bad, why in (("1.5", "JPY has no decimals"), ("150%", "from 0 to 100"), ("abc", "neither a percent"),
                     ("-1", "more than zero")):
        with pytest.raises(ValueError, match=why):
            parse_tip(bad, 1000, "jpy")


# -- to Stripe ------------------------------------------------------------------------

def test_items_tip_and_receipt_email_reach_stripe(tmp_path, fake_stripe, open_kiosk):
    kiosk = open_kiosk(config_with_items(tmp_path, fake_stripe))
    cart = cart_of(kiosk, Coffee=2, Bun=1)
    tip = tip_amount(cart.total, 15, "usd")              # 15% of $9.25 = $1.3875: $1.39
    result = kiosk.take_sale(cart.total, items=cart.items(), tip=tip, receipt_email=" ana@example.com ",
                             card="visa")
    assert result.status == APPROVED and tip == 139
    payment = kiosk.store.get(result.payment.id)
    assert (payment.state, payment.amount, payment.tip) == (SUCCEEDED, 925 + 139, 139)
    assert payment.items == cart.items() and payment.receipt_email == "ana@example.com"
    [intent] = fake_stripe.intents_for(payment.id)
    assert intent["status"] == "succeeded" and intent["amount"] == 1064
    assert intent["description"] == "2 × Coffee, 1 × Bun"
    assert intent["receipt_email"] == "ana@example.com"
    assert intent["metadata"]["kiosk_tip"] == "139" and intent["metadata"]["kiosk_items"] == "2 × Coffee, 1 × Bun"
    # a bare sale's request is what it always was: no description, no receipt, no tip in metadata
    bare = kiosk.take_sale(500, card="visa")
    [plain] = fake_stripe.intents_for(bare.payment.id)
    assert plain["description"] is None and plain["receipt_email"] is None
    assert set(plain["metadata"]) == {"kiosk_payment_id", "kiosk_id"}
    assert set(kiosk.store.get(bare.payment.id).request) == {
        "amount", "currency", "payment_method", "confirm", "allowed_payment_method_types",
        "error_on_requires_action", "metadata"}


def test_a_tip_in_yen_is_charged_in_yen(tmp_path, fake_stripe, open_kiosk):
    kiosk = open_kiosk(config_with_items(tmp_path, fake_stripe, kiosk={"currency": "jpy"},
                                         catalog={"items": [{"name": "Onigiri", "price": 180}]},
                                         limits={"currencies": {"jpy": {"per_transaction": 15000, "total": 75000}}}))
    cart = cart_of(kiosk, Onigiri=7)                     # ¥1,260
    tip = tip_amount(cart.total, 15, "jpy")              # ¥189
    result = kiosk.take_sale(cart.total, "jpy", items=cart.items(), tip=tip, card="visa")
    assert result.status == APPROVED
    [intent] = fake_stripe.intents_for(result.payment.id)
    assert (intent["amount"], intent["currency"], intent["metadata"]["kiosk_tip"]) == (1449, "jpy", "189")
    assert intent["description"] == "7 × Onigiri"


def test_offline_sale_with_items_and_tip_is_stored_and_forwarded_after_a_restart(tmp_path, fake_stripe,
                                                                                  open_kiosk):
    config = config_with_items(tmp_path, fake_stripe)
    kiosk = open_kiosk(config)
    fake_stripe.set_offline(True)
    cart = cart_of(kiosk, Coffee=1, Bun=2)
    offers = []
    result = kiosk.take_sale(cart.total, items=cart.items(), tip=100, receipt_email="bo@example.org",
                             confirm=lambda offer: offers.append(offer) or True, card="visa")
    assert result.status == APPROVED_OFFLINE and offers[0].amount == 800 + 100    # confirmed with the tip
    assert fake_stripe.payment_intents == []
    kiosk.close()                                       # the kiosk restarts while Stripe is away

    kiosk = open_kiosk(config, create=False)
    [stored] = kiosk.store.live()
    assert (stored.state, stored.amount, stored.tip, stored.offline) == (PENDING, 900, 100, True)
    assert stored.items == cart.items() and stored.receipt_email == "bo@example.org"
    fake_stripe.set_offline(False)
    report = kiosk.forward()
    assert report.succeeded == 1
    [intent] = fake_stripe.intents_for(stored.id)
    assert intent["amount"] == 900 and intent["receipt_email"] == "bo@example.org"
    assert intent["description"] == "1 × Coffee, 2 × Bun"
    assert intent["metadata"]["kiosk_tip"] == "100" and "offline_stored_at" in intent["metadata"]
    assert kiosk.store.get(stored.id).state == SUCCEEDED


def test_a_long_cart_is_cut_to_what_stripe_keeps(tmp_path, fake_stripe, open_kiosk):
    names = [f"{'Handmade sourdough loaf number':<30} {n:>3}"[:40] for n in range(40)]
    config = config_with_items(tmp_path, fake_stripe,
                               catalog={"items": [{"name": name, "price": 1} for name in names]})
    kiosk = open_kiosk(config)
    cart = Cart()
    for item in quick_items.catalog(kiosk.config):
        cart.add(item, 2)
    assert len(describe(cart.items())) > 1000
    result = kiosk.take_sale(cart.total, items=cart.items(), card="visa")
    assert result.status == APPROVED          # and the strict fake took it (no breaches)
    [intent] = fake_stripe.intents_for(result.payment.id)
    assert 950 < len(intent["description"]) <= 1000 and intent["description"].endswith("…")
    assert 450 < len(intent["metadata"]["kiosk_items"]) <= 500 and intent["metadata"]["kiosk_items"].endswith("…")
    assert len(result.payment.items) == 40     # the kiosk keeps every line


# -- refused before anything is stored ----------------------------------------------------

def test_amount_the_items_do_not_add_up_to_is_refused(tmp_path, fake_stripe, open_kiosk):
    kiosk = open_kiosk(config_with_items(tmp_path, fake_stripe))
    cart = cart_of(kiosk, Coffee=2)
    with pytest.raises(ValueError, match=r"the items add up to \$7.00, not the amount \$6.00"):
        kiosk.take_sale(600, items=cart.items(), card="visa")
    bad_items = [
        ([{"name": "Coffee", "price": 350}], "exactly name, price and quantity"),
        ([{"name": "Coffee", "price": 350, "quantity": 0}], "quantity must be a whole number of at least 1"),
        ([{"name": CARD_NUMBER, "price": 700, "quantity": 1}], "looks like a card number"),
    ]
    for items, why in bad_items:
        with pytest.raises(ValueError, match=why) as caught:
            kiosk.take_sale(700, items=items, card="visa")
        assert "4242" not in str(caught.value)
    for tip, why in ((-1, "0 or more"), (1.5, "whole number")):
        with pytest.raises(ValueError, match=why):
            kiosk.take_sale(700, items=cart.items(), tip=tip, card="visa")
    for email, why in ((CARD_NUMBER, "looks like a card number"), ("+44 20 7946 0958", "not an e-mail"),
                       ("ana@", "not an e-mail")):
        with pytest.raises(ValueError, match=why) as caught:
            kiosk.take_sale(700, items=cart.items(), receipt_email=email, card="visa")
        assert "4242" not in str(caught.value) and "7946" not in str(caught.value)
    assert kiosk.store.live() == [] and fake_stripe.payment_intents == []


def test_offline_limits_and_the_same_card_guard_count_the_tip(tmp_path, fake_stripe, open_kiosk):
    kiosk = open_kiosk(config_with_items(tmp_path, fake_stripe,
                                         limits={"per_transaction": 10.0, "total": 500.0, "same_card_max": 1}))
    fake_stripe.set_offline(True)
    refused = kiosk.take_sale(900, tip=200, confirm=yes, card="visa")     # $9.00 + $2.00 over $10.00
    assert refused.status == REFUSED and refused.limit == "per_transaction"
    assert kiosk.store.live() == []
    assert kiosk.take_sale(800, tip=200, confirm=yes, card="visa").status == APPROVED_OFFLINE   # $10.00
    again = kiosk.take_sale(100, tip=10, confirm=yes, card="visa")
    assert again.status == REFUSED and "same_card_max" in again.message
    [stored] = kiosk.store.live()
    assert (stored.amount, stored.tip) == (1000, 200)


# -- bad config lines ----------------------------------------------------------------------

BAD_CONFIGS = [
    ({"catalog": {"items": [{"name": "Coffee", "price": 3.5}, {"name": "Bun", "price": "abc"}]}},
     "config catalog.items[2].price: 'abc' is not a number like 3.50"),
    ({"catalog": {"items": [{"name": "Coffee", "price": -1}]}},
     "config catalog.items[1].price: must be more than zero, not -1"),
    ({"catalog": {"items": [{"name": "Coffee", "price": 3.505}]}},
     "config catalog.items[1].price: USD has 2 decimals at most: 3.505"),
    ({"catalog": {"items": [{"name": "Tea", "price": 2}, {"name": CARD_NUMBER, "price": 2}]}},
     "config catalog.items[2].name looks like a card number"),
    ({"catalog": {"items": [{"name": "Tea", "price": 2}, {"name": "tea", "price": 3}]}},
     "config catalog.items[2].name 'tea' is already the name of another item"),
    ({"catalog": {"items": [{"name": "Tea", "price": 2, "colour": "red"}]}},
     "config catalog.items[1]: unknown key 'colour'"),
    ({"catalog": {"items": [{"name": "Tea", "price": 2, "currency": "xyz"}]}},
     "config catalog.items[1].currency: unknown currency 'xyz'"),
    ({"catalog": {"items": [{"price": 2}]}}, "config catalog.items[1].name must be some text"),
    ({"kiosk": {"tips": [0]}}, "config [kiosk] tips: each tip is a percent from 1 to 100, not 0"),
    ({"kiosk": {"tips": [150]}}, "config [kiosk] tips: each tip is a percent from 1 to 100, not 150"),
    ({"kiosk": {"tips": [5, 10, 15, 20, 25]}}, "config [kiosk] tips: at most 4 choices, not 5"),
    ({"kiosk": {"tips": [12.5]}}, "config [kiosk] tips must list int values, not 12.5"),
]


def test_bad_config_lines_are_one_line_each_with_the_config_exit_code_and_lose_nothing(tmp_path, fake_stripe):
    good = config_with_items(tmp_path, fake_stripe)
    good_text = good.read_text()
    assert run_kiosk("init", "--config", good).returncode == 0
    fake_stripe.set_offline(True)
    sold = run_kiosk("charge", "--item", "Coffee*2", "--tip", "10%", "--yes", "--config", good)
    assert sold.returncode == 0, sold.stderr
    for sections, line in BAD_CONFIGS:
        write_config(tmp_path, fake_stripe.url, **sections)
        for argv in (("queue",), ("charge", "5.00", "--yes"), ("items",)):
            result = run_kiosk(*argv, "--config", good)
            assert result.returncode == 2, (sections, result.stderr)
            assert result.stderr == f"kiosk: error: {line}\n" or (
                result.stderr.startswith(f"kiosk: error: {line}") and result.stderr.count("\n") == 1), result.stderr
            assert "4242" not in result.stderr
        good.write_text(good_text)
        [kept] = run_json("queue", "--config", good)
        assert (kept["amount"], kept["tip"], kept["state"]) == (770, 70, "pending")


# -- the command ---------------------------------------------------------------------------

def test_kiosk_items_lists_the_catalog_and_the_tips(tmp_path, fake_stripe):
    config = config_with_items(tmp_path, fake_stripe)
    listed = run_kiosk("items", "--config", config)
    assert listed.returncode == 0
    lines = listed.stdout.splitlines()
    assert re.match(r"Coffee\s+\$3\.50$", lines[0]) and re.match(r"Onigiri\s+¥180$", lines[2])
    assert lines[-1] == "tips: 10%, 15%, 20%"
    assert run_json("items", "--config", config) == {
        "items": [{"name": "Coffee", "price": 350, "currency": "usd", "formatted": "$3.50"},
                  {"name": "Bun", "price": 225, "currency": "usd", "formatted": "$2.25"},
                  {"name": "Onigiri", "price": 180, "currency": "jpy", "formatted": "¥180"}],
        "tips": [10, 15, 20]}
    empty = write_config(tmp_path, fake_stripe.url)
    assert run_kiosk("items", "--config", empty).stdout == "no quick items ([[catalog.items]] in config.toml)\n" \
                                                           "tips: none asked\n"


def test_charge_with_items_tip_and_receipt_email(tmp_path, fake_stripe):
    config = config_with_items(tmp_path, fake_stripe,
                               limits={"currencies": {"jpy": {"per_transaction": 15000, "total": 75000}}})
    assert run_kiosk("init", "--config", config).returncode == 0
    sold = run_kiosk("charge", "--item", "coffee*2", "--item", "Bun", "--tip", "15%",
                     "--receipt-email", "ana@example.com", "--config", config)
    assert sold.returncode == 0, sold.stderr
    assert re.match(r"APPROVED: \$10\.64 \(2 × Coffee, 1 × Bun \+ tip \$1\.39\) visa •••• 4242 \(kp_\w+\) — approved\n"
                    r"receipt: Stripe e-mails it to ana@example.com\n$", sold.stdout), sold.stdout
    [intent] = fake_stripe.payment_intents
    assert (intent["amount"], intent["description"], intent["receipt_email"]) == (
        1064, "2 × Coffee, 1 × Bun", "ana@example.com")
    # AMOUNT with items must be their total; --tip as an amount
    given = run_json("charge", "9.25", "--item", "Coffee*2", "--item", "Bun", "--tip", "1.00", "--config", config)
    assert given["status"] == "approved" and given["payment"]["amount"] == 1025 and given["payment"]["tip"] == 100
    # offline: the receipt waits for the forward, and says so
    fake_stripe.set_offline(True)
    stored = run_kiosk("charge", "--item", "Onigiri*3", "--tip", "10%", "--receipt-email", "bo@example.org",
                       "--yes", "--config", config)
    assert stored.returncode == 0, stored.stderr
    assert "¥594 (3 × Onigiri + tip ¥54)" in stored.stdout
    assert "receipt: Stripe e-mails it to bo@example.org once the sale is forwarded" in stored.stdout
    fake_stripe.set_offline(False)
    refusals = [
        (("charge", "--item", "Waffle", "--config", config), "kiosk: error: --item 'Waffle' is not in the catalog"),
        (("charge", "6.00", "--item", "Coffee", "--config", config),
         "kiosk: error: the items add up to $3.50, not the amount $6.00: nothing taken"),
        (("charge", "--item", "Coffee", "--item", "Onigiri", "--config", config),
         "kiosk: error: Onigiri is priced in JPY and the cart in USD: one currency per sale"),
        (("charge", "--item", "Coffee", "--currency", "eur", "--config", config),
         "kiosk: error: the items are priced in USD, not EUR"),
        (("charge", "--config", config), "kiosk: error: the following arguments are required: amount, or --item"),
        (("charge", "--item", "Coffee", "--tip", "lots", "--config", config), "kiosk: error: tip 'lots' is neither"),
        (("charge", "--item", "Coffee", "--receipt-email", "not-an-address", "--config", config),
         "kiosk: error: receipt e-mail is not an e-mail address"),
        (("charge", "--item", "Coffee", "--receipt-email", CARD_NUMBER, "--config", config),
         "kiosk: error: a command-line value looks like a card number"),
    ]
    for argv, line in refusals:
        result = run_kiosk(*argv)
        assert result.returncode == 2 and result.stderr.startswith(line), (argv, result.stderr)
        assert result.stderr.count("\n") == 1 and "4242" not in result.stderr
    assert len(fake_stripe.payment_intents) == 2 and len(run_json("queue", "--config", config)) == 3


def test_charge_with_items_and_tip_through_the_running_kiosk_is_as_alone(tmp_path, fake_stripe):
    from test_local_socket import Running, outcome, same_shape
    config = config_with_items(tmp_path, fake_stripe, sync={"poll_seconds": 3600, "retry_base_seconds": 0.0})
    assert run_kiosk("init", "--config", config).returncode == 0
    sales = [("--item", "Coffee*2", "--tip", "15%", "--receipt-email", "ana@example.com"),
             ("7.00", "--item", "Coffee*2", "--tip", "0.50"),
             ("--item", "Waffle"),
             ("--item", "Bun", "--tip", "1.00", "--offline", "--yes", "--json")]
    run = Running(config, tmp_path / "data").wait_serving()
    try:
        served = [outcome(run_kiosk("charge", *sale, "--config", config)) for sale in sales]
    finally:
        run.stop()
    alone = [outcome(run_kiosk("charge", *sale, "--config", config)) for sale in sales]
    assert [(code, same_shape(out), same_shape(err)) for code, out, err in served] == \
           [(code, same_shape(out), same_shape(err)) for code, out, err in alone]
    assert [code for code, _, _ in served] == [0, 0, 2, 0]
    assert run.log().count("`kiosk charge` asked by pid") == len(sales)
    first, second = fake_stripe.payment_intents[:2]
    assert (first["amount"], first["metadata"]["kiosk_tip"], first["receipt_email"]) == (805, "105", "ana@example.com")
    assert (second["amount"], second["description"]) == (750, "2 × Coffee")
    offline = json.loads(served[3][1])["payment"]
    assert (offline["amount"], offline["tip"], offline["items"]) == (
        325, 100, [{"name": "Bun", "price": 225, "quantity": 1}])


# -- the day's report ------------------------------------------------------------------------

def test_report_counts_the_tips_of_charged_and_pending_sales_and_the_csv_has_items(tmp_path, fake_stripe):
    config = config_with_items(tmp_path, fake_stripe)
    assert run_kiosk("init", "--config", config).returncode == 0
    assert run_kiosk("charge", "--item", "Coffee", "--tip", "1.00", "--config", config).returncode == 0
    assert run_kiosk("charge", "--item", "Bun", "--tip", "0.75", "--card", "insufficient_funds",
                     "--config", config).returncode == 1                     # declined at the till: no tip
    fake_stripe.set_offline(True)
    assert run_kiosk("charge", "--item", "Bun*2", "--tip", "10%", "--yes", "--config", config).returncode == 0
    day = run_json("report", "--config", config)
    usd = day["currencies"]["usd"]
    assert usd["tips"] == {"count": 2, "amount": 100 + 45}
    assert usd["charged"]["amount"] == 450 and usd["pending"]["amount"] == 495
    assert "tips" not in day["not_yet_taken"]
    text = run_kiosk("report", "--config", config).stdout
    assert re.search(r"^  tips\s+2\s+\$1\.45$", text, re.M), text
    rows = list(csv.DictReader(io.StringIO(run_kiosk("report", "--csv", "--config", config).stdout)))
    assert [(row["items"], row["tip"], row["amount"]) for row in rows] == [
        ("2 × Bun", "0.45", "4.95"), ("1 × Bun", "0.75", "3.00"), ("1 × Coffee", "1.00", "4.50")]


# -- killed mid-sale ---------------------------------------------------------------------------

@pytest.mark.parametrize("point, flags", [("forward:after_send", ()), ("sale:after_store", ("--offline", "--yes"))])
def test_a_sale_with_items_and_tip_killed_mid_way_is_charged_once_with_them(tmp_path, fake_stripe, point, flags):
    import signal
    from conftest import run_kiosk_process
    config = config_with_items(tmp_path, fake_stripe)
    assert run_kiosk("init", "--config", config).returncode == 0
    killed = run_kiosk_process("charge", "--item", "Coffee*2", "--tip", "15%", "--receipt-email", "ana@example.com",
                               *flags, "--config", config, env={"KIOSK_CRASH_AT": point})
    assert killed.returncode == -signal.SIGKILL and "APPROVED" not in killed.stdout
    [kept] = run_json("queue", "--config", config)
    assert kept["state"] in ("pending", "forwarding")   # "forwarding": sent, its answer lost with the process
    assert (kept["amount"], kept["tip"], kept["receipt_email"]) == (805, 105, "ana@example.com")
    assert run_kiosk("sync", "--config", config).returncode == 0
    [settled] = run_json("queue", "--config", config)
    assert settled["state"] == "succeeded" and settled["items"] == [{"name": "Coffee", "price": 350, "quantity": 2}]
    [intent] = fake_stripe.payment_intents            # sent once, whatever the kill cut short
    assert (intent["amount"], intent["description"], intent["receipt_email"], intent["metadata"]["kiosk_tip"]) == (
        805, "2 × Coffee", "ana@example.com", "105")
