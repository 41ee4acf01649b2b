"""Bringing a data directory written before ``history.sqlite`` up to date.

Earlier releases kept settled payments in ``history.kdb`` and notices in
``feed.kdb``, encrypted TinyDB logs like ``live.kdb``.  On first open they are
copied into ``history.sqlite`` in batches, each batch one durable transaction
that skips what is already there, and only then deleted.  A kill at any point
loses nothing: the old file stays until everything in it is committed, and
the next open runs the copy again.  Until the old file is gone it is the
authority: an earlier release started on a half-moved directory keeps using
it, and what it changed there replaces what was copied before.  Once the move
is done there is no way back: an earlier release refuses to start without its
``history.kdb`` (an alarm, nothing lost).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

from kiosk import Payment, StoreAlarm, crash_point

from .history import History
from .log_storage import EncryptedLogStorage, StoreAlarm as LogAlarm

log = logging.getLogger("kiosk.store")

OLD_HISTORY, OLD_FEED = "history.kdb", "feed.kdb"
BATCH = 2000


def _old_table(path: Path, key: bytes, label: str, table: str, recovered: list) -> list[tuple[int, dict]]:
    try:
        storage = EncryptedLogStorage(path, key=key, label=label, read_only=True)
    except LogAlarm as exc:
        raise StoreAlarm(str(exc)) from None
    try:
        if storage.recovered_torn_tail:
            recovered.append(storage)
        docs = (storage.read() or {}).pop(table, {})
        ordered = sorted(((int(doc_id), doc) for doc_id, doc in docs.items()), key=lambda item: item[0])
        docs.clear()
        return ordered
    finally:
        storage.close()


def _done_with(path: Path) -> None:
    crash_point("migrate:before_unlink")
    os.unlink(path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def migrate(data_dir: Path, key: bytes, history: History, batch: int = BATCH) -> list:
    """Copy ``history.kdb`` and ``feed.kdb`` into ``history``, if they are
    still there; returns the old files set aside after a power cut."""
    recovered: list = []
    old = data_dir / OLD_HISTORY
    if old.exists():
        docs = _old_table(old, key, "history", "payments", recovered)
        log.warning("moving %d settled payments from %s into %s", len(docs), old.name, Path(history.path).name)
        docs.reverse()                  # taken from the end, so memory falls as the copy goes
        while docs:
            chunk = [docs.pop() for _ in range(min(batch, len(docs)))]
            # the old file is the authority while it exists (an older release may have run on it
            # since a migration was cut short): what it says replaces what was copied before
            history.put_many((Payment.from_record(doc) for _, doc in chunk), replace=True)
            crash_point("migrate:after_batch")
        _done_with(old)
    old = data_dir / OLD_FEED
    if old.exists():
        for seq, notice in _old_table(old, key, "feed", "notices", recovered):
            history.add_notice(notice, seq=seq)     # the old ids keep their order; a second copy is skipped
        _done_with(old)
    return recovered
