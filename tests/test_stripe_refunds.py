"""Refunds through the Stripe sync plugin: refund records (``Payment.refund_of``)
prepared, sent, looked up and reconciled by real stripe-python over HTTP to the
strict fake, which checks every request against the generated
``RefundCreateParams`` of API version 2026-10-28.endive and refuses what Stripe
refuses (more than is left, an already refunded or uncharged sale)."""
from __future__ import annotations

import sys
import typing

import pytest
import stripe
from stripe.params import RefundCreateParams
from typing_extensions import Literal

from kiosk import to_stripe_amount
from kiosk.payment import Card, Payment, iso, new_payment_id, utcnow
from kiosk.testing.fake_stripe import FakeStripe
from kiosk_builtins.stripe_sync import SETTINGS, StripeForwarder
from kiosk_builtins.stripe_sync.request import API_VERSION

from conftest import write_config


def forwarder(fake, **settings) -> StripeForwarder:
    values = {name: setting.default for name, setting in SETTINGS["stripe"].items()}
    values.update(api_base=fake.url, **settings)
    return StripeForwarder(values, "kiosk-test")


def prepared(fw, payment: Payment) -> Payment:
    request = fw.prepare(payment)
    payment.idempotency_key, payment.request = request.idempotency_key, request.params
    return payment


def charged_sale(fw, amount=1250, currency="usd", token="pm_card_visa") -> Payment:
    sale = prepared(fw, Payment(id=new_payment_id(), amount=amount, currency=currency,
                                created_at=iso(utcnow()), offline=True, card=Card("visa", "4242", 12, 2030),
                                token=token, reader="test"))
    outcome = fw.send(sale)
    sale.payment_intent = outcome.payment_intent
    if token == "pm_card_visa":
        assert outcome.kind == "succeeded", outcome
    return sale


def refund_record(fw, sale: Payment, amount: int) -> Payment:
    """A refund record as the core builds it: its own id, the sale's PaymentIntent."""
    return prepared(fw, Payment(id=new_payment_id(), amount=amount, currency=sale.currency,
                                created_at=iso(utcnow()), offline=False, card=sale.card, token="",
                                reader=sale.reader, refund_of=sale.id, payment_intent=sale.payment_intent))


def refund_posts(fake):
    return [r for r in fake.requests if r["method"] == "POST" and r["path"] == "/v1/refunds"]


# -- the request -------------------------------------------------------------------

def test_a_refund_request_is_the_sales_payment_intent_under_the_records_own_key(fake_stripe):
    fw = forwarder(fake_stripe)
    sale = charged_sale(fw)
    refund = refund_record(fw, sale, 500)
    assert refund.idempotency_key == f"kiosk-{refund.id}" != sale.idempotency_key
    assert refund.request == {
        "payment_intent": sale.payment_intent, "amount": 500, "reason": "requested_by_customer",
        "metadata": {"kiosk_payment_id": refund.id, "kiosk_refund_of": sale.id, "kiosk_id": "kiosk-test"}}
    # every parameter is one the generated types of this API version have, with its type
    annotations = RefundCreateParams.__annotations__
    assert set(refund.request) <= set(annotations) - {"idempotency_key", "api_key"}
    [reason] = typing.get_args(annotations["reason"])           # NotRequired["Literal[...]|str"]
    module = vars(sys.modules[RefundCreateParams.__module__])
    reasons = {value for arg in typing.get_args(eval(reason.__forward_arg__, module))
               if typing.get_origin(arg) is Literal for value in typing.get_args(arg)}
    assert refund.request["reason"] in reasons == {"duplicate", "fraudulent", "requested_by_customer"}
    assert fw.refunds is True and fw.upgrade(refund) is None


def test_a_refund_in_yen_is_sent_in_stripes_units(fake_stripe):
    fw = forwarder(fake_stripe)
    sale = charged_sale(fw, amount=1200, currency="jpy")
    refund = refund_record(fw, sale, 300)
    assert refund.request["amount"] == to_stripe_amount(300, "jpy") == 300
    assert fw.send(refund).kind == "succeeded"
    assert fake_stripe.charge_of(sale.payment_intent)["amount_refunded"] == 300


def test_a_refund_record_without_the_sales_payment_intent_is_not_prepared(fake_stripe):
    fw = forwarder(fake_stripe)
    sale = charged_sale(fw)
    sale.payment_intent = None
    with pytest.raises(ValueError, match="no PaymentIntent"):
        refund_record(fw, sale, 100)


