"""Every answer Stripe gives, through stripe-python over HTTP to the strict
fake (which refuses any request today's API refuses), and what the kiosk
does with it -- docs/stripe.md has the table this follows."""
from __future__ import annotations

import time

import pytest
import stripe

from kiosk.engine import APPROVED, APPROVED_OFFLINE, DECLINED
from kiosk.payment import FAILED, PENDING, SUCCEEDED
from kiosk_builtins.stripe_sync.request import API_VERSION

from conftest import write_config

NOW = {"decline_retry_minutes": [0.0, 0.0, 0.0, 0.0], "retry_base_seconds": 0.0}


def offline_kiosk(tmp_path, fake_stripe, open_kiosk, **sections):
    sections.setdefault("kiosk", {"offline_behavior": "force_offline"})
    sections.setdefault("sync", NOW)
    return open_kiosk(write_config(tmp_path, fake_stripe.url, **sections))


def sell(kiosk, card="visa", amount=1250, **kwargs):
    return kiosk.take_sale(amount, "usd", card=card, **kwargs).payment


def posts(fake, suffix=""):
    return [r for r in fake.requests if r["method"] == "POST" and r["path"].endswith(suffix)]


def notices_of(kiosk, kind):
    return [n for n in kiosk.store.notices() if n["kind"] == kind]


# -- the version ----------------------------------------------------------------

def test_the_kiosk_speaks_the_version_its_stripe_python_is_generated_for():
    assert API_VERSION == stripe._api_version._ApiVersion.CURRENT


def test_a_stripe_speaking_another_version_refuses_the_kiosk_which_keeps_its_sales(tmp_path, fake_stripe,
                                                                                  open_kiosk):
    """Stripe refusing the kiosk's own requests is not "offline" and not a
    decline: sales are stored offline and kept, and the vendor is told the
    kiosk needs an update."""
    fake_stripe.allow_breaches = True
    kiosk = open_kiosk(write_config(tmp_path, fake_stripe.url, sync=NOW))
    fake_stripe.api_version = "2026-09-30.endive"
    result = kiosk.take_sale(1250, "usd", card="visa", confirm=lambda offer: True)
    assert result.status == APPROVED_OFFLINE and fake_stripe.payment_intents == []
    assert fake_stripe.breaches and all(b["code"] for b in fake_stripe.breaches)
    [alarm] = notices_of(kiosk, "needs_update")
    assert "Stripe refused the kiosk's request" in alarm["message"]
    assert kiosk.forward().pending == 1
    fake_stripe.api_version = API_VERSION
    assert kiosk.forward().succeeded == 1 and len(fake_stripe.intents_for(result.payment.id)) == 1


# -- declines ----------------------------------------------------------------------

@pytest.mark.parametrize("decline", [
    {"decline_code": "issuer_not_available"},
    {"code": "processing_error", "decline_code": "processing_error"},
    {"decline_code": "try_again_later"},
    {"decline_code": "reenter_transaction"},
    {"decline_code": "generic_decline", "advice_code": "try_again_later"},
])
def test_a_decline_for_now_is_retried_on_the_same_payment_intent(tmp_path, fake_stripe, open_kiosk, decline):
    kiosk = offline_kiosk(tmp_path, fake_stripe, open_kiosk)
    payment = sell(kiosk, customer="ana@example.com")
    fake_stripe.decline_next(1, **decline)
    report = kiosk.forward()
    assert (report.succeeded, report.failed, report.pending) == (0, 0, 1)
    waiting = kiosk.store.get(payment.id)
    [intent] = fake_stripe.intents_for(payment.id)
    assert waiting.state == PENDING and waiting.soft_declines == 1 and waiting.payment_intent == intent["id"]
    [told] = notices_of(kiosk, "declined_for_now")
    assert decline["decline_code"] in told["message"] and "tries" in told["message"]
    assert notices_of(kiosk, "declined") == []

    assert kiosk.forward().succeeded == 1
    [intent] = fake_stripe.intents_for(payment.id)           # never a second PaymentIntent
    settled = kiosk.store.get(payment.id)
    assert settled.state == SUCCEEDED and settled.payment_intent == intent["id"] and intent["status"] == "succeeded"
    [confirm] = posts(fake_stripe, "/confirm")
    assert confirm["path"] == f"/v1/payment_intents/{intent['id']}/confirm"
    assert confirm["idempotency_key"] == f"kiosk-{payment.id}-confirm-1"      # retry round 1
    assert confirm["params"] == {"payment_method": "pm_card_visa", "error_on_requires_action": "true"}


