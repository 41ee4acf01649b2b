"""The built-in storage plugin as the kiosk uses it: nothing readable on
disk, settled payments out of the live queue, and a damaged file is an alarm,
never an empty queue."""
from __future__ import annotations

import json
import os
import stat

import pytest

from power_cut import acknowledged_only, records_of

from kiosk.interfaces import StoreAlarm
from kiosk.payment import SUCCEEDED

from conftest import run_kiosk, write_config


@pytest.fixture
def offline_config(tmp_path, fake_stripe):
    path = write_config(tmp_path, fake_stripe.url, kiosk={"offline_behavior": "force_offline"})
    assert run_kiosk("init", "--config", path).returncode == 0
    return path


def test_nothing_sensitive_is_readable_on_disk(tmp_path, offline_config, open_kiosk):
    kiosk = open_kiosk(offline_config, create=False)
    settled = [kiosk.take_sale(amount, card=card, customer="zoe.follow-up@example.com").payment
               for amount, card in ((1234, "visa"), (5678, "insufficient_funds"))]
    assert kiosk.forward().reached
    waiting = kiosk.take_sale(3456, card="mastercard", customer="zoe.follow-up@example.com").payment
    intents = [kiosk.store.get(p.id).payment_intent for p in settled]
    kiosk.close()
    secrets = [b"pm_card", b"zoe.follow-up", b"kiosk_payment_id", b"4242", b"9995", b"4444",
               b"1234", b"5678", b"3456", b"12.34", b"insufficient", *(i.encode() for i in intents if i)]
    files = [path for path in (tmp_path / "data").iterdir() if path.is_file()]
    assert {f.name for f in files} >= {"kiosk.key", "live.kdb", "history.sqlite"}
    for path in files:
        if path.name in ("kiosk.key", "kiosk.lock"):
            continue
        raw = path.read_bytes()
        # settled payments' ids and times are history's index columns: readable by design there only
        hidden = secrets + [waiting.id.encode()] + ([] if path.name.startswith("history.sqlite")
                                                    else [p.id.encode() for p in settled])
        for secret in hidden:
            assert secret not in raw, f"{secret!r} readable in {path.name}"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_settled_payments_leave_the_live_queue(offline_config, open_kiosk):
    kiosk = open_kiosk(offline_config, create=False)
    for _ in range(3):
        kiosk.take_sale(1000, card="visa")
    kiosk.forward()
    assert kiosk.store.live() == [] and len(kiosk.store.live_payments) == 0
    assert [p.state for p in kiosk.store.settled()] == [SUCCEEDED] * 3
    assert len(list(kiosk.store.settled(limit=2))) == 2


def test_half_settled_payment_is_mended_on_open(offline_config, open_kiosk):
    kiosk = open_kiosk(offline_config, create=False)
    payment = kiosk.take_sale(1000, card="visa").payment
    # a crash between "write to history" and "remove from live" leaves both copies
    payment.state, payment.payment_intent = SUCCEEDED, "pi_from_before_the_crash"
    kiosk.store.history.put(payment)
    kiosk.close()
    kiosk = open_kiosk(offline_config, create=False)
    assert kiosk.store.live() == []
    assert kiosk.store.get(payment.id).payment_intent == "pi_from_before_the_crash"


def damage_flip(path):
    raw = bytearray(path.read_bytes())
    raw[len(raw) - 20] ^= 0x01
    path.write_bytes(bytes(raw))


def damage_empty(path):
    path.write_bytes(b"")


def damage_header(path):
    path.write_bytes(path.read_bytes()[:5])


def damage_delete(path):
    path.unlink()


