"""Settled payments and the notice feed, in SQLite (``history.sqlite``).

Why SQLite and not more TinyDB: SQLite reads pages, not rows, so memory stays
flat however many payments a stall settles, and a settled payment costs one
small transaction (see ``docs/storage.md`` for the figures).

What is on disk::

    payments(seq INTEGER PRIMARY KEY,   -- the order payments were stored in
             id TEXT UNIQUE, created_at TEXT, settled_at TEXT, state TEXT,
             follow_up INTEGER,         -- 1: failed after the customer left, not followed up
             record BLOB)               -- nonce + AES-256-GCM(zlib(JSON of the payment))
    notices(seq INTEGER PRIMARY KEY, record BLOB)
    about(name TEXT PRIMARY KEY, value TEXT)   -- format, file id

Only the columns an index needs are readable (times, state, id, the
follow-up flag); amounts, cards, customers and Stripe ids are sealed.  Each
record's associated data is the file id plus every readable column of its
row, so a record moved to another row, a row whose columns were edited, or a
record from another file fails authentication when it is read.

Written in WAL mode with ``synchronous=FULL``: a committed transaction is on
the card before the call returns.  WAL checkpoints copy only pages changed
since the last one, so maintenance costs what was written, never what is
kept.  Never logs payment contents.
"""
from __future__ import annotations

import functools
import json
import os
import sqlite3
import threading
import zlib
from typing import Iterable, Iterator

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from kiosk import Payment, StoreAlarm

FORMAT = "kiosk-history-1"
SCHEMA_VERSION = 1       # PRAGMA user_version once SCHEMA, the count, the file id and the format are in
NONCE_LEN = 12
PAGE_ROWS = 200          # rows read per step when streaming: memory stays flat
NOTICES_KEPT = 1000
PRUNE_STEP = 1000        # most payments one maintenance pass deletes

SCHEMA = """
CREATE TABLE IF NOT EXISTS about(name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS payments(
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    settled_at TEXT NOT NULL,
    state TEXT NOT NULL,
    follow_up INTEGER NOT NULL,
    record BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS payments_created ON payments(created_at);
CREATE INDEX IF NOT EXISTS payments_settled ON payments(settled_at);
CREATE INDEX IF NOT EXISTS payments_follow_up ON payments(seq) WHERE follow_up = 1;
CREATE TABLE IF NOT EXISTS notices(seq INTEGER PRIMARY KEY, record BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS counts(name TEXT PRIMARY KEY, n INTEGER NOT NULL);
CREATE TRIGGER IF NOT EXISTS payments_in AFTER INSERT ON payments
    BEGIN UPDATE counts SET n = n + 1 WHERE name = 'payments'; END;
CREATE TRIGGER IF NOT EXISTS payments_out AFTER DELETE ON payments
    BEGIN UPDATE counts SET n = n - 1 WHERE name = 'payments'; END;
"""

ROW = "id, created_at, settled_at, state, follow_up, record"      # a row as _row() makes it, _open() reads it
INSERT_NEW = f"INSERT OR IGNORE INTO payments({ROW}) VALUES (?,?,?,?,?,?)"
UPSERT = (f"INSERT INTO payments({ROW}) VALUES (?,?,?,?,?,?) "
          "ON CONFLICT(id) DO UPDATE SET created_at=excluded.created_at, settled_at=excluded.settled_at, "
          "state=excluded.state, follow_up=excluded.follow_up, record=excluded.record")

_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode


def _statements(script: str) -> list[str]:
    """The schema's statements one by one (a trigger's body holds a ';' of its own)."""
    statements, current = [], ""
    for line in script.strip().splitlines():
        current += line + "\n"
        if sqlite3.complete_statement(current):
            statements.append(current.strip())
            current = ""
    return statements


