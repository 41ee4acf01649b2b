"""The sale engine: the life of a payment from card read to settled.

Rules it keeps:

- every state change is durable (the store fsyncs) before any notice, hook
  or return value tells anyone about it;
- a payment's idempotency key and request are stored with the sale, before
  the first attempt, and reused on every retry;
- an attempt whose outcome is unknown is looked up at Stripe before it is
  sent again;
- notifier and display plugins can fail without touching a sale.
"""
from __future__ import annotations

import logging
import random
import threading
import time
from contextlib import contextmanager
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from . import notices
from .faults import crash_point
from .interfaces import CardResult, Outcome, ReaderError, optional
from .limits import History, LimitRefused, Limits, Stored, base_limits, check_sale, describe_left
from .money import check_amount, currency_code, format_amount
from .notices import Notice
from .view import KioskView
from .sale_result import (APPROVED, APPROVED_OFFLINE, CANCELLED, DECLINED, REFUSED, UNCONFIRMED,
                          WINDOW_HOURS, OfflineOffer, SaleResult, check_contact)
from .payment import (FAILED, FORWARDING, PENDING, SUCCEEDED, Card, Payment, iso,
                      new_payment_id, parse_iso, utcnow)

log = logging.getLogger("kiosk.engine")

READINESS_SECONDS = 300     # how often `kiosk run` asks "ready to sell offline?" again
SYNC_NOTE_SECONDS = 60      # write "last synced" at most this often while idle online

@dataclass
class SyncReport:
    reached: bool
    succeeded: int = 0
    failed: int = 0
    pending: int = 0
    auth_error: str | None = None
    results: list = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"reached": self.reached, "succeeded": self.succeeded, "failed": self.failed,
                "pending": self.pending, "auth_error": self.auth_error}


