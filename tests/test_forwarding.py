"""Forwarding stored payments to Stripe exactly once, through every outcome.

Against our own fake Stripe on 127.0.0.1: real decline codes, idempotent
replay, 429/500, dropped responses after the charge committed, pruned keys.
"""
from __future__ import annotations

import pytest
from urllib.parse import unquote

from kiosk.local_time import shown_time
from kiosk.payment import FAILED, FORWARDING, PENDING, SUCCEEDED

from conftest import write_config


def offline_kiosk(tmp_path, fake_stripe, open_kiosk, **sections):
    sections.setdefault("kiosk", {"offline_behavior": "force_offline"})
    return open_kiosk(write_config(tmp_path, fake_stripe.url, **sections))


def sell(kiosk, *cards, amount=1000, customer=None):
    return [kiosk.take_sale(amount, card=card, customer=customer).payment for card in cards]


def test_forwarded_payments_succeed_once_with_a_notice_each(tmp_path, fake_stripe, open_kiosk):
    kiosk = offline_kiosk(tmp_path, fake_stripe, open_kiosk)
    payments = sell(kiosk, "visa", "mastercard", "amex")
    report = kiosk.forward()
    assert (report.reached, report.succeeded, report.failed, report.pending) == (True, 3, 0, 0)
    for payment in payments:
        stored = kiosk.store.get(payment.id)
        [intent] = fake_stripe.intents_for(payment.id)
        assert stored.state == SUCCEEDED and stored.payment_intent == intent["id"]
        assert intent["metadata"]["offline_stored_at"] == payment.created_at
        assert intent["payment_method"] == payment.token
    forwarded = [n for n in kiosk.store.notices() if n["kind"] == "forwarded"]
    assert len(forwarded) == 3 and all("settled as pi_" in n["message"] for n in forwarded)
    assert kiosk.store.live() == [] and kiosk.store.get_meta("offline_forwarded") == 3
    assert kiosk.forward().succeeded == 0 and len(fake_stripe.payment_intents) == 3


@pytest.mark.parametrize("card, code, words", [
    ("insufficient_funds", "insufficient_funds", "insufficient funds"),
    ("expired_card", "expired_card", "expired"),
    ("declined", "generic_decline", "declined"),
])
def test_declines_fail_with_code_and_a_detailed_notice(tmp_path, fake_stripe, open_kiosk, card, code, words):
    kiosk = offline_kiosk(tmp_path, fake_stripe, open_kiosk)
    [payment] = sell(kiosk, card, customer="+44 20 7946 0958")
    report = kiosk.forward()
    assert report.failed == 1
    stored = kiosk.store.get(payment.id)
    assert stored.state == FAILED and stored.decline_code == code and words in stored.message.lower()
    assert stored.payment_intent == fake_stripe.intents_for(payment.id)[0]["id"]
    [notice] = [n for n in kiosk.store.notices() if n["kind"] == "declined"]
    assert notice["level"] == "error"
    taken = shown_time(payment.created_at, kiosk.zone)       # in the kiosk's zone, as the vendor reads it
    for detail in (code, "$10.00", payment.card.last4, "+44 20 7946 0958", taken):
        assert detail in notice["message"]
    assert kiosk.store.get_meta("offline_declined") == 1


def test_a_token_stripe_does_not_know_is_kept_not_failed(tmp_path, fake_stripe, open_kiosk):
    """Stripe's 400 about the kiosk's own request is never the customer's
    decline: the sale stays, the vendor is alarmed once."""
    kiosk = offline_kiosk(tmp_path, fake_stripe, open_kiosk)
    payments = sell(kiosk, "visa", "visa")
    for payment in payments:
        stored = kiosk.store.get(payment.id)
        stored.request = dict(stored.request, payment_method="pm_nonexistent")
        kiosk.store.save(stored)
    report = kiosk.forward()
    assert (report.succeeded, report.failed, report.pending) == (0, 0, 2)
    for payment in payments:
        kept = kiosk.store.get(payment.id)
        assert kept.state == PENDING and "No such PaymentMethod" in kept.message
    alarms = [n for n in kiosk.store.notices() if n["kind"] == "needs_update"]
    assert len(alarms) == 1 and "No such PaymentMethod" in alarms[0]["message"]
    assert fake_stripe.payment_intents == [] and kiosk.store.get_meta("last_sync_at") is None


