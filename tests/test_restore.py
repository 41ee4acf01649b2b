"""Restored data files never charge twice (issue 14, item 1): copy the data
directory, forward, put the old copy back, let Stripe forget its idempotency
keys -- the next pass finds the sales Stripe already holds and looks them up
instead of sending them again."""
from __future__ import annotations

import shutil

from conftest import run_json, run_kiosk, write_config


def snapshot(data, to):
    shutil.copytree(data, to, ignore=shutil.ignore_patterns("kiosk.lock", "*-shm"))


def restore(copy, data):
    shutil.rmtree(data)
    shutil.copytree(copy, data)


def test_restored_sales_are_looked_up_not_charged_again(tmp_path, fake_stripe):
    config = write_config(tmp_path, fake_stripe.url, kiosk={"offline_behavior": "force_offline"})
    assert run_kiosk("init", "--config", config).returncode == 0
    for amount in ("10.00", "12.50", "7.25"):
        assert run_kiosk("charge", amount, "--config", config).returncode == 0
    data = tmp_path / "data"
    snapshot(data, tmp_path / "copy")                 # the vendor's backup, taken before the sync
    assert run_kiosk("sync", "--config", config).returncode == 0
    charged = {p["id"]: p["payment_intent"] for p in run_json("queue", "--all", "--config", config)}
    assert len(charged) == 3 and all(charged.values())
    restore(tmp_path / "copy", data)                  # ... put back: three sales pending again
    fake_stripe.prune_idempotency_keys()              # Stripe keeps keys 24 h at least, then may not
    assert [p["state"] for p in run_json("queue", "--all", "--config", config)] == ["pending"] * 3
    assert run_kiosk("sync", "--config", config).returncode == 0
    after = {p["id"]: (p["state"], p["payment_intent"]) for p in run_json("queue", "--all", "--config", config)}
    assert after == {pid: ("succeeded", intent) for pid, intent in charged.items()}
    for pid in charged:
        assert len(fake_stripe.intents_for(pid)) == 1, f"{pid} charged twice"


def test_a_pass_that_cannot_ask_stripe_sends_nothing(tmp_path, fake_stripe, open_kiosk):
    config = write_config(tmp_path, fake_stripe.url, kiosk={"offline_behavior": "force_offline"})
    kiosk = open_kiosk(config, create=True)
    kiosk.take_sale(1000, card="visa")
    assert kiosk.check_online()
    fake_stripe.fail_next(2, status=500)      # the pass's online check (one hiccup) and its question
    report = kiosk.forward()
    assert report.reached and report.succeeded == 0 and report.pending == 1
    assert fake_stripe.payment_intents == []
    assert kiosk.forward().succeeded == 1     # asked again next pass: nothing held, so sent
    kiosk.close()
