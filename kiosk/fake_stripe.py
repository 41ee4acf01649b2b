"""A fake Stripe API server for tests, benchmarks and the no-account demo.

This is a small, stdlib-only HTTP server that speaks enough of Stripe's v1 wire
format (form-encoded requests, JSON objects and error bodies, ``Request-Id`` and
``Idempotent-Replayed`` headers, HTTP status codes) that the real stripe-python
client works against it unmodified and raises its real exception classes.  It
is **never used to take real payments**: no card data exists here, every object
it returns is made up, and it holds everything in memory.

What it implements:

* ``POST /v1/payment_intents`` (create, optionally confirming with one of
  Stripe's test ``pm_card_*`` tokens; declines create the PaymentIntent and
  answer 402 ``card_error`` like Stripe does),
* ``GET /v1/payment_intents`` (newest first, ``limit``, ``starting_after``,
  ``ending_before``, ``created`` filters),
* ``GET /v1/payment_intents/{id}``,
* API-key checks, a sliding one-second rate limiter (Stripe test mode allows
  25 requests per second), and idempotency keys (replay with the same
  parameters, ``idempotency_error`` with different ones).

Faults for tests: :meth:`FakeStripe.fail_next`, :meth:`~FakeStripe.drop_next`,
:meth:`~FakeStripe.hang_next`, :meth:`~FakeStripe.set_offline`,
:meth:`~FakeStripe.reject_api_keys`, :meth:`~FakeStripe.prune_idempotency_keys`
and :attr:`~FakeStripe.latency`.

Usage::

    with FakeStripe() as fake:
        client = stripe.StripeClient("sk_test_x", base_addresses={"api": fake.url})
        client.v1.payment_intents.create(params={...})
        assert fake.payment_intents

or from a shell: ``python -m kiosk.fake_stripe --port 12111``.
"""

from __future__ import annotations

import argparse
import base64
import collections
import copy
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
from typing import Any, Callable

__all__ = ["FakeStripe", "main"]

API_VERSION = "2026-10-28.endive"   # what stripe-python 16.1 pins; echoed if the client sends one

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

_PM_TOKEN = re.compile(r"^pm_card_[A-Za-z0-9_]+$")
_PI_PATH = re.compile(r"^/v1/payment_intents/([^/]+)$")
_KEY_RE = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")

_CREATE_PARAMS = frozenset("""
amount currency payment_method confirm payment_method_types metadata description
capture_method confirmation_method receipt_email statement_descriptor
statement_descriptor_suffix customer expand off_session error_on_requires_action
return_url use_stripe_sdk automatic_payment_methods payment_method_options
setup_future_usage shipping transfer_group
""".split())
_LIST_PARAMS = frozenset("limit starting_after ending_before created customer expand".split())
_RETRIEVE_PARAMS = frozenset("client_secret expand".split())
_PAYMENT_METHOD_TYPES = frozenset("card card_present interac_present link".split())

_IDEMPOTENCY_MISMATCH = (
    "Keys for idempotent requests can only be used with the same parameters they "
    "were first used with. Try using a key other than '{key}' if you meant to "
    "execute a different request.")


def _rand(n: int) -> str:
    return "".join(secrets.choice(_ALNUM) for _ in range(n))


class _StripeError(Exception):
    """An API error answer: HTTP status plus the ``error`` object (None values dropped)."""

    def __init__(self, status: int, type_: str, message: str, *, code: str | None = None,
                 param: str | None = None, **extra: Any):
        super().__init__(message)
        self.status = status
        err = {"type": type_, "code": code, "message": message, "param": param}
        if code and "doc_url" not in extra:
            err["doc_url"] = _DOCS + code.replace("_", "-")
        err.update(extra)
        # Stripe omits attributes that are null in error objects.
        self.error = {k: v for k, v in err.items() if v is not None}


def _invalid(message: str, param: str | None = None, code: str | None = None,
             status: int = 400) -> _StripeError:
    return _StripeError(status, "invalid_request_error", message, code=code, param=param)


