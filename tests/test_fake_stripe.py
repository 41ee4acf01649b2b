"""Tests for kiosk.fake_stripe, driven over HTTP by the real stripe-python client."""

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

from kiosk.fake_stripe import DECLINES, FakeStripe, parse_form

pytestmark = pytest.mark.timeout(30)

KEY = "sk_test_fake_4242"


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch):
    # stripe-python sleeps 0.5 s+ between retries; keep the suite quick.
    monkeypatch.setattr(HTTPClient, "INITIAL_DELAY", 0.01)
    monkeypatch.setattr(HTTPClient, "MAX_DELAY", 0.05)


@pytest.fixture
def fake():
    with FakeStripe(rate_limit=1000) as f:
        yield f


def client_for(fake, retries=0, key=KEY, **kw):
    return stripe.StripeClient(key, base_addresses={"api": fake.url},
                               max_network_retries=retries, **kw)


def params(kpid="kp-1", pm="pm_card_visa", amount=1250, currency="usd", **extra):
    p = {"amount": amount, "currency": currency, "payment_method": pm, "confirm": True,
         "payment_method_types": ["card"],
         "metadata": {"kiosk_payment_id": kpid, "kiosk_id": "kiosk-1"},
         "description": f"Kiosk sale {kpid}"}
    p.update(extra)
    return p


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
    pi = create(c, key="idem-ok", kpid="kp-ok")
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
    assert reqs[1]["method"] == "GET" and reqs[1]["status"] == 200


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
    pending = create(c, kpid="kp-unc", confirm=False)
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
    assert status == 404


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


def test_idempotent_replay_of_validation_error(fake):
    c = client_for(fake)
    for _ in range(2):
        with pytest.raises(stripe.InvalidRequestError) as ei:
            create(c, key="idem-bad", pm="pm_nonexistent")
    assert ei.value.headers.get("Idempotent-Replayed") == "true"
    assert fake.payment_intents == []


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
    p = {"amount": 500, "confirm": True, "payment_method_types": ["card", "link"],
         "metadata": {"0": "zero", "a b": "c&d=e"}, "created": {"gte": 5},
         "expand": ["latest_charge"]}
    got = parse_form(urllib.parse.urlencode(list(_api_encode(p))))
    assert got == {"amount": "500", "confirm": "true", "payment_method_types": ["card", "link"],
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
    proc = subprocess.Popen([sys.executable, "-m", "kiosk.fake_stripe", "--port", "0"],
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
