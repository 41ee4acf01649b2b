"""The end of the vendor's day: totals per currency (``kiosk report``) and one
CSV row per payment for the books (``kiosk report --csv``).

What each payment of the day counts as (a payment counts once in each line it fits)::

    sales      every sale the customer left with: approved online, or stored offline
    online     of those, approved (or cut short) at the till
    offline    of those, stored offline and forwarded later
    charged    succeeded at Stripe (online, or offline and forwarded)
    forwarded  offline sales that Stripe accepted
    pending    waiting to be forwarded (or an online sale whose answer was lost)
    declined   refused by the card's bank: at the till (the customer saw it, no
               sale), to follow up, or followed up
    moved      exported to another kiosk, which forwards them
    tips       the tips of the sales charged and still pending (part of their amounts)
    voided     sales voided before they were sent (never charged; not in sales)
    refunded   refunds that succeeded or are waiting to be sent, on the day the
               refund was made (a refund is a record of its own, never a sale)
    net        charged, less refunded: what Stripe holds for the day

Reads only the day's payments: the pending queue (bounded by ``max_pending``)
and the settled ones taken that day (``store.settled(since=, until=)``), a
page at a time, newest first; memory does not grow with history or with the
day, and a day a year back does not read the year after it.
:func:`day_report` is what ``kiosk report`` and the Today screen both show.  Never shows a card
number, token or request; a customer's contact only when asked, and never one
that looks like a card number.
"""
from __future__ import annotations

import csv
import heapq
import inspect
from datetime import date, tzinfo
from typing import Iterable, Iterator, TextIO

from .card_numbers import contains_card_number
from .local_time import day_bounds, local, zone_name
from .money import format_amount, to_decimal
from .quick_items import safe_describe
from .payment import FAILED, LIVE_STATES, MOVED, SUCCEEDED, VOIDED, Payment

# the lines of a currency's totals, in the order shown and in --json (stable keys)
LINES = ("sales", "online", "offline", "charged", "forwarded", "pending", "declined", "moved",
         "voided", "refunded", "tips")
DECLINED_KINDS = ("at_till", "to_follow_up", "followed_up")
NOT_YET_TAKEN = ()      # lines reported as 0 until the kiosk takes them: none left
CSV_COLUMNS = ("local_time", "amount", "currency", "state", "offline", "items", "tip", "brand", "last4",
               "payment_intent", "kiosk_id", "payment_id")
WITHHELD = "(withheld: looks like a card number)"


def _line() -> dict:
    return {"count": 0, "amount": 0}


def _add(line: dict, amount: int) -> None:
    line["count"] += 1
    line["amount"] += amount


def day_payments(pending: Iterable[Payment], settled: Iterable[Payment], start: str, end: str) -> Iterator[Payment]:
    """The payments taken in ``start <= created_at < end``, newest first.
    ``settled`` streams newest first from ``start`` on (:func:`settled_between`);
    ``pending`` is the queue, small enough to sort."""
    queue = sorted((p for p in pending if start <= p.created_at < end), key=_taken, reverse=True)
    later_days_skipped = (p for p in settled if p.created_at < end)
    return heapq.merge(queue, later_days_skipped, key=_taken, reverse=True)


def settled_between(store, start: str, end: str | None = None) -> Iterable[Payment]:
    """``store.settled(since=start, until=end)``, newest first; for a store
    that takes no ``until`` (or no ``since``) what it does take, and the rest
    is skipped here."""
    taken = inspect.signature(store.settled).parameters
    if "until" in taken and end is not None:
        return store.settled(None, since=start, until=end)
    if "since" in taken:
        return store.settled(None, since=start)
    return (p for p in store.settled(None) if p.created_at >= start)


def payments_of(store, day: date, zone: tzinfo) -> Iterator[Payment]:
    """Every payment taken on ``day`` in ``zone``, pending and settled, newest first."""
    start, end = day_bounds(day, zone)
    return day_payments(store.live(), settled_between(store, start, end), start, end)


def day_report(store, day: date, zone: tzinfo) -> dict:
    """The day's totals, as ``kiosk report --json`` and the Today screen show them:
    ``{"date", "timezone", "from", "to", "currencies"}`` (``from``/``to``: the day's
    bounds as stored, ISO 8601 UTC)."""
    start, end = day_bounds(day, zone)
    return {"date": day.isoformat(), "timezone": zone_name(zone), "from": start, "to": end,
            "currencies": totals(payments_of(store, day, zone))}


def _taken(payment: Payment) -> str:
    return payment.created_at       # ISO 8601 UTC, all one format: sorts as the time does


def declined_at_till(payment: Payment) -> bool:
    """Refused while the customer was there and saw it: no sale."""
    return payment.state == FAILED and not payment.offline and not payment.interrupted_told


