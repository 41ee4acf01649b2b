"""``kiosk demo``: a walk through a market day, no Stripe account needed.

Starts a local Stripe peer on 127.0.0.1 (or uses Stripe's test mode when
STRIPE_API_KEY holds an ``sk_test_`` or ``rk_test_`` key), takes an online
sale of items with a tip, loses the signal, takes offline sales (and voids
one), comes back, forwards them and shows the decline notice a vendor would
follow up, and a decline "for now" the kiosk will try again; refunds part of
the morning's sale and closes the day with its report.  Uses the
configuration given, with its own throw-away data directory.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

from .boot import open_kiosk
from .money import MoneyError, format_amount, parse_amount
from .quick_items import describe, tip_amount
from .report import text_lines


def _say(text: str) -> None:
    print(f"\n== {text}", flush=True)


def _show(result) -> None:
    card = f" {result.payment.card.brand} •••• {result.payment.card.last4}" if result.payment else ""
    print(f"   {result.status.upper().replace('_', ' ')}{card}: {result.message}", flush=True)


def screen_skip_reason(no_screen: bool) -> str | None:
    """Why the demo will not open the touchscreen, or None when it will."""
    if no_screen:
        return "--no-screen was given"
    if os.environ.get("SDL_VIDEODRIVER", "").strip().lower() == "dummy":
        return "SDL_VIDEODRIVER=dummy"
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY") or os.path.exists("/dev/dri/card0")):
        return "no display found (DISPLAY and WAYLAND_DISPLAY unset, no /dev/dri/card0)"
    return None


def _show_touchscreen(kiosk, no_screen: bool) -> None:
    """The market day's kiosk on the vendor's screen, until its window is closed."""
    import threading
    from . import appliance
    reason = screen_skip_reason(no_screen)
    if reason is not None:
        print(f"\nTouchscreen skipped: {reason}.", flush=True)
        return
    _say("The vendor's touchscreen: close its window to finish")
    appliance.run(kiosk, threading.Event(), display_name="touchscreen", headless_after_screen=False)


def _tap_to_pay_reader(kiosk):
    """A second simulated reader, opened through its hook like any reader."""
    from .boot import plugin_settings
    settings = plugin_settings(kiosk.host, kiosk.config, "simulated")
    settings["reader.simulated"] = dict(settings["reader.simulated"], mode="tap_to_pay")
    return kiosk.host.call_on("simulated", "kiosk_open_reader", settings=settings, report=kiosk.notify)


def run_demo(config_path: Path, keep: bool = False, screen: bool = True) -> int:
    from .testing.fake_stripe import FakeStripe
    real_key = os.environ.get("STRIPE_API_KEY", "")
    use_stripe = real_key.startswith(("sk_test_", "rk_test_"))
    data_dir = Path(tempfile.mkdtemp(prefix="kiosk-demo-"))
    peer = None
    overrides = {"storage": {"path": str(data_dir)}, "reader.simulated": {"mode": "chip"},
                 "kiosk": {"offline_behavior": "prefer_online"}}
    if use_stripe:
        print("Using Stripe's test mode with your test key.")
        overrides["stripe"] = {"api_base": "https://api.stripe.com"}
    else:
        peer = FakeStripe().start()
        os.environ["STRIPE_API_KEY"] = "sk_test_demo_" + "0" * 24  # this process only; a fake key
        overrides["stripe"] = {"api_base": peer.url}
        print(f"Local Stripe peer on {peer.url} (no account needed).")
    kiosk = open_kiosk(config_path, create=True, overrides=overrides)
    currency = kiosk.config.currency
    money = lambda text: parse_amount(text, currency)  # noqa: E731
    yes = lambda offer: print(f"   confirm offline sale? {format_amount(offer.amount, offer.currency)} — "  # noqa: E731
                              f"{offer.left}\n   {offer.risk_note}\n   vendor taps Confirm") or True
    try:
        _say("Morning, good signal: an online sale of two coffees and a bun, with a 15% tip")
        try:
            items = [{"name": "Coffee", "price": money("4.50"), "quantity": 2},
                     {"name": "Bun", "price": money("3.50"), "quantity": 1}]
        except MoneyError:          # a currency without cents: a plain amount
            items = [{"name": "Coffee", "price": money("450"), "quantity": 2},
                     {"name": "Bun", "price": money("350"), "quantity": 1}]
        goods = sum(item["price"] * item["quantity"] for item in items)
        tip = tip_amount(goods, 15, currency)
        print(f"   {describe(items)}: {format_amount(goods, currency)} + tip {format_amount(tip, currency)}")
        morning = kiosk.take_sale(goods, card="visa", confirm=yes, items=items, tip=tip)
        _show(morning)

        _say("The signal drops")
        if peer is not None:
            peer.set_offline(True)
            behavior = None
        else:
            behavior = "force_offline"   # real Stripe stays reachable: pretend
        for amount, card, customer in (("8.00", "visa", None), ("23.50", "mastercard", None),
                                       ("15.00", "insufficient_funds", "+1 555 0100"),
                                       ("6.00", "processing_error", None)):
            print(f" - {format_amount(money(amount), currency)} on {card}")
            _show(kiosk.take_sale(money(amount), card=card, customer=customer, confirm=yes, behavior=behavior))

        print(" - a customer changes their mind: the vendor voids the sale before it is ever sent")
        changed = kiosk.take_sale(money("4.00"), card="amex", confirm=yes, behavior=behavior)
        _show(changed)
        if changed.payment is not None:
            voided = kiosk.void(changed.payment.id)
            print(f"   {voided.status.upper()}: {voided.message}")
        print(" - a sale over the offline limit")
        _show(kiosk.take_sale(money("400.00"), card="visa", confirm=yes, behavior=behavior))
        print(" - a phone's Tap to Pay cannot work offline")
        with kiosk.reader_swapped(_tap_to_pay_reader(kiosk)):
            _show(kiosk.take_sale(money("5.00"), card="visa", confirm=yes, behavior=behavior))

        status = kiosk.status(check=behavior is None)
        print(f"   status: {'ONLINE' if status['online'] else 'OFFLINE'}, {status['pending']['count']} pending "
              f"({', '.join(v['formatted'] for v in status['pending']['by_currency'].values())}), "
              f"{status['window_hours_left']:.1f} h left to forward")

        _say("Back online: forwarding what was stored")
        if peer is not None:
            peer.set_offline(False)
        started = time.monotonic()
        report = kiosk.forward()
        print(f"   succeeded {report.succeeded}, failed {report.failed}, pending {report.pending} "
              f"in {time.monotonic() - started:.2f} s")

        _say("Notices the vendor sees")
        for notice in kiosk.store.notices(20):
            if notice["kind"] in ("forwarded", "declined", "declined_for_now"):
                print(f"   [{notice['level']}] {notice['title']}: {notice['message']}")
        _say("The queue")
        for p in [*reversed(list(kiosk.store.settled(20))), *kiosk.store.live()]:
            tail = p.message if p.state == "pending" else p.decline_code or ""
            print(f"   {p.state:<10} {format_amount(p.amount, p.currency):>9} {p.card.brand} •••• {p.card.last4}"
                  f"  {p.payment_intent or ''} {tail}")
        if morning.payment is not None and morning.payment.state == "succeeded":
            _say("A coffee was cold: refund part of the morning's sale")
            refunded = kiosk.refund(morning.payment.id, items[0]["price"])
            print(f"   {refunded.status.upper().replace('_', ' ')}: {refunded.message}")
        _say("Closing: the day's report (kiosk report)")
        day = kiosk.day_report()
        print(f"   {day['date']} ({day['timezone']})")
        for line in text_lines(day["currencies"]):
            print(f"   {line}")
        print("\nNext: `kiosk --help`, the README, and docs/plugins.md for writing a plugin.")
        _show_touchscreen(kiosk, no_screen=not screen)
        return 0
    finally:
        kiosk.close()
        if peer is not None:
            peer.stop()
        if keep:
            print(f"data kept in {data_dir}")
        else:
            shutil.rmtree(data_dir, ignore_errors=True)
