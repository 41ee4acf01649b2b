"""Helpers shared by the scripts in bench/ (not a benchmark itself)."""
from __future__ import annotations

import math
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"          # git-ignored; on the same disk as the project
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"

# Never a real key: every request of these scripts goes to a FakeStripe on 127.0.0.1.
TEST_KEY = "sk_test_" + "b3nch" * 5
LIVE_KEY = "sk_live_" + "b3nch" * 5


def use_project_python() -> None:
    """`python bench/x` with a python that lacks the project: re-run under the venv's."""
    try:
        import kiosk  # noqa: F401
    except ImportError:
        if VENV_PYTHON.exists() and Path(sys.prefix).resolve() != VENV_PYTHON.parent.parent.resolve():
            os.execv(str(VENV_PYTHON), [str(VENV_PYTHON), *sys.argv])
        raise
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))


def write_config(directory: Path, api_base: str = "http://127.0.0.1:9", filename: str = "config.toml",
                 **sections) -> Path:
    """A config.toml (or ``filename``) in ``directory``, as tests/conftest.py's
    write_config (``sections`` override tables; ``a__b`` names table [a.b]).
    ``[storage] path`` is ``data``: the data directory is ``directory/data``."""
    config = {
        "kiosk": {"id": "bench-kiosk", "currency": "usd", "offline_behavior": "force_offline"},
        "storage": {"path": "data"},
        "stripe": {"api_base": api_base, "max_network_retries": 2, "reachability_timeout": 1.0,
                   "request_timeout": 10.0, "lookup_margin_minutes": 1.0},
        "sync": {"retry_base_seconds": 0.0},
        "reader": {"use": "simulated"},
        "limits": {"per_transaction": 100.0, "total": 10_000_000.0, "max_pending": 2000},
    }
    import tomli_w   # the [test] extra, which the benches need anyway (psutil)
    for name, values in sections.items():
        target = config
        for part in name.split("__"):
            target = target.setdefault(part, {})
        target.update(values)
    path = Path(directory) / filename
    path.write_text(tomli_w.dumps(config))
    return path


def percentile(sorted_values: list, q: float):
    """Nearest-rank percentile of an already sorted list (q in 0..100)."""
    if not sorted_values:
        return float("nan")
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def filesystem_of(path: Path) -> tuple[str, str, str]:
    """(device, mount point, filesystem type) holding ``path``, from /proc/mounts."""
    real = os.path.realpath(path)
    best = ("?", "/", "?")
    try:
        with open("/proc/mounts") as mounts:
            for line in mounts:
                parts = line.split()
                if len(parts) < 3:
                    continue
                device, mount, fstype = parts[0], parts[1].replace("\\040", " "), parts[2]
                inside = real == mount or real.startswith(mount.rstrip("/") + "/")
                if inside and len(mount) >= len(best[1]):
                    best = (device, mount, fstype)
    except OSError:
        pass
    return best


# -- settled history, as forwarding leaves it ------------------------------------------------

SEED_BATCH = 10_000          # settled payments per store.add_settled() transaction
FAILED_EVERY = 100           # 1 in 100 settled payments is an offline sale the issuer declined
FOLLOW_UP_LEFT = 5           # the newest this many declines are still to follow up; older ones were

# (token, brand, last 4) as the simulated reader hands them over
_CARDS = (("pm_card_visa", "visa", "4242"), ("pm_card_mastercard", "mastercard", "4444"),
          ("pm_card_visa", "visa", "4242"), ("pm_card_amex", "amex", "8431"))
_DECLINES = (("pm_card_chargeDeclinedInsufficientFunds", "9995", "insufficient_funds",
              "Your card has insufficient funds."),
             ("pm_card_chargeDeclinedExpiredCard", "0069", "expired_card", "Your card has expired."),
             ("pm_card_chargeDeclined", "0002", "generic_decline", "Your card was declined."),
             ("pm_card_chargeDeclinedLostCard", "9987", "lost_card", "Your card was declined."))


