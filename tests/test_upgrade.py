"""Queued payments survive the move to today's Stripe API.

``fixtures/release-0.1.0/data`` was written by the kiosk at release 0.1.0
(``make_fixture.py`` beside it says how): five offline sales waiting with
0.1.0's request shape (``payment_method_types``, refused by API version
2026-10-28.endive), one of them attempted once with its answer lost, and two
settled payments.  This release must forward every one of them through the
strict fake -- which refuses anything endive refuses -- with the idempotency
keys 0.1.0 stored, and keep the history."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from conftest import run_json, write_config

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "release-0.1.0" / "data"


def data_of_release_0_1_0(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    shutil.copytree(FIXTURE, data)
    os.chmod(data, 0o700)
    for file in data.iterdir():       # git keeps no file modes: the store insists on 0600
        os.chmod(file, 0o600)
    return data


def stored_by_0_1_0(data: Path) -> dict:
    from kiosk_builtins.tinydb_store import TinyDBStore
    store = TinyDBStore(data)
    try:
        return {p.id: p for p in store.live()}
    finally:
        store.close()


def config_for(tmp_path, fake_stripe):
    return write_config(tmp_path, fake_stripe.url, kiosk={"id": "stall-0-1-0"},
                        limits__currencies={"jpy": {"per_transaction": 15000, "total": 75000}})


def test_a_queue_written_by_0_1_0_forwards_under_todays_api(tmp_path, fake_stripe, open_kiosk):
    data = data_of_release_0_1_0(tmp_path)
    before = stored_by_0_1_0(data)
    assert len(before) == 5 and all("payment_method_types" in p.request for p in before.values())
    kiosk = open_kiosk(config_for(tmp_path, fake_stripe), create=False)

    for payment in kiosk.store.live():
        old = before[payment.id]
        assert payment.idempotency_key == old.idempotency_key == f"kiosk-{payment.id}"
        assert "payment_method_types" not in payment.request
        assert payment.request["allowed_payment_method_types"] == ["card"]
        assert payment.request["error_on_requires_action"] is True
        for kept in ("amount", "currency", "payment_method", "metadata", "confirm"):
            assert payment.request[kept] == old.request[kept]

    report = kiosk.forward()
    assert (report.succeeded, report.failed, report.pending) == (4, 1, 0)
    assert fake_stripe.breaches == []
    creates = [r for r in fake_stripe.requests if r["method"] == "POST" and r["path"] == "/v1/payment_intents"]
    assert sorted(r["idempotency_key"] for r in creates) == sorted(p.idempotency_key for p in before.values())
    for payment_id, old in before.items():
        [intent] = fake_stripe.intents_for(payment_id)
        assert intent["amount"] == old.request["amount"] and intent["currency"] == old.request["currency"]
        assert intent["metadata"]["offline_stored_at"] == old.created_at
    declined = next(p for p in kiosk.store.settled() if p.id in before and p.state == "failed")
    assert declined.decline_code == "insufficient_funds" and declined.customer

    # the payment 0.1.0 had attempted was looked up before it was sent again
    attempted = next(p for p in before.values() if p.attempts == 1)
    lookup = next(i for i, r in enumerate(fake_stripe.requests)
                  if r["method"] == "GET" and r["path"] == "/v1/payment_intents" and "created" in r["query"])
    send = next(i for i, r in enumerate(fake_stripe.requests) if r["idempotency_key"] == attempted.idempotency_key)
    assert lookup < send


def test_the_upgrade_is_stored_and_the_history_of_0_1_0_kept(tmp_path, fake_stripe, open_kiosk):
    data = data_of_release_0_1_0(tmp_path)
    config = config_for(tmp_path, fake_stripe)
    open_kiosk(config, create=False).close()
    upgraded = stored_by_0_1_0(data)
    assert all("payment_method_types" not in p.request for p in upgraded.values())
    payments = run_json("queue", "--config", config)
    assert [p["state"] for p in payments].count("pending") == 5
    settled = {p["state"]: p for p in payments if p["state"] != "pending"}
    assert settled["succeeded"]["payment_intent"].startswith("pi_")
    assert settled["failed"]["decline_code"] == "expired_card"
    assert fake_stripe.payment_intents == []      # opening sends nothing
