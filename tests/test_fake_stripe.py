"""Tests for kiosk.testing.fake_stripe, driven over HTTP by the real stripe-python client."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest
import stripe
from hypothesis import given, settings, strategies as st
from stripe._encode import _api_encode
from stripe._http_client import HTTPClient

from kiosk.testing import stripe_contract
from kiosk.testing.fake_stripe import DECLINES, LEAVE_STATUSES, FakeStripe, parse_form


pytestmark = pytest.mark.timeout(30)

KEY = "sk_test_fake_4242"


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch):
    # stripe-python sleeps 0.5 s+ between retries; keep the suite quick.
    monkeypatch.setattr(HTTPClient, "INITIAL_DELAY", 0.01)
    monkeypatch.setattr(HTTPClient, "MAX_DELAY", 0.05)


@pytest.fixture
def fake():
    f = FakeStripe(rate_limit=1000).start()
    try:
        yield f
    finally:
        f.stop()


def client_for(fake, retries=0, key=KEY, **kw):
    return stripe.StripeClient(key, base_addresses={"api": fake.url},
                               max_network_retries=retries, **kw)


def params(kpid="kp-1", pm="pm_card_visa", amount=1250, currency="usd", **extra):
    """Today's request shape (API version endive); an extra of None leaves that key out."""
    p = {"amount": amount, "currency": currency, "payment_method": pm, "confirm": True,
         "allowed_payment_method_types": ["card"], "error_on_requires_action": True,
         "metadata": {"kiosk_payment_id": kpid, "kiosk_id": "kiosk-1"}}
    p.update(extra)
    return {k: v for k, v in p.items() if v is not None}


def create(client, key=None, **kw):
    opts = {"idempotency_key": key} if key else {}
    return client.v1.payment_intents.create(params=params(**kw), options=opts)


def raw(fake, method, path, body=None, headers=None):
    h = {"Authorization": f"Bearer {KEY}"}
    h.update(headers or {})
    data = urllib.parse.urlencode(body).encode() if body is not None else None
    req = urllib.request.Request(fake.url + path, data=data, method=method, headers=h)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, dict(r.headers), json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), json.loads(e.read())


# -- success -----------------------------------------------------------------------

def test_success_creates_succeeded_intent(fake):
    c = client_for(fake)
    pi = create(c, key="idem-ok", kpid="kp-ok", description="Kiosk sale kp-ok")
    assert pi.object == "payment_intent" and pi.id.startswith("pi_")
    assert pi.status == "succeeded"
    assert pi.amount == 1250 and pi.amount_received == 1250 and pi.currency == "usd"
    assert pi.latest_charge.startswith("ch_") and pi.livemode is False
    assert isinstance(pi.created, int) and abs(pi.created - time.time()) < 5
    assert pi.metadata["kiosk_payment_id"] == "kp-ok"
    assert pi.payment_method_types == ["card"]
    assert pi.description == "Kiosk sale kp-ok"
    assert pi.last_response.headers["Request-Id"].startswith("req_")
    assert "Idempotent-Replayed" not in pi.last_response.headers

    got = c.v1.payment_intents.retrieve(pi.id)
    assert got.id == pi.id and got.status == "succeeded" and got.to_dict() == pi.to_dict()
    assert [p["id"] for p in fake.intents_for("kp-ok")] == [pi.id]
    assert fake.intents_for("nope") == []
    reqs = fake.requests
    assert reqs[0]["method"] == "POST" and reqs[0]["path"] == "/v1/payment_intents"
    assert reqs[0]["idempotency_key"] == "idem-ok" and reqs[0]["status"] == 200
    assert reqs[0]["params"]["allowed_payment_method_types"] == ["card"]
    assert reqs[0]["params"]["error_on_requires_action"] == "true"
    assert reqs[0]["stripe_version"] == stripe_contract.API_VERSION
    assert reqs[1]["method"] == "GET" and reqs[1]["status"] == 200
    assert pi.last_response.headers["Stripe-Version"] == stripe_contract.API_VERSION
    assert fake.breaches == []


def test_inspection_returns_copies(fake):
    create(client_for(fake), kpid="kp-copy")
    fake.payment_intents[0]["status"] = "canceled"
    fake.intents_for("kp-copy")[0]["metadata"]["x"] = "y"
    assert fake.payment_intents[0]["status"] == "succeeded"
    assert "x" not in fake.payment_intents[0]["metadata"]


@pytest.mark.parametrize("pm", ["pm_card_visa", "pm_card_mastercard", "pm_card_amex",
                                "pm_card_discover", "pm_card_visa_debit", "pm_card_jcb",
                                "pm_card_somethingElse"])
def test_success_tokens(fake, pm):
    pi = create(client_for(fake), pm=pm, kpid=pm)
    assert pi.status == "succeeded" and pi.payment_method == pm
    assert len(fake.intents_for(pm)) == 1


def test_manual_capture_and_unconfirmed(fake):
    c = client_for(fake)
    held = create(c, kpid="kp-man", capture_method="manual")
    assert held.status == "requires_capture" and held.amount_capturable == 1250
    assert held.amount_received == 0
    pending = create(c, kpid="kp-unc", confirm=False, error_on_requires_action=None)
    assert pending.status == "requires_confirmation" and pending.latest_charge is None


def test_expand_latest_charge(fake):
    c = client_for(fake)
    pi = create(c, kpid="kp-exp")
    got = c.v1.payment_intents.retrieve(pi.id, params={"expand": ["latest_charge"]})
    assert got.latest_charge.object == "charge" and got.latest_charge.id == pi.latest_charge
    assert got.latest_charge.paid is True and got.latest_charge.amount == 1250
    assert got.latest_charge.metadata["kiosk_payment_id"] == "kp-exp"


# -- declines --------------------------------------------------------------------------

DECLINE_CASES = [
    ("pm_card_chargeDeclined", "card_declined", "generic_decline", "Your card was declined."),
    ("pm_card_chargeDeclinedInsufficientFunds", "card_declined", "insufficient_funds",
     "Your card has insufficient funds."),
    ("pm_card_chargeDeclinedExpiredCard", "expired_card", "expired_card", "Your card has expired."),
    ("pm_card_chargeDeclinedIncorrectCvc", "incorrect_cvc", "incorrect_cvc",
     "Your card's security code is incorrect."),
    ("pm_card_chargeDeclinedLostCard", "card_declined", "lost_card", "Your card was declined."),
    ("pm_card_chargeDeclinedStolenCard", "card_declined", "stolen_card", "Your card was declined."),
    ("pm_card_chargeDeclinedFraudulent", "card_declined", "fraudulent", "Your card was declined."),
    ("pm_card_chargeDeclinedProcessingError", "processing_error", "processing_error",
     "An error occurred while processing your card. Try again in a little bit."),
    ("pm_card_visa_chargeDeclinedLostCard", "card_declined", "lost_card", "Your card was declined."),
]


