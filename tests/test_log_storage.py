"""Tests for plugins/tinydb_store/log_storage.py (encrypted append-only TinyDB storage).

A cut is told apart from a torn write by the file's witness (an extended
attribute naming how much was acknowledged): a power cut during an append
leaves bytes PAST the acknowledged end; any cut into acknowledged bytes, at a
record boundary too, is an alarm.  Tests that play a power cut therefore set
the witness back to what was acknowledged before the torn append
(:func:`acknowledged_only`).
"""

import errno
import json
import logging
import os
import random
import re
import signal
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tinydb import TinyDB, where
from tinydb.operations import delete, increment
from tinydb.storages import MemoryStorage

import kiosk_builtins.tinydb_store.log_storage as ls
from kiosk_builtins.tinydb_store.log_storage import EncryptedLogStorage, StoreAlarm, create_key, load_key

from power_cut import acknowledged_only

ROOT = Path(__file__).resolve().parents[1]
HEADER = len(b"KIOSKLOG1") + 16


# ----------------------------------------------------------------------------- helpers


@pytest.fixture
def key(tmp_path):
    kp = tmp_path / "kiosk.key"
    assert create_key(kp) is True
    return load_key(kp)


@pytest.fixture
def other_key(tmp_path):
    kp = tmp_path / "other.key"
    assert create_key(kp) is True
    return load_key(kp)


def open_db(path, key, label="live", create=True, **kw):
    return TinyDB(path, storage=EncryptedLogStorage, key=key, label=label, create=create, **kw)


def open_storage(path, key, label="live", create=False, **kw):
    return EncryptedLogStorage(path, key=key, label=label, create=create, **kw)


def split_records(raw: bytes):
    """[(offset, record bytes incl. length prefix)] of a well-formed file."""
    out, pos = [], HEADER
    while pos < len(raw):
        (n,) = struct.unpack_from(">I", raw, pos)
        out.append((pos, raw[pos:pos + 4 + n]))
        pos += 4 + n
    assert pos == len(raw)
    return out


def canon(state) -> str:
    """Type-exact comparison form of a TinyDB state (True != 1 != 1.0)."""
    return json.dumps(state or {}, sort_keys=True)


def state_of(path, key, label="live"):
    s = open_storage(path, key, label)
    try:
        return json.loads(canon(s.read()))
    finally:
        s.close()


def expect_alarm(path, key, label="live", create=False):
    with pytest.raises(StoreAlarm) as ei:
        open_storage(path, key, label, create=create)
    exc = ei.value
    msg = str(exc)
    assert "\n" not in msg and str(path) in msg
    return exc


def file_mode(p) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


def small_log(path, key):
    """A file with a snapshot and four small deltas; returns list of file bytes after each write."""
    db = open_db(path, key)
    t = db.table("q")
    versions = [Path(path).read_bytes()]
    for i in range(4):
        t.insert({"n": i, "amount": 100 + i, "memo": "zqxMEMOzqx"})
        versions.append(Path(path).read_bytes())
    db.close()
    return versions


# ----------------------------------------------------------------------------- round trips


def test_new_file_and_read_without_copy(tmp_path, key):
    p = tmp_path / "live.kdb"
    db = open_db(p, key)
    assert db.storage.read() == {}
    assert db.tables() == set()
    assert db.storage.records == 1 and not db.storage.recovered_torn_tail
    assert db.storage.read() is db.storage.read()  # no copy on every TinyDB operation
    db.table("q").insert({"a": 1})
    assert db.storage.read() is db.storage.read()
    assert file_mode(p) == 0o600
    assert [f.name for f in tmp_path.iterdir() if ".tmp" in f.name] == []
    db.close()
    # create=True with an existing file just opens it
    db = open_db(p, key)
    assert db.table("q").all() == [{"a": 1}]
    db.close()


