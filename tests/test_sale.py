"""Sales through the engine: online, offline with confirm, limits, readers."""
from __future__ import annotations

from datetime import timedelta

import pytest

from kiosk.engine import APPROVED, APPROVED_OFFLINE, CANCELLED, DECLINED, REFUSED, UNCONFIRMED
from kiosk.money import MoneyError
from kiosk.payment import PENDING, SUCCEEDED, FAILED, utcnow

from conftest import write_config


def yes(offer):
    return True


def test_online_sale_is_charged_at_once(tmp_path, fake_stripe, open_kiosk, caplog):
    caplog.set_level("INFO")
    kiosk = open_kiosk(write_config(tmp_path, fake_stripe.url))
    result = kiosk.take_sale(1250, "usd", card="visa")
    assert result.status == APPROVED
    payment = kiosk.store.get(result.payment.id)
    assert payment.state == SUCCEEDED and payment.offline is False
    [intent] = fake_stripe.intents_for(payment.id)
    assert intent["id"] == payment.payment_intent and intent["amount"] == 1250
    assert intent["metadata"]["kiosk_id"] == "test-kiosk"
    assert "Approved: $12.50 visa •••• 4242" in caplog.text
    assert kiosk.store.notices() == []     # the vendor saw it at the till; the feed is for later


def test_online_decline_is_reported_with_its_code(tmp_path, fake_stripe, open_kiosk):
    kiosk = open_kiosk(write_config(tmp_path, fake_stripe.url))
    result = kiosk.take_sale(900, card="insufficient_funds")
    assert result.status == DECLINED and "insufficient funds" in result.message
    stored = kiosk.store.get(result.payment.id)
    assert stored.state == FAILED and stored.decline_code == "insufficient_funds"


def test_offline_sale_needs_confirmation_and_is_stored(tmp_path, fake_stripe, open_kiosk):
    kiosk = open_kiosk(write_config(tmp_path, fake_stripe.url))
    fake_stripe.set_offline(True)
    offers = []
    refused = kiosk.take_sale(800, card="visa", confirm=lambda offer: offers.append(offer) or False)
    assert refused.status == CANCELLED and kiosk.store.live() == []
    offer = offers[0]
    assert offer.amount == 800 and offer.limits.per_transaction <= 10000
    assert "$500.00" in offer.left and offer.risk_note
    result = kiosk.take_sale(800, card="visa", confirm=yes, customer="ana@example.com")
    assert result.status == APPROVED_OFFLINE
    [payment] = kiosk.store.live()
    assert payment.state == PENDING and payment.offline and payment.customer == "ana@example.com"
    # the request is fixed before any attempt
    assert payment.idempotency_key == f"kiosk-{payment.id}"
    assert payment.request["metadata"] == {"kiosk_payment_id": payment.id, "kiosk_id": "test-kiosk",
                                           "offline_stored_at": payment.created_at}
    assert payment.attempts == 0 and fake_stripe.payment_intents == []


def test_offline_sale_without_confirm_callback_is_not_taken(tmp_path, fake_stripe, open_kiosk):
    kiosk = open_kiosk(write_config(tmp_path, fake_stripe.url))
    fake_stripe.set_offline(True)
    assert kiosk.take_sale(800).status == CANCELLED
    assert kiosk.store.live() == []


def test_require_online_refuses_when_unreachable(tmp_path, fake_stripe, open_kiosk):
    kiosk = open_kiosk(write_config(tmp_path, fake_stripe.url, kiosk={"offline_behavior": "require_online"}))
    fake_stripe.set_offline(True)
    result = kiosk.take_sale(800, confirm=yes)
    assert result.status == REFUSED and "online sales only" in result.message
    assert kiosk.store.live() == []


def test_charge_offline_is_refused_under_require_online(tmp_path, fake_stripe):
    from conftest import run_json, run_kiosk
    config = write_config(tmp_path, fake_stripe.url, kiosk={"offline_behavior": "require_online"})
    assert run_kiosk("init", "--config", config).returncode == 0
    result = run_kiosk("charge", "8.00", "--offline", "--yes", "--config", config)
    assert result.returncode == 1 and "online sales only" in result.stdout + result.stderr
    assert run_json("queue", "--config", config) == [] and fake_stripe.payment_intents == []