class Kiosk:
    def __init__(self, config, host, store, reader, sync, clock=utcnow):
        self.config, self.host, self.store, self.reader, self.sync = config, host, store, reader, sync
        self.clock = clock
        self.online: bool | None = None
        self.recent_notices: deque[Notice] = deque(maxlen=50)   # for a screen that opens later
        self.wake = threading.Event()          # "sync now"
        self._forward_lock = threading.Lock()  # one forwarding pass at a time
        self._in_flight: set[str] = set()
        self._in_flight_lock = threading.Condition()   # guards _in_flight; waiters hear when one leaves
        self._last_sync_note = 0.0
        self._meta_lock = threading.Lock()       # read-modify-write of counters from forwarding threads
        self._key_alerted = False                # the vendor has been told the key is rejected
        self.sync_progress = (0, 0)              # (done, total) of the current or last pass
        self._request_alerts: set[str] = set()   # "needs an update" alarms already raised, by message
        self.last_readiness: list | None = None  # the last "ready to sell offline?" answer, for screens
        self._readiness_at: float | None = None
        if self.store.get_meta("initialized_at") is None:
            self.store.set_meta("initialized_at", iso(self.clock()))
        self.view = KioskView(self)                 # what hooks see
        self.plugin_trouble: dict[str, str] = dict(host.skipped)   # plugin -> one line, for status and screens
        host.on_trouble = self._plugin_failed
        self.host.call_isolated("kiosk_startup", kiosk=self.view)
        if host.safe_mode:
            self.notify(notices.safe_mode(host.safe_mode if isinstance(host.safe_mode, str) else "Asked for"))
        for line in host.skipped.values():
            self.notify(notices.plugin_trouble(line))
        for storage in optional(store, "PaymentStore", "recovered"):
            self.notify(Notice(notices.STORE_RECOVERED, "Queue recovered after power loss",
                               "an unfinished write was set aside; nothing acknowledged was lost", "warning"))
        self._upgrade_requests()
        self._tell_interrupted_sales()

    def _upgrade_requests(self) -> None:
        """Requests an earlier release stored in a shape this API version
        refuses are brought to today's, keeping their idempotency keys (the
        sync plugin says why that is safe), before anything is sent."""
        upgrade = optional(self.sync, "Forwarder", "upgrade")
        if upgrade is None:
            return
        changed = 0
        for payment in self.store.live():
            request = upgrade(payment)
            if request is None or request.params == payment.request:
                continue
            if request.idempotency_key != payment.idempotency_key:
                log.error("sync plugin changed the idempotency key of %s while upgrading; keeping the old request",
                          payment.id)
                continue
            payment.request = request.params
            self.store.save(payment)                     # durable before the first attempt in the new shape
            changed += 1
        if changed:
            log.info("brought %d stored request(s) to the current Stripe API shape", changed)

    def _tell_interrupted_sales(self) -> None:
        """An online sale the kiosk died in the middle of: the customer never
        saw "approved".  Tell the vendor once, before it is settled."""
        for payment in self.store.live():
            if payment.offline or payment.interrupted_told:
                continue
            payment.interrupted_told = True
            self.store.save(payment)
            self.notify(notices.interrupted(payment))

    # -- telling people ------------------------------------------------------

    def notify(self, notice: Notice) -> None:
        """To every notifier in ``[notifier] use`` and to the display in use."""
        self.recent_notices.append(notice)
        only = list(self.config["notifier"]["use"])
        if self.config["display"]["use"]:
            only.append(self.config["display"]["use"])
        self.host.call_isolated("kiosk_notify", only=only, notice=notice)

    def _plugin_failed(self, plugin: str, line: str) -> None:
        """A notifier or display raised (told once per hook): on the screen, sales go on."""
        self.plugin_trouble[plugin] = line
        self.notify(notices.plugin_trouble(line))

    def _changed(self, payment: Payment, previous: str | None) -> None:
        self.host.call_isolated("kiosk_payment_changed", payment=Payment.from_record(payment.to_record()),
                                previous_state=previous)

    # -- online or not -------------------------------------------------------

    def check_online(self) -> bool:
        online = self.sync.reachable()
        refused = optional(self.sync, "Forwarder", "request_refused")
        if not online and refused:
            self._alert_request(refused)
        if online != self.online:
            self.notify(Notice(notices.ONLINE, "Online", "Stripe is reachable", "success") if online
                        else Notice(notices.OFFLINE, "Offline", "sales are stored on the kiosk", "warning"))
        self.online = online
        return online

    # -- limits --------------------------------------------------------------

    def history(self) -> History:
        now = self.clock()
        last = parse_iso(self.store.get_meta("last_sync_at") or self.store.get_meta("initialized_at"))
        live = self.store.live()
        oldest = min((p.created() for p in live), default=None)
        return History(forwarded=self.store.get_meta("offline_forwarded", 0),
                       declined=self.store.get_meta("offline_declined", 0),
                       hours_since_sync=(now - last).total_seconds() / 3600 if last else 0.0,
                       oldest_pending_hours=None if oldest is None else (now - oldest).total_seconds() / 3600)

    def effective_limits(self, currency: str) -> Limits | None:
        base = base_limits(self.config["limits"], self.config.currency, currency)
        if base is None:
            return None
        return self.host.offline_limits(base=base, history=self.history())

    def stored(self, currency: str) -> Stored:
        live = self.store.live()
        return Stored(amount=sum(p.amount for p in live if p.currency == currency), count=len(live))

    # -- a sale --------------------------------------------------------------

    def take_sale(self, amount: int, currency: str | None = None, *, behavior: str | None = None,
                  confirm=None, customer: str | None = None, card: str | None = None,
                  cancel: threading.Event | None = None) -> SaleResult:
        """Take one sale through the reader.  ``confirm(offer) -> bool`` is asked
        before an offline sale in ``prefer_online``; without it the sale is refused."""
        currency = currency_code(currency or self.config.currency)
        check_amount(amount, currency)
        behavior = behavior or self.config["kiosk"]["offline_behavior"]
        cancel = cancel or threading.Event()
        if customer is not None:
            customer = check_contact(customer)

        offline = behavior == "force_offline" or not self.check_online()
        if offline and behavior == "require_online":
            return SaleResult(REFUSED, "Stripe cannot be reached and this kiosk takes online sales only")
        if offline:
            refusal = self._offline_refusal(amount, currency)
            if refusal is not None:
                return refusal
            if behavior == "prefer_online":
                offer = OfflineOffer(amount, currency, self.effective_limits(currency), self.stored(currency),
                                     customer=customer)
                if confirm is None or not confirm(offer):
                    return SaleResult(CANCELLED, "offline sale not confirmed; nothing stored")
                if offer.customer != customer:       # the vendor typed a contact on the confirm screen
                    customer = check_contact(offer.customer) if offer.customer else None

        try:
            card_result = self.reader.read_card(amount, currency, offline, cancel, card)
        except ReaderError as exc:
            return SaleResult(REFUSED, f"reader: {exc}")
        except Exception as exc:   # a reader plugin's bug must not take the kiosk down
            log.exception("reader plugin failed in read_card")
            return SaleResult(REFUSED, f"reader failed ({type(exc).__name__}); nothing stored")
        crash_point("sale:after_card")
        payment = self._store_sale(amount, currency, offline, card_result, customer)
        crash_point("sale:after_store")
        if offline:
            self.notify(notices.stored_offline(payment))
            return SaleResult(APPROVED_OFFLINE, "approved offline — will be sent when back online", payment)
        return self._charge_now(payment)

    def _offline_refusal(self, amount: int, currency: str) -> SaleResult | None:
        info = self.reader.info()
        if not info.supports_offline:
            return SaleResult(REFUSED, f"{info.name} cannot take payments offline; "
                                       "use a chip reader or wait until Stripe is reachable", limit="reader")
        try:
            limits = self.effective_limits(currency)
        except Exception as exc:
            log.exception("offline-limits policy failed")
            return SaleResult(REFUSED, f"the offline-limits policy failed ({type(exc).__name__}); "
                                       "offline sales are refused until it is fixed", limit="policy")
        if limits is None:
            return SaleResult(REFUSED, f"no offline limit is set for {currency.upper()}; "
                                       "offline sales in it are refused", limit="currency")
        try:
            check_sale(amount, limits, self.stored(currency))
        except LimitRefused as exc:
            self.notify(notices.limit_reached(str(exc)))
            return SaleResult(REFUSED, str(exc), limit=exc.which)
        return None

    def _store_sale(self, amount, currency, offline, card: CardResult, customer) -> Payment:
        payment = Payment(id=new_payment_id(), amount=amount, currency=currency,
                          created_at=iso(self.clock()), offline=offline,
                          card=Card(card.brand, card.last4, card.exp_month, card.exp_year),
                          token=card.token, reader=self.reader.info().name, customer=customer)
        request = self.sync.prepare(payment)
        payment.idempotency_key, payment.request = request.idempotency_key, request.params
        self.store.add(payment)                          # durable: key and request before any attempt
        self._changed(payment, None)
        return payment

    def _charge_now(self, payment: Payment) -> SaleResult:
        outcome = self.forward_one(payment, tell=False, at_till=True)
        if outcome.kind == "retry" and (self.store.get(payment.id) or payment).state == PENDING:
            # the answer was lost: ask Stripe what happened before telling the vendor anything
            outcome = self.forward_one(payment, tell=False, lookup_only=True, at_till=True)
        payment = self.store.get(payment.id) or payment
        if outcome.kind == "auth_error" and payment.state == PENDING:
            # the key was refused between the online check and the answer: stripe-python may have
            # retried a create Stripe had already charged, so this is not "not charged" -- keep it
            self._alert_key(outcome.message)
        if payment.state == SUCCEEDED:
            self.notify(notices.approved(payment))
            return SaleResult(APPROVED, "approved", payment)
        if payment.state == FAILED:
            self.notify(Notice(notices.SALE_DECLINED, "Declined" if payment.decline_code else "Not charged",
                               f"{payment.decline_code}: {payment.message}" if payment.decline_code
                               else payment.message, "warning", payment.public()))
            if not payment.decline_code:
                return SaleResult(REFUSED, payment.message, payment)
            return SaleResult(DECLINED, f"declined: {payment.message}", payment)
        # Stripe's answer is lost and the lookup could not settle it: the vendor must know
        payment.interrupted_told = True
        self.store.save(payment)
        self.notify(notices.interrupted(payment))
        return SaleResult(UNCONFIRMED, "not confirmed: Stripe did not answer. The sale is kept and will be "
                                       "settled when Stripe answers — do not charge the card again until then",
                          payment)

    # -- forwarding ----------------------------------------------------------

    def _backoff(self, attempts: int) -> float:
        sync = self.config["sync"]
        delay = min(sync["retry_max_seconds"], sync["retry_base_seconds"] * 2 ** max(0, attempts - 1))
        return delay * random.uniform(0.8, 1.2)

    def forward_one(self, payment: Payment, tell: bool = True, lookup_only: bool = False,
                    at_till: bool = False) -> Outcome:
        """One attempt for one payment, following the rules in the module
        docstring.  Works on the stored copy: if another thread is forwarding
        it, waits for that attempt and reports what it settled."""
        with self._in_flight_lock:
            while payment.id in self._in_flight:
                self._in_flight_lock.wait()
            current = self.store.get(payment.id)
            if current is None or current.settled:
                return _outcome_of(current)
            self._in_flight.add(payment.id)
        try:
            return self._forward_one(current, tell, lookup_only, at_till)
        finally:
            with self._in_flight_lock:
                self._in_flight.discard(payment.id)
                self._in_flight_lock.notify_all()

    def _forward_one(self, payment: Payment, tell: bool, lookup_only: bool = False,
                     at_till: bool = False) -> Outcome:
        """``at_till``: the customer is still there (an online sale being
        charged), so a decline or a refused request ends the sale now."""
        # a request Stripe refused outright did nothing: no need to look it up before sending again
        unknown_before = payment.attempts > 0 and payment.last_outcome != "request_rejected"
        payment.last_outcome = None              # durable with the mark: a crash from here is "unknown"
        previous = payment.state
        now = iso(self.clock())
        payment.state, payment.attempts, payment.last_attempt_at = FORWARDING, payment.attempts + 1, now
        if payment.first_attempt_at is None:
            payment.first_attempt_at = now
            stripe_now = optional(self.sync, "Forwarder", "stripe_now")
            payment.first_attempt_stripe_at = stripe_now() if stripe_now else None
        self.store.save(payment)                         # durable: an attempt has started
        crash_point("forward:after_mark")
        outcome = None
        if unknown_before or lookup_only:
            outcome = self.sync.lookup(payment)
            if outcome.kind == "not_found":
                if outcome.payment_intent:
                    # Stripe holds the sale's PaymentIntent, unfinished: send carries on with it
                    payment.payment_intent = outcome.payment_intent
                outcome = Outcome("retry", payment_intent=outcome.payment_intent,
                                  message="Stripe has not charged it yet") if lookup_only else None
        if outcome is None:
            outcome = self.sync.send(payment)
        crash_point("forward:after_send")
        payment.last_outcome = outcome.kind
        self._record(payment, outcome, at_till)
        self._changed(payment, previous)
        if outcome.kind == "request_rejected":
            self._alert_request(outcome.message)
        if tell:
            self._tell(payment, outcome)
        return outcome

    def _record(self, payment: Payment, outcome: Outcome, at_till: bool = False) -> None:
        now = self.clock()
        kind = outcome.kind
        if outcome.payment_intent:
            payment.payment_intent = outcome.payment_intent   # every later step acts on that one
        retries = self.config["sync"]["decline_retry_minutes"]
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
            payment.state, payment.message = SUCCEEDED, ""
            payment.decline_code, payment.settled_at = None, iso(now)
        elif kind in ("declined", "refused"):
            payment.state = FAILED
            payment.decline_code = outcome.decline_code if kind == "declined" else None
            payment.message, payment.settled_at = outcome.message, iso(now)
        elif kind == "declined_for_now":
            payment.state, payment.soft_declines = PENDING, payment.soft_declines + 1
            payment.declined_attempt = outcome.attempt
            reason = outcome.decline_code or "not finished"
            payment.message = f"declined for now ({reason}): {outcome.message}"
            delay = retries[payment.soft_declines - 1] * 60
            payment.next_attempt_at = iso(now + timedelta(seconds=delay))
        else:
            payment.state, payment.message = PENDING, outcome.message
            if kind == "request_rejected":
                delay = self.config["sync"]["retry_max_seconds"]   # nothing changes until the kiosk does
            else:
                delay = outcome.retry_after or self._backoff(payment.attempts)
            payment.next_attempt_at = iso(now + timedelta(seconds=delay))
        self.store.save(payment)                         # durable before anyone hears of it
        if payment.offline and payment.settled:
            name = "offline_forwarded" if payment.state == SUCCEEDED else "offline_declined"
            with self._meta_lock:
                self.store.set_meta(name, self.store.get_meta(name, 0) + 1)

    def _tell(self, payment: Payment, outcome: Outcome) -> None:
        if payment.state == SUCCEEDED:
            self.notify(notices.forwarded(payment))
        elif payment.state == FAILED:
            self.notify(notices.declined(payment))
        elif outcome.kind == "declined_for_now":
            left = len(self.config["sync"]["decline_retry_minutes"]) - payment.soft_declines + 1
            reason = f"{outcome.decline_code or 'not finished'} — {outcome.message}"
            self.notify(notices.declined_for_now(payment, reason, left))
        # auth_error: told once per pass, in forward(); request_rejected: once per message

    def _due(self, payment: Payment, now: datetime, force: bool = False) -> bool:
        """``force`` ("sync now") skips the back-off, but a card declined for
        now is never tried again sooner than its wait: card networks count retries."""
        when = parse_iso(payment.next_attempt_at)
        if when is None or when <= now:
            return True
        return force and payment.soft_declines == 0

    def forward(self, force: bool = True, stop: threading.Event | None = None,
                progress=None) -> SyncReport:
        """Forward what is waiting.  ``force`` ignores back-off ("sync now").
        ``progress(done, total)`` is called as payments settle."""
        with self._forward_lock:
            if not self.check_online():
                rejected = optional(self.sync, "Forwarder", "key_rejected")
                report = SyncReport(reached=rejected, pending=len(self.store.live()),
                                    auth_error="Stripe rejected the API key" if rejected else None)
                if rejected:
                    self._alert_key(report.auth_error)
                return report
            now = self.clock()
            due = [p for p in self.store.live() if self._due(p, now, force)]
            report = SyncReport(reached=True)
            abort = threading.Event()
            done = 0
            done_lock = threading.Lock()

            def work(payment: Payment):
                nonlocal done
                if abort.is_set() or (stop is not None and stop.is_set()):
                    return None
                outcome = self.forward_one(payment)
                if outcome.kind == "auth_error":
                    abort.set()
                with done_lock:
                    done += 1
                    if progress is not None:
                        progress(done, len(due))
                    self._progress(done, len(due))
                return outcome

            self._progress(0, len(due))
            workers = max(1, min(self.sync.concurrency, len(due)))
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="forward") as pool:
                outcomes = list(pool.map(work, due))
            for outcome in outcomes:
                if outcome is not None and outcome.kind == "auth_error":
                    report.auth_error = outcome.message
            unsettled = any(o is not None and o.kind in ("retry", "request_rejected") for o in outcomes)
            if done < len(due):          # stopped early: the pass is over all the same
                self._progress(len(due), len(due))
            live = self.store.live()
            still_live = {p.id for p in live}
            settled = [self.store.get(p.id) for p in due if p.id not in still_live]
            report.succeeded = sum(1 for p in settled if p and p.state == SUCCEEDED)
            report.failed = sum(1 for p in settled if p and p.state == FAILED)
            report.pending = len(live)
            if report.auth_error:
                self._alert_key(report.auth_error)
            elif not unsettled:
                self._key_alerted = False
                self.note_synced(force=True)     # only a pass Stripe fully answered counts as a sync
            return report

    def _progress(self, done: int, total: int) -> None:
        self.sync_progress = (done, total)
        self.host.call_isolated("kiosk_sync_progress", done=done, total=total)

    @contextmanager
    def reader_swapped(self, reader):
        """Take sales through another reader for a while (the demo's Tap to Pay phone)."""
        previous, self.reader = self.reader, reader
        try:
            yield reader
        finally:
            self.reader = previous
            reader.close()

    def sync_problem(self) -> str | None:
        """The sync plugin's one line of trouble, if it has one."""
        return optional(self.sync, "Forwarder", "problem")

    def request_sync(self) -> None:
        """"Sync now" from a button or screen: the background loop forwards at once."""
        self.wake.set()

    def mark_followed_up(self, payment_id: str) -> Payment:
        """The vendor has dealt with a failed payment (called the customer...)."""
        payment = self.store.get(payment_id)
        if payment is None or payment.state != FAILED:
            raise ValueError(f"no failed payment {payment_id}")
        if not payment.followed_up:
            payment.followed_up = True
            self.store.save(payment)
            self._changed(payment, FAILED)
        return payment

    def needs_attention(self) -> list[Payment]:
        """Failed forwards the vendor has not followed up yet, newest first:
        payments that failed after the customer left (offline sales, and online
        sales whose answer was lost) -- not a decline at the till."""
        return [p for p in self.store.settled()
                if p.state == FAILED and not p.followed_up and (p.offline or p.interrupted_told)]

    def _alert_request(self, message: str) -> None:
        """Stripe refused the kiosk's own request: tell the vendor once per
        kind of refusal, not once per payment."""
        with self._meta_lock:
            if message in self._request_alerts:
                return
            self._request_alerts.add(message)
        log.error("%s", message)
        self.notify(notices.needs_update(message))

    def _alert_key(self, message: str) -> None:
        """Tell the vendor once per outage, not every poll."""
        if not self._key_alerted:
            self._key_alerted = True
            self.notify(notices.auth_failed(message))

    def note_synced(self, force: bool = False) -> None:
        if force or time.monotonic() - self._last_sync_note > SYNC_NOTE_SECONDS:
            self._last_sync_note = time.monotonic()
            self.store.set_meta("last_sync_at", iso(self.clock()))

    # -- the 24-hour window ----------------------------------------------------

    def remind(self) -> list[Notice]:
        """Remind the vendor as the oldest pending payment crosses each
        configured age; each threshold once for that payment.  When several
        are crossed at once (the kiosk was off), only the most urgent is sent."""
        now = self.clock()
        live = self.store.live()
        if not live:
            return []
        with self._in_flight_lock:
            oldest = self.store.get(live[0].id)
            if oldest is None or oldest.settled or oldest.id in self._in_flight:
                return []
            age = (now - oldest.created()).total_seconds() / 3600
            due = [h for h in self.config["kiosk"]["reminder_hours"] if h <= age and h not in oldest.reminded_hours]
            if not due:
                return []
            oldest.reminded_hours = sorted(set(oldest.reminded_hours) | set(due))
            self.store.save(oldest)                      # durable before the reminder goes out
        notice = notices.reminder(age, len(live), WINDOW_HOURS)
        self.notify(notice)
        return [notice]

    # -- ready to sell offline? ------------------------------------------------

    def readiness(self) -> list:
        """Every "ready to sell offline?" line (see :mod:`kiosk.readiness`);
        kept in ``last_readiness`` for screens, which must not ask the network."""
        from . import readiness
        lines = readiness.check(self)
        self.last_readiness, self._readiness_at = lines, time.monotonic()
        return lines

    # -- the appliance loop ----------------------------------------------------

    def run_background(self, stop: threading.Event) -> None:
        """Forward whenever Stripe is reachable, send reminders, tidy the store.
        Sleeps between checks (battery): wakes early on ``self.wake``."""
        poll = self.config["sync"]["poll_seconds"]
        while not stop.is_set():
            forced = self.wake.is_set()
            self.wake.clear()
            try:
                if self.check_online():
                    if any(self._due(p, self.clock()) for p in self.store.live()) or forced:
                        self.forward(force=forced, stop=stop)
                    else:
                        self.note_synced()
                elif optional(self.sync, "Forwarder", "key_rejected"):
                    self._alert_key("Stripe rejected the API key")
                if self.online and (self._readiness_at is None
                                    or time.monotonic() - self._readiness_at > READINESS_SECONDS):
                    self.readiness()     # asked while online: offline, Stripe's lines could not be checked
                self.remind()
                self.store.maintain()
            except Exception:
                log.exception("background forwarding pass failed; trying again in %.0f s", poll)
            self.wake.wait(poll)
            if stop.is_set():
                break

    # -- what the vendor asks --------------------------------------------------

    def status(self, check: bool = True) -> dict:
        online = self.check_online() if check else self.online
        now = self.clock()
        live = self.store.live()
        by_currency: dict[str, dict] = {}
        for p in live:
            entry = by_currency.setdefault(p.currency, {"count": 0, "amount": 0})
            entry["count"] += 1
            entry["amount"] += p.amount
        for code, entry in by_currency.items():
            entry["formatted"] = format_amount(entry["amount"], code)
        oldest = min((p.created() for p in live), default=None)
        currencies = sorted({self.config.currency, *by_currency, *self.config["limits"]["currencies"]})
        limits = {}
        for code in currencies:
            try:
                effective = self.effective_limits(code)
            except Exception as exc:
                log.exception("offline-limits policy failed")
                limits[code] = {"error": f"offline-limits policy failed ({type(exc).__name__})"}
                continue
            if effective is not None:
                limits[code] = dict(effective.as_dict(), left=max(0, effective.total - by_currency.get(code, {}).get("amount", 0)))
        info = self.reader.info()
        return {
            "kiosk_id": self.config.kiosk_id,
            "online": online,
            "offline_behavior": self.config["kiosk"]["offline_behavior"],
            "pending": {"count": len(live), "by_currency": by_currency},
            "oldest_pending_at": iso(oldest),
            "oldest_pending_age_hours": None if oldest is None else round((now - oldest).total_seconds() / 3600, 3),
            "window_hours_left": None if oldest is None else round(max(0.0, WINDOW_HOURS - (now - oldest).total_seconds() / 3600), 3),
            "limits": limits,
            "last_sync_at": self.store.get_meta("last_sync_at"),
            "reader": {"name": info.name, "supports_offline": info.supports_offline,
                       "battery": info.battery, "connected": info.connected},
            "safe_mode": bool(self.host.safe_mode),
            "plugin_trouble": dict(self.plugin_trouble),
        }

    def close(self) -> None:
        self.host.call_isolated("kiosk_shutdown", kiosk=self.view)
        for part in (self.reader, self.sync, self.store):
            try:
                part.close()
            except Exception:
                log.exception("closing %s failed", type(part).__name__)


def _outcome_of(payment: Payment | None) -> Outcome:
    """What a payment someone else settled came to."""
    if payment is None:
        return Outcome("refused", message="no such payment")
    if payment.state == SUCCEEDED:
        return Outcome("succeeded", payment_intent=payment.payment_intent)
    kind = "declined" if payment.decline_code else "refused"
    return Outcome(kind, payment_intent=payment.payment_intent, decline_code=payment.decline_code,
                   message=payment.message)
