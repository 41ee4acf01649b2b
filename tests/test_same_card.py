"""The repeated-card guard (issue 15 item 5), from outside.

Real kiosks against the FakeStripe peer, with the simulated reader's test
cards: `kiosk charge` in-process and the touchscreen driven by real touch
events.  The guard's default ([limits] same_card_max = 2) is what the vendor
gets: these configs leave it unset unless a test says otherwise.
"""
from __future__ import annotations

import os

os.environ["SDL_VIDEODRIVER"] = "dummy"      # before pygame is imported anywhere in this process
os.environ["SDL_AUDIODRIVER"] = "dummy"

import json  # noqa: E402
import tomllib  # noqa: E402

import pytest  # noqa: E402
import tomli_w  # noqa: E402

from conftest import run_kiosk, write_config  # noqa: E402
from kiosk import CANCELLED, REFUSED  # noqa: E402
from kiosk.interfaces import CardResult  # noqa: E402
from kiosk.payment import PENDING, SUCCEEDED  # noqa: E402
from kiosk.same_card import pending_on_card  # noqa: E402


def guarded_config(tmp_path, url, **sections):
    """A test config with ``[limits] same_card_max`` left to its default, as a vendor's would be."""
    path = write_config(tmp_path, url, **sections)
    if "same_card_max" not in sections.get("limits", {}):
        raw = tomllib.loads(path.read_text())
        del raw["limits"]["same_card_max"]
        path.write_text(tomli_w.dumps(raw))
    return path


def initialised(tmp_path, url):
    config = guarded_config(tmp_path, url)
    assert run_kiosk("init", "--config", config).returncode == 0
    return config


def queued(config) -> list[dict]:
    done = run_kiosk("queue", "--json", "--config", config)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


# -- the CLI -----------------------------------------------------------------------------

def test_cli_second_sale_on_a_card_warns_and_the_third_is_refused_naming_the_limit(tmp_path, fake_stripe):
    config = initialised(tmp_path, fake_stripe.url)
    fake_stripe.set_offline(True)
    first = run_kiosk("charge", "5.00", "--card", "visa", "--yes", "--config", config)
    assert first.returncode == 0 and "APPROVED OFFLINE" in first.stdout, first.stderr
    assert "already has" not in first.stderr + first.stdout              # a fresh card: no warning

    second = run_kiosk("charge", "6.00", "--card", "visa", "--yes", "--config", config)
    assert second.returncode == 0 and "APPROVED OFFLINE" in second.stdout, second.stderr
    # the confirm step, asked again once the card is read, warns
    assert "Warning: this card already has 1 offline sale waiting (at most 2 per card)." in second.stderr

    third = run_kiosk("charge", "7.00", "--card", "visa", "--yes", "--json", "--config", config)
    assert third.returncode == 1
    said = json.loads(third.stdout)
    assert said["status"] == REFUSED and said["limit"] == "same_card"
    assert "same_card_max = 2" in said["message"] and "nothing stored" in said["message"]
    assert said["payment"] is None
    assert sorted(p["amount"] for p in queued(config)) == [500, 600]     # nothing stored for the third
    assert fake_stripe.payment_intents == []


def test_cli_without_yes_a_repeated_card_is_not_stored(tmp_path, fake_stripe):
    """Not a tty and no --yes: the second confirm is a "no", so the repeated card stores nothing."""
    config = initialised(tmp_path, fake_stripe.url)
    fake_stripe.set_offline(True)
    assert run_kiosk("charge", "5.00", "--card", "visa", "--yes", "--config", config).returncode == 0
    again = run_kiosk("charge", "5.00", "--card", "visa", "--config", config, input="")
    assert again.returncode == 1 and "not confirmed" in again.stderr
    assert len(queued(config)) == 1