def test_crud_survives_reopen(tmp_path, key):
    p = tmp_path / "live.kdb"
    db = open_db(p, key)
    q, h, tmp = db.table("q"), db.table("h"), db.table("tmp")
    q.insert({"token": "tok_a", "amount": 500, "state": "queued", "items": [1, 2]})
    q.insert_multiple([{"token": f"tok_{i}", "amount": i, "state": "queued"} for i in range(5)])
    q.update({"state": "sent"}, where("amount") == 500)
    q.update(increment("amount"), doc_ids=[2])
    q.update(delete("token"), doc_ids=[3])
    q.update(lambda d: d["items"].append(3), doc_ids=[1])  # nested in-place change
    q.upsert({"token": "tok_up", "amount": 7}, where("token") == "tok_up")
    q.remove(doc_ids=[4])
    h.insert_multiple([{"x": i} for i in range(3)])
    h.truncate()
    h.insert({"x": "after truncate"})
    tmp.insert({"gone": True})
    db.drop_table("tmp")
    db.table("empty_but_present").truncate()  # TinyDB keeps empty tables
    before = canon(db.storage.read())
    db.close()

    db = open_db(p, key, create=False)
    assert canon(db.storage.read()) == before
    q = db.table("q")
    assert q.get(doc_id=1) == {"token": "tok_a", "amount": 500, "state": "sent", "items": [1, 2, 3]}
    assert q.get(doc_id=2)["amount"] == 1
    assert "token" not in q.get(doc_id=3)
    assert q.get(doc_id=4) is None
    assert q.get(where("token") == "tok_up")["amount"] == 7
    assert db.table("h").all() == [{"x": "after truncate"}]
    assert db.tables() == {"q", "h", "empty_but_present"}
    db.drop_tables()
    db.close()
    assert state_of(p, key) == {}


def test_change_detection_is_exact(tmp_path, key):
    p = tmp_path / "live.kdb"
    db = open_db(p, key)
    t = db.table("q")
    t.insert({"flag": 1, "amount": 1, "meta": {"k": [1]}})
    n = db.storage.records
    t.update({"flag": 1})  # same value: no record
    t.update(lambda d: d.update(amount=1))
    assert db.storage.records == n
    t.update({"flag": True})  # == 1 in Python, but a different JSON value
    t.update({"amount": 1.0})
    t.update(lambda d: d["meta"]["k"].__setitem__(0, True))  # nested, in place
    assert db.storage.records == n + 3
    db.close()
    doc = state_of(p, key)["q"]["1"]
    assert doc["flag"] is True and type(doc["amount"]) is float and doc["meta"]["k"][0] is True


# ----------------------------------------------------------------------------- append-only cost


def test_one_record_per_write_growth_proportional_to_change(tmp_path, key):
    growth = {}
    for n in (10, 2000):
        p = tmp_path / f"db{n}.kdb"
        db = open_db(p, key)
        t = db.table("q")
        t.insert_multiple({"token": f"tok_{i:06d}", "amount": i, "state": "queued"} for i in range(n))
        records = len(split_records(p.read_bytes()))
        assert db.storage.records == records == 2

        def step(fn):
            size, recs = p.stat().st_size, db.storage.records
            fn()
            assert db.storage.records == recs + 1
            assert len(split_records(p.read_bytes())) == recs + 1
            return p.stat().st_size - size

        growth[n] = (
            step(lambda: t.update({"state": "sent"}, doc_ids=[5])),
            step(lambda: t.insert({"token": "tok_new", "amount": 1, "state": "queued"})),
            step(lambda: t.remove(doc_ids=[6])),
        )
        # no change -> no write
        size = p.stat().st_size
        t.update({"state": "sent"}, doc_ids=[5])
        assert p.stat().st_size == size
        db.close()
    for small, big in zip(growth[10], growth[2000]):
        assert small < 200
        assert abs(big - small) <= 8, growth  # only the doc id's width differs


# ----------------------------------------------------------------------------- confidentiality