def test_declines_for_now_are_retried_a_bounded_number_of_times(tmp_path, fake_stripe, open_kiosk):
    kiosk = offline_kiosk(tmp_path, fake_stripe, open_kiosk, sync={"decline_retry_minutes": [0.0, 0.0]})
    payment = sell(kiosk)
    fake_stripe.decline_next(10, decline_code="issuer_not_available")
    assert kiosk.forward().pending == 1
    assert kiosk.forward().pending == 1
    assert kiosk.forward().failed == 1
    failed = kiosk.store.get(payment.id)
    assert failed.state == FAILED and failed.decline_code == "issuer_not_available"
    assert "tried 3 times" in failed.message
    assert len(posts(fake_stripe)) == 3 and len(fake_stripe.intents_for(payment.id)) == 1
    assert kiosk.forward().succeeded == 0 and len(posts(fake_stripe)) == 3
    assert len(notices_of(kiosk, "declined")) == 1
    assert ["2 more tries" in n["message"] or "1 more try" in n["message"]
            for n in notices_of(kiosk, "declined_for_now")] == [True, True]
    assert "2 more tries" in notices_of(kiosk, "declined_for_now")[0]["message"]


def test_sync_now_never_retries_a_declined_card_before_its_wait(tmp_path, fake_stripe, open_kiosk):
    kiosk = offline_kiosk(tmp_path, fake_stripe, open_kiosk, sync={"decline_retry_minutes": [60.0]})
    payment = sell(kiosk)
    fake_stripe.decline_next(1, decline_code="try_again_later")
    kiosk.forward()
    assert kiosk.forward(force=True).pending == 1 and len(posts(fake_stripe)) == 1
    assert kiosk.store.get(payment.id).state == PENDING


@pytest.mark.parametrize("decline", [
    {"decline_code": "generic_decline", "advice_code": "do_not_try_again"},
    {"decline_code": "generic_decline", "advice_code": "confirm_card_data"},
    {"decline_code": "insufficient_funds", "advice_code": "try_again_later"},
    {"decline_code": "lost_card"},
    {"decline_code": "stolen_card", "advice_code": "try_again_later"},
    {"code": "expired_card", "decline_code": "expired_card"},
])
def test_a_final_decline_fails_at_once_with_its_reason(tmp_path, fake_stripe, open_kiosk, decline):
    kiosk = offline_kiosk(tmp_path, fake_stripe, open_kiosk)
    payment = sell(kiosk, customer="+44 20 7946 0958")
    fake_stripe.decline_next(1, **decline)
    assert kiosk.forward().failed == 1
    failed = kiosk.store.get(payment.id)
    assert failed.state == FAILED and failed.decline_code == decline["decline_code"]
    [told] = notices_of(kiosk, "declined")
    assert decline["decline_code"] in told["message"] and "+44 20 7946 0958" in told["message"]
    assert len(posts(fake_stripe)) == 1 and kiosk.forward().succeeded == 0 and len(posts(fake_stripe)) == 1


def test_an_online_sale_declined_for_now_is_declined_at_the_till(tmp_path, fake_stripe, open_kiosk):
    """The customer is there: they try again or use another card -- the kiosk
    must not also keep the sale and charge it later."""
    kiosk = open_kiosk(write_config(tmp_path, fake_stripe.url, sync=NOW))
    fake_stripe.decline_next(1, decline_code="issuer_not_available")
    result = kiosk.take_sale(1250, "usd", card="visa")
    assert result.status == DECLINED and kiosk.store.get(result.payment.id).state == FAILED
    assert kiosk.forward().succeeded == 0 and len(posts(fake_stripe)) == 1


# -- 3-D Secure --------------------------------------------------------------------

def test_a_card_asking_for_authentication_fails_with_error_on_requires_action(tmp_path, fake_stripe, open_kiosk):
    kiosk = offline_kiosk(tmp_path, fake_stripe, open_kiosk)
    payment = sell(kiosk, card="authentication_required", customer="ana@example.com")
    assert kiosk.forward().failed == 1
    failed = kiosk.store.get(payment.id)
    assert failed.decline_code == "authentication_required" and "another card" in failed.message
    [create] = posts(fake_stripe)
    assert create["params"]["error_on_requires_action"] == "true"
    [intent] = fake_stripe.intents_for(payment.id)
    assert intent["status"] == "requires_payment_method"


@pytest.mark.parametrize("offline", [True, False])
def test_requires_action_is_cancelled_at_stripe_never_left_hanging(tmp_path, fake_stripe, open_kiosk, offline):
    if offline:
        kiosk = offline_kiosk(tmp_path, fake_stripe, open_kiosk)
        payment = sell(kiosk)
        fake_stripe.leave_next(1, status="requires_action")
        assert kiosk.forward().failed == 1
    else:
        kiosk = open_kiosk(write_config(tmp_path, fake_stripe.url, sync=NOW))
        fake_stripe.leave_next(1, status="requires_action")
        result = kiosk.take_sale(1250, "usd", card="visa")
        assert result.status == DECLINED and "another card" in result.message
        payment = result.payment
    failed = kiosk.store.get(payment.id)
    assert failed.state == FAILED and failed.decline_code == "authentication_required"
    [intent] = fake_stripe.intents_for(payment.id)
    assert intent["status"] == "canceled" and failed.payment_intent == intent["id"]
    [cancel] = posts(fake_stripe, "/cancel")
    assert cancel["params"] == {"cancellation_reason": "abandoned"}


