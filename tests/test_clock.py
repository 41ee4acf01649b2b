"""Clock sense (issue 14, item 7): the kiosk never runs behind what it can
prove, takes Stripe's time when online, and says when its clock is not known
to be right.

The clock is moved from outside: real ``kiosk`` child processes under
``faketime --exclude-monotonic`` (the wall clock steps, the boot clock does
not -- as when a Pi boots with its clock hours behind, or someone sets it),
and a fake Stripe whose clock runs ahead.  Where a reboot or hours of uptime
are the point, in-process tests hand :class:`kiosk.clock.KioskClock` their
own system clock, boot clock and boot id.
"""
from __future__ import annotations

import json
import os
import glob
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest

from conftest import run_json, run_kiosk, write_config, open_touchscreen
from kiosk import notices
from kiosk.clock import AHEAD_OF_STRIPE, BEHIND, META, SAVE_SECONDS, UNCHECKED, KioskClock
from kiosk.payment import parse_iso

HOUR = 3600.0
T0 = datetime(2026, 12, 5, 9, 0, tzinfo=timezone.utc)


# -- in process: a system clock, a boot clock and a boot id of the test's own ------------

class Machine:
    """The clocks of one Raspberry Pi: the wall clock anyone may set, the
    boot clock that only counts up, and the boot id that changes at each boot."""

    def __init__(self, wall: datetime = T0):
        self.wall, self.since_boot, self.boot, self.synced = wall, 100.0, "boot-1", False

    def system(self) -> datetime:
        return self.wall

    def boottime(self) -> float:
        return self.since_boot

    def boot_id(self) -> str:
        return self.boot

    def run_for(self, hours: float) -> None:
        """Time passes: both clocks move."""
        self.wall += timedelta(hours=hours)
        self.since_boot += hours * HOUR

    def step(self, hours: float) -> None:
        """Someone (or a boot without network) sets the wall clock; the boot clock does not move."""
        self.wall += timedelta(hours=hours)

    def reboot(self, wall: datetime) -> None:
        """Switched off and on again: a new boot, its wall clock back at ``wall``."""
        self.boot, self.since_boot, self.wall = self.boot + "+", 20.0, wall


def attach(kiosk, machine: Machine, tolerance: float = 300.0) -> KioskClock:
    """The kiosk counts time on ``machine`` (what Kiosk() builds, with the machine's clocks)."""
    keeper = KioskClock(kiosk.store, kiosk.sync, tolerance, system=machine.system, boottime=machine.boottime,
                        boot_id=machine.boot_id, kernel_synced=lambda: machine.synced)
    kiosk.timekeeper = kiosk.clock = keeper
    return keeper


@pytest.fixture
def offline_config(tmp_path):
    return write_config(tmp_path, kiosk={"offline_behavior": "force_offline"})


@pytest.fixture
def machine():
    return Machine()


class Restarts:
    """One kiosk at a time on ``machine``: ``start`` closes the last one first, as a restart does."""

    def __init__(self, machine: Machine):
        self.machine, self.kiosk = machine, None

    def start(self, config):
        from kiosk.boot import open_kiosk
        self.stop()
        self.kiosk = open_kiosk(config, create=True, clock=self.machine.system)
        attach(self.kiosk, self.machine)
        return self.kiosk

    def stop(self) -> None:
        if self.kiosk is not None:
            self.kiosk.close()          # saves the time it knew, as at shutdown
            self.kiosk = None


@pytest.fixture
def restarts(machine):
    kiosks = Restarts(machine)
    yield kiosks
    kiosks.stop()


def sell(kiosk, n: int = 1):
    results = [kiosk.take_sale(500, behavior="force_offline") for _ in range(n)]
    assert all(r.status == "approved_offline" for r in results)
    return [r.payment for r in results]


def test_a_clock_stepped_back_while_running_neither_runs_back_nor_makes_payments_younger(offline_config, restarts,
                                                                                         machine):
    kiosk = restarts.start(offline_config)
    [payment] = sell(kiosk)
    machine.run_for(13)
    machine.step(-6)                                    # the clock is set 6 h back under the running kiosk
    status = kiosk.status(check=False)
    assert status["oldest_pending_age_hours"] == pytest.approx(13, abs=0.01)
    assert status["window_hours_left"] == pytest.approx(11, abs=0.01)
    assert parse_iso(status["clock"]["kiosk_time"]) == T0 + timedelta(hours=13)
    assert status["clock"]["offset_seconds"] == pytest.approx(6 * HOUR)
    assert BEHIND in status["clock"]["reasons"] and not status["clock"]["trusted"]
    assert "6.0 h behind the time the kiosk already counted" in status["clock"]["why"]
    [reminder] = kiosk.remind()                          # the 12 h reminder, not held back by the step
    assert reminder.kind == notices.REMINDER and "13 h old" in reminder.message
    [later] = sell(kiosk)                                # a new sale is never dated before the last one
    assert parse_iso(later.created_at) >= parse_iso(payment.created_at) + timedelta(hours=13)


