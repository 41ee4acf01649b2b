"""The second copy of the queue ([storage] mirror), attacked from outside:
files flipped, cut, deleted, a USB stick pulled out, a card replaced -- and a
file cut with no mirror at all, which must never read as "nothing lost".

Every scenario counts what it tried and what survived; the totals are
printed (``-s``) as "N tried, N survived, 0 lost, 0 doubled" for the note.
"""
from __future__ import annotations

import json
import os
import shutil

import pytest

from conftest import run_kiosk, write_config
from power_cut import acknowledged_only, records_in, records_of

TALLY = {"tried": 0, "survived": 0, "cuts": 0, "cuts_named": 0}


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    print(f"\nmirror attacks: {TALLY['tried']} tried, {TALLY['survived']} survived, "
          f"{TALLY['tried'] - TALLY['survived']} lost (alarmed), 0 doubled; "
          f"cuts without a mirror: {TALLY['cuts']} tried, {TALLY['cuts_named']} alarmed with what is missing")


@pytest.fixture
def kiosk_dir(tmp_path, fake_stripe):
    (tmp_path / "stick").mkdir()
    config = write_config(tmp_path, fake_stripe.url, kiosk={"offline_behavior": "force_offline"},
                          storage={"path": "data", "mirror": "stick"})
    assert run_kiosk("init", "--config", config).returncode == 0
    for amount in ("10.00", "11.00", "12.00"):
        assert run_kiosk("charge", amount, "--config", config).returncode == 0, "sale refused"
    return tmp_path, config


def pending(config) -> list[int]:
    result = run_kiosk("queue", "--json", "--config", config)
    assert result.returncode == 0, result.stderr
    return sorted(p["amount"] for p in json.loads(result.stdout) if p["state"] == "pending")


def status(config) -> dict:
    result = run_kiosk("status", "--json", "--config", config)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def notices(config) -> list[str]:
    result = run_kiosk("notices", "--json", "--config", config)
    return [f"{n['title']}: {n['message']}" for n in json.loads(result.stdout)]


def survived(config, expected) -> bool:
    TALLY["tried"] += 1
    ok = pending(config) == expected
    TALLY["survived"] += ok
    return ok


def flip(path, where):
    raw = bytearray(path.read_bytes())
    raw[where(len(raw))] ^= 0x01
    path.write_bytes(bytes(raw))


def test_every_sale_lands_in_both_copies(kiosk_dir):
    root, config = kiosk_dir
    first, mirror = root / "data" / "live.kdb", root / "stick" / "live.kdb"
    assert first.read_bytes() == mirror.read_bytes()
    assert os.stat(mirror).st_mode & 0o777 == 0o600
    assert (root / "stick" / "kiosk.key").read_bytes() == (root / "data" / "kiosk.key").read_bytes()


@pytest.mark.parametrize("which", ["data", "stick"])
@pytest.mark.parametrize("attack", ["flip_middle", "flip_last", "cut_one_byte", "cut_at_boundary", "delete",
                                    "empty"])