@pytest.mark.parametrize("pm,code,decline_code,message", DECLINE_CASES)
def test_declines_raise_card_error_and_store_intent(fake, pm, code, decline_code, message):
    c = client_for(fake)
    with pytest.raises(stripe.CardError) as ei:
        create(c, pm=pm, kpid=f"kp-{pm}", key=f"idem-{pm}")
    e = ei.value
    assert e.http_status == 402
    assert e.code == code
    assert e.user_message == message
    assert e.error.type == "card_error"
    assert e.error.decline_code == decline_code
    assert e.error.charge.startswith("ch_")
    assert e.request_id.startswith("req_")
    pi = e.error.payment_intent
    assert pi.id.startswith("pi_") and pi.status == "requires_payment_method"
    assert pi.last_payment_error.decline_code == decline_code
    assert pi.amount_received == 0

    stored = fake.intents_for(f"kp-{pm}")
    assert [p["id"] for p in stored] == [pi.id]
    assert stored[0]["last_payment_error"]["code"] == code
    listed = c.v1.payment_intents.list(params={"limit": 100})
    assert pi.id in [p.id for p in listed.data]
    assert c.v1.payment_intents.retrieve(pi.id).status == "requires_payment_method"


def test_every_decline_token_is_covered():
    assert {f"pm_card_{k}" for k in DECLINES} >= {case[0] for case in DECLINE_CASES[:-1]}


# -- invalid requests --------------------------------------------------------------------

@pytest.mark.parametrize("pm", ["pm_nonexistent", "tok_visa", "card_123", "pm_card_", "pm_1Abc"])
def test_unknown_payment_method(fake, pm):
    with pytest.raises(stripe.InvalidRequestError) as ei:
        create(client_for(fake), pm=pm, kpid="kp-unknown")
    e = ei.value
    assert e.http_status == 400 and e.code == "resource_missing"
    assert e.param == "payment_method"
    assert e.user_message == f"No such PaymentMethod: '{pm}'"
    assert e.error.type == "invalid_request_error"
    assert fake.payment_intents == []


@pytest.mark.parametrize("currency,too_small,ok", [
    ("usd", 49, 50), ("eur", 49, 50), ("gbp", 29, 30), ("jpy", 49, 50)])
def test_minimum_amounts(fake, currency, too_small, ok):
    c = client_for(fake)
    with pytest.raises(stripe.InvalidRequestError) as ei:
        create(c, amount=too_small, currency=currency)
    assert ei.value.code == "amount_too_small" and ei.value.param == "amount"
    assert ei.value.user_message.startswith("Amount must be at least")
    assert fake.payment_intents == []
    assert create(c, amount=ok, currency=currency, kpid="kp-min").status == "succeeded"


@pytest.mark.parametrize("currency", ["kwd", "bhd", "jod", "omr", "tnd"])
def test_three_decimal_amounts_must_end_in_zero(fake, currency):
    """Stripe: PaymentIntents and refunds in three-decimal currencies need a last digit of 0."""
    c = client_for(fake)
    with pytest.raises(stripe.InvalidRequestError) as ei:
        create(c, amount=5125, currency=currency)
    assert ei.value.http_status == 400 and ei.value.param == "amount"
    assert fake.payment_intents == []
    pi = create(c, amount=5120, currency=currency, kpid="kp-tens")
    assert pi.status == "succeeded"
    with pytest.raises(stripe.InvalidRequestError) as ei:
        c.v1.refunds.create(params={"payment_intent": pi.id, "amount": 1005})
    assert ei.value.param == "amount" and fake.refunds == []
    assert c.v1.refunds.create(params={"payment_intent": pi.id, "amount": 1000}).status == "succeeded"
    assert create(c, amount=5125, currency="usd", kpid="kp-cents").status == "succeeded"


@pytest.mark.parametrize("override,param", [
    ({"amount": 0}, "amount"),
    ({"amount": "12.50"}, "amount"),
    ({"amount": None}, "amount"),
    ({"currency": "xyz"}, "currency"),
    ({"currency": "us"}, "currency"),
    ({"currency": None}, "currency"),
    ({"confirm": "maybe"}, "confirm"),
    ({"capture_method": "later"}, "capture_method"),
    ({"bogus": "1"}, "bogus"),
    ({"payment_method": None}, "payment_method"),   # confirm=true without a payment method
])
def test_validation_errors(fake, override, param):
    p = params()
    p.update(override)
    p = {k: v for k, v in p.items() if v is not None}
    with pytest.raises(stripe.InvalidRequestError) as ei:
        client_for(fake).v1.payment_intents.create(params=p)
    assert ei.value.http_status == 400 and ei.value.param == param
    assert fake.payment_intents == []


def test_uppercase_currency_is_normalised_like_stripe(fake):
    assert create(client_for(fake), currency="USD").currency == "usd"


def test_retrieve_missing_is_404(fake):
    with pytest.raises(stripe.InvalidRequestError) as ei:
        client_for(fake).v1.payment_intents.retrieve("pi_missing")
    assert ei.value.http_status == 404 and ei.value.code == "resource_missing"
    assert "pi_missing" in ei.value.user_message


def test_unknown_path_is_404(fake):
    status, headers, body = raw(fake, "GET", "/v1/charges_nope")
    assert status == 404
    assert body["error"]["type"] == "invalid_request_error"
    assert "Unrecognized request URL" in body["error"]["message"]
    assert headers["Request-Id"].startswith("req_")
    status, _, body = raw(fake, "POST", "/v1/payment_intents/pi_x/capture", body={})
    assert status == 404 and body["error"]["code"] == "resource_missing"
    # a route stripe-python knows but the fake does not serve: checked, then 404
    status, _, body = raw(fake, "GET", "/v1/payment_intents/search?query=status%3A%27succeeded%27")
    assert status == 404 and "Unrecognized request URL" in body["error"]["message"]
    status, _, body = raw(fake, "GET", "/v1/payment_intents/search?bogus=1")
    assert status == 400 and body["error"]["code"] == "parameter_unknown"


# -- idempotency ---------------------------------------------------------------------------