def test_restarted_in_the_same_boot_it_adds_the_time_since_its_last_save(offline_config, restarts, machine):
    sell(restarts.start(offline_config), 2)
    restarts.stop()                                      # closed: the time is saved with the boot clock
    machine.run_for(13)                                  # 13 h later, in the same boot...
    machine.step(-10)                                    # ...with the clock set back 10 h, it starts again
    kiosk = restarts.start(offline_config)
    status = kiosk.status(check=False)
    assert status["oldest_pending_age_hours"] == pytest.approx(13, abs=0.01)
    assert "behind the last time the kiosk saved" in status["clock"]["why"]
    assert [n.kind for n in kiosk.remind()] == [notices.REMINDER]


def test_after_a_reboot_without_network_the_saved_time_is_a_floor_and_the_clock_unchecked(offline_config, restarts,
                                                                                         machine):
    kiosk = restarts.start(offline_config)
    sell(kiosk)
    machine.run_for(5)
    assert kiosk.timekeeper.save()                       # the background loop's save, 5 h after the sale
    restarts.stop()
    machine.reboot(wall=T0 + timedelta(hours=1))          # off for 8 h, back with the clock restored behind
    kiosk = restarts.start(offline_config)
    clock = kiosk.status(check=False)["clock"]
    assert parse_iso(clock["kiosk_time"]) == T0 + timedelta(hours=5)     # not before the last time it knew
    assert clock["reasons"] == [BEHIND, UNCHECKED]
    assert kiosk.status(check=False)["oldest_pending_age_hours"] == pytest.approx(5, abs=0.01)
    machine.step(12)                                     # network time arrives: 8 h off + 5 h, now right
    machine.synced = True
    clock = kiosk.status(check=False)["clock"]
    assert clock["trusted"] and clock["source"] == "system_sync" and clock["why"] is None


def test_the_newest_payment_is_a_floor_when_nothing_was_saved(offline_config, restarts, machine):
    kiosk = restarts.start(offline_config)
    [payment] = sell(kiosk)
    kiosk.store.set_meta(META, None)                     # as a kiosk killed before its first save
    machine.reboot(wall=T0 - timedelta(hours=6))
    rebooted = KioskClock(kiosk.store, kiosk.sync, 300, system=machine.system, boottime=machine.boottime,
                          boot_id=machine.boot_id, kernel_synced=lambda: False)    # what the next start reads
    clock = rebooted.state().as_dict()
    assert parse_iso(clock["kiosk_time"]) == parse_iso(payment.created_at)
    assert clock["reasons"] == [BEHIND, UNCHECKED] and "6.0 h behind the newest stored payment" in clock["why"]


@pytest.mark.parametrize("record", [None, "2026-12-05", {"at": "not a time"}, {"boot_id": "boot-1"}])
def test_a_missing_or_unreadable_saved_time_is_no_floor_and_stops_nothing(offline_config, restarts, machine, record):
    kiosk = restarts.start(offline_config)
    kiosk.store.set_meta(META, record)           # an earlier release saved none; a damaged one reads as nothing
    reread = KioskClock(kiosk.store, kiosk.sync, 300, system=machine.system, boottime=machine.boottime,
                        boot_id=machine.boot_id, kernel_synced=lambda: True)
    assert reread() == T0 and reread.state().trusted
    assert reread.save() and parse_iso(kiosk.store.get_meta(META)["at"]) == T0


def test_the_last_known_good_time_is_written_rarely_and_never_by_a_sale(offline_config, restarts, machine):
    kiosk = restarts.start(offline_config)
    keeper = kiosk.timekeeper
    assert keeper.save()
    saved = kiosk.store.get_meta(META)
    assert saved["boot_id"] == "boot-1" and parse_iso(saved["at"]) == T0
    machine.run_for(0.02)
    sell(kiosk, 5)
    assert kiosk.store.get_meta(META) == saved           # five sales wrote nothing of the clock
    assert not keeper.save()                             # a minute later: nothing new to save
    machine.run_for(SAVE_SECONDS / HOUR)
    assert keeper.save() and kiosk.store.get_meta(META)["at"] != saved["at"]


def test_a_tolerance_out_of_range_is_refused_in_one_line(tmp_path):
    config = write_config(tmp_path, kiosk={"clock_tolerance_seconds": -5})
    result = run_kiosk("status", "--config", config)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "clock_tolerance_seconds" in result.stderr


# -- Stripe's clock -------------------------------------------------------------------------