def test_no_plaintext_on_disk(tmp_path, key):
    p = tmp_path / "live.kdb"
    db = open_db(p, key)
    t = db.table("payments")
    secret = {"token": "tok_1NxSecretToken9z", "amount": 987654, "card": "4242424242424242"}
    t.insert(secret)
    t.update({"note": "tok_1NxSecretToken9z"}, doc_ids=[1])
    for compacted in (False, True):
        if compacted:
            db.storage.compact()
        raw = p.read_bytes()
        assert raw.startswith(b"KIOSKLOG1")
        for needle in (b"tok_1NxSecretToken9z", b"987654", b"4242", b"payments", b"token", b"amount", b"live"):
            assert needle not in raw, needle
    db.close()


def test_files_are_0600_whatever_the_umask(tmp_path, key, caplog):
    old = os.umask(0)
    try:
        kp = tmp_path / "k2.key"
        assert create_key(kp)
        assert file_mode(kp) == 0o600
        p = tmp_path / "live.kdb"
        db = open_db(p, key)
        db.table("q").insert({"a": 1})
        assert file_mode(p) == 0o600
        db.storage.compact()
        assert file_mode(p) == 0o600
        db.table("q").insert({"a": 2})
        db.close()
        raw = p.read_bytes()
        p.write_bytes(raw[:-3])  # torn tail -> copy kept aside
        acknowledged_only(p, raw[:split_records(raw)[-1][0]])
        s = open_storage(p, key)
        assert s.recovered_torn_tail and file_mode(s.torn_tail_copy) == 0o600
        s.close()
        p.write_bytes(b"")  # alarm -> copy kept aside
        exc = expect_alarm(p, key)
        assert file_mode(exc.kept_aside) == 0o600
        # an existing store with a loose mode is tightened on open
        p.write_bytes(raw)
        os.chmod(p, 0o644)
        open_storage(p, key).close()
        assert file_mode(p) == 0o600
    finally:
        os.umask(old)


# ----------------------------------------------------------------------------- keys


def test_create_key_never_overwrites(tmp_path):
    kp = tmp_path / "kiosk.key"
    assert create_key(kp) is True
    first = kp.read_bytes()
    assert len(first) == 32 and file_mode(kp) == 0o600
    assert create_key(kp) is False
    assert kp.read_bytes() == first
    other = tmp_path / "odd.key"
    other.write_bytes(b"not a key")
    assert create_key(other) is False and other.read_bytes() == b"not a key"
    assert load_key(kp) == first


def test_load_key_alarms(tmp_path):
    kp = tmp_path / "kiosk.key"
    with pytest.raises(StoreAlarm, match="missing"):
        load_key(kp)
    create_key(kp)
    os.chmod(kp, 0o640)
    with pytest.raises(StoreAlarm, match="chmod 600") as ei:
        load_key(kp)
    assert "\n" not in str(ei.value) and str(kp) in str(ei.value) and ei.value.kept_aside is None
    os.chmod(kp, 0o600)
    kp.write_bytes(kp.read_bytes()[:31])
    with pytest.raises(StoreAlarm, match="size"):
        load_key(kp)


# ----------------------------------------------------------------------------- alarms


def test_wrong_key_alarms_and_keeps_copy(tmp_path, key, other_key):
    p = tmp_path / "live.kdb"
    db = open_db(p, key)
    db.table("q").insert({"amount": 1})
    db.close()
    raw = p.read_bytes()
    exc = expect_alarm(p, other_key)
    assert "wrong key or tampered" in str(exc)
    assert exc.path == str(p)
    assert re.fullmatch(re.escape(str(p)) + r"\.bad-[0-9a-f]{16}", exc.kept_aside)
    assert exc.kept_aside in str(exc)
    assert Path(exc.kept_aside).read_bytes() == raw
    assert p.read_bytes() == raw  # original untouched and in place
    assert state_of(p, key) == {"q": {"1": {"amount": 1}}}


def test_missing_file_alarms(tmp_path, key):
    p = tmp_path / "live.kdb"
    exc = expect_alarm(p, key, create=False)
    assert "missing" in str(exc) and exc.kept_aside is None
    assert not p.exists()
    with pytest.raises(StoreAlarm):
        open_db(p, key, create=False)


