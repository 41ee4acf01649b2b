"""A missing or rejected Stripe key is named as such everywhere, never as
"Stripe unreachable": ``kiosk sync`` (exit 4, unreachable stays 3), the offline
question of ``kiosk charge``, ``kiosk status``, ``kiosk check``, the notice
feed and the touchscreen -- against the strict fake Stripe, with the key unset
(``STRIPE_API_KEY=""``) or refused by Stripe (``reject_api_keys``).  An offline
sale stored meanwhile is sent, once, when a good key is given."""
from __future__ import annotations

import json
import os

os.environ["SDL_VIDEODRIVER"] = "dummy"      # before pygame is imported anywhere in this process
os.environ["SDL_AUDIODRIVER"] = "dummy"

import pytest  # noqa: E402

from conftest import run_json, run_kiosk, write_config  # noqa: E402

UNREACHABLE_WORDS = ("unreachable", "cannot be reached", "could not be reached")
NO_KEY = {"STRIPE_API_KEY": ""}


@pytest.fixture
def config(tmp_path, fake_stripe):
    path = write_config(tmp_path, fake_stripe.url)
    assert run_kiosk("init", "--config", path).returncode == 0
    return path


@pytest.fixture(params=["missing", "rejected"])
def bad_key(request, fake_stripe):
    """``(kind, env)``: the key unset, or a key the fake Stripe refuses (401)."""
    if request.param == "rejected":
        fake_stripe.reject_api_keys(True)
        return "rejected", {}
    return "missing", NO_KEY


WORDS = {"missing": "no Stripe API key", "rejected": "Stripe rejected the API key"}


def never_unreachable(text: str) -> None:
    assert not any(words in text for words in UNREACHABLE_WORDS), text


def test_sync_names_the_key_and_exits_4_keeping_the_queue(config, fake_stripe, bad_key):
    kind, env = bad_key
    assert run_kiosk("charge", "4.00", "--offline", "--config", config, env=env).returncode == 0
    result = run_kiosk("sync", "--config", config, env=env)
    assert result.returncode == 4, result.stderr
    assert WORDS[kind] in result.stderr
    never_unreachable(result.stdout + result.stderr)
    report = run_kiosk("sync", "--json", "--config", config, env=env)
    assert report.returncode == 4
    answer = json.loads(report.stdout)
    assert WORDS[kind] in answer["auth_error"] and answer["pending"] == 1 and answer["succeeded"] == 0
    assert answer["reached"] is (kind == "rejected")          # Stripe answered the rejected key; nothing was asked without one
    assert [p["state"] for p in run_json("queue", "--config", config)] == ["pending"]
    assert fake_stripe.payment_intents == []
    feed = run_json("notices", "--config", config)
    kinds = [n["kind"] for n in feed]
    assert ("key_missing" if kind == "missing" else "auth_failed") in kinds
    for notice in feed:
        never_unreachable(notice["message"])


def test_unreachable_is_still_exit_3(config, fake_stripe):
    fake_stripe.set_offline(True)
    result = run_kiosk("sync", "--config", config)
    assert result.returncode == 3 and "nothing sent" in result.stderr
    assert "API key" not in result.stderr


def test_the_offline_question_names_the_key_and_the_sale_is_sent_once_a_key_works(config, fake_stripe, bad_key):
    kind, env = bad_key
    asked = run_kiosk("charge", "6.00", "--config", config, env=env)     # no tty, no --yes: asked, not confirmed
    assert asked.returncode == 1 and "CANCELLED" in asked.stdout
    [question] = [line for line in asked.stderr.splitlines() if "Store this sale offline?" in line]
    assert question.startswith({"missing": "No Stripe API key is set.",
                                "rejected": "Stripe rejected the API key."}[kind]), asked.stderr
    never_unreachable(asked.stdout + asked.stderr)
    assert run_json("queue", "--config", config) == []                     # nothing stored unconfirmed
    stored = run_kiosk("charge", "6.00", "--yes", "--customer", "ana@example.com", "--config", config, env=env)
    assert stored.returncode == 0 and "APPROVED OFFLINE" in stored.stdout
    never_unreachable(stored.stdout + stored.stderr)
    fake_stripe.reject_api_keys(False)
    assert run_kiosk("sync", "--config", config).returncode == 0            # the good key from conftest
    [payment] = run_json("queue", "--config", config)
    assert payment["state"] == "succeeded"
    assert len(fake_stripe.intents_for(payment["id"])) == 1