# -- answers -----------------------------------------------------------------------

def test_a_full_refund(fake_stripe):
    fw = forwarder(fake_stripe)
    sale = charged_sale(fw, amount=1250)
    refund = refund_record(fw, sale, 1250)
    outcome = fw.send(refund)
    [held] = fake_stripe.refunds_for(refund.id)
    assert (outcome.kind, outcome.refund, outcome.payment_intent) == ("succeeded", held["id"], sale.payment_intent)
    assert held["amount"] == 1250 and held["status"] == "succeeded" and held["reason"] == "requested_by_customer"
    assert held["metadata"] == {"kiosk_payment_id": refund.id, "kiosk_refund_of": sale.id, "kiosk_id": "kiosk-test"}
    charge = fake_stripe.charge_of(sale.payment_intent)
    assert charge["amount_refunded"] == 1250 and charge["refunded"] is True


def test_partial_refunds_then_nothing_left_is_refused_naming_why(fake_stripe):
    fw = forwarder(fake_stripe)
    sale = charged_sale(fw, amount=1250)
    first, rest, more = (refund_record(fw, sale, a) for a in (400, 850, 100))
    assert fw.send(first).kind == "succeeded"
    assert fake_stripe.charge_of(sale.payment_intent)["refunded"] is False
    assert fw.send(rest).kind == "succeeded"
    outcome = fw.send(more)
    assert outcome.kind == "refused" and outcome.decline_code == "charge_already_refunded"
    assert "has already been refunded" in outcome.message and outcome.refund is None
    assert [r["amount"] for r in fake_stripe.refunds] == [400, 850]
    assert fake_stripe.charge_of(sale.payment_intent)["amount_refunded"] == 1250


def test_more_than_is_left_is_refused_not_rejected_as_a_kiosk_bug(fake_stripe):
    fw = forwarder(fake_stripe)
    sale = charged_sale(fw, amount=1000)
    assert fw.send(refund_record(fw, sale, 400)).kind == "succeeded"
    outcome = fw.send(refund_record(fw, sale, 700))
    assert outcome.kind == "refused" and outcome.decline_code == "amount_too_large"
    assert outcome.message == ("Stripe refused the refund: Refund amount ($7.00) is greater than "
                               "unrefunded amount on charge ($6.00)")
    assert fake_stripe.charge_of(sale.payment_intent)["amount_refunded"] == 400
    # before any refund Stripe names the charge amount
    other = charged_sale(fw, amount=1000)
    outcome = fw.send(refund_record(fw, other, 1001))
    assert outcome.kind == "refused" and "greater than charge amount ($10.00)" in outcome.message


def test_a_sale_stripe_never_charged_cannot_be_refunded(fake_stripe):
    fw = forwarder(fake_stripe)
    sale = charged_sale(fw, token="pm_card_chargeDeclined")
    assert sale.payment_intent and fake_stripe.charge_of(sale.payment_intent)["status"] == "failed"
    outcome = fw.send(refund_record(fw, sale, 500))
    assert outcome.kind == "refused"
    assert f"This PaymentIntent ({sale.payment_intent}) does not have a successful charge" in outcome.message
    assert fake_stripe.refunds == []


def test_a_pending_refund_is_accepted_but_not_final_until_stripe_says(fake_stripe):
    """Pending can still fail at the card network: not "succeeded" yet, but Stripe's refund
    id is kept, so every later step only looks it up, by that id."""
    fw = forwarder(fake_stripe)
    sale = charged_sale(fw)
    fake_stripe.leave_refund_next(1, "pending")
    refund = refund_record(fw, sale, 500)
    outcome = fw.send(refund)
    assert outcome.kind == "retry" and outcome.refund and "pending" in outcome.message
    refund.refund_id = outcome.refund
    assert fw.lookup(refund).kind == "retry"
    fake_stripe.set_refund_status(refund.refund_id, "succeeded")
    assert (fw.send(refund).kind, len(fake_stripe.refunds)) == ("succeeded", 1)