def settled_payments(kiosk, count: int, spacing: float = 30.0):
    """``count`` settled payments, oldest first, as forwarding leaves them:
    the sync plugin's request, a ``pi_...``, attempt times and
    ``settled_at``.  A third were taken offline and sent a minute to an hour
    later; 1 in ``FAILED_EVERY`` is an offline sale the issuer declined
    (``decline_code``), and the newest ``FOLLOW_UP_LEFT`` of those are still
    to follow up.  One sale every ``spacing`` seconds, the newest a minute ago.

    Built field by field (the request by ``kiosk.sync.prepare``), not through
    the sale path: a million take 10-15 s.  Storing them costs about four
    times that: ``add_settled`` encodes, compresses and seals each one."""
    from datetime import datetime, timedelta, timezone
    from kiosk.payment import FAILED, SUCCEEDED, Card, Payment, new_payment_id

    reader = kiosk.reader.info().name
    cards = [(token, Card(brand, last4, 12, 2034)) for token, brand, last4 in _CARDS]
    declined = [(token, Card("visa", last4, 12, 2034), code, message) for token, last4, code, message in _DECLINES]
    now = datetime.now(timezone.utc).replace(tzinfo=None, microsecond=0)    # naive UTC: stamped "Z" below
    start = now - timedelta(seconds=60 + spacing * count)
    start_unix = (start - datetime(1970, 1, 1)).total_seconds()
    follow_up_from = count - FAILED_EVERY * FOLLOW_UP_LEFT

    def stamp(seconds: float) -> str:          # kiosk.payment.iso(), for a naive UTC time
        return (start + timedelta(seconds=seconds)).isoformat(timespec="milliseconds") + "Z"

    for i in range(count):
        at = spacing * i
        failed = i % FAILED_EVERY == FAILED_EVERY // 3
        offline = failed or i % 3 == 0
        delay = 60.0 + (i * 7919) % 3600 if offline else 0.4     # sent later, or charged at the till
        if failed:
            token, card, code, message = declined[(i // FAILED_EVERY) % len(declined)]
        else:
            token, card = cards[i % len(cards)]
        p = Payment(id=new_payment_id(), amount=100 + (i * 37) % 9000, currency="usd", created_at=stamp(at),
                    offline=offline, card=card, token=token, reader=reader)
        request = kiosk.sync.prepare(p)
        p.idempotency_key, p.request = request.idempotency_key, request.params
        p.attempts = 1
        p.first_attempt_at = p.last_attempt_at = stamp(at + delay)
        p.first_attempt_stripe_at = round(start_unix + at + delay, 3)
        p.payment_intent = "pi_3" + new_payment_id()[3:26]
        p.settled_at = stamp(at + delay + 0.3)
        if failed:
            p.state, p.decline_code, p.message, p.last_outcome = FAILED, code, message, "declined"
            p.followed_up = i < follow_up_from
        else:
            p.state, p.last_outcome = SUCCEEDED, "succeeded"
        yield p


def seed_history(kiosk, count: int, batch: int = SEED_BATCH) -> dict:
    """Store ``count`` settled payments (:func:`settled_payments`) through the
    storage plugin: ``store.add_settled`` in transactions of ``batch``, then the
    notice feed selling and forwarding leave behind (for the newest payments,
    as many as the store keeps) with ``store.add_notice``, and the counters forwarding keeps.
    Returns what it stored."""
    import collections
    import itertools
    from kiosk import notices
    from kiosk.payment import SUCCEEDED, iso, utcnow
    from kiosk_builtins.tinydb_store.history import NOTICES_KEPT

    store = kiosk.store
    newest = collections.deque(maxlen=NOTICES_KEPT)
    before = store.settled_count()
    reported = forwarded = declined = follow_up = 0
    payments = settled_payments(kiosk, count)
    while True:
        chunk = list(itertools.islice(payments, batch))
        if not chunk:
            break
        reported += store.add_settled(chunk)
        for p in chunk:
            if p.offline:
                if p.state == SUCCEEDED:
                    forwarded += 1
                else:
                    declined += 1
                    follow_up += p.needs_follow_up
        newest.extend(chunk[-NOTICES_KEPT:])
    for p in newest:        # at the till: "approved"; sent later: "payment sent" or "declined"
        notice = (notices.declined(p) if p.state != SUCCEEDED else
                  notices.forwarded(p) if p.offline else notices.approved(p))
        store.add_notice(notice.as_dict())
    store.set_meta("offline_forwarded", forwarded)
    store.set_meta("offline_declined", declined)
    store.set_meta("last_sync_at", iso(utcnow()))
    # "stored" is counted by the store; "reported" is what add_settled() returned
    return {"stored": store.settled_count() - before, "reported": reported, "forwarded": forwarded,
            "declined": declined, "follow_up": follow_up, "notices": len(newest)}
