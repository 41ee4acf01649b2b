"""Rebuilding a damaged ``history.sqlite`` from what still reads.

A bad page costs the rows on it, not the file: the damaged file (and its
``-wal``) is kept aside once, named by its content; every settled payment and
notice that still reads and authenticates is copied into a new file with the
same file id (so the queue still knows it as its own); the rest is counted
and named.  Settled payments are also in Stripe's dashboard; the ones the
vendor must follow up exist only here, which is why this salvages row by row
instead of starting over.  Never logs payment contents.
"""
from __future__ import annotations

import hashlib
import logging
import os
import secrets
import sqlite3
from pathlib import Path

from .history import NONCE_LEN, ROW, History
from .log_storage import _fsync_dir, install_copy

log = logging.getLogger("kiosk.store")

STEP = 200              # rows read at a time while the pages read
PROBE = 2000            # rowids tried one by one past a damaged page before giving up on the rest


def _keep_aside(path: Path) -> Path:
    """The damaged file and its -wal, copied once beside it (named by their content)."""
    content = path.read_bytes()
    wal_path = Path(str(path) + "-wal")
    wal = wal_path.read_bytes() if wal_path.exists() else b""
    aside = path.with_name(f"{path.name}.bad-{hashlib.sha256(content + wal).hexdigest()[:16]}")
    if not aside.exists():
        if wal:
            install_copy(Path(str(aside) + "-wal"), wal, None, 0)
        install_copy(aside, content, None, 0)
    return aside


def _rows(db, table: str, columns: str, key: str):
    """Every row that still reads, a page at a time; ``(rows, unreadable rowid stretches)``."""
    rows, lost, after = [], [], -1
    while True:
        try:
            page = db.execute(f"SELECT {key}, {columns} FROM {table} WHERE {key} > ? ORDER BY {key} LIMIT ?",
                              (after, STEP)).fetchall()
        except sqlite3.DatabaseError:
            page = None
        if page:
            rows += [row[1:] for row in page]
            after = page[-1][0]
            continue
        if page == []:
            return rows, lost
        # a damaged page: feel past it one rowid at a time
        start, found, probe = after + 1, None, after + 1
        while probe <= after + PROBE:
            try:
                row = db.execute(f"SELECT {key}, {columns} FROM {table} WHERE {key} = ?", (probe,)).fetchone()
            except sqlite3.DatabaseError:
                row = None
            if row is not None:
                found = row
                break
            probe += 1
        lost.append((start, probe - 1 if found else None))
        if found is None:
            return rows, lost
        rows.append(found[1:])
        after = found[0]


def rebuild(path, key: bytes, file_id: str | None) -> tuple[str, str]:
    """Replace a damaged history file by what still reads of it.  Returns
    (the name of the copy kept aside, one line saying what could not be read).
    ``file_id``: the id the queue knows this history by (the damaged file's
    own may not read)."""
    path = Path(path)
    aside = _keep_aside(path)
    work = path.with_name(f".{path.name}.salvage-{secrets.token_hex(6)}")
    install_copy(work, aside.read_bytes(), None, 0)      # SQLite may write to what it reads: never the copy kept
    if Path(str(aside) + "-wal").exists():
        install_copy(Path(str(work) + "-wal"), Path(str(aside) + "-wal").read_bytes(), None, 0)
    old = sqlite3.connect(str(work), isolation_level=None)
    try:
        try:
            old_id = old.execute("SELECT value FROM about WHERE name = 'file_id'").fetchone()[0]
        except (sqlite3.DatabaseError, TypeError):
            old_id = None
        file_id = file_id or old_id
        payments, payments_lost = _rows(old, "payments", ROW, "rowid")
        notices, notices_lost = _rows(old, "notices", "seq, record", "seq")
    finally:
        old.close()
        for name in (work, Path(str(work) + "-wal"), Path(str(work) + "-shm")):
            name.unlink(missing_ok=True)
    fresh = path.with_name(f".{path.name}.new-{secrets.token_hex(6)}")
    new = History(fresh, key, create=True)
    kept = bad = 0
    try:
        if file_id:
            with new.lock, new.transaction():
                new.db.execute("UPDATE about SET value = ? WHERE name = 'file_id'", (file_id,))
            new.file_id, new._aad_prefix = file_id, b"KIOSKHIST1" + file_id.encode()
        good = []
        for row in payments:
            try:
                good.append(new._open(row))
            except Exception:         # fails authentication, or not ours: counted, never copied
                bad += 1
        kept = new.put_many(good, replace=True)
        readable = []
        for seq, record in notices:
            try:
                new._aead.decrypt(bytes(record[:NONCE_LEN]), bytes(record[NONCE_LEN:]),
                                  b"notice %d" % seq + new._aad_prefix)
            except Exception:
                continue
            readable.append((seq, record))
        with new.lock, new.transaction():
            new.db.executemany("INSERT OR IGNORE INTO notices(seq, record) VALUES (?, ?)", readable)
        new.checkpoint()
    finally:
        new.close()
    for name in (Path(str(path) + "-wal"), Path(str(path) + "-shm")):
        name.unlink(missing_ok=True)
    os.replace(fresh, path)
    for name in (Path(str(fresh) + "-wal"), Path(str(fresh) + "-shm")):
        name.unlink(missing_ok=True)
    _fsync_dir(str(path.parent))
    stretches = [f"rows {a}-{b}" if b else f"rows from {a} on" for a, b in payments_lost]
    parts = [f"{kept} settled payments read"]
    if stretches or bad:
        parts.append("could not read: " + ", ".join(stretches + ([f"{bad} rows that failed authentication"]
                                                                  if bad else [])))
    else:
        parts.append("could not read: nothing")
    if notices_lost:
        parts.append(f"some notices lost ({len(notices_lost)} stretches)")
    log.error("history %s rebuilt from what still reads: %s", path, "; ".join(parts))
    return aside.name, "; ".join(parts)