def test_online_only_refusal_names_the_key(tmp_path, fake_stripe, bad_key):
    kind, env = bad_key
    path = write_config(tmp_path, fake_stripe.url, kiosk={"offline_behavior": "require_online"})
    run_kiosk("init", "--config", path)
    result = run_kiosk("charge", "5.00", "--config", path, env=env)
    assert result.returncode == 1 and "online sales only" in result.stdout
    assert WORDS[kind].lower() in result.stdout.lower()
    never_unreachable(result.stdout + result.stderr)
    assert run_json("queue", "--config", path) == []


def test_status_and_check_name_the_key(config, fake_stripe, bad_key):
    kind, env = bad_key
    text = run_kiosk("status", "--config", config, env=env)
    assert text.returncode == 0 and "OFFLINE" in text.stdout and WORDS[kind] in text.stdout
    never_unreachable(text.stdout + text.stderr)
    status = json.loads(run_kiosk("status", "--json", "--config", config, env=env).stdout)
    assert status["online"] is False and status["key_problem"] == kind and WORDS[kind] in status["sync_problem"]
    check = run_kiosk("check", "--json", "--config", config, env=env)
    assert check.returncode == 1
    failing = [line for line in json.loads(check.stdout)["checks"] if not line["ok"]]
    assert failing and all(WORDS[kind].lower() in line["detail"].lower() for line in failing)
    never_unreachable(check.stdout)
    with_key = json.loads(run_kiosk("status", "--json", "--config", config).stdout)
    assert with_key["key_problem"] == (None if kind == "missing" else "rejected")


# -- the touchscreen, driven as a vendor drives it -------------------------------------------

@pytest.fixture
def screen(tmp_path, fake_stripe, open_kiosk, touchscreens, monkeypatch):
    pytest.importorskip("pygame")

    def open_screen(kind: str, language: str = "en"):
        if kind == "missing":
            monkeypatch.setenv("STRIPE_API_KEY", "")
        else:
            fake_stripe.reject_api_keys(True)
        path = write_config(tmp_path, fake_stripe.url, display={"use": "touchscreen"},
                            kiosk={"language": language})
        kiosk = open_kiosk(path)
        display = touchscreens(kiosk)
        return kiosk, display

    return open_screen


SCREEN_WORDS = {
    ("missing", "en"): ("No Stripe API key — sell offline?", "No API key"),
    ("rejected", "en"): ("Stripe key rejected — sell offline?", "Key rejected"),
    ("missing", "ja"): ("StripeのAPIキーがありません — オフラインで販売しますか？", "APIキーなし"),
    ("rejected", "ja"): ("StripeがAPIキーを拒否 — オフラインで販売しますか？", "APIキー拒否"),
}


@pytest.mark.parametrize("kind, language", list(SCREEN_WORDS))
def test_the_touchscreen_names_the_key(screen, fake_stripe, kind, language):
    from test_touchscreen import on_screen, tap, type_amount, until
    title, status_words = SCREEN_WORDS[kind, language]
    kiosk, display = screen(kind, language)
    kiosk.check_online()
    display.catch_up()
    assert on_screen(display, status_words)                   # the status bar says why it is offline
    display.show("sync")
    display.step()
    assert on_screen(display, status_words)
    display.show("sale")
    display.step()
    type_amount(display, "5")
    tap(display, "charge")
    until(display, lambda: display.ui.screen == "confirm_offline")
    assert on_screen(display, title)
    for text in display.texts():
        assert "Stripe unreachable" not in text and "接続できません" not in text, text
    tap(display, "offline_confirm")
    until(display, lambda: display.ui.screen == "result")
    [payment] = kiosk.store.live()                             # stored: sent once the key is fixed
    assert payment.offline and payment.state == "pending"
    kiosk.forward()                                            # the alarm, once, through the screen
    display.catch_up()
    display.show("sale")
    display.step()
    alarm = "notice_key_missing" if kind == "missing" else "notice_auth_failed"
    assert any(alert.text == display.catalog(alarm) for alert in display.ui.alerts)
    assert fake_stripe.payment_intents == []
