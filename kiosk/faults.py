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
    "refund:after_reserve",  # a refund's id reserved on its sale, the refund record not stored yet
    "refund:after_store",    # the refund record stored with its request, not sent yet
    "settle:after_history",  # (built-in store) settled payment in history, still in the queue
    "migrate:after_batch",   # (built-in store) a batch of old history copied, more to come
    "migrate:before_unlink", # (built-in store) an old file copied, not yet deleted
    "mirror:before_append",  # (built-in store, [storage] mirror) a record durable in the first copy only
    "mirror:after_rename",   # (built-in store) a compacted first copy in place, the mirror still the old one
    "mirror:after_set_aside",  # (built-in store) a new card: the mirror's unreadable copy set aside, store not open
    "seal:after_temp",       # (built-in store, key_protector = "device") sealed key written aside, not in place
    "seal:after_link",       # (built-in store) sealed key durable, plain kiosk.key still there
    "seal:after_aside",      # (built-in store) plain key renamed to .kiosk.key.erasing
    "seal:after_overwrite",  # (built-in store) .kiosk.key.erasing overwritten, not yet removed
)
# ``name#N`` stops at the Nth time the point is reached
_CRASH_NAME, _, _CRASH_NTH = _CRASH_AT.partition("#")
_reached: dict[str, int] = {}


def crash_point(name: str) -> None:
    """Where a power cut is tested.  A plugin may name its own points."""
    if _CRASH_NAME == name:
        _reached[name] = _reached.get(name, 0) + 1
        if _reached[name] >= int(_CRASH_NTH or 1):
            os.kill(os.getpid(), signal.SIGKILL)
