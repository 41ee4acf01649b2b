"""A fake Stripe API server for tests, benchmarks and the no-account demo.

This is a small, stdlib-only HTTP server (it imports stripe-python only for
the request contract) that speaks enough of Stripe's v1 wire format
(form-encoded requests, JSON objects and error bodies, ``Request-Id``,
``Stripe-Version``, ``Idempotent-Replayed`` and ``Date`` headers, HTTP status
codes) that the real stripe-python client works against it unmodified and
raises its real exception classes.  It is **never used to take real
payments**: no card data exists here, every object it returns is made up, and
it holds everything in memory.

It holds Stripe's contract: before anything else happens, every request's
parameters (POST body, GET query) are checked by :mod:`kiosk.testing.stripe_contract`
against the types stripe-python generates from Stripe's OpenAPI spec for the
API version it sends.  A request real Stripe would refuse (an unknown or
misspelt parameter at any depth, a missing one, a bad integer, boolean or enum
value, ``payment_method_types`` which API version endive removed) is answered
with Stripe's 400 and recorded in :attr:`FakeStripe.breaches`.  A
``Stripe-Version`` header other than :attr:`FakeStripe.api_version` is refused
the same way (code ``api_version_invalid``, this fake's own).

What it implements, as of API version ``2026-10-28.endive``:

* ``POST /v1/payment_intents``: create, and with ``confirm=true`` one
  confirmation attempt.  ``allowed_payment_method_types`` filters to the
  compatible types (the answer's ``payment_method_types``) and is mutually
  exclusive with ``automatic_payment_methods``,
  ``excluded_payment_method_types`` and ``payment_method_configuration``.
  Without it dynamic payment methods apply, and confirming needs
  ``automatic_payment_methods[allow_redirects]=never`` or a ``return_url``.
  ``error_on_requires_action`` (like ``return_url``, ``mandate``,
  ``mandate_data``, ``off_session``) only goes with ``confirm=true``.
* ``POST /v1/payment_intents/{id}/confirm``, ``.../cancel``, ``.../capture``
  (``payment_intent_unexpected_state`` from the wrong status, with the
  PaymentIntent in the error as Stripe sends it),
* ``GET /v1/payment_intents`` (newest first, ``limit``, ``starting_after``,
  ``ending_before``, ``created`` filters) and ``GET /v1/payment_intents/{id}``.
  Other PaymentIntent routes stripe-python knows (update, search, ...) are
  checked against the contract, then answered 404 like an unknown URL.
* ``POST /v1/refunds`` (of a PaymentIntent's or a charge's captured charge;
  ``amount`` defaults to what is left), ``GET /v1/refunds`` (newest first,
  ``payment_intent``, ``charge`` and ``created`` filters, ``limit``,
  ``starting_after``, ``ending_before``) and ``GET /v1/refunds/{id}``.  The
  charge keeps ``amount_refunded`` and ``refunded``.  Refused as Stripe does
  (400 ``invalid_request_error``): nothing left (``charge_already_refunded``,
  "Charge ch_... has already been refunded."), more than is left
  (``amount_too_large``, "Refund amount ($6.00) is greater than unrefunded
  amount on charge ($5.00)"; "... than charge amount ..." before any refund),
  no captured charge (no code, "This PaymentIntent (pi_...) does not have a
  successful charge to refund.").  Update and cancel are checked, then 404.
  In BHD, JOD, KWD, OMR and TND, a PaymentIntent's or a refund's amount not
  ending in 0 is refused, as Stripe documents (400, ``param`` ``amount``).
* Stripe's test tokens: ``pm_card_visa`` and the other brands succeed,
  ``pm_card_chargeDeclined*`` decline (402 ``card_error``; the PaymentIntent
  goes to ``requires_payment_method`` with ``last_payment_error``), and
  ``pm_card_authenticationRequired`` / ``pm_card_threeDSecure2Required`` need
  3-D Secure: with ``error_on_requires_action=true`` the attempt fails with
  402 ``authentication_required``, otherwise the PaymentIntent waits in
  ``requires_action`` with a ``next_action``.  Every attempt that reaches the
  card network makes a new charge ``ch_...`` (``latest_charge``).
* API-key checks, a sliding one-second rate limiter (Stripe test mode allows
  25 requests per second), and idempotency keys on every POST route, with
  Stripe's rule: a result is saved only once an endpoint started executing
  (200s, 402 card errors and ``payment_intent_unexpected_state``); contract
  breaches and other parameter-validation errors save nothing, so the same
  key can be sent again with corrected parameters.  A saved key replays with
  ``Idempotent-Replayed: true``; other parameters or another path under the
  same key get ``idempotency_error``.
* The ``Date`` header follows :attr:`FakeStripe.clock`, like ``created``.

Controls for tests (all thread-safe):

* :meth:`~FakeStripe.fail_next` ``(n, status=500, code=None)``: the next *n*
  requests get *status* before anything else (429 ``rate_limit``, or with
  ``code="lock_timeout"`` Stripe's lock timeout and ``Stripe-Should-Retry:
  true``; 5xx ``api_error``; 409 ``lock_timeout``).
* :meth:`~FakeStripe.drop_next`, :meth:`~FakeStripe.hang_next`: the next
  creates are committed, then the answer is lost or held back.
* :meth:`~FakeStripe.slow_next` ``(n, seconds)``: the next *n* requests of
  any route wait *seconds* before they are processed and answered.
* :meth:`~FakeStripe.decline_next`: the next confirmation attempts are
  declined with the given ``code``/``decline_code``/``advice_code``.
* :meth:`~FakeStripe.leave_next` ``(n, status)``: the next confirmation
  attempts leave the PaymentIntent in *status* and answer 200.
* :meth:`~FakeStripe.leave_refund_next` ``(n, status)``: the next refunds are
  created ``pending`` (or ``requires_action``); :meth:`~FakeStripe.set_refund_status`
  fails, cancels or settles one out of band (a failed refund gives the amount
  back to the charge's unrefunded amount).
* :meth:`~FakeStripe.set_status`: change a PaymentIntent out of band
  (``processing`` settles, someone cancels it in the Dashboard).
* :meth:`~FakeStripe.set_offline`, :meth:`~FakeStripe.reject_api_keys`,
  :meth:`~FakeStripe.prune_idempotency_keys`, and the attributes
  :attr:`~FakeStripe.latency`, :attr:`~FakeStripe.clock` and
  :attr:`~FakeStripe.api_version`.

Inspection: :attr:`~FakeStripe.payment_intents`,
:meth:`~FakeStripe.intents_for`, :attr:`~FakeStripe.refunds`,
:meth:`~FakeStripe.refunds_for`, :meth:`~FakeStripe.charge_of`, :attr:`~FakeStripe.requests` (with each
request's decoded ``params``), :attr:`~FakeStripe.breaches` and
:attr:`~FakeStripe.max_requests_per_second`.

Usage::

    with FakeStripe() as fake:
        client = stripe.StripeClient("sk_test_x", base_addresses={"api": fake.url})
        client.v1.payment_intents.create(params={...})
        assert fake.payment_intents and not fake.breaches

or from a shell: ``python -m kiosk.testing.fake_stripe --port 12111``.
"""

from __future__ import annotations

import argparse
import base64
import collections
import copy
import email.utils
import json
import re
import secrets
import signal
import socket
import string
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, NamedTuple

from . import stripe_contract

__all__ = ["FakeStripe", "main", "parse_form"]

API_VERSION = stripe_contract.API_VERSION   # what stripe-python 16.1 is generated for
# The SDK services whose routes this fake checks and answers (their generated params types).
SERVICES = stripe_contract.SERVICES + ("RefundService",)

_ALNUM = string.ascii_letters + string.digits

# Presentment currencies Stripe accepts ("Supported currencies").  Kept apart
# from kiosk.money on purpose: a peer that shared the kiosk's tables could not
# catch a mistake in them.
SUPPORTED_CURRENCIES = frozenset("""
usd aed afn all amd ang aoa ars aud awg azn bam bbd bdt bgn bhd bif bmd bnd bob
brl bsd bwp byn bzd cad cdf chf clp cny cop crc cve czk djf dkk dop dzd egp etb
eur fjd fkp gbp gel gip gmd gnf gtq gyd hkd hnl htg huf idr ils inr isk jmd jod
jpy kes kgs khr kmf krw kwd kyd kzt lak lbp lkr lrd lsl mad mdl mga mkd mmk mnt
mop mur mvr mwk mxn myr mzn nad ngn nio nok npr nzd omr pab pen pgk php pkr pln
pyg qar ron rsd rub rwf sar sbd scr sek sgd shp sle sos srd std szl thb tjs tnd
top try ttd twd tzs uah ugx uyu uzs vnd vuv wst xaf xcd xcg xof xpf yer zar zmw
""".split())
ZERO_DECIMAL = frozenset("bif clp djf gnf jpy kmf krw mga pyg rwf vnd vuv xaf xof xpf".split())
THREE_DECIMAL = frozenset("bhd jod kwd omr tnd".split())