def test_idempotent_replay_returns_same_intent(fake):
    c = client_for(fake)
    first = create(c, key="idem-1", kpid="kp-idem")
    second = create(c, key="idem-1", kpid="kp-idem")
    assert second.id == first.id and second.to_dict() == first.to_dict()
    assert second.last_response.headers["Idempotent-Replayed"] == "true"
    assert second.last_response.headers["Original-Request"] == \
        first.last_response.headers["Request-Id"]
    assert len(fake.payment_intents) == 1
    assert [r["replayed"] for r in fake.requests] == [False, True]


def test_idempotent_replay_of_decline(fake):
    c = client_for(fake)
    ids = []
    for _ in range(2):
        with pytest.raises(stripe.CardError) as ei:
            create(c, key="idem-dec", pm="pm_card_chargeDeclinedInsufficientFunds")
        ids.append(ei.value.error.payment_intent.id)
    assert ids[0] == ids[1]
    assert ei.value.headers["Idempotent-Replayed"] == "true"
    assert len(fake.payment_intents) == 1


def test_validation_errors_are_not_saved_under_the_key(fake):
    """Stripe saves a result only once an endpoint started executing."""
    c = client_for(fake)
    for _ in range(2):
        with pytest.raises(stripe.InvalidRequestError) as ei:
            create(c, key="idem-bad", pm="pm_nonexistent")
        assert "Idempotent-Replayed" not in ei.value.headers
    assert fake.payment_intents == []
    pi = create(c, key="idem-bad", kpid="kp-fixed")     # the same key, corrected
    assert pi.status == "succeeded" and "Idempotent-Replayed" not in pi.last_response.headers
    assert create(c, key="idem-bad", kpid="kp-fixed").id == pi.id


def test_key_reuse_with_different_params(fake):
    c = client_for(fake)
    first = create(c, key="idem-2", amount=1000)
    # Stripe answers 400 with type idempotency_error, which stripe-python
    # raises as stripe.IdempotencyError (not InvalidRequestError).
    with pytest.raises(stripe.IdempotencyError) as ei:
        create(c, key="idem-2", amount=2000)
    e = ei.value
    assert e.http_status == 400
    assert e.error.type == "idempotency_error" and e.error.code == "idempotency_error"
    assert e.user_message.startswith(
        "Keys for idempotent requests can only be used with the same parameters")
    assert "'idem-2'" in e.user_message
    assert [p["id"] for p in fake.payment_intents] == [first.id]
    assert fake.payment_intents[0]["amount"] == 1000


def test_pruned_keys_then_resend_duplicates_the_charge(fake):
    """The hazard the kiosk must avoid: resending after Stripe forgot the key."""
    c = client_for(fake)
    first = create(c, key="idem-3", kpid="kp-dup")
    fake.prune_idempotency_keys()
    second = create(c, key="idem-3", kpid="kp-dup")
    assert second.id != first.id
    assert "Idempotent-Replayed" not in second.last_response.headers
    assert {p["id"] for p in fake.intents_for("kp-dup")} == {first.id, second.id}


def test_concurrent_same_key_creates_one_intent(fake):
    results, errors = [], []

    def worker():
        try:
            results.append(create(client_for(fake), key="idem-race", kpid="kp-race").id)
        except Exception as e:   # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(set(results)) == 1 and len(results) == 12
    assert len(fake.intents_for("kp-race")) == 1


def test_idempotency_keys_are_ignored_on_get(fake):
    c = client_for(fake)
    create(c, kpid="kp-g")
    status, _, body = raw(fake, "GET", "/v1/payment_intents", headers={"Idempotency-Key": "g1"})
    status2, headers2, body2 = raw(fake, "GET", "/v1/payment_intents?limit=1",
                                   headers={"Idempotency-Key": "g1"})
    assert status == status2 == 200 and len(body2["data"]) == 1
    assert "Idempotent-Replayed" not in headers2


# -- injected failures ------------------------------------------------------------------------

def test_fail_next_429_no_retries(fake):
    fake.fail_next(1, 429)
    with pytest.raises(stripe.RateLimitError) as ei:
        create(client_for(fake, retries=0), key="idem-429")
    assert ei.value.http_status == 429 and ei.value.error.code == "rate_limit"
    assert fake.payment_intents == []
    # a fault is never stored against the key: the resend is processed normally
    pi = create(client_for(fake), key="idem-429")
    assert pi.status == "succeeded" and len(fake.payment_intents) == 1


def test_fail_next_429_is_not_retried_by_stripe_python(fake):
    """stripe-python only retries 409, 5xx and connection errors (or when the
    server sends Stripe-Should-Retry); a 429 reaches the caller even with
    retries enabled, so the kiosk has to back off and resend itself."""
    fake.fail_next(1, 429)
    with pytest.raises(stripe.RateLimitError):
        create(client_for(fake, retries=3), key="idem-429b", kpid="kp-429b")
    assert len(fake.requests) == 1
    pi = create(client_for(fake, retries=3), key="idem-429b", kpid="kp-429b")
    assert [p["id"] for p in fake.intents_for("kp-429b")] == [pi.id]


def test_fail_next_500_no_retries(fake):
    fake.fail_next(1, 500)
    with pytest.raises(stripe.APIError) as ei:
        create(client_for(fake, retries=0), key="idem-500")
    assert ei.value.http_status == 500 and ei.value.error.type == "api_error"
    assert fake.payment_intents == []


def test_fail_next_500_with_retries_succeeds_once(fake):
    fake.fail_next(2, 500)
    pi = create(client_for(fake, retries=3), key="idem-500r", kpid="kp-500r")
    assert pi.status == "succeeded"
    assert [p["id"] for p in fake.intents_for("kp-500r")] == [pi.id]
    reqs = fake.requests
    assert [r["status"] for r in reqs] == [500, 500, 200]
    assert {r["idempotency_key"] for r in reqs} == {"idem-500r"}
    assert [r["fault"] for r in reqs] == ["fail", "fail", None]


def test_fail_next_counts_down_on_any_request(fake):
    fake.fail_next(2, 503)
    c = client_for(fake)
    for _ in range(2):
        with pytest.raises(stripe.APIError):
            c.v1.payment_intents.list()
    assert c.v1.payment_intents.list().data == []


