"""The kiosk's day against the PyPI ``localstripe`` server on 127.0.0.1:
stripe-python over real HTTP to a stateful Stripe stand-in we did not write.

localstripe predates Stripe's 2026 API, so the kiosk reaches it through the
small translating shim in ``localstripe_shim.py``, which changes only what
localstripe cannot take: ``allowed_payment_method_types`` is sent under its old
name ``payment_method_types``; ``error_on_requires_action``,
``cancellation_reason``, a confirm's ``payment_method`` and the list's
``created`` filter are dropped; Stripe's test token
``pm_card_authenticationRequired`` becomes a localstripe card that asks for
3-D Secure.  What localstripe answers reaches the kiosk unchanged, so its
state -- not ours -- says whether each sale was charged once.  Each test
also checks the shim really translated (so it cannot pass by forwarding
nothing)."""
from __future__ import annotations

import json
import urllib.request

from conftest import TEST_KEY, run_json, run_kiosk, write_config


def localstripe_intents(localstripe) -> list[dict]:
    request = urllib.request.Request(f"{localstripe.upstream_url}/v1/payment_intents?limit=100",
                                     headers={"Authorization": f"Bearer {TEST_KEY}"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.load(response)["data"]


def intents_of(localstripe, payment_id: str) -> list[dict]:
    return [i for i in localstripe_intents(localstripe) if i["metadata"].get("kiosk_payment_id") == payment_id]


def translated(localstripe, change: str) -> bool:
    return any(change in changes for _, _, changes in localstripe.translated)


def test_online_and_offline_sales_settle_at_localstripe(tmp_path, localstripe):
    path = write_config(tmp_path, localstripe.url)
    assert run_kiosk("init", "--config", path).returncode == 0
    online = run_kiosk("charge", "12.50", "--json", "--config", path)
    assert online.returncode == 0, online.stderr
    assert json.loads(online.stdout)["status"] == "approved"
    for amount in ("8.00", "23.50"):
        assert run_kiosk("charge", amount, "--offline", "--config", path).returncode == 0
    assert run_json("sync", "--config", path) == {"reached": True, "succeeded": 2, "failed": 0, "pending": 0,
                                                  "auth_error": None}
    payments = run_json("queue", "--config", path)
    intents = {i["id"]: i for i in localstripe_intents(localstripe)}
    assert len(payments) == 3 and len(intents) == 3
    for payment in payments:
        intent = intents[payment["payment_intent"]]
        assert payment["state"] == "succeeded" and intent["status"] == "succeeded"
        assert intent["amount"] == payment["amount"] and intent["metadata"]["kiosk_payment_id"] == payment["id"]
        assert ("offline_stored_at" in intent["metadata"]) == payment["offline"]
    assert translated(localstripe, "allowed_payment_method_types -> payment_method_types")
    assert translated(localstripe, "dropped error_on_requires_action")


def test_localstripe_decline_is_recorded(tmp_path, localstripe):
    path = write_config(tmp_path, localstripe.url)
    run_kiosk("init", "--config", path)
    assert run_kiosk("charge", "9.00", "--offline", "--card", "customer_fail", "--config", path).returncode == 0
    assert run_json("sync", "--config", path)["failed"] == 1
    [payment] = run_json("queue", "--config", path)
    assert payment["state"] == "failed" and payment["decline_code"] == "card_declined" and payment["message"]
    [intent] = intents_of(localstripe, payment["id"])
    assert intent["status"] == "requires_payment_method"


def test_an_answer_lost_on_the_way_back_is_looked_up_not_charged_again(tmp_path, localstripe):
    path = write_config(tmp_path, localstripe.url)
    run_kiosk("init", "--config", path)
    assert run_kiosk("charge", "15.00", "--offline", "--config", path).returncode == 0
    localstripe.drop_next(1)                     # localstripe charges it; the kiosk never hears
    assert run_json("sync", "--config", path)["pending"] == 1
    [payment] = run_json("queue", "--config", path)
    assert payment["state"] == "pending" and len(intents_of(localstripe, payment["id"])) == 1
    assert run_json("sync", "--config", path)["succeeded"] == 1
    [payment] = run_json("queue", "--config", path)
    [intent] = intents_of(localstripe, payment["id"])
    assert payment["state"] == "succeeded" and payment["payment_intent"] == intent["id"]
    assert translated(localstripe, "dropped the created filter")


def test_a_card_asking_for_3d_secure_is_cancelled_at_localstripe_never_left_hanging(tmp_path, localstripe):
    path = write_config(tmp_path, localstripe.url)
    run_kiosk("init", "--config", path)
    assert run_kiosk("charge", "20.00", "--offline", "--card", "authentication_required", "--customer",
                     "ana@example.com", "--config", path).returncode == 0
    assert run_json("sync", "--config", path)["failed"] == 1
    [payment] = run_json("queue", "--config", path)
    assert payment["state"] == "failed" and payment["decline_code"] == "authentication_required"
    assert "another card" in payment["message"]
    [intent] = intents_of(localstripe, payment["id"])
    assert intent["status"] == "canceled" and payment["payment_intent"] == intent["id"]
    notices = run_json("notices", "--config", path)
    assert any(n["kind"] == "declined" and "ana@example.com" in n["message"] for n in notices)
    assert translated(localstripe, "dropped cancellation_reason")


def test_an_online_sale_asking_for_3d_secure_ends_at_the_till(tmp_path, localstripe):
    path = write_config(tmp_path, localstripe.url)
    run_kiosk("init", "--config", path)
    result = run_kiosk("charge", "20.00", "--card", "authentication_required", "--json", "--config", path)
    assert result.returncode == 1, result.stderr
    sale = json.loads(result.stdout)
    assert sale["status"] == "declined" and "another card" in sale["message"]
    [intent] = intents_of(localstripe, sale["payment"]["id"])
    assert intent["status"] == "canceled"