@pytest.mark.parametrize("content, problem", [
    (b"", "empty"),
    (b"KIOSK", "header truncated"),
    (b"KIOSKLOG1" + b"\0" * 10, "header truncated"),
    (b"KIOSKLOG1" + b"\0" * 16, "snapshot missing"),
    (b"SQLite format 3\0" + b"\0" * 100, "bad magic"),
    (b"{}", "bad magic"),
])
def test_broken_files_alarm(tmp_path, key, content, problem):
    p = tmp_path / "live.kdb"
    p.write_bytes(content)
    for create in (False, True):  # create=True never papers over a broken file
        exc = expect_alarm(p, key, create=create)
        assert problem in str(exc)
        assert Path(exc.kept_aside).read_bytes() == content
        assert p.read_bytes() == content


def test_truncated_snapshot_alarms(tmp_path, key):
    p = tmp_path / "live.kdb"
    raw = small_log(p, key)[0]  # header + snapshot only
    for cut in range(HEADER + 1, len(raw)):
        p.write_bytes(raw[:cut])
        exc = expect_alarm(p, key)
        assert "snapshot" in str(exc)
        os.unlink(exc.kept_aside)


def test_every_byte_flip_alarms(tmp_path, key):
    p = tmp_path / "live.kdb"
    raw = small_log(p, key)[-1]
    assert len(split_records(raw)) == 5
    for i in range(len(raw)):
        for mask in (0x01, 0xFF):
            bad = bytearray(raw)
            bad[i] ^= mask
            p.write_bytes(bytes(bad))
            exc = expect_alarm(p, key)
            os.unlink(exc.kept_aside)
    p.write_bytes(raw)
    assert len(state_of(p, key)["q"]) == 4


def test_swapped_labels_alarm(tmp_path, key):
    live, hist = tmp_path / "live.kdb", tmp_path / "history.kdb"
    for path, label in ((live, "live"), (hist, "history")):
        db = open_db(path, key, label=label)
        db.table("q").insert({"label": label})
        db.close()
    live_raw, hist_raw = live.read_bytes(), hist.read_bytes()
    live.write_bytes(hist_raw)
    hist.write_bytes(live_raw)
    assert "wrong key or tampered" in str(expect_alarm(live, key, "live"))
    expect_alarm(hist, key, "history")
    # each still opens under its own label
    assert state_of(live, key, "history") == {"q": {"1": {"label": "history"}}}


def test_records_bound_to_their_file(tmp_path, key):
    a, b = tmp_path / "a.kdb", tmp_path / "b.kdb"
    va, vb = small_log(a, key), small_log(b, key)  # same key, label and contents
    ra, rb = split_records(va[-1]), split_records(vb[-1])
    # record 2 of file a spliced into file b at the same position
    spliced = vb[-1][:rb[2][0]] + ra[2][1] + vb[-1][rb[2][0] + len(rb[2][1]):]
    b.write_bytes(spliced)
    expect_alarm(b, key)
    # file a's header on file b's records
    b.write_bytes(va[-1][:HEADER] + vb[-1][HEADER:])
    expect_alarm(b, key)


def test_reordered_duplicated_or_dropped_records_alarm(tmp_path, key):
    p = tmp_path / "live.kdb"
    raw = small_log(p, key)[-1]
    header, recs = raw[:HEADER], [r for _, r in split_records(raw)]

    def check(order):
        p.write_bytes(header + b"".join(recs[i] for i in order))
        exc = expect_alarm(p, key)
        os.unlink(exc.kept_aside)
        return str(exc)

    assert "sequence problem" in check([0, 2, 1, 3, 4])  # swapped
    assert "sequence problem" in check([0, 1, 2, 2, 3, 4])  # duplicated in the middle
    assert "sequence problem" in check([0, 1, 2, 3, 4, 4])  # last one duplicated
    assert "sequence problem" in check([0, 1, 3, 4])  # dropped from the middle
    check([1, 2, 3, 4])  # snapshot dropped
    check([0, 0, 1, 2, 3, 4])  # snapshot duplicated


