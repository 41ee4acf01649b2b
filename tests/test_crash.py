"""Power cuts: SIGKILL the real ``kiosk`` process inside a sale and inside
forwarding, start again, and count at the Stripe peer and in the queue:
0 payments lost, 0 charged twice.

Every command that is killed runs as a real child process
(``run_kiosk_process``, or ``Popen``); the commands around them (``init``, the
``sync`` and ``queue`` after the restart) run in this process (``run_kiosk``),
opening the queue afresh as a new process would."""
from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time

import pytest

from conftest import run_json, run_kiosk, run_kiosk_process, write_config


def kiosk_cmd(*args):
    return [sys.executable, "-m", "kiosk.cli", *map(str, args)]


def queue(config):
    return run_json("queue", "--all", "--config", config)


def assert_exactly_once(fake_stripe, payments):
    for payment in payments:
        intents = fake_stripe.intents_for(payment["id"])
        assert len(intents) == 1, f"{payment['id']} has {len(intents)} PaymentIntents"
        assert payment["payment_intent"] == intents[0]["id"]
    kiosk_ids = [i["metadata"]["kiosk_payment_id"] for i in fake_stripe.payment_intents]
    assert len(kiosk_ids) == len(set(kiosk_ids))


@pytest.fixture
def config(tmp_path, fake_stripe):
    path = write_config(tmp_path, fake_stripe.url)
    assert run_kiosk("init", "--config", path).returncode == 0
    return path


def test_killed_after_card_read_stores_nothing_and_tells_nobody(config):
    result = run_kiosk_process("charge", "10.00", "--offline", "--config", config, env={"KIOSK_CRASH_AT": "sale:after_card"})
    assert result.returncode == -signal.SIGKILL and "APPROVED" not in result.stdout
    assert queue(config) == []


@pytest.mark.parametrize("offline", [True, False])
def test_killed_after_storing_a_sale_keeps_it_and_charges_it_once(config, fake_stripe, offline):
    flags = ["--offline"] if offline else []
    result = run_kiosk_process("charge", "10.00", *flags, "--config", config, env={"KIOSK_CRASH_AT": "sale:after_store"})
    assert result.returncode == -signal.SIGKILL
    [payment] = queue(config)
    assert payment["state"] == "pending" and payment["offline"] is offline
    assert fake_stripe.payment_intents == []
    assert run_kiosk("sync", "--config", config).returncode == 0
    [payment] = queue(config)
    assert payment["state"] == "succeeded"
    assert_exactly_once(fake_stripe, [payment])


def test_an_offline_sale_killed_before_approved_was_shown_is_told_at_the_next_start(config):
    """Stored, then killed before "approved" reached the vendor: the next start
    says so once (it will be charged: do not take it again).  A sale that was
    shown, and a queue from before this was kept, are not told."""
    assert run_kiosk("charge", "9.00", "--offline", "--config", config).returncode == 0       # shown
    killed = run_kiosk_process("charge", "10.00", "--offline", "--config", config,
                               env={"KIOSK_CRASH_AT": "sale:after_store"})
    assert killed.returncode == -signal.SIGKILL and "APPROVED" not in killed.stdout
    told = [n for n in run_json("notices", "--config", config) if n["kind"] == "interrupted"]
    assert len(told) == 1 and told[0]["payment"]["amount"] == 1000
    assert "do not charge the card again" in told[0]["message"]
    assert run_kiosk("status", "--config", config).returncode == 0                   # told once, not per start
    assert len([n for n in run_json("notices", "--config", config) if n["kind"] == "interrupted"]) == 1


@pytest.mark.parametrize("point", ["forward:after_mark", "forward:after_send"])
def test_killed_inside_forwarding_charges_once_even_after_keys_are_pruned(config, fake_stripe, point):
    for card in ("visa", "mastercard", "insufficient_funds"):
        assert run_kiosk("charge", "10.00", "--offline", "--card", card, "--config", config).returncode == 0
    for _ in range(3):   # each run is killed at its first payment
        result = run_kiosk_process("sync", "--config", config, env={"KIOSK_CRASH_AT": point})
        assert result.returncode == -signal.SIGKILL
        fake_stripe.prune_idempotency_keys()
    # each killed run left its payment marked as an attempt with unknown outcome
    assert [p["state"] for p in queue(config)].count("forwarding") >= 1
    assert run_kiosk("sync", "--config", config).returncode == 0
    payments = queue(config)
    assert len(payments) == 3
    assert sorted(p["state"] for p in payments) == ["failed", "succeeded", "succeeded"]
    assert_exactly_once(fake_stripe, payments)


