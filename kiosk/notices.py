"""Notices: what the kiosk tells the vendor, through every notifier plugin.

A notice is sent only after the change it reports is durable.  Notices carry
brand and last 4 for display, never a token or card number; a customer contact
appears only in decline notices, for follow-up.  A time in a message is in the
kiosk's zone (``zone``: ``Kiosk.zone``; the system's when not given), with
the zone's name; ``at`` stays ISO 8601 UTC.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import timedelta, tzinfo

from .local_time import shown_time, system_zone
from .money import format_amount
from .payment import Payment, iso, parse_iso, utcnow

# kinds
APPROVED = "approved"              # online sale charged
SALE_DECLINED = "sale_declined"    # online sale declined at the till
STORED_OFFLINE = "stored_offline"  # offline sale stored, will be forwarded
FORWARDED = "forwarded"            # an offline payment reached Stripe and succeeded
DECLINED = "declined"              # Stripe declined or refused a payment: follow up
REMINDER = "reminder"              # the 24-hour forwarding window is closing
LIMIT_REACHED = "limit_reached"    # an offline sale was refused by a limit
AUTH_FAILED = "auth_failed"        # Stripe rejected the API key; forwarding stopped
KEY_MISSING = "key_missing"        # no API key is set: nothing is sent until one is; sales are kept
ONLINE = "online"
OFFLINE = "offline"
STORE_RECOVERED = "store_recovered"
READER = "reader"                  # card reader connected, disconnected, battery low (reader plugins)
INTERRUPTED = "interrupted"        # an online sale whose outcome is not known yet
DECLINED_FOR_NOW = "declined_for_now"  # declined, but the issuer may approve a later try: the kiosk retries
NEEDS_UPDATE = "needs_update"      # Stripe refused the kiosk's own request: sales kept, the kiosk needs an update
PLUGIN_TROUBLE = "plugin_trouble"  # a notifier or display failed to load, is switched off, or raised: skipped
SAFE_MODE = "safe_mode"            # only built-in plugins loaded (the last start did not complete, or --safe)
STORE_ALARM = "store_alarm"        # the store found damage while running: what is stored is kept, get help
CLOCK = "clock"                    # the clock is not known to be right (warning), or is again (success)
DISK_LOW = "disk_low"              # free space on the data partition fell below [storage] min_free_mb
DISK_FULL = "disk_full"            # the data partition refused a write (full, over quota, failing): nothing more is stored
BATTERY_LOW = "battery_low"        # on battery and running low: plug in soon (a power plugin)
BATTERY_CRITICAL = "battery_critical"  # nearly empty: new sales refused, the kiosk shuts down (a power plugin)
POWER_RESTORED = "power_restored"  # back on mains power after a battery warning: sales go on (a power plugin)
RECEIPT = "receipt"                # a receipt was not printed (printer failed or hung): the sale stands, reprint it
VOIDED = "voided"                  # the vendor voided a sale before it was sent: it is never charged
REFUNDED = "refunded"              # a refund reached Stripe and succeeded
REFUND_FAILED = "refund_failed"    # Stripe refused a refund (its reason in the message): nothing was given back


@dataclass(frozen=True)
class Notice:
    kind: str
    title: str
    message: str
    level: str = "info"            # info, success, warning, error
    payment: dict | None = None    # Payment.public() summary
    at: str = field(default_factory=lambda: iso(utcnow()))

    def as_dict(self) -> dict:
        return asdict(self)

    def line(self) -> str:
        return f"{self.title}: {self.message}" if self.message else self.title


def _what(payment: Payment) -> str:
    return (f"{format_amount(payment.amount, payment.currency)} "
            f"{payment.card.brand} •••• {payment.card.last4}")


def _taken(payment: Payment, zone: tzinfo | None) -> str:
    return shown_time(payment.created_at, zone or system_zone())


def approved(payment: Payment) -> Notice:
    return Notice(APPROVED, "Approved", _what(payment), "success", payment.public())


def stored_offline(payment: Payment) -> Notice:
    return Notice(STORED_OFFLINE, "Approved offline",
                  f"{_what(payment)} — will be sent when back online", "success", payment.public())


def forwarded(payment: Payment, zone: tzinfo | None = None) -> Notice:
    return Notice(FORWARDED, "Payment sent", f"{_what(payment)} taken {_taken(payment, zone)} "
                  f"settled as {payment.payment_intent}", "success", payment.public())


def declined(payment: Payment, zone: tzinfo | None = None) -> Notice:
    reason = payment.decline_code or "refused"
    contact = f"; customer: {payment.customer}" if payment.customer else "; no customer contact"
    return Notice(DECLINED, "Payment declined — follow up",
                  f"{_what(payment)} taken {_taken(payment, zone)}: {reason} — {payment.message}{contact}",
                  "error", payment.public())


def reminder(hours: float, pending: int, deadline_hours: float, oldest_taken: str | None = None,
             zone: tzinfo | None = None) -> Notice:
    """``oldest_taken``: the oldest payment's ``created_at``; the message then names the
    time it must be sent by, in the kiosk's zone."""
    left = max(0.0, deadline_hours - hours)
    taken = parse_iso(oldest_taken)
    deadline = None if taken is None else taken + timedelta(hours=deadline_hours)   # 24 real hours
    by = "" if deadline is None else f" (send it by {shown_time(deadline, zone or system_zone())})"
    return Notice(REMINDER, "Go online soon",
                  f"{pending} payment(s) waiting; the oldest is {hours:.0f} h old — "
                  f"{left:.0f} h left to send it to Stripe{by}", "warning" if left > 2 else "error")


