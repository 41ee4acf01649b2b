"""Built-in sync plugin: forwards payments to Stripe as PaymentIntents.

Each payment becomes one PaymentIntent confirmed with the reader's
payment-method token, tagged ``metadata.kiosk_payment_id`` so an attempt
whose outcome was lost can be found again.  The idempotency key and exact
parameters come from the stored payment, so every retry -- in this process
or after a crash -- sends the same request.  stripe-python retries network
errors, 409 and 5xx itself with that key.

Never logs the API key or a request body: stripe-python's own console
logging (``STRIPE_LOG``) is switched off.  Requests are paced under Stripe's
rate limit (25/s in test mode, 100/s live).
"""
from __future__ import annotations

import logging
import os
import stat
import threading
import time
from email.utils import parsedate_to_datetime
from pathlib import Path

# stripe-python prints request and response bodies (tokens, metadata) to
# stderr when STRIPE_LOG is set, reading it once at import: never here.
os.environ.pop("STRIPE_LOG", None)
import stripe  # noqa: E402

stripe.log = None
if hasattr(stripe, "_util"):
    stripe._util.STRIPE_LOG = None  # in case stripe was imported before us
logging.getLogger("stripe").setLevel(logging.WARNING)   # its debug lines carry request bodies

from kiosk.config import Setting
from kiosk.hookspecs import hookimpl
from kiosk.interfaces import Outcome, Request
from kiosk.money import to_stripe_amount

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
    },
}

NO_KEY = "no Stripe API key: set STRIPE_API_KEY or [stripe] api_key_file"


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
        if self.api_key:
            self.client = stripe.StripeClient(
                self.api_key, base_addresses=base,
                max_network_retries=settings["max_network_retries"],
                http_client=stripe.RequestsClient(timeout=settings["request_timeout"]))
            self.probe = stripe.StripeClient(
                self.api_key, base_addresses=base, max_network_retries=0,
                http_client=stripe.RequestsClient(
                    timeout=min(2.0, settings["reachability_timeout"])))
        else:
            self.client = self.probe = None
        self.deadline = min(2.0, settings["reachability_timeout"])
        self.problem = None if self.api_key else NO_KEY
        self.key_rejected = False
        self.clock_offset = 0.0

    # -- online check ---------------------------------------------------------

    def reachable(self) -> bool:
        """One cheap authenticated request, answered within the deadline
        (<= 2 s) whatever the network does: the request runs on its own thread
        and a late answer counts as unreachable.  A rejected key is not
        reachable for selling; ``key_rejected`` tells forwarding to alert."""
        if self.probe is None:
            return False
        answer: dict = {}

        def probe():
            self.pace.wait()
            try:
                page = self.probe.v1.payment_intents.list(params={"limit": 1})
                answer["ok"] = True
                self._note_stripe_clock(page)
            except (stripe.AuthenticationError, stripe.PermissionError):
                answer["rejected"] = True
            except stripe.StripeError:
                pass
        worker = threading.Thread(target=probe, name="stripe-probe", daemon=True)
        worker.start()
        worker.join(self.deadline)
        if worker.is_alive():
            return False
        if "rejected" in answer:
            self.key_rejected, self.problem = True, "Stripe rejected the API key"
            return False
        if answer.get("ok"):
            self.key_rejected, self.problem = False, None
            return True
        return False

    def _note_stripe_clock(self, response) -> None:
        """Stripe's clock, from the Date header: lookups must not trust ours
        (a Raspberry Pi has no real-time clock)."""
        try:
            stripe_now = parsedate_to_datetime(response.last_response.headers["Date"]).timestamp()
        except (AttributeError, KeyError, TypeError, ValueError):
            return
        self.clock_offset = stripe_now - time.time()

    def stripe_now(self) -> float:
        """Unix time as Stripe sees it, as far as we last heard."""
        return time.time() + self.clock_offset

    # -- one payment ----------------------------------------------------------

    def prepare(self, payment) -> Request:
        metadata = {"kiosk_payment_id": payment.id, "kiosk_id": self.kiosk_id}
        if payment.offline:
            metadata["offline_stored_at"] = payment.created_at
        params = {
            "amount": to_stripe_amount(payment.amount, payment.currency),
            "currency": payment.currency,
            "payment_method": payment.token,
            "payment_method_types": ["card"],
            "confirm": True,
            "metadata": metadata,
        }
        return Request(idempotency_key=f"kiosk-{payment.id}", params=params)

    def send(self, payment) -> Outcome:
        if self.client is None:
            return Outcome("auth_error", message=NO_KEY)
        self.pace.wait()
        try:
            intent = self.client.v1.payment_intents.create(
                params=payment.request, options={"idempotency_key": payment.idempotency_key})
        except stripe.CardError as exc:
            return _declined(exc)
        except stripe.IdempotencyError:
            # the key was used with other parameters: find what that request did
            found = self.lookup(payment)
            if found.kind != "not_found":
                return found
            return Outcome("refused", message="Stripe refused a reused idempotency key")
        except stripe.StripeError as exc:
            return _from_error(exc)
        return _from_intent(intent.to_dict())

    def lookup(self, payment) -> Outcome:
        """List PaymentIntents created since just before the first attempt and
        match ``metadata.kiosk_payment_id`` (the search API is only eventually
        consistent, the list is not)."""
        if self.client is None:
            return Outcome("auth_error", message=NO_KEY)
        from kiosk.payment import parse_iso
        # the earlier of our clock and Stripe's at the first attempt, less a margin
        since = parse_iso(payment.first_attempt_at or payment.created_at).timestamp()
        if payment.first_attempt_stripe_at:
            since = min(since, payment.first_attempt_stripe_at)
        margin = self.settings["lookup_margin_minutes"] * 60
        params = {"limit": 100, "created": {"gte": int(since - margin)}}
        found = []
        try:
            while True:
                self.pace.wait()
                page = self.client.v1.payment_intents.list(params=params)
                data = [intent.to_dict() for intent in page.data]
                found += [i for i in data if (i.get("metadata") or {}).get("kiosk_payment_id") == payment.id]
                if not page.has_more or not data:
                    break
                params = dict(params, starting_after=data[-1]["id"])
        except (stripe.AuthenticationError, stripe.PermissionError):
            return Outcome("auth_error", message="Stripe rejected the API key")
        except stripe.StripeError as exc:
            # a failed lookup says nothing about the payment: never settle on it
            return Outcome("retry", message=f"lookup failed: {(exc.user_message or type(exc).__name__)}".splitlines()[0])
        if not found:
            return Outcome("not_found")
        if len(found) > 1:
            log.error("payment %s has %d PaymentIntents at Stripe: %s", payment.id, len(found),
                      ", ".join(i["id"] for i in found))
        best = next((i for i in found if i.get("status") == "succeeded"), found[0])
        return _from_intent(best)

    def close(self) -> None:
        pass


