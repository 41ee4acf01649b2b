"""Which time the kiosk can defend.

A Raspberry Pi has no real-time clock: switched off overnight and booted
without network, its clock restarts hours behind and nothing in it says so.
The 24-hour window, the reminders, the shrinking offline limits and every
payment's ``created_at`` are counted on :class:`KioskClock`, which is the
system clock but never earlier than the newest of what the kiosk can prove:

- the last time it knew, saved on the data partition (store meta ``clock``)
  with the boot id and ``CLOCK_BOOTTIME``: in the same boot the time elapsed
  since is added; after a reboot it is only a floor;
- the newest time stored with a payment (``created_at``, ``settled_at``) or
  a sync;
- Stripe's clock (the ``Date`` header of its last answer, through the sync
  plugin's ``stripe_now()``) plus the monotonic time elapsed since;
- any time it has already handed out: it never runs backwards.

Erring towards "older": a waiting payment's age is now minus its
``created_at``, and "now" only ever moves up, so stepping the system clock
back cannot make a payment younger or extend its 24 hours.

It also says when the system clock is not known to be right (``state()``):
no time source since boot, behind what the kiosk can prove, or far ahead of
Stripe's.  It never writes on the sale path (``save()`` is for the background
loop and closing, a few minutes apart), and never moves the kiosk's time
backwards, not even to follow Stripe.
"""
from __future__ import annotations

import ctypes
import functools
import logging
import math
import threading
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from .interfaces import optional
from .payment import iso, parse_iso, utcnow

log = logging.getLogger("kiosk.clock")

META = "clock"              # store meta: {"at", "boot_id", "boottime", "checked_boot"}
SAVE_SECONDS = 300.0        # save the last known good time at most this often (an fsync'd append each)
BOOT_ID_FILE = Path("/proc/sys/kernel/random/boot_id")
TIME_ERROR = 5              # adjtimex(2): the kernel's clock is not synchronised

# why the clock is not trusted, most serious first
BEHIND, AHEAD_OF_STRIPE, UNCHECKED = "behind", "ahead_of_stripe", "unchecked"
# where the kiosk's time came from when it is later than the system clock
FROM_STRIPE, FROM_SAVED, FROM_PAYMENTS = "stripe", "saved", "payments"


def boot_id() -> str | None:
    """This boot's id (changes at every boot), or None off Linux."""
    try:
        return BOOT_ID_FILE.read_text().strip() or None
    except OSError:
        return None


def boottime() -> float:
    """Seconds since boot, counting suspend; never stepped by anyone setting the clock."""
    return time.clock_gettime(getattr(time, "CLOCK_BOOTTIME", time.CLOCK_MONOTONIC))


def kernel_synchronized() -> bool:
    """Whether a time daemon (systemd-timesyncd, chrony...) has synchronised
    the kernel's clock: ``adjtimex`` in read-only mode, as ``timedatectl`` asks."""
    try:
        timex = ctypes.create_string_buffer(512)     # struct timex, modes = 0: read only
        state = _libc().adjtimex(timex)
    except (OSError, AttributeError):
        return False
    return 0 <= state != TIME_ERROR


@functools.cache
def _libc():
    return ctypes.CDLL(None, use_errno=True)


def duration(seconds: float) -> str:
    """A gap for the vendor: minutes under two hours, else hours."""
    seconds = abs(seconds)
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


@dataclass(frozen=True)
class ClockState:
    """What ``kiosk status`` says of the clock (``as_dict()`` is its ``clock`` object)."""
    trusted: bool
    reasons: tuple            # BEHIND, AHEAD_OF_STRIPE, UNCHECKED: why not trusted
    why: str | None           # one line for the vendor when not trusted
    kiosk_time: str           # the time the kiosk counts with (ISO)
    system_time: str          # what the system clock says
    offset_seconds: float     # kiosk time minus system time (>= 0: the kiosk never runs behind)
    stripe_offset_seconds: float | None   # Stripe's clock minus the system clock, when heard
    source: str | None        # "stripe", "system_sync" (a time daemon) or None: none since boot
    last_saved_at: str | None   # the last known good time on the data partition

    def as_dict(self) -> dict:
        return dict(asdict(self), reasons=list(self.reasons))


