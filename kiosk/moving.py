"""Moving pending payments to another kiosk or a new SD card, exactly once:
``kiosk export FILE`` and ``kiosk import FILE``.

Export writes the file first, durably (:mod:`kiosk.export_file`), reads it
back, and only then takes the payments out of this kiosk's queue as
``moved`` -- one durable store step -- kept in history with the file's name
and the time.  A power cut between the two leaves the payments in both
places; each keeps its idempotency key and ``metadata.kiosk_payment_id``, so
whichever kiosk forwards second finds it at Stripe first (the pass's
reconcile for payments never sent, the lookup for those attempted) and
charges nothing.  Both kiosks must use the same Stripe account.

Import checks the whole file before it stores anything, then adds each
payment this kiosk does not know (pending, settled or moved out of here) as
it was: state, attempts, request -- and so the kiosk id it was taken under,
in the request's metadata.  Importing the same file twice adds nothing.  An
import is not a sale: the offline limits never refuse it, but what it adds
counts towards them from then on.

Never prints or logs a token, a passphrase or a key.
"""
from __future__ import annotations

import itertools
import logging
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from . import export_file
from . import payment_states as states
from .export_file import ExportFileError
from .faults import crash_point
from .interfaces import StoreAlarm, optional
from .money import MoneyError, currency_code
from .payment import FAILED, LIVE_STATES, MOVED, SUCCEEDED, VOIDED, Payment, iso

log = logging.getLogger("kiosk.moving")

SETTLED_BATCH = 1000        # settled payments per durable transaction on import


class MoveNotRecorded(Exception):
    """The export file is written but the queue could not record the move:
    the payments are in both places (safe: Stripe is asked before a send)."""


@dataclass
class Exported:
    path: Path
    pending: list[Payment]             # moved out of this kiosk's queue
    settled: int = 0                   # settled payments copied (--all)
    written: bool = False              # False for --dry-run


@dataclass
class Imported:
    path: Path
    source: str                        # the kiosk id that exported it
    exported_at: str
    added: list[Payment] = field(default_factory=list)
    settled_added: int = 0
    known: dict[str, int] = field(default_factory=dict)   # state here -> payments already known


# -- export ------------------------------------------------------------------------

def export_payments(kiosk, path: Path, passphrase: str | None, include_settled: bool = False,
           dry_run: bool = False) -> Exported:
    """Write ``path`` with every pending payment (and, with
    ``include_settled``, a copy of the settled ones), then move the pending
    ones out of the queue.  ``dry_run``: say what would move, write nothing."""
    store = kiosk.store
    pending = store.live()
    settled = _settled_to_copy(store) if include_settled else iter(())
    if dry_run:
        return Exported(Path(path), pending, sum(1 for _ in settled))
    now = kiosk.clock()
    manifest = {"kiosk_id": kiosk.config.kiosk_id, "exported_at": iso(now), "export_id": secrets.token_hex(8)}
    counted = _Counted(settled)
    key = export_file.write(path, passphrase, manifest, [p.to_record() for p in pending], counted)
    _check_written(Path(path), key, pending, counted.n)
    crash_point("export:after_file")
    note = f"moved to export file {Path(path).resolve()} at {iso(now)}"
    previous = {p.id: p.state for p in pending}
    for payment in pending:
        states.moved_out(payment, now, note)
    try:
        move_out = optional(store, "PaymentStore", "move_out")
        if move_out is not None:
            move_out(pending)
        else:
            for payment in pending:
                store.save(payment)
    except (OSError, StoreAlarm) as exc:
        raise MoveNotRecorded(f"{path} is written, but this kiosk could not record the move ({exc}): the "
                              f"payments are still here too; Stripe is asked before any is sent, so none is "
                              f"charged twice") from None
    for payment in pending:
        kiosk.telling.payment_changed(payment, previous[payment.id])
    log.info("moved %d pending payment(s) to %s", len(pending), path)
    return Exported(Path(path), pending, counted.n, written=True)


