"""Built-in storage plugin: the payment queue in TinyDB, settled history in
SQLite, both encrypted and crash-safe.

In the data directory:

- ``live.kdb`` -- payments still to forward, and the kiosk's bookkeeping: an
  AES-GCM encrypted append-only TinyDB log (see :mod:`.log_storage`).  It is
  bounded by ``[limits] max_pending``, so a new sale costs one small fsync'd
  append however long the kiosk has been selling.
- ``history.sqlite`` -- settled payments and the notice feed (see
  :mod:`.history`): read a page at a time, so memory and time do not grow
  with history.  A payment is written here first and only then removed from
  ``live.kdb``; a crash in between leaves it in both, which opening the
  store mends.
- ``kiosk.key`` -- the key (mode 0600), created by ``kiosk init`` and never
  overwritten.

One process at a time holds the store (``kiosk.lock``).  A directory written
by an earlier release (``history.kdb``, ``feed.kdb``) is migrated on open
(:mod:`.migrate`).  Never logs payment contents.
"""
from __future__ import annotations

import fcntl
import logging
import os
import threading
from pathlib import Path
from typing import Iterator

from tinydb import TinyDB
from tinydb.table import Document

from kiosk import Payment, Setting, StoreAlarm, StoreBusy, crash_point, hookimpl

from . import log_storage
from .history import History
from .log_storage import EncryptedLogStorage
from .migrate import OLD_FEED, OLD_HISTORY, migrate

log = logging.getLogger("kiosk.store")

KEY_FILE, LIVE_FILE, HISTORY_FILE, LOCK_FILE = "kiosk.key", "live.kdb", "history.sqlite", "kiosk.lock"
LAST_SETTLED = "last_settled"       # meta: the payment the queue last handed to history

SETTINGS = {
    "storage.tinydb": {
        "compact_every": Setting(int, 2000, "Rewrite the queue file as one snapshot after this many appends"),
        "migration_batch": Setting(int, 2000, "Settled payments copied per transaction when an earlier "
                                   "release's history.kdb is moved into history.sqlite"),
    },
}


def _open_db(path: Path, key: bytes, label: str, create: bool, compact_every: int) -> TinyDB:
    try:
        return TinyDB(path, storage=EncryptedLogStorage, key=key, label=label,
                      create=create, compact_every=compact_every)
    except log_storage.StoreAlarm as exc:
        raise StoreAlarm(str(exc)) from None


