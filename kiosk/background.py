"""The kiosk's background loop (``kiosk run`` runs it on the forwarder
thread): forward whenever Stripe is reachable, send reminders, ask "ready to
sell offline?" now and then, tidy the store.

It only schedules: the work is the kiosk's own, and a pass that fails is
logged and tried again at the next poll -- it never ends the loop, and it
never runs on the screen's thread.
"""
from __future__ import annotations

import logging
import threading

from datetime import datetime, timedelta, timezone

from .disk_space import DiskWatch
from .forwarding import due
from .interfaces import StoreAlarm, optional
from .payment import iso
from .readiness import store_alarms
from .watchdog import BACKGROUND, heartbeat, wait as watchdog_wait

log = logging.getLogger("kiosk.engine")     # the engine's log lines keep their name

READINESS_SECONDS = 300     # how often `kiosk run` asks "ready to sell offline?" again
PRUNE_STEPS = 10            # store prune() calls per pass: a bounded amount of work each poll


def prune_history(kiosk, stop: threading.Event) -> int:
    """``[storage] keep_days``: forget settled payments older than that, a
    bounded step at a time (Stripe keeps the ledger).  The store never
    forgets a pending payment or one still to follow up.  Only while online,
    by Stripe's clock: a kiosk clock run years ahead must not erase history."""
    keep_days = kiosk.config["storage"]["keep_days"]
    prune = optional(kiosk.store, "PaymentStore", "prune")
    if not keep_days or prune is None or not kiosk.online:
        return 0
    stripe_now = optional(kiosk.sync, "Forwarder", "stripe_now")
    stripe_at = stripe_now() if stripe_now else None
    now = datetime.fromtimestamp(stripe_at, timezone.utc) if stripe_at is not None else kiosk.clock()
    before = iso(now - timedelta(days=keep_days))
    forgotten = 0
    for _ in range(PRUNE_STEPS):
        gone = prune(before)
        forgotten += gone
        if not gone or stop.is_set():
            break
    if forgotten:
        log.info("forgot %d settled payments settled before %s ([storage] keep_days = %d)",
                 forgotten, before, keep_days)
    return forgotten


def run(kiosk, stop: threading.Event) -> None:
    """Forward whenever Stripe is reachable, send reminders, tidy the store.
    Sleeps between checks (battery): wakes early on ``kiosk.wake``.  Ticks
    systemd's watchdog at every pass, per payment forwarded and while asleep
    (:mod:`kiosk.watchdog`): a pass stuck anywhere else stops the beats."""
    poll = kiosk.config["sync"]["poll_seconds"]
    for line in store_alarms(kiosk.store):    # damage salvaged earlier: on the screen and the light each start
        kiosk.telling.alert_store(line)
    disk = DiskWatch(kiosk)       # free space: a notice as it falls below [storage] min_free_mb, not every poll
    while not stop.is_set():
        heartbeat(BACKGROUND)
        forced = kiosk.wake.is_set()
        kiosk.wake.clear()
        try:
            disk.check()
            if kiosk.check_online():
                if any(due(p, kiosk.clock()) for p in kiosk.store.live()) or forced:
                    kiosk.forward(force=forced, stop=stop,
                                  progress=lambda done, total: heartbeat(BACKGROUND))
                else:
                    kiosk.note_synced()
            elif (key := kiosk.health.key_problem()) is not None:
                kiosk.telling.alert_key("Stripe rejected the API key" if key == "rejected"
                                        else kiosk.sync_problem() or "no API key is set", missing=key == "missing")
            if kiosk.online and kiosk.health.readiness_older_than(READINESS_SECONDS):
                kiosk.readiness()     # asked while online: offline, Stripe's lines could not be checked
            kiosk.health.check_clock()      # tells the vendor when the clock stops (or starts) being trusted
            kiosk.remind()
            kiosk.selling.write_shown()
            kiosk.timekeeper.save()         # the last known good time, a few minutes apart at most
            kiosk.store.maintain()
            prune_history(kiosk, stop)
        except StoreAlarm as exc:      # damage found while running: the vendor must see it, not only the log
            if not disk.failed(exc):   # a full disk is told as one, once: it is no damage
                kiosk.telling.alert_store(str(exc))
        except Exception as exc:
            if not disk.failed(exc):   # a full disk: told once, tried again at the next poll
                log.exception("background forwarding pass failed; trying again in %.0f s", poll)
        watchdog_wait(kiosk.wake, poll, BACKGROUND)
        if stop.is_set():
            break
