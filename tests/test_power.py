"""The built-in power plugin (plugins/power.py) and the contract it stands on
(``pause_sales``, ``wait_for_sales``, the ``kiosk_status`` hook, ``Setting.check``).

A fake sysfs tree -- a folder laid out as ``/sys/class/power_supply`` with
``BAT0/capacity``, ``status``... -- stands in for the kernel; everything else
is real: the kiosk, the plugin and its daemon thread's ``poll``, the fake
Stripe peer, the status light on gpiozero's mock pins, the ``kiosk`` command.
The shutdown command is ``touch MARKER``: the test sees whether, and when, it ran.
"""
from __future__ import annotations

import json
import shlex
import shutil
import sys
import threading
from pathlib import Path

import pytest
from gpiozero import Device
from gpiozero.pins.mock import MockFactory, MockPWMPin

from kiosk import (REFUSED, CardResult, Notice, ReaderError, ReaderInfo, hookimpl, notices,
                   opened_kiosk)
from kiosk.boot import load_host
from kiosk_builtins.power import plugin as power
from kiosk_builtins.status_light import plugin as status_light

from conftest import run_kiosk, write_config, open_touchscreen

WAIT = 30      # seconds a test waits for a thread it started before failing (never a timing assertion)


# -- the fake sysfs -------------------------------------------------------------------

def supply(root: Path, name: str, **attributes) -> Path:
    """``root/name/attribute`` files, as the kernel shows them (a trailing newline)."""
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    for attribute, value in attributes.items():
        (folder / attribute).write_text(f"{value}\n")
    return folder


@pytest.fixture
def sysfs(tmp_path):
    """A UPS HAT's battery at 60 % on battery, and its mains input (off)."""
    root = tmp_path / "power_supply"
    supply(root, "ups-battery", type="Battery", scope="System", present=1, status="Discharging",
           capacity=60, capacity_level="Normal", voltage_now=3870000)
    supply(root, "ups-input", type="Mains", online=0)
    return root


def battery(sysfs: Path, capacity: int, status: str = "Discharging", level: str = "Normal") -> None:
    supply(sysfs, "ups-battery", capacity=capacity, status=status, capacity_level=level)


def mains(sysfs: Path, online: bool) -> None:
    supply(sysfs, "ups-input", online=int(online))


# -- test peers ----------------------------------------------------------------------

class Watcher:
    """A notifier that keeps every notice and says when a kind arrives (and
    touches ``settled`` when a payment succeeds)."""

    def __init__(self, settled: Path | None = None):
        self.seen: list[Notice] = []
        self.arrived: dict[str, threading.Event] = {}
        self.settled = settled          # touched when a payment settles: what the shutdown command checks

    @hookimpl
    def kiosk_payment_changed(self, payment, previous_state):
        if self.settled is not None and payment.state == "succeeded":
            self.settled.touch()

    def kind(self, kind: str) -> threading.Event:
        return self.arrived.setdefault(kind, threading.Event())

    def power_notices(self) -> list[str]:
        return [n.kind for n in self.seen if n.kind in (notices.BATTERY_LOW, notices.BATTERY_CRITICAL,
                                                        notices.POWER_RESTORED)]

    @hookimpl
    def kiosk_notify(self, notice):
        self.seen.append(notice)
        self.kind(notice.kind).set()


class GatedReader:
    """A customer at the reader: the card comes when the test says so."""

    def __init__(self):
        self.reading = threading.Event()
        self.tap = threading.Event()

    def info(self):
        return ReaderInfo(name="gated test reader", supports_offline=True, battery=None)

    def read_card(self, amount, currency, offline, cancel, card=None):
        self.reading.set()
        if not self.tap.wait(WAIT) or cancel.is_set():
            raise ReaderError("no card")
        return CardResult(token="pm_card_visa", brand="visa", last4="4242", exp_month=12, exp_year=2034)

    def close(self):
        self.tap.set()


class GatedReaderPlugin:
    def __init__(self):
        self.reader = GatedReader()

    @hookimpl
    def kiosk_open_reader(self, settings):
        return self.reader