def test_rejected_key_stops_forwarding_keeps_queue_and_alerts(tmp_path, fake_stripe, open_kiosk):
    kiosk = offline_kiosk(tmp_path, fake_stripe, open_kiosk, stripe={"concurrency": 1})
    sell(kiosk, "visa", "visa", "visa")
    fake_stripe.reject_api_keys(True)
    report = kiosk.forward()
    assert report.reached and report.auth_error and report.succeeded == 0
    assert len(kiosk.store.live()) == 3 and all(p.state == PENDING for p in kiosk.store.live())
    # the online check saw the rejection: no payment was even tried
    assert [r for r in fake_stripe.requests if r["method"] == "POST"] == []
    assert kiosk.store.notices()[-1]["kind"] == "auth_failed"
    kiosk.forward()
    assert [n["kind"] for n in kiosk.store.notices()].count("auth_failed") == 1   # once per outage
    assert kiosk.store.get_meta("last_sync_at") is None      # a rejected key is not a sync
    fake_stripe.reject_api_keys(False)
    assert kiosk.forward().succeeded == 3 and len(fake_stripe.payment_intents) == 3


@pytest.mark.parametrize("status, code", [(429, None), (429, "lock_timeout"), (409, None), (500, None),
                                          (503, None)])
def test_transient_errors_stay_pending_with_backoff_then_succeed(tmp_path, fake_stripe, open_kiosk, status, code):
    kiosk = offline_kiosk(tmp_path, fake_stripe, open_kiosk, sync={"retry_base_seconds": 60.0})
    [payment] = sell(kiosk, "visa")
    fake_stripe.fail_next(1, status, code=code)
    outcome = kiosk.forward_one(kiosk.store.get(payment.id))
    assert outcome.kind == "retry"
    waiting = kiosk.store.get(payment.id)
    assert waiting.state == PENDING and waiting.attempts == 1 and waiting.next_attempt_at > waiting.last_attempt_at
    assert kiosk.forward(force=False).succeeded == 0        # backing off
    assert kiosk.forward(force=True).succeeded == 1         # "sync now"
    assert len(fake_stripe.intents_for(payment.id)) == 1


def test_lost_response_is_looked_up_not_charged_again(tmp_path, fake_stripe, open_kiosk):
    kiosk = offline_kiosk(tmp_path, fake_stripe, open_kiosk)
    [payment] = sell(kiosk, "visa")
    fake_stripe.drop_next(1)            # Stripe charges, the answer never arrives
    kiosk.forward()
    assert kiosk.store.get(payment.id).state == PENDING
    fake_stripe.prune_idempotency_keys()  # and the key is gone too (after 24 h)
    kiosk.forward()
    settled = kiosk.store.get(payment.id)
    [intent] = fake_stripe.intents_for(payment.id)
    assert settled.state == SUCCEEDED and settled.payment_intent == intent["id"]
    lookups = [r for r in fake_stripe.requests if r["method"] == "GET" and r["path"] == "/v1/payment_intents"
               and "created[gte]" in unquote(r.get("query") or "")]
    assert lookups, "the second attempt must look the payment up first"


def test_lost_decline_is_adopted_from_the_lookup(tmp_path, fake_stripe, open_kiosk):
    kiosk = offline_kiosk(tmp_path, fake_stripe, open_kiosk)
    [payment] = sell(kiosk, "insufficient_funds")
    fake_stripe.drop_next(1)
    kiosk.forward()
    fake_stripe.prune_idempotency_keys()
    kiosk.forward()
    settled = kiosk.store.get(payment.id)
    assert settled.state == FAILED and settled.decline_code == "insufficient_funds"
    assert len(fake_stripe.intents_for(payment.id)) == 1


def test_unknown_outcome_with_nothing_at_stripe_is_sent_with_the_same_key(tmp_path, fake_stripe, open_kiosk):
    kiosk = offline_kiosk(tmp_path, fake_stripe, open_kiosk)
    [payment] = sell(kiosk, "visa")
    stored = kiosk.store.get(payment.id)
    stored.state, stored.attempts = FORWARDING, 1     # as a crash before the request left would leave it
    kiosk.store.save(stored)
    kiosk.forward()
    assert kiosk.store.get(payment.id).state == SUCCEEDED
    keys = {r["idempotency_key"] for r in fake_stripe.requests if r["method"] == "POST"}
    assert keys == {f"kiosk-{payment.id}"}


def test_forwarding_stays_under_stripe_rate_limit(tmp_path, fake_stripe, open_kiosk):
    kiosk = offline_kiosk(tmp_path, fake_stripe, open_kiosk, limits={"max_pending": 100, "total": 10000.0},
                          stripe={"concurrency": 8})
    sell(kiosk, *["visa"] * 45)
    report = kiosk.forward()
    assert report.succeeded == 45
    assert fake_stripe.max_requests_per_second <= 25
    assert all(r["status"] != 429 for r in fake_stripe.requests)


