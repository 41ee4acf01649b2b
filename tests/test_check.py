""""Ready to sell offline?" -- ``kiosk check`` and ``Kiosk.readiness`` against
the strict fake Stripe: every reason a vendor could find out too late.
``kiosk check`` runs in this process (``run_kiosk``), and in a second process
(``run_kiosk_process``) beside a kiosk holding the queue."""
from __future__ import annotations

import json
import time
from datetime import timedelta

import pytest

from kiosk.payment import utcnow

from conftest import run_kiosk, run_kiosk_process, write_config


@pytest.fixture
def config(tmp_path, fake_stripe):
    path = write_config(tmp_path, fake_stripe.url)
    assert run_kiosk("init", "--config", path).returncode == 0
    return path


def check(config, run=run_kiosk, **kwargs):
    result = run("check", "--json", "--config", config, **kwargs)
    assert result.returncode in (0, 1), result.stderr
    answer = json.loads(result.stdout)
    assert answer["ready"] is (result.returncode == 0)
    return answer, {line["name"]: line for line in answer["checks"]}


def test_ready_with_every_line_named(config):
    answer, lines = check(config)
    assert answer["ready"], answer
    assert list(lines) == ["api_key", "stripe", "api_version", "clock", "reader", "queue", "offline_sales", "sync"]
    assert "test mode" in lines["api_key"]["detail"] and "restricted key" in lines["api_key"]["advice"]
    assert "2026-10-28.endive" in lines["api_version"]["detail"]
    text = run_kiosk("check", "--config", config)
    assert text.returncode == 0 and text.stdout.strip().endswith("Ready to sell offline.")
    assert len(text.stdout.strip().splitlines()) == len(lines) + 1


def test_a_restricted_key_needs_no_advice(config):
    _, lines = check(config, env={"STRIPE_API_KEY": "rk_test_" + "r" * 24})
    assert lines["api_key"]["ok"] and lines["api_key"]["advice"] is None
    assert "restricted" in lines["api_key"]["detail"]


def test_a_clock_an_hour_off_is_not_ready(config, fake_stripe):
    fake_stripe.clock = lambda: time.time() + 3600
    answer, lines = check(config)
    assert not answer["ready"] and not lines["clock"]["ok"]
    assert "60 min behind" in lines["clock"]["detail"] and lines["clock"]["advice"]
    assert all(line["ok"] for name, line in lines.items() if name != "clock")
    text = run_kiosk("check", "--config", config)
    assert text.returncode == 1 and "NOT  clock:" in text.stdout and "1 problem" in text.stdout


def test_offline_now_says_what_it_could_not_check(config, fake_stripe):
    fake_stripe.set_offline(True)
    answer, lines = check(config)
    assert not answer["ready"] and not lines["stripe"]["ok"] and "cannot be reached" in lines["stripe"]["detail"]
    assert "clock" not in lines and lines["reader"]["ok"] and lines["queue"]["ok"]


def test_a_rejected_or_missing_key_is_not_ready(config, fake_stripe):
    fake_stripe.reject_api_keys(True)
    _, lines = check(config)
    assert not lines["stripe"]["ok"] and "rejected" in lines["stripe"]["detail"].lower()
    _, lines = check(config, env={"STRIPE_API_KEY": ""})
    assert not lines["api_key"]["ok"] and "STRIPE_API_KEY" in lines["api_key"]["advice"]


def test_a_tap_to_pay_reader_or_online_only_selling_is_not_ready(tmp_path, fake_stripe):
    path = write_config(tmp_path, fake_stripe.url, reader__simulated={"mode": "tap_to_pay"},
                        kiosk={"offline_behavior": "require_online"})
    run_kiosk("init", "--config", path)
    answer, lines = check(path)
    assert not lines["reader"]["ok"] and "cannot take payments offline" in lines["reader"]["detail"]
    assert not lines["offline_sales"]["ok"] and "require_online" in lines["offline_sales"]["detail"]
    assert sum(not line["ok"] for line in answer["checks"]) == 2


def test_a_queue_held_by_the_running_kiosk_still_checks_stripe(config, open_kiosk):
    running = open_kiosk(config)
    answer, lines = check(config, run=run_kiosk_process)      # a second process, as beside `kiosk run`
    assert not answer["ready"] and not lines["queue"]["ok"] and "in use" in lines["queue"]["detail"]
    assert lines["stripe"]["ok"] and lines["clock"]["ok"]
    running.close()


def test_payments_waiting_since_the_first_reminder_are_not_ready(tmp_path, fake_stripe, open_kiosk):
    kiosk = open_kiosk(write_config(tmp_path, fake_stripe.url, kiosk={"offline_behavior": "force_offline"}))
    kiosk.take_sale(1000, "usd", card="visa")
    lines = {line.name: line for line in kiosk.readiness()}
    assert lines["sync"].ok and "never synced" in lines["sync"].detail
    kiosk.clock = lambda: utcnow() + timedelta(hours=13)
    lines = {line.name: line for line in kiosk.readiness()}
    assert not lines["sync"].ok and "13 h old" in lines["sync"].detail
    assert kiosk.last_readiness is not None and not all(line.ok for line in kiosk.last_readiness)