def totals(payments: Iterable[Payment]) -> dict[str, dict]:
    """Per currency, every line of :data:`LINES` (``{"count", "amount"}`` in
    minor units; ``declined`` also split by :data:`DECLINED_KINDS`) and ``net``."""
    found: dict[str, dict] = {}
    for p in payments:
        day = found.get(p.currency)
        if day is None:
            day = found[p.currency] = {name: _line() for name in LINES}
            day["declined"].update({kind: _line() for kind in DECLINED_KINDS})
        if p.is_refund:
            if p.state == SUCCEEDED or p.state in LIVE_STATES:
                _add(day["refunded"], p.amount)
            continue
        if p.state == VOIDED:
            _add(day["voided"], p.amount)       # the customer changed their mind: no sale
            continue
        if declined_at_till(p):
            _add(day["declined"], p.amount)
            _add(day["declined"]["at_till"], p.amount)
            continue
        _add(day["sales"], p.amount)
        _add(day["offline" if p.offline else "online"], p.amount)
        if p.tip and p.state in (SUCCEEDED, *LIVE_STATES) and not p.is_refund:
            _add(day["tips"], p.tip)        # what the customers gave on top, charged or still to be
        if p.state == SUCCEEDED:
            _add(day["charged"], p.amount)
            if p.offline:
                _add(day["forwarded"], p.amount)
        elif p.state in LIVE_STATES:
            _add(day["pending"], p.amount)
        elif p.state == FAILED:
            _add(day["declined"], p.amount)
            _add(day["declined"]["followed_up" if p.followed_up else "to_follow_up"], p.amount)
        elif p.state == MOVED:
            _add(day["moved"], p.amount)
    for day in found.values():
        day["net"] = day["charged"]["amount"] - day["refunded"]["amount"]
    return dict(sorted(found.items()))


def text_lines(by_currency: dict[str, dict]) -> list[str]:
    """The totals as the vendor reads them, one currency after another."""
    lines = []
    for code, day in by_currency.items():
        def line(label: str, name: str, note: str = "") -> str:
            count, amount = day[name]["count"], day[name]["amount"]
            return f"  {label:<10} {count:>5}  {format_amount(amount, code):>14}{note}"
        declined = day["declined"]
        lines += [
            code.upper(),
            line("sales", "sales"),
            line("  online", "online"),
            line("  offline", "offline"),
            line("charged", "charged"),
            line("forwarded", "forwarded"),
            line("pending", "pending", "  (not forwarded yet)" if day["pending"]["count"] else ""),
            line("declined", "declined", f"  ({declined['to_follow_up']['count']} to follow up, "
                                         f"{declined['followed_up']['count']} followed up, "
                                         f"{declined['at_till']['count']} at the till)"),
            *([line("moved", "moved", "  (to another kiosk)")] if day["moved"]["count"] else []),
            line("voided", "voided"),
            line("refunded", "refunded"),
            line("tips", "tips"),
            f"  {'net':<10} {'':>5}  {format_amount(day['net'], code):>14}  (charged, less refunded)",
        ]
    return lines


def write_csv(out: TextIO, payments: Iterable[Payment], zone: tzinfo, kiosk_id: str,
              with_contacts: bool = False) -> int:
    """One row per payment (:data:`CSV_COLUMNS`, and ``customer`` with
    ``with_contacts``), written as it is read; returns how many."""
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS + (("customer",) if with_contacts else ()))
    written = 0
    for p in payments:
        amount = -p.amount if p.is_refund else p.amount      # a refund is money given back
        row = [local(p.created_at, zone), str(to_decimal(amount, p.currency)), p.currency, p.state,
               "yes" if p.offline else "no", safe_describe(p.items), str(to_decimal(p.tip, p.currency)),
               p.card.brand, p.card.last4,
               p.payment_intent or "", _kiosk_of(p, kiosk_id), p.id]
        if with_contacts:
            row.append(_contact(p.customer))
        writer.writerow([_cell(value) for value in row])
        written += 1
    return written


def _kiosk_of(payment: Payment, here: str) -> str:
    """The kiosk that took the sale: an imported one keeps its own (its request's metadata)."""
    metadata = (payment.request or {}).get("metadata") or {}
    return metadata.get("kiosk_id") or here


def _contact(customer: str | None) -> str:
    if not customer:
        return ""
    # refused at the sale since issue 14; one stored earlier is still never written out
    return WITHHELD if contains_card_number(customer) else customer


def _cell(value: str) -> str:
    """A spreadsheet never runs a cell as a formula (a contact like ``=HYPERLINK(...)``)."""
    if value[:1] in ("=", "@", "\t", "\r") or (value[:1] in ("+", "-") and not _phone_like(value)):
        return "'" + value
    return value


def _phone_like(value: str) -> bool:
    return all(ch.isdigit() or ch in " +-()." for ch in value)
