"""``kiosk report``: the vendor's day against what FakeStripe holds, days in
the kiosk's time zone, the CSV for the books, and reading only the day."""
from __future__ import annotations

import csv
import io
import json
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from conftest import run_kiosk, write_config
from kiosk.payment import FAILED, Card, Payment, iso, new_payment_id
from kiosk.report import CSV_COLUMNS, LINES

TOKYO = ZoneInfo("Asia/Tokyo")
DAY = date(2026, 6, 15)
MORNING = datetime(2026, 6, 15, 9, 0, tzinfo=TOKYO)      # 00:00 UTC: a UTC report would agree here...
LAST_MINUTE = datetime(2026, 6, 15, 23, 59, 59, tzinfo=TOKYO)   # ...but this is still 14:59:59 UTC on the 15th


class Clock:
    """The kiosk's system clock and FakeStripe's, moved by the test."""

    def __init__(self, at: datetime):
        self.at = at

    def now(self) -> datetime:
        return self.at.astimezone(timezone.utc)

    def unix(self) -> float:
        return self.at.timestamp()


@pytest.fixture
def clock(fake_stripe):
    moved = Clock(MORNING)
    fake_stripe.clock = moved.unix        # Stripe's `created` and Date header on the same time as the kiosk
    return moved


def tokyo_config(tmp_path, fake_stripe, **kiosk):
    return write_config(tmp_path, api_base=fake_stripe.url,
                        kiosk={"id": "stall-7", "currency": "usd", "timezone": "Asia/Tokyo", **kiosk},
                        limits={"currencies": {"jpy": {"per_transaction": 10000, "total": 50000}}})


def sell(kiosk, clock, amount, minutes=1, **kwargs):
    clock.at += timedelta(minutes=minutes)
    return kiosk.take_sale(amount, confirm=lambda offer: True, **kwargs)


