"""Keeping the vendor on time: reminders as the oldest waiting payment nears
the end of Stripe's 24-hour window, the "last synced" mark, and the failed
payments the vendor still has to follow up.

A reminder is stored as sent (durable) before it goes out, and never while an
attempt is under way for that payment.  It never forwards, and changes a
payment only through :mod:`kiosk.payment_states`.
"""
from __future__ import annotations

import time

from . import notices
from . import payment_states as states
from .interfaces import optional
from .notices import Notice
from .payment import FAILED, Payment, iso
from .sale_result import WINDOW_HOURS

SYNC_NOTE_SECONDS = 60      # write "last synced" at most this often while idle online


class Reminders:
    def __init__(self, kiosk):
        self.kiosk = kiosk
        self._last_sync_note = 0.0

    def remind(self) -> list[Notice]:
        """Remind the vendor as the oldest pending payment crosses each
        configured age; each threshold once for that payment.  When several
        are crossed at once (the kiosk was off), only the most urgent is sent."""
        kiosk = self.kiosk
        now = kiosk.clock()
        live = [p for p in kiosk.store.live() if not p.is_refund]   # a refund has no 24-hour window
        if not live:
            return []
        with kiosk.forwarding.held(live[0].id) as oldest:      # no attempt starts on it meanwhile
            if oldest is None or oldest.settled:
                return []
            age = (now - oldest.created()).total_seconds() / 3600
            due = [h for h in kiosk.config["kiosk"]["reminder_hours"] if h <= age and h not in oldest.reminded_hours]
            if not due:
                return []
            states.reminded(oldest, due)
            kiosk.store.save(oldest)                     # durable before the reminder goes out
        notice = notices.reminder(age, len(live), WINDOW_HOURS, oldest.created_at, kiosk.zone)
        kiosk.notify(notice)
        return [notice]

    def note_synced(self, force: bool = False) -> None:
        if force or time.monotonic() - self._last_sync_note > SYNC_NOTE_SECONDS:
            self._last_sync_note = time.monotonic()
            self.kiosk.store.set_meta("last_sync_at", iso(self.kiosk.clock()))

    # -- following up ------------------------------------------------------------

    def needs_attention(self) -> list[Payment]:
        """Failed forwards the vendor has not followed up yet, newest first:
        payments that failed after the customer left (offline sales, and online
        sales whose answer was lost) -- not a decline at the till."""
        indexed = optional(self.kiosk.store, "PaymentStore", "needing_follow_up")
        if indexed is not None:
            return list(indexed())
        return [p for p in self.kiosk.store.settled() if p.needs_follow_up]

    def mark_followed_up(self, payment_id: str) -> Payment:
        """The vendor has dealt with a failed payment (called the customer...)."""
        kiosk = self.kiosk
        payment = kiosk.store.get(payment_id)
        if payment is None or payment.state != FAILED:
            raise ValueError(f"no failed payment {payment_id}")
        if not payment.followed_up:
            states.followed_up(payment)
            kiosk.store.save(payment)
            kiosk.telling.payment_changed(payment, FAILED)
        return payment
