"""A small translating proxy between the kiosk and localstripe.

localstripe (PyPI, 1.15) is a Stripe stand-in nobody here wrote, which makes
it a useful second opinion -- but it predates Stripe's 2026 API and refuses
parameters today's API needs.  This proxy changes only what localstripe
cannot take, and nothing about what it answers:

- ``POST /v1/payment_intents``: ``allowed_payment_method_types[]`` becomes
  ``payment_method_types[]`` (the 2026-07-29 replacement of the old name) and
  ``error_on_requires_action`` is dropped (localstripe has no such option: a
  card that needs 3-D Secure is left in ``requires_action``, which the kiosk
  must then cancel);
- ``POST /v1/payment_intents/{id}/confirm``: ``error_on_requires_action`` and
  ``payment_method`` dropped (localstripe confirms only with the card already
  attached);
- ``POST /v1/payment_intents/{id}/cancel``: ``cancellation_reason`` dropped;
- ``GET /v1/payment_intents``: the ``created`` filter dropped (localstripe
  lists everything; the kiosk matches on metadata anyway);
- Stripe's test token ``pm_card_authenticationRequired``, which localstripe
  does not know, becomes a localstripe PaymentMethod made with Stripe's
  "authentication required" test card number.

For fault tests it can also forward a request and then drop the answer, as a
lost connection would (``drop_next``): localstripe has acted, the kiosk never
heard.  Test code only; binds 127.0.0.1.
"""
from __future__ import annotations

import http.client
import re
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from kiosk.testing.fake_stripe import shutdown_promptly

_CONFIRM = re.compile(r"^/v1/payment_intents/[^/]+/confirm$")
_CANCEL = re.compile(r"^/v1/payment_intents/[^/]+/cancel$")
# Stripe's test card that asks for authentication on every payment
AUTHENTICATION_CARD = "4000002760003184"


class LocalstripeShim:
    def __init__(self, upstream: str):
        self.upstream = urllib.parse.urlsplit(upstream)
        self.translated: list[tuple[str, str, list[str]]] = []   # (method, path, what changed)
        self._drop = 0
        self._lock = threading.Lock()
        self._auth_pm: str | None = None
        self._server: ThreadingHTTPServer | None = None

    # -- lifecycle ----------------------------------------------------------------

    def start(self) -> "LocalstripeShim":
        shim = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _relay(self):
                shim._relay(self)

            do_GET = do_POST = do_DELETE = _relay

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="localstripe-shim", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            shutdown_promptly(self._server)
            self._server.server_close()
            self._server = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def drop_next(self, n: int = 1) -> None:
        """The next n payment POSTs reach localstripe; their answers never reach the kiosk."""
        with self._lock:
            self._drop = n

    # -- translation ----------------------------------------------------------------

    def _translate(self, method: str, path: str, pairs: list[tuple[str, str]], headers: dict):
        changes = []
        out = []
        for key, value in pairs:
            if method == "POST" and path == "/v1/payment_intents":
                if key.startswith("allowed_payment_method_types"):
                    changes.append("allowed_payment_method_types -> payment_method_types")
                    key = "payment_method" + key[len("allowed_payment_method"):]
                elif key == "error_on_requires_action":
                    changes.append("dropped error_on_requires_action")
                    continue
                elif key == "payment_method" and value == "pm_card_authenticationRequired":
                    changes.append("pm_card_authenticationRequired -> a localstripe 3-D Secure card")
                    value = self._authentication_pm(headers)
            elif method == "POST" and _CONFIRM.match(path) and key in ("error_on_requires_action", "payment_method"):
                changes.append(f"dropped {key}")
                continue
            elif method == "POST" and _CANCEL.match(path) and key == "cancellation_reason":
                changes.append("dropped cancellation_reason")
                continue
            elif method == "GET" and path == "/v1/payment_intents" and key.startswith("created"):
                changes.append("dropped the created filter")
                continue
            out.append((key, value))
        if changes:
            with self._lock:
                self.translated.append((method, path, sorted(set(changes))))
        return out

    def _authentication_pm(self, headers: dict) -> str:
        with self._lock:
            if self._auth_pm is None:
                body = urllib.parse.urlencode({"type": "card", "card[number]": AUTHENTICATION_CARD,
                                               "card[exp_month]": "12", "card[exp_year]": "2034",
                                               "card[cvc]": "123"})
                status, _, answer = self._forward("POST", "/v1/payment_methods", body.encode(), headers)
                assert status == 200, answer
                import json
                self._auth_pm = json.loads(answer)["id"]
            return self._auth_pm

    # -- relaying -------------------------------------------------------------------

    def _forward(self, method: str, target: str, body: bytes, headers: dict):
        conn = http.client.HTTPConnection(self.upstream.hostname, self.upstream.port, timeout=10)
        try:
            sent = {k: v for k, v in headers.items() if k.lower() in ("authorization", "idempotency-key",
                                                                     "content-type", "stripe-version")}
            if method == "POST":
                sent["Content-Type"] = "application/x-www-form-urlencoded"
                sent["Content-Length"] = str(len(body))
            conn.request(method, target, body=body if method == "POST" else None, headers=sent)
            response = conn.getresponse()
            return response.status, response.getheader("Content-Type") or "application/json", response.read()
        finally:
            conn.close()

    def _relay(self, h: BaseHTTPRequestHandler) -> None:
        split = urllib.parse.urlsplit(h.path)
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length).decode() if length else ""
        headers = dict(h.headers.items())
        if h.command == "POST":
            pairs = self._translate("POST", split.path, urllib.parse.parse_qsl(raw, keep_blank_values=True), headers)
            body, target = urllib.parse.urlencode(pairs).encode(), split.path
        else:
            pairs = self._translate(h.command, split.path, urllib.parse.parse_qsl(split.query,
                                                                                 keep_blank_values=True), headers)
            body, target = b"", split.path + ("?" + urllib.parse.urlencode(pairs) if pairs else "")
        status, content_type, answer = self._forward(h.command, target, body, headers)
        with self._lock:
            drop = h.command == "POST" and split.path.startswith("/v1/payment_intents") and self._drop > 0
            if drop:
                self._drop -= 1
        if drop:
            h.close_connection = True
            return
        h.send_response(status)
        h.send_header("Content-Type", content_type)
        h.send_header("Content-Length", str(len(answer)))
        h.end_headers()
        h.wfile.write(answer)