def config(tmp_path, fake_stripe, sysfs, marker=None, **sections):
    power_settings = {"path": str(sysfs), "poll_seconds": 86400.0,      # the test polls, not the clock
                      "shutdown_command": f"touch {shlex.quote(str(marker))}" if marker else ""}
    power_settings.update(sections.pop("power", {}))
    return write_config(tmp_path, fake_stripe.url, power=power_settings, **sections)


@pytest.fixture
def kiosk_with(tmp_path, fake_stripe, sysfs):
    """Open a real kiosk with the power plugin on the fake sysfs, plus test plugins."""
    opened = []

    def opener(marker=None, plugins=(), **sections):
        host = load_host()
        for name, extra in plugins:
            host.register(extra, name)
        host.check()
        from kiosk.boot import open_kiosk
        kiosk = open_kiosk(config(tmp_path, fake_stripe, sysfs, marker, **sections), create=True, host=host)
        opened.append(kiosk)
        return kiosk
    yield opener
    for kiosk in opened:
        kiosk.close()


# -- reading ----------------------------------------------------------------------------

def test_no_battery_is_quiet_and_a_device_battery_is_not_the_kiosks(tmp_path, fake_stripe, kiosk_with):
    # a desktop: a mains supply only; a Bluetooth reader's battery (scope Device) nearly empty
    sysfs = tmp_path / "power_supply"
    shutil.rmtree(sysfs)
    supply(sysfs, "AC", type="Mains", online=1)
    supply(sysfs, "hid-reader-battery", type="Battery", scope="Device", status="Discharging", capacity=1)
    watcher = Watcher()
    kiosk = kiosk_with(plugins=[("watcher", watcher)], notifier={"use": ["feed", "watcher"]})
    power.poll()
    assert power.battery is None and watcher.power_notices() == []
    status = kiosk.status(check=False)
    assert status["power"] is None and status["sales_paused"] is None
    assert kiosk.take_sale(500).status == "approved"


def test_a_configured_path_that_does_not_exist_is_one_line_naming_it(tmp_path, fake_stripe, sysfs):
    missing = tmp_path / "nowhere" / "BAT9"
    path = config(tmp_path, fake_stripe, missing)
    result = run_kiosk("status", "--config", path)
    assert result.returncode == 2
    assert result.stderr == f"kiosk: error: config [power] path: {missing} does not exist " \
                            f"(a power_supply folder such as /sys/class/power_supply/BAT0)\n"
    bad = config(tmp_path, fake_stripe, sysfs, power={"low_percent": 120})
    result = run_kiosk("status", "--config", bad)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "[power] low_percent: must be a percentage from 0 to 100, not 120" in result.stderr
    quotes = config(tmp_path, fake_stripe, sysfs, power={"shutdown_command": "systemctl 'poweroff"})
    result = run_kiosk("status", "--config", quotes)
    assert result.returncode == 2 and "[power] shutdown_command: is not a command line" in result.stderr


def test_status_shows_the_battery(tmp_path, fake_stripe, sysfs):
    path = config(tmp_path, fake_stripe, sysfs)
    assert run_kiosk("init", "--config", path).returncode == 0
    battery(sysfs, 18)
    status = json.loads(run_kiosk("status", "--json", "--config", path).stdout)
    assert status["power"] == {"supply": "ups-battery", "percent": 18, "charging": False, "on_battery": True,
                               "status": "Discharging", "level": "Normal", "volts": 3.87, "state": "low",
                               "line": "battery 18%, on battery (low)"}
    battery(sysfs, 64, "Charging")
    mains(sysfs, True)
    text = run_kiosk("status", "--config", path)
    assert text.returncode == 0 and "\npower: battery 64%, charging (ok)\n" in text.stdout


# -- low: a warning per crossing ---------------------------------------------------------

@pytest.fixture
def mock_pins():
    previous = Device.pin_factory
    Device.pin_factory = MockFactory(pin_class=MockPWMPin)
    yield Device.pin_factory
    Device.pin_factory.reset()
    Device.pin_factory = previous