class TinyDBStore:
    """The :class:`kiosk.interfaces.PaymentStore`: the queue in TinyDB, history in SQLite.

    The queue and history each have their own lock, so background work on
    history never holds up a sale, which only touches ``live.kdb``."""

    def __init__(self, data_dir: Path, create: bool = False, compact_every: int = 2000,
                 migration_batch: int = 2000):
        self.dir = Path(data_dir)
        self.live_lock = threading.RLock()
        self._lock_file = None
        existing = [n for n in (KEY_FILE, LIVE_FILE, HISTORY_FILE, OLD_HISTORY) if (self.dir / n).exists()]
        fresh = create and not existing
        if fresh:
            self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        elif not self.dir.is_dir() or not existing:
            raise StoreAlarm(f"no kiosk data in {self.dir}: run `kiosk init` first")
        self._hold_process_lock()
        self.live_db = self.history = None
        try:
            self._open(fresh, compact_every, migration_batch)
        except BaseException:
            self.close()          # a store that did not open holds no file and no lock
            raise

    def _open(self, fresh: bool, compact_every: int, migration_batch: int) -> None:
        try:
            if fresh:
                log_storage.create_key(self.dir / KEY_FILE)
            key = log_storage.load_key(self.dir / KEY_FILE)
        except log_storage.StoreAlarm as exc:
            raise StoreAlarm(str(exc)) from None
        for orphan in self.dir.glob(f".{LIVE_FILE}.tmp-*"):
            # a compaction killed before its rename: never the queue itself (we hold the lock)
            log.warning("removing %s, left by a compaction that was cut short", orphan.name)
            orphan.unlink(missing_ok=True)
        # once a store exists, a missing queue file is an alarm, even for `kiosk init`
        self.live_db = _open_db(self.dir / LIVE_FILE, key, "live", fresh, compact_every)
        self.recovered = [self.live_db.storage] if self.live_db.storage.recovered_torn_tail else []
        self.live_payments = self.live_db.table("payments")
        self.meta = self.live_db.table("meta")
        # payment id -> TinyDB doc id, so updates never scan
        self._live_ids = {doc["id"]: doc.doc_id for doc in self.live_payments.all()}
        self._meta_ids = {doc["name"]: doc.doc_id for doc in self.meta.all()}
        self._next_doc_id = max([*self._live_ids.values(), *self._meta_ids.values()], default=0) + 1
        # history.sqlite is new with this release: an older directory gets one (and is migrated into
        # it), and so does a `kiosk init` cut short after making live.kdb (its log holds nothing yet)
        upgrading = (self.dir / OLD_HISTORY).exists()
        never_used = self.live_db.storage.records == 1 and not any(self.live_db.storage.read().values())
        self.history = History(self.dir / HISTORY_FILE, key, create=fresh or upgrading or never_used)
        self._check_history_belongs()
        self.recovered += migrate(self.dir, key, self.history, max(1, migration_batch))
        self._check_history_has_last()
        self._mend_half_settled()

    def _hold_process_lock(self) -> None:
        path = self.dir / LOCK_FILE
        handle = open(os.open(path, os.O_RDWR | os.O_CREAT, 0o600), "r+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = handle.read().strip() or "?"
            handle.close()
            raise StoreBusy(f"the queue in {self.dir} is in use by another kiosk process (pid {holder})") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._lock_file = handle

    def _check_history_belongs(self) -> None:
        """The queue names its history file: another store's history (same
        key, another ``kiosk init``) put in its place is an alarm."""
        known = self.get_meta("history_file_id")
        if known is None:
            self.set_meta("history_file_id", self.history.file_id)
        elif known != self.history.file_id:
            raise StoreAlarm(f"{self.history.path}: not the history this queue wrote (replaced, restored "
                             f"from elsewhere, or its -wal lost); refusing to mix them")

    def _mend_half_settled(self) -> None:
        for payment_id in [pid for pid in self._live_ids if self.history.has(pid)]:
            log.warning("payment %s was settled but still queued (crash while moving it); mending", payment_id)
            self._remove_live(payment_id)

    def _new_doc_id(self) -> int:
        # ours, not TinyDB's: each write names the one document it changes
        doc_id, self._next_doc_id = self._next_doc_id, self._next_doc_id + 1
        return doc_id

    def _remove_live(self, payment_id: str, settled: bool = False) -> None:
        """Take a payment out of the queue: one append.  A payment that just
        settled is also named as the last one history must hold (see
        _check_history_has_last), in that same append."""
        doc_id = self._live_ids[payment_id]
        witness = {}
        if settled:
            witness_id = self._meta_ids.get(LAST_SETTLED) or self._new_doc_id()
            witness = {"meta": [witness_id]}
        with self.live_db.storage.changing("payments", doc_id, also=witness):
            self.live_payments.remove(doc_ids=[doc_id])
            if settled:
                self.meta.upsert(Document({"name": LAST_SETTLED, "value": payment_id}, doc_id=witness_id))
        del self._live_ids[payment_id]        # only once the file says so
        if settled:
            self._meta_ids[LAST_SETTLED] = witness_id

    def _check_history_has_last(self) -> None:
        """The payment the queue last handed to history must be there.  A
        deleted or cut ``-wal``, or an older copy of the file, would otherwise
        lose the newest settled payments without a word: SQLite opens what is
        left."""
        last = self.get_meta(LAST_SETTLED)
        if last is not None and not self.history.has(last):
            raise StoreAlarm(f"{self.history.path}: settled payment {last} is missing from history "
                             f"(its file or {Path(self.history.path).name}-wal was deleted, cut or "
                             f"replaced with an older copy)")

    # -- payments -------------------------------------------------------------

    def add(self, payment: Payment) -> None:
        # a sale never waits for history (a forward's commit may hold it): ids
        # are 96 random bits, so only the queue is asked whether one is taken
        if payment.id in self._live_ids:
            raise ValueError(f"payment {payment.id} is already stored")
        if payment.settled:
            if self.history.has(payment.id):
                raise ValueError(f"payment {payment.id} is already stored")
            self.history.put(payment)
        else:
            with self.live_lock:
                doc_id = self._new_doc_id()
                with self.live_db.storage.changing("payments", doc_id):
                    self.live_payments.insert(Document(payment.to_record(), doc_id=doc_id))
                self._live_ids[payment.id] = doc_id

    def save(self, payment: Payment) -> None:
        if payment.settled:
            # history first: a crash between the two writes leaves a copy in both, never in neither
            self.history.put(payment)
            crash_point("settle:after_history")
            with self.live_lock:
                if payment.id in self._live_ids:
                    self._remove_live(payment.id, settled=True)
        else:
            with self.live_lock:
                doc_id = self._live_ids.get(payment.id)
                if doc_id is None:
                    raise KeyError(f"payment {payment.id} is not in the live queue")
                with self.live_db.storage.changing("payments", doc_id):
                    self.live_payments.upsert(Document(payment.to_record(), doc_id=doc_id))

    def get(self, payment_id: str) -> Payment | None:
        with self.live_lock:
            if payment_id in self._live_ids:
                return Payment.from_record(self.live_payments.get(doc_id=self._live_ids[payment_id]))
        return self.history.get(payment_id)

    def live(self) -> list[Payment]:
        with self.live_lock:
            payments = [Payment.from_record(doc) for doc in self.live_payments.all()]
        return sorted(payments, key=lambda p: p.created_at)

    def settled(self, limit: int | None = None, since: str | None = None) -> Iterator[Payment]:
        """The newest sale first, read a page at a time; ``since``: taken at or after (ISO 8601)."""
        return self.history.newest(limit, since)

    def settled_count(self) -> int:
        return self.history.count()

    def add_settled(self, payments) -> int:
        """Settled payments stored in one durable transaction, each unless it
        is stored already (moving an old history in; seeding a benchmark)."""
        return self.history.put_many(payments)

    def needing_follow_up(self) -> list[Payment]:
        return self.history.needing_follow_up()

    def prune(self, before: str) -> int:
        """Forget up to 1,000 settled payments settled before ``before``; never
        one still to follow up.  Stripe keeps the ledger."""
        return self.history.prune(before, keep=self.get_meta(LAST_SETTLED))

    # -- bookkeeping ----------------------------------------------------------

    def get_meta(self, name: str, default=None):
        with self.live_lock:
            doc_id = self._meta_ids.get(name)
            return default if doc_id is None else self.meta.get(doc_id=doc_id)["value"]

    def set_meta(self, name: str, value) -> None:
        with self.live_lock:
            doc_id = self._meta_ids.get(name)
            if doc_id is None:
                doc_id = self._new_doc_id()
                with self.live_db.storage.changing("meta", doc_id):
                    self.meta.insert(Document({"name": name, "value": value}, doc_id=doc_id))
                self._meta_ids[name] = doc_id
            else:
                with self.live_db.storage.changing("meta", doc_id):
                    self.meta.upsert(Document({"name": name, "value": value}, doc_id=doc_id))

    def add_notice(self, notice: dict) -> None:
        self.history.add_notice(notice)

    def notices(self, limit: int = 100) -> list[dict]:
        return self.history.notices(limit)

    def maintain(self) -> None:
        """Bounded: trims the feed, checkpoints history's WAL (what was written
        since the last one) and compacts the queue file (bounded by max_pending)."""
        self.history.trim_notices()
        self.history.checkpoint()
        with self.live_lock:
            if self.live_db.storage.needs_compaction():
                self.live_db.storage.compact()

    def close(self) -> None:
        with self.live_lock:
            if self.live_db is not None:
                self.live_db.close()
            if self.history is not None:
                self.history.close()
            if self._lock_file is not None:
                self._lock_file.close()
                self._lock_file = None


class TinyDBStoragePlugin:
    @hookimpl
    def kiosk_settings(self):
        return SETTINGS

    @hookimpl
    def kiosk_storage_files(self, settings):
        # the -wal file holds history committed since the last checkpoint; the
        # old files are there on a card an earlier release wrote
        return [KEY_FILE, LIVE_FILE, HISTORY_FILE, HISTORY_FILE + "-wal", OLD_HISTORY, OLD_FEED]

    @hookimpl
    def kiosk_open_storage(self, settings, data_dir, create):
        own = settings["storage.tinydb"]
        return TinyDBStore(data_dir, create=create, compact_every=own["compact_every"],
                           migration_batch=own.get("migration_batch", 2000))


plugin = TinyDBStoragePlugin()