def test_a_different_card_is_not_counted(tmp_path, fake_stripe):
    config = initialised(tmp_path, fake_stripe.url)
    fake_stripe.set_offline(True)
    for _ in range(2):
        assert run_kiosk("charge", "5.00", "--card", "visa", "--yes", "--config", config).returncode == 0
    other = run_kiosk("charge", "5.00", "--card", "mastercard", "--yes", "--config", config)
    assert other.returncode == 0 and "already has" not in other.stderr + other.stdout
    # same brand, other last 4: another card too
    assert run_kiosk("charge", "5.00", "--card", "insufficient_funds", "--yes", "--config", config).returncode == 0
    assert run_kiosk("charge", "5.00", "--card", "visa", "--yes", "--config", config).returncode == 1
    assert len(queued(config)) == 4


def test_a_forwarded_sale_no_longer_counts(tmp_path, fake_stripe, open_kiosk):
    kiosk = open_kiosk(guarded_config(tmp_path, fake_stripe.url))
    fake_stripe.set_offline(True)
    yes = lambda offer: True  # noqa: E731
    assert kiosk.take_sale(500, card="visa", confirm=yes).ok
    assert kiosk.take_sale(600, card="visa", confirm=yes).ok
    assert kiosk.take_sale(700, card="visa", confirm=yes).limit == "same_card"
    fake_stripe.set_offline(False)
    report = kiosk.forward()
    assert report.succeeded == 2 and kiosk.store.live() == []
    fake_stripe.set_offline(True)
    asked = []
    again = kiosk.take_sale(800, card="visa", confirm=lambda offer: asked.append(offer.same_card) or True)
    assert again.ok and again.payment.state == PENDING and asked == [0]     # asked once, no warning
    assert [p.state for p in kiosk.store.settled()] == [SUCCEEDED, SUCCEEDED]


def test_the_second_confirm_carries_the_warning_and_a_no_stores_nothing(tmp_path, fake_stripe, open_kiosk):
    kiosk = open_kiosk(guarded_config(tmp_path, fake_stripe.url))
    fake_stripe.set_offline(True)
    assert kiosk.take_sale(500, card="visa", confirm=lambda offer: True).ok
    offers = []

    def first_yes_then_no(offer):
        offers.append((offer.same_card, offer.same_card_warning))
        return len(offers) == 1

    result = kiosk.take_sale(600, card="visa", confirm=first_yes_then_no)
    assert result.status == CANCELLED and "nothing stored" in result.message
    assert offers == [(0, None), (1, "this card already has 1 offline sale waiting (at most 2 per card)")]
    assert [p.amount for p in kiosk.store.live()] == [500]


def test_force_offline_asks_nothing_and_refuses_above_the_limit(tmp_path, fake_stripe, open_kiosk):
    kiosk = open_kiosk(guarded_config(tmp_path, fake_stripe.url, kiosk={"offline_behavior": "force_offline"},
                                      limits={"same_card_max": 3}))
    asked = []
    results = [kiosk.take_sale(500, card="visa", confirm=asked.append) for _ in range(4)]
    assert [r.ok for r in results] == [True, True, True, False] and asked == []
    assert results[3].limit == "same_card" and "same_card_max = 3" in results[3].message
    assert len(kiosk.store.live()) == 3 and kiosk.store.notices()[-1]["kind"] == "limit_reached"


def test_an_online_sale_is_not_counted_nor_guarded(tmp_path, fake_stripe, open_kiosk):
    kiosk = open_kiosk(guarded_config(tmp_path, fake_stripe.url))
    for _ in range(3):
        assert kiosk.take_sale(500, card="visa").status == "approved"
    fake_stripe.set_offline(True)
    assert kiosk.take_sale(500, card="visa", confirm=lambda offer: True).ok


def test_expiry_is_part_of_the_card(tmp_path, fake_stripe, open_kiosk):
    """Brand, last 4 and expiry: a renewed card (same last 4, new expiry) is another card."""
    kiosk = open_kiosk(guarded_config(tmp_path, fake_stripe.url))
    fake_stripe.set_offline(True)
    assert kiosk.take_sale(500, card="visa", confirm=lambda offer: True).ok
    live = kiosk.store.live()
    assert pending_on_card(live, CardResult("pm_card_visa", "visa", "4242", 12, 2034)) == 1
    assert pending_on_card(live, CardResult("pm_card_visa", "VISA", "4242", 12, 2034)) == 1
    assert pending_on_card(live, CardResult("pm_card_visa", "visa", "4242", 1, 2035)) == 0
    assert pending_on_card(live, CardResult("pm_card_visa", "mastercard", "4242", 12, 2034)) == 0


