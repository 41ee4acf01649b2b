"""Crash points for the crash tests: ``KIOSK_CRASH_AT=<name>`` makes the
process SIGKILL itself when it reaches that point, exactly as a power cut
would stop it.  Unset (always, in production) it costs one comparison."""
from __future__ import annotations

import os
import signal

_CRASH_AT = os.environ.get("KIOSK_CRASH_AT", "")

POINTS = (
    "sale:after_card",       # card read, nothing stored yet
    "sale:after_store",      # sale stored, vendor not told yet
    "forward:after_mark",    # payment marked forwarding, request not sent
    "forward:after_send",    # Stripe answered, outcome not stored yet
)


def crash_point(name: str) -> None:
    if _CRASH_AT == name:
        os.kill(os.getpid(), signal.SIGKILL)