# -- PaymentIntents left in other states -------------------------------------------

def test_processing_is_looked_up_later_and_never_sent_again(tmp_path, fake_stripe, open_kiosk):
    kiosk = offline_kiosk(tmp_path, fake_stripe, open_kiosk)
    payment = sell(kiosk)
    fake_stripe.leave_next(1, status="processing")
    assert kiosk.forward().pending == 1
    [intent] = fake_stripe.intents_for(payment.id)
    assert kiosk.store.get(payment.id).payment_intent == intent["id"]
    assert kiosk.forward().pending == 1                        # still processing: only looked at
    fake_stripe.set_status(intent["id"], "succeeded")
    assert kiosk.forward().succeeded == 1
    assert len(posts(fake_stripe)) == 1 and len(fake_stripe.payment_intents) == 1
    assert notices_of(kiosk, "declined_for_now") == []


@pytest.mark.parametrize("status, step", [("requires_capture", "/capture"),
                                          ("requires_confirmation", "/confirm"),
                                          ("requires_payment_method", "/confirm")])
def test_an_unfinished_payment_intent_is_finished_not_duplicated(tmp_path, fake_stripe, open_kiosk, status, step):
    kiosk = offline_kiosk(tmp_path, fake_stripe, open_kiosk)
    payment = sell(kiosk)
    fake_stripe.leave_next(1, status=status)
    assert kiosk.forward().succeeded == 1
    [intent] = fake_stripe.intents_for(payment.id)
    assert intent["status"] == "succeeded" and kiosk.store.get(payment.id).payment_intent == intent["id"]
    [done] = posts(fake_stripe, step)
    assert done["path"] == f"/v1/payment_intents/{intent['id']}{step}"


def test_an_online_sale_left_for_capture_is_captured_and_approved(tmp_path, fake_stripe, open_kiosk):
    kiosk = open_kiosk(write_config(tmp_path, fake_stripe.url, sync=NOW))
    fake_stripe.leave_next(1, status="requires_capture")
    result = kiosk.take_sale(1250, "usd", card="visa")
    assert result.status == APPROVED
    [intent] = fake_stripe.intents_for(result.payment.id)
    assert intent["status"] == "succeeded" and intent["amount_received"] == 1250


def test_a_payment_cancelled_in_the_dashboard_fails_and_is_never_charged_again(tmp_path, fake_stripe, open_kiosk):
    kiosk = offline_kiosk(tmp_path, fake_stripe, open_kiosk)
    payment = sell(kiosk, customer="ana@example.com")
    fake_stripe.leave_next(1, status="processing")
    kiosk.forward()
    [intent] = fake_stripe.intents_for(payment.id)
    fake_stripe.set_status(intent["id"], "canceled")
    assert kiosk.forward().failed == 1
    failed = kiosk.store.get(payment.id)
    assert failed.state == FAILED and "cancelled at Stripe" in failed.message
    assert len(fake_stripe.payment_intents) == 1 and len(posts(fake_stripe)) == 1
    assert len(notices_of(kiosk, "declined")) == 1


def test_a_decline_whose_answer_was_lost_counts_but_is_retried_later(tmp_path, fake_stripe, open_kiosk):
    """The create's answer is lost; the lookup finds a declined-for-now
    PaymentIntent: the kiosk records the decline it never heard, and tries
    that PaymentIntent again, never a new one."""
    kiosk = offline_kiosk(tmp_path, fake_stripe, open_kiosk)
    payment = sell(kiosk)
    fake_stripe.decline_next(1, decline_code="issuer_not_available")
    fake_stripe.drop_next(1)
    kiosk.forward()
    fake_stripe.prune_idempotency_keys()
    assert kiosk.forward().pending == 1                     # the lookup adopts the decline
    assert kiosk.store.get(payment.id).soft_declines == 1
    assert kiosk.forward().succeeded == 1
    assert len(fake_stripe.payment_intents) == 1 and len(posts(fake_stripe, "/confirm")) == 1


# -- online or offline -------------------------------------------------------------