# ----------------------------------------------------------------------------- torn tails


def test_torn_final_record_recovers_at_every_cut(tmp_path, key, caplog):
    p = tmp_path / "live.kdb"
    versions = small_log(p, key)
    full, prev = versions[-1], versions[-2]
    p.write_bytes(prev)
    acknowledged_only(p, prev)
    expected = state_of(p, key)
    assert len(full) - len(prev) > 30
    caplog.set_level(logging.WARNING, logger="kiosk.store")
    for cut in range(len(prev) + 1, len(full)):
        caplog.clear()
        p.write_bytes(full[:cut])
        acknowledged_only(p, prev)
        db = open_db(p, key, create=False)
        s = db.storage
        assert s.recovered_torn_tail, cut
        assert json.loads(canon(s.read())) == expected
        assert p.read_bytes() == prev  # cut back to the last complete record
        assert Path(s.torn_tail_copy).read_bytes() == full[:cut]
        assert ".torn-" in s.torn_tail_copy
        [rec] = [r for r in caplog.records if r.name == "kiosk.store"]
        msg = rec.getMessage()
        assert rec.levelno == logging.WARNING and s.torn_tail_copy in msg
        assert "zqxMEMOzqx" not in msg and "amount" not in msg  # never document contents
        # the store carries on normally
        db.table("q").insert({"n": "after", "amount": 1})
        db.close()
        after = state_of(p, key)
        assert after["q"]["4"] == {"n": "after", "amount": 1} and len(after["q"]) == 4
        os.unlink(s.torn_tail_copy)


def test_a_cut_anywhere_is_an_alarm_naming_what_is_missing(tmp_path, key):
    """A cut into acknowledged bytes -- at a record boundary, inside a record,
    inside the header -- is never read as a shorter log or a torn write."""
    p = tmp_path / "live.kdb"
    versions = small_log(p, key)
    full = versions[-1]
    records = len(split_records(full))
    boundaries = {len(v) for v in versions[:-1]}
    for cut in range(0, len(full)):
        p.write_bytes(full[:cut])
        exc = expect_alarm(p, key)
        assert exc.damaged and f"{len(full) - cut} bytes missing" in str(exc), cut
        if cut in boundaries:
            kept = len(split_records(full[:cut])) if cut >= HEADER else 0
            assert f"{records - kept} of {records} records lost" in str(exc)
        os.unlink(exc.kept_aside)
    p.write_bytes(full)
    assert len(state_of(p, key)["q"]) == 4


def test_a_torn_write_past_the_acknowledged_end_recovers_quietly(tmp_path, key):
    p = tmp_path / "live.kdb"
    versions = small_log(p, key)
    full = versions[-1]
    p.write_bytes(full[:len(versions[2]) + 10])
    acknowledged_only(p, versions[2])
    s = open_storage(p, key)
    assert s.recovered_torn_tail and s.nothing_lost_known and len(s.read()["q"]) == 2
    s.close()


def test_without_a_witness_a_torn_tail_recovers_but_claims_nothing(tmp_path, key):
    """A file from an earlier release, or copied without its attributes."""
    p = tmp_path / "live.kdb"
    versions = small_log(p, key)
    p.write_bytes(versions[-1][:-3])
    os.removexattr(p, ls.WITNESS)
    s = open_storage(p, key)
    assert s.recovered_torn_tail and not s.nothing_lost_known
    s.close()


def test_a_damaged_file_is_kept_aside_once(tmp_path, key):
    p = tmp_path / "live.kdb"
    raw = small_log(p, key)[-1]
    bad = bytearray(raw)
    bad[HEADER + 30] ^= 1
    p.write_bytes(bytes(bad))
    first = expect_alarm(p, key).kept_aside
    again = expect_alarm(p, key).kept_aside
    assert first == again and len(list(tmp_path.glob("live.kdb.bad-*"))) == 1


