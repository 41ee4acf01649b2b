"""Stripe's part of "ready to sell offline?": the key, the API version, the clock.

An offline sale is only as good as the forward that follows it: a key Stripe
will refuse, an API version it will not take or a clock far from Stripe's
(the 24-hour window, the lookups) all turn into lost sales hours later, when
the customer has gone.  Checked now, while the vendor can still fix them.
Never shows the key itself.
"""
from __future__ import annotations

import time

from kiosk import Readiness

from .request import API_VERSION

CLOCK_TOLERANCE = 60        # seconds the kiosk's clock may differ from Stripe's


# the only permission the kiosk's requests need (docs/stripe.md, "A restricted key")
RESTRICTED_KEY_PERMISSIONS = "PaymentIntents: Write and Refunds: Write, everything else None"


def _key_line(key: str) -> Readiness:
    mode = "live" if "_live_" in key else "test"
    if key.startswith("rk_"):
        return Readiness("api_key", True, f"a restricted key, {mode} mode")
    if mode == "live":
        # a live secret key works, so not "not ready" -- but it is the one thing a stolen card must not carry
        return Readiness("api_key", True, "warning: a live secret key (sk_live_…), which can do anything in "
                                          "your Stripe account",
                         f"replace it with a restricted key (rk_live_…) with {RESTRICTED_KEY_PERMISSIONS}: "
                         "a stolen SD card then cannot refund, pay out or read customers")
    return Readiness("api_key", True, f"a secret key, {mode} mode",
                     f"a restricted key (rk_…) with {RESTRICTED_KEY_PERMISSIONS} is safer on a kiosk: "
                     "a stolen SD card then cannot refund, pay out or read customers")


def _clock_line(offset: float) -> Readiness:
    if abs(offset) <= CLOCK_TOLERANCE:
        return Readiness("clock", True, f"the kiosk's clock agrees with Stripe's (within {abs(offset):.0f} s)")
    way = "behind" if offset > 0 else "ahead of"
    return Readiness("clock", False, f"the kiosk's clock is {abs(offset) / 60:.0f} min {way} Stripe's",
                     "set the time (connect to a network with time sync, or timedatectl set-time): "
                     "the 24-hour window and the reminders run on it")


def check(forwarder) -> list[Readiness]:
    if not forwarder.api_key:
        return [Readiness("api_key", False, "no Stripe API key",
                          "set STRIPE_API_KEY or [stripe] api_key_file (a file of mode 0600)")]
    lines = [_key_line(forwarder.api_key)]
    asked = time.time()
    forwarder.reachable()          # asked now: the answer's headers carry Stripe's clock and version
    if forwarder.key_rejected:
        lines.append(Readiness("stripe", False, forwarder.problem or "Stripe rejected the API key",
                               "check the key in the Stripe Dashboard (Developers → API keys)"))
        return lines
    if forwarder.request_refused:
        lines.append(Readiness("stripe", False, forwarder.request_refused,
                               "update the kiosk: until then sales are taken offline and kept"))
        return lines
    answer = forwarder.last_answer
    if answer.get("at", 0.0) < asked:
        lines.append(Readiness("stripe", False, "Stripe cannot be reached now: the key, API version and clock "
                                                "are not checked", "connect the kiosk and check again"))
        return lines
    lines.append(Readiness("stripe", True, "Stripe accepts the key"))
    version = answer.get("stripe_version")
    if version == API_VERSION:
        lines.append(Readiness("api_version", True, f"Stripe answers in API version {API_VERSION}"))
    else:
        lines.append(Readiness("api_version", False, f"Stripe answered in API version {version or 'unknown'}; "
                                                     f"this kiosk speaks {API_VERSION}",
                               "update the kiosk, or report this: its requests may be refused"))
    lines.append(_clock_line(forwarder.clock_offset))
    return lines