def test_low_battery_warns_once_per_crossing_on_screen_and_light_and_mains_clears_it(
        mock_pins, kiosk_with, sysfs):
    watcher = Watcher()
    light = {"green_pin": 17, "amber_pin": 27, "red_pin": 22, "approved_beep_seconds": 0.0,
             "declined_beep_seconds": 0.0}
    kiosk = kiosk_with(plugins=[("watcher", watcher)], notifier={"use": ["feed", "status_light", "watcher"]},
                       notifier__status_light=light)
    assert watcher.power_notices() == [] and status_light.state in ("online", "offline")
    battery(sysfs, 20)                                  # at the threshold (20 %): low
    power.poll()
    battery(sysfs, 17)
    power.poll()                                        # still low: no second warning
    battery(sysfs, 21)                                  # a reading bouncing up is not a crossing
    power.poll()
    assert watcher.power_notices() == [notices.BATTERY_LOW]
    low = next(n for n in watcher.seen if n.kind == notices.BATTERY_LOW)
    assert (low.level, low.title, low.message) == ("warning", "Battery low",
                                                  "20% left on battery — plug the kiosk in soon")
    assert status_light.state == "battery_low"
    assert kiosk.recent_notices[-1].kind == notices.BATTERY_LOW       # the screen's list of notices
    assert kiosk.take_sale(500).status == "approved"                   # low is a warning, not a stop

    battery(sysfs, 22, "Charging")
    mains(sysfs, True)
    power.poll()
    power.poll()
    assert watcher.power_notices() == [notices.BATTERY_LOW, notices.POWER_RESTORED]
    assert status_light.state == "online"

    battery(sysfs, 19)                                  # unplugged again: a new crossing, a new warning
    mains(sysfs, False)
    power.poll()
    assert watcher.power_notices() == [notices.BATTERY_LOW, notices.POWER_RESTORED, notices.BATTERY_LOW]


def test_the_drivers_own_level_counts_and_unknown_charging_is_not_on_battery(kiosk_with, sysfs):
    watcher = Watcher()
    kiosk = kiosk_with(plugins=[("watcher", watcher)], notifier={"use": ["feed", "watcher"]})
    battery(sysfs, 40, "Unknown", level="Critical")     # a fuel gauge that cannot tell charging
    mains(sysfs, True)                                   # ... but the mains input is on
    power.poll()
    assert watcher.power_notices() == [] and kiosk.status(check=False)["sales_paused"] is None
    mains(sysfs, False)                                  # now known to run on the battery
    power.poll()
    assert watcher.power_notices() == [notices.BATTERY_CRITICAL]
    assert kiosk.take_sale(500).status == REFUSED


# -- critical: stop new sales, finish the one under way, switch off ---------------------

def test_critical_lets_the_sale_under_way_finish_refuses_new_ones_then_shuts_down(
        tmp_path, kiosk_with, sysfs, fake_stripe):
    marker, settled = tmp_path / "powered-off", tmp_path / "sale-settled"
    watcher, gated = Watcher(settled), GatedReaderPlugin()
    # the shutdown command writes whether the sale had settled (durably, told to plugins) when it ran
    command = (f"sh -c 'if test -e \"$1\"; then echo after > \"$2\"; else echo before > \"$2\"; fi' sh "
               f"{shlex.quote(str(settled))} {shlex.quote(str(marker))}")
    kiosk = kiosk_with(plugins=[("watcher", watcher), ("gated", gated)], power={"shutdown_command": command},
                       notifier={"use": ["feed", "watcher"]}, reader={"use": "gated"})
    started = {}
    sale = threading.Thread(target=lambda: started.setdefault("result", kiosk.take_sale(1250)))
    sale.start()
    assert gated.reader.reading.wait(WAIT)              # the customer is at the reader

    battery(sysfs, 4)
    poll = threading.Thread(target=power.poll)          # what the plugin's own thread does each poll
    poll.start()
    assert watcher.kind(notices.BATTERY_CRITICAL).wait(WAIT)
    refused = kiosk.take_sale(800)
    assert refused.status == REFUSED and refused.limit == "paused" and refused.payment is None
    assert refused.message == "battery nearly empty (4%): plug the kiosk in to sell again; nothing stored"
    assert kiosk.status(check=False)["sales_paused"].startswith("battery nearly empty (4%)")
    assert not marker.exists()                          # the sale under way holds the shutdown

    gated.reader.tap.set()                              # the card is tapped: the sale goes through
    sale.join(WAIT)
    poll.join(WAIT)
    assert not sale.is_alive() and not poll.is_alive()
    result = started["result"]
    assert result.status == "approved" and kiosk.store.get(result.payment.id).state == "succeeded"
    assert marker.read_text() == "after\n"              # switched off after the sale settled, not before
    assert len(fake_stripe.payment_intents) == 1      # only the sale started before "critical"
    critical = next(n for n in watcher.seen if n.kind == notices.BATTERY_CRITICAL)
    assert critical.level == "error" and "switches off once the sale under way is finished" in critical.message

    power.poll()                                        # the system is going down: nothing runs twice
    assert watcher.power_notices() == [notices.BATTERY_CRITICAL]