def test_force_offline_stores_even_when_reachable(tmp_path, fake_stripe, open_kiosk):
    kiosk = open_kiosk(write_config(tmp_path, fake_stripe.url, kiosk={"offline_behavior": "force_offline"}))
    assert kiosk.take_sale(800).status == APPROVED_OFFLINE
    assert fake_stripe.payment_intents == []


@pytest.mark.parametrize("amount, which, words", [
    (10001, "per_transaction", "over the offline limit per sale"),
    (9001, "total", "over the total offline limit"),
])
def test_offline_limits_refuse_and_store_nothing(tmp_path, fake_stripe, open_kiosk, amount, which, words):
    kiosk = open_kiosk(write_config(tmp_path, fake_stripe.url, kiosk={"offline_behavior": "force_offline"}))
    for _ in range(5):
        assert kiosk.take_sale(8200).ok   # $410 stored: $90 left of $500
    before = [p.id for p in kiosk.store.live()]
    result = kiosk.take_sale(amount)
    assert result.status == REFUSED and result.limit == which and words in result.message
    assert [p.id for p in kiosk.store.live()] == before
    assert kiosk.store.notices()[-1]["kind"] == "limit_reached"


def test_count_limit(tmp_path, fake_stripe, open_kiosk):
    kiosk = open_kiosk(write_config(tmp_path, fake_stripe.url, kiosk={"offline_behavior": "force_offline"},
                                    limits={"max_pending": 2}))
    assert kiosk.take_sale(100).ok and kiosk.take_sale(100).ok
    result = kiosk.take_sale(100)
    assert result.status == REFUSED and result.limit == "count" and "2 payments already waiting" in result.message


def test_tap_to_pay_is_refused_offline_but_works_online(tmp_path, fake_stripe, open_kiosk):
    kiosk = open_kiosk(write_config(tmp_path, fake_stripe.url, reader__simulated={"mode": "tap_to_pay"}))
    assert kiosk.take_sale(800).status == APPROVED
    fake_stripe.set_offline(True)
    result = kiosk.take_sale(800, confirm=yes)
    assert result.status == REFUSED and "cannot take payments offline" in result.message
    assert result.limit == "reader" and kiosk.store.live() == []


@pytest.mark.parametrize("currency, amount, stripe_amount", [("jpy", 1200, 1200), ("kwd", 1230, 1230),
                                                             ("isk", 500, 50000)])
def test_currencies_reach_stripe_in_its_units(tmp_path, fake_stripe, open_kiosk, currency, amount, stripe_amount):
    kiosk = open_kiosk(write_config(tmp_path, fake_stripe.url))
    result = kiosk.take_sale(amount, currency)
    assert result.status == APPROVED
    assert fake_stripe.intents_for(result.payment.id)[0]["amount"] == stripe_amount


def test_offline_sale_in_a_currency_without_limits_is_refused(tmp_path, fake_stripe, open_kiosk):
    kiosk = open_kiosk(write_config(tmp_path, fake_stripe.url, kiosk={"offline_behavior": "force_offline"},
                                    limits={"currencies": {"jpy": {"per_transaction": 15000, "total": 75000}}}))
    assert kiosk.take_sale(1200, "jpy").status == APPROVED_OFFLINE
    result = kiosk.take_sale(1000, "eur")
    assert result.status == REFUSED and "no offline limit is set for EUR" in result.message


def test_bad_amounts_and_contacts_are_refused_before_anything(tmp_path, fake_stripe, open_kiosk):
    kiosk = open_kiosk(write_config(tmp_path, fake_stripe.url))
    with pytest.raises(MoneyError, match="below Stripe's minimum"):
        kiosk.take_sale(49, "usd")
    with pytest.raises(MoneyError, match="unknown currency"):
        kiosk.take_sale(100, "xyz")
    with pytest.raises(ValueError, match="neither an e-mail address nor a phone number"):
        kiosk.take_sale(800, customer="call me")
    assert kiosk.store.live() == [] and fake_stripe.payment_intents == []