def test_drop_next_without_retries(fake):
    fake.drop_next(1)
    c = client_for(fake, retries=0)
    with pytest.raises(stripe.APIConnectionError) as ei:
        create(c, key="idem-drop", kpid="kp-drop")
    assert ei.value.should_retry is True
    stored = fake.intents_for("kp-drop")
    assert len(stored) == 1 and stored[0]["status"] == "succeeded"   # committed anyway
    assert fake.requests[0]["fault"] == "drop" and fake.requests[0]["status"] is None
    # resending with the same key finds it
    again = create(c, key="idem-drop", kpid="kp-drop")
    assert again.id == stored[0]["id"]
    assert again.last_response.headers["Idempotent-Replayed"] == "true"
    assert len(fake.payment_intents) == 1


def test_drop_next_with_retries_replays(fake):
    fake.drop_next(1)
    pi = create(client_for(fake, retries=2), key="idem-drop2", kpid="kp-drop2")
    assert [p["id"] for p in fake.intents_for("kp-drop2")] == [pi.id]
    assert pi.last_response.headers["Idempotent-Replayed"] == "true"
    assert [r["replayed"] for r in fake.requests] == [False, True]


def test_drop_next_only_affects_create(fake):
    fake.drop_next(1)
    c = client_for(fake)
    assert c.v1.payment_intents.list().data == []     # GET is not dropped
    with pytest.raises(stripe.APIConnectionError):
        create(c, kpid="kp-d3")
    assert len(fake.intents_for("kp-d3")) == 1
    assert create(c, kpid="kp-d4").status == "succeeded"


def test_hang_next_commits_before_answering(fake):
    fake.hang_next(1, 0.6)
    out = {}

    def send():
        t0 = time.monotonic()
        out["pi"] = create(client_for(fake), key="idem-hang", kpid="kp-hang")
        out["elapsed"] = time.monotonic() - t0

    t = threading.Thread(target=send)
    t.start()
    deadline = time.monotonic() + 0.5
    while not fake.intents_for("kp-hang") and time.monotonic() < deadline:
        time.sleep(0.01)
    seen_while_hanging = fake.intents_for("kp-hang")
    assert "pi" not in out                     # client still waiting
    assert len(seen_while_hanging) == 1        # but the PI already exists
    t.join(5)
    assert out["elapsed"] >= 0.6
    assert out["pi"].id == seen_while_hanging[0]["id"]
    assert fake.requests[0]["fault"] == "hang"


def test_hang_with_client_timeout_leaves_committed_intent(fake):
    fake.hang_next(1, 2.0)
    c = client_for(fake, http_client=stripe.RequestsClient(timeout=0.2))
    t0 = time.monotonic()
    with pytest.raises(stripe.APIConnectionError):
        create(c, key="idem-hang2", kpid="kp-hang2")
    assert time.monotonic() - t0 < 1.5
    assert len(fake.intents_for("kp-hang2")) == 1


def test_set_offline(fake):
    c = client_for(fake)
    assert c.v1.payment_intents.list().data == []          # warm a keep-alive connection
    fake.set_offline(True)
    for _ in range(2):                                      # pooled and fresh connections
        t0 = time.monotonic()
        with pytest.raises(stripe.APIConnectionError):
            create(c, key="idem-off", kpid="kp-off")
        assert time.monotonic() - t0 < 1.0
    assert fake.payment_intents == []
    assert [r["fault"] for r in fake.requests[1:]] == ["offline", "offline"]
    fake.set_offline(False)
    assert create(c, key="idem-off", kpid="kp-off").status == "succeeded"
    assert len(fake.payment_intents) == 1


def test_reject_api_keys(fake):
    fake.reject_api_keys(True)
    with pytest.raises(stripe.AuthenticationError) as ei:
        create(client_for(fake), kpid="kp-auth")
    assert ei.value.http_status == 401
    assert ei.value.user_message.startswith("Invalid API Key provided")
    assert fake.payment_intents == []
    fake.reject_api_keys(False)
    assert create(client_for(fake), kpid="kp-auth").status == "succeeded"


@pytest.mark.parametrize("key", ["pk_test_123", "sk_bogus", "nonsense"])
def test_bad_key_shapes(fake, key):
    with pytest.raises(stripe.AuthenticationError):
        client_for(fake, key=key).v1.payment_intents.list()


def test_auth_header_forms(fake):
    assert raw(fake, "GET", "/v1/payment_intents")[0] == 200
    basic = base64.b64encode(b"rk_test_abc:").decode()
    assert raw(fake, "GET", "/v1/payment_intents",
               headers={"Authorization": f"Basic {basic}"})[0] == 200
    status, headers, body = raw(fake, "GET", "/v1/payment_intents",
                                headers={"Authorization": ""})
    assert status == 401 and body["error"]["type"] == "invalid_request_error"


def test_latency(fake):
    c = client_for(fake)
    c.v1.payment_intents.list()
    fake.latency = 0.25
    t0 = time.monotonic()
    c.v1.payment_intents.list()
    assert time.monotonic() - t0 >= 0.25


def test_stop_closes_keep_alive_connections():
    f = FakeStripe().start()
    c = client_for(f)
    c.v1.payment_intents.list()
    f.stop()
    with pytest.raises(stripe.APIConnectionError):
        c.v1.payment_intents.list()
    f.stop()   # idempotent


# -- listing ---------------------------------------------------------------------------------

def test_pagination_and_created_filters():
    with FakeStripe(rate_limit=0) as f:
        now = [1_700_000_000]
        f.clock = lambda: now[0]
        c = client_for(f)
        made = []
        for i in range(130):
            now[0] = 1_700_000_000 + i // 10       # ten PIs share each second
            made.append(create(c, kpid=f"kp-{i}", key=f"pg-{i}").id)
        newest_first = list(reversed(made))

        page1 = c.v1.payment_intents.list(params={"limit": 100})
        assert page1.object == "list" and page1.url == "/v1/payment_intents"
        assert len(page1.data) == 100 and page1.has_more is True
        page2 = c.v1.payment_intents.list(
            params={"limit": 100, "starting_after": page1.data[-1].id})
        assert len(page2.data) == 30 and page2.has_more is False
        assert [p.id for p in page1.data + page2.data] == newest_first

        assert len(c.v1.payment_intents.list().data) == 10       # default limit
        assert [p.id for p in page1.auto_paging_iter()] == newest_first

        back = c.v1.payment_intents.list(params={"limit": 5, "ending_before": page2.data[0].id})
        assert [p.id for p in back.data] == newest_first[95:100] and back.has_more is True

        t = 1_700_000_000
        window = c.v1.payment_intents.list(
            params={"limit": 100, "created": {"gte": t + 3, "lt": t + 5}})
        assert [p.id for p in window.data] == list(reversed(made[30:50]))
        assert window.has_more is False
        gt = c.v1.payment_intents.list(params={"limit": 100, "created": {"gt": t + 10}})
        assert [p.id for p in gt.data] == list(reversed(made[110:]))
        lte = c.v1.payment_intents.list(params={"limit": 100, "created": {"lte": t}})
        assert [p.id for p in lte.data] == list(reversed(made[:10]))
        exact = c.v1.payment_intents.list(params={"created": t + 7})
        assert [p.id for p in exact.data] == list(reversed(made[70:80]))

        # a cursor inside a created window
        first = c.v1.payment_intents.list(params={"limit": 7, "created": {"gte": t + 3, "lt": t + 5}})
        rest = c.v1.payment_intents.list(params={"limit": 100, "starting_after": first.data[-1].id,
                                                 "created": {"gte": t + 3, "lt": t + 5}})
        assert [p.id for p in first.data + rest.data] == list(reversed(made[30:50]))

        for bad in ({"limit": 101}, {"limit": 0}, {"starting_after": "pi_nope"},
                    {"metadata": {"kiosk_payment_id": "kp-1"}}, {"created": {"between": 1}}):
            with pytest.raises(stripe.InvalidRequestError):
                c.v1.payment_intents.list(params=bad)
        assert f.max_requests_per_second > 25   # no limiter with rate_limit=0