def test_kiosk_charge_refuses_in_one_line_while_critical_and_stores_nothing(tmp_path, fake_stripe, sysfs):
    marker = tmp_path / "powered-off"
    path = config(tmp_path, fake_stripe, sysfs, marker)
    assert run_kiosk("init", "--config", path).returncode == 0
    battery(sysfs, 2, level="Critical")
    result = run_kiosk("charge", "5.00", "--config", path)
    assert result.returncode == 1
    assert result.stdout == ("REFUSED: $5.00 — battery nearly empty (2%): plug the kiosk in to sell again; "
                             "nothing stored\n")
    assert fake_stripe.payment_intents == []
    assert json.loads(run_kiosk("queue", "--json", "--config", path).stdout) == []
    assert not marker.exists()     # a one-shot command stops sales; switching off is for the kiosk that stays up
    battery(sysfs, 2, "Charging", level="Critical")
    mains(sysfs, True)
    assert run_kiosk("charge", "5.00", "--config", path).returncode == 0     # on mains: sales go on


def test_plugged_in_while_the_sale_finishes_does_not_shut_down(tmp_path, kiosk_with, sysfs):
    marker = tmp_path / "powered-off"
    watcher, gated = Watcher(), GatedReaderPlugin()
    kiosk = kiosk_with(marker, plugins=[("watcher", watcher), ("gated", gated)],
                       notifier={"use": ["feed", "watcher"]}, reader={"use": "gated"})
    sale = threading.Thread(target=kiosk.take_sale, args=(700,))
    sale.start()
    assert gated.reader.reading.wait(WAIT)
    battery(sysfs, 3)
    poll = threading.Thread(target=power.poll)
    poll.start()
    assert watcher.kind(notices.BATTERY_CRITICAL).wait(WAIT)
    battery(sysfs, 3, "Charging")                       # the vendor plugs in before the customer taps
    mains(sysfs, True)
    gated.reader.tap.set()
    sale.join(WAIT)
    poll.join(WAIT)
    assert not marker.exists()
    assert watcher.power_notices() == [notices.BATTERY_CRITICAL, notices.POWER_RESTORED]
    assert kiosk.take_sale(600).status == "approved"


def test_a_failing_shutdown_command_is_told_once_and_sales_stay_stopped_until_mains(
        tmp_path, kiosk_with, sysfs):
    watcher = Watcher()
    kiosk = kiosk_with(plugins=[("watcher", watcher)], notifier={"use": ["feed", "watcher"]},
                       power={"shutdown_command": f"{shlex.quote(sys.executable)} -c 'raise SystemExit(3)'"})
    battery(sysfs, 1)
    power.poll()
    power.poll()                                        # tried again, told once
    failed = [n for n in watcher.seen if n.title == "Cannot switch off"]
    assert len(failed) == 1 and "failed (exit 3)" in failed[0].message
    assert kiosk.take_sale(500).status == REFUSED
    battery(sysfs, 2, "Charging")
    power.poll()
    assert kiosk.take_sale(500).status == "approved"


def test_no_shutdown_command_stops_sales_but_leaves_the_kiosk_on(tmp_path, kiosk_with, sysfs):
    watcher = Watcher()
    kiosk = kiosk_with(plugins=[("watcher", watcher)], notifier={"use": ["feed", "watcher"]})
    battery(sysfs, 5)
    power.poll()
    critical = next(n for n in watcher.seen if n.kind == notices.BATTERY_CRITICAL)
    assert critical.message == "5% left — new sales are refused; plug the kiosk in to sell again"
    assert kiosk.take_sale(500).status == REFUSED