# ----------------------------------------------------------------------------- compaction


def test_compact_keeps_state_and_shrinks(tmp_path, key):
    p = tmp_path / "live.kdb"
    db = open_db(p, key, compact_every=50)
    t = db.table("q")
    for i in range(60):
        t.insert({"n": i, "state": "queued"})
        t.update({"state": "sent"}, doc_ids=[i + 1])
    t.remove(where("n") < 40)
    assert db.storage.needs_compaction() and db.storage.records == 122
    before = canon(db.storage.read())
    old_raw = p.read_bytes()
    db.storage.compact()
    raw = p.read_bytes()
    assert len(raw) < len(old_raw) / 4
    assert raw[:HEADER] != old_raw[:HEADER]  # new file id
    assert db.storage.records == 1 and len(split_records(raw)) == 1
    assert not db.storage.needs_compaction()
    assert canon(db.storage.read()) == before
    assert file_mode(p) == 0o600
    assert [f.name for f in tmp_path.iterdir() if ".tmp" in f.name] == []
    t.update({"state": "settled"}, doc_ids=[41])
    t.insert({"n": 60})
    assert db.storage.records == 3
    after = canon(db.storage.read())
    db.close()
    assert canon(state_of(p, key)) == after
    # records of the previous generation cannot be appended to the new one
    last_old = split_records(old_raw)[2][1]
    p.write_bytes(p.read_bytes() + last_old)
    expect_alarm(p, key)


def test_concurrent_compactions_are_serialised(tmp_path, key):
    p = tmp_path / "live.kdb"
    db = open_db(p, key)
    db.table("q").insert_multiple({"n": i} for i in range(50))
    before = canon(db.storage.read())
    errors = []

    def run():
        try:
            for _ in range(15):
                db.storage.compact()
                db.storage.write(db.storage.read())
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    db.close()
    assert canon(state_of(p, key)) == before


# ----------------------------------------------------------------------------- failures while writing


def test_unserialisable_write_rolls_back(tmp_path, key):
    p = tmp_path / "live.kdb"
    db = open_db(p, key)
    t = db.table("q")
    t.insert({"a": 1})
    size = p.stat().st_size
    with pytest.raises(TypeError):
        t.insert({"a": object()})
    with pytest.raises(TypeError):
        t.update({"a": {1, 2}}, doc_ids=[1])
    assert t.all() == [{"a": 1}] and p.stat().st_size == size
    t.insert({"a": 2})
    db.close()
    assert state_of(p, key) == {"q": {"1": {"a": 1}, "3": {"a": 2}}}


def test_failed_append_is_undone(tmp_path, key, monkeypatch):
    p = tmp_path / "live.kdb"
    db = open_db(p, key)
    t = db.table("q")
    t.insert({"a": 1})
    size, records = p.stat().st_size, db.storage.records

    def half_then_enospc(fd, data):
        os.write(fd, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ls, "write_all", half_then_enospc)
    with pytest.raises(OSError):
        t.insert({"a": 2})
    monkeypatch.undo()
    assert p.stat().st_size == size and db.storage.records == records
    assert t.all() == [{"a": 1}]  # memory matches the disk again
    t.insert({"a": 3})
    db.close()
    assert [d["a"] for d in state_of(p, key)["q"].values()] == [1, 3]


def test_failed_fdatasync_stops_writes(tmp_path, key, monkeypatch):
    p = tmp_path / "live.kdb"
    db = open_db(p, key)
    t = db.table("q")
    t.insert({"a": 1})

    def eio(fd):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(ls, "_fdatasync", eio)
    monkeypatch.setattr(ls, "_fsync", eio)
    with pytest.raises(OSError):
        t.insert({"a": 2})
    monkeypatch.undo()
    with pytest.raises(StoreAlarm, match="reopen"):
        t.insert({"a": 3})
    with pytest.raises(StoreAlarm):
        db.storage.compact()
    db.close()
    assert len(state_of(p, key)["q"]) in (1, 2)  # the unsynced record may or may not be there