def test_rate_limit():
    with FakeStripe(rate_limit=25) as f:
        c = client_for(f, retries=0)
        ok = limited = 0
        for _ in range(40):
            try:
                c.v1.payment_intents.list()
                ok += 1
            except stripe.RateLimitError as e:
                assert e.http_status == 429 and e.error.code == "rate_limit"
                limited += 1
        assert limited > 0 and ok + limited == 40
        assert f.max_requests_per_second >= 26
        reqs = f.requests
        assert [r["status"] for r in reqs].count(429) == limited and len(reqs) == 40
        # never more than 25 answered (non-429) requests in any one-second window
        served = [r["time"] for r in reqs if r["status"] == 200]
        assert max(sum(1 for u in served if t - 1.0 < u <= t) for t in served) <= 25
        time.sleep(1.05)
        assert c.v1.payment_intents.list().data == []


# -- form decoding and the command line ---------------------------------------------------------

def test_parse_form_matches_stripe_encoding():
    p = {"amount": 500, "confirm": True, "allowed_payment_method_types": ["card", "link"],
         "metadata": {"0": "zero", "a b": "c&d=e"}, "created": {"gte": 5},
         "expand": ["latest_charge"]}
    got = parse_form(urllib.parse.urlencode(list(_api_encode(p))))
    assert got == {"amount": "500", "confirm": "true",
                   "allowed_payment_method_types": ["card", "link"],
                   "metadata": {"0": "zero", "a b": "c&d=e"}, "created": {"gte": "5"},
                   "expand": ["latest_charge"]}
    assert parse_form("expand[]=a&expand[]=b") == {"expand": ["a", "b"]}


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.text(min_size=1, max_size=40).filter(lambda s: "[" not in s and "]" not in s),
                       st.text(min_size=1, max_size=50), max_size=8))
def test_parse_form_round_trips_metadata(metadata):
    encoded = urllib.parse.urlencode(list(_api_encode({"metadata": metadata})))
    assert parse_form(encoded).get("metadata", {}) == metadata


def test_command_line_runs_server():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
         os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen([sys.executable, "-m", "kiosk.testing.fake_stripe", "--port", "0"],
                            stdout=subprocess.PIPE, text=True, env=env)
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        c = stripe.StripeClient(KEY, base_addresses={"api": url})
        pi = c.v1.payment_intents.create(params=params(kpid="kp-cli"))
        assert pi.status == "succeeded"
        assert c.v1.payment_intents.list().data[0].id == pi.id
    finally:
        proc.terminate()
        assert proc.wait(5) == 0


# -- the contract of API version endive --------------------------------------------------------

def test_payment_method_types_is_refused_recorded_and_not_saved(fake):
    c = client_for(fake)
    old_shape = params(kpid="kp-old", payment_method_types=["card"],
                       allowed_payment_method_types=None)
    with pytest.raises(stripe.InvalidRequestError) as ei:
        c.v1.payment_intents.create(params=old_shape, options={"idempotency_key": "idem-old"})
    e = ei.value
    assert e.http_status == 400 and e.error.type == "invalid_request_error"
    assert e.code == "payment_method_types_no_longer_supported"
    assert e.param == "payment_method_types"
    assert fake.payment_intents == []
    assert fake.breaches == [{"method": "POST", "path": "/v1/payment_intents",
                              "code": "payment_method_types_no_longer_supported",
                              "param": "payment_method_types", "message": e.user_message}]
    # nothing was saved under the key: today's shape goes through with it
    pi = create(c, key="idem-old", kpid="kp-old")
    assert pi.status == "succeeded" and pi.payment_method_types == ["card"]
    assert "Idempotent-Replayed" not in pi.last_response.headers
    assert len(fake.breaches) == 1


def test_payment_method_types_refused_on_confirm_too(fake):
    c = client_for(fake)
    pi = create(c, kpid="kp-pmt", confirm=None, error_on_requires_action=None)
    with pytest.raises(stripe.InvalidRequestError) as ei:
        c.v1.payment_intents.confirm(pi.id, params={"payment_method_types": ["card"]})
    assert ei.value.code == "payment_method_types_no_longer_supported"
    assert fake.breaches[0]["path"] == f"/v1/payment_intents/{pi.id}/confirm"
    assert c.v1.payment_intents.retrieve(pi.id).status == "requires_confirmation"


@pytest.mark.parametrize("extra,param", [
    ({"bogus": "1"}, "bogus"),
    ({"payment_method_options": {"card": {"request_three_d_secure": "any", "bogus": "x"}}},
     "payment_method_options[card][bogus]"),
    ({"metadata": {"kiosk_payment_id": {"nested": "x"}}}, "metadata[kiosk_payment_id]"),
])
def test_contract_breaches_name_the_parameter(fake, extra, param):
    with pytest.raises(stripe.InvalidRequestError) as ei:
        create(client_for(fake), key="idem-breach", **extra)
    assert ei.value.http_status == 400 and ei.value.param == param
    assert [b["param"] for b in fake.breaches] == [param]
    assert fake.payment_intents == []


def test_a_get_query_is_checked_too(fake):
    status, _, body = raw(fake, "GET", "/v1/payment_intents?limit=5&expand=latest_charge")
    assert status == 400 and body["error"]["param"] == "expand"
    status, _, body = raw(fake, "GET", "/v1/payment_intents/pi_x?client_secrets=1")
    assert status == 400 and body["error"]["code"] == "parameter_unknown"
    assert [b["method"] for b in fake.breaches] == ["GET", "GET"]