@pytest.mark.parametrize("status", [500, 429])
def test_one_bad_answer_to_the_online_check_does_not_make_a_sale_offline(tmp_path, fake_stripe, open_kiosk, status):
    kiosk = open_kiosk(write_config(tmp_path, fake_stripe.url, sync=NOW))
    assert kiosk.check_online()
    fake_stripe.fail_next(1, status)
    asked = []
    result = kiosk.take_sale(1250, "usd", card="visa", confirm=lambda offer: asked.append(offer) or True)
    assert result.status == APPROVED and asked == [] and kiosk.online
    assert len(fake_stripe.intents_for(result.payment.id)) == 1


def test_a_slow_answer_does_not_make_an_online_kiosk_offline(tmp_path, fake_stripe, open_kiosk):
    kiosk = open_kiosk(write_config(tmp_path, fake_stripe.url, sync=NOW))
    assert kiosk.check_online()
    fake_stripe.slow_next(1, 3.0)                          # the online check gives up after 1 s
    started = time.monotonic()
    assert kiosk.check_online() is True
    assert time.monotonic() - started < 2.5


def test_an_answer_just_past_the_deadline_is_late_never_no_connection(tmp_path, fake_stripe, open_kiosk):
    """Stripe connected but slow: the check's deadline calls it late (one hiccup
    is still online), however loaded the kiosk -- the HTTP client's own timeout
    is later, so it never turns a slow answer into "no connection" (offline at
    once).  Two late answers in a row are offline."""
    kiosk = open_kiosk(write_config(tmp_path, fake_stripe.url, sync=NOW, stripe={"reachability_timeout": 0.4}))
    assert kiosk.check_online()
    for _ in range(10):                 # a race lost once in a few tries before
        fake_stripe.slow_next(1, 0.9)
        assert kiosk.check_online() is True, "one late answer is a hiccup"
        assert kiosk.check_online() is True, "an answer in time after it"
    fake_stripe.slow_next(2, 0.9)
    assert kiosk.check_online() is True
    assert kiosk.check_online() is False


def test_repeated_failures_or_no_connection_make_the_kiosk_offline(tmp_path, fake_stripe, open_kiosk):
    kiosk = open_kiosk(write_config(tmp_path, fake_stripe.url, sync=NOW))
    assert kiosk.check_online()
    fake_stripe.fail_next(2, 500)
    assert kiosk.check_online() is True
    assert kiosk.check_online() is False
    assert kiosk.check_online() is True
    fake_stripe.set_offline(True)
    assert kiosk.check_online() is False


def test_checks_at_the_same_moment_count_one_blip_once(tmp_path, fake_stripe, open_kiosk):
    """The background loop and a sale both asking during one slow answer must
    not add up to "offline"."""
    import threading
    kiosk = open_kiosk(write_config(tmp_path, fake_stripe.url, sync=NOW))
    assert kiosk.check_online()
    fake_stripe.slow_next(2, 1.5)
    answers = []
    threads = [threading.Thread(target=lambda: answers.append(kiosk.sync.reachable())) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    assert answers == [True, True]


def test_a_first_check_that_gets_no_answer_in_time_is_offline(tmp_path, fake_stripe, open_kiosk):
    kiosk = open_kiosk(write_config(tmp_path, fake_stripe.url, sync=NOW))
    fake_stripe.slow_next(1, 3.0)
    assert kiosk.check_online() is False


class TokenReader:
    """A chip reader handing over a token Stripe has never issued (a reader
    set up for another Stripe account, say)."""

    def info(self):
        from kiosk.interfaces import ReaderInfo
        return ReaderInfo(name="Chip reader", supports_offline=True)

    def read_card(self, amount, currency, offline, cancel, card=None):
        from kiosk.interfaces import CardResult
        return CardResult(token="pm_1NotIssuedByThisAccount", brand="visa", last4="4242")

    def close(self):
        pass


def test_a_request_stripe_refuses_at_the_till_is_not_charged_and_the_vendor_alarmed(tmp_path, fake_stripe,
                                                                                   open_kiosk):
    kiosk = open_kiosk(write_config(tmp_path, fake_stripe.url, sync=NOW))
    kiosk.reader = TokenReader()
    result = kiosk.take_sale(1250, "usd")
    assert result.status == "refused" and result.message.startswith("not charged: Stripe does not know the reader's card token")
    assert kiosk.store.get(result.payment.id).state == FAILED and fake_stripe.payment_intents == []
    [alarm] = notices_of(kiosk, "needs_update")
    assert "No such PaymentMethod" in alarm["message"]
    token = "pm_1NotIssuedByThisAccount"           # Stripe's own message quotes it: it must go no further
    assert token not in alarm["message"] and token not in result.message
    assert token not in kiosk.store.get(result.payment.id).message
    assert all(token not in n["message"] for n in kiosk.store.notices())
    assert kiosk.take_sale(1250, "usd").status == "refused"
    assert len(notices_of(kiosk, "needs_update")) == 1           # once per kind of refusal, not per sale
