"""Built-in storage plugin: the payment queue in TinyDB, encrypted and crash-safe.

Three files in the data directory, all AES-GCM encrypted append-only logs
(see :mod:`.log_storage`):

- ``live.kdb`` -- payments still to forward, and the kiosk's bookkeeping.  It
  stays small however long the kiosk has been selling, so a new sale costs
  one small fsync'd append.
- ``history.kdb`` -- settled payments.  A payment is written here first and
  only then removed from ``live.kdb``; a crash in between leaves it in both,
  which opening the store mends.
- ``feed.kdb`` -- the notice feed, capped, so it never weighs on the others.

The key is ``kiosk.key`` (mode 0600), created by ``kiosk init`` and never
overwritten.  One process at a time holds the store (``kiosk.lock``).
Never logs payment contents.
"""
from __future__ import annotations

import fcntl
import logging
import os
import threading
from pathlib import Path

from tinydb import TinyDB
from tinydb.table import Document

from kiosk import Payment, Setting, StoreAlarm, StoreBusy, hookimpl

from . import log_storage
from .log_storage import EncryptedLogStorage

log = logging.getLogger("kiosk.store")

KEY_FILE, LIVE_FILE, HISTORY_FILE, FEED_FILE, LOCK_FILE = (
    "kiosk.key", "live.kdb", "history.kdb", "feed.kdb", "kiosk.lock")
NOTICES_KEPT = 1000

SETTINGS = {
    "storage.tinydb": {
        "compact_every": Setting(int, 2000, "Rewrite a log as one snapshot after this many appends"),
    },
}


def _open_db(path: Path, key: bytes, label: str, create: bool, compact_every: int) -> TinyDB:
    try:
        return TinyDB(path, storage=EncryptedLogStorage, key=key, label=label,
                      create=create, compact_every=compact_every)
    except log_storage.StoreAlarm as exc:
        raise StoreAlarm(str(exc)) from None