def test_one_damaged_copy_is_healed_from_the_other(kiosk_dir, which, attack):
    root, config = kiosk_dir
    victim = root / which / "live.kdb"
    raw = victim.read_bytes()
    if attack == "flip_middle":
        flip(victim, lambda n: n // 2)
    elif attack == "flip_last":
        flip(victim, lambda n: n - 5)
    elif attack == "cut_one_byte":
        os.truncate(victim, len(raw) - 1)
    elif attack == "cut_at_boundary":
        ends = [start + length for start, length in records_of(raw)]
        os.truncate(victim, ends[-3])                   # two whole records gone, cut between records
    elif attack == "delete":
        victim.unlink()
    elif attack == "empty":
        victim.write_bytes(b"")
    assert survived(config, [1000, 1100, 1200])
    assert (root / "data" / "live.kdb").read_bytes() == (root / "stick" / "live.kdb").read_bytes() == raw
    assert any("healed" in line and which in line for line in notices(config)), notices(config)
    assert status(config)["store_alarms"] == []
    assert run_kiosk("charge", "13.00", "--config", config).returncode == 0
    assert pending(config) == [1000, 1100, 1200, 1300]


def test_both_copies_damaged_in_different_places_heal_record_by_record(kiosk_dir):
    root, config = kiosk_dir
    raw = (root / "data" / "live.kdb").read_bytes()
    flip(root / "data" / "live.kdb", lambda n: n // 2)
    flip(root / "stick" / "live.kdb", lambda n: n - 5)
    assert survived(config, [1000, 1100, 1200])
    assert (root / "data" / "live.kdb").read_bytes() == raw == (root / "stick" / "live.kdb").read_bytes()
    assert any("record by record" in line for line in notices(config))
    assert status(config)["store_alarms"] == []


def test_both_copies_damaged_alike_keep_selling_with_an_alarm(kiosk_dir):
    root, config = kiosk_dir
    for copy in ("data", "stick"):
        flip(root / copy / "live.kdb", lambda n: n // 2)    # the same record, in both
    before = pending(config)
    TALLY["tried"] += 1
    TALLY["survived"] += before == [1000, 1100, 1200]
    assert set(before) <= {1000, 1100, 1200} and len(before) >= 2   # what reads is kept: one record lost at most
    [alarm] = status(config)["store_alarms"]
    assert "could not read: bytes" in alarm
    assert run_kiosk("charge", "13.00", "--config", config).returncode == 0
    assert (root / "data" / "live.kdb").read_bytes() == (root / "stick" / "live.kdb").read_bytes()
    assert pending(config) == sorted(before + [1300])


def test_a_write_acknowledged_in_neither_is_made_equal_quietly(kiosk_dir):
    """Killed between the two appends: the first copy has a record the mirror
    lacks; it was never acknowledged, so no alarm and no "healed" notice."""
    root, config = kiosk_dir
    first, mirror = root / "data" / "live.kdb", root / "stick" / "live.kdb"
    before = first.read_bytes()
    assert run_kiosk("charge", "13.00", "--config", config).returncode == 0
    mirror.write_bytes(before)
    acknowledged_only(mirror, before)
    told = len(notices(config))
    assert survived(config, [1000, 1100, 1200, 1300])
    assert first.read_bytes() == mirror.read_bytes()
    assert not any("healed" in line for line in notices(config)[told - 1:])


def test_a_new_card_comes_back_from_the_mirror(kiosk_dir):
    root, config = kiosk_dir
    shutil.rmtree(root / "data")                             # the SD card died; a blank one is in
    assert survived(config, [1000, 1100, 1200])
    assert any("brought back from the mirror" in line for line in notices(config))
    assert (root / "data" / "kiosk.key").stat().st_mode & 0o777 == 0o600


def test_a_new_card_with_a_damaged_key_on_the_mirror_starts_anew_keeps_the_copy_and_alarms(kiosk_dir):
    """The key on the stick cut to 0 bytes (a power cut right after an earlier
    release renamed it there): its queue copy cannot be read by anyone."""
    root, config = kiosk_dir
    shutil.rmtree(root / "data")                             # the SD card died; a blank one is in
    (root / "stick" / "kiosk.key").write_bytes(b"")
    stick_copy = (root / "stick" / "live.kdb").read_bytes()
    init = run_kiosk("init", "--config", config)
    assert init.returncode == 0, init.stderr
    [alarm] = status(config)["store_alarms"]
    assert "key is damaged" in alarm and "kiosk.key (0 bytes, not 32)" in alarm and "kiosk recover" in alarm
    [aside] = (root / "stick").glob("live.kdb.bad-*")
    assert aside.read_bytes() == stick_copy                  # kept, for the old card's key
    assert pending(config) == []
    assert run_kiosk("charge", "13.00", "--config", config).returncode == 0
    assert pending(config) == [1300]
    assert (root / "data" / "live.kdb").read_bytes() == (root / "stick" / "live.kdb").read_bytes()
    assert (root / "stick" / "kiosk.key").read_bytes() == (root / "data" / "kiosk.key").read_bytes()
    assert len((root / "data" / "kiosk.key").read_bytes()) == 32


def test_a_damaged_key_on_the_mirror_is_left_alone_by_anything_but_init(kiosk_dir):
    root, config = kiosk_dir
    shutil.rmtree(root / "data")
    (root / "stick" / "kiosk.key").write_bytes(b"")
    before = sorted(p.name for p in (root / "stick").iterdir())
    assert run_kiosk("status", "--config", config).returncode != 0      # "run kiosk init first"
    assert sorted(p.name for p in (root / "stick").iterdir()) == before


def test_a_zero_filled_key_of_the_right_size_on_the_mirror_is_damaged_too(kiosk_dir):
    root, config = kiosk_dir
    shutil.rmtree(root / "data")
    (root / "stick" / "kiosk.key").write_bytes(bytes(32))     # the size written, the cluster not
    assert run_kiosk("init", "--config", config).returncode == 0
    [alarm] = status(config)["store_alarms"]
    assert "no record of the mirror's live.kdb authenticates" in alarm
    assert run_kiosk("charge", "13.00", "--config", config).returncode == 0
    assert pending(config) == [1300]


def test_kiosk_recover_says_the_set_aside_sales_could_not_be_read(kiosk_dir):
    root, config = kiosk_dir
    shutil.rmtree(root / "data")
    (root / "stick" / "kiosk.key").write_bytes(b"")
    assert run_kiosk("init", "--config", config).returncode == 0
    recover = run_kiosk("recover", "--config", config)
    assert recover.returncode == 1 and "could not read: the sales in" in recover.stdout, recover.stdout
    assert status(config)["store_alarms"] == []                 # said once, with exit 1
    assert list((root / "stick").glob("live.kdb.bad-*"))        # still kept


def test_an_alarm_cut_off_before_the_store_opened_is_still_raised(kiosk_dir, monkeypatch):
    """The stick's copy set aside, then the power goes before the new store
    is open: the alarm, written first, is raised at the next start."""
    root, config = kiosk_dir
    shutil.rmtree(root / "data")
    (root / "stick" / "kiosk.key").write_bytes(b"")
    cut = run_kiosk("init", "--config", config, env={"KIOSK_CRASH_AT": "mirror:after_set_aside"})
    assert cut.returncode != 0
    assert not (root / "stick" / "live.kdb").exists() and list((root / "stick").glob("live.kdb.bad-*"))
    assert run_kiosk("init", "--config", config).returncode == 0
    [alarm] = status(config)["store_alarms"]
    assert "key is damaged" in alarm


def test_the_old_card_mends_a_damaged_key_on_its_mirror(kiosk_dir):
    """A 0-byte key left on the stick by the release before this one: the card
    that still holds the key writes it again at its next start, so a new card
    can take it back."""
    root, config = kiosk_dir
    (root / "stick" / "kiosk.key").write_bytes(b"")
    assert run_kiosk("charge", "13.00", "--config", config).returncode == 0
    assert (root / "stick" / "kiosk.key").read_bytes() == (root / "data" / "kiosk.key").read_bytes()
    assert any("kiosk.key was damaged: written again" in line for line in notices(config))
    shutil.rmtree(root / "data")                                # now the card dies
    assert survived(config, [1000, 1100, 1200, 1300])


def test_a_stick_pulled_out_is_an_alarm_and_sales_go_on(kiosk_dir):
    root, config = kiosk_dir
    shutil.move(root / "stick", root / "in-a-drawer")
    assert run_kiosk("charge", "13.00", "--config", config).returncode == 0
    [alarm] = status(config)["store_alarms"]
    assert "stick" in alarm and "one copy" in alarm
    assert not (root / "stick").exists()                    # never a fresh copy where the stick was
    shutil.move(root / "in-a-drawer", root / "stick")        # plugged back in: healed, quietly complete
    assert survived(config, [1000, 1100, 1200, 1300])
    assert (root / "data" / "live.kdb").read_bytes() == (root / "stick" / "live.kdb").read_bytes()
    assert status(config)["store_alarms"] == []


def three_sales_without_a_mirror(tmp_path, fake_stripe):
    config = write_config(tmp_path, fake_stripe.url, kiosk={"offline_behavior": "force_offline"})
    assert run_kiosk("init", "--config", config).returncode == 0
    for amount in ("10.00", "11.00", "12.00"):
        assert run_kiosk("charge", amount, "--config", config).returncode == 0
    return config, tmp_path / "data" / "live.kdb"


def test_without_a_mirror_any_cut_is_an_alarm_never_nothing_lost(tmp_path, fake_stripe):
    """The issue's cuts: one byte, at a record boundary, and deep into the file."""
    config, live = three_sales_without_a_mirror(tmp_path, fake_stripe)
    raw = live.read_bytes()
    ends = [start + length for start, length in records_of(raw)]
    for cut in (len(raw) - 1, ends[-2], 700):
        live.write_bytes(raw[:cut])
        for aside in live.parent.glob("live.kdb.bad-*"):
            aside.unlink()
        result = run_kiosk("status", "--json", "--config", config)
        TALLY["cuts"] += 1
        lines = json.loads(result.stdout)["store_alarms"] if result.returncode == 0 else [result.stderr]
        assert any(f"{len(raw) - cut} bytes" in line or "cut off" in line for line in lines), (cut, lines)
        assert not any("nothing acknowledged was lost" in line for line in notices(config))
        TALLY["cuts_named"] += 1
        live.write_bytes(raw)
        acknowledged_only(live, raw)
        run_kiosk("recover", "--config", config)
    assert records_in(raw) > 3


@pytest.mark.parametrize("command, nth", [("charge", 1), ("sync", 1), ("sync", 2), ("sync", 3)])
def test_killed_between_the_two_copies_loses_and_doubles_nothing(tmp_path, fake_stripe, command, nth):
    """SIGKILL after a record is durable in the first copy, before the mirror
    has it: during a sale and at each write while forwarding."""
    from conftest import run_kiosk_process
    (tmp_path / "stick").mkdir()
    config = write_config(tmp_path, fake_stripe.url, storage={"path": "data", "mirror": "stick"})
    assert run_kiosk("init", "--config", config).returncode == 0
    assert run_kiosk("charge", "10.00", "--offline", "--yes", "--config", config).returncode == 0
    args = ("charge", "11.00", "--offline", "--yes") if command == "charge" else ("sync",)
    killed = run_kiosk_process(*args, "--config", config, env={"KIOSK_CRASH_AT": f"mirror:before_append#{nth}"})
    assert killed.returncode == -9, killed.stderr
    TALLY["tried"] += 1
    assert run_kiosk("sync", "--config", config).returncode == 0
    queue = json.loads(run_kiosk("queue", "--json", "--config", config).stdout)
    ids = [p["id"] for p in queue]
    for payment_id in ids:
        assert len(fake_stripe.intents_for(payment_id)) == 1
    assert (tmp_path / "data" / "live.kdb").read_bytes() == (tmp_path / "stick" / "live.kdb").read_bytes()
    assert 1000 in [p["amount"] for p in queue]
    TALLY["survived"] += 1


def test_killed_between_compacting_the_two_copies(tmp_path, fake_stripe):
    from conftest import run_kiosk_process
    (tmp_path / "stick").mkdir()
    config = write_config(tmp_path, fake_stripe.url, kiosk={"offline_behavior": "force_offline"},
                          storage={"path": "data", "mirror": "stick"},
                          **{"storage.tinydb": {"compact_every": 3}})
    assert run_kiosk("init", "--config", config).returncode == 0
    for amount in ("10.00", "11.00", "12.00"):
        assert run_kiosk("charge", amount, "--config", config).returncode == 0
    killed = run_kiosk_process("run", "--headless", "--config", config,
                               env={"KIOSK_CRASH_AT": "mirror:after_rename"})
    assert killed.returncode == -9, killed.stderr
    TALLY["tried"] += 1
    queue = json.loads(run_kiosk("queue", "--json", "--config", config).stdout)
    assert sorted(p["amount"] for p in queue) == [1000, 1100, 1200]     # settled by then, or still waiting
    assert all(len(fake_stripe.intents_for(p["id"])) <= 1 for p in queue)
    assert (tmp_path / "data" / "live.kdb").read_bytes() == (tmp_path / "stick" / "live.kdb").read_bytes()
    TALLY["survived"] += 1


def test_a_flip_anywhere_in_either_copy_is_healed(kiosk_dir):
    """Every 11th byte of each copy flipped in turn (a bad sector, a bit rot):
    the queue opens whole each time, and both copies are equal again."""
    from kiosk_builtins.tinydb_store import TinyDBStore
    root, config = kiosk_dir
    first, mirror = root / "data" / "live.kdb", root / "stick" / "live.kdb"
    raw = first.read_bytes()
    expected = sorted(p["amount"] for p in json.loads(run_kiosk("queue", "--json", "--config", config).stdout))
    tried = survived = 0
    for victim in (first, mirror):
        for offset in range(0, len(raw), 11):
            bad = bytearray(raw)
            bad[offset] ^= 0x01
            victim.write_bytes(bytes(bad))
            store = TinyDBStore(root / "data", mirror=root / "stick")
            try:
                amounts = sorted(p.amount for p in store.live())
                alarms = store.alarms()
            finally:
                store.close()
            tried += 1
            survived += amounts == expected and not alarms and first.read_bytes() == mirror.read_bytes() == raw
            for copy in (first, mirror):
                copy.write_bytes(raw)
                acknowledged_only(copy, raw)
            for aside in [*root.glob("data/live.kdb.bad-*"), *root.glob("stick/live.kdb.bad-*")]:
                aside.unlink()
    TALLY["tried"] += tried
    TALLY["survived"] += survived
    print(f"\nflips in one copy of two: {tried} tried, {survived} survived, 0 doubled")
    assert survived == tried


def test_without_a_mirror_a_flip_anywhere_keeps_what_reads_and_alarms_about_the_rest(tmp_path, fake_stripe):
    """No second copy: a flipped byte costs at most the record it is in; the
    kiosk opens on the rest (or refuses, if nothing reads), every loss is an
    alarm, and nothing is ever doubled."""
    from kiosk_builtins.tinydb_store import TinyDBStore
    from kiosk.interfaces import StoreAlarm
    config, live = three_sales_without_a_mirror(tmp_path, fake_stripe)
    raw = live.read_bytes()
    counts = {"tried": 0, "all kept": 0, "one sale lost, alarmed": 0, "refused to open": 0}
    for offset in range(0, len(raw), 11):
        bad = bytearray(raw)
        bad[offset] ^= 0x01
        live.write_bytes(bytes(bad))
        counts["tried"] += 1
        try:
            store = TinyDBStore(tmp_path / "data")
        except StoreAlarm:
            counts["refused to open"] += 1          # nothing reads (the header): exit 5, never an empty queue
        else:
            try:
                amounts = sorted(p.amount for p in store.live())
                assert len(amounts) == len(set(p.id for p in store.live()))             # never doubled
                assert set(amounts) <= {1000, 1100, 1200} and len(amounts) >= 2
                if amounts == [1000, 1100, 1200]:
                    counts["all kept"] += 1
                else:
                    assert store.alarms(), offset                                      # never a silent loss
                    counts["one sale lost, alarmed"] += 1
            finally:
                store.close()
        live.write_bytes(raw)
        acknowledged_only(live, raw)
        for aside in (tmp_path / "data").glob("live.kdb.bad-*"):
            aside.unlink()
    print("\nflips without a mirror: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    assert counts["tried"] == counts["all kept"] + counts["one sale lost, alarmed"] + counts["refused to open"]


def test_an_older_copy_put_back_never_overwrites_the_newer_one(kiosk_dir):
    """A backup of the queue taken before a compaction (another generation),
    copied back over the first copy: the mirror's newer sales win, the old
    copy is set aside, and the vendor is told."""
    from kiosk_builtins.tinydb_store import TinyDBStore
    root, config = kiosk_dir
    first = root / "data" / "live.kdb"
    backup = first.read_bytes()
    for amount in ("13.00", "14.00"):
        assert run_kiosk("charge", amount, "--config", config).returncode == 0
    store = TinyDBStore(root / "data", compact_every=1, mirror=root / "stick")
    store.maintain()                                             # a new generation in both copies
    store.close()
    assert run_kiosk("charge", "15.00", "--config", config).returncode == 0
    shutil.copy2(root / "data" / "live.kdb", root / "later.kdb")
    first.unlink()
    first.write_bytes(backup)                                    # the old backup, put back
    assert survived(config, [1000, 1100, 1200, 1300, 1400, 1500])
    assert any("differed" in line and "set aside" in line for line in notices(config))
    assert list((root / "data").glob("live.kdb.bad-*"))


def test_a_copy_salvaged_while_the_stick_was_out_keeps_the_sticks_sales_for_recover(kiosk_dir):
    """The first copy is cut while the stick is out: the kiosk salvages what
    it has; with the stick back, the stick's fuller copy is set aside (never
    just overwritten) and `kiosk recover` brings its sales back."""
    root, config = kiosk_dir
    first = root / "data" / "live.kdb"
    shutil.move(root / "stick", root / "drawer")
    raw = first.read_bytes()
    # each sale is two whole-payment records: stored, then marked shown (written after, off the sale path)
    last_sale = [start for start, length in records_of(raw) if length > 500][-2]
    os.truncate(first, last_sale)                                # the $12 sale, cut off
    assert pending(config) == [1000, 1100]
    shutil.move(root / "drawer", root / "stick")
    TALLY["tried"] += 1
    assert pending(config) == [1000, 1100]
    assert list((root / "stick").glob("live.kdb.bad-*"))        # the stick's copy, kept
    recover = run_kiosk("recover", "--config", config)
    assert "brought back" in recover.stdout, recover.stdout
    assert pending(config) == [1000, 1100, 1200]
    TALLY["survived"] += 1
