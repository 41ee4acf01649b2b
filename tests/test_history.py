"""Settled history in ``history.sqlite``: a data directory written before it
(``fixtures/tinydb-history-2adb273``) moves in whole, a kill anywhere in the
move loses nothing, records stay sealed to their rows, the queue writes only
what changed, and ``kiosk queue`` and ``[storage] keep_days`` read and forget
what they should -- never a pending payment or one still to follow up."""
from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from conftest import run_json, run_kiosk, run_kiosk_process, write_config

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "tinydb-history-2adb273"
EXPECTED = json.loads((FIXTURE / "expected.json").read_text())


def old_data(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    shutil.copytree(FIXTURE / "data", data)
    os.chmod(data, 0o700)
    for file in data.iterdir():       # git keeps no file modes: the store insists on 0600
        os.chmod(file, 0o600)
    return data


def config_for(tmp_path, fake_stripe, **sections):
    sections["kiosk"] = {"id": "stall-2adb273", **sections.get("kiosk", {})}
    return write_config(tmp_path, fake_stripe.url, **sections)


def everything(config) -> list[dict]:
    return run_json("queue", "--all", "--config", config)


def assert_all_there(payments: list[dict]) -> None:
    ids = [p["id"] for p in payments]
    assert len(ids) == len(set(ids)), "a payment is listed twice"
    by_id = {p["id"]: p for p in payments}
    assert {pid for pid in EXPECTED["succeeded"]} <= set(by_id)
    assert all(by_id[pid]["state"] == "succeeded" and by_id[pid]["payment_intent"] for pid in EXPECTED["succeeded"])
    for pid in EXPECTED["needs_attention"] + EXPECTED["followed_up"]:
        assert by_id[pid]["state"] == "failed"
    assert [by_id[pid]["followed_up"] for pid in EXPECTED["followed_up"]] == [True]
    assert {p["id"] for p in payments if p["state"] in ("pending", "forwarding")} == set(EXPECTED["pending"])
    assert len(payments) == len(EXPECTED["succeeded"]) + 3 + len(EXPECTED["pending"])


# -- the move from history.kdb and feed.kdb -----------------------------------------

def test_a_directory_of_the_previous_release_moves_into_sqlite_whole(tmp_path, fake_stripe, open_kiosk):
    data = old_data(tmp_path)
    config = config_for(tmp_path, fake_stripe)
    kiosk = open_kiosk(config, create=False)
    store = kiosk.store
    assert not (data / "history.kdb").exists() and not (data / "feed.kdb").exists()
    assert (data / "history.sqlite").exists()
    assert EXPECTED["half_settled"] not in {p.id for p in store.live()}      # mended: settled, so out of the queue
    assert sorted(p.id for p in kiosk.needs_attention()) == sorted(EXPECTED["needs_attention"])
    assert len(store.notices(1000)) >= EXPECTED["notices"]
    assert kiosk.status(check=False)["settled"] == {"count": len(EXPECTED["succeeded"]) + 3}
    settled = list(store.settled())
    assert len(settled) == len(EXPECTED["succeeded"]) + 3
    # newest first, as the old history kept them: the half-settled one was settled last
    assert settled[0].id == EXPECTED["half_settled"]
    assert [p.id for p in settled[::-1][:60]] == EXPECTED["succeeded"][:60]
    report = kiosk.forward(force=True)
    assert report.succeeded == len(EXPECTED["pending"]) and store.live() == []
    kiosk.close()
    for pid in EXPECTED["pending"] + [EXPECTED["half_settled"]]:
        assert len(fake_stripe.intents_for(pid)) <= 1         # the half-settled one was charged before the move
    assert len(fake_stripe.intents_for(EXPECTED["pending"][-1])) == 1
    assert all(p["state"] == "succeeded" for p in everything(config) if p["id"] in EXPECTED["pending"])
    assert sorted(os.listdir(data)) == ["history.sqlite", "kiosk.key", "kiosk.lock", "live.kdb"]


@pytest.mark.parametrize("point", ["migrate:after_batch#1", "migrate:after_batch#3",
                                   "migrate:before_unlink#1", "migrate:before_unlink#2"])
def test_a_kill_anywhere_in_the_move_loses_nothing(tmp_path, fake_stripe, point):
    data = old_data(tmp_path)
    config = config_for(tmp_path, fake_stripe, **{"storage.tinydb": {"migration_batch": 10}})
    cut = run_kiosk_process("queue", "--all", "--json", "--config", config, env={"KIOSK_CRASH_AT": point})
    assert cut.returncode == -signal.SIGKILL, cut.stderr
    assert (data / "history.sqlite").exists()
    assert (data / ("feed.kdb" if point == "migrate:before_unlink#2" else "history.kdb")).exists()
    assert_all_there(everything(config))
    assert not (data / "history.kdb").exists() and not (data / "feed.kdb").exists()


def test_a_damaged_old_history_is_an_alarm_and_nothing_is_moved(tmp_path, fake_stripe):
    data = old_data(tmp_path)
    raw = bytearray((data / "history.kdb").read_bytes())
    raw[len(raw) // 2] ^= 0x40
    (data / "history.kdb").write_bytes(bytes(raw))
    result = run_kiosk("queue", "--config", config_for(tmp_path, fake_stripe))
    assert result.returncode == 5 and "history.kdb" in result.stderr
    assert (data / "history.kdb").exists() and (data / "feed.kdb").exists()


# -- sealed to their rows -------------------------------------------------------------

@pytest.fixture
def settled_store(tmp_path, fake_stripe, open_kiosk):
    config = config_for(tmp_path, fake_stripe, kiosk={"offline_behavior": "force_offline"})
    assert run_kiosk("init", "--config", config).returncode == 0
    kiosk = open_kiosk(config, create=False)
    kiosk.take_sale(1200, card="visa")
    kiosk.take_sale(3400, card="insufficient_funds", customer="+44 20 7946 0000")
    kiosk.take_sale(5600, card="mastercard")
    assert kiosk.forward().reached
    kiosk.close()
    return config, tmp_path / "data" / "history.sqlite"


def edit_rows(path: Path, statement: str, *args) -> None:
    db = sqlite3.connect(path)
    with db:
        db.execute(statement, args)
    db.close()


@pytest.mark.parametrize("tamper", [
    "UPDATE payments SET state = 'succeeded', follow_up = 0 WHERE state = 'failed'",     # hide a decline
    "UPDATE payments SET created_at = '2020-01-01T00:00:00.000Z'",                      # move it in time
    "UPDATE payments SET record = (SELECT record FROM payments p2 WHERE p2.seq = 1) WHERE seq = 3",  # swap
])
def test_an_edited_row_is_an_alarm_when_read(settled_store, tamper):
    config, path = settled_store
    edit_rows(path, tamper)
    result = run_kiosk("queue", "--all", "--config", config)
    assert result.returncode == 5 and "failed authentication" in result.stderr and "\n" not in result.stderr.strip()


def test_a_cut_history_is_an_alarm_not_a_shorter_one(settled_store):
    """Cut in half: what still reads is kept (a new file, the old one kept
    aside once), the rest is named in an alarm until `kiosk recover`, and
    the kiosk goes on selling."""
    config, path = settled_store
    assert not path.with_name("history.sqlite-wal").exists()      # all in the file: a clean close checkpoints
    os.truncate(path, path.stat().st_size // 2)
    for _ in range(2):
        result = run_kiosk("status", "--json", "--config", config)
        assert result.returncode == 0, result.stderr
    [alarm] = json.loads(result.stdout)["store_alarms"]
    assert "history.sqlite was damaged" in alarm and "malformed" in alarm and "could not read" in alarm
    assert len(list(path.parent.glob("history.sqlite.bad-*"))) == 1          # kept aside once
    assert run_kiosk("queue", "--all", "--config", config).returncode == 0
    assert run_kiosk("charge", "5.00", "--offline", "--yes", "--config", config).returncode == 0
    recover = run_kiosk("recover", "--config", config)
    assert recover.returncode == 1 and "could not read" in recover.stdout
    assert json.loads(run_kiosk("status", "--json", "--config", config).stdout)["store_alarms"] == []


@pytest.mark.parametrize("damage", ["deleted", "cut"])
def test_a_lost_or_cut_wal_after_a_power_cut_is_an_alarm(tmp_path, fake_stripe, open_kiosk, damage):
    config = config_for(tmp_path, fake_stripe, kiosk={"offline_behavior": "force_offline"})
    kiosk = open_kiosk(config, create=True)
    for _ in range(3):
        kiosk.take_sale(1000, card="visa")
    assert kiosk.forward().succeeded == 3 and kiosk.store.live() == []
    # the files as a power cut leaves them: the newest settled payments only in the -wal
    cut = tmp_path / "after-the-cut"
    cut.mkdir(mode=0o700)
    for file in (tmp_path / "data").iterdir():
        if file.name not in ("kiosk.lock", "history.sqlite-shm"):
            shutil.copy2(file, cut / file.name)
    kiosk.close()
    wal = cut / "history.sqlite-wal"
    assert wal.stat().st_size > 0
    if damage == "deleted":
        wal.unlink()
    else:
        os.truncate(wal, wal.stat().st_size // 2)
    config = config_for(tmp_path, fake_stripe, storage={"path": str(cut)})
    result = run_kiosk("queue", "--all", "--config", config)
    # the newest payments gone (a cut -wal), or everything since the file was made (a lost one)
    assert result.returncode == 5, result.stdout + result.stderr
    assert "missing from history" in result.stderr or "not the history this queue wrote" in result.stderr


def test_a_history_from_another_queue_is_refused(tmp_path, settled_store):
    from kiosk_builtins.tinydb_store.history import History
    config, path = settled_store
    for name in ("history.sqlite", "history.sqlite-wal", "history.sqlite-shm"):
        (path.parent / name).unlink(missing_ok=True)
    # another history sealed with this very key (a second `kiosk init` with the key kept) put in its place
    History(path, (path.parent / "kiosk.key").read_bytes(), create=True).close()
    result = run_kiosk("queue", "--config", config)
    assert result.returncode == 5 and "not the history this queue wrote" in result.stderr


def test_a_missing_history_is_an_alarm_not_an_empty_one(settled_store):
    config, path = settled_store
    path.rename(path.with_suffix(".elsewhere"))
    result = run_kiosk("queue", "--config", config)
    assert result.returncode == 5 and "history.sqlite" in result.stderr and "missing" in result.stderr


# -- the move from queue to history ---------------------------------------------------

def test_a_kill_between_history_and_queue_charges_once_and_lists_once(tmp_path, fake_stripe):
    config = config_for(tmp_path, fake_stripe, kiosk={"offline_behavior": "force_offline"})
    assert run_kiosk("init", "--config", config).returncode == 0
    assert run_kiosk("charge", "12.00", "--config", config).returncode == 0
    cut = run_kiosk_process("sync", "--config", config, env={"KIOSK_CRASH_AT": "settle:after_history"})
    assert cut.returncode == -signal.SIGKILL
    [payment] = everything(config)
    assert payment["state"] == "succeeded"
    assert run_kiosk("sync", "--config", config).returncode == 0
    assert len(fake_stripe.intents_for(payment["id"])) == 1 and len(everything(config)) == 1


def test_the_queue_writes_only_the_payment_that_changed(tmp_path, fake_stripe, open_kiosk):
    config = config_for(tmp_path, fake_stripe, kiosk={"offline_behavior": "force_offline"})
    kiosk = open_kiosk(config, create=True)
    live = tmp_path / "data" / "live.kdb"
    grew = []
    for _ in range(40):
        before = live.stat().st_size
        assert kiosk.take_sale(500, card="visa").ok
        grew.append(live.stat().st_size - before)
    kiosk.close()
    # the 40th sale appends what the 1st did, not the 39 payments before it
    assert max(grew) < 2 * min(grew), grew


# -- reading and forgetting -------------------------------------------------------------

def test_queue_lists_pending_then_the_newest_settled(tmp_path, fake_stripe, open_kiosk):
    config = config_for(tmp_path, fake_stripe, kiosk={"offline_behavior": "force_offline"})
    kiosk = open_kiosk(config, create=True)
    for amount in range(100, 112):
        kiosk.take_sale(amount, card="visa")
    assert kiosk.forward().succeeded == 12
    kiosk.take_sale(999, card="visa")
    kiosk.close()
    listed = run_json("queue", "--limit", "5", "--config", config)
    assert [p["state"] for p in listed] == ["pending"] + ["succeeded"] * 5
    # the newest five sales, newest first: the head of the whole list
    taken = [p["created_at"] for p in listed[1:]]
    assert taken == sorted(taken, reverse=True) and listed == everything(config)[:6]
    assert len(run_json("queue", "--config", config)) == 13          # default 50
    assert len(everything(config)) == 13
    assert [p["state"] for p in run_json("queue", "--limit", "0", "--config", config)] == ["pending"]
    later = (datetime.now(timezone.utc) + timedelta(hours=1)).isoformat()
    assert run_json("queue", "--all", "--since", later, "--config", config) == []
    assert len(run_json("queue", "--all", "--since", "2020-01-01", "--config", config)) == 13
    text = run_kiosk("queue", "--limit", "3", "--config", config)
    assert text.returncode == 0 and "--all for more" in text.stdout
    bad = run_kiosk("queue", "--since", "yesterday", "--config", config)
    assert bad.returncode == 2 and "--since 'yesterday'" in bad.stderr


def test_keep_days_forgets_old_settled_payments_but_never_one_to_follow_up(tmp_path, fake_stripe, open_kiosk):
    import threading
    from kiosk.background import prune_history
    config = config_for(tmp_path, fake_stripe, kiosk={"offline_behavior": "force_offline"},
                        storage={"path": "data", "keep_days": 30})
    kiosk = open_kiosk(config, create=True)
    kiosk.take_sale(1000, card="visa")
    declined = kiosk.take_sale(2000, card="insufficient_funds").payment
    assert kiosk.forward().reached
    newest = kiosk.take_sale(1500, card="visa").payment       # the last one settled: the queue names it
    assert kiosk.forward().succeeded == 1
    waiting = kiosk.take_sale(3000, card="visa").payment
    assert kiosk.check_online()
    assert prune_history(kiosk, threading.Event()) == 0               # nothing is 30 days old yet
    assert kiosk.status(check=False)["settled"] == {"count": 3}
    # the kiosk's own clock a year ahead (a Pi without a real-time clock): Stripe's time decides, nothing goes
    kiosk.clock = lambda: datetime.now(timezone.utc) + timedelta(days=365)
    assert prune_history(kiosk, threading.Event()) == 0
    # Stripe's clock 31 days on: the succeeded payment goes; the one still to follow up stays, and so
    # does the last one settled, which the queue names as history's newest (a missing -wal is found by it)
    fake_stripe.clock = lambda: time.time() + 31 * 86400
    assert kiosk.check_online()
    assert prune_history(kiosk, threading.Event()) == 1
    left = {p.id for p in kiosk.store.settled()}
    assert left == {declined.id, newest.id} and [p.id for p in kiosk.store.live()] == [waiting.id]
    kiosk.mark_followed_up(declined.id)
    assert prune_history(kiosk, threading.Event()) == 1
    assert [p.id for p in kiosk.store.settled()] == [newest.id] and kiosk.store.get(waiting.id) is not None
    assert kiosk.status(check=False)["settled"] == {"count": 1}
    # offline, nothing is forgotten whatever the clocks say
    kiosk.take_sale(4000, card="visa")
    kiosk.forward()
    fake_stripe.clock = lambda: time.time() + 400 * 86400
    fake_stripe.set_offline(True)
    assert not kiosk.check_online() and prune_history(kiosk, threading.Event()) == 0
    kiosk.close()


def test_keep_days_is_checked(tmp_path, fake_stripe):
    config = config_for(tmp_path, fake_stripe, storage={"path": "data", "keep_days": 99999})
    result = run_kiosk("status", "--config", config)
    assert result.returncode == 2 and "keep_days" in result.stderr


def test_a_reader_that_stops_early_is_not_an_error(tmp_path, fake_stripe, open_kiosk):
    import dataclasses
    import subprocess
    import sys
    old_data(tmp_path)
    config = config_for(tmp_path, fake_stripe)
    kiosk = open_kiosk(config, create=False)
    model = next(kiosk.store.settled())
    kiosk.store.add_settled(dataclasses.replace(model, id=f"kp_{n:024x}") for n in range(400))
    kiosk.close()
    # `kiosk queue --all --json | head -c 100`: far more than a pipe holds, read 100 bytes of it
    child = subprocess.Popen([sys.executable, "-m", "kiosk.cli", "queue", "--all", "--json", "--config", str(config)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert child.stdout.read(100).startswith(b"[")
    child.stdout.close()
    assert child.wait(60) == 0 and b"Traceback" not in child.stderr.read()


def test_damage_found_while_selling_is_never_a_refusal(tmp_path, fake_stripe, open_kiosk):
    config = config_for(tmp_path, fake_stripe)                      # online sales, charged at once
    kiosk = open_kiosk(config, create=True)
    for _ in range(3):
        assert kiosk.take_sale(1000, card="visa").status == "approved"
    kiosk.close()
    path = tmp_path / "data" / "history.sqlite"
    db = sqlite3.connect(path)
    root = db.execute("SELECT rootpage FROM sqlite_master WHERE name = 'payments_settled'").fetchone()[0]
    page_size = db.execute("PRAGMA page_size").fetchone()[0]
    db.close()
    with open(path, "r+b") as card:          # one bad page on the SD card: an index history writes to
        card.seek((root - 1) * page_size)
        card.write(b"\xff" * 16)
    kiosk = open_kiosk(config, create=False)
    told = []
    kiosk.telling.notify = told.append
    result = kiosk.take_sale(2500, card="visa")
    # Stripe charged it, the kiosk could not record that: the vendor must not charge again
    assert result.status == "unconfirmed" and "do not charge the card again" in result.message
    assert [n.kind for n in told if n.kind == "store_alarm"] == ["store_alarm"]
    [kept] = kiosk.store.live()
    assert kept.id == result.payment.id and len(fake_stripe.intents_for(kept.id)) == 1
    kiosk.close()


def test_an_init_cut_before_history_was_made_is_finished_by_the_next(tmp_path, fake_stripe):
    config = config_for(tmp_path, fake_stripe)
    assert run_kiosk("init", "--config", config).returncode == 0
    for name in ("history.sqlite", "history.sqlite-wal", "history.sqlite-shm"):
        (tmp_path / "data" / name).unlink(missing_ok=True)
    (tmp_path / "data" / "live.kdb").unlink()
    # what a power cut leaves between making live.kdb and history.sqlite: a queue that never held anything
    from kiosk_builtins.tinydb_store.log_storage import EncryptedLogStorage, load_key
    EncryptedLogStorage(tmp_path / "data" / "live.kdb", load_key(tmp_path / "data" / "kiosk.key"), "live",
                        create=True).close()
    assert run_kiosk("init", "--config", config).returncode == 0
    assert run_kiosk("charge", "5.00", "--offline", "--config", config).returncode == 0
    assert len(everything(config)) == 1