def test_write_after_close_fails(tmp_path, key):
    db = open_db(tmp_path / "live.kdb", key)
    db.close()
    with pytest.raises(ValueError):
        db.storage.write({"q": {"1": {"a": 1}}})


# ----------------------------------------------------------------------------- property test

_scalars = (st.none() | st.booleans() | st.integers(-3, 3) | st.sampled_from([0.0, -0.0, 1.0, 2.5])
            | st.text(alphabet="ab\u00e9\n", max_size=3))
_values = st.recursive(_scalars, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text("xy", max_size=2), c, max_size=2),
                       max_leaves=5)
_docs = st.dictionaries(st.sampled_from(["a", "b", "c"]), _values, max_size=3)
_tables = st.sampled_from(["_default", "q", "h"])
_ops = st.lists(st.one_of(
    st.tuples(st.just("insert"), _tables, _docs),
    st.tuples(st.just("insert_multiple"), _tables, st.lists(_docs, max_size=3)),
    st.tuples(st.just("update"), _tables, st.integers(1, 6), _docs),
    st.tuples(st.just("nested"), _tables, st.integers(1, 6), _values),
    st.tuples(st.just("remove"), _tables, st.integers(1, 6)),
    st.tuples(st.just("truncate"), _tables),
    st.tuples(st.just("drop"), _tables),
    st.tuples(st.just("drop_all")),
    st.tuples(st.just("compact")),
    st.tuples(st.just("reopen")),
), max_size=25)


def _apply(db, op):
    kind = op[0]
    if kind in ("drop_all", "compact", "reopen"):
        if kind == "drop_all":
            db.drop_tables()
        return
    t = db.table(op[1])
    copy = lambda v: json.loads(json.dumps(v))  # noqa: E731 - each db gets its own objects
    if kind == "insert":
        t.insert(copy(op[2]))
    elif kind == "insert_multiple":
        t.insert_multiple(copy(op[2]))
    elif kind == "update" and t.contains(doc_id=op[2]):
        t.update(copy(op[3]), doc_ids=[op[2]])
    elif kind == "nested" and t.contains(doc_id=op[2]):
        value = copy(op[3])

        def mutate(doc):  # in-place change below the top level
            if isinstance(doc.get("a"), list):
                doc["a"].append(value)
            elif isinstance(doc.get("a"), dict):
                doc["a"]["z"] = value
            else:
                doc["a"] = [value]
        t.update(mutate, doc_ids=[op[2]])
    elif kind == "remove" and t.contains(doc_id=op[2]):
        t.remove(doc_ids=[op[2]])
    elif kind == "truncate":
        t.truncate()
    elif kind == "drop":
        db.drop_table(op[1])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=_ops)
def test_random_operations_reopen_equals_memory(tmp_path, key, ops):
    path = Path(tempfile.mkdtemp(dir=tmp_path)) / "live.kdb"
    ref = TinyDB(storage=MemoryStorage)
    db = open_db(path, key, compact_every=5)
    try:
        for op in ops:
            _apply(ref, op)
            _apply(db, op)
            if op[0] == "compact":
                db.storage.compact()
            elif op[0] == "reopen":
                before = canon(db.storage.read())
                db.close()
                db = open_db(path, key, create=False, compact_every=5)
                assert canon(db.storage.read()) == before
                ref._tables.clear()  # forget cached next ids, as a reopen does
            assert canon(db.storage.read()) == canon(ref.storage.read())
        final = canon(db.storage.read())
    finally:
        db.close()
    assert canon(state_of(path, key)) == final


# ----------------------------------------------------------------------------- crash test