class Clock:
    def __init__(self):
        self.now = utcnow()

    def __call__(self):
        return self.now


def test_limits_shrink_without_sync_and_follow_history(tmp_path, fake_stripe, open_kiosk):
    kiosk = open_kiosk(write_config(tmp_path, fake_stripe.url, kiosk={"offline_behavior": "force_offline"}))
    clock = Clock()
    kiosk.clock = clock
    kiosk.store.set_meta("last_sync_at", clock.now.isoformat())
    fresh = kiosk.effective_limits("usd")
    assert fresh.per_transaction == 10000 and fresh.total == 50000
    clock.now += timedelta(hours=12)
    half = kiosk.effective_limits("usd")
    assert half.per_transaction == 5500          # floor 0.1: 1 - 0.9 * 12/24
    kiosk.take_sale(1000)
    clock.now += timedelta(hours=24)
    assert kiosk.effective_limits("usd").per_transaction == 1000   # the floor once the oldest is 24 h old
    kiosk.store.set_meta("offline_forwarded", 10)
    kiosk.store.set_meta("last_sync_at", clock.now.isoformat())
    kiosk.forward()
    assert kiosk.effective_limits("usd").per_transaction == 12200  # 1 + 0.02 * 11 successes
    kiosk.store.set_meta("offline_declined", 2)
    assert kiosk.effective_limits("usd").per_transaction == int(10000 * 1.22 * 0.8 * 0.8)


def test_reminders_go_out_once_per_threshold(tmp_path, fake_stripe, open_kiosk):
    kiosk = open_kiosk(write_config(tmp_path, fake_stripe.url, kiosk={"offline_behavior": "force_offline"}))
    clock = Clock()
    kiosk.clock = clock
    kiosk.take_sale(1000)
    clock.now += timedelta(hours=1)
    kiosk.take_sale(1000)                    # a second, younger payment must not repeat the reminders
    assert kiosk.remind() == []
    clock.now += timedelta(hours=11, minutes=1)
    [first] = kiosk.remind()
    assert first.kind == "reminder" and "2 payment(s) waiting" in first.message
    assert "12 h old" in first.message and "12 h left" in first.message and first.level == "warning"
    clock.now += timedelta(hours=1)
    assert kiosk.remind() == []              # the younger one crossing 12 h is not news
    clock.now += timedelta(hours=7)
    [second] = kiosk.remind()
    assert "20 h old" in second.message and second.level == "warning"
    clock.now += timedelta(hours=3)
    [last] = kiosk.remind()
    assert "23 h old" in last.message and "1 h left" in last.message and last.level == "error"
    clock.now += timedelta(hours=2)
    assert kiosk.remind() == []
    # the marks are stored with the payment, so a restart does not repeat them
    assert kiosk.store.live()[0].reminded_hours == [12.0, 20.0, 23.0]
    assert [n["kind"] for n in kiosk.store.notices()].count("reminder") == 3


def test_a_kiosk_off_for_hours_sends_only_the_most_urgent_reminder(tmp_path, fake_stripe, open_kiosk):
    kiosk = open_kiosk(write_config(tmp_path, fake_stripe.url, kiosk={"offline_behavior": "force_offline"}))
    clock = Clock()
    kiosk.clock = clock
    kiosk.take_sale(1000)
    clock.now += timedelta(hours=21)
    [only] = kiosk.remind()
    assert "21 h old" in only.message and kiosk.remind() == []
    assert kiosk.store.live()[0].reminded_hours == [12.0, 20.0]


def fault_after_store(fake_stripe, **faults):
    """A plugin that arms a fault at the peer once the sale is stored, i.e.
    after the online check and before the charge is sent."""
    from kiosk.boot import load_host
    from kiosk.hookspecs import hookimpl

    class Armer:
        @hookimpl
        def kiosk_payment_changed(self, payment, previous_state):
            if previous_state is None:
                for name, args in faults.items():
                    getattr(fake_stripe, name)(*args)
    host = load_host()
    host.register(Armer(), "armer")
    return host