def _from_intent(intent: dict) -> Outcome:
    status = intent.get("status")
    if status == "succeeded":
        return Outcome("succeeded", payment_intent=intent["id"])
    if status == "requires_capture":
        # we never ask for manual capture; someone changed it at Stripe
        return Outcome("refused", payment_intent=intent["id"],
                       message="authorised but not captured: capture or cancel it in the Stripe Dashboard")
    error = intent.get("last_payment_error") or {}
    if status == "requires_payment_method" and error:
        return Outcome("declined", payment_intent=intent["id"],
                       decline_code=error.get("decline_code") or error.get("code") or "card_declined",
                       message=error.get("message") or "The card was declined.")
    if status == "requires_action":
        return Outcome("refused", payment_intent=intent["id"],
                       message="the card needs the customer's authentication, which a kiosk cannot ask for")
    if status == "canceled":
        return Outcome("refused", payment_intent=intent["id"], message="the PaymentIntent was canceled")
    # processing, requires_confirmation: not settled yet; look again later
    return Outcome("retry", payment_intent=intent["id"], message=f"Stripe says {status}")


def _declined(exc: stripe.CardError) -> Outcome:
    error = exc.error
    intent = getattr(error, "payment_intent", None) if error is not None else None
    intent_id = intent.get("id") if isinstance(intent, dict) else getattr(intent, "id", None)
    code = (getattr(error, "decline_code", None) if error is not None else None) or exc.code or "card_declined"
    return Outcome("declined", payment_intent=intent_id, decline_code=code,
                   message=exc.user_message or "The card was declined.")


def _from_error(exc: stripe.StripeError) -> Outcome:
    message = (exc.user_message or type(exc).__name__).splitlines()[0]
    if isinstance(exc, (stripe.AuthenticationError, stripe.PermissionError)):
        return Outcome("auth_error", message="Stripe rejected the API key")
    if isinstance(exc, stripe.RateLimitError):
        return Outcome("retry", message="Stripe rate limit; trying again later")
    if isinstance(exc, (stripe.APIConnectionError, stripe.APIError)):
        return Outcome("retry", message="Stripe could not be reached")
    if isinstance(exc, stripe.InvalidRequestError):
        if exc.http_status and exc.http_status >= 500:
            return Outcome("retry", message=message)
        return Outcome("refused", message=message)
    if exc.http_status and exc.http_status < 500:
        return Outcome("refused", message=message)
    return Outcome("retry", message=message)


class StripeSyncPlugin:
    @hookimpl
    def kiosk_settings(self):
        return SETTINGS

    @hookimpl
    def kiosk_open_sync(self, settings, kiosk_id):
        from kiosk.config import ConfigError
        try:
            return StripeForwarder(settings["stripe"], kiosk_id)
        except KeyFileError as exc:
            raise ConfigError(str(exc)) from None


plugin = StripeSyncPlugin()