def test_online_the_kiosk_takes_stripes_time_when_its_own_is_behind(tmp_path, fake_stripe, open_kiosk):
    fake_stripe.clock = lambda: time.time() + HOUR        # the kiosk's clock is an hour behind Stripe's
    kiosk = open_kiosk(write_config(tmp_path, fake_stripe.url))
    assert kiosk.check_online()
    result = kiosk.take_sale(500)
    assert result.status == "approved"
    taken = parse_iso(result.payment.created_at).timestamp()
    assert taken == pytest.approx(time.time() + HOUR, abs=5)
    clock = kiosk.status()["clock"]
    assert clock["source"] == "stripe" and clock["reasons"] == [BEHIND]
    assert clock["offset_seconds"] == pytest.approx(HOUR, abs=5)
    assert "behind Stripe's clock" in clock["why"]


def test_a_clock_far_ahead_of_stripes_is_not_trusted_and_not_turned_back(tmp_path, fake_stripe, open_kiosk):
    fake_stripe.clock = lambda: time.time() - 2 * HOUR
    kiosk = open_kiosk(write_config(tmp_path, fake_stripe.url))
    clock = kiosk.status()["clock"]
    assert clock["reasons"] == [AHEAD_OF_STRIPE] and clock["offset_seconds"] == 0
    assert clock["stripe_offset_seconds"] == pytest.approx(-2 * HOUR, abs=5)
    assert "2.0 h ahead of Stripe's" in clock["why"]


def test_stripe_agreeing_is_a_time_source_and_is_told_once(tmp_path, fake_stripe, open_kiosk):
    kiosk = open_kiosk(write_config(tmp_path, fake_stripe.url))
    machine = Machine(wall=datetime.now(timezone.utc))
    attach(kiosk, machine)
    kiosk.health.check_clock()
    [told] = [n for n in kiosk.recent_notices if n.kind == notices.CLOCK]
    assert told.level == "warning" and "no time source" in told.message
    kiosk.health.check_clock()                           # the same reasons: not told again
    assert [n.kind for n in kiosk.recent_notices].count(notices.CLOCK) == 1
    machine.wall = datetime.now(timezone.utc)
    assert kiosk.check_online()
    kiosk.health.check_clock()
    last = [n for n in kiosk.recent_notices if n.kind == notices.CLOCK][-1]
    assert last.level == "success" and "Stripe's clock" in last.message
    assert kiosk.status()["clock"]["trusted"]


def test_stripe_now_counts_on_from_its_date_header_whatever_the_system_clock_does(tmp_path, fake_stripe,
                                                                                  open_kiosk):
    fake_stripe.clock = lambda: 1_900_000_000.0
    kiosk = open_kiosk(write_config(tmp_path, fake_stripe.url))
    assert kiosk.sync.stripe_now() is None               # not heard yet: no guess
    assert kiosk.check_online()
    first = kiosk.sync.stripe_now()
    assert first == pytest.approx(1_900_000_000.0, abs=2)
    assert kiosk.sync.stripe_now() >= first


# -- from outside: real kiosk processes with the clock moved by faketime ------------------

