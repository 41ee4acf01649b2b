"""Built-in sync plugin: forwards payments to Stripe as PaymentIntents.

Each payment becomes one PaymentIntent confirmed with the reader's
payment-method token, tagged ``metadata.kiosk_payment_id`` so an attempt
whose outcome was lost can be found again.  The idempotency key and exact
parameters come from the stored payment, so every retry -- in this process
or after a crash -- sends the same request.  stripe-python retries network
errors, 409 and 5xx itself with that key.  Once Stripe holds a payment's
PaymentIntent, every later step (another try of the card, a cancel, a
capture) acts on that PaymentIntent and never creates a second one: a
PaymentIntent succeeds at most once, whatever becomes of idempotency keys.

A refund record (``payment.refund_of`` set) becomes one Refund of the sale's
PaymentIntent, under its own key and tagged with its own
``metadata.kiosk_payment_id``: looked up among that PaymentIntent's refunds
before any resend, so money goes back once.

The request shapes are in :mod:`.request`, what each answer means in
:mod:`.answers`, "ready to sell offline?" in :mod:`.readiness`.

Never logs the API key or a request body: stripe-python's own console
logging (``STRIPE_LOG``) is switched off.  Requests are paced under Stripe's
rate limit (25/s in test mode, 100/s live).
"""
from __future__ import annotations

import dataclasses
import logging
import os
import stat
import sys
import threading
import time
from email.utils import parsedate_to_datetime
from pathlib import Path

# stripe-python prints request and response bodies (tokens, metadata) to
# stderr when STRIPE_LOG is set, reading it once at import: never here.
os.environ.pop("STRIPE_LOG", None)
# stripe-python imports aiohttp, when it is installed, for an async client we
# never use: 10 MB and 80 ms on every `kiosk` command.  Hidden while stripe
# loads, and put back at once so anything else may still import it.
_hide_aiohttp = "aiohttp" not in sys.modules
if _hide_aiohttp:
    sys.modules["aiohttp"] = None       # makes `import aiohttp` raise ImportError
try:
    import stripe  # noqa: E402
finally:
    if _hide_aiohttp and sys.modules.get("aiohttp", 0) is None:
        del sys.modules["aiohttp"]

stripe.log = None
if hasattr(stripe, "_util"):
    stripe._util.STRIPE_LOG = None  # in case stripe was imported before us
logging.getLogger("stripe").setLevel(logging.WARNING)   # its debug lines carry request bodies

from kiosk import Outcome, Request, Setting, describe_items, hookimpl, parse_iso, to_stripe_amount

from . import answers, readiness
from . import request as shape
from .request import API_VERSION

log = logging.getLogger("kiosk.stripe")

SETTINGS = {
    "stripe": {
        "api_base": Setting(str, "https://api.stripe.com", "Stripe API address (a local peer in tests and the demo)"),
        "api_key_file": Setting(str, "", "File holding the secret key, mode 0600 (else STRIPE_API_KEY)", path=True),
        "reachability_timeout": Setting(float, 2.0, "Seconds the online check may take (at most 2)"),
        "request_timeout": Setting(float, 20.0, "Seconds one request to Stripe may take"),
        "max_network_retries": Setting(int, 2, "stripe-python's own retries of one attempt"),
        "concurrency": Setting(int, 4, "Payments forwarded at once"),
        "max_requests_per_second": Setting(float, 0.0, "0: 22/s for test keys, 95/s for live keys (Stripe: 25 and 100)"),
        "lookup_margin_minutes": Setting(float, 60.0, "Extra look-back when looking up an unknown outcome"),
        "offline_after_failures": Setting(int, 2, "Online checks in a row that Stripe must fail (500, 429, slow) "
                                                  "before the kiosk counts as offline; no connection counts at once"),
    },
}

NO_KEY = "no Stripe API key: set STRIPE_API_KEY or [stripe] api_key_file"
LATE_ANSWER_GRACE = 1.0     # seconds the online check's HTTP timeout runs past its deadline


class KeyFileError(Exception):
    pass


def read_key(settings: dict) -> str | None:
    key = os.environ.get("STRIPE_API_KEY", "").strip()
    if key:
        return key
    path = settings["api_key_file"]
    if not path:
        return None
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise KeyFileError(f"Stripe key file {path} does not exist") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(f"Stripe key file {path} is readable by others: chmod 600 {path}")
    return Path(path).read_text().strip() or None