# -- form decoding --------------------------------------------------------------

def parse_form(text: str, keep_dicts: frozenset[str] = frozenset({"metadata"})) -> dict:
    """Decode Stripe-style form parameters (``a[b]=1``, ``a[0]=x``, ``a[]=y``)
    into nested dicts and lists.  Dicts whose keys are all indices become lists,
    except those named in *keep_dicts* (metadata keys may be digits)."""
    root: dict = {}
    for key, value in urllib.parse.parse_qsl(text, keep_blank_values=True):
        m = _KEY_RE.match(key)
        if not m:
            raise _invalid(f"Invalid parameter name: {key}", param=key)
        parts = [m.group(1)] + re.findall(r"\[([^\[\]]*)\]", m.group(2))
        node = root
        for part in parts[:-1]:
            if part == "":
                part = str(len(node))
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise _invalid(f"Invalid hash: {key}", param=parts[0])
            node = child
        last = parts[-1] if parts[-1] != "" else str(len(node))
        if isinstance(node.get(last), dict):
            raise _invalid(f"Invalid hash: {key}", param=parts[0])
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


def _as_int(value: Any, param: str) -> int:
    if not isinstance(value, str) or not re.fullmatch(r"-?\d+", value.strip()):
        raise _invalid(f"Invalid integer: {value}", param=param,
                       code="parameter_invalid_integer")
    return int(value)


def _as_bool(value: Any, param: str) -> bool:
    if value in ("true", "True", "1"):
        return True
    if value in ("false", "False", "0", ""):
        return False
    raise _invalid(f"Invalid boolean: {value}", param=param)


def _as_str(value: Any, param: str) -> str:
    if not isinstance(value, str):
        raise _invalid(f"Invalid string: {value!r}", param=param)
    return value


def _format_amount(amount: int, currency: str) -> str:
    if currency in ZERO_DECIMAL:
        major = f"{amount:,}"
    elif currency in THREE_DECIMAL:
        major = f"{amount / 1000:,.3f}"
    else:
        major = f"{amount / 100:,.2f}"
    symbol = _SYMBOLS.get(currency)
    return f"{symbol}{major} {currency}" if symbol else f"{major} {currency}"


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