def test_a_refund_that_fails_later_is_refused_with_stripes_reason_and_the_money_is_refundable_again(fake_stripe):
    fw = forwarder(fake_stripe)
    sale = charged_sale(fw, amount=1000)
    refund = refund_record(fw, sale, 1000)
    refund.refund_id = fw.send(refund).refund
    fake_stripe.set_refund_status(refund.refund_id, "failed", failure_reason="expired_or_canceled_card")
    outcome = fw.lookup(refund)
    assert (outcome.kind, outcome.refund) == ("refused", refund.refund_id)
    assert "expired_or_canceled_card" in outcome.message
    assert fake_stripe.charge_of(sale.payment_intent)["amount_refunded"] == 0
    # a record Stripe named a refund for is never sent again, even after the key is forgotten
    fake_stripe.prune_idempotency_keys()
    assert fw.send(refund).kind == "refused" and len(fake_stripe.refunds) == 1
    assert fw.send(refund_record(fw, sale, 1000)).kind == "succeeded"


def test_a_refund_request_stripe_refuses_for_its_shape_is_a_kiosk_bug(fake_stripe):
    """A parameter this API version does not have: request_rejected (the vendor
    is alarmed), never "refused" -- nothing was refunded."""
    fake_stripe.allow_breaches = True
    fw = forwarder(fake_stripe)
    sale = charged_sale(fw)
    refund = refund_record(fw, sale, 500)
    refund.request = {**refund.request, "refund_reason": "changed mind"}
    outcome = fw.send(refund)
    assert outcome.kind == "request_rejected" and "parameter_unknown" in outcome.message
    assert [b["param"] for b in fake_stripe.breaches] == ["refund_reason"] and fake_stripe.refunds == []


# -- the fake holds Stripe's contract ------------------------------------------------

def test_the_fake_refuses_a_refund_parameter_the_endive_types_do_not_have(fake_stripe):
    fake_stripe.allow_breaches = True
    client = stripe.StripeClient("sk_test_x", base_addresses={"api": fake_stripe.url},
                                 stripe_version=API_VERSION, max_network_retries=0)
    pi = client.v1.payment_intents.create(params={
        "amount": 1000, "currency": "usd", "payment_method": "pm_card_visa", "confirm": True,
        "allowed_payment_method_types": ["card"]})
    for params, code in (({"receipt_email": "a@example.com"}, "parameter_unknown"),
                         ({"reason": "changed_mind"}, "parameter_invalid_enum"),
                         ({"amount": "ten"}, "parameter_invalid_integer")):
        with pytest.raises(stripe.InvalidRequestError) as refused:
            client.v1.refunds.create(params={"payment_intent": pi.id, **params})
        assert refused.value.http_status == 400 and refused.value.code == code
    assert [b["code"] for b in fake_stripe.breaches] == ["parameter_unknown", "parameter_invalid_enum",
                                                        "parameter_invalid_integer"]
    assert fake_stripe.refunds == []
    # the same request in the generated shape is taken
    taken = client.v1.refunds.create(params={"payment_intent": pi.id, "reason": "duplicate"})
    assert taken.amount == 1000 and len(fake_stripe.breaches) == 3
    # routes the fake does not answer are still checked against their types, then 404
    with pytest.raises(stripe.InvalidRequestError) as refused:
        client.v1.refunds.update(taken.id, params={"amount": 5})
    assert refused.value.code == "parameter_unknown" and len(fake_stripe.breaches) == 4
    with pytest.raises(stripe.InvalidRequestError) as unknown:
        client.v1.refunds.update(taken.id, params={"metadata": {"a": "b"}})
    assert unknown.value.http_status == 404 and len(fake_stripe.breaches) == 4


def test_the_fake_keeps_stripes_idempotency_rules_for_refunds(fake_stripe):
    client = stripe.StripeClient("sk_test_x", base_addresses={"api": fake_stripe.url},
                                 stripe_version=API_VERSION, max_network_retries=0)
    fw = forwarder(fake_stripe)
    sale = charged_sale(fw)
    params = {"payment_intent": sale.payment_intent, "amount": 300}
    first = client.v1.refunds.create(params=params, options={"idempotency_key": "k-1"})
    again = client.v1.refunds.create(params=params, options={"idempotency_key": "k-1"})
    assert again.id == first.id and again.last_response.headers["Idempotent-Replayed"] == "true"
    with pytest.raises(stripe.IdempotencyError):
        client.v1.refunds.create(params={**params, "amount": 301}, options={"idempotency_key": "k-1"})
    # the sale's own key on another path is another request
    with pytest.raises(stripe.IdempotencyError):
        client.v1.refunds.create(params=params, options={"idempotency_key": sale.idempotency_key})
    assert len(fake_stripe.refunds) == 1


