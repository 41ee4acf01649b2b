"""The payment's state machine: every move allowed is in MOVES, every other
one raises and changes nothing."""
from __future__ import annotations

import copy
from datetime import datetime, timezone

import pytest

from kiosk import payment_states as moves
from kiosk.interfaces import Outcome, Request
from kiosk.payment import FAILED, FORWARDING, PENDING, STATES, SUCCEEDED, Card, Payment

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=timezone.utc)


def payment(state: str = PENDING, **fields) -> Payment:
    return Payment(id="kp_test", amount=1250, currency="usd", created_at="2026-12-05T11:00:00.000Z", offline=True,
                   card=Card("visa", "4242", 12, 2030), token="pm_card_visa", reader="simulated", state=state,
                   idempotency_key="key-1", request={"amount": 1250}, **fields)


def reach(state: str) -> Payment:
    """A payment brought to ``state`` by legal moves only."""
    p = payment()
    if state == PENDING:
        return p
    moves.begin_attempt(p, NOW, lambda: 1.0)
    if state == SUCCEEDED:
        moves.succeeded(p, NOW)
    elif state == FAILED:
        moves.failed(p, NOW, "insufficient_funds", "Your card has insufficient funds.")
    return p


TARGETS = {
    FORWARDING: lambda p: moves.begin_attempt(p, NOW, lambda: 1.0),
    SUCCEEDED: lambda p: moves.succeeded(p, NOW),
    FAILED: lambda p: moves.failed(p, NOW, None, "cancelled"),
    PENDING: lambda p: moves.retry_later(p, NOW, "network", 5.0),
}


@pytest.mark.parametrize("start", STATES)
@pytest.mark.parametrize("to", STATES)
def test_only_the_moves_in_the_table_are_allowed(start, to):
    p = reach(start)
    before = copy.deepcopy(p.to_record())
    if to in moves.MOVES[start]:
        TARGETS[to](p)
        assert p.state == to
    else:
        with pytest.raises(moves.IllegalMove):
            TARGETS[to](p)
        assert p.to_record() == before           # an illegal move changes nothing


def test_settled_is_final():
    assert moves.MOVES[SUCCEEDED] == moves.MOVES[FAILED] == frozenset()


def test_an_attempt_counts_and_remembers_stripes_clock_once():
    p = payment()
    moves.begin_attempt(p, NOW, lambda: 111.0)
    moves.retry_later(p, NOW, "network", 5.0)
    assert p.next_attempt_at == "2026-12-05T12:00:05.000Z"
    moves.begin_attempt(p, NOW, lambda: 222.0)
    assert p.attempts == 2 and p.first_attempt_stripe_at == 111.0 and p.last_outcome is None
    assert moves.outcome_unknown(p)


def test_a_request_is_prepared_before_any_attempt_and_upgraded_with_the_same_key():
    p = payment()
    moves.prepared(p, Request("key-2", {"amount": 1250}))
    moves.upgraded(p, Request("key-2", {"amount": 1250, "allowed_payment_method_types": ["card"]}))
    with pytest.raises(moves.IllegalMove):
        moves.upgraded(p, Request("another-key", {}))
    moves.begin_attempt(p, NOW, lambda: 1.0)
    with pytest.raises(moves.IllegalMove):
        moves.prepared(p, Request("key-3", {}))
    assert p.idempotency_key == "key-2"


def test_declined_for_now_waits_the_next_step_and_counts_once():
    p = payment()
    moves.begin_attempt(p, NOW, lambda: 1.0)
    outcome = Outcome("declined_for_now", decline_code="issuer_not_available", message="Try later.", attempt="ch_1")
    moves.answered(p, outcome)
    moves.declined_for_now(p, NOW, outcome, [15.0, 60.0])
    assert (p.state, p.soft_declines, p.declined_attempt) == (PENDING, 1, "ch_1")
    assert p.next_attempt_at == "2026-12-05T12:15:00.000Z"


def test_only_a_failed_payment_is_followed_up_and_only_a_live_one_reminded():
    with pytest.raises(moves.IllegalMove):
        moves.followed_up(reach(SUCCEEDED))
    failed = reach(FAILED)
    moves.followed_up(failed)
    assert failed.followed_up
    with pytest.raises(moves.IllegalMove):
        moves.reminded(failed, [12.0])
    live = reach(PENDING)
    moves.reminded(live, [20.0, 12.0])
    moves.reminded(live, [12.0])
    assert live.reminded_hours == [12.0, 20.0]


def test_no_one_else_writes_a_payments_state():
    """The engine's modules move payments only through this one (grep, as a reviewer would)."""
    import re
    from pathlib import Path
    root = Path(moves.__file__).parent
    writes = [f"{path.name}:{n}" for path in root.glob("*.py") if path.name != "payment_states.py"
              for n, line in enumerate(path.read_text().splitlines(), 1)
              if re.search(r"\bpayment\.(state|attempts|settled_at|decline_code|followed_up)\s*=[^=]", line)]
    assert not writes, writes


def test_only_a_live_sale_is_marked_shown():
    p = payment(unshown=True)
    moves.seen_approved(p)
    assert p.unshown is False
    settled = reach(SUCCEEDED)
    with pytest.raises(moves.IllegalMove):
        moves.seen_approved(settled)