class Pace:
    """A token bucket shared by all forwarding threads: ``rate`` requests a
    second on average, bursts of at most ``burst``.  Any one second then sees
    at most ``rate + burst`` requests even when network delays bunch them up
    at Stripe's end; a slot a worker was not ready for is kept, within the burst."""

    def __init__(self, rate: float, burst: int = 2):
        self.rate, self.burst = float(rate), float(burst)
        self.tokens = self.burst
        self.stamp = time.monotonic()
        self.lock = threading.Lock()

    def wait(self) -> None:
        while True:
            with self.lock:
                now = time.monotonic()
                self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
                self.stamp = now
                if self.tokens >= 1.0:
                    self.tokens -= 1.0
                    return
                pause = (1.0 - self.tokens) / self.rate
            time.sleep(pause)


class StripeForwarder:
    name = "stripe"
    refunds = True      # prepare/send/lookup/reconcile take refund records too

    def __init__(self, settings: dict, kiosk_id: str):
        self.settings = settings
        self.kiosk_id = kiosk_id
        self.api_key = read_key(settings)
        live = bool(self.api_key and self.api_key.startswith(("sk_live_", "rk_live_")))
        rate = settings["max_requests_per_second"] or (95.0 if live else 22.0)
        self.max_requests_per_second = rate
        self.concurrency = max(1, settings["concurrency"])
        self.pace = Pace(rate)
        base = {"api": settings["api_base"].rstrip("/")}
        self.deadline = min(2.0, settings["reachability_timeout"])
        if self.api_key:
            self.client = stripe.StripeClient(
                self.api_key, base_addresses=base, stripe_version=API_VERSION,
                max_network_retries=settings["max_network_retries"],
                http_client=stripe.RequestsClient(timeout=settings["request_timeout"]))
            # the check's own deadline (a join) decides "late"; the HTTP timeout comes
            # after it, or a slow answer raced it and was taken for no connection at all
            # (offline at once) instead of one late answer (a hiccup)
            self.probe = stripe.StripeClient(
                self.api_key, base_addresses=base, stripe_version=API_VERSION, max_network_retries=0,
                http_client=stripe.RequestsClient(timeout=self.deadline + LATE_ANSWER_GRACE))
        else:
            self.client = self.probe = None
        self.problem = None if self.api_key else NO_KEY
        self.key_missing = not self.api_key     # named as such everywhere, never as "unreachable"
        self.key_rejected = False
        self.request_refused: str | None = None   # Stripe refuses the online check itself: the kiosk needs an update
        self.clock_offset = 0.0
        self._stripe_heard: tuple[float, float] | None = None   # (Stripe's unix time, our monotonic then)
        self.last_answer: dict = {}        # what the last good online check saw: Stripe's headers, when
        self._state_lock = threading.Lock()
        self._failures = 0                 # online checks in a row that Stripe answered badly or late
        self._was_online = False
        self._gate = threading.Lock()      # one online check at a time; callers meanwhile share its answer
        self._checking: threading.Event | None = None
        self._answer = False

    # -- online check ---------------------------------------------------------

    def reachable(self) -> bool:
        """One cheap authenticated request, answered within the deadline
        (<= 2 s) whatever the network does: the request runs on its own thread
        and a late answer counts as a failure.  No connection is offline at
        once; a 500, a 429 or a late answer is a hiccup, and only
        ``offline_after_failures`` of them in a row make the kiosk offline --
        one bad answer must not turn a sale into an offline one.  A rejected
        key is not reachable for selling; ``key_rejected`` tells forwarding to alert.

        Checks asked for while one is under way (the background loop, a
        sale, ``kiosk check``) share its answer: one blip is counted once."""
        if self.probe is None:
            return False
        with self._gate:
            running = self._checking
            if running is None:
                mine = self._checking = threading.Event()
        if running is not None:
            running.wait(self.deadline + 1.0)
            return self._answer
        try:
            self._answer = self._check_once()
        finally:
            with self._gate:
                self._checking = None
            mine.set()
        return self._answer

    def _check_once(self) -> bool:
        answer: dict = {}

        def probe():
            self.pace.wait()
            try:
                page = self.probe.v1.payment_intents.list(params={"limit": 1})
                answer["ok"] = True
                self._note_answer(page)
            except (stripe.AuthenticationError, stripe.PermissionError) as exc:
                answer["rejected"] = exc
            except stripe.APIConnectionError:
                answer["no_connection"] = True
            except stripe.InvalidRequestError as exc:
                answer["refused"] = exc
            except stripe.StripeError as exc:
                answer["hiccup"] = exc
        worker = threading.Thread(target=probe, name="stripe-probe", daemon=True)
        worker.start()
        worker.join(self.deadline)
        with self._state_lock:
            if worker.is_alive():
                return self._hiccup(answered=False)
            if "rejected" in answer:
                self.key_rejected, self.problem = True, answers.from_error(answer["rejected"]).message
                self._failures, self._was_online = 0, False
                return False
            if "refused" in answer and (answer["refused"].http_status or 400) < 500:
                # Stripe refuses the kiosk's own request (an API version it no longer takes...): selling
                # online would fail every sale, so sell offline and keep the sales until the kiosk is fixed
                self.request_refused = answers.request_rejected(answer["refused"]).message
                self.problem = self.request_refused
                self._failures, self._was_online = 0, False
                return False
            if answer.get("ok"):
                self.key_rejected, self.problem, self.request_refused = False, None, None
                self._failures, self._was_online = 0, True
                return True
            if "hiccup" in answer:
                return self._hiccup(answered=True)
            self._failures, self._was_online = 0, False
            return False

    def _hiccup(self, answered: bool) -> bool:
        """A bad or late answer: still online, unless it keeps happening.  An
        answer, even a 500, proves the connection; a late one counts as online
        only when the last check found Stripe (it may be a dead network)."""
        self._failures += 1
        limit = max(1, self.settings["offline_after_failures"])
        online = (answered or self._was_online) and self._failures < limit
        self._was_online = online
        return online

    def _note_answer(self, response) -> None:
        """Stripe's clock, from the Date header: lookups must not trust ours
        (a Raspberry Pi has no real-time clock); and the version it answered in."""
        headers = getattr(getattr(response, "last_response", None), "headers", None) or {}
        self.last_answer = {"stripe_version": headers.get("Stripe-Version"), "date": headers.get("Date"),
                            "at": time.time()}
        try:
            stripe_now = parsedate_to_datetime(headers["Date"]).timestamp()
        except (KeyError, TypeError, ValueError):
            return
        self.clock_offset = stripe_now - time.time()
        self._stripe_heard = (stripe_now, time.monotonic())

    def stripe_now(self) -> float | None:
        """Unix time as Stripe sees it: its last Date header plus the monotonic
        time since, so stepping our clock moves nothing; None before Stripe answered."""
        heard = self._stripe_heard
        if heard is None:
            return None
        stripe_at, monotonic_at = heard
        return stripe_at + (time.monotonic() - monotonic_at)

    # -- one payment ----------------------------------------------------------

    def prepare(self, payment) -> Request:
        if payment.refund_of:
            return self._prepare_refund(payment)
        metadata = {"kiosk_payment_id": payment.id, "kiosk_id": self.kiosk_id}
        if payment.offline:
            metadata["offline_stored_at"] = payment.created_at
        if payment.tip:         # in Stripe's units, as `amount` is
            metadata["kiosk_tip"] = str(to_stripe_amount(payment.tip, payment.currency))
        if payment.items:
            metadata["kiosk_items"] = describe_items(payment.items, shape.METADATA_VALUE_MAX)
        params = shape.create_params(amount=to_stripe_amount(payment.amount, payment.currency),
                                     currency=payment.currency, token=payment.token, metadata=metadata,
                                     description=describe_items(payment.items, shape.DESCRIPTION_MAX),
                                     receipt_email=payment.receipt_email)
        return Request(idempotency_key=shape.idempotency_key(payment.id), params=params)

    def _prepare_refund(self, refund) -> Request:
        if not refund.payment_intent:
            # only a sale Stripe charged can be refunded: the core voids one it never sent
            raise ValueError(f"refund {refund.id}: the sale {refund.refund_of} has no PaymentIntent to refund")
        metadata = {"kiosk_payment_id": refund.id, "kiosk_refund_of": refund.refund_of, "kiosk_id": self.kiosk_id}
        params = shape.refund_params(payment_intent=refund.payment_intent,
                                     amount=to_stripe_amount(refund.amount, refund.currency), metadata=metadata)
        return Request(idempotency_key=shape.idempotency_key(refund.id), params=params)

    def upgrade(self, payment) -> Request | None:
        """A request stored by an earlier release, in today's shape (same key)."""
        if payment.refund_of:
            return None         # refunds are new in this release's shape
        params = shape.upgrade(payment.request or {})
        return None if params is None else Request(idempotency_key=payment.idempotency_key, params=params)

    def send(self, payment) -> Outcome:
        if self.client is None:
            return Outcome("auth_error", message=NO_KEY)
        if payment.refund_of:
            return self._send_refund(payment)
        if payment.payment_intent:
            # Stripe holds this sale already: carry on with that PaymentIntent, never make another
            return self._continue(payment, payment.payment_intent)
        try:
            self.pace.wait()
            intent = self.client.v1.payment_intents.create(
                params=payment.request, options={"idempotency_key": payment.idempotency_key})
        except stripe.CardError as exc:
            return answers.from_card_error(exc)
        except stripe.IdempotencyError:
            # the key was used with other parameters: find what that request did
            found = self.lookup(payment)
            if found.kind == "not_found" and found.payment_intent:
                return self._continue(payment, found.payment_intent)
            if found.kind != "not_found":
                return found
            return Outcome("request_rejected", message="Stripe refused the kiosk's request: its idempotency "
                                                       "key was used with other parameters")
        except stripe.StripeError as exc:
            return answers.from_error(exc)
        return self._settle(payment, intent.to_dict(), may_confirm=True)

    def _send_refund(self, refund) -> Outcome:
        """POST /v1/refunds with the stored request and key: a resend is replayed, never refunded twice."""
        if refund.refund_id:
            # Stripe holds this refund already: what it is now is the answer, never a second one
            return self._lookup_refund(refund)
        try:
            self.pace.wait()
            answer = self.client.v1.refunds.create(
                params=refund.request, options={"idempotency_key": refund.idempotency_key})
        except stripe.IdempotencyError:
            # the key was used with other parameters: whatever that request did is the answer
            found = self._lookup_refund(refund)
            if found.kind != "not_found":
                return found
            return Outcome("request_rejected", message="Stripe refused the kiosk's refund: its idempotency "
                                                       "key was used with other parameters")
        except stripe.InvalidRequestError as exc:
            return answers.refund_refused(exc, refund.payment_intent) or answers.from_error(exc)
        except stripe.PermissionError as exc:
            return answers.refunds_not_permitted(exc)
        except stripe.StripeError as exc:
            return answers.from_error(exc)
        return answers.from_refund(answer.to_dict(), refund.payment_intent)

    def _continue(self, payment, intent_id: str) -> Outcome:
        """The next step for a sale whose PaymentIntent Stripe holds."""
        try:
            intent = self._retrieve(intent_id)
        except stripe.StripeError as exc:
            return answers.from_error(exc)
        return self._settle(payment, intent, may_confirm=True)

    def _settle(self, payment, intent: dict, may_confirm: bool) -> Outcome:
        """Finish what a PaymentIntent's status asks for; at most one confirm per attempt."""
        status, intent_id = intent.get("status"), intent.get("id")
        if status in ("requires_payment_method", "requires_confirmation"):
            declined = answers.uncounted_decline(intent, payment.declined_attempt)
            if declined is not None:
                return declined
            if may_confirm:
                return self._confirm(payment, intent_id)
            return Outcome("declined_for_now", payment_intent=intent_id,
                           message=f"Stripe left the payment unfinished ({status})")
        if status == "requires_action":
            return self._cancel(payment, intent_id)
        if status == "requires_capture":
            return self._capture(payment, intent_id)
        return answers.from_intent(intent)

    def _step(self, key: str, call) -> dict | Outcome:
        """One follow-up call on the sale's PaymentIntent, with its own key.
        Returns the PaymentIntent as Stripe now holds it, or an Outcome."""
        try:
            self.pace.wait()
            return call({"idempotency_key": key}).to_dict()
        except stripe.CardError as exc:
            return answers.from_card_error(exc)
        except stripe.InvalidRequestError as exc:
            error = answers.error_body(exc)
            if error.get("code") != "payment_intent_unexpected_state":
                return answers.from_error(exc)
            # it moved on meanwhile (succeeded, cancelled...): go by what it is now
            intent = error.get("payment_intent")
            if isinstance(intent, dict) and intent.get("status"):
                return intent
            return Outcome("retry", message="Stripe says the payment moved on; looking again later")
        except stripe.StripeError as exc:
            return answers.from_error(exc)

    def _confirm(self, payment, intent_id: str) -> Outcome:
        key = shape.confirm_key(payment.idempotency_key, payment.soft_declines)
        answer = self._step(key, lambda options: self.client.v1.payment_intents.confirm(
            intent_id, params=shape.confirm_params(payment.request), options=options))
        if isinstance(answer, Outcome):
            # an error may not name the PaymentIntent: it is this one all the same
            return answer if answer.payment_intent or answer.kind == "auth_error" else \
                dataclasses.replace(answer, payment_intent=intent_id)
        return self._settle(payment, answer, may_confirm=False)

    def _cancel(self, payment, intent_id: str) -> Outcome:
        """A PaymentIntent waiting for 3-D Secure that nobody can do: cancel it
        at Stripe, never leave it hanging, and fail the sale."""
        answer = self._step(shape.step_key(payment.idempotency_key, "cancel"),
                            lambda options: self.client.v1.payment_intents.cancel(
                                intent_id, params=shape.cancel_params(), options=options))
        if isinstance(answer, Outcome):
            if answer.kind == "auth_error":
                return answer
            return Outcome("retry", payment_intent=intent_id,
                           message=f"cancelling a payment that needs authentication: {answer.message}")
        if answer.get("status") != "canceled":
            return self._settle(payment, answer, may_confirm=False)
        return Outcome("declined", payment_intent=intent_id, decline_code="authentication_required",
                       message=answers.AUTHENTICATION)

    def _capture(self, payment, intent_id: str) -> Outcome:
        """Authorised but not captured (someone asked for manual capture): the
        sale was approved for this amount, so take the money."""
        answer = self._step(shape.step_key(payment.idempotency_key, "capture"),
                            lambda options: self.client.v1.payment_intents.capture(intent_id, options=options))
        if isinstance(answer, Outcome):
            if answer.kind == "auth_error":
                return answer
            return Outcome("retry", payment_intent=intent_id, message=f"capturing the payment: {answer.message}")
        return self._settle(payment, answer, may_confirm=False)

    def _retrieve(self, intent_id: str) -> dict:
        self.pace.wait()
        return self.client.v1.payment_intents.retrieve(intent_id).to_dict()

    def lookup(self, payment) -> Outcome:
        """What Stripe did with this sale.  With its PaymentIntent known: that
        PaymentIntent.  Otherwise list PaymentIntents created since just before
        the first attempt and match ``metadata.kiosk_payment_id`` (the search
        API is only eventually consistent, the list is not)."""
        if self.client is None:
            return Outcome("auth_error", message=NO_KEY)
        if payment.refund_of:
            return self._lookup_refund(payment)
        if payment.payment_intent:
            try:
                intent = self._retrieve(payment.payment_intent)
            except stripe.StripeError as exc:
                return self._lookup_failed(exc)
            return answers.uncounted_decline(intent, payment.declined_attempt) or answers.from_intent(intent)
        # the earlier of our clock and Stripe's at the first attempt, less a margin
        since = parse_iso(payment.first_attempt_at or payment.created_at).timestamp()
        if payment.first_attempt_stripe_at:
            since = min(since, payment.first_attempt_stripe_at)
        since = int(since - self.settings["lookup_margin_minutes"] * 60)
        try:
            found = [i for i in self._intents_since(since)
                     if (i.get("metadata") or {}).get("kiosk_payment_id") == payment.id]
        except stripe.StripeError as exc:
            return self._lookup_failed(exc)
        if not found:
            return Outcome("not_found")
        if len(found) > 1:
            log.error("payment %s has %d PaymentIntents at Stripe: %s", payment.id, len(found),
                      ", ".join(i["id"] for i in found))
        best = next((i for i in found if i.get("status") == "succeeded"), found[0])
        # a decline this kiosk never heard of is recorded as it was, final or not
        return answers.uncounted_decline(best, payment.declined_attempt) or answers.from_intent(best)

    def _lookup_refund(self, refund) -> Outcome:
        """What Stripe did with a refund record: its Refund when the id is
        known, else the sale's refunds matched on ``metadata.kiosk_payment_id``."""
        try:
            if refund.refund_id:
                self.pace.wait()
                found = [self.client.v1.refunds.retrieve(refund.refund_id).to_dict()]
            else:
                found = [r for r in self._refunds_of(refund.payment_intent)
                         if (r.get("metadata") or {}).get("kiosk_payment_id") == refund.id]
        except stripe.PermissionError as exc:
            return answers.refunds_not_permitted(exc)
        except stripe.StripeError as exc:
            return self._lookup_failed(exc)
        if not found:
            return Outcome("not_found")
        if len(found) > 1:
            log.error("refund %s has %d refunds at Stripe: %s", refund.id, len(found),
                      ", ".join(r["id"] for r in found))
        best = next((r for r in found if r.get("status") in ("succeeded", "pending")), found[0])
        return answers.from_refund(best, refund.payment_intent)

    def _refunds_of(self, intent_id: str):
        """Every refund of one PaymentIntent, newest first, 100 a page."""
        return self._every(self.client.v1.refunds.list,
                           lambda after: shape.refund_list_params(intent_id, starting_after=after))

    def _every(self, listing, params_after):
        """Every object of a Stripe list (``listing``: its ``list`` call), a paced
        request per page; ``params_after(last_id)`` gives each page's parameters."""
        params = params_after(None)
        while True:
            self.pace.wait()
            page = listing(params=params)
            data = [found.to_dict() for found in page.data]
            yield from data
            if not page.has_more or not data:
                return
            params = params_after(data[-1]["id"])

    def reconcile(self, payments) -> set[str] | None:
        """The ids among ``payments`` (never sent by this kiosk) that Stripe
        already holds a PaymentIntent for: a data directory restored from an
        older copy, after Stripe forgot the idempotency keys, would otherwise
        charge them again.  One list of the PaymentIntents created since the
        oldest of them was taken (less the lookup margin), 100 a page, by
        creation time; for refund records, one list of refunds per sale
        refunded; None if Stripe could not be asked."""
        if self.client is None or not payments:
            return set()
        sales = [p for p in payments if not p.refund_of]
        refunds = [p for p in payments if p.refund_of]
        held: set[str] = set()
        try:
            if sales:
                wanted = {p.id for p in sales}
                since = int(min(parse_iso(p.created_at).timestamp() for p in sales)
                            - self.settings["lookup_margin_minutes"] * 60)
                held |= {pid for i in self._intents_since(since)
                         if (pid := (i.get("metadata") or {}).get("kiosk_payment_id")) in wanted}
            if refunds:
                # refund records: one list per sale refunded (a refund list cannot filter on metadata)
                held |= self._refunds_held(refunds)
        except stripe.StripeError as exc:
            log.warning("could not ask Stripe which payments it already holds: %s", answers.from_error(exc).message)
            return None
        return held

    def _refunds_held(self, refunds) -> set[str]:
        wanted = {p.id for p in refunds}
        held: set[str] = set()
        try:
            for intent_id in sorted({p.payment_intent for p in refunds if p.payment_intent}):
                held |= {pid for r in self._refunds_of(intent_id)
                         if (pid := (r.get("metadata") or {}).get("kiosk_payment_id")) in wanted}
        except stripe.PermissionError:
            # a key that may not read refunds cannot have made any: sending them is refused (403) too
            log.warning("the Stripe key may not read refunds: refund records wait for Refunds: Write")
            return set()
        return held

    def _intents_since(self, since: int):
        """Every PaymentIntent created at or after ``since`` (unix), newest first, a page at a time."""
        return self._every(self.client.v1.payment_intents.list,
                           lambda after: shape.list_params(since, starting_after=after))

    @staticmethod
    def _lookup_failed(exc: stripe.StripeError) -> Outcome:
        if isinstance(exc, (stripe.AuthenticationError, stripe.PermissionError)):
            return answers.from_error(exc)
        # a failed lookup says nothing about the payment: never settle on it
        return Outcome("retry", message=f"lookup failed: {answers.from_error(exc).message}")

    def check(self) -> list:
        """"Ready to sell offline?" as Stripe sees it (see :mod:`.readiness`)."""
        return readiness.check(self)

    def close(self) -> None:
        pass


class StripeSyncPlugin:
    @hookimpl
    def kiosk_settings(self):
        return SETTINGS

    @hookimpl
    def kiosk_open_sync(self, settings, kiosk_id):
        from kiosk import ConfigError
        try:
            return StripeForwarder(settings["stripe"], kiosk_id)
        except KeyFileError as exc:
            raise ConfigError(str(exc)) from None


plugin = StripeSyncPlugin()