class KioskClock:
    """Call it for "now" (UTC, aware).  ``system`` is the clock it defends
    against (the wall clock; tests pass their own)."""

    def __init__(self, store, sync, tolerance: float, system: Callable[[], datetime] = utcnow,
                 boottime: Callable[[], float] = boottime, boot_id: Callable[[], str | None] = boot_id,
                 kernel_synced: Callable[[], bool] = kernel_synchronized):
        self.store, self.sync, self.tolerance = store, sync, float(tolerance)
        self.system, self._boottime, self._kernel_synced = system, boottime, kernel_synced
        self.boot = boot_id()
        self._lock = threading.Lock()
        self._anchor, self._anchor_boot = -math.inf, self._boottime()    # proven time, and boottime then
        self._origin: str | None = None          # what the proven time came from
        self._checked = False                     # a time source seen in this boot
        self._saved: dict | None = None           # the record on the data partition
        self._failed_at: float | None = None      # boottime of the last save that failed
        self._load()

    # -- what it knows at opening ------------------------------------------------

    def _load(self) -> None:
        store = self.store
        now_boot = self._boottime()
        record = store.get_meta(META)
        try:
            at = parse_iso(record["at"]).timestamp()
            elapsed = now_boot - float(record.get("boottime") or 0.0)
        except (KeyError, TypeError, ValueError, AttributeError):
            record = None                         # none yet (an earlier release), or unreadable: no floor from it
        if record is not None:
            self._saved = record
            if self.boot is not None and record.get("boot_id") == self.boot and elapsed >= 0:
                at += elapsed                     # same boot: CLOCK_BOOTTIME proves the time since
                self._checked = record.get("checked_boot") == self.boot
            self._raise(at, now_boot, FROM_SAVED)
        live = store.live()
        settled = store.settled(1)
        newest = next(iter(settled), None)
        if hasattr(settled, "close"):
            settled.close()                       # a store's cursor, not left open
        stamps = [p.created_at for p in live]
        if newest is not None:
            stamps += [newest.created_at, newest.settled_at]
        stamps.append(store.get_meta("last_sync_at"))
        for stamp in filter(None, stamps):
            self._raise(parse_iso(stamp).timestamp(), now_boot, FROM_PAYMENTS)

    def _raise(self, proven: float, at_boot: float, origin: str) -> None:
        """Take ``proven`` (unix, true at boottime ``at_boot``) as a floor if it is newer."""
        if proven > self._anchor + (at_boot - self._anchor_boot):
            self._anchor, self._anchor_boot, self._origin = proven, at_boot, origin

    # -- now -----------------------------------------------------------------------

    def _stripe(self) -> float | None:
        stripe_now = optional(self.sync, "Forwarder", "stripe_now")
        value = stripe_now() if stripe_now else None
        if value is not None:
            self._checked = True
        return value

    def __call__(self) -> datetime:
        system = self.system()
        stamp = system.timestamp()
        stripe = self._stripe()
        with self._lock:
            at_boot = self._boottime()
            if stripe is not None:
                self._raise(stripe, at_boot, FROM_STRIPE)
            floor = self._anchor + (at_boot - self._anchor_boot)
            if stamp >= floor:
                self._anchor, self._anchor_boot, self._origin = stamp, at_boot, None
                return system
            return datetime.fromtimestamp(floor, timezone.utc)

    # -- is it right? ----------------------------------------------------------------

    def state(self) -> ClockState:
        system = self.system()
        now = self()
        stripe = self._stripe()
        offset = now.timestamp() - system.timestamp()
        source = "stripe" if self._checked else "system_sync" if self._kernel_synced() else None
        reasons, why = [], []
        if offset > self.tolerance:
            what = {FROM_STRIPE: "Stripe's clock", FROM_SAVED: "the last time the kiosk saved",
                    FROM_PAYMENTS: "the newest stored payment"}.get(self._origin, "the time the kiosk already counted")
            reasons.append(BEHIND)
            why.append(f"the system clock is {duration(offset)} behind {what}; the kiosk counts from that")
        if stripe is not None and now.timestamp() - stripe > self.tolerance:
            reasons.append(AHEAD_OF_STRIPE)
            why.append(f"the kiosk's clock is {duration(now.timestamp() - stripe)} ahead of Stripe's; "
                       "waiting payments count as older than they are")
        if source is None:
            reasons.append(UNCHECKED)
            why.append("no time source since the kiosk started (no network time, Stripe not reached): "
                       "waiting payments may be older than shown")
        saved = (self._saved or {}).get("at")
        return ClockState(trusted=not reasons, reasons=tuple(reasons), why="; ".join(why) or None,
                          kiosk_time=iso(now), system_time=iso(system), offset_seconds=round(offset, 3),
                          stripe_offset_seconds=None if stripe is None else round(stripe - system.timestamp(), 3),
                          source=source, last_saved_at=saved)

    # -- the last known good time, on the data partition -----------------------------

    def save(self) -> bool:
        """Save the kiosk's time if the saved one is stale (``SAVE_SECONDS``),
        understates what is proven, or a time source was seen since; never on
        the sale path.  Returns whether it wrote."""
        now = self()
        at_boot = self._boottime()
        if self._failed_at is not None and at_boot - self._failed_at < SAVE_SECONDS:
            return False                          # a full or damaged disk is not hammered every poll
        checked_boot = self.boot if self._checked else (self._saved or {}).get("checked_boot")
        saved = self._saved or {}
        projected, last = -math.inf, None
        if saved.get("at") and self.boot is not None and saved.get("boot_id") == self.boot:
            last = float(saved.get("boottime") or 0.0)
            projected = parse_iso(saved["at"]).timestamp() + at_boot - last
        due = (last is None or at_boot - last >= SAVE_SECONDS
               or now.timestamp() - projected > 60.0 or checked_boot != saved.get("checked_boot"))
        if not due:
            return False
        record = {"at": iso(now), "boot_id": self.boot, "boottime": round(at_boot, 3), "checked_boot": checked_boot}
        try:
            self.store.set_meta(META, record)
        except Exception:
            self._failed_at = at_boot
            raise
        self._saved, self._failed_at = record, None
        return True
