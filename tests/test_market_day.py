"""A whole market day, the way a vendor runs it (issue 15's "done when"):
quick items and tips, an e-mailed and a printed receipt, a decline at the
till, an offline stretch with a decline followed up, a void, a refund taken
offline, a void that turns into a refund -- then the day closed with
``kiosk report``, whose totals must match Stripe's own record of the day.

Every part is real: stripe-python over HTTP to the strict FakeStripe, the
receipt printer plugin writing ESC/POS bytes to a raw-printing port on
127.0.0.1, the report read back by the ``kiosk`` command.
"""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from conftest import run_kiosk, write_config
from test_receipts import NetworkPrinter
from test_report import DAY, TOKYO, Clock, stripe_day

from kiosk.quick_items import Cart, catalog, tip_amount

SHOP = "Hilltop Farm"


def test_a_whole_market_day_closes_with_a_report_that_matches_stripe(tmp_path, fake_stripe, open_kiosk):
    clock = Clock(datetime(2026, 6, 15, 8, 30, tzinfo=TOKYO))
    fake_stripe.clock = clock.unix
    printer = NetworkPrinter().serve()
    config = write_config(
        tmp_path, api_base=fake_stripe.url,
        kiosk={"id": "stall-7", "currency": "usd", "timezone": "Asia/Tokyo", "tips": [10, 15, 20]},
        catalog={"items": [{"name": "Coffee", "price": 4.50}, {"name": "Bun", "price": 3.00},
                           {"name": "Jam", "price": 6.00}]},
        receipt_printer={"connection": f"network:127.0.0.1:{printer.port}", "shop_name": SHOP, "qr": True})
    kiosk = open_kiosk(config, clock=clock.now)
    menu = {item.name: item for item in catalog(kiosk.config)}

    def sell(lines: dict, tip_percent: int = 0, minutes: int = 7, **kwargs):
        cart = Cart()
        for name, quantity in lines.items():
            cart.add(menu[name], quantity)
        clock.at += timedelta(minutes=minutes)
        tip = tip_amount(cart.total, tip_percent, "usd") if tip_percent else 0
        return kiosk.take_sale(cart.total, items=cart.items(), tip=tip, confirm=lambda offer: True, **kwargs)

    # -- morning, online ------------------------------------------------------------------
    coffee = sell({"Coffee": 2, "Bun": 1}, 15, receipt_email="ana@example.com")
    assert coffee.status == "approved", coffee.message
    assert (coffee.payment.amount, coffee.payment.tip) == (1200 + 180, 180)
    at_till = sell({"Jam": 1}, card="insufficient_funds")              # declined: the customer saw it
    assert at_till.status == "declined"
    refunded_later = sell({"Jam": 2}, 10)                               # 12.00 + 1.20
    assert refunded_later.status == "approved"

    # -- the signal goes: an offline stretch ----------------------------------------------
    fake_stripe.set_offline(True)
    offline_ok = sell({"Coffee": 1, "Jam": 1}, 20)                      # 10.50 + 2.10
    assert offline_ok.status == "approved_offline", offline_ok.message
    offline_declined = sell({"Bun": 3}, card="declined", customer="+81 90 1234 5678")
    assert offline_declined.status == "approved_offline"
    changed_mind = sell({"Coffee": 1})
    assert changed_mind.status == "approved_offline"
    clock.at += timedelta(minutes=2)
    voided = kiosk.void(changed_mind.payment.id)                        # never sent: simply voided
    assert voided.status == "voided", voided.message
    clock.at += timedelta(minutes=3)
    part = kiosk.refund(coffee.payment.id, 500)                         # taken offline: kept, sent later
    assert part.status == "refund_queued", part.message
    assert kiosk.refundable(coffee.payment.id) == 1380 - 500
    status = kiosk.status(check=False)           # money going back is not held against the offline limits
    assert status["pending"]["count"] == 2 and status["pending"]["by_currency"]["usd"]["amount"] == 1260 + 900
    assert status["refunds_pending"]["by_currency"]["usd"]["amount"] == 500
    assert status["limits"]["usd"]["left"] == status["limits"]["usd"]["total"] - (1260 + 900)

    # -- back online ---------------------------------------------------------------------
    fake_stripe.set_offline(False)
    clock.at += timedelta(minutes=20)
    sent = kiosk.forward()
    assert sent.reached and sent.pending == 0
    assert kiosk.store.get(offline_ok.payment.id).state == "succeeded"
    assert kiosk.store.get(offline_declined.payment.id).state == "failed"
    assert kiosk.store.get(part.payment.id).state == "succeeded"
    assert kiosk.store.get(changed_mind.payment.id).state == "voided"
    kiosk.mark_followed_up(offline_declined.payment.id)                 # the vendor phoned the customer
    clock.at += timedelta(minutes=5)
    turned = kiosk.void(refunded_later.payment.id)                     # charged already: refunded instead
    assert turned.status == "refunded", turned.message
    assert kiosk.refund(refunded_later.payment.id, 1).status == "refused"   # nothing left to refund
    kiosk.close()                                                       # lets the queued receipts out

    # -- closing: the report against Stripe's record -----------------------------------
    result = run_kiosk("report", "--config", config, "--json", "--date", DAY.isoformat())
    assert result.returncode == 0, result.stderr
    usd = json.loads(result.stdout)["currencies"]["usd"]
    charged = 1380 + 1320 + 1260
    refunds = 500 + 1320
    assert (usd["sales"]["count"], usd["charged"]["count"], usd["charged"]["amount"]) == (4, 3, charged)
    assert (usd["offline"]["count"], usd["forwarded"]["count"], usd["pending"]["count"]) == (2, 1, 0)
    assert usd["declined"]["at_till"]["count"] == 1 and usd["declined"]["followed_up"]["count"] == 1
    assert usd["voided"] == {"count": 1, "amount": 450}
    assert usd["refunded"] == {"count": 2, "amount": refunds}
    assert usd["tips"]["amount"] == 180 + 120 + 210
    assert usd["net"] == charged - refunds

    stripe = stripe_day(fake_stripe, "stall-7", DAY, TOKYO)["usd"]
    assert stripe["succeeded"] == [usd["charged"]["count"], usd["charged"]["amount"]]
    start = datetime(2026, 6, 15, tzinfo=TOKYO).timestamp()
    held = [r for r in fake_stripe.refunds if r["metadata"].get("kiosk_id") == "stall-7"
            and start <= r["created"] < start + 86400 and r["status"] == "succeeded"]
    assert (len(held), sum(r["amount"] for r in held)) == (usd["refunded"]["count"], usd["refunded"]["amount"])
    assert stripe["succeeded"][1] - sum(r["amount"] for r in held) == usd["net"]
    tips = sum(int(pi["metadata"].get("kiosk_tip", 0)) for pi in fake_stripe.payment_intents
               if pi["status"] == "succeeded")
    assert tips == usd["tips"]["amount"]
    assert not fake_stripe.breaches                                    # every request held today's contract

    # e-mailed: Stripe holds the address (it sends the receipt once the payment succeeds)
    first = fake_stripe.intents_for(coffee.payment.id)
    assert [pi["receipt_email"] for pi in first] == ["ana@example.com"]
    assert "2 × Coffee" in first[0]["description"]
    # printed: one receipt per approved sale (5, the voided one too: it was approved when taken) and per
    # refund (2), each with the shop and the payment's id
    receipts = [printer.next_receipt() for _ in range(5 + 2)]
    assert all(SHOP.encode() in r for r in receipts)
    for payment in (coffee, refunded_later, offline_ok, offline_declined, changed_mind, part, turned):
        assert any(payment.payment.id.encode() in r for r in receipts), payment.payment.id
    assert any(b"approved offline" in r for r in receipts)
    assert sum(b"REFUND" in r for r in receipts) == 2
    printer.close()