# Stripe's minimum charge amounts, in the API's units ("Minimum and maximum charge amounts").
MINIMUM_AMOUNT = {
    "usd": 50, "aed": 200, "aud": 50, "bgn": 100, "brl": 50, "cad": 50, "chf": 50,
    "czk": 1500, "dkk": 250, "eur": 50, "gbp": 30, "hkd": 400, "huf": 17500,
    "inr": 50, "jpy": 50, "mxn": 1000, "myr": 200, "nok": 300, "nzd": 50,
    "pln": 200, "ron": 200, "sek": 300, "sgd": 50, "thb": 1000,
}
MAXIMUM_AMOUNT = 99_999_999   # eight digits
_SYMBOLS = {"usd": "$", "eur": "\u20ac", "gbp": "\u00a3", "jpy": "\u00a5"}

_DOCS = "https://stripe.com/docs/error-codes/"

# Decline test tokens: name after ``pm_card_`` (or ``pm_card_visa_``) ->
# (code, decline_code, message, param).
_DECLINED = "Your card was declined."
DECLINES: dict[str, tuple[str, str, str, str | None]] = {
    "chargeDeclined": ("card_declined", "generic_decline", _DECLINED, None),
    "chargeDeclinedInsufficientFunds": (
        "card_declined", "insufficient_funds", "Your card has insufficient funds.", None),
    "chargeDeclinedLostCard": ("card_declined", "lost_card", _DECLINED, None),
    "chargeDeclinedStolenCard": ("card_declined", "stolen_card", _DECLINED, None),
    "chargeDeclinedFraudulent": ("card_declined", "fraudulent", _DECLINED, None),
    "chargeDeclinedVelocityLimitExceeded": (
        "card_declined", "card_velocity_exceeded",
        "Your card was declined for making repeated attempts too frequently "
        "or exceeding its amount limit.", None),
    "chargeDeclinedExpiredCard": (
        "expired_card", "expired_card", "Your card has expired.", "exp_month"),
    "chargeDeclinedIncorrectCvc": (
        "incorrect_cvc", "incorrect_cvc", "Your card's security code is incorrect.", "cvc"),
    "chargeDeclinedProcessingError": (
        "processing_error", "processing_error",
        "An error occurred while processing your card. Try again in a little bit.", None),
}

# Test tokens of cards whose issuer always asks for 3-D Secure -> last4 ("Testing": 3D Secure).
AUTHENTICATION_TOKENS = {"authenticationRequired": "3184", "threeDSecure2Required": "3220"}
_AUTHENTICATION_DECLINE = ("authentication_required", "authentication_required",
                           "Your card was declined. This transaction requires authentication.",
                           None)

# brand, last4, funding for the successful test tokens (anything else: a Visa).
_CARDS = {
    "visa": ("visa", "4242", "credit"),
    "visa_debit": ("visa", "5556", "debit"),
    "mastercard": ("mastercard", "4444", "credit"),
    "mastercard_debit": ("mastercard", "8210", "debit"),
    "mastercard_prepaid": ("mastercard", "5100", "prepaid"),
    "amex": ("amex", "8431", "credit"),
    "discover": ("discover", "1117", "credit"),
    "diners": ("diners", "0004", "credit"),
    "jcb": ("jcb", "0505", "credit"),
    "unionpay": ("unionpay", "0005", "credit"),
}

# The payment method types this fake account has enabled in its Dashboard, and
# the currencies each works with (None: any); compatibility filters on these.
ENABLED_TYPES: dict[str, frozenset[str] | None] = {
    "card": None, "link": None, "cashapp": frozenset({"usd"}),
    "us_bank_account": frozenset({"usd"}), "sepa_debit": frozenset({"eur"}),
    "ideal": frozenset({"eur"}), "bancontact": frozenset({"eur"}),
    "card_present": None, "interac_present": frozenset({"cad"}),
}
_TERMINAL_TYPES = frozenset({"card_present", "interac_present"})   # never offered dynamically

REFUND_STATUSES = ("pending", "requires_action", "succeeded", "failed", "canceled")
REFUND_LEAVE_STATUSES = ("pending", "requires_action")
PAYMENT_INTENT_STATUSES = ("requires_payment_method", "requires_confirmation", "requires_action",
                           "processing", "requires_capture", "canceled", "succeeded")
LEAVE_STATUSES = ("processing", "requires_action", "requires_capture", "requires_confirmation",
                  "requires_payment_method")
_CONFIRMABLE = ("requires_payment_method", "requires_confirmation", "requires_action")
_CANCELABLE = ("requires_payment_method", "requires_capture", "requires_confirmation",
               "requires_action", "processing")
# Create parameters that "can only be used with confirm=true" (PaymentIntents create reference).
_CONFIRM_ONLY = ("error_on_requires_action", "mandate", "mandate_data", "off_session", "return_url")
# allowed_payment_method_types is mutually exclusive with these (changelog 2026-07-29.dahlia).
_EXCLUSIVE_WITH_ALLOWED = ("automatic_payment_methods", "excluded_payment_method_types",
                           "payment_method_configuration")

_PM_TOKEN = re.compile(r"^pm_card_[A-Za-z0-9_]+$")
_KEY_RE = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")

_IDEMPOTENCY_MISMATCH = (
    "Keys for idempotent requests can only be used with the same parameters they "
    "were first used with. Try using a key other than '{key}' if you meant to "
    "execute a different request.")
_REDIRECTS_NEED_RETURN_URL = (
    "A `return_url` must be specified because this Payment Intent is configured to "
    "automatically accept the payment methods enabled in the Dashboard, some of which may "
    "require a full page redirect to succeed. If you do not want to accept redirect-based "
    "payment methods, set `automatic_payment_methods[enabled]` to `true` and "
    "`automatic_payment_methods[allow_redirects]` to `never` when creating Setup Intents "
    "and Payment Intents.")
_LOCK_TIMEOUT = (
    "This object cannot be accessed right now because another API request or Stripe process "
    "is currently accessing it. If you see this error intermittently, retry the request. If "
    "you see this error frequently and are making multiple concurrent requests to a single "
    "object, make your requests serially or at a lower rate.")
# Stripe's client libraries retry lock timeouts ("Rate limits": object lock timeouts);
# stripe-python does so only when told by this header, so Stripe sends it with them.
_SHOULD_RETRY = {"Stripe-Should-Retry": "true"}


class _Decline(NamedTuple):
    code: str
    decline_code: str
    message: str
    param: str | None = None
    advice_code: str | None = None


def _rand(n: int) -> str:
    return "".join(secrets.choice(_ALNUM) for _ in range(n))


class _StripeError(Exception):
    """An API error answer: HTTP status plus the ``error`` object (None values
    dropped).  ``executed``: the endpoint had started, so an idempotency key
    saves this answer; ``headers`` go out with it."""

    def __init__(self, status: int, type_: str, message: str, *, code: str | None = None,
                 param: str | None = None, executed: bool = False,
                 headers: dict[str, str] | None = None, **extra: Any):
        super().__init__(message)
        self.status = status
        self.executed = executed
        self.headers = dict(headers or {})
        err = {"type": type_, "code": code, "message": message, "param": param}
        if code and code not in stripe_contract.OWN_CODES and "doc_url" not in extra:
            err["doc_url"] = _DOCS + code.replace("_", "-")
        err.update(extra)
        # Stripe omits attributes that are null in error objects.
        self.error = {k: v for k, v in err.items() if v is not None}


def _invalid(message: str, param: str | None = None, code: str | None = None,
             status: int = 400, **extra: Any) -> _StripeError:
    return _StripeError(status, "invalid_request_error", message, code=code, param=param, **extra)


# -- form decoding --------------------------------------------------------------

def parse_form(text: str, keep_dicts: frozenset[str] = frozenset({"metadata"})) -> dict:
    """Decode Stripe-style form parameters (``a[b]=1``, ``a[0]=x``, ``a[]=y``)
    into nested dicts and lists.  Dicts whose keys are all indices become lists,
    except those named in *keep_dicts* (metadata keys may be digits)."""
    root: dict = {}
    for key, value in urllib.parse.parse_qsl(text, keep_blank_values=True):
        m = _KEY_RE.match(key)
        if not m:
            raise _invalid(f"Invalid parameter name: {key}", param=key,
                           code="parameter_invalid_type")
        parts = [m.group(1)] + re.findall(r"\[([^\[\]]*)\]", m.group(2))
        node = root
        for part in parts[:-1]:
            if part == "":
                part = str(len(node))
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise _invalid(f"Invalid hash: {key}", param=parts[0],
                               code="parameter_invalid_type")
            node = child
        last = parts[-1] if parts[-1] != "" else str(len(node))
        if isinstance(node.get(last), dict):
            raise _invalid(f"Invalid hash: {key}", param=parts[0], code="parameter_invalid_type")
        node[last] = value
    return _listify(root, keep_dicts)