def test_the_daemon_thread_polls_on_its_own(tmp_path, kiosk_with, sysfs):
    watcher = Watcher()
    kiosk_with(plugins=[("watcher", watcher)], notifier={"use": ["feed", "watcher"]},
               power={"poll_seconds": 1.0})
    battery(sysfs, 15)
    assert watcher.kind(notices.BATTERY_LOW).wait(WAIT)


# -- the contract a third-party plugin uses --------------------------------------------

class PaperPlugin:
    """A receipt printer out of paper: the way a third party pauses sales and reports status."""

    def __init__(self):
        self.kiosk = None

    @hookimpl
    def kiosk_startup(self, kiosk):
        self.kiosk = kiosk
        kiosk.pause_sales("the receipt printer is out of paper")

    @hookimpl
    def kiosk_status(self, kiosk):
        return {"printer": {"paper": 0, "line": "out of paper"}, "online": "hijacked"}


def test_a_plugin_pauses_sales_and_adds_to_status_through_the_contract(tmp_path, fake_stripe, sysfs):
    path = config(tmp_path, fake_stripe, sysfs)
    paper = PaperPlugin()
    with opened_kiosk(path, create=True, plugins={"paper": paper}) as kiosk:
        refused = kiosk.take_sale(500)
        assert (refused.status, refused.limit) == (REFUSED, "paused")
        assert refused.message == "the receipt printer is out of paper; nothing stored"
        assert kiosk.live() == [] and kiosk.sales_paused == "the receipt printer is out of paper"
        status = kiosk.status(check=False)
        assert status["printer"] == {"paper": 0, "line": "out of paper"}
        assert status["online"] is None                 # a plugin never overwrites the core's keys
        assert kiosk.wait_for_sales(0) is True          # nothing under way
        kiosk.resume_sales()
        assert kiosk.take_sale(500).status == "approved" and kiosk.sales_paused is None


# -- on the touchscreen ------------------------------------------------------------------

@pytest.mark.parametrize("language, low, critical, refused, restored", [
    ("en", "Battery low — plug the kiosk in soon", "Battery nearly empty — new sales stopped",
     "Battery nearly empty (4%): plug the kiosk in to sell again; nothing stored", "Back on mains power"),
    ("ja", "バッテリー残量が少なくなっています", "バッテリー残量がほとんどありません", "販売を一時停止しています",
     "電源に接続されました"),
])
def test_the_screen_warns_refuses_with_the_reason_and_clears_on_mains(
        tmp_path, fake_stripe, sysfs, monkeypatch, language, low, critical, refused, restored):
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    monkeypatch.setenv("SDL_AUDIODRIVER", "dummy")
    pytest.importorskip("pygame")
    from kiosk.boot import open_kiosk
    from test_touchscreen import on_screen, tap, type_amount, until
    currency, amount = ("jpy", "1200") if language == "ja" else ("usd", "12.50")
    path = config(tmp_path, fake_stripe, sysfs, display={"use": "touchscreen"},
                  kiosk={"language": language, "currency": currency})
    kiosk = open_kiosk(path, create=True)
    display = open_touchscreen(kiosk)
    try:
        assert display.catch_up()
        battery(sysfs, 12)
        power.poll()
        until(display, lambda: on_screen(display, low))
        display.act("alert_ok")
        battery(sysfs, 4)
        power.poll()
        until(display, lambda: on_screen(display, critical))
        display.act("alert_ok")
        type_amount(display, amount)
        tap(display, "charge")
        until(display, lambda: display.ui.screen == "result")
        assert on_screen(display, refused)
        assert kiosk.store.live() == [] and fake_stripe.payment_intents == []
        battery(sysfs, 5, "Charging")
        power.poll()
        until(display, lambda: on_screen(display, restored))
        assert not [a for a in display.ui.alerts if a.kind.startswith("battery_")]
        tap(display, "new_sale")
        type_amount(display, amount)
        tap(display, "charge")
        until(display, lambda: display.ui.screen == "result")
        assert len(fake_stripe.payment_intents) == 1
    finally:
        display.close()
        kiosk.close()