def test_online_sale_whose_answer_is_lost_is_looked_up_at_once(tmp_path, fake_stripe, open_kiosk):
    host = fault_after_store(fake_stripe, drop_next=(1,))
    kiosk = open_kiosk(write_config(tmp_path, fake_stripe.url), host=host)
    result = kiosk.take_sale(1000, card="insufficient_funds")
    assert result.status == DECLINED and result.payment.decline_code == "insufficient_funds"
    assert len(fake_stripe.intents_for(result.payment.id)) == 1


def test_online_sale_stripe_cannot_settle_is_unconfirmed_not_approved(tmp_path, fake_stripe, open_kiosk):
    host = fault_after_store(fake_stripe, fail_next=(2, 500))
    kiosk = open_kiosk(write_config(tmp_path, fake_stripe.url), host=host)
    result = kiosk.take_sale(1000, card="visa")
    assert result.status == "unconfirmed" and not result.ok and "do not charge the card again" in result.message
    assert kiosk.store.get(result.payment.id).state == PENDING
    assert kiosk.store.notices()[-1]["kind"] == "interrupted"
    assert kiosk.forward().succeeded == 1 and len(fake_stripe.intents_for(result.payment.id)) == 1


def test_a_key_rejected_in_the_middle_of_an_online_sale_leaves_it_unconfirmed_not_lost(tmp_path, fake_stripe,
                                                                                       open_kiosk):
    """stripe-python may have retried a create Stripe had already charged
    before the key was refused: "not charged" would be a guess, so the sale is
    kept and settled once the key works -- charged once."""
    host = fault_after_store(fake_stripe, reject_api_keys=(True,))
    kiosk = open_kiosk(write_config(tmp_path, fake_stripe.url), host=host)
    result = kiosk.take_sale(1000, card="visa")
    assert result.status == UNCONFIRMED and "do not charge the card again" in result.message
    kept = kiosk.store.get(result.payment.id)
    assert kept.state == PENDING and kept.interrupted_told
    assert any(n["kind"] == "auth_failed" for n in kiosk.store.notices())
    fake_stripe.reject_api_keys(False)
    assert kiosk.forward().succeeded == 1 and len(fake_stripe.intents_for(result.payment.id)) == 1


def test_rejected_key_counts_as_offline_for_selling(tmp_path, fake_stripe, open_kiosk):
    kiosk = open_kiosk(write_config(tmp_path, fake_stripe.url, kiosk={"offline_behavior": "require_online"}))
    fake_stripe.reject_api_keys(True)
    assert kiosk.take_sale(1000).status == REFUSED
    assert kiosk.sync.problem == "Stripe rejected the API key"


def test_online_check_answers_within_two_seconds_even_from_a_stalled_peer(tmp_path, open_kiosk):
    import socket
    import threading
    import time
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    held = []
    threading.Thread(target=lambda: held.append(server.accept()), daemon=True).start()
    url = f"http://127.0.0.1:{server.getsockname()[1]}"   # accepts, then never says a word
    kiosk = open_kiosk(write_config(tmp_path, url, stripe={"reachability_timeout": 2.0, "request_timeout": 30.0}))
    started = time.monotonic()
    online = kiosk.check_online()
    elapsed = time.monotonic() - started
    server.close()
    assert online is False and elapsed < 2.5


def test_a_broken_limits_policy_refuses_offline_sales_clearly(tmp_path, fake_stripe, open_kiosk):
    from kiosk.boot import load_host
    from kiosk.hookspecs import hookimpl

    class Broken:
        @hookimpl(tryfirst=True)
        def kiosk_offline_limits(self, base, history):
            raise ZeroDivisionError
    host = load_host()
    host.register(Broken(), "broken")
    kiosk = open_kiosk(write_config(tmp_path, fake_stripe.url, kiosk={"offline_behavior": "force_offline"}),
                       host=host)
    result = kiosk.take_sale(1000)
    assert result.status == REFUSED and result.limit == "policy" and kiosk.store.live() == []
    assert "error" in kiosk.status()["limits"]["usd"]