def _listify(node: Any, keep_dicts: frozenset[str], name: str | None = None) -> Any:
    if not isinstance(node, dict):
        return node
    if name in keep_dicts:
        return dict(node)
    out = {k: _listify(v, keep_dicts, k) for k, v in node.items()}
    if out and name is not None and all(k.isdigit() for k in out):
        return [out[k] for k in sorted(out, key=int)]
    return out


def _whole_tens(amount: int, currency: str) -> None:
    """Stripe takes three-decimal currencies in PaymentIntents and refunds
    only with a last digit of 0 (docs, "Three-decimal currencies": "round
    amounts to the nearest ten"); the wording of its refusal is ours."""
    if currency in THREE_DECIMAL and amount % 10:
        raise _invalid(f"Amounts in {currency.upper()} must end in 0 (a multiple of 10): {amount} does not.",
                       param="amount")


def _major(amount: int, currency: str) -> str:
    if currency in ZERO_DECIMAL:
        return f"{amount:,}"
    if currency in THREE_DECIMAL:
        return f"{amount / 1000:,.3f}"
    return f"{amount / 100:,.2f}"


def _format_amount(amount: int, currency: str) -> str:
    major, symbol = _major(amount, currency), _SYMBOLS.get(currency)
    return f"{symbol}{major} {currency}" if symbol else f"{major} {currency}"


def _expand(params: dict) -> list:
    return list(params.get("expand") or [])


# -- HTTP plumbing ----------------------------------------------------------------

class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128
    fake: "FakeStripe"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"      # keep-alive, as stripe-python's requests session expects
    server_version = "nginx"
    sys_version = ""
    server: _Server

    def setup(self) -> None:
        super().setup()
        try:   # headers and body go out in separate writes: avoid Nagle/delayed-ACK stalls
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        self.server.fake._track(self.connection, True)

    def version_string(self) -> str:
        return self.server_version

    def date_time_string(self, timestamp: float | None = None) -> str:
        # the kiosk reads Stripe's time from Date: it follows the fake's clock
        when = self.server.fake.clock() if timestamp is None else timestamp
        return email.utils.formatdate(when, usegmt=True)

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass
        finally:
            self.server.fake._track(self.connection, False)

    def log_message(self, format: str, *args: Any) -> None:   # quiet
        pass

    def _dispatch(self) -> None:
        self.server.fake._handle(self)

    do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = _dispatch


# -- the fake -------------------------------------------------------------------------

def shutdown_promptly(server) -> None:
    """``server.shutdown()`` for a ``socketserver`` loop, without waiting out
    its poll interval: while the loop is asked to end, a connection to its
    port wakes it (an empty connection is no request).  Tests stop hundreds
    of peers; this keeps each stop to a few ms."""
    address = server.server_address[:2]
    stopper = threading.Thread(target=server.shutdown, name=f"stop-peer:{address[1]}")
    stopper.start()
    while stopper.is_alive():
        try:
            socket.create_connection(address, timeout=0.2).close()
        except OSError:
            pass
        stopper.join(0.005)


