"""Forwarding: sending stored payments to Stripe and recording what came of
each attempt -- passes over the queue, one attempt for one payment, lookups
before a resend, back-off, retries of a card declined for now, the requests an
earlier release stored brought up to date at opening, and the progress of a
pass.

Rules it keeps: an attempt is marked (durable) before the request is sent; an
attempt whose outcome is unknown is looked up at Stripe before it is sent
again; before a pass sends anything, Stripe is asked which of the payments
never attempted here it already holds (a data directory restored from an
older copy, once Stripe has forgotten its idempotency keys), and those are
looked up, never sent; what came of an attempt is durable before anyone is told of it; one
pass at a time, and one attempt at a time for one payment.  It never sends a
request with a new idempotency key, and never changes a payment except
through :mod:`kiosk.payment_states`.
"""
from __future__ import annotations

import logging
import random
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

from . import notices
from . import payment_states as states
from .faults import crash_point
from .interfaces import Outcome, optional
from .payment import FAILED, SUCCEEDED, Payment, parse_iso

log = logging.getLogger("kiosk.engine")     # the engine's log lines keep their name


@dataclass
class SyncReport:
    reached: bool
    succeeded: int = 0
    failed: int = 0
    pending: int = 0
    auth_error: str | None = None

    def as_dict(self) -> dict:
        return {"reached": self.reached, "succeeded": self.succeeded, "failed": self.failed,
                "pending": self.pending, "auth_error": self.auth_error}


def due(payment: Payment, now: datetime, force: bool = False) -> bool:
    """``force`` ("sync now") skips the back-off, but a card declined for
    now is never tried again sooner than its wait: card networks count retries."""
    when = parse_iso(payment.next_attempt_at)
    if when is None or when <= now:
        return True
    return force and payment.soft_declines == 0


def outcome_of(payment: Payment | None) -> Outcome:
    """What a payment someone else settled came to."""
    if payment is None:
        return Outcome("refused", message="no such payment")
    if payment.state == SUCCEEDED:
        return Outcome("succeeded", payment_intent=payment.payment_intent)
    kind = "declined" if payment.decline_code else "refused"
    return Outcome(kind, payment_intent=payment.payment_intent, decline_code=payment.decline_code,
                   message=payment.message)