def test_killed_while_stripe_is_answering(config, fake_stripe):
    """The charge commits at Stripe while the kiosk waits for the answer; the
    kiosk dies; Stripe forgets the key; the kiosk comes back."""
    assert run_kiosk("charge", "10.00", "--offline", "--config", config).returncode == 0
    fake_stripe.hang_next(1, 30)
    proc = subprocess.Popen(kiosk_cmd("sync", "--config", config), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 20
    while not fake_stripe.payment_intents and time.monotonic() < deadline:
        time.sleep(0.02)
    assert fake_stripe.payment_intents, "the request never reached Stripe"
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    fake_stripe.prune_idempotency_keys()
    assert run_kiosk("sync", "--config", config).returncode == 0
    [payment] = queue(config)
    assert payment["state"] == "succeeded"
    assert_exactly_once(fake_stripe, [payment])


def test_online_sale_killed_mid_request_is_settled_once_later(config, fake_stripe):
    fake_stripe.hang_next(1, 30)
    proc = subprocess.Popen(kiosk_cmd("charge", "12.00", "--config", config),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 20
    while not fake_stripe.payment_intents and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    fake_stripe.prune_idempotency_keys()
    [payment] = queue(config)
    assert payment["state"] == "forwarding"      # outcome unknown, not guessed
    told = [n for n in run_json("notices", "--config", config) if n["kind"] == "interrupted"]
    assert len(told) == 1 and "do not charge the card again" in told[0]["message"]
    assert run_kiosk("sync", "--config", config).returncode == 0
    [payment] = queue(config)
    assert payment["state"] == "succeeded"
    assert_exactly_once(fake_stripe, [payment])


def test_random_kills_lose_no_acknowledged_sale(config, fake_stripe):
    rng = random.Random(20261128)
    acknowledged = []
    for round_ in range(12):
        proc = subprocess.Popen(kiosk_cmd("charge", f"{5 + round_}.00", "--offline", "--json", "--config", config),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            # even rounds are cut short somewhere in start-up, the sale or the write
            out, _ = proc.communicate(timeout=rng.uniform(0.05, 0.4) if round_ % 2 == 0 else 30)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            out, _ = proc.communicate()
        if proc.returncode == 0:
            acknowledged.append(json.loads(out)["payment"]["id"])
    assert len(acknowledged) >= 6
    stored = {p["id"] for p in queue(config)}
    assert set(acknowledged) <= stored
    assert run_kiosk("sync", "--config", config).returncode == 0
    payments = queue(config)
    assert all(p["state"] == "succeeded" for p in payments)
    assert_exactly_once(fake_stripe, payments)


def test_power_cuts_after_each_try_of_a_declined_card_never_exceed_the_retry_bound(tmp_path, fake_stripe):
    """A card declined for now is tried at most 1 + len(decline_retry_minutes)
    times whatever the power does: a try whose answer was cut off is counted
    from Stripe's record, not tried again (card networks fine excess retries)."""
    path = write_config(tmp_path, fake_stripe.url, sync={"decline_retry_minutes": [0.0, 0.0]})
    run_kiosk("init", "--config", path)
    assert run_kiosk("charge", "10.00", "--offline", "--config", path).returncode == 0
    fake_stripe.decline_next(20, decline_code="issuer_not_available")
    assert run_kiosk("sync", "--config", path).returncode == 0          # first try: declined for now
    for _ in range(4):
        cut = run_kiosk_process("sync", "--config", path, env={"KIOSK_CRASH_AT": "forward:after_send"})
        assert cut.returncode == -signal.SIGKILL
    for _ in range(4):
        run_kiosk("sync", "--config", path)
    [payment] = queue(config=path)
    tries = [r for r in fake_stripe.requests if r["method"] == "POST" and not r["replayed"]
             and r["path"].rsplit("/", 1)[-1] in ("payment_intents", "confirm")]
    assert payment["state"] == "failed" and payment["decline_code"] == "issuer_not_available"
    assert len(tries) == 3, [r["path"] for r in tries]
    assert len(fake_stripe.intents_for(payment["id"])) == 1