class FakeStripe:
    """In-memory fake of Stripe's PaymentIntents and Refunds APIs over loopback HTTP.

    All controls and inspection properties are thread-safe.  ``clock``
    (default :func:`time.time`) supplies the unix time used for ``created``,
    ``canceled_at`` and the ``Date`` header; tests may replace it.
    ``api_version`` is the only ``Stripe-Version`` served.  ``rate_limit`` of
    ``None`` or ``0`` disables rate limiting.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, rate_limit: int | None = 25):
        self.host = host
        self.port = port
        self.rate_limit = rate_limit
        self.latency: float = 0.0
        self.clock: Callable[[], float] = time.time
        self.api_version: str = stripe_contract.API_VERSION
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()
        # state
        self._pis: list[dict] = []
        self._pi_by_id: dict[str, dict] = {}
        self._seq: dict[str, int] = {}
        self._charges: dict[str, dict] = {}
        self._refunds: list[dict] = []
        self._refund_by_id: dict[str, dict] = {}
        self._idempotency: dict[str, dict] = {}
        self._requests: list[dict] = []
        self._breaches: list[dict] = []
        self._window: collections.deque[float] = collections.deque()    # all requests
        self._admitted: collections.deque[float] = collections.deque()  # passed the limiter
        self._max_rps = 0
        # faults and scripted answers
        self._fail_n = 0
        self._fail_status = 500
        self._fail_code: str | None = None
        self._drop_n = 0
        self._hang_n = 0
        self._hang_seconds = 0.0
        self._slow_n = 0
        self._slow_seconds = 0.0
        self._decline_n = 0
        self._decline: _Decline | None = None
        self._leave_n = 0
        self._leave_status = "processing"
        self._leave_refund_n = 0
        self._leave_refund_status = "pending"
        self._offline = False
        self._reject_keys = False

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> "FakeStripe":
        if self._server is not None:
            raise RuntimeError("FakeStripe already started")
        stripe_contract.prepare(SERVICES)
        self._stopping.clear()
        server = _Server((self.host, self.port), _Handler)
        server.fake = self
        self._server = server
        self.port = server.server_address[1]
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05},
            name=f"fake-stripe:{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()          # wakes hanging / slow handlers
        shutdown_promptly(server)
        with self._lock:
            conns = list(self._connections)
        for conn in conns:            # keep-alive connections would otherwise keep being served
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> "FakeStripe":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("FakeStripe not started")
        host = self.host if ":" not in self.host else f"[{self.host}]"
        return f"http://{host}:{self.port}"

    # -- faults -----------------------------------------------------------------------

    def fail_next(self, n: int, status: int = 500, code: str | None = None) -> None:
        """Answer the next *n* requests with *status* before doing anything else
        (429: Stripe's rate-limit error, or with ``code="lock_timeout"`` its lock
        timeout, which also carries ``Stripe-Should-Retry: true``; 5xx:
        ``api_error``; 409: ``lock_timeout``).  *code* replaces the error's code."""
        with self._lock:
            self._fail_n = int(n)
            self._fail_status = int(status)
            self._fail_code = code

    def drop_next(self, n: int) -> None:
        """The next *n* creates (``POST /v1/payment_intents`` or ``/v1/refunds``) are
        processed and committed (idempotency record included), then the connection
        is closed unanswered."""
        with self._lock:
            self._drop_n = int(n)

    def hang_next(self, n: int, seconds: float) -> None:
        """The next *n* creates (PaymentIntents or refunds) are committed, then the
        answer is held back for *seconds* (cut short, unanswered, if the server stops)."""
        with self._lock:
            self._hang_n = int(n)
            self._hang_seconds = float(seconds)

    def slow_next(self, n: int, seconds: float) -> None:
        """The next *n* requests of any route wait *seconds* before they are
        processed and answered (cut short, unprocessed, if the server stops)."""
        with self._lock:
            self._slow_n = int(n)
            self._slow_seconds = float(seconds)

    def decline_next(self, n: int = 1, *, code: str = "card_declined",
                     decline_code: str = "generic_decline", advice_code: str | None = None,
                     message: str | None = None) -> None:
        """The next *n* confirmation attempts (create with ``confirm=true``, or
        ``/confirm``) are declined so: 402 ``card_error`` with *code*,
        *decline_code* and *advice_code* (Stripe's are ``try_again_later``,
        ``do_not_try_again`` and ``confirm_card_data``), and the PaymentIntent
        goes to ``requires_payment_method`` with ``last_payment_error``."""
        decline = _Decline(code, decline_code, message or _decline_message(code, decline_code),
                           _decline_param(code), advice_code)
        with self._lock:
            self._decline_n = int(n)
            self._decline = decline

    def leave_next(self, n: int = 1, status: str = "processing") -> None:
        """The next *n* confirmation attempts leave the PaymentIntent in *status*
        (one of :data:`LEAVE_STATUSES`) with no error and answer 200, as Stripe
        can (``requires_action`` even when ``error_on_requires_action`` was sent)."""
        if status not in LEAVE_STATUSES:
            raise ValueError(f"status must be one of {', '.join(LEAVE_STATUSES)}")
        with self._lock:
            self._leave_n = int(n)
            self._leave_status = status

    def set_status(self, pi_id: str, status: str, *,
                   cancellation_reason: str | None = None) -> None:
        """Change PaymentIntent *pi_id* to *status* out of band, as Stripe does when
        a ``processing`` payment settles or fails, or someone cancels it in the
        Dashboard.  Its charge follows (KeyError if no such PaymentIntent)."""
        if status not in PAYMENT_INTENT_STATUSES:
            raise ValueError(f"status must be one of {', '.join(PAYMENT_INTENT_STATUSES)}")
        with self._lock:
            pi = self._pi_by_id.get(pi_id)
            if pi is None:
                raise KeyError(pi_id)
            self._set_status(pi, status, reason=cancellation_reason)

    def leave_refund_next(self, n: int = 1, status: str = "pending") -> None:
        """The next *n* refunds are created in *status* (``pending``: the card
        network has not confirmed yet, ``pending_reason`` ``processing``)."""
        if status not in REFUND_LEAVE_STATUSES:
            raise ValueError(f"status must be one of {', '.join(REFUND_LEAVE_STATUSES)}")
        with self._lock:
            self._leave_refund_n = int(n)
            self._leave_refund_status = status

    def set_refund_status(self, refund_id: str, status: str, *,
                          failure_reason: str | None = None) -> None:
        """Change refund *refund_id* out of band, as Stripe does when a pending
        refund settles or a refund fails later (``failed`` with a
        *failure_reason*, ``canceled``): the money comes back to the charge's
        unrefunded amount.  KeyError if no such refund."""
        if status not in REFUND_STATUSES:
            raise ValueError(f"status must be one of {', '.join(REFUND_STATUSES)}")
        with self._lock:
            refund = self._refund_by_id.get(refund_id)
            if refund is None:
                raise KeyError(refund_id)
            self._set_refund_status(refund, status, failure_reason)

    def set_offline(self, flag: bool) -> None:
        """While True every request's connection is closed without an answer."""
        with self._lock:
            self._offline = bool(flag)

    def reject_api_keys(self, flag: bool) -> None:
        """While True every request gets 401 "Invalid API Key provided"."""
        with self._lock:
            self._reject_keys = bool(flag)

    def prune_idempotency_keys(self) -> None:
        """Forget every stored idempotency key, as Stripe does after 24 hours."""
        with self._lock:
            self._idempotency.clear()

    # -- inspection ---------------------------------------------------------------

    @property
    def payment_intents(self) -> list[dict]:
        """Every PaymentIntent created, in creation order (deep copies)."""
        with self._lock:
            return copy.deepcopy(self._pis)

    def intents_for(self, kiosk_payment_id: str) -> list[dict]:
        """PaymentIntents whose ``metadata.kiosk_payment_id`` equals *kiosk_payment_id*."""
        return self._tagged(self._pis, kiosk_payment_id)

    @property
    def refunds(self) -> list[dict]:
        """Every refund created, in creation order (deep copies)."""
        with self._lock:
            return copy.deepcopy(self._refunds)

    def refunds_for(self, kiosk_payment_id: str) -> list[dict]:
        """Refunds whose ``metadata.kiosk_payment_id`` equals *kiosk_payment_id*."""
        return self._tagged(self._refunds, kiosk_payment_id)

    def _tagged(self, objects: list[dict], kiosk_payment_id: str) -> list[dict]:
        with self._lock:
            return [copy.deepcopy(o) for o in objects if o["metadata"].get("kiosk_payment_id") == kiosk_payment_id]

    def charge_of(self, pi_id: str) -> dict | None:
        """The latest charge of PaymentIntent *pi_id* (a deep copy), or None."""
        with self._lock:
            pi = self._pi_by_id.get(pi_id)
            charge = self._charges.get(pi["latest_charge"] or "") if pi else None
            return copy.deepcopy(charge)

    @property
    def requests(self) -> list[dict]:
        """One record per request received: ``method``, ``path``, ``query``,
        ``params`` (decoded body or query; None if never decoded),
        ``stripe_version`` (the header sent, or None), ``time`` (monotonic),
        ``idempotency_key``, ``status`` (None when no answer was sent),
        ``fault`` (None, "offline", "slow", "fail", "drop", "hang") and ``replayed``."""
        with self._lock:
            return [copy.deepcopy(r) for r in self._requests]

    @property
    def breaches(self) -> list[dict]:
        """Every request refused for breaking Stripe's contract (parameters or
        ``Stripe-Version``): ``method``, ``path``, ``code``, ``param``, ``message``."""
        with self._lock:
            return [dict(b) for b in self._breaches]

    @property
    def max_requests_per_second(self) -> int:
        """The most requests seen in any sliding one-second window (rejected ones included)."""
        with self._lock:
            return self._max_rps

    # -- request handling ---------------------------------------------------------------

    def _track(self, conn: socket.socket, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    def _handle(self, h: _Handler) -> None:
        try:
            length = int(h.headers.get("Content-Length") or 0)
        except ValueError:
            length = 0
        raw = h.rfile.read(length) if length > 0 else b""
        split = urllib.parse.urlsplit(h.path)
        method, path = h.command, split.path
        idem_key = h.headers.get("Idempotency-Key")
        rec = {"method": method, "path": path, "query": split.query, "params": None,
               "stripe_version": h.headers.get("Stripe-Version"),
               "time": time.monotonic(), "idempotency_key": idem_key,
               "status": None, "fault": None, "replayed": False}

        with self._lock:
            self._requests.append(rec)
            if self._offline:
                rec["fault"] = "offline"
                h.close_connection = True
                return
            self._count_arrival(rec["time"])
            slow = self._take_slow(rec)
        if slow > 0 and self._stopping.wait(slow):
            h.close_connection = True
            return

        with self._lock:
            served = self.api_version
            status, body, headers, action = self._answer(h, method, path, split.query, raw, rec)
            if action is not None:
                rec["fault"] = action[0]
            if action is None or action[0] != "drop":
                rec["status"] = status

        if action is not None and action[0] == "drop":
            h.close_connection = True
            return
        delay = self.latency + (action[1] if action is not None else 0.0)
        if delay > 0 and self._stopping.wait(delay):
            with self._lock:
                rec["status"] = None
            h.close_connection = True
            return
        self._send(h, status, body, headers, served, method, idem_key)

    def _count_arrival(self, now: float) -> None:
        while self._window and self._window[0] <= now - 1.0:
            self._window.popleft()
        self._window.append(now)
        self._max_rps = max(self._max_rps, len(self._window))

    def _take_slow(self, rec: dict) -> float:
        if self._slow_n <= 0:
            return 0.0
        self._slow_n -= 1
        rec["fault"] = "slow"
        return self._slow_seconds

    def _send(self, h: _Handler, status: int, body: bytes, headers: dict[str, str],
              served: str, method: str, idem_key: str | None) -> None:
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        h.send_header("Request-Id", headers.pop("Request-Id"))
        h.send_header("Stripe-Version", served)
        h.send_header("Cache-Control", "no-cache, no-store")
        h.send_header("Access-Control-Allow-Origin", "*")
        if method == "POST" and idem_key:
            h.send_header("Idempotency-Key", idem_key)
        for k, v in headers.items():
            h.send_header(k, v)
        h.end_headers()
        try:
            h.wfile.write(body)
            h.wfile.flush()
        except OSError:
            h.close_connection = True

    def _answer(self, h: _Handler, method: str, path: str, query: str, raw: bytes,
                rec: dict) -> tuple[int, bytes, dict, tuple[str, float] | None]:
        """Status, body, extra headers and the create fault (drop/hang) for one request."""
        request_id = "req_" + _rand(14)
        status, payload, headers, action = 500, b"", {}, None
        try:
            if self._fail_n > 0:
                self._fail_n -= 1
                rec["fault"] = "fail"
                raise self._fault_error(self._fail_status, self._fail_code)
            self._authenticate(h.headers)
            self._rate_limit(rec["time"])
            params = self._decode(method, path, query, raw)
            rec["params"] = params
            self._check_contract(method, path, rec["stripe_version"], params)
            status, payload, headers, action = self._route(
                method, path, params, rec["idempotency_key"], request_id, rec)
        except _StripeError as e:
            status, payload, headers = e.status, {"error": e.error}, dict(e.headers)
            if status == 401:
                headers["WWW-Authenticate"] = 'Basic realm="Stripe"'
        except Exception as e:   # a bug here: answer like Stripe's own 500s
            status, payload = 500, {"error": {
                "type": "api_error", "message": f"Fake Stripe internal error: {e!r}"}}
        body = payload if isinstance(payload, bytes) else _dump(payload)
        return status, body, {"Request-Id": request_id, **headers}, action

    def _decode(self, method: str, path: str, query: str, raw: bytes) -> dict:
        text = query
        if method != "GET":
            body = raw.decode("utf-8", errors="replace")
            text = f"{query}&{body}" if query and body else (query or body)
        try:
            return parse_form(text)
        except _StripeError as e:   # undecodable parameters break the contract too
            self._record_breach(method, path, e.error.get("code"), e.error.get("param"), str(e))
            raise

    def _check_contract(self, method: str, path: str, sent_version: str | None,
                        params: dict) -> None:
        breach = (stripe_contract.check_version(sent_version, self.api_version)
                  or stripe_contract.check(method, path, params, SERVICES))
        if breach is not None:
            self._record_breach(method, path, breach.code, breach.param, breach.message)
            raise _StripeError(breach.status, breach.type, breach.message, code=breach.code,
                               param=breach.param, doc_url=breach.error.get("doc_url"))

    def _record_breach(self, method: str, path: str, code: str | None, param: str | None,
                       message: str) -> None:
        self._breaches.append({"method": method, "path": path, "code": code, "param": param,
                               "message": message})

    def _fault_error(self, status: int, code: str | None) -> _StripeError:
        if status == 429 and code == "lock_timeout":
            return _invalid(_LOCK_TIMEOUT, code="lock_timeout", status=429, headers=_SHOULD_RETRY)
        error = self._plain_fault(status)
        if code is not None:
            error.error["code"] = code
            error.error["doc_url"] = _DOCS + code.replace("_", "-")
        return error

    def _plain_fault(self, status: int) -> _StripeError:
        if status == 429:
            return self._rate_limit_error()
        if status >= 500:
            return _StripeError(
                status, "api_error",
                "Sorry, something went wrong. We've already been notified of the problem, "
                "but if you need any help, you can reach us at support.stripe.com/contact.")
        if status == 401:
            return _invalid("Invalid API Key provided: sk_test_****", status=401)
        if status == 402:
            return _StripeError(402, "card_error", _DECLINED, code="card_declined",
                                decline_code="generic_decline")
        if status == 404:
            return _invalid("No such object.", code="resource_missing", status=404)
        if status == 409:
            return _invalid(
                "This object cannot be accessed right now because another API request "
                "or Stripe process is currently accessing it. If you see this error "
                "intermittently, retry the request.", code="lock_timeout", status=409,
                headers=_SHOULD_RETRY)
        return _invalid("Injected failure.", status=status)

    @staticmethod
    def _rate_limit_error() -> _StripeError:
        return _StripeError(
            429, "invalid_request_error",
            "Request rate limit exceeded. Learn more about rate limits here "
            "https://stripe.com/docs/rate-limits.",
            code="rate_limit", doc_url=_DOCS + "rate-limit")

    def _authenticate(self, headers: Any) -> None:
        auth = (headers.get("Authorization") or "").strip()
        key = ""
        if auth[:7].lower() == "bearer ":
            key = auth[7:].strip()
        elif auth[:6].lower() == "basic ":
            try:
                key = base64.b64decode(auth[6:].strip()).decode().split(":", 1)[0]
            except (ValueError, UnicodeDecodeError):
                key = ""
        if not key:
            raise _invalid(
                "You did not provide an API key. You need to provide your API key in the "
                "Authorization header, using Bearer auth (e.g. 'Authorization: Bearer "
                "YOUR_SECRET_KEY'). See https://stripe.com/docs/api#authentication for "
                "details, or we can help at https://support.stripe.com/.", status=401)
        if self._reject_keys or not key.startswith(("sk_test_", "sk_live_", "rk_")):
            shown = key[:8] + "*" * max(0, len(key) - 12) + key[-4:] if len(key) > 12 else key[:3] + "***"
            raise _invalid(f"Invalid API Key provided: {shown}", status=401)

    def _rate_limit(self, now: float) -> None:
        if not self.rate_limit:
            return
        while self._admitted and self._admitted[0] <= now - 1.0:
            self._admitted.popleft()
        if len(self._admitted) >= self.rate_limit:
            raise self._rate_limit_error()
        self._admitted.append(now)

    def _route(self, method: str, path: str, params: dict, idem_key: str | None,
               request_id: str, rec: dict) -> tuple[int, Any, dict, tuple[str, float] | None]:
        found = stripe_contract.match(method, path, SERVICES)
        handler = _HANDLERS.get((found.route.service, found.route.operation)) if found else None
        if handler is None:
            raise _invalid(
                f"Unrecognized request URL ({method}: {path}). Please see https://stripe.com/docs "
                "or we can help at https://support.stripe.com/.", status=404)
        # the object named in the path: {intent} or {refund}
        intent = next(iter(found.path_params.values()), None)
        if method != "POST":
            return 200, handler(self, intent, params), {}, None
        return self._post(path, params, idem_key, request_id, rec,
                          lambda: handler(self, intent, params),
                          create=found.route.operation == "create")

    def _post(self, path: str, params: dict, idem_key: str | None, request_id: str, rec: dict,
              execute: Callable[[], dict], *, create: bool):
        """Run a POST under Stripe's idempotency rules (see the module docstring)."""
        headers: dict[str, str] = {}
        try:
            if idem_key and len(idem_key) > 255:
                raise _invalid("Idempotency-Key header must be at most 255 characters long.",
                               param="Idempotency-Key")
            fingerprint = _dump(["POST", path, params]) if idem_key else None
            stored = self._idempotency.get(idem_key) if idem_key else None
            if stored is not None:
                if stored["fingerprint"] != fingerprint:
                    raise _StripeError(
                        400, "idempotency_error",
                        _IDEMPOTENCY_MISMATCH.format(key=idem_key), code="idempotency_error")
                status, body = stored["status"], stored["body"]
                headers = {"Idempotent-Replayed": "true",
                           "Original-Request": stored["request_id"]}
                rec["replayed"] = True
            else:
                status, body, saved = self._execute(execute)
                if idem_key and saved:
                    self._idempotency[idem_key] = {
                        "fingerprint": fingerprint, "status": status, "body": body,
                        "request_id": request_id}
        except _StripeError as e:
            status, body = e.status, _dump({"error": e.error})
        return status, body, headers, self._create_fault() if create else None

    @staticmethod
    def _execute(execute: Callable[[], dict]) -> tuple[int, bytes, bool]:
        try:
            return 200, _dump(execute()), True
        except _StripeError as e:
            return e.status, _dump({"error": e.error}), e.executed

    def _create_fault(self) -> tuple[str, float] | None:
        if self._drop_n > 0:
            self._drop_n -= 1
            return ("drop", 0.0)
        if self._hang_n > 0:
            self._hang_n -= 1
            return ("hang", self._hang_seconds)
        return None

    # -- PaymentIntents: create -----------------------------------------------------------

    def _create(self, _intent: None, params: dict) -> dict:
        amount, currency = self._amount(params)
        confirm = params.get("confirm") == "true"
        if not confirm:
            for name in _CONFIRM_ONLY:
                if name in params:
                    raise _invalid(f"The parameter `{name}` can only be used when `confirm` "
                                   "is set to `true`.", param=name)
        self._no_such(params, "customer", "customer")
        pm = params.get("payment_method")
        if pm is not None:
            self._resolve_payment_method(pm)
        pi = self._new_intent(params, amount, currency)
        if confirm:
            self._check_confirmable(pi, params, executed=False)
        self._pis.append(pi)
        self._pi_by_id[pi["id"]] = pi
        self._seq[pi["id"]] = len(self._pis)
        if confirm:
            return self._attempt(pi, params)
        return self._render(pi, _expand(params))

    def _amount(self, params: dict) -> tuple[int, str]:
        amount = int(params["amount"])
        if amount < 1:
            raise _invalid("This value must be greater than or equal to 1.", param="amount",
                           code="parameter_invalid_integer")
        currency = params["currency"].strip().lower()
        if currency not in SUPPORTED_CURRENCIES:
            raise _invalid(
                f"Invalid currency: {params['currency']}. Stripe currently supports these "
                "currencies: " + ", ".join(sorted(SUPPORTED_CURRENCIES)), param="currency")
        minimum = MINIMUM_AMOUNT.get(currency, 1)
        if amount < minimum:
            raise _invalid(f"Amount must be at least {_format_amount(minimum, currency)}",
                           param="amount", code="amount_too_small")
        if amount > MAXIMUM_AMOUNT:
            raise _invalid(f"Amount must be no more than {_format_amount(MAXIMUM_AMOUNT, currency)}",
                           param="amount", code="amount_too_large")
        _whole_tens(amount, currency)
        return amount, currency

    @staticmethod
    def _no_such(params: dict, param: str, noun: str) -> None:
        """This fake account has no customers or configurations: any ID is unknown."""
        if param in params:
            raise _invalid(f"No such {noun}: '{params[param]}'", param=param,
                           code="resource_missing")

    def _new_intent(self, params: dict, amount: int, currency: str) -> dict:
        methods = self._payment_methods(params, currency)
        self._no_such(params, "payment_method_configuration", "payment method configuration")
        pm = params.get("payment_method")
        pi_id = "pi_3" + _rand(23)
        pi: dict[str, Any] = {
            "id": pi_id,
            "object": "payment_intent",
            "allowed_payment_method_types": None,
            "amount": amount,
            "amount_capturable": 0,
            "amount_details": {"tip": {}},
            "amount_received": 0,
            "application": None,
            "application_fee_amount": None,
            "automatic_payment_methods": None,
            "canceled_at": None,
            "cancellation_reason": None,
            "capture_method": params.get("capture_method", "automatic_async"),
            "client_secret": f"{pi_id}_secret_{_rand(25)}",
            "confirmation_method": params.get("confirmation_method", "automatic"),
            "created": int(self.clock()),
            "currency": currency,
            "customer": None,
            "description": params.get("description"),
            "excluded_payment_method_types": None,
            "last_payment_error": None,
            "latest_charge": None,
            "livemode": False,
            "metadata": self._metadata(params.get("metadata") or {}),
            "next_action": None,
            "on_behalf_of": None,
            "payment_method": pm,
            "payment_method_configuration_details": None,
            "payment_method_options": {"card": {"installments": None, "mandate_options": None,
                                                "network": None,
                                                "request_three_d_secure": "automatic"}},
            "payment_method_types": [],
            "processing": None,
            "receipt_email": params.get("receipt_email"),
            "review": None,
            "setup_future_usage": params.get("setup_future_usage"),
            "shipping": None,
            "source": None,
            "statement_descriptor": params.get("statement_descriptor"),
            "statement_descriptor_suffix": params.get("statement_descriptor_suffix"),
            "status": "requires_payment_method" if pm is None else "requires_confirmation",
            "transfer_data": None,
            "transfer_group": params.get("transfer_group"),
        }
        pi.update(methods)
        return pi

    @staticmethod
    def _payment_methods(params: dict, currency: str) -> dict:
        """The payment method fields of a PaymentIntent created with *params*."""
        allowed = params.get("allowed_payment_method_types")
        if allowed is not None:
            for other in _EXCLUSIVE_WITH_ALLOWED:
                if other in params:
                    raise _invalid("You may only specify one of these parameters: "
                                   f"allowed_payment_method_types, {other}.", param=other,
                                   code="parameters_exclusive")
            return {"allowed_payment_method_types": list(allowed),
                    "automatic_payment_methods": None, "excluded_payment_method_types": None,
                    "payment_method_types": _compatible(allowed, currency)}
        excluded = list(params.get("excluded_payment_method_types") or [])
        requested = params.get("automatic_payment_methods") or {"enabled": "true"}
        if requested.get("enabled") != "true":
            return {"automatic_payment_methods": None,
                    "excluded_payment_method_types": excluded or None,
                    "payment_method_types": [t for t in ["card"] if t not in excluded]}
        automatic = {"enabled": True}
        if "allow_redirects" in requested:
            automatic["allow_redirects"] = requested["allow_redirects"]
        dynamic = [t for t in ENABLED_TYPES if t not in _TERMINAL_TYPES and t not in excluded]
        return {"automatic_payment_methods": automatic,
                "excluded_payment_method_types": excluded or None,
                "payment_method_types": _compatible(dynamic, currency)}

    @staticmethod
    def _metadata(metadata: dict, base: dict | None = None) -> dict:
        merged = dict(base or {})
        for k, v in metadata.items():
            if v == "":
                merged.pop(k, None)   # an empty value unsets the key
            else:
                merged[k] = v
        if len(merged) > 50:
            raise _invalid("Too many metadata keys (limit is 50).", param="metadata")
        for k, v in merged.items():
            if len(k) > 40:
                raise _invalid("Metadata keys can have up to 40 characters.",
                               param=f"metadata[{k}]")
            if len(v) > 500:
                raise _invalid("Metadata values can have up to 500 characters.",
                               param=f"metadata[{k}]")
        return merged

    # -- PaymentIntents: confirmation ------------------------------------------------------

    def _check_confirmable(self, pi: dict, params: dict, *, executed: bool) -> None:
        """What Stripe checks before a confirmation attempt (on create: validation)."""
        if pi["payment_method"] is None:
            extra = {"payment_intent": self._render(pi, [])} if executed else {}
            raise _invalid(
                "You cannot confirm this PaymentIntent because it's missing a payment method. "
                "You can either update the PaymentIntent with a payment method and then "
                "confirm it again, or confirm it again directly with a payment method.",
                param="payment_method", code="payment_intent_unexpected_state",
                executed=executed, **extra)
        automatic = pi["automatic_payment_methods"]
        redirects = automatic is not None and automatic.get("allow_redirects") != "never"
        if redirects and not params.get("return_url"):
            raise _invalid(_REDIRECTS_NEED_RETURN_URL, param="return_url")
        if "card" not in pi["payment_method_types"]:
            raise _invalid(
                "The PaymentMethod provided (card) is not allowed for this PaymentIntent. "
                "Please attach a PaymentMethod of one of the following types: "
                + (", ".join(pi["payment_method_types"]) or "(none)") + ".",
                param="payment_method", code="payment_intent_incompatible_payment_method")

    def _confirm(self, intent: str, params: dict) -> dict:
        pi = self._intent(intent)
        if pi["status"] not in _CONFIRMABLE:
            raise self._unexpected_state(pi, "confirm")
        staged = copy.deepcopy(pi)     # committed only once every check passed
        if "payment_method" in params:
            self._resolve_payment_method(params["payment_method"])
            staged["payment_method"] = params["payment_method"]
        for name in ("capture_method", "receipt_email", "setup_future_usage"):
            if name in params:
                staged[name] = params[name] or None
        if "allowed_payment_method_types" in params:
            staged.update(self._payment_methods(params, staged["currency"]))
        elif "excluded_payment_method_types" in params:
            excluded = list(params["excluded_payment_method_types"] or [])
            staged["excluded_payment_method_types"] = excluded or None
            staged["payment_method_types"] = [
                t for t in staged["payment_method_types"] if t not in excluded]
        self._check_confirmable(staged, params, executed=True)
        pi.update(staged)
        return self._attempt(pi, params)

    def _attempt(self, pi: dict, params: dict) -> dict:
        """One confirmation attempt on a stored PaymentIntent: its answer, or a 402."""
        pi["last_payment_error"] = None
        pi["next_action"] = None
        card, outcome = self._resolve_payment_method(pi["payment_method"])
        if self._decline_n > 0:
            self._decline_n -= 1
            outcome = self._decline
        elif self._leave_n > 0:
            self._leave_n -= 1
            outcome = self._leave_status
        if outcome == "authenticate":
            if params.get("error_on_requires_action") != "true":
                pi["status"] = "requires_action"
                pi["next_action"] = _next_action(pi, params.get("return_url"))
                return self._render(pi, _expand(params))
            outcome = _Decline(*_AUTHENTICATION_DECLINE)
        if isinstance(outcome, _Decline):
            self._decline_attempt(pi, card, outcome)     # raises the 402
        elif isinstance(outcome, str):
            self._set_status(pi, outcome, card=card, attempt=True)
        else:
            self._set_status(pi, "requires_capture" if pi["capture_method"] == "manual"
                             else "succeeded", card=card, attempt=True)
        return self._render(pi, _expand(params))

    def _decline_attempt(self, pi: dict, card: tuple, decline: _Decline) -> None:
        charge = self._new_charge(pi, card, "failed", decline)
        error = {
            "type": "card_error", "code": decline.code, "decline_code": decline.decline_code,
            "advice_code": decline.advice_code, "message": decline.message,
            "param": decline.param, "charge": charge["id"],
            "doc_url": _DOCS + decline.code.replace("_", "-"),
            "payment_method": {"id": pi["payment_method"], "object": "payment_method",
                               "type": "card", "card": {"brand": card[0], "last4": card[1],
                                                        "funding": card[2]}},
        }
        error = {k: v for k, v in error.items() if v is not None}
        pi["status"] = "requires_payment_method"
        pi["last_payment_error"] = error
        raise _StripeError(402, "card_error", decline.message, executed=True, **{
            **{k: v for k, v in error.items() if k not in ("type", "message")},
            "payment_intent": self._render(pi, [])})

    # -- PaymentIntents: cancel, capture, retrieve, list ----------------------------------------

    def _cancel(self, intent: str, params: dict) -> dict:
        pi = self._intent(intent)
        if pi["status"] not in _CANCELABLE:
            raise self._unexpected_state(pi, "cancel")
        self._set_status(pi, "canceled", reason=params.get("cancellation_reason"))
        return self._render(pi, _expand(params))

    def _capture(self, intent: str, params: dict) -> dict:
        pi = self._intent(intent)
        if pi["status"] != "requires_capture":
            raise self._unexpected_state(pi, "capture")
        capturable = pi["amount_capturable"]
        amount = int(params.get("amount_to_capture", capturable))
        if not 1 <= amount <= capturable:
            raise _invalid(f"The amount_to_capture ({amount}) must be between 1 and the "
                           f"amount_capturable ({capturable}).", param="amount_to_capture")
        pi["metadata"] = self._metadata(params.get("metadata") or {}, pi["metadata"])
        self._set_status(pi, "succeeded", received=amount)
        return self._render(pi, _expand(params))

    def _retrieve(self, intent: str, params: dict) -> dict:
        return self._render(self._intent(intent), _expand(params))

    def _intent(self, pi_id: str) -> dict:
        pi = self._pi_by_id.get(pi_id)
        if pi is None:
            raise _invalid(f"No such payment_intent: '{pi_id}'", param="intent",
                           code="resource_missing", status=404)
        return pi

    def _unexpected_state(self, pi: dict, action: str) -> _StripeError:
        status = pi["status"]
        if action == "confirm" and status == "succeeded":
            message = ("You cannot confirm this PaymentIntent because it has already succeeded "
                       "after being previously confirmed.")
        elif action == "capture":
            message = (f"This PaymentIntent could not be captured because it has a status of "
                       f"{status}. Only a PaymentIntent with one of the following statuses may "
                       "be captured: requires_capture.")
        else:
            allowed = _CONFIRMABLE if action == "confirm" else _CANCELABLE
            done = "confirmed" if action == "confirm" else "canceled"
            message = (f"You cannot {action} this PaymentIntent because it has a status of "
                       f"{status}. Only a PaymentIntent with one of the following statuses may "
                       f"be {done}: {', '.join(allowed)}.")
        return _invalid(message, code="payment_intent_unexpected_state", executed=True,
                        payment_intent=self._render(pi, []))

    def _list(self, _intent: None, params: dict) -> dict:
        preds = _created_filters(params.get("created"))
        if "customer" in params or "customer_account" in params:
            preds.append(lambda c: False)   # no customers exist here

        def key(pi: dict) -> tuple[int, int]:
            return pi["created"], self._seq[pi["id"]]

        items = sorted((pi for pi in self._pis if all(p(pi["created"]) for p in preds)),
                       key=key, reverse=True)
        page, has_more = _page(items, params, key, self._pi_by_id, "payment_intent")
        expand = [e[len("data."):] for e in _expand(params) if e.startswith("data.")]
        return {"object": "list", "data": [self._render(pi, expand) for pi in page],
                "has_more": has_more, "url": "/v1/payment_intents"}

    # -- PaymentIntents: state ----------------------------------------------------------------

    def _set_status(self, pi: dict, status: str, *, card: tuple | None = None,
                    reason: str | None = None, received: int | None = None,
                    attempt: bool = False) -> None:
        """Move *pi* to *status* and keep its amounts and charge consistent
        (*attempt*: a confirmation attempt, which always makes a new charge)."""
        charge = self._charges.get(pi["latest_charge"] or "")
        needs_charge = status in ("processing", "requires_capture", "succeeded")
        if needs_charge and (charge is None or charge["status"] == "failed" or attempt):
            charge = self._new_charge(pi, card or self._card_of(pi), "pending")
        pi["status"] = status
        pi["next_action"] = None
        if status == "processing":
            pi["amount_capturable"] = pi["amount_received"] = 0
        elif status == "requires_capture":
            pi["amount_capturable"] = pi["amount"]
            charge.update(status="succeeded", paid=True, captured=False, amount_captured=0,
                          outcome=_outcome(None))
        elif status == "succeeded":
            amount = received if received is not None else pi["amount_capturable"] or pi["amount"]
            pi.update(amount_received=amount, amount_capturable=0, last_payment_error=None)
            charge.update(status="succeeded", paid=True, captured=True, amount_captured=amount,
                          outcome=_outcome(None))
        elif status == "requires_action":
            pi["next_action"] = _next_action(pi, None)
        elif status == "requires_payment_method":
            pi["amount_capturable"] = 0
            if charge is not None and charge["status"] == "pending":
                self._fail_pending(pi, charge)
        elif status == "canceled":
            pi.update(canceled_at=int(self.clock()), cancellation_reason=reason,
                      amount_capturable=0)
            if charge is not None and charge["status"] == "pending":
                charge.update(status="failed", paid=False)
            elif charge is not None and charge["status"] == "succeeded" and not charge["captured"]:
                # the authorization is released
                charge.update(refunded=True, amount_refunded=charge["amount"])

    def _fail_pending(self, pi: dict, charge: dict) -> None:
        decline = _Decline("card_declined", "generic_decline", _DECLINED)
        charge.update(status="failed", paid=False, failure_code=decline.code,
                      failure_message=decline.message, outcome=_outcome(decline))
        pi["last_payment_error"] = {
            "type": "card_error", "code": decline.code, "decline_code": decline.decline_code,
            "message": decline.message, "charge": charge["id"],
            "doc_url": _DOCS + "card-declined"}

    @staticmethod
    def _resolve_payment_method(pm: str) -> tuple[tuple[str, str, str], Any]:
        """The card behind a test token and what its next attempt does: None
        (succeeds), a :class:`_Decline`, or "authenticate" (3-D Secure)."""
        if not _PM_TOKEN.match(pm):
            raise _invalid(f"No such PaymentMethod: '{pm}'", param="payment_method",
                           code="resource_missing")
        name = pm[len("pm_card_"):]
        if name in AUTHENTICATION_TOKENS:
            return ("visa", AUTHENTICATION_TOKENS[name], "credit"), "authenticate"
        if name.startswith("visa_chargeDeclined"):
            name = name[len("visa_"):]
        if name.startswith("chargeDeclined"):
            return _CARDS["visa"], _Decline(*DECLINES.get(name, DECLINES["chargeDeclined"]))
        return _CARDS.get(name, _CARDS["visa"]), None

    def _card_of(self, pi: dict) -> tuple[str, str, str]:
        pm = pi["payment_method"]
        return self._resolve_payment_method(pm)[0] if pm else _CARDS["visa"]

    def _new_charge(self, pi: dict, card: tuple, status: str,
                    decline: _Decline | None = None) -> dict:
        charge_id = "ch_3" + _rand(23)
        ok = decline is None
        captured = status == "succeeded" and pi["capture_method"] != "manual"
        charge = {
            "id": charge_id, "object": "charge", "amount": pi["amount"],
            "amount_captured": pi["amount"] if captured else 0, "amount_refunded": 0,
            "captured": captured, "created": int(self.clock()), "currency": pi["currency"],
            "description": pi["description"], "livemode": False,
            "metadata": dict(pi["metadata"]), "paid": ok and status == "succeeded",
            "failure_code": None if ok else decline.code,
            "failure_message": None if ok else decline.message,
            "outcome": _outcome(decline),
            "payment_intent": pi["id"], "payment_method": pi["payment_method"],
            "payment_method_details": {"type": "card", "card": {
                "brand": card[0], "last4": card[1], "funding": card[2],
                "exp_month": 12, "exp_year": time.gmtime().tm_year + 3, "country": "US"}},
            "refunded": False, "status": status,
        }
        self._charges[charge_id] = charge
        pi["latest_charge"] = charge_id
        return charge

    def _render(self, pi: dict, expand: list) -> dict:
        out = copy.deepcopy(pi)
        if "latest_charge" in expand and out["latest_charge"]:
            out["latest_charge"] = copy.deepcopy(self._charges[out["latest_charge"]])
        return out

    # -- Refunds ------------------------------------------------------------------------

    def _refund_create(self, _id: None, params: dict) -> dict:
        """POST /v1/refunds of a PaymentIntent's (or a charge's) captured charge,
        refusing what Stripe refuses: no successful charge, nothing left, more than is left."""
        charge = self._refundable_charge(params)
        left = charge["amount_captured"] - charge["amount_refunded"]
        if left <= 0:
            raise _invalid(f"Charge {charge['id']} has already been refunded.",
                           code="charge_already_refunded")
        amount = int(params.get("amount", left))
        if amount < 1:
            raise _invalid("This value must be greater than or equal to 1.", param="amount",
                           code="parameter_invalid_integer")
        if amount > left:
            than = ("unrefunded amount on charge" if charge["amount_refunded"]
                    else "charge amount")
            raise _invalid(f"Refund amount ({_money(amount, charge['currency'])}) is greater than "
                           f"{than} ({_money(left, charge['currency'])})", param="amount",
                           code="amount_too_large")
        if "currency" in params and params["currency"].lower() != charge["currency"]:
            raise _invalid("The currency of the refund must be the currency of the charge.",
                           param="currency")
        _whole_tens(amount, charge["currency"])
        status = "succeeded"
        if self._leave_refund_n > 0:
            self._leave_refund_n -= 1
            status = self._leave_refund_status
        refund = {
            "id": "re_3" + _rand(23), "object": "refund", "amount": amount,
            "balance_transaction": "txn_3" + _rand(23), "charge": charge["id"],
            "created": int(self.clock()), "currency": charge["currency"], "description": None,
            "destination_details": {"type": "card", "card": {
                "reference_status": "pending", "reference_type": "acquirer_reference_number",
                "type": "refund"}},
            "failure_balance_transaction": None, "failure_reason": None,
            "instructions_email": params.get("instructions_email"),
            "metadata": self._metadata(params.get("metadata") or {}),
            "next_action": None, "payment_intent": charge["payment_intent"],
            "payment_method": charge["payment_method"],
            "pending_reason": "processing" if status == "pending" else None,
            "presentment_details": None, "reason": params.get("reason"), "receipt_number": None,
            "source_transfer_reversal": None, "status": status, "transfer_reversal": None,
        }
        charge["amount_refunded"] += amount
        charge["refunded"] = charge["amount_refunded"] >= charge["amount_captured"]
        self._refunds.append(refund)
        self._refund_by_id[refund["id"]] = refund
        return copy.deepcopy(refund)

    def _refundable_charge(self, params: dict) -> dict:
        if "payment_intent" in params and "charge" in params:
            raise _invalid("You may only specify one of these parameters: charge, payment_intent.",
                           param="charge", code="parameters_exclusive")
        if "charge" in params:
            charge = self._charges.get(params["charge"])
            if charge is None:
                raise _invalid(f"No such charge: '{params['charge']}'", param="charge",
                               code="resource_missing")
            pi = self._pi_by_id[charge["payment_intent"]]
        elif "payment_intent" in params:
            pi = self._pi_by_id.get(params["payment_intent"])
            if pi is None:
                raise _invalid(f"No such payment_intent: '{params['payment_intent']}'",
                               param="payment_intent", code="resource_missing")
            charge = self._charges.get(pi["latest_charge"] or "")
        else:
            raise _invalid("One of the following params should be provided for this request: "
                           "payment_intent or charge.", code="parameter_missing")
        self._no_such(params, "customer", "customer")
        if charge is None or charge["status"] != "succeeded" or not charge["captured"]:
            # an authorization is released by cancelling the PaymentIntent, never refunded
            raise _invalid(f"This PaymentIntent ({pi['id']}) does not have a successful charge "
                           "to refund.", param="payment_intent")
        return charge

    def _set_refund_status(self, refund: dict, status: str, failure_reason: str | None) -> None:
        was_counted = refund["status"] not in ("failed", "canceled")
        refund["status"] = status
        refund["pending_reason"] = "processing" if status == "pending" else None
        if status in ("failed", "canceled"):
            refund["failure_reason"] = failure_reason or ("merchant_request" if status == "canceled"
                                                          else "unknown")
            if was_counted:      # the money was not given back: it is refundable again
                charge = self._charges[refund["charge"]]
                charge["amount_refunded"] -= refund["amount"]
                charge["refunded"] = charge["amount_refunded"] >= charge["amount_captured"]

    def _refund_retrieve(self, refund_id: str, params: dict) -> dict:
        refund = self._refund_by_id.get(refund_id)
        if refund is None:
            raise _invalid(f"No such refund: '{refund_id}'", param="id", code="resource_missing",
                           status=404)
        return copy.deepcopy(refund)

    def _refund_list(self, _id: None, params: dict) -> dict:
        """GET /v1/refunds: newest first, filtered by payment_intent, charge, created."""
        preds = [lambda r, f=_created_filters(params.get("created")): all(p(r["created"]) for p in f)]
        for name, known in (("payment_intent", self._pi_by_id), ("charge", self._charges)):
            if name in params:
                if params[name] not in known:
                    raise _invalid(f"No such {name}: '{params[name]}'", param=name,
                                   code="resource_missing")
                preds.append(lambda r, n=name, v=params[name]: r[n] == v)
        seq = {r["id"]: i for i, r in enumerate(self._refunds)}
        items = sorted((r for r in self._refunds if all(p(r) for p in preds)),
                       key=lambda r: (r["created"], seq[r["id"]]), reverse=True)
        page, has_more = _page(items, params, lambda r: (r["created"], seq[r["id"]]),
                               self._refund_by_id, "refund")
        return {"object": "list", "data": copy.deepcopy(page), "has_more": has_more,
                "url": "/v1/refunds"}


def _page(items: list, params: dict, key: Callable[[dict], Any], by_id: dict,
          noun: str) -> tuple[list, bool]:
    """One page of *items* (sorted newest first by *key*) as Stripe's list
    parameters ask: ``limit``, ``starting_after`` or ``ending_before``."""
    limit = int(params.get("limit", 10))
    if limit < 1:
        raise _invalid("This value must be greater than or equal to 1.", param="limit")
    if limit > 100:
        raise _invalid("This value must be less than or equal to 100.", param="limit")
    if "starting_after" in params and "ending_before" in params:
        raise _invalid("You may only specify one of these parameters: ending_before, "
                       "starting_after.", param="ending_before", code="parameters_exclusive")
    if "starting_after" not in params and "ending_before" not in params:
        return items[:limit], len(items) > limit
    which = "starting_after" if "starting_after" in params else "ending_before"
    cursor = by_id.get(params[which])
    if cursor is None:
        raise _invalid(f"No such {noun}: '{params[which]}'", param=which, code="resource_missing")
    ck = key(cursor)
    if which == "starting_after":
        rest = [x for x in items if key(x) < ck]
        return rest[:limit], len(rest) > limit
    rest = [x for x in items if key(x) > ck]
    return rest[-limit:], len(rest) > limit


def _money(amount: int, currency: str) -> str:
    """An amount as Stripe's refund errors show it: "$6.00", "\u00a5500"."""
    major, symbol = _major(amount, currency), _SYMBOLS.get(currency)
    return f"{symbol}{major}" if symbol else f"{currency.upper()} {major}"


# Which method answers each route, by stripe-python's service and operation names.
_HANDLERS: dict[tuple[str, str], Callable[..., dict]] = {
    ("PaymentIntentService", "create"): FakeStripe._create,
    ("PaymentIntentService", "confirm"): FakeStripe._confirm,
    ("PaymentIntentService", "cancel"): FakeStripe._cancel,
    ("PaymentIntentService", "capture"): FakeStripe._capture,
    ("PaymentIntentService", "retrieve"): FakeStripe._retrieve,
    ("PaymentIntentService", "list"): FakeStripe._list,
    ("RefundService", "create"): FakeStripe._refund_create,
    ("RefundService", "retrieve"): FakeStripe._refund_retrieve,
    ("RefundService", "list"): FakeStripe._refund_list,
}


def _compatible(types: Any, currency: str) -> list[str]:
    """The types this account has enabled that work with *currency*, in the order asked."""
    return [t for t in dict.fromkeys(types)
            if t in ENABLED_TYPES and (ENABLED_TYPES[t] is None or currency in ENABLED_TYPES[t])]


def _created_filters(created: Any) -> list[Callable[[int], bool]]:
    if created is None:
        return []
    if isinstance(created, str):
        exact = int(created)
        return [lambda c: c == exact]
    ops = {"gt": lambda a, b: a > b, "gte": lambda a, b: a >= b,
           "lt": lambda a, b: a < b, "lte": lambda a, b: a <= b}
    return [lambda c, f=ops[op], b=int(val): f(c, b) for op, val in created.items()]


def _next_action(pi: dict, return_url: str | None) -> dict:
    """What Stripe asks for a card that needs 3-D Secure."""
    url = f"https://hooks.stripe.com/3d_secure_2/hosted?payment_intent={pi['id']}"
    if return_url:
        return {"type": "redirect_to_url",
                "redirect_to_url": {"return_url": return_url, "url": url}}
    return {"type": "use_stripe_sdk",
            "use_stripe_sdk": {"type": "three_d_secure_redirect", "stripe_js": url}}


def _outcome(decline: _Decline | None) -> dict:
    if decline is None:
        return {"network_status": "approved_by_network", "reason": None, "risk_level": "normal",
                "seller_message": "Payment complete.", "type": "authorized", "advice_code": None}
    return {"network_status": "declined_by_network", "reason": decline.decline_code,
            "risk_level": "normal", "advice_code": decline.advice_code,
            "seller_message": "The bank did not return any further details with this decline.",
            "type": "issuer_declined"}


def _decline_message(code: str, decline_code: str) -> str:
    if (code, decline_code) == _AUTHENTICATION_DECLINE[:2]:
        return _AUTHENTICATION_DECLINE[2]
    for c, d, message, _ in DECLINES.values():
        if d == decline_code and c == code:
            return message
    return _DECLINED


def _decline_param(code: str) -> str | None:
    return next((param for c, _, _, param in DECLINES.values() if c == code), None)


def _dump(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m kiosk.testing.fake_stripe",
        description="Run a fake Stripe API server (for tests and demos; never takes real payments).")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    ap.add_argument("--rate-limit", type=int, default=25,
                    help="requests per second before 429 (0 disables; default 25)")
    args = ap.parse_args(argv)
    fake = FakeStripe(host=args.host, port=args.port, rate_limit=args.rate_limit).start()
    print(fake.url, flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    try:
        while not done.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        fake.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
