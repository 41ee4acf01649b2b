"""Void and refund (kiosk/refunding.py) against the fake Stripe: a void is
durable and never forwarded; a sale being forwarded is waited for and
refunded instead; a lost answer is looked up first; refunds whole and in
parts never add up to more than was charged -- the kiosk refuses, and Stripe
refuses when the kiosk's count is wrong; an offline refund is kept across a
restart and sent once.  Attacks: SIGKILL (``KIOSK_CRASH_AT``) at every step
of a refund, a void racing a forwarding pass, Stripe unreachable, ``kiosk
void``/``refund`` through a running ``kiosk run``."""
from __future__ import annotations

import json
import signal
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import stripe

from conftest import TEST_KEY, run_json, run_kiosk, run_kiosk_process, write_config
from test_clock import clock_moved, needs_faketime
from kiosk import same_card
from kiosk.interfaces import CardResult
from kiosk.refunding import STRIPE_MAY_STILL_ANSWER
from plugins.stripe_sync.request import API_VERSION

WAIT_SECONDS = 30       # a deadline for something to reach the fake Stripe, never a measure of anything


def stripe_client(fake_stripe) -> stripe.StripeClient:
    """stripe-python against the fake: what Stripe itself holds, asked as a Dashboard would."""
    return stripe.StripeClient(TEST_KEY, base_addresses={"api": fake_stripe.url}, stripe_version=API_VERSION,
                               max_network_retries=0)


def refunds_at_stripe(fake_stripe, payment_intent: str) -> list[dict]:
    page = stripe_client(fake_stripe).v1.refunds.list(params={"payment_intent": payment_intent, "limit": 100})
    return [refund.to_dict() for refund in page.data]


def succeeded_refunds(fake_stripe, payment_intent: str) -> list[int]:
    return sorted(r["amount"] for r in refunds_at_stripe(fake_stripe, payment_intent) if r["status"] == "succeeded")