def test_unreachable_stripe_changes_nothing(tmp_path, fake_stripe, open_kiosk):
    kiosk = offline_kiosk(tmp_path, fake_stripe, open_kiosk)
    [payment] = sell(kiosk, "visa")
    fake_stripe.set_offline(True)
    report = kiosk.forward()
    assert not report.reached and report.pending == 1
    assert kiosk.store.get(payment.id).attempts == 0


def test_background_loop_forwards_when_stripe_comes_back(tmp_path, fake_stripe, open_kiosk):
    import threading
    kiosk = offline_kiosk(tmp_path, fake_stripe, open_kiosk, sync={"poll_seconds": 0.05})
    fake_stripe.set_offline(True)
    sell(kiosk, "visa", "visa")
    stop = threading.Event()
    worker = threading.Thread(target=kiosk.run_background, args=(stop,))
    worker.start()
    try:
        fake_stripe.set_offline(False)
        for _ in range(200):
            if not kiosk.store.live():
                break
            stop.wait(0.05)
    finally:
        stop.set()
        kiosk.wake.set()
        worker.join(10)
    assert kiosk.store.live() == [] and len(fake_stripe.payment_intents) == 2


def test_key_rejected_mid_pass_stops_the_pass(tmp_path, fake_stripe, open_kiosk):
    kiosk = offline_kiosk(tmp_path, fake_stripe, open_kiosk, stripe={"concurrency": 1})
    sell(kiosk, "visa", "visa", "visa")
    kiosk.check_online()
    fake_stripe.reject_api_keys(True)
    outcome = kiosk.forward_one(kiosk.store.live()[0])
    assert outcome.kind == "auth_error" and kiosk.store.live()[0].state == PENDING
    assert [r for r in fake_stripe.requests if r["method"] == "POST"][0]["status"] == 401


def test_failed_attempts_do_not_count_as_a_sync(tmp_path, fake_stripe, open_kiosk):
    kiosk = offline_kiosk(tmp_path, fake_stripe, open_kiosk)
    sell(kiosk, "visa")
    fake_stripe.drop_next(1)                 # Stripe reached, but no answer to the payment
    report = kiosk.forward()
    assert report.pending == 1 and kiosk.store.get_meta("last_sync_at") is None
    assert kiosk.forward().succeeded == 1 and kiosk.store.get_meta("last_sync_at")


def test_lookup_uses_stripes_clock_not_the_kiosks(tmp_path, fake_stripe, open_kiosk):
    """A Raspberry Pi has no real-time clock: with the kiosk 3 hours fast, a
    lost answer after Stripe pruned the key must still be found."""
    from kiosk.payment import utcnow
    from datetime import timedelta
    kiosk = offline_kiosk(tmp_path, fake_stripe, open_kiosk)
    kiosk.clock = lambda: utcnow() + timedelta(hours=3)
    [payment] = sell(kiosk, "visa")
    kiosk.check_online()                 # learns Stripe's clock from the Date header
    fake_stripe.drop_next(1)
    kiosk.forward()
    fake_stripe.prune_idempotency_keys()
    kiosk.forward()
    assert kiosk.store.get(payment.id).state == SUCCEEDED
    assert len(fake_stripe.intents_for(payment.id)) == 1


def test_online_sale_and_background_forwarding_never_collide(tmp_path, fake_stripe, open_kiosk):
    """The background loop may pick up a just-stored online sale; the sale
    waits for that attempt and reports what Stripe said."""
    import threading
    from kiosk.hookspecs import hookimpl
    from kiosk.boot import load_host
    kiosk_ref = {}
    results = []

    class Meddler:
        @hookimpl
        def kiosk_payment_changed(self, payment, previous_state):
            if previous_state is None:            # just stored, before the sale sends it
                worker = threading.Thread(target=lambda: results.append(kiosk_ref["k"].forward()))
                worker.start()
                worker.join()
    host = load_host()
    host.register(Meddler(), "meddler")
    kiosk = open_kiosk(write_config(tmp_path, fake_stripe.url), host=host)
    kiosk_ref["k"] = kiosk
    result = kiosk.take_sale(1000, card="insufficient_funds")
    assert results and results[0].failed == 1
    assert result.status == "declined" and result.payment.decline_code == "insufficient_funds"
    assert len(fake_stripe.intents_for(result.payment.id)) == 1