# -- the setting -------------------------------------------------------------------------

@pytest.mark.parametrize("value, words", [
    (0, "config [limits] same_card_max must be at least 1"),
    ("two", "config [limits] same_card_max must be int"),
    (-1, "config [limits] same_card_max must be a number from 0"),
])
def test_the_limit_setting_is_checked_in_one_line(tmp_path, fake_stripe, value, words):
    config = write_config(tmp_path, fake_stripe.url, limits={"same_card_max": value})
    done = run_kiosk("status", "--config", config)
    assert done.returncode == 2
    assert words in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_the_default_is_two(tmp_path, fake_stripe, open_kiosk):
    kiosk = open_kiosk(guarded_config(tmp_path, fake_stripe.url))
    assert kiosk.config["limits"]["same_card_max"] == 2


# -- the touchscreen ---------------------------------------------------------------------

@pytest.fixture
def screen(tmp_path, fake_stripe, open_kiosk, touchscreens):
    pytest.importorskip("pygame")

    def open_screen(language="en"):
        config = guarded_config(tmp_path, fake_stripe.url, display={"use": "touchscreen"},
                                kiosk={"language": language})
        kiosk = open_kiosk(config)
        display = touchscreens(kiosk)
        return kiosk, display

    return open_screen


def _sell_offline(display, amount: str, until, tap, on_screen) -> None:
    for char in amount:
        tap(display, f"key_{char}")
    tap(display, "charge")
    until(display, lambda: display.ui.screen == "confirm_offline")
    assert display.widget("same_card_warning") is None              # before the card: nothing to warn of
    tap(display, "offline_confirm")


@pytest.mark.parametrize("language, warning, refused", [
    ("en", "This card already has 1 offline sale(s) waiting — at most 2 per card", "same_card_max = 2"),
    ("ja", "このカードは未送信のオフライン販売が1件あります — 1枚あたり最大2件", "same_card_max"),
])
def test_touchscreen_two_sales_warn_and_the_third_is_refused(screen, fake_stripe, language, warning, refused):
    from test_touchscreen import on_screen, tap, until
    kiosk, display = screen(language)
    fake_stripe.set_offline(True)

    _sell_offline(display, "5", until, tap, on_screen)
    until(display, lambda: display.ui.screen == "result")
    assert display.ui.result.ok
    tap(display, "new_sale")

    _sell_offline(display, "6", until, tap, on_screen)
    # the card is read: the confirm screen comes back with the warning, nothing stored yet
    until(display, lambda: display.ui.screen == "confirm_offline" and display.widget("same_card_warning"))
    assert on_screen(display, warning) and len(kiosk.store.live()) == 1
    tap(display, "offline_confirm")
    until(display, lambda: display.ui.screen == "result")
    assert display.ui.result.ok and len(kiosk.store.live()) == 2
    tap(display, "new_sale")

    _sell_offline(display, "7", until, tap, on_screen)
    until(display, lambda: display.ui.screen == "result")
    assert display.ui.result.status == REFUSED and display.ui.result.limit == "same_card"
    assert on_screen(display, refused)
    assert sorted(p.amount for p in kiosk.store.live()) == [500, 600]
    assert fake_stripe.payment_intents == []


def test_touchscreen_cancel_on_the_warning_stores_nothing(screen, fake_stripe):
    from test_touchscreen import on_screen, tap, until
    kiosk, display = screen()
    fake_stripe.set_offline(True)
    _sell_offline(display, "5", until, tap, on_screen)
    until(display, lambda: display.ui.screen == "result")
    tap(display, "new_sale")
    _sell_offline(display, "6", until, tap, on_screen)
    until(display, lambda: display.ui.screen == "confirm_offline" and display.widget("same_card_warning"))
    tap(display, "offline_cancel")
    until(display, lambda: display.ui.screen == "sale")
    assert [p.amount for p in kiosk.store.live()] == [500]
