"""The happy path against the PyPI ``localstripe`` server on 127.0.0.1:
stripe-python over real HTTP to a stateful Stripe stand-in we did not write."""
from __future__ import annotations

import json
import urllib.request

from conftest import TEST_KEY, run_json, run_kiosk, write_config


def localstripe_intents(url: str) -> list[dict]:
    request = urllib.request.Request(f"{url}/v1/payment_intents?limit=100",
                                     headers={"Authorization": f"Bearer {TEST_KEY}"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.load(response)["data"]


def test_online_and_offline_sales_settle_at_localstripe(tmp_path, localstripe):
    path = write_config(tmp_path, localstripe)
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


def test_localstripe_decline_is_recorded(tmp_path, localstripe):
    path = write_config(tmp_path, localstripe)
    run_kiosk("init", "--config", path)
    assert run_kiosk("charge", "9.00", "--offline", "--card", "customer_fail", "--config", path).returncode == 0
    assert run_json("sync", "--config", path)["failed"] == 1
    [payment] = run_json("queue", "--config", path)
    # localstripe's card errors carry no payment_intent, unlike Stripe's
    assert payment["state"] == "failed" and payment["decline_code"] == "card_declined" and payment["message"]