# libfaketime (Debian's faketime), preloaded straight into the kiosk: the faketime wrapper script
# would stand between the test and the kiosk's signals
LIBFAKETIME = next(iter(sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1"))), None)
needs_faketime = pytest.mark.skipif(LIBFAKETIME is None,
                                    reason="libfaketime is not installed (apt-get install faketime)")
KIOSK = [sys.executable, "-m", "kiosk.cli"]


def clock_moved(offset: str, env: dict | None = None) -> dict:
    """An environment whose wall clock is moved by ``offset`` (``-6h``); the
    monotonic and boot clocks are not (as ``faketime --exclude-monotonic``)."""
    return {**os.environ, **(env or {}), "LD_PRELOAD": LIBFAKETIME, "FAKETIME": offset,
            "FAKETIME_DONT_FAKE_MONOTONIC": "1"}


def run_at(offset: str, *args, env: dict | None = None) -> subprocess.CompletedProcess:
    """``kiosk ARGS`` in a child process with its wall clock moved by ``offset``."""
    return subprocess.run([*KIOSK, *map(str, args)], capture_output=True, text=True, timeout=60,
                          env=clock_moved(offset, env))


def status_at(offset: str, config) -> dict:
    result = run_at(offset, "status", "--json", "--config", config)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@needs_faketime
def test_faketime_moves_the_kiosks_wall_clock_and_not_its_boot_clock(tmp_path):
    probe = ("import time; print(time.time()); print(time.clock_gettime(time.CLOCK_BOOTTIME))")
    before = time.clock_gettime(time.CLOCK_BOOTTIME)
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=30,
                         env=clock_moved("-6h")).stdout.split()
    assert float(out[0]) == pytest.approx(time.time() - 6 * HOUR, abs=30)
    assert before <= float(out[1]) <= time.clock_gettime(time.CLOCK_BOOTTIME)


@needs_faketime
def test_restarted_with_the_clock_6h_back_it_says_so_reminds_on_time_and_keeps_the_deadline(offline_config):
    assert run_at("-13h", "init", "--config", offline_config).returncode == 0
    for _ in range(2):          # two offline sales, taken 13 h ago by the kiosk's clock
        result = run_at("-13h", "charge", "5.00", "--offline", "--yes", "--config", offline_config)
        assert result.returncode == 0, result.stderr
    status = status_at("+0", offline_config)      # now; its close saves the time it knew
    assert status["oldest_pending_age_hours"] == pytest.approx(13, abs=0.1)
    status = status_at("-6h", offline_config)     # restarted with the clock set 6 h back
    clock = status["clock"]
    assert not clock["trusted"] and BEHIND in clock["reasons"]
    assert clock["offset_seconds"] == pytest.approx(6 * HOUR, abs=60)
    assert "6.0 h behind the last time the kiosk saved" in clock["why"]
    assert status["oldest_pending_age_hours"] >= 13 and status["window_hours_left"] <= 11   # not extended
    text = run_at("-6h", "status", "--config", offline_config)
    assert "clock: NOT TRUSTED — the system clock is 6.0 h behind" in text.stdout

    run = subprocess.Popen([*KIOSK, "run", "--headless", "--config", offline_config], env=clock_moved("-6h"),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    hung = threading.Timer(120, run.kill)                # a guard against a hang, not a timing
    hung.start()
    seen = []
    try:
        for line in run.stdout:                  # the loop's notices, as they are logged
            seen.append(line)
            if any("Go online soon" in s for s in seen) and any("Clock not trusted" in s for s in seen):
                break
    finally:
        run.send_signal(signal.SIGTERM)
        rest, _ = run.communicate(timeout=60)
        hung.cancel()
    seen.append(rest)
    assert run.returncode == 0, "".join(seen)
    [reminder] = [n for n in run_json("notices", "--config", offline_config) if n["kind"] == "reminder"]
    assert "the oldest is 13 h old — 11 h left" in reminder["message"]


@needs_faketime
def test_killed_before_any_save_the_newest_payment_still_holds_the_clock(offline_config):
    assert run_at("-1h", "init", "--config", offline_config).returncode == 0     # its save is older than the sale
    result = run_at("+0", "charge", "5.00", "--offline", "--yes", "--config", offline_config,
                    env={"KIOSK_CRASH_AT": "sale:after_store"})
    assert result.returncode == -signal.SIGKILL
    clock = status_at("-6h", offline_config)["clock"]
    assert BEHIND in clock["reasons"] and "behind the newest stored payment" in clock["why"]
    assert clock["offset_seconds"] == pytest.approx(6 * HOUR, abs=60)


@needs_faketime
def test_online_a_kiosk_an_hour_behind_takes_stripes_time_from_outside(tmp_path, fake_stripe):
    config = write_config(tmp_path, fake_stripe.url)
    assert run_kiosk("init", "--config", config).returncode == 0
    result = run_at("-1h", "charge", "12.00", "--config", config)
    assert result.returncode == 0, result.stderr
    [intent] = fake_stripe.payment_intents
    [payment] = run_json("queue", "--all", "--config", config)
    assert parse_iso(payment["created_at"]).timestamp() == pytest.approx(intent["created"], abs=5)
    clock = status_at("-1h", config)["clock"]
    assert clock["source"] == "stripe" and clock["reasons"] == [BEHIND]
    assert clock["offset_seconds"] == pytest.approx(HOUR, abs=60)


# -- the screen ---------------------------------------------------------------------------------

@pytest.mark.parametrize("language, words", [("en", "Clock is 6 h 00 min behind"),
                                             ("ja", "時計が 6時間00分 遅れています")])
def test_the_screen_shows_a_banner_while_the_clock_is_not_trusted(tmp_path, fake_stripe, open_kiosk, monkeypatch,
                                                                   language, words):
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    monkeypatch.setenv("SDL_AUDIODRIVER", "dummy")
    config = write_config(tmp_path, fake_stripe.url, display={"use": "touchscreen"}, kiosk={"language": language})
    kiosk = open_kiosk(config)
    machine = Machine(wall=datetime.now(timezone.utc))
    machine.synced = True
    attach(kiosk, machine)
    display = open_touchscreen(kiosk)
    try:
        assert display.catch_up()
        assert display.widget("banner_clock") is None
        machine.step(-6)
        kiosk.health.check_clock()                       # the background loop's check: a notice, the screen reads
        assert display.catch_up()
        texts = [display.widget("banner_clock_text").text] if display.widget("banner_clock_text") else []
        assert any(words in text for text in texts), display.texts()
    finally:
        display.close()