class Forwarding:
    def __init__(self, kiosk):
        self.kiosk = kiosk
        self.sync_progress = (0, 0)              # (done, total) of the current or last pass
        self._pass_lock = threading.Lock()       # one forwarding pass at a time
        self._in_flight: set[str] = set()
        self._in_flight_lock = threading.Condition()   # guards _in_flight; waiters hear when one leaves
        self._counters_lock = threading.Lock()   # read-modify-write of counters from forwarding threads

    # -- at opening --------------------------------------------------------------

    def upgrade_requests(self) -> None:
        """Requests an earlier release stored in a shape this API version
        refuses are brought to today's, keeping their idempotency keys (the
        sync plugin says why that is safe), before anything is sent."""
        kiosk = self.kiosk
        upgrade = optional(kiosk.sync, "Forwarder", "upgrade")
        if upgrade is None:
            return
        changed = 0
        for payment in kiosk.store.live():
            request = upgrade(payment)
            if request is None or request.params == payment.request:
                continue
            if request.idempotency_key != payment.idempotency_key:
                log.error("sync plugin changed the idempotency key of %s while upgrading; keeping the old request",
                          payment.id)
                continue
            states.upgraded(payment, request)
            kiosk.store.save(payment)                    # durable before the first attempt in the new shape
            changed += 1
        if changed:
            log.info("brought %d stored request(s) to the current Stripe API shape", changed)

    # -- a pass over the queue ----------------------------------------------------

    def forward(self, force: bool = True, stop: threading.Event | None = None,
                progress=None) -> SyncReport:
        """Forward what is waiting.  ``force`` ignores back-off ("sync now").
        ``progress(done, total)`` is called as payments settle."""
        kiosk = self.kiosk
        with self._pass_lock:
            if not kiosk.check_online():
                key = kiosk.health.key_problem()       # a missing key is named as such, never "unreachable"
                auth_error = {"rejected": "Stripe rejected the API key",
                              "missing": kiosk.sync_problem() or "no API key is set"}.get(key)
                report = SyncReport(reached=key == "rejected", pending=len(kiosk.store.live()),
                                    auth_error=auth_error)
                if auth_error:
                    kiosk.telling.alert_key(auth_error, missing=key == "missing")
                return report
            now = kiosk.clock()
            pending = [p for p in kiosk.store.live() if due(p, now, force)]
            held = self._held_at_stripe(pending)
            if held is None:          # Stripe could not say: sending blind could charge twice
                return SyncReport(reached=True, pending=len(kiosk.store.live()))
            report = SyncReport(reached=True)
            abort = threading.Event()
            done = 0
            done_lock = threading.Lock()

            def work(payment: Payment):
                nonlocal done
                if abort.is_set() or (stop is not None and stop.is_set()):
                    return None
                outcome = kiosk.forward_one(payment, lookup_first=payment.id in held)
                if outcome.kind == "auth_error":
                    abort.set()
                with done_lock:
                    done += 1
                    if progress is not None:
                        progress(done, len(pending))
                    self._progress(done, len(pending))
                return outcome

            self._progress(0, len(pending))
            workers = max(1, min(kiosk.sync.concurrency, len(pending)))
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="forward") as pool:
                outcomes = list(pool.map(work, pending))
            for outcome in outcomes:
                if outcome is not None and outcome.kind == "auth_error":
                    report.auth_error = outcome.message
            unsettled = any(o is not None and o.kind in ("retry", "request_rejected") for o in outcomes)
            if done < len(pending):      # stopped early: the pass is over all the same
                self._progress(len(pending), len(pending))
            live = kiosk.store.live()
            still_live = {p.id for p in live}
            settled = [kiosk.store.get(p.id) for p in pending if p.id not in still_live]
            report.succeeded = sum(1 for p in settled if p and p.state == SUCCEEDED)
            report.failed = sum(1 for p in settled if p and p.state == FAILED)
            report.pending = len(live)
            if report.auth_error:
                kiosk.telling.alert_key(report.auth_error)
            elif not unsettled:
                kiosk.telling.key_accepted()
                kiosk.note_synced(force=True)    # only a pass Stripe fully answered counts as a sync
            return report

    def _held_at_stripe(self, pending: list[Payment]) -> set[str] | None:
        """The ids, among the pending payments never attempted here, that
        Stripe already holds a PaymentIntent for (the sync plugin's optional
        ``reconcile``); None if it could not say."""
        fresh = [p for p in pending if not states.outcome_unknown(p)]
        reconcile = optional(self.kiosk.sync, "Forwarder", "reconcile")
        if not fresh or reconcile is None:
            return set()
        held = reconcile(fresh)
        if held:
            log.warning("Stripe already holds %d payment(s) this queue never sent (restored data?): "
                        "looked up, not sent: %s", len(held), ", ".join(sorted(held)))
        return held

    def _progress(self, done: int, total: int) -> None:
        self.sync_progress = (done, total)
        self.kiosk.host.call_isolated("kiosk_sync_progress", done=done, total=total)

    # -- one payment -----------------------------------------------------------------

    def forward_one(self, payment: Payment, tell: bool = True, lookup_only: bool = False,
                    at_till: bool = False, lookup_first: bool = False) -> Outcome:
        """One attempt for one payment, following the rules in the module
        docstring.  Works on the stored copy: if another thread is forwarding
        it, waits for that attempt and reports what it settled.
        ``lookup_first``: ask Stripe before sending, as after a lost answer."""
        with self._in_flight_lock:
            while payment.id in self._in_flight:
                self._in_flight_lock.wait()
            current = self.kiosk.store.get(payment.id)
            if current is None or current.settled:
                return outcome_of(current)
            self._in_flight.add(payment.id)
        try:
            return self._attempt(current, tell, lookup_only, at_till, lookup_first)
        finally:
            with self._in_flight_lock:
                self._in_flight.discard(payment.id)
                self._in_flight_lock.notify_all()

    @contextmanager
    def held(self, payment_id: str):
        """The stored copy of ``payment_id`` while no attempt can start or end
        on it, or ``None`` if one is under way (or it is gone)."""
        with self._in_flight_lock:
            current = self.kiosk.store.get(payment_id)
            yield None if payment_id in self._in_flight else current

    @contextmanager
    def deciding(self, payment_id: str):
        """The stored copy of ``payment_id`` (``None`` if there is none), once
        an attempt under way on it has ended, with its in-flight slot held
        until the block ends: no pass can start sending it while a void or a
        refund decides and writes."""
        with self._in_flight_lock:
            while payment_id in self._in_flight:
                self._in_flight_lock.wait()
            self._in_flight.add(payment_id)
        try:
            yield self.kiosk.store.get(payment_id)
        finally:
            with self._in_flight_lock:
                self._in_flight.discard(payment_id)
                self._in_flight_lock.notify_all()

    def look_up_deciding(self, payment: Payment) -> Outcome:
        """Inside :meth:`deciding`: ask Stripe what became of ``payment``, as an
        attempt (marked first, durable).  What it found is recorded and told as
        any attempt's is; ``not_found`` (nothing charged, nothing in flight) is
        returned with the payment left ``forwarding`` for the caller to settle."""
        kiosk = self.kiosk
        previous = states.begin_attempt(payment, kiosk.clock(), self._stripe_now, may_send=False)
        kiosk.store.save(payment)                        # durable: an attempt has started
        crash_point("forward:after_mark")
        outcome = kiosk.sync.lookup(payment)
        if outcome.kind == "not_found":
            if outcome.payment_intent:
                states.intent_found(payment, outcome.payment_intent)
            return outcome
        self.record(payment, outcome)
        kiosk.telling.payment_changed(payment, previous)
        self._tell(payment, outcome)
        return outcome

    def _attempt(self, payment: Payment, tell: bool, lookup_only: bool = False,
                 at_till: bool = False, lookup_first: bool = False) -> Outcome:
        """``at_till``: the customer is still there (an online sale being
        charged), so a decline or a refused request ends the sale now."""
        kiosk = self.kiosk
        unknown_before = states.outcome_unknown(payment) or lookup_first
        previous = states.begin_attempt(payment, kiosk.clock(), self._stripe_now, may_send=not lookup_only)
        kiosk.store.save(payment)                        # durable: an attempt has started
        crash_point("forward:after_mark")
        outcome = None
        if unknown_before or lookup_only:
            outcome = kiosk.sync.lookup(payment)
            if outcome.kind == "not_found":
                if outcome.payment_intent:
                    # Stripe holds the sale's PaymentIntent, unfinished: send carries on with it
                    states.intent_found(payment, outcome.payment_intent)
                outcome = Outcome("retry", payment_intent=outcome.payment_intent,
                                  message="Stripe has not charged it yet") if lookup_only else None
        if outcome is None:
            outcome = kiosk.sync.send(payment)
        crash_point("forward:after_send")
        self.record(payment, outcome, at_till)
        kiosk.telling.payment_changed(payment, previous)
        if outcome.kind == "request_rejected":
            kiosk.telling.alert_request(outcome.message)
        if tell:
            self._tell(payment, outcome)
        return outcome

    def _stripe_now(self) -> float | None:
        """Stripe's clock (unix), if the sync plugin can tell it: kept with the first attempt, for lookups."""
        stripe_now = optional(self.kiosk.sync, "Forwarder", "stripe_now")
        return stripe_now() if stripe_now else None

    def backoff(self, attempts: int) -> float:
        sync = self.kiosk.config["sync"]
        delay = min(sync["retry_max_seconds"], sync["retry_base_seconds"] * 2 ** max(0, attempts - 1))
        return delay * random.uniform(0.8, 1.2)

    def record(self, payment: Payment, outcome: Outcome, at_till: bool = False) -> None:
        """What the attempt came to, as a move of the state machine; durable before anyone hears of it."""
        kiosk = self.kiosk
        states.answered(payment, outcome)
        now = kiosk.clock()
        kind = outcome.kind
        retries = kiosk.config["sync"]["decline_retry_minutes"]
        if kind == "declined_for_now" and (at_till or payment.soft_declines >= len(retries)):
            # the customer is at the till (they can try again now), or the tries are used up
            kind = "declined"
            outcome = Outcome("declined", payment_intent=outcome.payment_intent,
                              decline_code=outcome.decline_code,
                              message=outcome.message if at_till else
                              f"{outcome.message} (tried {payment.soft_declines + 1} times)")
        if kind == "request_rejected" and at_till:
            # Stripe did nothing with a refused request: this sale is simply not charged
            kind, outcome = "refused", Outcome("refused", message=f"not charged: {outcome.message}")
        if kind == "succeeded":
            states.succeeded(payment, now)
        elif kind in ("declined", "refused"):
            states.failed(payment, now, outcome.decline_code if kind == "declined" else None, outcome.message)
        elif kind == "declined_for_now":
            states.declined_for_now(payment, now, outcome, retries)
        else:
            if kind == "request_rejected":
                delay = kiosk.config["sync"]["retry_max_seconds"]   # nothing changes until the kiosk does
            else:
                delay = outcome.retry_after or self.backoff(payment.attempts)
            states.retry_later(payment, now, outcome.message, delay)
        kiosk.store.save(payment)                        # durable before anyone hears of it
        if payment.offline and payment.settled and not payment.is_refund:   # the limits' history counts sales
            name = "offline_forwarded" if payment.state == SUCCEEDED else "offline_declined"
            with self._counters_lock:
                kiosk.store.set_meta(name, kiosk.store.get_meta(name, 0) + 1)

    def _tell(self, payment: Payment, outcome: Outcome) -> None:
        kiosk = self.kiosk
        if payment.is_refund:           # a refund settles with its own notices
            if payment.state == SUCCEEDED:
                kiosk.notify(notices.refunded(payment, kiosk.zone))
            elif payment.state == FAILED:
                kiosk.notify(notices.refund_failed(payment, kiosk.zone))
            return
        if payment.state == SUCCEEDED:
            kiosk.notify(notices.forwarded(payment, kiosk.zone))
        elif payment.state == FAILED:
            kiosk.notify(notices.declined(payment, kiosk.zone))
        elif outcome.kind == "declined_for_now":
            left = len(kiosk.config["sync"]["decline_retry_minutes"]) - payment.soft_declines + 1
            reason = f"{outcome.decline_code or 'not finished'} — {outcome.message}"
            kiosk.notify(notices.declined_for_now(payment, reason, left, kiosk.zone))
        # auth_error: told once per pass, in forward(); request_rejected: once per message