def test_a_damaged_queue_keeps_selling_with_an_alarm_until_recover(tmp_path, offline_config):
    """One flipped bit: every sale that still reads is kept and forwarded,
    new sales are taken, the damaged file is kept aside once however often
    the kiosk starts, and `kiosk status` alarms until `kiosk recover`."""
    for amount in ("10.00", "11.00", "12.00"):
        assert run_kiosk("charge", amount, "--config", offline_config).returncode == 0
    live = tmp_path / "data" / "live.kdb"
    raw = bytearray(live.read_bytes())
    # each sale is two whole-payment records: stored, then marked shown (written after, off the sale path);
    # a bad byte in each of the last sale's two loses it (one alone would not: the other holds it whole)
    for start, length in [(start, length) for start, length in records_of(bytes(raw)) if length > 500][-2:]:
        raw[start + length // 2] ^= 0x01
    live.write_bytes(bytes(raw))
    for _ in range(3):
        status = run_kiosk("status", "--json", "--config", offline_config)
        assert status.returncode == 0, status.stderr
    [alarm] = json.loads(status.stdout)["store_alarms"]
    assert "live.kdb was damaged" in alarm and "kiosk recover" in alarm and "could not read: bytes" in alarm
    kept = [p for p in live.parent.iterdir() if p.name.startswith("live.kdb.bad-")]
    assert len(kept) == 1 and kept[0].read_bytes() == bytes(raw)     # once, not once per start
    assert run_kiosk("charge", "13.00", "--config", offline_config).returncode == 0
    queue = json.loads(run_kiosk("queue", "--json", "--config", offline_config).stdout)
    assert sorted(p["amount"] for p in queue if p["state"] == "pending") == [1000, 1100, 1300]
    text = run_kiosk("status", "--config", offline_config).stdout
    assert "ALARM: live.kdb was damaged" in text
    check = run_kiosk("check", "--config", offline_config)
    assert check.returncode == 1 and "live.kdb was damaged" in check.stdout and "kiosk recover" in check.stdout
    recover = run_kiosk("recover", "--config", offline_config)
    assert recover.returncode == 1 and "could not read: bytes" in recover.stdout     # one sale is gone: said so
    assert json.loads(run_kiosk("status", "--json", "--config", offline_config).stdout)["store_alarms"] == []


@pytest.mark.parametrize("damage, words", [
    (damage_empty, "empty"),
    (damage_header, "header"),
    (damage_delete, "missing"),
])
def test_damaged_queue_is_an_alarm_and_kept_for_inspection(tmp_path, offline_config, damage, words):
    for _ in range(2):
        assert run_kiosk("charge", "10.00", "--config", offline_config).returncode == 0
    live = tmp_path / "data" / "live.kdb"
    damage(live)
    before = live.read_bytes() if live.exists() else None
    result = run_kiosk("queue", "--json", "--config", offline_config)
    assert result.returncode == 5, result.stdout
    assert result.stderr.startswith("kiosk: alarm: ") and result.stderr.count("\n") == 1
    assert "live.kdb" in result.stderr and words in result.stderr
    assert result.stdout == ""                          # never an empty queue
    if before is not None:
        assert live.read_bytes() == before              # the original stays where it was
        kept = [p for p in live.parent.iterdir() if p.name.startswith("live.kdb.bad-")]
        assert kept and kept[0].read_bytes() == before and str(kept[0].name) in result.stderr
    # a sale cannot be stored on top of a damaged queue either
    assert run_kiosk("charge", "10.00", "--config", offline_config).returncode == 5


def test_wrong_key_is_an_alarm(tmp_path, offline_config):
    assert run_kiosk("charge", "10.00", "--config", offline_config).returncode == 0
    key = tmp_path / "data" / "kiosk.key"
    key.write_bytes(os.urandom(32))
    result = run_kiosk("queue", "--config", offline_config)
    assert result.returncode == 5 and "wrong key or tampered" in result.stderr


def test_missing_key_is_an_alarm_not_a_new_key(tmp_path, offline_config):
    assert run_kiosk("charge", "10.00", "--config", offline_config).returncode == 0
    (tmp_path / "data" / "kiosk.key").unlink()
    result = run_kiosk("queue", "--config", offline_config)
    assert result.returncode == 5 and "kiosk.key" in result.stderr
    assert not (tmp_path / "data" / "kiosk.key").exists()


def test_power_cut_mid_append_loses_only_the_unacknowledged_write(tmp_path, offline_config, open_kiosk):
    for _ in range(2):
        assert run_kiosk("charge", "10.00", "--config", offline_config).returncode == 0
    live = tmp_path / "data" / "live.kdb"
    whole = live.read_bytes()
    assert run_kiosk("charge", "11.00", "--config", offline_config).returncode == 0
    grown = live.read_bytes()
    live.write_bytes(grown[: len(whole) + 100])           # the third sale's append, cut short
    acknowledged_only(live, whole)
    kiosk = open_kiosk(offline_config, create=False)
    assert [p.amount for p in kiosk.store.live()] == [1000, 1000]
    assert kiosk.store.notices()[-1]["kind"] == "store_recovered"
    assert any(p.name.startswith("live.kdb.torn-") for p in live.parent.iterdir())
    assert kiosk.take_sale(1200, card="visa").ok
    kiosk.close()
    assert len(open_kiosk(offline_config, create=False).store.live()) == 3


def test_store_refuses_to_open_without_init(tmp_path):
    from kiosk_builtins.tinydb_store import TinyDBStore
    with pytest.raises(StoreAlarm, match="run `kiosk init` first"):
        TinyDBStore(tmp_path / "nothing-here")


def test_init_never_recreates_a_missing_queue(tmp_path, offline_config):
    for _ in range(3):
        assert run_kiosk("charge", "10.00", "--config", offline_config).returncode == 0
    (tmp_path / "data" / "live.kdb").rename(tmp_path / "elsewhere.kdb")
    again = run_kiosk("init", "--config", offline_config)
    assert again.returncode == 5 and "live.kdb" in again.stderr
    assert not (tmp_path / "data" / "live.kdb").exists()
    (tmp_path / "elsewhere.kdb").rename(tmp_path / "data" / "live.kdb")
    assert len(json.loads(run_kiosk("queue", "--json", "--config", offline_config).stdout)) == 3


def test_history_work_does_not_hold_up_a_sale(offline_config, open_kiosk):
    import threading
    kiosk = open_kiosk(offline_config, create=False)
    store = kiosk.store
    entered, sold, held_throughout = threading.Event(), threading.Event(), []

    def slow_history_work():
        with store.history.lock:         # as a long read or commit of history.sqlite holds it
            entered.set()
            held_throughout.append(sold.wait(30))     # the sale ends while history is busy, or never
    worker = threading.Thread(target=slow_history_work)
    worker.start()
    entered.wait(5)
    try:
        assert kiosk.take_sale(1000, card="visa").ok
        sold.set()
    finally:
        worker.join()
    assert held_throughout == [True], "the sale waited for history's lock"


def test_a_compaction_cut_short_leaves_nothing_behind(tmp_path, offline_config):
    leftover = tmp_path / "data" / ".live.kdb.tmp-0123456789ab"       # what a kill before the rename leaves
    leftover.write_bytes(b"KIOSKLOG1" + bytes(40))
    assert run_kiosk("queue", "--config", offline_config).returncode == 0
    assert not leftover.exists() and (tmp_path / "data" / "live.kdb").exists()
