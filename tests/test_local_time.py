"""Days and times in the kiosk's time zone wherever a vendor reads one: `kiosk
queue`, `kiosk notices`, `kiosk status`, notices and reminders, the screen;
and the day's report (``day_report``) reading that day only, however much
history came after it."""
from __future__ import annotations

import re
import time
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from conftest import run_json, run_kiosk, write_config, open_touchscreen
from test_report import Clock
from kiosk import local_time, report
from kiosk.payment import SUCCEEDED, Card, Payment, iso, new_payment_id

TOKYO = ZoneInfo("Asia/Tokyo")
NEW_YORK = ZoneInfo("America/New_York")
MORNING = datetime(2026, 6, 15, 9, 0, tzinfo=TOKYO)
# 2026-11-01 in New York: 01:59:59 EDT is followed by 01:00:00 EST (a 25-hour day)
FIRST_ONE_THIRTY = datetime(2026, 11, 1, 5, 30, tzinfo=timezone.utc)     # 01:30 EDT
SECOND_ONE_THIRTY = datetime(2026, 11, 1, 6, 30, tzinfo=timezone.utc)    # 01:30 EST, an hour later


@pytest.fixture
def clock(fake_stripe):
    moved = Clock(MORNING)
    fake_stripe.clock = moved.unix
    return moved


def config_in(tmp_path, fake_stripe, zone: str, **kiosk):
    return write_config(tmp_path, api_base=fake_stripe.url,
                        kiosk={"id": "stall-3", "currency": "usd", "timezone": zone, **kiosk})


def text(*args) -> str:
    result = run_kiosk(*args)
    assert result.returncode == 0, result.stderr
    return result.stdout


# -- the helpers -----------------------------------------------------------------------

def test_shown_and_short_times_are_in_the_zone_with_its_name_across_daylight_saving():
    assert local_time.shown_time("2026-06-15T00:01:00.000Z", TOKYO) == "2026-06-15 09:01 JST"
    assert local_time.shown_time(iso(FIRST_ONE_THIRTY), NEW_YORK) == "2026-11-01 01:30 EDT"
    assert local_time.shown_time(iso(SECOND_ONE_THIRTY), NEW_YORK) == "2026-11-01 01:30 EST"
    assert local_time.shown_time(SECOND_ONE_THIRTY, NEW_YORK) == "2026-11-01 01:30 EST"     # a datetime too
    assert local_time.shown_time(None, TOKYO) == ""
    now = datetime(2026, 6, 15, 14, 59, tzinfo=timezone.utc)          # 23:59 on the 15th in Tokyo
    assert local_time.short_time("2026-06-15T00:01:00.000Z", TOKYO, now) == "09:01"
    assert local_time.short_time("2026-06-14T14:59:00.000Z", TOKYO, now) == "06/14 23:59"
    assert local_time.short_time("2026-06-15T00:01:00.000Z", timezone.utc, now) == "00:01"   # UTC's day
    assert local_time.short_time(None, TOKYO, now) == ""


def test_the_screen_shows_payment_and_clock_times_in_the_kiosks_zone():
    from kiosk_builtins.touchscreen import catalog, screens
    now = datetime(2026, 11, 1, 6, 45, tzinfo=timezone.utc)            # 01:45 EST in New York
    ctx = screens.Context(catalog.Catalog("en"), "usd", [12, 20], False, True, now=now, zone=NEW_YORK)
    assert ctx.when(iso(FIRST_ONE_THIRTY)) == "01:30" and ctx.when(iso(SECOND_ONE_THIRTY)) == "01:30"
    assert ctx.when("2026-11-01T03:59:00.000Z") == "10/31 23:59"       # the day before, in New York
    assert ctx.when(None) == "never"
    in_tokyo = screens.Context(catalog.Catalog("en"), "usd", [12, 20], False, True, now=now, zone=TOKYO)
    assert in_tokyo.when(iso(FIRST_ONE_THIRTY)) == "14:30"             # the same moment, another zone


# -- what the vendor reads: queue, status, notices ---------------------------------------