def report_json(config, *args, env=None):
    result = run_kiosk("report", "--config", config, "--json", *args, env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def report_csv(config, *args):
    result = run_kiosk("report", "--config", config, "--csv", *args)
    assert result.returncode == 0, result.stderr
    return list(csv.DictReader(io.StringIO(result.stdout))), result.stdout


def stripe_day(fake_stripe, kiosk_id, day, zone):
    """What FakeStripe holds for the day, per currency: the kiosk's sales by
    the time they were taken (an offline one's ``offline_stored_at``)."""
    start = datetime.combine(day, datetime.min.time(), tzinfo=zone)
    end = start + timedelta(days=1)
    held = {}
    for pi in fake_stripe.payment_intents:
        meta = pi["metadata"]
        if meta.get("kiosk_id") != kiosk_id:
            continue
        taken = (datetime.fromisoformat(meta["offline_stored_at"].replace("Z", "+00:00"))
                 if "offline_stored_at" in meta else datetime.fromtimestamp(pi["created"], timezone.utc))
        if not start <= taken < end:
            continue
        day_of = held.setdefault(pi["currency"], {"succeeded": [0, 0], "declined": 0})
        if pi["status"] == "succeeded":
            day_of["succeeded"][0] += 1
            day_of["succeeded"][1] += pi["amount_received"]
        elif pi["status"] == "requires_payment_method":
            day_of["declined"] += 1
    return held


def test_a_market_day_adds_up_to_what_stripe_holds(tmp_path, fake_stripe, clock, open_kiosk):
    config = tokyo_config(tmp_path, fake_stripe)
    kiosk = open_kiosk(config, clock=clock.now)
    assert sell(kiosk, clock, 1000).status == "approved"                            # online
    assert sell(kiosk, clock, 1200, currency="jpy").status == "approved"            # online, in yen
    assert sell(kiosk, clock, 700, card="insufficient_funds").status == "declined"  # at the till: no sale
    assert sell(kiosk, clock, 1250, behavior="force_offline").ok                      # forwarded below
    declined = sell(kiosk, clock, 300, behavior="force_offline", card="declined", customer="a@example.com")
    followed = sell(kiosk, clock, 450, behavior="force_offline", card="lost_card")
    clock.at += timedelta(hours=2)
    report = kiosk.forward()
    assert (report.succeeded, report.failed) == (1, 2)
    kiosk.mark_followed_up(followed.payment.id)
    assert sell(kiosk, clock, 500, behavior="force_offline").ok                       # still pending
    kiosk.close()

    day = report_json(config, "--date", DAY.isoformat())
    assert (day["date"], day["timezone"], day["kiosk_id"]) == ("2026-06-15", "Asia/Tokyo", "stall-7")
    assert (day["from"], day["to"]) == ("2026-06-14T15:00:00.000Z", "2026-06-15T15:00:00.000Z")
    usd, jpy = day["currencies"]["usd"], day["currencies"]["jpy"]
    counted = {name: (usd[name]["count"], usd[name]["amount"]) for name in LINES}
    assert counted == {"sales": (5, 1000 + 1250 + 300 + 450 + 500), "online": (1, 1000),
                       "offline": (4, 1250 + 300 + 450 + 500), "charged": (2, 2250), "forwarded": (1, 1250),
                       "pending": (1, 500), "declined": (3, 700 + 300 + 450), "moved": (0, 0),
                       "voided": (0, 0), "refunded": (0, 0), "tips": (0, 0)}
    assert {kind: usd["declined"][kind]["count"] for kind in ("at_till", "to_follow_up", "followed_up")} == {
        "at_till": 1, "to_follow_up": 1, "followed_up": 1}
    assert usd["declined"]["to_follow_up"]["amount"] == 300 and usd["declined"]["followed_up"]["amount"] == 450
    assert (jpy["sales"]["count"], jpy["charged"]["amount"], jpy["net"]) == (1, 1200, 1200)
    assert "tips" not in day["not_yet_taken"]      # taken since issue 15 (tests/test_sale_extras.py)

    stripe = stripe_day(fake_stripe, "stall-7", DAY, TOKYO)
    for code, held in stripe.items():
        mine = day["currencies"][code]
        assert [mine["charged"]["count"], mine["net"]] == held["succeeded"]
        assert mine["declined"]["count"] == held["declined"]      # every decline reached Stripe once
    assert stripe["usd"]["succeeded"] == [2, 2250] and set(stripe) == {"usd", "jpy"}

    text = run_kiosk("report", "--config", config, "--date", "2026-06-15")
    assert text.returncode == 0, text.stderr
    assert "2026-06-15 (Asia/Tokyo), kiosk stall-7" in text.stdout
    assert "$22.50" in text.stdout and "¥1,200" in text.stdout          # USD net, JPY net
    assert "1 to follow up, 1 followed up, 1 at the till" in text.stdout


def test_a_sale_a_second_before_midnight_is_on_that_day_in_the_kiosks_zone(tmp_path, fake_stripe, clock,
                                                                           open_kiosk):
    config = tokyo_config(tmp_path, fake_stripe)
    kiosk = open_kiosk(config, clock=clock.now)
    clock.at = LAST_MINUTE
    late = kiosk.take_sale(800, behavior="force_offline").payment
    clock.at = LAST_MINUTE + timedelta(seconds=2)                       # 00:00:01 on the 16th in Tokyo
    early = kiosk.take_sale(900, behavior="force_offline").payment
    assert late.created_at[:10] == early.created_at[:10] == "2026-06-15"   # one UTC day
    kiosk.close()

    assert report_json(config, "--date", "2026-06-15")["currencies"]["usd"]["sales"] == {"count": 1, "amount": 800}
    assert report_json(config, "--date", "2026-06-16")["currencies"]["usd"]["sales"] == {"count": 1, "amount": 900}
    assert report_json(config, "--date", "2026-06-14")["currencies"] == {}
    rows, _ = report_csv(config, "--date", "2026-06-15")
    assert [(r["local_time"], r["payment_id"]) for r in rows] == [("2026-06-15T23:59:59+09:00", late.id)]


def test_the_system_zone_is_the_default_and_today_is_the_default_day(tmp_path, fake_stripe, clock, open_kiosk):
    config = write_config(tmp_path, api_base=fake_stripe.url, kiosk={"id": "stall-7"})
    kiosk = open_kiosk(config, clock=clock.now)
    clock.at = LAST_MINUTE
    kiosk.take_sale(800, behavior="force_offline")
    kiosk.close()
    in_tokyo = report_json(config, "--date", "2026-06-15", env={"TZ": "Asia/Tokyo"})
    in_utc = report_json(config, "--date", "2026-06-15", env={"TZ": "UTC"})
    in_new_york = report_json(config, "--date", "2026-06-15", env={"TZ": "America/New_York"})
    assert (in_tokyo["timezone"], in_utc["timezone"], in_new_york["timezone"]) == ("Asia/Tokyo", "UTC",
                                                                                   "America/New_York")
    assert in_tokyo["currencies"]["usd"]["sales"]["count"] == 1
    assert in_utc["currencies"]["usd"]["sales"]["count"] == 1        # 14:59:59 UTC
    assert in_new_york["currencies"]["usd"]["sales"]["count"] == 1   # 10:59:59 in New York
    assert report_json(config, "--date", "2026-06-16", env={"TZ": "Asia/Tokyo"})["currencies"] == {}

    # no --date: today on the kiosk's clock (the real one here: the sale above is long past)
    before = datetime.now(TOKYO).date().isoformat()
    today = report_json(config, env={"TZ": "Asia/Tokyo"})
    assert today["date"] in {before, datetime.now(TOKYO).date().isoformat()}
    assert today["currencies"] == {}


def test_the_csv_has_one_row_per_payment_for_the_books_and_no_card_number(tmp_path, fake_stripe, clock,
                                                                          open_kiosk):
    config = tokyo_config(tmp_path, fake_stripe)
    kiosk = open_kiosk(config, clock=clock.now)
    online = sell(kiosk, clock, 1234, customer="+81 90 1234 5678").payment
    offline = sell(kiosk, clock, 1200, currency="jpy", behavior="force_offline", customer="b@example.com")
    assert offline.status == "approved_offline", offline.message
    offline = offline.payment
    # a contact an earlier release let through: a card number, and a spreadsheet formula
    clock.at += timedelta(minutes=1)
    for customer in ("4242 4242 4242 4242", '=HYPERLINK("http://x","y")'):
        kiosk.store.add(Payment(id=new_payment_id(), amount=100, currency="usd", created_at=iso(clock.now()),
                                offline=True, card=Card("visa", "4242", 12, 2030), token="pm_card_visa",
                                reader="simulated", state="pending", customer=customer))
        clock.at += timedelta(seconds=1)
    kiosk.close()

    rows, raw = report_csv(config, "--date", "2026-06-15", "--with-contacts")
    assert list(rows[0]) == [*CSV_COLUMNS, "customer"]
    assert len(rows) == 4
    first = rows[-1]                                                    # newest first: the online sale is last
    assert first == {"local_time": "2026-06-15T09:01:00+09:00", "amount": "12.34", "currency": "usd",
                     "state": "succeeded", "offline": "no", "items": "", "tip": "0.00", "brand": "visa",
                     "last4": "4242", "payment_intent": online.payment_intent, "kiosk_id": "stall-7",
                     "payment_id": online.id, "customer": "+81 90 1234 5678"}
    assert first["payment_intent"].startswith("pi_")
    yen = next(r for r in rows if r["payment_id"] == offline.id)
    assert (yen["amount"], yen["currency"], yen["state"], yen["offline"], yen["tip"]) == ("1200", "jpy",
                                                                                           "pending", "yes", "0")
    assert "4242 4242 4242 4242" not in raw and "4242424242424242" not in raw
    assert {r["customer"] for r in rows[:2]} == {"(withheld: looks like a card number)",
                                                 '\'=HYPERLINK("http://x","y")'}
    plain, raw = report_csv(config, "--date", "2026-06-15")              # contacts only when asked
    assert "customer" not in plain[0] and "example.com" not in raw and "+81" not in raw


def test_json_keys_are_the_same_every_day(tmp_path, fake_stripe, clock, open_kiosk):
    config = tokyo_config(tmp_path, fake_stripe)
    kiosk = open_kiosk(config, clock=clock.now)
    sell(kiosk, clock, 1000)
    kiosk.close()
    busy, empty = report_json(config, "--date", "2026-06-15"), report_json(config, "--date", "2026-06-01")
    assert list(busy) == list(empty) == ["date", "timezone", "from", "to", "kiosk_id", "not_yet_taken",
                                         "currencies"]
    assert list(busy["currencies"]["usd"]) == [*LINES, "net"]
    assert list(busy["currencies"]["usd"]["declined"]) == ["count", "amount", "at_till", "to_follow_up",
                                                           "followed_up"]
    assert empty["currencies"] == {}
    text = run_kiosk("report", "--config", config, "--date", "2026-06-01")
    assert text.stdout.splitlines()[-1] == "no payments"


@pytest.mark.parametrize("args, says", [
    (["--date", "2026-13-01"], "--date '2026-13-01' is not a date like 2026-12-05"),
    (["--date", "yesterday"], "--date 'yesterday' is not a date like 2026-12-05"),
    (["--with-contacts"], "--with-contacts goes with --csv"),
    (["--json", "--csv"], "not allowed with argument"),
])
def test_bad_options_are_one_line_and_exit_2(tmp_path, fake_stripe, clock, open_kiosk, args, says):
    config = tokyo_config(tmp_path, fake_stripe)
    kiosk = open_kiosk(config, clock=clock.now)
    sell(kiosk, clock, 1000, behavior="force_offline")
    kiosk.close()
    result = run_kiosk("report", "--config", config, *args)
    assert result.returncode == 2 and result.stdout == ""
    assert len(result.stderr.splitlines()) == 1 and says in result.stderr
    assert report_json(config, "--date", "2026-06-15")["currencies"]["usd"]["pending"]["count"] == 1


@pytest.mark.parametrize("name", ["Mars/Olympus_Mons", "../../etc/passwd", "/etc/localtime", "Asia/"])
def test_a_bad_timezone_is_one_line_naming_the_setting(tmp_path, fake_stripe, name):
    config = tokyo_config(tmp_path, fake_stripe, timezone=name)
    result = run_kiosk("report", "--config", config)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "config [kiosk] timezone:" in result.stderr
    assert "not a time zone name" in result.stderr


def test_only_the_days_payments_are_read_whatever_history_holds(tmp_path, fake_stripe, clock, open_kiosk,
                                                                monkeypatch):
    from kiosk_builtins.tinydb_store.history import History
    config = tokyo_config(tmp_path, fake_stripe)
    kiosk = open_kiosk(config, clock=clock.now)
    old = [Payment(id=new_payment_id(), amount=100, currency="usd", offline=False,
                   created_at=iso(MORNING - timedelta(days=1 + i / 1000)), card=Card("visa", "4242"),
                   token="pm_card_visa", reader="simulated", state=FAILED, settled_at=iso(MORNING))
           for i in range(3000)]
    assert kiosk.store.add_settled(old) == 3000
    recent = [sell(kiosk, clock, 1000).payment.id for _ in range(3)]
    clock.at += timedelta(days=1)
    recent.append(sell(kiosk, clock, 2000).payment.id)              # the next day: read, not counted
    kiosk.close()

    opened = []
    real_open = History._open

    def counting_open(self, row):                                    # counts, and still decrypts every row
        opened.append(row[0])
        return real_open(self, row)
    monkeypatch.setattr(History, "_open", counting_open)
    day = report_json(config, "--date", "2026-06-15")
    assert day["currencies"]["usd"]["charged"] == {"count": 3, "amount": 3000}
    assert day["currencies"]["usd"]["declined"]["count"] == 0
    assert set(opened) == set(recent)         # the day's 3 and the next day's 1 (opening reads the newest), of 3004