def test_wrong_stripe_version_is_refused(fake):
    old = client_for(fake, stripe_version="2025-01-27.acacia")
    with pytest.raises(stripe.InvalidRequestError) as ei:
        old.v1.payment_intents.create(params=params(kpid="kp-ver"),
                                      options={"idempotency_key": "idem-ver"})
    e = ei.value
    assert e.http_status == 400 and e.code == "api_version_invalid"
    assert "2025-01-27.acacia" in e.user_message and stripe_contract.API_VERSION in e.user_message
    assert e.headers["Stripe-Version"] == fake.api_version == stripe_contract.API_VERSION
    assert fake.breaches[0]["code"] == "api_version_invalid" and fake.payment_intents == []
    assert create(client_for(fake), key="idem-ver", kpid="kp-ver").status == "succeeded"


def test_no_stripe_version_is_served_as_the_fakes_own(fake):
    status, headers, _ = raw(fake, "GET", "/v1/payment_intents")
    assert status == 200 and headers["Stripe-Version"] == stripe_contract.API_VERSION
    fake.api_version = "2099-01-01.zinnia"
    status, headers, _ = raw(fake, "GET", "/v1/payment_intents")
    assert status == 200 and headers["Stripe-Version"] == "2099-01-01.zinnia"
    with pytest.raises(stripe.InvalidRequestError) as ei:   # stripe-python always sends its own
        client_for(fake).v1.payment_intents.list()
    assert ei.value.code == "api_version_invalid"


def test_date_header_follows_the_clock(fake):
    fake.clock = lambda: 1_700_000_000
    pi = create(client_for(fake), kpid="kp-clock")
    assert pi.last_response.headers["Date"] == "Tue, 14 Nov 2023 22:13:20 GMT"
    assert pi.created == 1_700_000_000
    assert raw(fake, "GET", "/v1/nope")[1]["Date"] == "Tue, 14 Nov 2023 22:13:20 GMT"


# -- PaymentIntent semantics ---------------------------------------------------------------------

def test_dynamic_payment_methods_need_a_return_url_or_no_redirects(fake):
    c = client_for(fake)
    with pytest.raises(stripe.InvalidRequestError) as ei:
        create(c, key="idem-redir", kpid="kp-redir", allowed_payment_method_types=None)
    assert ei.value.param == "return_url"
    assert "automatic_payment_methods[allow_redirects]" in ei.value.user_message
    assert fake.payment_intents == []
    never = create(c, key="idem-redir", kpid="kp-redir", allowed_payment_method_types=None,
                   automatic_payment_methods={"enabled": True, "allow_redirects": "never"})
    assert never.status == "succeeded"          # not saved before: the key was still free
    assert never.automatic_payment_methods.to_dict() == {
        "enabled": True, "allow_redirects": "never"}
    assert "card" in never.payment_method_types and never.allowed_payment_method_types is None
    back = create(c, kpid="kp-ret", allowed_payment_method_types=None,
                  return_url="https://kiosk.example/back")
    assert back.status == "succeeded" and back.automatic_payment_methods.enabled is True


@pytest.mark.parametrize("other", [
    {"automatic_payment_methods": {"enabled": True, "allow_redirects": "never"}},
    {"excluded_payment_method_types": ["cashapp"]},
    {"payment_method_configuration": "pmc_123"},
])
def test_allowed_payment_method_types_is_mutually_exclusive(fake, other):
    with pytest.raises(stripe.InvalidRequestError) as ei:
        create(client_for(fake), key="idem-excl", **other)
    e = ei.value
    assert e.http_status == 400 and e.code == "parameters_exclusive"
    assert e.param == next(iter(other)) and "allowed_payment_method_types" in e.user_message
    assert fake.payment_intents == [] and fake.breaches == []
    assert create(client_for(fake), key="idem-excl").status == "succeeded"


def test_allowed_types_are_filtered_to_compatible_ones(fake):
    c = client_for(fake)
    pi = create(c, kpid="kp-filter", allowed_payment_method_types=["ideal", "card", "sepa_debit"])
    assert pi.payment_method_types == ["card"]          # ideal and SEPA are euro-only
    assert pi.allowed_payment_method_types == ["ideal", "card", "sepa_debit"]
    with pytest.raises(stripe.InvalidRequestError) as ei:
        create(c, kpid="kp-noncard", currency="eur", allowed_payment_method_types=["ideal"])
    assert ei.value.code == "payment_intent_incompatible_payment_method"
    assert ei.value.param == "payment_method"
    assert fake.intents_for("kp-noncard") == []


def test_error_on_requires_action_needs_confirm(fake):
    with pytest.raises(stripe.InvalidRequestError) as ei:
        create(client_for(fake), kpid="kp-eora", confirm=False)
    assert ei.value.http_status == 400 and ei.value.param == "error_on_requires_action"
    assert fake.payment_intents == []


@pytest.mark.parametrize("pm", ["pm_card_authenticationRequired", "pm_card_threeDSecure2Required"])
def test_authentication_required_with_error_on_requires_action(fake, pm):
    c = client_for(fake)
    with pytest.raises(stripe.CardError) as ei:
        create(c, key=f"idem-{pm}", kpid=f"kp-{pm}", pm=pm)
    e = ei.value
    assert e.http_status == 402 and e.code == "authentication_required"
    assert e.error.decline_code == "authentication_required"
    assert e.error.charge.startswith("ch_")
    pi = e.error.payment_intent
    assert pi.status == "requires_payment_method" and pi.next_action is None
    assert pi.last_payment_error.code == "authentication_required"
    assert pi.latest_charge == e.error.charge
    with pytest.raises(stripe.CardError) as again:          # a 402 is saved and replayed
        create(c, key=f"idem-{pm}", kpid=f"kp-{pm}", pm=pm)
    assert again.value.headers["Idempotent-Replayed"] == "true"
    assert len(fake.intents_for(f"kp-{pm}")) == 1


def test_authentication_required_without_error_on_requires_action(fake):
    c = client_for(fake)
    pi = create(c, kpid="kp-3ds", pm="pm_card_authenticationRequired",
                error_on_requires_action=None)
    assert pi.status == "requires_action" and pi.last_payment_error is None
    assert pi.next_action.type == "use_stripe_sdk" and pi.latest_charge is None
    redirect = create(c, kpid="kp-3ds-url", pm="pm_card_threeDSecure2Required",
                      error_on_requires_action=None, return_url="https://kiosk.example/back")
    assert redirect.next_action.type == "redirect_to_url"
    assert redirect.next_action.redirect_to_url.return_url == "https://kiosk.example/back"