def _alarm_on_damage(method):
    """SQLite finding a damaged page mid-way is the same alarm as at open:
    one line naming the file, never a traceback or an empty answer."""
    @functools.wraps(method)
    def checked(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except sqlite3.OperationalError as exc:     # locked by another program, disk full, I/O error
            raise StoreAlarm(f"{self.path}: history cannot be used ({exc})") from None
        except sqlite3.DatabaseError as exc:        # malformed pages, not a database
            raise _damaged(f"{self.path}: history database damaged ({exc}); run `kiosk recover`") from None
    return checked


def _damaged(message: str) -> StoreAlarm:
    alarm = StoreAlarm(message)
    alarm.damaged = True         # the bytes are there but do not all read: history_salvage can rebuild
    return alarm


def history_key(kiosk_key: bytes) -> bytes:
    """The history's own key, derived from the kiosk's: a record sealed for
    the queue file can never be read as a history record, nor the reverse."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                info=b"kiosk history.sqlite v1").derive(kiosk_key)


class History:
    """Settled payments and notices in one SQLite file.  Thread-safe: one
    connection, one lock, held only for a statement or a page of rows."""

    def __init__(self, path, kiosk_key: bytes, create: bool = False):
        self.path = os.fspath(path)
        exists = os.path.exists(self.path)
        if not exists and not create:
            raise StoreAlarm(f"{self.path}: history file missing (refusing to start without it)")
        self.lock = threading.RLock()
        self._aead = AESGCM(history_key(kiosk_key))
        self.db = None
        try:
            self._connect(exists)
        except BaseException:
            if self.db is not None:
                self.db.close()          # a history that did not open holds no file
            raise
        self._aad_prefix = b"KIOSKHIST1" + self.file_id.encode()

    def _connect(self, exists: bool) -> None:
        try:
            if not exists:
                os.close(os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
            self.db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.execute("PRAGMA journal_size_limit=4194304")   # the WAL shrinks back after a burst
            self.db.execute("PRAGMA cache_size=-2048")             # 2 MiB of pages, whatever the size
            if self.db.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
                self._make_schema()     # once per file: an open that only reads writes nothing
            self.file_id, form = self._about("file_id"), self._about("format")
        except sqlite3.OperationalError as exc:     # locked by another program, disk full, I/O error
            raise StoreAlarm(f"{self.path}: history cannot be used ({exc})") from None
        except sqlite3.DatabaseError as exc:
            raise _damaged(f"{self.path}: not a readable history database ({exc})") from None
        if form != FORMAT:
            raise StoreAlarm(f"{self.path}: history format {form!r} is newer than this kiosk knows")
        for name in (self.path, self.path + "-wal", self.path + "-shm"):
            if os.path.exists(name):
                os.chmod(name, 0o600)

    # -- setup ----------------------------------------------------------------

    def _make_schema(self) -> None:
        with self.transaction():
            for statement in _statements(SCHEMA):
                self.db.execute(statement)
            if self.db.execute("SELECT 1 FROM counts WHERE name = 'payments'").fetchone() is None:
                # kept by the triggers from here on: counting a million rows is not for every open
                self.db.execute("INSERT INTO counts VALUES ('payments', (SELECT count(*) FROM payments))")
            if self._about("file_id") is None:
                self._new_file_id()
            if self._about("format") is None:
                self._set_about("format", FORMAT)
            self.db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def transaction(self):
        return _Transaction(self)

    def _about(self, name: str) -> str | None:
        row = self.db.execute("SELECT value FROM about WHERE name = ?", (name,)).fetchone()
        return None if row is None else row[0]

    def _set_about(self, name: str, value: str) -> str:
        self.db.execute("INSERT OR REPLACE INTO about(name, value) VALUES (?, ?)", (name, value))
        return value

    def _new_file_id(self) -> str:
        return self._set_about("file_id", os.urandom(16).hex())

    # -- sealing --------------------------------------------------------------

    def _aad(self, payment_id: str, created_at: str, settled_at: str, state: str, follow_up: int) -> bytes:
        return "\x1f".join((payment_id, created_at, settled_at, state, str(follow_up))).encode() + self._aad_prefix

    def _row(self, payment: Payment) -> tuple:
        follow_up = int(payment.needs_follow_up)
        settled_at = payment.settled_at or payment.created_at
        nonce = os.urandom(NONCE_LEN)
        sealed = nonce + self._aead.encrypt(
            nonce, zlib.compress(_encode(payment.to_record()).encode(), 6),
            self._aad(payment.id, payment.created_at, settled_at, payment.state, follow_up))
        return (payment.id, payment.created_at, settled_at, payment.state, follow_up, sealed)

    def _open(self, row) -> Payment:
        payment_id, created_at, settled_at, state, follow_up, sealed = row
        try:
            plain = self._aead.decrypt(bytes(sealed[:NONCE_LEN]), bytes(sealed[NONCE_LEN:]),
                                       self._aad(payment_id, created_at, settled_at, state, follow_up))
        except InvalidTag:
            raise StoreAlarm(f"{self.path}: settled payment {payment_id} failed authentication "
                             "(tampered, moved, or sealed with another key)") from None
        return Payment.from_record(json.loads(zlib.decompress(plain)))

    # -- payments -------------------------------------------------------------

    @_alarm_on_damage
    def put(self, payment: Payment) -> None:
        """Store or update one settled payment; durable when this returns."""
        row = self._row(payment)
        with self.lock, self.transaction():
            self.db.execute(UPSERT, row)

    @_alarm_on_damage
    def put_many(self, payments: Iterable[Payment], replace: bool = False) -> int:
        """Store payments in one transaction (a migration, a seeded benchmark);
        returns how many were new.  A payment already here is left as it is,
        or with ``replace`` brought to the version given."""
        rows = [self._row(p) for p in payments]
        with self.lock, self.transaction():
            before = self._counted()          # (total_changes would count the triggers' updates too)
            self.db.executemany(UPSERT if replace else INSERT_NEW, rows)
            return self._counted() - before

    def _counted(self) -> int:
        return self.db.execute("SELECT n FROM counts WHERE name = 'payments'").fetchone()[0]

    @_alarm_on_damage
    def has(self, payment_id: str) -> bool:
        with self.lock:
            return self.db.execute("SELECT 1 FROM payments WHERE id = ?", (payment_id,)).fetchone() is not None

    @_alarm_on_damage
    def get(self, payment_id: str) -> Payment | None:
        with self.lock:
            row = self.db.execute(f"SELECT {ROW} FROM payments WHERE id = ?", (payment_id,)).fetchone()
        return None if row is None else self._open(row)

    @_alarm_on_damage
    def count(self) -> int:
        """Settled payments held: kept by triggers, so it costs one row, not a million."""
        with self.lock:
            return self._counted()

    def newest(self, limit: int | None = None, since: str | None = None,
               until: str | None = None) -> Iterator[Payment]:
        """Settled payments, the newest sale first, a page of rows at a time
        along the ``created_at`` index: memory and each step's time do not
        grow with history.  ``since``: taken at or after, ``until``: taken
        before (ISO 8601 UTC) -- a day a year back reads that day's rows only."""
        left = limit
        after: tuple | None = None          # (created_at, seq) of the last row handed out
        while left is None or left > 0:
            step = PAGE_ROWS if left is None else min(PAGE_ROWS, left)
            where, args = ["1"], []
            if since:
                where.append("created_at >= ?")
                args.append(since)
            if until:
                where.append("created_at < ?")
                args.append(until)
            if after is not None:
                where.append("created_at <= ? AND NOT (created_at = ? AND seq >= ?)")
                args += [after[0], after[0], after[1]]
            rows = self._page(" AND ".join(where), [*args, step])
            for row in rows:
                yield self._open(row[1:])
            if len(rows) < step:
                return
            after = (rows[-1][2], rows[-1][0])
            if left is not None:
                left -= len(rows)

    @_alarm_on_damage
    def _page(self, where: str, args: list) -> list:
        with self.lock:
            return self.db.execute(
                f"SELECT seq, {ROW} FROM payments "
                f"WHERE {where} ORDER BY created_at DESC, seq DESC LIMIT ?", args).fetchall()

    @_alarm_on_damage
    def needing_follow_up(self) -> list[Payment]:
        """Failed after the customer left and not followed up, newest first (an index read)."""
        with self.lock:
            rows = self.db.execute(f"SELECT {ROW} FROM payments "
                                   "WHERE follow_up = 1 ORDER BY seq DESC").fetchall()
        return [self._open(row) for row in rows]

    @_alarm_on_damage
    def prune(self, before: str, most: int = PRUNE_STEP, keep: str | None = None) -> int:
        """Delete up to ``most`` settled payments settled before ``before``,
        never one still to follow up, nor ``keep``.  Bounded: call again for more."""
        with self.lock, self.transaction():
            cursor = self.db.execute(
                "DELETE FROM payments WHERE seq IN (SELECT seq FROM payments WHERE settled_at < ? "
                "AND follow_up = 0 AND id IS NOT ? ORDER BY settled_at LIMIT ?)", (before, keep, most))
            return cursor.rowcount

    # -- notices --------------------------------------------------------------

    @_alarm_on_damage
    def add_notice(self, notice: dict, seq: int | None = None) -> None:
        with self.lock, self.transaction():
            if seq is None:
                seq = self.db.execute("SELECT coalesce(max(seq), 0) + 1 FROM notices").fetchone()[0]
            nonce = os.urandom(NONCE_LEN)
            sealed = nonce + self._aead.encrypt(nonce, _encode(notice).encode(), b"notice %d" % seq + self._aad_prefix)
            self.db.execute("INSERT OR IGNORE INTO notices(seq, record) VALUES (?, ?)", (seq, sealed))

    @_alarm_on_damage
    def notices(self, limit: int = 100) -> list[dict]:
        """The newest ``limit`` notices, oldest first."""
        with self.lock:
            rows = self.db.execute("SELECT seq, record FROM notices ORDER BY seq DESC LIMIT ?", (limit,)).fetchall()
        found = []
        for seq, sealed in reversed(rows):
            try:
                plain = self._aead.decrypt(bytes(sealed[:NONCE_LEN]), bytes(sealed[NONCE_LEN:]),
                                           b"notice %d" % seq + self._aad_prefix)
            except InvalidTag:
                raise StoreAlarm(f"{self.path}: notice {seq} failed authentication (tampered or moved)") from None
            found.append(json.loads(plain))
        return found

    @_alarm_on_damage
    def trim_notices(self, keep: int = NOTICES_KEPT) -> int:
        with self.lock, self.transaction():
            return self.db.execute("DELETE FROM notices WHERE seq <= (SELECT max(seq) FROM notices) - ?",
                                   (keep,)).rowcount

    # -- upkeep ---------------------------------------------------------------

    def intact(self) -> bool:
        """SQLite's own check of every page (``kiosk recover``: it reads the whole file)."""
        try:
            with self.lock:
                return self.db.execute("PRAGMA quick_check").fetchone()[0] == "ok"
        except sqlite3.DatabaseError:
            return False

    @_alarm_on_damage
    def checkpoint(self) -> None:
        """Copy the WAL's pages into the database: costs what was written since the last one."""
        with self.lock:
            self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def close(self) -> None:
        with self.lock:
            self.db.close()


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (durable: synchronous=FULL), or ROLLBACK on an error."""

    def __init__(self, history: History):
        self.db = history.db

    def __enter__(self):
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, kind, exc, tb):
        if kind is None:
            try:
                self.db.execute("COMMIT")
                return False
            except BaseException:
                if self.db.in_transaction:      # a COMMIT that failed leaves the transaction open
                    self.db.execute("ROLLBACK")
                raise
        if self.db.in_transaction:
            self.db.execute("ROLLBACK")
        return False