def _settled_to_copy(store):
    # a payment moved out earlier belongs to that file: copying its "moved" record would hide it there
    return (p for p in store.settled(None) if p.state != MOVED)


class _Counted:
    """The settled records as they are written, counted (history may hold millions: never a list)."""

    def __init__(self, payments):
        self.payments, self.n = payments, 0

    def __iter__(self):
        for payment in self.payments:
            self.n += 1
            yield payment.to_record()


def _check_written(path: Path, key: bytes, pending: list[Payment], settled: int) -> None:
    """Read the file back before the queue is touched: it must open and hold exactly what was exported."""
    reader = export_file.Reader(path, key=key)
    ids, copies = [], 0
    for section, record in reader.payments():
        if section == "pending":
            ids.append(record.get("id"))
        else:
            copies += 1
    if ids != [p.id for p in pending] or copies != settled:
        raise ExportFileError(f"{path} does not read back as written; the queue is unchanged")


# -- import ------------------------------------------------------------------------

def import_payments(kiosk, path: Path, passphrase: str) -> Imported:
    """Check all of ``path``, then add every payment not known here."""
    reader = export_file.Reader(path, passphrase=passphrase)
    manifest = reader.manifest()
    pending, settled = [], 0
    seen = set()
    for section, record in reader.payments():          # the whole file checked before anything is stored
        payment = _checked(Path(path), section, record, seen)
        if section == "pending":
            pending.append(payment)
        else:
            settled += 1
    report = Imported(Path(path), str(manifest.get("kiosk_id", "?")), str(manifest.get("exported_at", "?")))
    store = kiosk.store
    for payment in pending:
        known = store.get(payment.id)
        if known is not None:
            report.known[known.state] = report.known.get(known.state, 0) + 1
            continue
        store.add(payment)                               # durable, key and request as the other kiosk stored them
        kiosk.telling.payment_changed(payment, None)
        report.added.append(payment)
    if settled:
        report.settled_added = _import_settled(kiosk, reader, report)
    log.info("imported %d pending and %d settled payment(s) from %s", len(report.added), report.settled_added, path)
    return report


def _import_settled(kiosk, reader, report: Imported) -> int:
    store = kiosk.store
    add_settled = optional(store, "PaymentStore", "add_settled")
    records = (record for section, record in reader.payments() if section == "settled")
    added = 0
    while batch := list(itertools.islice(records, SETTLED_BATCH)):
        fresh = []
        for payment in map(Payment.from_record, batch):
            known = store.get(payment.id)
            if known is None:
                fresh.append(payment)
            else:
                report.known[known.state] = report.known.get(known.state, 0) + 1
        if add_settled is not None:
            added += add_settled(fresh)
        else:
            for payment in fresh:
                store.add(payment)
            added += len(fresh)
    return added


def _checked(path: Path, section: str, record, seen: set) -> Payment:
    """A payment record from the file, or a one-line error naming what is wrong with it."""
    try:
        payment = Payment.from_record(record)
    except (TypeError, KeyError, AttributeError, ValueError):
        raise ExportFileError(f"{path}: a payment record cannot be read (written by a broken kiosk?)") from None
    what = f"{path}: payment {str(payment.id)[:40]}"
    allowed = LIVE_STATES if section == "pending" else (SUCCEEDED, FAILED, VOIDED)
    if not isinstance(payment.id, str) or not payment.id or len(payment.id) > 64 or payment.id in seen:
        raise ExportFileError(f"{what} has an empty, overlong or repeated id")
    if payment.state not in allowed:
        raise ExportFileError(f"{what} is {payment.state!r} among the {section} payments")
    if not isinstance(payment.amount, int) or isinstance(payment.amount, bool) or payment.amount <= 0:
        raise ExportFileError(f"{what} has no valid amount")
    try:
        currency_code(payment.currency)
    except MoneyError as exc:
        raise ExportFileError(f"{what}: {exc}") from None
    if section == "pending" and (not payment.idempotency_key or not isinstance(payment.request, dict)):
        raise ExportFileError(f"{what} has no stored request and idempotency key")
    seen.add(payment.id)
    return payment
