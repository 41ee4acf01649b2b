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
import shutil
import sqlite3
from pathlib import Path

from kiosk import rename_durably, settle_rename

from .history import NONCE_LEN, ROW, History

log = logging.getLogger("kiosk.store")

STEP = 200              # rows read at a time while the pages read
BATCH = 10_000          # rows written per transaction: few fsyncs, bounded memory
PROBE = 2000            # rowids tried one by one past a damaged page before giving up on the rest


def _copy(source: Path, target: Path) -> None:
    """A file copied a MiB at a time (history may be gigabytes), 0600, fsync'd."""
    with open(source, "rb") as src, open(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
        dst.flush()
        os.fsync(dst.fileno())


def _digest(*paths: Path) -> str:
    digest = hashlib.sha256()
    for path in paths:
        if path.exists():
            with open(path, "rb") as handle:
                for chunk in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(chunk)
    return digest.hexdigest()[:16]


def _keep_aside(path: Path) -> Path:
    """The damaged file and its -wal, copied once beside it (named by their content)."""
    wal = Path(str(path) + "-wal")
    aside = path.with_name(f"{path.name}.bad-{_digest(path, wal)}")
    if not aside.exists():
        if wal.exists():
            _copy(wal, Path(str(aside) + "-wal"))
        tmp = aside.with_name(f".{aside.name}.tmp-{secrets.token_hex(6)}")
        _copy(path, tmp)
        rename_durably(tmp, aside)      # under its name only once whole
    return aside


def _rows(db, table: str, columns: str, key: str, lost: list):
    """Every row that still reads, a page at a time (memory stays flat);
    unreadable rowid stretches are added to ``lost``."""
    after = -1
    while True:
        try:
            page = db.execute(f"SELECT {key}, {columns} FROM {table} WHERE {key} > ? ORDER BY {key} LIMIT ?",
                              (after, STEP)).fetchall()
        except sqlite3.DatabaseError:
            page = None
        if page:
            yield [row[1:] for row in page]
            after = page[-1][0]
            continue
        if page == []:
            return
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
            return
        yield [found[1:]]
        after = found[0]


def rebuild(path, key: bytes, file_id: str | None) -> tuple[str, str]:
    """Replace a damaged history file by what still reads of it, a page at a
    time.  Returns (the name of the copy kept aside, one line saying what
    could not be read).  ``file_id``: the id the queue knows this history by
    (the damaged file's own may not read).  Needs free space for two more
    copies of the file while it works (the one kept aside and a scratch one)."""
    path = Path(path)
    aside = _keep_aside(path)
    work = path.with_name(f".{path.name}.salvage-{secrets.token_hex(6)}")
    _copy(aside, work)                   # SQLite may write to what it reads: never the copy kept
    if Path(str(aside) + "-wal").exists():
        _copy(Path(str(aside) + "-wal"), Path(str(work) + "-wal"))
    fresh = path.with_name(f".{path.name}.new-{secrets.token_hex(6)}")
    old = sqlite3.connect(str(work), isolation_level=None)
    new = History(fresh, key, create=True)
    kept = bad = 0
    payments_lost, notices_lost = [], []
    try:
        try:
            old_id = old.execute("SELECT value FROM about WHERE name = 'file_id'").fetchone()[0]
        except (sqlite3.DatabaseError, TypeError):
            old_id = None
        file_id = file_id or old_id
        if file_id:
            with new.lock, new.transaction():
                new.db.execute("UPDATE about SET value = ? WHERE name = 'file_id'", (file_id,))
            new.file_id, new._aad_prefix = file_id, b"KIOSKHIST1" + file_id.encode()
        batch = []
        for page in _rows(old, "payments", ROW, "rowid", payments_lost):
            for row in page:
                try:
                    batch.append(new._open(row))
                except Exception:         # fails authentication, or not ours: counted, never copied
                    bad += 1
            if len(batch) >= BATCH:
                kept += new.put_many(batch, replace=True)
                batch = []
        kept += new.put_many(batch, replace=True)
        for page in _rows(old, "notices", "seq, record", "seq", notices_lost):
            readable = []
            for seq, record in page:
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
        old.close()
        new.close()
        for name in (work, Path(str(work) + "-wal"), Path(str(work) + "-shm")):
            name.unlink(missing_ok=True)
    for name in (Path(str(path) + "-wal"), Path(str(path) + "-shm")):
        name.unlink(missing_ok=True)
    os.replace(fresh, path)
    for name in (Path(str(fresh) + "-wal"), Path(str(fresh) + "-shm")):
        name.unlink(missing_ok=True)
    settle_rename(path)
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