# -- confirm, cancel, capture --------------------------------------------------------------------

def test_confirm_route(fake):
    c = client_for(fake)
    pi = create(c, kpid="kp-conf", confirm=None, error_on_requires_action=None)
    assert pi.status == "requires_confirmation" and pi.latest_charge is None
    done = c.v1.payment_intents.confirm(
        pi.id, params={"error_on_requires_action": True}, options={"idempotency_key": "idem-c1"})
    assert done.status == "succeeded" and done.latest_charge.startswith("ch_")
    assert done.amount_received == 1250
    with pytest.raises(stripe.InvalidRequestError) as ei:
        c.v1.payment_intents.confirm(pi.id, options={"idempotency_key": "idem-c2"})
    e = ei.value
    assert e.code == "payment_intent_unexpected_state"
    assert "already succeeded" in e.user_message
    assert e.error.payment_intent.id == pi.id and e.error.payment_intent.status == "succeeded"
    with pytest.raises(stripe.InvalidRequestError) as again:   # came from execution: saved
        c.v1.payment_intents.confirm(pi.id, options={"idempotency_key": "idem-c2"})
    assert again.value.headers["Idempotent-Replayed"] == "true"
    with pytest.raises(stripe.InvalidRequestError) as missing:
        c.v1.payment_intents.confirm("pi_missing")
    assert missing.value.http_status == 404 and missing.value.code == "resource_missing"


def test_confirm_after_a_decline_makes_a_new_charge(fake):
    c = client_for(fake)
    with pytest.raises(stripe.CardError) as ei:
        create(c, kpid="kp-retry", pm="pm_card_chargeDeclinedInsufficientFunds")
    first = ei.value.error.payment_intent
    again = c.v1.payment_intents.confirm(first.id, params={
        "payment_method": "pm_card_mastercard", "error_on_requires_action": True})
    assert again.status == "succeeded" and again.payment_method == "pm_card_mastercard"
    assert again.latest_charge != first.latest_charge and again.last_payment_error is None
    assert again.payment_method_types == ["card"]        # the create's allowed types still apply
    charge = c.v1.payment_intents.retrieve(
        again.id, params={"expand": ["latest_charge"]}).latest_charge
    assert charge.paid is True and charge.payment_method_details.card.brand == "mastercard"


def test_confirm_without_payment_method_is_unexpected_state(fake):
    c = client_for(fake)
    pi = create(c, kpid="kp-nopm", pm=None, confirm=None, error_on_requires_action=None)
    with pytest.raises(stripe.InvalidRequestError) as ei:
        c.v1.payment_intents.confirm(pi.id)
    assert ei.value.code == "payment_intent_unexpected_state"
    assert ei.value.param == "payment_method"


def test_cancel_route(fake):
    c = client_for(fake)
    fake.clock = lambda: 1_750_000_000
    with pytest.raises(stripe.CardError) as ei:
        create(c, kpid="kp-cancel", pm="pm_card_chargeDeclined")
    pi_id = ei.value.error.payment_intent.id
    canceled = c.v1.payment_intents.cancel(pi_id, params={"cancellation_reason": "abandoned"},
                                           options={"idempotency_key": "idem-cancel"})
    assert canceled.status == "canceled" and canceled.canceled_at == 1_750_000_000
    assert canceled.cancellation_reason == "abandoned"
    with pytest.raises(stripe.InvalidRequestError) as again:
        c.v1.payment_intents.cancel(pi_id)
    assert again.value.code == "payment_intent_unexpected_state"
    assert "status of canceled" in again.value.user_message
    with pytest.raises(stripe.InvalidRequestError) as bad:
        c.v1.payment_intents.cancel(pi_id, params={"cancellation_reason": "bored"})
    assert bad.value.param == "cancellation_reason" and fake.breaches[-1]["code"] == \
        "parameter_invalid_enum"
    with pytest.raises(stripe.InvalidRequestError) as done:
        c.v1.payment_intents.cancel(create(c, kpid="kp-cancel-ok").id)
    assert "status of succeeded" in done.value.user_message


def test_cancel_an_authorization_releases_it(fake):
    c = client_for(fake)
    held = create(c, kpid="kp-auth-cancel", capture_method="manual")
    canceled = c.v1.payment_intents.cancel(held.id, params={"expand": ["latest_charge"]})
    assert canceled.status == "canceled" and canceled.amount_capturable == 0
    assert canceled.latest_charge.refunded is True and canceled.latest_charge.captured is False


def test_capture_route(fake):
    c = client_for(fake)
    held = create(c, kpid="kp-cap", capture_method="manual")
    with pytest.raises(stripe.InvalidRequestError) as too_much:
        c.v1.payment_intents.capture(held.id, params={"amount_to_capture": 5000},
                                     options={"idempotency_key": "idem-cap"})
    assert too_much.value.param == "amount_to_capture"
    captured = c.v1.payment_intents.capture(held.id, params={"amount_to_capture": 1000},
                                            options={"idempotency_key": "idem-cap2"})
    assert captured.status == "succeeded" and captured.amount_received == 1000
    assert captured.amount_capturable == 0
    with pytest.raises(stripe.InvalidRequestError) as ei:
        c.v1.payment_intents.capture(held.id)
    assert ei.value.code == "payment_intent_unexpected_state"
    assert ei.value.user_message.startswith(
        "This PaymentIntent could not be captured because it has a status of succeeded.")


def test_idempotency_keys_apply_across_routes(fake):
    c = client_for(fake)
    pi = create(c, key="idem-shared", kpid="kp-shared", confirm=None,
                error_on_requires_action=None)
    with pytest.raises(stripe.IdempotencyError):
        c.v1.payment_intents.confirm(pi.id, options={"idempotency_key": "idem-shared"})
    assert c.v1.payment_intents.retrieve(pi.id).status == "requires_confirmation"


# -- scripted answers -----------------------------------------------------------------------------