class TinyDBStore:
    """The :class:`kiosk.interfaces.PaymentStore` on encrypted TinyDB files.

    Each file has its own lock, so background work on history (settling,
    compaction) never holds up a sale, which only touches ``live.kdb``."""

    def __init__(self, data_dir: Path, create: bool = False, compact_every: int = 2000):
        self.dir = Path(data_dir)
        self.live_lock, self.history_lock, self.feed_lock = threading.RLock(), threading.RLock(), threading.RLock()
        self._lock_file = None
        existing = [n for n in (KEY_FILE, LIVE_FILE, HISTORY_FILE) if (self.dir / n).exists()]
        fresh = create and not existing
        if fresh:
            self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        elif not self.dir.is_dir() or not existing:
            raise StoreAlarm(f"no kiosk data in {self.dir}: run `kiosk init` first")
        self._hold_process_lock()
        try:
            if fresh:
                log_storage.create_key(self.dir / KEY_FILE)
            key = log_storage.load_key(self.dir / KEY_FILE)
        except log_storage.StoreAlarm as exc:
            raise StoreAlarm(str(exc)) from None
        # once a store exists, a missing queue file is an alarm, even for `kiosk init`
        self.live_db = _open_db(self.dir / LIVE_FILE, key, "live", fresh, compact_every)
        self.history_db = _open_db(self.dir / HISTORY_FILE, key, "history", fresh, compact_every)
        self.feed_db = _open_db(self.dir / FEED_FILE, key, "feed", create or fresh, compact_every)
        self.recovered = [db.storage for db in self.dbs
                          if getattr(db.storage, "recovered_torn_tail", False)]
        self.live_payments = self.live_db.table("payments")
        self.meta = self.live_db.table("meta")
        self.history = self.history_db.table("payments")
        self.feed = self.feed_db.table("notices")
        # payment id -> TinyDB doc id, so updates never scan
        self._live_ids = {doc["id"]: doc.doc_id for doc in self.live_payments.all()}
        self._history_ids = {doc["id"]: doc.doc_id for doc in self.history.all()}
        self._meta_ids = {doc["name"]: doc.doc_id for doc in self.meta.all()}
        self._mend_half_settled()

    @property
    def dbs(self) -> tuple[TinyDB, ...]:
        return (self.live_db, self.history_db, self.feed_db)

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

    def _mend_half_settled(self) -> None:
        both = [pid for pid in self._live_ids if pid in self._history_ids]
        for payment_id in both:
            log.warning("payment %s was settled but still queued (crash while moving it); mending", payment_id)
            self.live_payments.remove(doc_ids=[self._live_ids.pop(payment_id)])

    # -- payments -------------------------------------------------------------

    def add(self, payment: Payment) -> None:
        if payment.id in self._live_ids or payment.id in self._history_ids:
            raise ValueError(f"payment {payment.id} is already stored")
        if payment.settled:
            with self.history_lock:
                self._history_ids[payment.id] = self.history.insert(payment.to_record())
        else:
            with self.live_lock:
                self._live_ids[payment.id] = self.live_payments.insert(payment.to_record())

    def save(self, payment: Payment) -> None:
        record = payment.to_record()
        if payment.settled:
            # history first: a crash between the two writes leaves a copy in both, never in neither
            with self.history_lock:
                if payment.id in self._history_ids:
                    self.history.upsert(Document(record, doc_id=self._history_ids[payment.id]))
                else:
                    self._history_ids[payment.id] = self.history.insert(record)
            with self.live_lock:
                doc_id = self._live_ids.pop(payment.id, None)
                if doc_id is not None:
                    self.live_payments.remove(doc_ids=[doc_id])
        else:
            with self.live_lock:
                doc_id = self._live_ids.get(payment.id)
                if doc_id is None:
                    raise KeyError(f"payment {payment.id} is not in the live queue")
                self.live_payments.upsert(Document(record, doc_id=doc_id))

    def get(self, payment_id: str) -> Payment | None:
        with self.live_lock:
            if payment_id in self._live_ids:
                return Payment.from_record(self.live_payments.get(doc_id=self._live_ids[payment_id]))
        with self.history_lock:
            if payment_id in self._history_ids:
                return Payment.from_record(self.history.get(doc_id=self._history_ids[payment_id]))
        return None

    def live(self) -> list[Payment]:
        with self.live_lock:
            payments = [Payment.from_record(doc) for doc in self.live_payments.all()]
        return sorted(payments, key=lambda p: p.created_at)

    def settled(self, limit: int | None = None) -> list[Payment]:
        with self.history_lock:
            docs = self.history.all()
        docs = docs[::-1] if limit is None else docs[:-limit - 1:-1]
        return [Payment.from_record(doc) for doc in docs]

    # -- bookkeeping ----------------------------------------------------------

    def get_meta(self, name: str, default=None):
        with self.live_lock:
            doc_id = self._meta_ids.get(name)
            return default if doc_id is None else self.meta.get(doc_id=doc_id)["value"]

    def set_meta(self, name: str, value) -> None:
        with self.live_lock:
            doc_id = self._meta_ids.get(name)
            if doc_id is None:
                self._meta_ids[name] = self.meta.insert({"name": name, "value": value})
            else:
                self.meta.upsert(Document({"name": name, "value": value}, doc_id=doc_id))

    def add_notice(self, notice: dict) -> None:
        with self.feed_lock:
            self.feed.insert(notice)

    def notices(self, limit: int = 100) -> list[dict]:
        with self.feed_lock:
            docs = self.feed.all()
        return [dict(doc) for doc in docs[-limit:]]

    def maintain(self) -> None:
        with self.feed_lock:
            surplus = len(self.feed) - NOTICES_KEPT
            if surplus > 0:
                oldest = sorted(doc.doc_id for doc in self.feed.all())[:surplus]
                self.feed.remove(doc_ids=oldest)
        for db, lock in zip(self.dbs, (self.live_lock, self.history_lock, self.feed_lock)):
            with lock:
                if db.storage.needs_compaction():
                    db.storage.compact()

    def close(self) -> None:
        with self.live_lock, self.history_lock, self.feed_lock:
            for db in self.dbs:
                db.close()
            if self._lock_file is not None:
                self._lock_file.close()
                self._lock_file = None


class TinyDBStoragePlugin:
    @hookimpl
    def kiosk_settings(self):
        return SETTINGS

    @hookimpl
    def kiosk_storage_files(self, settings):
        return [KEY_FILE, LIVE_FILE, HISTORY_FILE, FEED_FILE]

    @hookimpl
    def kiosk_open_storage(self, settings, data_dir, create):
        return TinyDBStore(data_dir, create=create,
                           compact_every=settings["storage.tinydb"]["compact_every"])


plugin = TinyDBStoragePlugin()