def test_queue_status_and_notices_read_in_tokyo_time(tmp_path, fake_stripe, clock, open_kiosk):
    config = config_in(tmp_path, fake_stripe, "Asia/Tokyo")
    kiosk = open_kiosk(config, clock=clock.now)
    clock.at += timedelta(minutes=1)
    sold = kiosk.take_sale(1000, behavior="force_offline", card="declined").payment       # 09:01 JST
    clock.at += timedelta(minutes=2)
    kept = kiosk.take_sale(500, behavior="force_offline").payment                          # 09:03 JST
    clock.at += timedelta(hours=1)
    kiosk.forward(force=True)                                    # both sent: the 09:01 one is declined
    clock.at += timedelta(minutes=1)
    later = kiosk.take_sale(700, behavior="force_offline").payment                         # 10:04 JST
    kiosk.note_synced(force=True)                                                          # 10:04 JST
    kiosk.close()

    queue = text("queue", "--config", config)
    assert "2026-06-15 10:04 JST  pending" in queue and later.id in queue
    assert re.search(rf"^2026-06-15 09:01 JST  failed .*{sold.id}", queue, re.M), queue
    assert re.search(rf"^2026-06-15 09:03 JST  succeeded .*{kept.id}", queue, re.M), queue
    assert "Z " not in queue and "T0" not in queue                     # no UTC time left
    as_json = {p["id"]: p for p in run_json("queue", "--config", config)}
    assert as_json[sold.id]["created_at"] == "2026-06-15T00:01:00.000Z"             # stored: ISO UTC
    assert as_json[sold.id]["local_time"] == "2026-06-15T09:01:00+09:00"
    since = run_json("queue", "--since", "2026-06-15T09:02", "--config", config)     # 09:02 in Tokyo
    assert {p["id"] for p in since} == {kept.id, later.id}

    status = text("status", "--config", config)
    # the oldest pending must reach Stripe 24 h after it was taken: by 10:04 JST the next day
    assert "oldest pending: taken 2026-06-15 10:04 JST" in status
    assert "send it by 2026-06-16 10:04 JST" in status
    assert "last sync: 2026-06-15 10:04 JST" in status
    assert re.search(r"^clock: .*\(counting from \d{4}-\d\d-\d\d \d\d:\d\d JST\)$", status, re.M), status

    feed = run_json("notices", "--config", config)
    declined = next(n for n in feed if n["kind"] == "declined")
    assert "taken 2026-06-15 09:01 JST" in declined["message"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT.*Z", declined["at"])          # the feed keeps UTC
    sent = next(n for n in feed if n["kind"] == "forwarded")
    assert "taken 2026-06-15 09:03 JST" in sent["message"]
    lines = text("notices", "--config", config).splitlines()
    shown = local_time.shown_time(declined["at"], TOKYO)
    assert any(line.startswith(f"{shown}  error") and "Payment declined" in line for line in lines), lines


def test_a_daylight_saving_day_in_new_york(tmp_path, fake_stripe, clock, open_kiosk):
    config = config_in(tmp_path, fake_stripe, "America/New_York")
    clock.at = datetime(2026, 11, 1, 3, 30, tzinfo=timezone.utc)        # 23:30 EDT on Oct 31
    kiosk = open_kiosk(config, clock=clock.now)
    eve = kiosk.take_sale(100, behavior="force_offline").payment
    clock.at = FIRST_ONE_THIRTY
    first = kiosk.take_sale(200, behavior="force_offline").payment
    clock.at = SECOND_ONE_THIRTY
    second = kiosk.take_sale(400, behavior="force_offline").payment
    clock.at = datetime(2026, 11, 2, 4, 59, tzinfo=timezone.utc)         # 23:59 EST on Nov 1
    last = kiosk.take_sale(800, behavior="force_offline").payment
    day = kiosk.day_report(date(2026, 11, 1))
    assert kiosk.day_report() == day                                     # today, by the kiosk's clock
    kiosk.close()

    queue = text("queue", "--config", config)
    assert re.search(rf"^2026-11-01 01:30 EDT .*{first.id}", queue, re.M), queue
    assert re.search(rf"^2026-11-01 01:30 EST .*{second.id}", queue, re.M), queue
    assert re.search(rf"^2026-10-31 23:30 EDT .*{eve.id}", queue, re.M), queue
    since = run_json("queue", "--since", "2026-11-01", "--config", config)       # New York's midnight
    assert {p["id"] for p in since} == {first.id, second.id, last.id}
    assert {p["id"]: p["local_time"] for p in since}[second.id] == "2026-11-01T01:30:00-05:00"

    status = text("status", "--config", config)
    # 24 real hours after 23:30 EDT is 22:30 EST: the wall clock went back an hour between
    assert "oldest pending: taken 2026-10-31 23:30 EDT" in status and "send it by 2026-11-01 22:30 EST" in status

    # the 25-hour day holds both 01:30s and 23:59, not the evening before
    assert (day["date"], day["timezone"]) == ("2026-11-01", "America/New_York")
    assert (day["from"], day["to"]) == ("2026-11-01T04:00:00.000Z", "2026-11-02T05:00:00.000Z")
    assert day["currencies"]["usd"]["sales"] == {"count": 3, "amount": 200 + 400 + 800}
    assert run_json("report", "--date", "2026-10-31", "--config", config)["currencies"]["usd"]["sales"] == {
        "count": 1, "amount": 100}


# -- reminders -----------------------------------------------------------------------------

def test_a_reminder_names_the_time_to_send_by_in_the_kiosks_zone(tmp_path, fake_stripe, clock, open_kiosk):
    config = config_in(tmp_path, fake_stripe, "Asia/Tokyo", offline_behavior="force_offline")
    kiosk = open_kiosk(config, clock=clock.now)
    clock.at += timedelta(minutes=30)                                    # 09:30 JST
    kiosk.take_sale(1000)
    clock.at += timedelta(hours=12, minutes=5)
    [first] = kiosk.remind()
    assert "12 h old" in first.message and "send it by 2026-06-16 09:30 JST" in first.message
    clock.at += timedelta(hours=8)
    [second] = kiosk.remind()
    assert "send it by 2026-06-16 09:30 JST" in second.message
    kiosk.close()
    feed = [n for n in run_json("notices", "--config", config) if n["kind"] == "reminder"]
    assert [n["message"] for n in feed] == [first.message, second.message]    # as sent, durably


def test_a_reminder_across_the_change_counts_real_hours(tmp_path, fake_stripe, clock, open_kiosk):
    config = config_in(tmp_path, fake_stripe, "America/New_York", offline_behavior="force_offline")
    clock.at = datetime(2026, 10, 31, 16, 0, tzinfo=timezone.utc)        # 12:00 EDT on Oct 31
    kiosk = open_kiosk(config, clock=clock.now)
    kiosk.take_sale(1000)
    clock.at += timedelta(hours=20)                                       # 07:00 EST on Nov 1
    [reminder] = kiosk.remind()
    assert "20 h old" in reminder.message and "4 h left" in reminder.message
    assert "send it by 2026-11-01 11:00 EST" in reminder.message          # not 12:00: the clocks went back


# -- the day's report: that day only --------------------------------------------------------

class CountingStore:
    """The kiosk's own store, counting the settled payments it hands out."""

    def __init__(self, store, takes_until: bool = True):
        self.store, self.yielded, self.takes_until = store, 0, takes_until

    def __getattr__(self, name):
        return getattr(self.store, name)

    def settled(self, limit=None, since=None, until=None):
        if not self.takes_until and until is not None:
            raise AssertionError("a store without `until` was passed one")
        for payment in self.store.settled(limit, since=since, until=until):
            self.yielded += 1
            yield payment


class SinceOnlyStore(CountingStore):
    """A third-party store from before `until`: it takes `since` alone."""

    def settled(self, limit=None, since=None):
        return super().settled(limit, since=since)


def settled(at: datetime, amount: int) -> Payment:
    return Payment(id=new_payment_id(), amount=amount, currency="usd", offline=False, created_at=iso(at),
                   card=Card("visa", "4242", 12, 2030), token="pm_card_visa", reader="simulated",
                   state=SUCCEEDED, payment_intent="pi_" + new_payment_id()[3:], settled_at=iso(at))


def test_a_day_a_year_back_reads_only_that_day(tmp_path, fake_stripe, clock, open_kiosk):
    config = config_in(tmp_path, fake_stripe, "Asia/Tokyo")
    kiosk = open_kiosk(config, clock=clock.now)
    year_back = date(2025, 6, 15)
    that_day = [settled(datetime(2025, 6, 15, 8 + n, tzinfo=TOKYO), 100 * (n + 1)) for n in range(3)]
    edges = [settled(datetime(2025, 6, 14, 23, 59, 59, tzinfo=TOKYO), 7),      # the day before, and after
             settled(datetime(2025, 6, 16, 0, 0, tzinfo=TOKYO), 9)]
    later = [settled(datetime(2025, 6, 16, tzinfo=TOKYO) + timedelta(minutes=90 * n), 50) for n in range(5000)]
    assert kiosk.store.add_settled(that_day + edges + later) == 5005
    real = kiosk.store
    counting = kiosk.store = CountingStore(real)
    try:
        day = kiosk.day_report(year_back)
        assert counting.yielded == 3                       # of 5005: not the year that came after it
        assert day["currencies"]["usd"]["charged"] == {"count": 3, "amount": 600}
        since_only = kiosk.store = SinceOnlyStore(real, takes_until=False)
        assert kiosk.day_report(year_back) == day           # a store without `until`: the same, read longer
        assert since_only.yielded > 5000
        csv_rows = list(report.payments_of(counting, year_back, TOKYO))
        assert sorted(p.id for p in csv_rows) == sorted(p.id for p in that_day)
    finally:
        kiosk.store = real
    kiosk.close()
    assert run_json("report", "--date", "2025-06-15", "--config", config)["currencies"] == day["currencies"]


def test_day_report_is_what_kiosk_report_json_says(tmp_path, fake_stripe, clock, open_kiosk):
    config = config_in(tmp_path, fake_stripe, "Asia/Tokyo")
    kiosk = open_kiosk(config, clock=clock.now)
    for amount, how in ((1000, {}), (1250, {"behavior": "force_offline"}), (300, {"card": "insufficient_funds"}),
                        (450, {"behavior": "force_offline", "card": "declined"}), (500, {"behavior": "force_offline"})):
        clock.at += timedelta(minutes=3)
        kiosk.take_sale(amount, confirm=lambda offer: True, **how)
        if amount == 450:
            kiosk.forward(force=True)
    today = kiosk.day_report()
    assert kiosk.view.day_report() == today == kiosk.view.day_report(date(2026, 6, 15))
    assert kiosk.view.zone == TOKYO
    kiosk.close()
    printed = run_json("report", "--date", "2026-06-15", "--config", config)
    assert {key: printed[key] for key in today} == today
    assert list(today) == ["date", "timezone", "from", "to", "currencies"]
    usd = today["currencies"]["usd"]
    assert (usd["sales"]["count"], usd["charged"]["amount"], usd["pending"]["amount"]) == (4, 2250, 500)


def test_the_running_screen_shows_the_kiosks_zone_not_the_systems(tmp_path, fake_stripe, clock, open_kiosk,
                                                                  monkeypatch):
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    monkeypatch.setenv("SDL_AUDIODRIVER", "dummy")
    assert datetime(2026, 6, 15, tzinfo=timezone.utc).astimezone().utcoffset() != timedelta(hours=9), \
        "this test needs a system zone other than Tokyo's"
    config = write_config(tmp_path, api_base=fake_stripe.url, display={"use": "touchscreen"},
                          kiosk={"currency": "usd", "timezone": "Asia/Tokyo"})
    kiosk = open_kiosk(config, clock=clock.now)
    clock.at += timedelta(minutes=1)
    kiosk.take_sale(1000, behavior="force_offline")                       # 09:01 JST, 00:01 UTC
    clock.at += timedelta(minutes=7)
    display = open_touchscreen(kiosk)
    try:
        assert display.catch_up()
        import pygame
        x, y = display.widget("nav_payments").box.center
        for kind in (pygame.MOUSEBUTTONDOWN, pygame.MOUSEBUTTONUP):        # a real tap on "Payments"
            pygame.event.post(pygame.event.Event(kind, pos=(x, y), button=1))
        display.step()
        deadline = time.monotonic() + 15          # the rows are read on the screen's chores thread
        while "09:01" not in display.texts() and time.monotonic() < deadline:
            display.step(0.02)
        shown = display.texts()
        assert display.ui.screen == "payments"
        assert "09:08" in shown                                          # the status bar's clock
        assert "09:01" in shown, shown                                   # the payment's row
        assert not any(text in ("00:01", "00:08") for text in shown), shown
    finally:
        display.close()
