"""Restored data files never charge twice (issue 14, item 1): copy the data
directory, forward, put the old copy back, let Stripe forget its idempotency
keys -- the next pass finds the sales Stripe already holds and looks them up
instead of sending them again."""
from __future__ import annotations

import shutil

import pytest

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


RESTORES = {"tried": 0, "survived": 0}


def restore_in_place(copy, data):
    """`cp old new` over the files that are there: same inodes, so their witnesses stay (a cut, then)."""
    for file in copy.iterdir():
        if (data / file.name).exists():
            (data / file.name).write_bytes(file.read_bytes())
        else:
            shutil.copy2(file, data / file.name)


@pytest.mark.parametrize("when", ["before_any_sync", "between_two_syncs"])
@pytest.mark.parametrize("how", ["whole_folder", "in_place", "queue_file_only", "second_kiosk"])
def test_no_restore_charges_twice(tmp_path, fake_stripe, when, how):
    """The ways a vendor or a helper puts old files back, each after Stripe
    forgot its idempotency keys: every sale is charged exactly once."""
    config = write_config(tmp_path, fake_stripe.url, kiosk={"offline_behavior": "force_offline"})
    assert run_kiosk("init", "--config", config).returncode == 0
    data = tmp_path / "data"
    for amount in ("10.00", "12.50"):
        assert run_kiosk("charge", amount, "--config", config).returncode == 0
    if when == "between_two_syncs":
        assert run_kiosk("sync", "--config", config).returncode == 0
        assert run_kiosk("charge", "7.25", "--config", config).returncode == 0
    snapshot(data, tmp_path / "copy")
    assert run_kiosk("sync", "--config", config).returncode == 0
    assert run_kiosk("charge", "3.00", "--config", config).returncode == 0      # taken after the backup
    ids = {p["id"] for p in run_json("queue", "--all", "--config", config)}
    fake_stripe.prune_idempotency_keys()
    if how == "whole_folder":
        restore(tmp_path / "copy", data)
    elif how == "in_place":
        restore_in_place(tmp_path / "copy", data)
    elif how == "queue_file_only":
        (data / "live.kdb").write_bytes((tmp_path / "copy" / "live.kdb").read_bytes())
    else:                                   # the same card copied into a second kiosk, both syncing
        other = tmp_path / "other"
        other.mkdir()
        other_config = write_config(other, fake_stripe.url, kiosk={"offline_behavior": "force_offline"})
        snapshot(tmp_path / "copy", other / "data")
        assert run_kiosk("sync", "--config", other_config).returncode in (0, 5)
    result = run_kiosk("sync", "--config", config)
    assert result.returncode == 0, result.stderr
    RESTORES["tried"] += 1
    for payment_id in ids:
        assert len(fake_stripe.intents_for(payment_id)) <= 1, f"{payment_id} charged twice ({how}, {when})"
    charged = [pid for pid in ids if fake_stripe.intents_for(pid)]
    kiosk_ids = [i["metadata"]["kiosk_payment_id"] for i in fake_stripe.payment_intents]
    assert len(kiosk_ids) == len(set(kiosk_ids))
    RESTORES["survived"] += len(charged) >= len(ids) - 1     # the sale taken after the backup may be gone
    print(f"\nrestores so far: {RESTORES['tried']} tried, {RESTORES['survived']} survived, 0 doubled")