def wait_until(condition, what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        assert time.monotonic() < deadline, f"{what} never happened"
        time.sleep(0.01)


def notice_kinds(kiosk) -> list[str]:
    return [n.kind for n in kiosk.recent_notices]


@pytest.fixture
def config(tmp_path, fake_stripe):
    return write_config(tmp_path, fake_stripe.url)


def sell_online(kiosk, amount=1000, **kwargs):
    result = kiosk.take_sale(amount, **kwargs)
    assert result.status == "approved", result.message
    return result.payment


def sell_offline(kiosk, amount=1000, **kwargs):
    result = kiosk.take_sale(amount, behavior="force_offline", **kwargs)
    assert result.status == "approved_offline", result.message
    return result.payment


# -- void -------------------------------------------------------------------------

def test_a_voided_sale_is_durable_and_never_forwarded(config, fake_stripe, open_kiosk):
    kiosk = open_kiosk(config)
    sale = sell_offline(kiosk, 1250)
    kept = sell_offline(kiosk, 300)
    result = kiosk.void(sale.id)
    assert (result.status, result.ok) == ("voided", True) and "never be charged" in result.message
    assert result.payment.state == "voided" and "voided" in notice_kinds(kiosk)
    kiosk.close()

    kiosk = open_kiosk(config)               # what is on disk, as after a power cut
    assert kiosk.store.get(sale.id).state == "voided"
    assert [p.id for p in kiosk.store.live()] == [kept.id]
    report = kiosk.forward()
    assert (report.succeeded, report.pending) == (1, 0)
    assert fake_stripe.intents_for(sale.id) == [] and len(fake_stripe.intents_for(kept.id)) == 1
    again = kiosk.void(sale.id)
    assert (again.status, again.ok) == ("voided", True) and "already voided" in again.message
    assert kiosk.refund(sale.id).message == f"{sale.id} was voided: nothing was charged"
    assert kiosk.refundable(sale.id) == 0


class Later:
    """The kiosk's clock, moved on by the test (a void waits for Stripe to finish a lost attempt)."""

    def __init__(self):
        self.offset = timedelta(0)

    def now(self) -> datetime:
        return datetime.now(timezone.utc) + self.offset


def test_a_sale_whose_answer_was_lost_is_looked_up_before_it_is_voided(config, fake_stripe, open_kiosk):
    later = Later()
    kiosk = open_kiosk(config, clock=later.now)
    charged, not_charged = sell_offline(kiosk, 700), sell_offline(kiosk, 800)
    fake_stripe.drop_next(1)                 # the charge commits at Stripe; its answer never comes
    kiosk.forward_one(charged)
    fake_stripe.fail_next(1, 500)            # Stripe did nothing with this one, but the kiosk cannot know
    kiosk.forward_one(not_charged)
    assert [p.state for p in kiosk.store.live()] == ["pending", "pending"]
    assert all(p.attempts == 1 for p in kiosk.store.live())

    assert "void it instead, the kiosk asks Stripe first" in kiosk.refund(charged.id).message
    fake_stripe.set_offline(True)            # unknown and offline: only Stripe can say, so nothing is done
    refused = kiosk.void(charged.id)
    assert (refused.status, refused.ok) == ("refused", False)
    assert "may already be charged at Stripe: void it when online" in refused.message
    assert kiosk.store.get(charged.id).state == "pending"

    fake_stripe.set_offline(False)
    soon = kiosk.void(not_charged.id)        # just sent: Stripe may still be working on it
    assert (soon.status, soon.ok) == ("unconfirmed", False) and "nothing voided" in soon.message
    later.offset = STRIPE_MAY_STILL_ANSWER + timedelta(seconds=1)
    result = kiosk.void(charged.id)
    assert result.status == "refunded" and result.message.startswith("it was already charged: refunded instead")
    [intent] = fake_stripe.intents_for(charged.id)
    assert kiosk.store.get(charged.id).state == "succeeded"
    assert succeeded_refunds(fake_stripe, intent["id"]) == [700]
    result = kiosk.void(not_charged.id)
    assert result.status == "voided", result.message
    assert kiosk.store.get(not_charged.id).state == "voided"
    assert all(i["status"] != "succeeded" for i in fake_stripe.intents_for(not_charged.id))
    assert kiosk.forward().pending == 0
    assert all(i["status"] != "succeeded" for i in fake_stripe.intents_for(not_charged.id))


def test_a_void_racing_a_forwarding_pass_waits_and_becomes_a_refund(tmp_path, fake_stripe, open_kiosk):
    # the held-back answer comes well inside the request's time: the pass itself settles the sale
    kiosk = open_kiosk(write_config(tmp_path, fake_stripe.url, stripe={"request_timeout": 60.0}))
    sale = sell_offline(kiosk, 1500)
    fake_stripe.hang_next(1, 5)              # committed at Stripe, its answer held back: the pass is under way
    passed = []
    forwarding = threading.Thread(target=lambda: passed.append(kiosk.forward()))
    forwarding.start()
    wait_until(lambda: fake_stripe.intents_for(sale.id), "the charge reaching Stripe")
    assert sale.id in kiosk.forwarding._in_flight     # the void below starts while the attempt is under way
    result = kiosk.void(sale.id)
    forwarding.join(WAIT_SECONDS)
    assert passed[0].succeeded == 1
    assert result.status == "refunded", result.message
    assert result.message.startswith("it was already charged: refunded instead")
    [intent] = fake_stripe.intents_for(sale.id)          # charged once...
    assert intent["status"] == "succeeded"
    assert succeeded_refunds(fake_stripe, intent["id"]) == [1500]     # ...and refunded once
    assert kiosk.store.get(sale.id).refunds == [result.payment.id]


def test_what_cannot_be_voided_says_why(config, fake_stripe, open_kiosk):
    kiosk = open_kiosk(config)
    declined = kiosk.take_sale(500, card="insufficient_funds").payment
    assert kiosk.void(declined.id).message == f"{declined.id} declined: nothing to void"
    assert kiosk.void(declined.id).reason == kiosk.refund(declined.id).reason == "declined"
    assert kiosk.void("kp_nosuch").message == "no payment kp_nosuch on this kiosk"
    assert kiosk.void("kp_nosuch").reason == "no_such_payment"
    sale = sell_online(kiosk)
    refund = kiosk.refund(sale.id, 100).payment
    for result in (kiosk.void(refund.id), kiosk.refund(refund.id)):
        assert (result.status, result.ok) == ("refused", False) and "is a refund" in result.message
        assert result.reason == "a_refund"
    pending = sell_offline(kiosk)
    result = kiosk.refund(pending.id)
    assert (result.status, result.message) == ("refused", f"{pending.id} is not sent yet: void it instead")
    assert result.reason == "not_sent"
    assert kiosk.store.get(pending.id).state == "pending"


# -- refund ---------------------------------------------------------------------

def test_refunds_whole_and_in_parts_never_add_up_to_more_than_was_charged(config, fake_stripe, open_kiosk):
    kiosk = open_kiosk(config)
    sale = sell_online(kiosk, 1000)
    assert kiosk.refundable(sale.id) == 1000
    first = kiosk.refund(sale.id, 300)
    assert (first.status, first.ok) == ("refunded", True) and first.payment.refund_id.startswith("re_")
    assert first.payment.refund_of == sale.id and first.payment.amount == 300
    assert kiosk.refundable(sale.id) == 700
    too_much = kiosk.refund(sale.id, 800)
    assert (too_much.status, too_much.message) == (
        "refused", f"at most $7.00 of {sale.id} ($10.00) is left to refund, not $8.00")
    assert (too_much.reason, too_much.details) == ("too_much", {"left": 700, "currency": "usd"})
    for wrong, reason in ((0, "nothing_to_refund"), (-100, "nothing_to_refund"), (2.5, "bad_amount"),
                          (True, "bad_amount"), ("300", "bad_amount")):
        assert (kiosk.refund(sale.id, wrong).status, kiosk.refund(sale.id, wrong).reason) == ("refused", reason)
    assert kiosk.store.get(sale.id).refunds == [first.payment.id]      # nothing reserved for them
    rest = kiosk.refund(sale.id)
    assert rest.status == "refunded" and rest.payment.amount == 700
    assert kiosk.refundable(sale.id) == 0
    assert kiosk.refund(sale.id).message == f"{sale.id} ($10.00) is already refunded in full"
    assert kiosk.refund(sale.id).reason == "refunded_in_full"
    assert succeeded_refunds(fake_stripe, sale.payment_intent) == [300, 700]
    assert kiosk.store.get(sale.id).refunds == [first.payment.id, rest.payment.id]
    assert notice_kinds(kiosk).count("refunded") == 2


def test_stripe_refuses_an_over_refund_when_the_kiosks_count_is_wrong(config, fake_stripe, open_kiosk):
    kiosk = open_kiosk(config)
    sale = sell_online(kiosk, 1000)
    # refunded in the Dashboard: the kiosk does not know
    stripe_client(fake_stripe).v1.refunds.create(params={"payment_intent": sale.payment_intent, "amount": 600})
    result = kiosk.refund(sale.id)
    assert (result.status, result.ok) == ("refused", False)
    assert result.message.startswith("Stripe refused the refund of $10.00")
    assert result.payment.state == "failed" and result.payment.message
    assert succeeded_refunds(fake_stripe, sale.payment_intent) == [600]
    assert "refund_failed" in notice_kinds(kiosk)
    assert kiosk.refundable(sale.id) == 1000        # a refund Stripe refused gave nothing back
    assert kiosk.refund(sale.id, 400).status == "refunded"
    assert succeeded_refunds(fake_stripe, sale.payment_intent) == [400, 600]


def test_an_offline_refund_is_kept_across_a_restart_and_sent_once(config, fake_stripe, open_kiosk):
    kiosk = open_kiosk(config)
    sale = sell_online(kiosk, 2000)
    fake_stripe.set_offline(True)
    result = kiosk.refund(sale.id, 500)
    assert (result.status, result.ok) == ("refund_queued", True) and "offline" in result.message
    assert result.payment.offline and result.payment.state == "pending"
    assert kiosk.refundable(sale.id) == 1500       # waiting to be sent, it already counts
    assert kiosk.refund(sale.id, 1600).status == "refused"
    # a refund waiting is no sale: not in the offline limits, the repeated-card guard or the reminders
    assert kiosk.stored("usd").amount == 0 and kiosk.stored("usd").count == 0
    card = CardResult("tok_visa", sale.card.brand, sale.card.last4, sale.card.exp_month, sale.card.exp_year)
    assert same_card.pending_on_card(kiosk.store.live(), card) == 0
    kiosk.close()

    kiosk = open_kiosk(config)
    assert [p.id for p in kiosk.store.live()] == [result.payment.id]
    fake_stripe.set_offline(False)
    report = kiosk.forward()
    assert (report.succeeded, report.pending) == (1, 0)
    assert kiosk.forward().succeeded == 0
    assert succeeded_refunds(fake_stripe, sale.payment_intent) == [500]
    assert kiosk.store.get(result.payment.id).refund_id
    assert "refunded" in notice_kinds(kiosk)
    # the offline limits' history counts forwarded offline sales, never refunds
    assert kiosk.store.get_meta("offline_forwarded", 0) == 0


def test_a_sync_plugin_that_cannot_send_refunds_is_never_handed_one(config, fake_stripe, open_kiosk):
    class WithoutRefunds:
        """The built-in forwarder as a plugin that never declared ``refunds``."""
        def __init__(self, sync):
            self._sync = sync

        def __getattr__(self, name):
            if name == "refunds":
                raise AttributeError(name)
            return getattr(self._sync, name)

    kiosk = open_kiosk(config)
    sale = sell_online(kiosk)
    kiosk.sync = WithoutRefunds(kiosk.sync)
    result = kiosk.refund(sale.id)
    assert result.status == "refused" and "cannot send refunds" in result.message
    assert kiosk.store.get(sale.id).refunds == [] and kiosk.store.live() == []
    assert refunds_at_stripe(fake_stripe, sale.payment_intent) == []


def test_the_day_report_counts_voided_sales_and_refunds(config, fake_stripe, open_kiosk):
    kiosk = open_kiosk(config)
    sale = sell_online(kiosk, 1000)
    sell_online(kiosk, 400)
    voided = sell_offline(kiosk, 250)
    assert kiosk.void(voided.id).ok
    assert kiosk.refund(sale.id, 300).status == "refunded"
    fake_stripe.set_offline(True)
    assert kiosk.refund(sale.id, 200).status == "refund_queued"      # pending: counted as refunded
    kiosk.close()
    day = run_json("report", "--config", config)
    usd = day["currencies"]["usd"]
    assert (usd["sales"]["count"], usd["sales"]["amount"]) == (2, 1400)       # refunds and voids are no sales
    assert (usd["charged"]["count"], usd["charged"]["amount"]) == (2, 1400)
    assert (usd["voided"]["count"], usd["voided"]["amount"]) == (1, 250)
    assert (usd["refunded"]["count"], usd["refunded"]["amount"]) == (2, 500)
    assert usd["net"] == 900
    assert day["not_yet_taken"] == []
    text = run_kiosk("queue", "--config", config).stdout
    assert f"refund of {sale.id}" in text and "-$3.00" in text

    fake_stripe.set_offline(False)
    assert run_kiosk("sync", "--config", config).returncode == 0     # the waiting refund is sent
    usd = run_json("report", "--config", config)["currencies"]["usd"]
    held = sum(i["amount_received"] for i in fake_stripe.payment_intents if i["status"] == "succeeded")
    given_back = sum(succeeded_refunds(fake_stripe, sale.payment_intent))
    assert (held, given_back) == (1400, 500)
    assert usd["net"] == held - given_back == 900      # the day's net is what Stripe holds


# -- the command --------------------------------------------------------------------

def test_kiosk_void_and_refund_exit_codes(config, fake_stripe, open_kiosk):
    kiosk = open_kiosk(config)
    sale, stored = sell_online(kiosk, 1000), sell_offline(kiosk, 500)
    kiosk.close()
    result = run_kiosk("refund", sale.id, "2.50", "--config", config)
    assert result.returncode == 0 and result.stdout.startswith("REFUNDED: refunded $2.50 to visa •••• 4242 (re_")
    result = run_kiosk("refund", sale.id, "9.00", "--config", config)
    assert result.returncode == 1 and "at most $7.50" in result.stdout
    assert run_kiosk("refund", sale.id, "abc", "--config", config).returncode == 2
    assert run_kiosk("refund", stored.id, "--config", config).returncode == 1
    answer = run_json("void", stored.id, "--config", config)
    assert answer["status"] == "voided" and answer["payment"]["state"] == "voided"
    result = run_kiosk("void", "kp_nosuch", "--config", config)
    assert result.returncode == 1 and "no payment kp_nosuch" in result.stdout
    answer = run_json("refund", sale.id, "9.00", "--config", config)
    assert (answer["status"], answer["reason"], answer["details"]) == ("refused", "too_much",
                                                                       {"left": 750, "currency": "usd"})
    assert run_json("void", stored.id, "--config", config)["reason"] is None      # voided already: no refusal
    answer = run_json("void", sale.id, "--config", config)     # charged: the rest is refunded
    assert answer["status"] == "refunded" and answer["payment"]["amount"] == 750
    assert succeeded_refunds(fake_stripe, sale.payment_intent) == [250, 750]


def test_kiosk_void_and_refund_through_the_running_kiosk(config, fake_stripe, tmp_path, open_kiosk):
    from test_local_socket import Running
    kiosk = open_kiosk(config)
    sale, stored = sell_online(kiosk, 1000), sell_offline(kiosk, 500)
    kiosk.close()
    fake_stripe.set_offline(True)            # the loop's first pass sends nothing: the void below decides
    run = Running(write_config(tmp_path, fake_stripe.url, sync={"poll_seconds": 3600}), tmp_path / "data")
    try:
        run.wait_serving()
        voided = run_kiosk("void", stored.id, "--config", config)
        fake_stripe.set_offline(False)
        refunded = run_kiosk("refund", sale.id, "4.00", "--json", "--config", config)
        refused = run_kiosk("refund", sale.id, "7.00", "--config", config)
    finally:
        run.stop()
    assert voided.returncode == 0 and voided.stdout.startswith("VOIDED: voided $5.00")
    assert refunded.returncode == 0 and json.loads(refunded.stdout)["status"] == "refunded"
    assert refused.returncode == 1 and "at most $6.00" in refused.stdout
    assert run.log().count("`kiosk void` asked by pid") == 1 and run.log().count("`kiosk refund` asked by pid") == 2
    assert fake_stripe.intents_for(stored.id) == []
    assert succeeded_refunds(fake_stripe, sale.payment_intent) == [400]


# -- power cuts -----------------------------------------------------------------------

@pytest.mark.parametrize("point", ["refund:after_reserve", "refund:after_store", "forward:after_mark",
                                   "forward:after_send"])
def test_a_refund_killed_at_any_step_gives_back_exactly_once(config, fake_stripe, point):
    assert run_kiosk("init", "--config", config).returncode == 0
    sale = run_json("charge", "12.00", "--config", config)["payment"]
    killed = run_kiosk_process("refund", sale["id"], "--config", config, env={"KIOSK_CRASH_AT": point})
    assert killed.returncode == -signal.SIGKILL and "REFUNDED" not in killed.stdout
    fake_stripe.prune_idempotency_keys()          # a day later: only the lookup by metadata can find it
    assert run_kiosk("sync", "--config", config).returncode == 0
    if point == "refund:after_reserve":            # reserved, never stored: counts as nothing, so refund again
        result = run_kiosk("refund", sale["id"], "--config", config)
        assert result.returncode == 0 and result.stdout.startswith("REFUNDED"), result.stdout
    again = run_kiosk("refund", sale["id"], "--config", config)
    assert again.returncode == 1 and "already refunded in full" in again.stdout
    assert succeeded_refunds(fake_stripe, sale["payment_intent"]) == [1200]
    assert len(refunds_at_stripe(fake_stripe, sale["payment_intent"])) == 1
    payments = run_json("queue", "--all", "--config", config)
    refunds = [p for p in payments if p["kind"] == "refund"]
    assert [(r["state"], r["amount"], r["refund_of"]) for r in refunds] == [("succeeded", 1200, sale["id"])]


def test_a_void_stripe_cannot_answer_changes_nothing(config, fake_stripe, open_kiosk):
    later = Later()
    kiosk = open_kiosk(config, clock=later.now)
    sale = sell_offline(kiosk, 900)
    fake_stripe.drop_next(1)                 # charged at Stripe, its answer lost
    kiosk.forward_one(sale)
    later.offset = STRIPE_MAY_STILL_ANSWER + timedelta(seconds=1)
    assert kiosk.check_online()
    fake_stripe.fail_next(2, 500)            # the online check rides one 500 out; the lookup gets the other
    result = kiosk.void(sale.id)
    assert (result.status, result.ok) == ("unconfirmed", False), result.message
    assert "nothing voided; try again when it answers" in result.message
    assert kiosk.store.get(sale.id).state == "pending"
    result = kiosk.void(sale.id)             # Stripe answers again: charged, so refunded instead
    assert result.status == "refunded"
    [intent] = fake_stripe.intents_for(sale.id)
    assert succeeded_refunds(fake_stripe, intent["id"]) == [900]


def test_voiding_a_sale_refunded_in_full_says_so(config, fake_stripe, open_kiosk):
    kiosk = open_kiosk(config)
    sale = sell_online(kiosk, 600)
    assert kiosk.refund(sale.id).status == "refunded"
    result = kiosk.void(sale.id)
    assert (result.status, result.message) == (
        "refused", f"it was already charged, but {sale.id} ($6.00) is already refunded in full")
    assert succeeded_refunds(fake_stripe, sale.payment_intent) == [600]


def test_a_void_killed_while_it_is_written_is_voided_after_the_restart_and_never_charged(config, fake_stripe):
    """Killed with the voided sale in history and still in the queue (the
    built-in store's two writes): opening mends it, and no pass sends it."""
    assert run_kiosk("init", "--config", config).returncode == 0
    sale = run_json("charge", "8.00", "--offline", "--config", config)["payment"]
    killed = run_kiosk_process("void", sale["id"], "--config", config, env={"KIOSK_CRASH_AT": "settle:after_history"})
    assert killed.returncode == -signal.SIGKILL and "VOIDED" not in killed.stdout
    assert run_kiosk("sync", "--config", config).returncode == 0
    [payment] = run_json("queue", "--all", "--config", config)
    assert payment["state"] == "voided"
    assert fake_stripe.intents_for(sale["id"]) == []


@needs_faketime
def test_a_void_killed_inside_its_lookup_settles_once(config, fake_stripe):
    """A sale whose answer was lost, voided online: killed after its lookup was
    marked.  The next pass looks it up again: charged once, nothing lost."""
    assert run_kiosk("init", "--config", config).returncode == 0
    sale = run_json("charge", "8.00", "--offline", "--config", config)["payment"]
    fake_stripe.drop_next(1)
    assert run_kiosk("sync", "--config", config).returncode == 0          # charged at Stripe, answer lost
    # past the wait for a lost attempt (the wall clock moved on by libfaketime), killed inside the lookup
    killed = run_kiosk_process("void", sale["id"], "--config", config,
                               env=clock_moved("+11m", {"KIOSK_CRASH_AT": "forward:after_mark"}))
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    fake_stripe.prune_idempotency_keys()
    assert run_kiosk("sync", "--config", config).returncode == 0
    [payment] = run_json("queue", "--all", "--config", config)
    assert payment["state"] == "succeeded" and len(fake_stripe.intents_for(sale["id"])) == 1
    result = run_kiosk("void", sale["id"], "--config", config)        # charged: the void refunds it, once
    assert result.returncode == 0 and "already charged: refunded instead" in result.stdout
    assert succeeded_refunds(fake_stripe, payment["payment_intent"]) == [800]


def test_the_state_machine_voids_only_a_live_sale_and_reserves_only_on_a_charged_one():
    from datetime import datetime, timezone

    from kiosk import payment_states as states
    from kiosk.payment import Card, Payment
    now = datetime(2026, 12, 6, tzinfo=timezone.utc)

    def payment(state, **kwargs):
        return Payment(id="kp_1", amount=500, currency="usd", created_at="2026-12-06T00:00:00.000Z",
                       offline=True, card=Card("visa", "4242"), token="tok", reader="sim", state=state, **kwargs)
    for state in ("pending", "forwarding"):
        sale = payment(state)
        states.voided(sale, now, "voided")
        assert (sale.state, sale.settled, sale.settled_at) == ("voided", True, "2026-12-06T00:00:00.000Z")
    for state in ("succeeded", "failed", "moved", "voided"):
        with pytest.raises(states.IllegalMove):
            states.voided(payment(state), now, "voided")
    with pytest.raises(states.IllegalMove):
        states.voided(payment("pending", refund_of="kp_0"), now, "voided")
    with pytest.raises(states.IllegalMove):
        states.refund_reserved(payment("pending"), "kp_2")
    sale = payment("succeeded")
    states.refund_reserved(sale, "kp_2")
    assert sale.refunds == ["kp_2"]


def test_every_refusal_names_a_reason_the_screens_know():
    """Each RefundResult that refuses or is unconfirmed carries a reason code
    from REASONS (kiosk/refunding.py, read as written), and both languages of
    the touchscreen say each one."""
    import ast
    from kiosk import refunding
    from kiosk_builtins.touchscreen.catalog import EN, JA
    tree = ast.parse(Path(refunding.__file__).read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "RefundResult":
            status = node.args[0].id
            reason = node.args[3] if len(node.args) > 3 else next(
                (k.value for k in node.keywords if k.arg == "reason"), None)
            if status in ("REFUSED", "UNCONFIRMED"):
                assert reason is not None, f"line {node.lineno}: a {status} result without a reason"
                found.append(node.lineno)
                if isinstance(reason, ast.Constant):
                    assert reason.value in refunding.REASONS, f"line {node.lineno}: {reason.value!r}"
    assert len(found) >= 15
    for reason in refunding.REASONS:
        assert f"why_{reason}" in EN and f"why_{reason}" in JA, reason