def test_confirm_step_can_add_a_customer_contact(tmp_path, fake_stripe, open_kiosk):
    kiosk = open_kiosk(write_config(tmp_path, fake_stripe.url))
    fake_stripe.set_offline(True)

    def confirm_with_contact(offer):
        offer.customer = "+81 90 1234 5678"
        return True
    result = kiosk.take_sale(1000, card="visa", confirm=confirm_with_contact)
    assert kiosk.store.get(result.payment.id).customer == "+81 90 1234 5678"

    def confirm_with_nonsense(offer):
        offer.customer = "not a contact"
        return True
    with pytest.raises(ValueError, match="neither an e-mail address nor a phone number"):
        kiosk.take_sale(1000, card="visa", confirm=confirm_with_nonsense)
    assert len(kiosk.store.live()) == 1


def test_vendor_marks_a_failed_payment_followed_up(tmp_path, fake_stripe, open_kiosk):
    kiosk = open_kiosk(write_config(tmp_path, fake_stripe.url, kiosk={"offline_behavior": "force_offline"}))
    declined = kiosk.take_sale(1000, card="expired_card").payment
    kiosk.take_sale(1000, card="visa")
    kiosk.forward()
    assert [p.id for p in kiosk.needs_attention()] == [declined.id]
    kiosk.mark_followed_up(declined.id)
    assert kiosk.needs_attention() == [] and kiosk.store.get(declined.id).followed_up
    with pytest.raises(ValueError, match="no failed payment"):
        kiosk.mark_followed_up("kp_nope")


@pytest.mark.parametrize("token, brand", [
    ("tok_4242-4242-4242-4242", "visa"),
    ("pm_4242.4242.4242.4242", "visa"),
    ("pm_card_visa", "4242424242424242"),
    ("4242 4242 4242 4242", "visa"),
])
def test_a_reader_handing_over_a_card_number_is_refused_and_nothing_stored(tmp_path, fake_stripe, open_kiosk,
                                                                          token, brand, caplog):
    from kiosk.interfaces import CardResult, ReaderInfo

    class LeakyReader:
        def info(self):
            return ReaderInfo("leaky", supports_offline=True)

        def read_card(self, amount, currency, offline, cancel, card=None):
            return CardResult(token=token, brand=brand, last4="4242")

        def close(self):
            pass
    kiosk = open_kiosk(write_config(tmp_path, fake_stripe.url, kiosk={"offline_behavior": "force_offline"}))
    kiosk.reader = LeakyReader()
    result = kiosk.take_sale(1000)
    assert result.status == REFUSED
    assert any(words in result.message for words in ("looks like a card number", "brand", "malformed"))
    assert kiosk.store.live() == [] and "4242424242424242" not in caplog.text.replace(" ", "").replace("-", "")


def test_a_second_sale_while_one_is_under_way_is_refused_and_stores_nothing(tmp_path, fake_stripe, open_kiosk):
    """The screen and `kiosk charge` through the running kiosk share one reader:
    a sale started while another waits for its card is refused in one line."""
    import threading
    from conftest import write_config
    config = write_config(tmp_path, fake_stripe.url, kiosk={"offline_behavior": "force_offline"})
    kiosk = open_kiosk(config, create=True)
    reading, release = threading.Event(), threading.Event()
    real = kiosk.reader.read_card

    def slow_reader(amount, currency, offline, cancel, card=None):
        reading.set()
        release.wait(10)
        return real(amount, currency, offline, cancel, card)
    kiosk.reader.read_card = slow_reader            # a customer slow with their card: the reader still answers
    first = {}
    worker = threading.Thread(target=lambda: first.update(result=kiosk.take_sale(1000, card="visa")))
    worker.start()
    assert reading.wait(10)
    second = kiosk.take_sale(1100, card="visa")
    release.set()
    worker.join(10)
    assert second.status == "refused" and second.limit == "busy" and "under way" in second.message
    assert first["result"].ok
    assert [p.amount for p in kiosk.store.live()] == [1000]