# -- exactly once ------------------------------------------------------------------

def test_a_resend_is_replayed_never_refunded_twice(fake_stripe):
    fw = forwarder(fake_stripe)
    sale = charged_sale(fw, amount=1000)
    refund = refund_record(fw, sale, 600)
    first, again = fw.send(refund), fw.send(refund)
    assert first.kind == again.kind == "succeeded" and first.refund == again.refund
    assert [r["replayed"] for r in refund_posts(fake_stripe)] == [False, True]
    assert len(fake_stripe.refunds) == 1 and fake_stripe.charge_of(sale.payment_intent)["amount_refunded"] == 600


def test_a_lost_answer_is_found_by_lookup_and_nothing_is_refunded_twice(fake_stripe):
    fw = forwarder(fake_stripe, max_network_retries=0)
    sale = charged_sale(fw, amount=1000)
    refund = refund_record(fw, sale, 1000)
    fake_stripe.drop_next(1)
    lost = fw.send(refund)
    assert lost.kind == "retry" and lost.refund is None
    [held] = fake_stripe.refunds_for(refund.id)             # Stripe acted all the same
    fake_stripe.prune_idempotency_keys()                    # even once Stripe has forgotten the key
    found = fw.lookup(refund)
    assert (found.kind, found.refund, found.payment_intent) == ("succeeded", held["id"], sale.payment_intent)
    assert [r["path"] for r in fake_stripe.requests[-1:]] == ["/v1/refunds"]
    assert len(fake_stripe.refunds) == 1 and fake_stripe.charge_of(sale.payment_intent)["amount_refunded"] == 1000
    # by its id once known
    refund.refund_id = found.refund
    assert fw.lookup(refund).refund == held["id"]
    assert fake_stripe.requests[-1]["path"] == f"/v1/refunds/{held['id']}"


def test_an_answer_held_back_past_the_timeout_is_found_by_lookup(fake_stripe):
    """The fake's delay knobs apply to refunds: Stripe commits the refund, the
    kiosk gives up waiting, and the lookup finds what was done."""
    fw = forwarder(fake_stripe, max_network_retries=0, request_timeout=0.5)
    sale = charged_sale(fw, amount=1000)
    refund = refund_record(fw, sale, 250)
    fake_stripe.hang_next(1, 30.0)
    assert fw.send(refund).kind == "retry"
    [held] = fake_stripe.refunds_for(refund.id)
    assert fw.lookup(refund).refund == held["id"] and len(fake_stripe.refunds) == 1


def test_a_refund_stripe_never_saw_is_not_found(fake_stripe):
    fw = forwarder(fake_stripe)
    sale = charged_sale(fw)
    assert fw.send(refund_record(fw, sale, 100)).kind == "succeeded"     # another refund of the same sale
    assert fw.lookup(refund_record(fw, sale, 100)).kind == "not_found"


def test_lookup_pages_through_a_sales_refunds():
    with FakeStripe(rate_limit=None) as fake:
        fw = forwarder(fake, max_requests_per_second=500.0)
        sale = charged_sale(fw, amount=200)
        refund = refund_record(fw, sale, 1)
        assert fw.send(refund).kind == "succeeded"              # the oldest: on the second page
        client = stripe.StripeClient("sk_test_x", base_addresses={"api": fake.url}, stripe_version=API_VERSION)
        for _ in range(100):
            client.v1.refunds.create(params={"payment_intent": sale.payment_intent, "amount": 1})
        found = fw.lookup(refund)
        assert found.kind == "succeeded" and found.refund == fake.refunds_for(refund.id)[0]["id"]
        lists = [r for r in fake.requests if r["method"] == "GET" and r["path"] == "/v1/refunds"]
        assert len(lists) == 2 and lists[1]["params"]["starting_after"]
        assert not fake.breaches


@pytest.mark.parametrize("status", [500, 503, 429])
def test_stripe_trouble_is_retried_later_without_a_refund(fake_stripe, status):
    fw = forwarder(fake_stripe, max_network_retries=0)
    sale = charged_sale(fw, amount=1000)
    refund = refund_record(fw, sale, 500)
    fake_stripe.fail_next(1, status)
    outcome = fw.send(refund)
    assert outcome.kind == "retry" and fake_stripe.refunds == []
    assert fw.send(refund).kind == "succeeded" and len(fake_stripe.refunds) == 1