def test_decline_next_with_advice_code(fake):
    fake.decline_next(2, code="card_declined", decline_code="try_again_later",
                      advice_code="try_again_later")
    c = client_for(fake)
    with pytest.raises(stripe.CardError) as ei:
        create(c, kpid="kp-dn")
    e = ei.value
    assert e.http_status == 402 and e.code == "card_declined"
    assert e.error.decline_code == "try_again_later" and e.error.advice_code == "try_again_later"
    assert e.user_message == "Your card was declined."
    pi = e.error.payment_intent
    assert pi.status == "requires_payment_method"
    assert pi.last_payment_error.advice_code == "try_again_later"
    with pytest.raises(stripe.CardError) as second:          # /confirm counts as an attempt
        c.v1.payment_intents.confirm(pi.id, params={"error_on_requires_action": True})
    assert second.value.error.charge != e.error.charge
    ok = c.v1.payment_intents.confirm(pi.id, params={"error_on_requires_action": True})
    assert ok.status == "succeeded"
    charge = c.v1.payment_intents.retrieve(
        pi.id, params={"expand": ["latest_charge"]}).latest_charge
    assert charge.outcome.type == "authorized"


def test_decline_next_uses_stripes_words(fake):
    fake.decline_next(code="card_declined", decline_code="insufficient_funds",
                      advice_code="do_not_try_again")
    with pytest.raises(stripe.CardError) as ei:
        create(client_for(fake), kpid="kp-dn2")
    assert ei.value.user_message == "Your card has insufficient funds."
    assert ei.value.error.advice_code == "do_not_try_again"
    fake.decline_next(code="expired_card", decline_code="expired_card")
    with pytest.raises(stripe.CardError) as expired:
        create(client_for(fake), kpid="kp-dn3")
    assert expired.value.param == "exp_month" and expired.value.error.advice_code is None


@pytest.mark.parametrize("status", LEAVE_STATUSES)
def test_leave_next(fake, status):
    fake.leave_next(1, status)
    c = client_for(fake)
    pi = create(c, kpid=f"kp-leave-{status}", capture_method="manual"
                if status == "requires_capture" else None)
    assert pi.status == status and pi.last_payment_error is None
    assert pi.last_response.code == 200
    if status == "requires_action":     # even though error_on_requires_action was sent
        assert pi.next_action.type == "use_stripe_sdk"
    else:
        assert pi.next_action is None
    if status in ("processing", "requires_capture"):
        charge = c.v1.payment_intents.retrieve(
            pi.id, params={"expand": ["latest_charge"]}).latest_charge
        assert charge.status == ("pending" if status == "processing" else "succeeded")
        assert charge.captured is False
    if status == "requires_capture":
        assert pi.amount_capturable == 1250
    assert pi.amount_received == 0
    assert create(c, kpid="kp-after-leave").status == "succeeded"    # only n attempts


def test_leave_next_rejects_other_statuses(fake):
    with pytest.raises(ValueError):
        fake.leave_next(1, "succeeded")


def test_set_status_settles_processing(fake):
    c = client_for(fake)
    fake.leave_next(2, "processing")
    won = create(c, kpid="kp-settle")
    lost = create(c, kpid="kp-fail")
    fake.set_status(won.id, "succeeded")
    fake.set_status(lost.id, "requires_payment_method")
    got = c.v1.payment_intents.retrieve(won.id, params={"expand": ["latest_charge"]})
    assert got.status == "succeeded" and got.amount_received == 1250
    assert got.latest_charge.status == "succeeded" and got.latest_charge.captured is True
    failed = c.v1.payment_intents.retrieve(lost.id)
    assert failed.status == "requires_payment_method"
    assert failed.last_payment_error.code == "card_declined"


def test_set_status_canceled_in_the_dashboard(fake):
    c = client_for(fake)
    fake.clock = lambda: 1_760_000_000
    pi = create(c, kpid="kp-dash", confirm=None, error_on_requires_action=None)
    fake.set_status(pi.id, "canceled")
    got = c.v1.payment_intents.retrieve(pi.id)
    assert got.status == "canceled" and got.canceled_at == 1_760_000_000
    assert got.cancellation_reason is None
    with pytest.raises(stripe.InvalidRequestError) as ei:
        c.v1.payment_intents.confirm(pi.id)
    assert ei.value.code == "payment_intent_unexpected_state"
    with pytest.raises(KeyError):
        fake.set_status("pi_missing", "succeeded")
    with pytest.raises(ValueError):
        fake.set_status(pi.id, "done")


def test_fail_next_429_lock_timeout(fake):
    fake.fail_next(1, 429, code="lock_timeout")
    with pytest.raises(stripe.RateLimitError) as ei:
        create(client_for(fake, retries=0), key="idem-lock", kpid="kp-lock")
    e = ei.value
    assert e.http_status == 429 and e.error.code == "lock_timeout"
    assert e.error.type == "invalid_request_error"
    assert e.headers["Stripe-Should-Retry"] == "true"
    assert fake.payment_intents == []
    # stripe-python follows Stripe-Should-Retry: with retries on, it resends by itself
    fake.fail_next(1, 429, code="lock_timeout")
    pi = create(client_for(fake, retries=2), key="idem-lock", kpid="kp-lock")
    assert pi.status == "succeeded"
    assert [r["status"] for r in fake.requests] == [429, 429, 200]


def test_fail_next_keeps_the_409_body(fake):
    fake.fail_next(1, 409)
    with pytest.raises(stripe.APIError) as ei:      # stripe-python's class for a 409
        create(client_for(fake, retries=0))
    assert ei.value.http_status == 409 and ei.value.error.code == "lock_timeout"
    assert "another API request" in ei.value.user_message


def test_slow_next_delays_any_route(fake):
    c = client_for(fake)
    fake.slow_next(2, 0.4)
    t0 = time.monotonic()
    assert c.v1.payment_intents.list().data == []
    pi = create(c, kpid="kp-slow")
    assert time.monotonic() - t0 >= 0.8 and pi.status == "succeeded"
    t1 = time.monotonic()
    c.v1.payment_intents.list()
    assert time.monotonic() - t1 < 0.4
    assert [r["fault"] for r in fake.requests] == ["slow", "slow", None]


def test_slow_next_processes_after_the_wait(fake):
    """Unlike hang_next nothing is committed first: a client that gave up
    does not know, and the request is still processed when the wait ends."""
    fake.slow_next(1, 0.6)
    c = client_for(fake, http_client=stripe.RequestsClient(timeout=0.2))
    with pytest.raises(stripe.APIConnectionError):
        create(c, key="idem-slow", kpid="kp-slow2")
    assert fake.intents_for("kp-slow2") == []
    deadline = time.monotonic() + 3
    while not fake.intents_for("kp-slow2") and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(fake.intents_for("kp-slow2")) == 1
    again = create(client_for(fake), key="idem-slow", kpid="kp-slow2")
    assert again.last_response.headers["Idempotent-Replayed"] == "true"