def limit_reached(message: str) -> Notice:
    return Notice(LIMIT_REACHED, "Offline limit reached", message, "warning")


def auth_failed(message: str) -> Notice:
    return Notice(AUTH_FAILED, "Stripe key rejected",
                  f"{message} — forwarding stopped; payments are kept", "error")


def key_missing(message: str) -> Notice:
    return Notice(KEY_MISSING, "Stripe key missing",
                  f"{message} — nothing is sent until one is set; payments are kept", "error")


def interrupted(payment: Payment, zone: tzinfo | None = None) -> Notice:
    return Notice(INTERRUPTED, "Online sale not confirmed",
                  f"{_what(payment)} taken {_taken(payment, zone)}: Stripe's answer was lost. It is kept and "
                  "will be settled when Stripe answers — do not charge the card again until then",
                  "warning", payment.public())


def offline_interrupted(payment: Payment, zone: tzinfo | None = None) -> Notice:
    return Notice(INTERRUPTED, "Offline sale may not have been shown",
                  f"{_what(payment)} taken {_taken(payment, zone)}: the kiosk stopped just after storing it, perhaps "
                  "before \"approved\" was shown. It is kept and will be charged — do not charge the card again",
                  "warning", payment.public())


def declined_for_now(payment: Payment, reason: str, retries_left: int, zone: tzinfo | None = None) -> Notice:
    return Notice(DECLINED_FOR_NOW, "Declined for now — will retry",
                  f"{_what(payment)} taken {_taken(payment, zone)}: {reason.rstrip('.')}. The kiosk tries again "
                  f"({retries_left} more {'try' if retries_left == 1 else 'tries'}); nothing to do yet",
                  "warning", payment.public())


def store_alarm(message: str) -> Notice:
    return Notice(STORE_ALARM, "Payment storage damaged",
                  f"{message} — what is stored is kept; do not charge a card twice; get the kiosk "
                  "checked (`kiosk status`)", "error")


def disk_low(free_mb: float, min_free_mb: float) -> Notice:
    return Notice(DISK_LOW, "Disk space low", f"{free_mb:.1f} MB free on the data partition (below "
                  f"[storage] min_free_mb = {min_free_mb:g}) — free some space before sales cannot be stored",
                  "warning")


def disk_trouble(full: bool, line: str) -> Notice:
    return Notice(DISK_FULL, "Disk full" if full else "Disk write error",
                  f"{line} — new sales are refused until it is fixed; a sale already charged is "
                  "settled once it can be written: do not charge a card twice", "error")


def needs_update(message: str) -> Notice:
    return Notice(NEEDS_UPDATE, "This kiosk needs an update",
                  f"{message} — offline sales are kept and sent once it is updated; "
                  "online sales are not charged until then", "error")


def clock_untrusted(why: str) -> Notice:
    return Notice(CLOCK, "Clock not trusted", f"{why} — connect the kiosk to the network to check it", "warning")


def clock_trusted(source: str | None) -> Notice:
    where = "Stripe's clock" if source == "stripe" else "network time"
    return Notice(CLOCK, "Clock checked", f"the clock agrees with {where}", "success")


def plugin_trouble(line: str) -> Notice:
    return Notice(PLUGIN_TROUBLE, "A plugin is not working", f"{line} — it is skipped; sales go on", "warning")


def safe_mode(why: str) -> Notice:
    return Notice(SAFE_MODE, "Safe mode", f"{why}: only the built-in plugins are loaded; "
                  "sales and forwarding work as usual", "warning")


def voided(payment: Payment, zone: tzinfo | None = None) -> Notice:
    return Notice(VOIDED, "Sale voided", f"{_what(payment)} taken {_taken(payment, zone)}: never sent, "
                  "never charged", "success", payment.public())


def refunded(refund: Payment, zone: tzinfo | None = None) -> Notice:
    return Notice(REFUNDED, "Refunded", f"{_what(refund)} given back for the sale {refund.refund_of}"
                  f" ({refund.refund_id or 'refund'}), asked {_taken(refund, zone)}", "success", refund.public())


def refund_failed(refund: Payment, zone: tzinfo | None = None) -> Notice:
    return Notice(REFUND_FAILED, "Refund refused — nothing given back",
                  f"{_what(refund)} for the sale {refund.refund_of}, asked {_taken(refund, zone)}: "
                  f"{refund.message or 'refused'}", "error", refund.public())