def test_a_key_that_may_not_refund_keeps_the_refund_waiting_and_never_stops_the_sales(fake_stripe):
    """403 (a restricted key without Refunds: Write): the refund is tried again
    later, not an auth_error, which would stop every sale being forwarded."""
    fw = forwarder(fake_stripe, max_network_retries=0)
    sale = charged_sale(fw, amount=1000)
    refund = refund_record(fw, sale, 500)
    fake_stripe.fail_next(1, 403)
    outcome = fw.send(refund)
    assert outcome.kind == "retry" and "Refunds: Write" in outcome.message and fake_stripe.refunds == []
    fake_stripe.fail_next(1, 403)
    assert fw.lookup(refund).kind == "retry"
    fake_stripe.fail_next(1, 403)
    assert fw.reconcile([refund]) == set()
    assert fw.send(refund).kind == "succeeded"


def test_stripe_python_retries_a_500_itself_with_the_same_key(fake_stripe):
    fw = forwarder(fake_stripe)               # max_network_retries 2, as shipped
    sale = charged_sale(fw, amount=1000)
    refund = refund_record(fw, sale, 500)
    fake_stripe.fail_next(1, 500)
    assert fw.send(refund).kind == "succeeded"
    assert [r["idempotency_key"] for r in refund_posts(fake_stripe)] == [refund.idempotency_key] * 2
    assert len(fake_stripe.refunds) == 1


# -- restored data ---------------------------------------------------------------

def test_reconcile_finds_the_refunds_stripe_already_holds(fake_stripe):
    """A data directory restored from an older copy: refund records this kiosk
    'never sent', one of which Stripe holds (its key long forgotten)."""
    fw = forwarder(fake_stripe)
    sale, other = charged_sale(fw), charged_sale(fw)
    sent = refund_record(fw, sale, 300)
    assert fw.send(sent).kind == "succeeded"
    fake_stripe.prune_idempotency_keys()
    unsent = [refund_record(fw, sale, 200), refund_record(fw, other, 100), refund_record(fw, other, 50)]
    before = len(fake_stripe.requests)
    assert fw.reconcile([sent, *unsent]) == {sent.id}
    lists = [r for r in fake_stripe.requests[before:] if r["path"] == "/v1/refunds"]
    assert sorted(r["params"]["payment_intent"] for r in lists) == sorted([sale.payment_intent, other.payment_intent])


def test_reconcile_of_sales_and_refunds_together(fake_stripe):
    fw = forwarder(fake_stripe)
    sale = charged_sale(fw)
    refund = refund_record(fw, sale, 300)
    assert fw.send(refund).kind == "succeeded"
    assert fw.reconcile([sale, refund]) == {sale.id, refund.id}
    fake_stripe.fail_next(5, 500)
    assert forwarder(fake_stripe, max_network_retries=0).reconcile([refund]) is None


# -- through the kiosk ------------------------------------------------------------

def test_through_the_kiosk_a_refund_whose_answer_was_lost_is_found_once_stripe_forgot_the_key(
        tmp_path, fake_stripe, open_kiosk):
    """kiosk.refund (the core) over this plugin: Stripe refunds but the answer is
    lost; the next pass looks it up among the sale's refunds before any resend."""
    kiosk = open_kiosk(write_config(tmp_path, fake_stripe.url, sync={"retry_base_seconds": 0.0},
                                    stripe={"max_network_retries": 0}))
    sale = kiosk.take_sale(1250, "usd", card="visa").payment
    fake_stripe.drop_next(1)
    queued = kiosk.refund(sale.id, 500)
    assert queued.status == "refund_queued" and kiosk.store.get(queued.payment.id).state == "pending"
    fake_stripe.prune_idempotency_keys()
    assert kiosk.forward().succeeded == 1
    record = kiosk.store.get(queued.payment.id)
    [held] = fake_stripe.refunds_for(record.id)
    assert record.state == "succeeded" and record.refund_id == held["id"]
    assert len(refund_posts(fake_stripe)) == 1
    assert fake_stripe.charge_of(sale.payment_intent)["amount_refunded"] == 500 == held["amount"]