_CHILD = r"""
import os, random, sys
sys.path.insert(0, sys.argv[1])
from tinydb import TinyDB
from kiosk_builtins.tinydb_store.log_storage import EncryptedLogStorage, load_key
db = TinyDB(sys.argv[2], storage=EncryptedLogStorage, key=load_key(sys.argv[3]), label="live",
            create=True, compact_every=40)
t = db.table("q")
rnd = random.Random(int(sys.argv[4]))
print("ready", flush=True)
i = 0
while True:
    t.insert({"i": i, "pad": "x" * rnd.randrange(200)})
    if i % 3 == 0:
        t.update({"seen": i}, doc_ids=[i + 1])
    if db.storage.needs_compaction():
        db.storage.compact()
    sys.stdout.write("%d\n" % i)
    sys.stdout.flush()
    i += 1
"""


@pytest.mark.timeout(60)
def test_sigkill_during_appends_keeps_every_acknowledged_write(tmp_path):
    kp = tmp_path / "kiosk.key"
    create_key(kp)
    key = load_key(kp)
    seed = random.randrange(1 << 30)
    rnd = random.Random(seed)
    path = tmp_path / "live.kdb"
    for round_ in range(3):
        proc = subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(ROOT), str(path), str(kp), str(seed + round_)],
            stdout=subprocess.PIPE, text=True,
        )
        try:
            assert proc.stdout.readline().strip() == "ready"
            time.sleep(rnd.uniform(0.05, 0.3))
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=20)
            out = proc.stdout.read()  # not communicate(timeout=): it would skip what readline() buffered
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.stdout.close()
        done = [int(x) for x in out.split()]
        assert done == list(range(len(done))), f"seed {seed}"
        s = open_storage(path, key)
        docs = sorted(s.read()["q"].values(), key=lambda d: d["i"])
        s.close()
        written = [d["i"] for d in docs]
        # a prefix of the writes: every acknowledged one, plus at most the one in flight
        assert written == list(range(len(written))), f"seed {seed}"
        assert len(done) <= len(written) <= len(done) + 1, f"seed {seed}"
        assert len(done) > 0, f"seed {seed}: child wrote nothing before the kill"
        os.unlink(path)  # next round starts a fresh store


def test_a_declared_write_encodes_only_the_documents_it_names(tmp_path, key):
    from tinydb.table import Document
    path = tmp_path / "live.kdb"
    db = open_db(path, key)
    table = db.table("payments")
    for doc_id in range(1, 201):
        with db.storage.changing("payments", doc_id):
            table.insert(Document({"n": doc_id, "pad": "x" * 200}, doc_id=doc_id))
    before = path.stat().st_size
    with db.storage.changing("payments", 7):
        table.upsert(Document({"n": 7, "pad": "changed"}, doc_id=7))
    assert path.stat().st_size - before < 300          # one document's record, not 200 documents
    with db.storage.changing("payments", 8):
        table.remove(doc_ids=[8])
    db.close()
    again = open_db(path, key, create=False).table("payments")
    assert again.get(doc_id=7)["pad"] == "changed" and again.get(doc_id=8) is None and len(again) == 199


def test_a_read_only_storage_refuses_to_write(tmp_path, key):
    path = tmp_path / "history.kdb"
    open_db(path, key, label="history").close()
    storage = open_storage(path, key, label="history", read_only=True)
    with pytest.raises(ValueError, match="read-only"):
        storage.write({"payments": {"1": {"n": 1}}})
    storage.close()


def test_salvage_finds_records_past_a_long_lost_stretch(tmp_path, key):
    """Seventy records zeroed in the middle: every record after them still
    reads (the walk looks as far ahead as the stretch could have held)."""
    from kiosk_builtins.tinydb_store.salvage import salvage
    p = tmp_path / "live.kdb"
    db = open_db(p, key)
    for i in range(100):
        db.table("q").insert({"n": i})
    db.close()
    raw = bytearray(p.read_bytes())
    records = split_records(bytes(raw))
    start, end = records[5][0], records[76][0]
    raw[start:end] = bytes(end - start)
    p.write_bytes(bytes(raw))
    found = salvage(p, key, "live")
    kept = sorted(doc["n"] for doc in found.state["q"].values())
    assert kept == [n for n in range(100) if not 4 <= n < 75]        # record k inserted n = k - 1
    assert found.unreadable == [(start, end)]