class FakeStripe:
    """In-memory fake of Stripe's PaymentIntents API over loopback HTTP.

    All fault controls and inspection properties are thread-safe.  ``clock``
    (default :func:`time.time`) supplies the unix time used for ``created``;
    tests may replace it.  ``rate_limit`` of ``None`` or ``0`` disables rate
    limiting.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, rate_limit: int | None = 25):
        self.host = host
        self.port = port
        self.rate_limit = rate_limit
        self.latency: float = 0.0
        self.clock: Callable[[], float] = time.time
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
        self._idempotency: dict[str, dict] = {}
        self._requests: list[dict] = []
        self._window: collections.deque[float] = collections.deque()    # all requests
        self._admitted: collections.deque[float] = collections.deque()  # passed the limiter
        self._max_rps = 0
        # faults
        self._fail_n = 0
        self._fail_status = 500
        self._drop_n = 0
        self._hang_n = 0
        self._hang_seconds = 0.0
        self._offline = False
        self._reject_keys = False

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> "FakeStripe":
        if self._server is not None:
            raise RuntimeError("FakeStripe already started")
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
        server.shutdown()
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

    def fail_next(self, n: int, status: int = 500) -> None:
        """Answer the next *n* requests with *status* before doing anything else
        (429: Stripe's rate-limit error; 5xx: ``api_error``)."""
        with self._lock:
            self._fail_n = int(n)
            self._fail_status = int(status)

    def drop_next(self, n: int) -> None:
        """The next *n* ``POST /v1/payment_intents`` are processed and committed
        (idempotency record included), then the connection is closed unanswered."""
        with self._lock:
            self._drop_n = int(n)

    def hang_next(self, n: int, seconds: float) -> None:
        """The next *n* ``POST /v1/payment_intents`` are committed, then the answer
        is held back for *seconds* (cut short, unanswered, if the server stops)."""
        with self._lock:
            self._hang_n = int(n)
            self._hang_seconds = float(seconds)

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
        with self._lock:
            return [copy.deepcopy(pi) for pi in self._pis
                    if pi["metadata"].get("kiosk_payment_id") == kiosk_payment_id]

    @property
    def requests(self) -> list[dict]:
        """One record per request received: ``method``, ``path``, ``query``,
        ``time`` (monotonic), ``idempotency_key``, ``status`` (None when no
        answer was sent), ``fault`` (None, "offline", "fail", "drop", "hang")
        and ``replayed``."""
        with self._lock:
            return [dict(r) for r in self._requests]

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
        rec = {"method": method, "path": path, "query": split.query,
               "time": time.monotonic(), "idempotency_key": idem_key,
               "status": None, "fault": None, "replayed": False}
        request_id = "req_" + _rand(14)

        with self._lock:
            self._requests.append(rec)
            if self._offline:
                rec["fault"] = "offline"
                h.close_connection = True
                return
            now = rec["time"]
            while self._window and self._window[0] <= now - 1.0:
                self._window.popleft()
            self._window.append(now)
            self._max_rps = max(self._max_rps, len(self._window))

            action: tuple[str, float] | None = None
            headers: dict[str, str] = {}
            try:
                if self._fail_n > 0:
                    self._fail_n -= 1
                    rec["fault"] = "fail"
                    raise self._fault_error(self._fail_status)
                self._authenticate(h.headers)
                self._rate_limit(now)
                status, payload, headers, action = self._route(
                    method, path, split.query, raw, idem_key, request_id, rec)
                body = payload if isinstance(payload, bytes) else _dump(payload)
            except _StripeError as e:
                status, body = e.status, _dump({"error": e.error})
                if status == 401:
                    headers = {"WWW-Authenticate": 'Basic realm="Stripe"'}
            except Exception as e:   # a bug here: answer like Stripe's own 500s
                status, body = 500, _dump({"error": {
                    "type": "api_error", "message": f"Fake Stripe internal error: {e!r}"}})
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

        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        h.send_header("Request-Id", request_id)
        h.send_header("Stripe-Version", h.headers.get("Stripe-Version") or API_VERSION)
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

    def _fault_error(self, status: int) -> _StripeError:
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
                "intermittently, retry the request.", code="lock_timeout", status=409)
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

    def _route(self, method: str, path: str, query: str, raw: bytes, idem_key: str | None,
               request_id: str, rec: dict) -> tuple[int, Any, dict, tuple[str, float] | None]:
        if path == "/v1/payment_intents" and method == "POST":
            return self._create_route(path, query, raw, idem_key, request_id, rec)
        if path == "/v1/payment_intents" and method == "GET":
            return 200, self._list(parse_form(query)), {}, None
        m = _PI_PATH.match(path)
        if m and method == "GET":
            return 200, self._retrieve(urllib.parse.unquote(m.group(1)), parse_form(query)), {}, None
        raise _invalid(
            f"Unrecognized request URL ({method}: {path}). Please see https://stripe.com/docs "
            "or we can help at https://support.stripe.com/.", status=404)

    def _create_route(self, path: str, query: str, raw: bytes, idem_key: str | None,
                      request_id: str, rec: dict):
        text = raw.decode("utf-8", errors="replace")
        if query:
            text = f"{query}&{text}" if text else query
        headers: dict[str, str] = {}
        try:
            params = parse_form(text)
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
                try:
                    status, body = 200, _dump(self._create(params))
                except _StripeError as e:
                    status, body = e.status, _dump({"error": e.error})
                if idem_key and status < 500 and status not in (401, 409, 429):
                    self._idempotency[idem_key] = {
                        "fingerprint": fingerprint, "status": status, "body": body,
                        "request_id": request_id}
        except _StripeError as e:
            status, body = e.status, _dump({"error": e.error})
        action = None
        if self._drop_n > 0:
            self._drop_n -= 1
            action = ("drop", 0.0)
        elif self._hang_n > 0:
            self._hang_n -= 1
            action = ("hang", self._hang_seconds)
        return status, body, headers, action

    # -- PaymentIntents ------------------------------------------------------------------

    def _create(self, params: dict) -> dict:
        for k in params:
            if k not in _CREATE_PARAMS:
                raise _invalid(f"Received unknown parameter: {k}", param=k,
                               code="parameter_unknown")
        if "amount" not in params:
            raise _invalid("Missing required param: amount.", param="amount",
                           code="parameter_missing")
        amount = _as_int(params["amount"], "amount")
        if amount < 1:
            raise _invalid("This value must be greater than or equal to 1.", param="amount",
                           code="parameter_invalid_integer")
        if "currency" not in params:
            raise _invalid("Missing required param: currency.", param="currency",
                           code="parameter_missing")
        currency = _as_str(params["currency"], "currency").strip().lower()
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

        confirm = _as_bool(params["confirm"], "confirm") if "confirm" in params else False
        capture_method = params.get("capture_method", "automatic_async")
        if capture_method not in ("automatic", "automatic_async", "manual"):
            raise _invalid("Invalid capture_method: must be one of automatic, "
                           "automatic_async, or manual", param="capture_method")
        confirmation_method = params.get("confirmation_method", "automatic")
        if confirmation_method not in ("automatic", "manual"):
            raise _invalid("Invalid confirmation_method: must be one of automatic or manual",
                           param="confirmation_method")
        pm_types = params.get("payment_method_types", ["card"])
        if not isinstance(pm_types, list) or not all(isinstance(t, str) for t in pm_types):
            raise _invalid("Invalid array", param="payment_method_types")
        for i, t in enumerate(pm_types):
            if t not in _PAYMENT_METHOD_TYPES:
                raise _invalid(f"The payment method type provided: {t} is invalid.",
                               param=f"payment_method_types[{i}]",
                               code="payment_intent_invalid_parameter")
        metadata = params.get("metadata", {})
        if metadata == "":
            metadata = {}
        if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
            raise _invalid("Invalid hash", param="metadata")
        metadata = {k: v for k, v in metadata.items() if v != ""}
        if len(metadata) > 50:
            raise _invalid("Too many metadata keys (limit is 50).", param="metadata")
        for k, v in metadata.items():
            if len(k) > 40:
                raise _invalid("Metadata keys can have up to 40 characters.",
                               param=f"metadata[{k}]")
            if len(v) > 500:
                raise _invalid("Metadata values can have up to 500 characters.",
                               param=f"metadata[{k}]")
        description = params.get("description")
        if description is not None:
            description = _as_str(description, "description")
        if "customer" in params:
            cus = _as_str(params["customer"], "customer")
            raise _invalid(f"No such customer: '{cus}'", param="customer", code="resource_missing")
        pm = params.get("payment_method")
        card = None
        decline = None
        if pm is not None:
            pm = _as_str(pm, "payment_method")
            card, decline = self._resolve_payment_method(pm)
            if "card" not in pm_types:
                raise _invalid(
                    "The PaymentMethod provided (card) is not allowed for this PaymentIntent. "
                    "Please attach a PaymentMethod of one of the following types: "
                    + ", ".join(pm_types) + ".", param="payment_method",
                    code="payment_intent_incompatible_payment_method")
        if confirm and pm is None:
            raise _invalid(
                "You cannot confirm this PaymentIntent because it's missing a payment method. "
                "You can either update the PaymentIntent with a payment method and then "
                "confirm it again, or confirm it again directly with a payment method.",
                param="payment_method", code="payment_intent_unexpected_state")

        expand = params.get("expand", [])
        suffix = "3" + _rand(23)
        pi_id = "pi_" + suffix
        created = int(self.clock())
        pi: dict[str, Any] = {
            "id": pi_id,
            "object": "payment_intent",
            "amount": amount,
            "amount_capturable": 0,
            "amount_details": {"tip": {}},
            "amount_received": 0,
            "application": None,
            "application_fee_amount": None,
            "automatic_payment_methods": None,
            "canceled_at": None,
            "cancellation_reason": None,
            "capture_method": capture_method,
            "client_secret": f"{pi_id}_secret_{_rand(25)}",
            "confirmation_method": confirmation_method,
            "created": created,
            "currency": currency,
            "customer": None,
            "description": description,
            "last_payment_error": None,
            "latest_charge": None,
            "livemode": False,
            "metadata": metadata,
            "next_action": None,
            "on_behalf_of": None,
            "payment_method": pm,
            "payment_method_configuration_details": None,
            "payment_method_options": {"card": {"installments": None, "mandate_options": None,
                                                "network": None,
                                                "request_three_d_secure": "automatic"}},
            "payment_method_types": list(pm_types),
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
        error = None
        if confirm:
            charge_id = "ch_" + suffix
            pi["latest_charge"] = charge_id
            if decline is None:
                if capture_method == "manual":
                    pi["status"] = "requires_capture"
                    pi["amount_capturable"] = amount
                else:
                    pi["status"] = "succeeded"
                    pi["amount_received"] = amount
            else:
                code, decline_code, message, param = decline
                error = {
                    "type": "card_error", "code": code, "decline_code": decline_code,
                    "message": message, "param": param, "charge": charge_id,
                    "doc_url": _DOCS + code.replace("_", "-"),
                    "payment_method": {"id": pm, "object": "payment_method", "type": "card",
                                       "card": {"brand": card[0], "last4": card[1],
                                                "funding": card[2]}},
                }
                error = {k: v for k, v in error.items() if v is not None}
                pi["status"] = "requires_payment_method"
                pi["last_payment_error"] = error
            self._charges[charge_id] = self._charge(pi, charge_id, card, decline)
        self._pis.append(pi)
        self._pi_by_id[pi_id] = pi
        self._seq[pi_id] = len(self._pis)
        if error is not None:
            raise _StripeError(402, "card_error", error["message"], **{
                **{k: v for k, v in error.items() if k not in ("type", "message")},
                "payment_intent": self._render(pi, [])})
        return self._render(pi, expand if isinstance(expand, list) else [expand])

    @staticmethod
    def _resolve_payment_method(pm: str) -> tuple[tuple[str, str, str], tuple | None]:
        if not _PM_TOKEN.match(pm):
            raise _invalid(f"No such PaymentMethod: '{pm}'", param="payment_method",
                           code="resource_missing")
        name = pm[len("pm_card_"):]
        if name.startswith("visa_chargeDeclined"):
            name = name[len("visa_"):]
        if name.startswith("chargeDeclined"):
            return _CARDS["visa"], DECLINES.get(name, DECLINES["chargeDeclined"])
        return _CARDS.get(name, _CARDS["visa"]), None

    def _charge(self, pi: dict, charge_id: str, card: tuple, decline: tuple | None) -> dict:
        ok = decline is None
        captured = ok and pi["capture_method"] != "manual"
        return {
            "id": charge_id, "object": "charge", "amount": pi["amount"],
            "amount_captured": pi["amount"] if captured else 0, "amount_refunded": 0,
            "captured": captured, "created": pi["created"], "currency": pi["currency"],
            "description": pi["description"], "livemode": False,
            "metadata": dict(pi["metadata"]), "paid": ok,
            "failure_code": None if ok else decline[0],
            "failure_message": None if ok else decline[2],
            "outcome": {
                "network_status": "approved_by_network" if ok else "declined_by_network",
                "reason": None if ok else decline[1],
                "risk_level": "normal", "seller_message":
                    "Payment complete." if ok else "The bank did not return any further details with this decline.",
                "type": "authorized" if ok else "issuer_declined"},
            "payment_intent": pi["id"], "payment_method": pi["payment_method"],
            "payment_method_details": {"type": "card", "card": {
                "brand": card[0], "last4": card[1], "funding": card[2],
                "exp_month": 12, "exp_year": time.gmtime().tm_year + 3, "country": "US"}},
            "refunded": False, "status": "succeeded" if ok else "failed",
        }

    def _render(self, pi: dict, expand: list) -> dict:
        out = copy.deepcopy(pi)
        if ("latest_charge" in expand or "data.latest_charge" in expand) and out["latest_charge"]:
            out["latest_charge"] = copy.deepcopy(self._charges[out["latest_charge"]])
        return out

    def _retrieve(self, pi_id: str, params: dict) -> dict:
        for k in params:
            if k not in _RETRIEVE_PARAMS:
                raise _invalid(f"Received unknown parameter: {k}", param=k,
                               code="parameter_unknown")
        pi = self._pi_by_id.get(pi_id)
        if pi is None:
            raise _invalid(f"No such payment_intent: '{pi_id}'", param="intent",
                           code="resource_missing", status=404)
        expand = params.get("expand", [])
        return self._render(pi, expand if isinstance(expand, list) else [expand])

    def _list(self, params: dict) -> dict:
        for k in params:
            if k not in _LIST_PARAMS:
                raise _invalid(f"Received unknown parameter: {k}", param=k,
                               code="parameter_unknown")
        limit = _as_int(params["limit"], "limit") if "limit" in params else 10
        if limit < 1:
            raise _invalid("This value must be greater than or equal to 1.", param="limit")
        if limit > 100:
            raise _invalid("This value must be less than or equal to 100.", param="limit")
        if "starting_after" in params and "ending_before" in params:
            raise _invalid("You may only specify one of these parameters: ending_before, "
                           "starting_after.", param="ending_before")

        preds: list[Callable[[int], bool]] = []
        created = params.get("created")
        if isinstance(created, str):
            exact = _as_int(created, "created")
            preds.append(lambda c: c == exact)
        elif isinstance(created, dict):
            ops = {"gt": lambda a, b: a > b, "gte": lambda a, b: a >= b,
                   "lt": lambda a, b: a < b, "lte": lambda a, b: a <= b}
            for op, val in created.items():
                if op not in ops:
                    raise _invalid(f"Received unknown parameter: created[{op}]",
                                   param=f"created[{op}]", code="parameter_unknown")
                bound = _as_int(val, f"created[{op}]")
                preds.append(lambda c, f=ops[op], b=bound: f(c, b))
        elif created is not None:
            raise _invalid("Invalid created", param="created")
        if "customer" in params:
            preds.append(lambda c: False)   # no customers exist here

        def key(pi: dict) -> tuple[int, int]:
            return pi["created"], self._seq[pi["id"]]

        items = sorted((pi for pi in self._pis if all(p(pi["created"]) for p in preds)),
                       key=key, reverse=True)
        if "starting_after" in params or "ending_before" in params:
            which = "starting_after" if "starting_after" in params else "ending_before"
            cursor_id = _as_str(params[which], which)
            cursor = self._pi_by_id.get(cursor_id)
            if cursor is None:
                raise _invalid(f"No such payment_intent: '{cursor_id}'", param=which,
                               code="resource_missing")
            ck = key(cursor)
            if which == "starting_after":
                rest = [pi for pi in items if key(pi) < ck]
                page, has_more = rest[:limit], len(rest) > limit
            else:
                rest = [pi for pi in items if key(pi) > ck]
                page, has_more = rest[-limit:], len(rest) > limit
        else:
            page, has_more = items[:limit], len(items) > limit
        expand = params.get("expand", [])
        expand = expand if isinstance(expand, list) else [expand]
        return {"object": "list", "data": [self._render(pi, expand) for pi in page],
                "has_more": has_more, "url": "/v1/payment_intents"}


def _dump(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m kiosk.fake_stripe",
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
