"""Encrypted, append-only, crash-safe storage for TinyDB.

TinyDB's stock ``JSONStorage`` rewrites the whole file on every write.  This
storage keeps the database state in memory and, on every ``write()``, appends
ONE encrypted record holding only what changed (a delta), then ``fdatasync``\\ s
before returning.  A write costs what the change costs, not what the file costs.

File format (everything except magic, file id and lengths is encrypted)::

    header  = b"KIOSKLOG1" + file_id            # file_id: 16 random bytes per file generation
    record  = len(body) as 4-byte big endian + body
    body    = nonce (12 random bytes) + AES-256-GCM ciphertext (incl. 16-byte tag)

Record 0 is always a full snapshot ``{"g":generation,"t":"s","s":{table:{doc_id:doc}}}``
(``g``: 0 for a new file, one more at each compaction or salvage; absent,
0, in files of earlier releases);
later records are deltas ``{"t":"d","x":[dropped tables],"r":[tables reset to
empty],"d":{table:[deleted ids]},"u":{table:{doc_id:doc}}}`` applied in that
order (keys omitted when empty).  Plaintext is compact JSON.

The associated data of every record binds it to its place::

    b"KIOSKLOG1/aes-256-gcm" + len(label) + label + file_id + seq (8 bytes)

so a file of another store/label, a record of another file or generation, and
records that were reordered, duplicated or removed from the middle all fail
authentication.

On open every problem raises :class:`StoreAlarm` (and keeps a copy of the file
aside as ``<name>.bad-<UTC timestamp>``) -- except one crash artefact: a torn
final record (length prefix or body cut short at the end of the file), which is
what a power cut during an append leaves.  That record was never acknowledged,
so it is copied aside (``<name>.torn-<UTC timestamp>``), cut off, and the store
opens normally with ``recovered_torn_tail = True``.

How much of the file was acknowledged is kept outside its bytes, in an
extended attribute of the file (``user.kiosk.acknowledged``: file id, end
offset and record count), set before the fsync that acknowledges each record.
It survives ``truncate`` and an in-place overwrite, so a cut -- at a record
boundary too -- is told apart from a torn write: a file shorter than what was
acknowledged is an alarm naming what is missing; only bytes past the
acknowledged end are an unacknowledged write.  On a file system without user
extended attributes (FAT) there is no witness, and :attr:`cut_detection` is
False: a torn tail is then recovered without a claim that nothing was lost.

Known limits (by design):

* A copy that carries an older witness along with its bytes (``cp -a`` of an
  older backup) is a consistent, older file: a restore, not a cut.  The
  forwarding pass's reconcile with Stripe keeps a restore from charging twice.
* What changed: the caller says which documents a write changes
  (:meth:`EncryptedLogStorage.changing`), and only those are encoded and
  appended -- a write costs what it changes, whatever the file holds.  The
  caller promises fresh documents of JSON types (no tuples, no containers it
  keeps changing), which memory then keeps as they are.  A write nobody
  declared (TinyDB used directly, as in a tool or a test) is compared
  document by document with what is on disk, which costs what the file
  holds, and memory is rebuilt from the JSON written, so it always holds
  exactly what a reopen would give.
* As with TinyDB's CachingMiddleware, ``Document`` objects returned by TinyDB
  are shallow copies: mutating a NESTED value of one changes memory, not the
  file, until that document is written again.
* Document ids are the ``str`` ids TinyDB hands to storages.
"""

from __future__ import annotations

import datetime
import errno
import hashlib
import json
import logging
import os
import secrets
import stat
import struct
import threading
from typing import Optional

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from tinydb.storages import Storage

from kiosk import crash_point, fsync_folder, settle_rename, write_all


__all__ = ["StoreAlarm", "create_key", "load_key", "EncryptedLogStorage"]

log = logging.getLogger("kiosk.store")

MAGIC = b"KIOSKLOG1"
FILE_ID_LEN = 16
HEADER_LEN = len(MAGIC) + FILE_ID_LEN
KEY_LEN = 32
NONCE_LEN = 12
TAG_LEN = 16
MIN_BODY = NONCE_LEN + TAG_LEN
MAX_BODY = 256 * 1024 * 1024  # a record larger than this is refused / treated as corrupt
AAD_TAG = b"KIOSKLOG1/aes-256-gcm"
_LEN = struct.Struct(">I")
_SEQ = struct.Struct(">Q")
_MISSING = object()
_DIAGNOSE_WINDOW = 64  # how far beyond its own position a misplaced record is looked for

WITNESS = "user.kiosk.acknowledged"     # extended attribute: what of this file was acknowledged
_WITNESS = struct.Struct(">16sQQ")       # file id, end offset, records
_NO_XATTRS = {errno.ENOTSUP, errno.EOPNOTSUPP, getattr(errno, "ENOATTR", errno.ENODATA)} - {errno.ENODATA}

_fdatasync = getattr(os, "fdatasync", os.fsync)
_fsync = os.fsync
_encode = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"), sort_keys=True).encode
_encode_as_is = json.JSONEncoder(ensure_ascii=True, separators=(",", ":")).encode


class StoreAlarm(Exception):
    """The store on disk is missing, empty, truncated, tampered with or encrypted with another key.

    str(exc) is ONE line naming the file and the problem. ``.path``,
    ``.problem`` (the problem alone), ``.kept_aside`` (path of the copy kept
    for inspection or None).
    """

    def __init__(self, path, problem: str = "", kept_aside: Optional[str] = None, damaged: bool = False):
        super().__init__(path, problem, kept_aside)
        self.path = os.fspath(path) if path is not None else None
        self.problem = problem
        self.kept_aside = kept_aside
        self.damaged = damaged      # the bytes are there but fail to read: salvage() may save the rest

    def __str__(self) -> str:
        msg = f"{self.path}: {self.problem}"
        if self.kept_aside:
            msg += f"; copy kept aside as {self.kept_aside}, original left in place"
        return msg.replace("\r", " ").replace("\n", " ")  # guarantee a single line


class _Bad(Exception):
    """Internal: the file failed validation; becomes a StoreAlarm."""


# --------------------------------------------------------------------------- helpers


def _read_all(fd: int) -> bytes:
    chunks, off = [], 0
    while True:
        chunk = os.pread(fd, 1 << 20, off)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        off += len(chunk)


def read_witness(fd_or_path):
    """``(file_id, end, records)`` acknowledged for a file, ``None`` if it has
    no witness, ``False`` if its file system keeps no extended attributes."""
    try:
        raw = os.getxattr(fd_or_path, WITNESS)
    except OSError as e:
        if e.errno == errno.ENODATA:
            return None
        if e.errno in _NO_XATTRS:
            return False
        raise
    if len(raw) != _WITNESS.size:
        return None          # not ours to trust: as if absent
    return _WITNESS.unpack(raw)


def _write_witness(fd: int, file_id: bytes, end: int, records: int) -> bool:
    """Record what is acknowledged once the next fsync returns; False where
    the file system keeps no extended attributes."""
    try:
        os.setxattr(fd, WITNESS, _WITNESS.pack(file_id, end, records))
    except OSError as e:
        if e.errno in _NO_XATTRS:
            return False
        raise
    return True


def _utc_stamp() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")


def _fresh(table: dict) -> dict:
    """Memory's copy of a table as loaded: documents decoded from JSON, shared with nothing."""
    return {doc_id: (json.loads(doc) if type(doc) is str else json.loads(_encode(doc)))
            for doc_id, doc in table.items()}


# --------------------------------------------------------------------------- keys


def create_key(path) -> bool:
    """Create a new random AES-256-GCM key file (mode 0600). Never overwrites.

    Returns False, leaving the file untouched, if ``path`` already exists.
    """
    path = os.fspath(path)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return False
    try:
        os.fchmod(fd, 0o600)
        write_all(fd, os.urandom(KEY_LEN))
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        try:
            os.unlink(path)
        except OSError:
            pass
        raise
    os.close(fd)
    fsync_folder(os.path.dirname(os.path.abspath(path)))
    return True


def read_private(path, most: int) -> bytes:
    """Up to ``most`` bytes of a key file, refused unless it is a regular file
    (not a link) only its owner can read: StoreAlarm naming the problem."""
    path = os.fspath(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        raise StoreAlarm(path, "key file missing") from None
    except OSError as e:
        raise StoreAlarm(path, f"cannot open key file ({e.strerror})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise StoreAlarm(path, "key path is not a regular file")
        if st.st_mode & 0o077:
            raise StoreAlarm(path, f"key file is accessible by group/other (mode {stat.S_IMODE(st.st_mode):04o}); "
                                   f"run chmod 600 {path}")
        return os.read(fd, most)
    finally:
        os.close(fd)


def load_key(path) -> bytes:
    """Read a key made by :func:`create_key`; StoreAlarm if missing, wrong size or not private."""
    data = read_private(path, KEY_LEN + 1)
    if len(data) != KEY_LEN:
        raise StoreAlarm(os.fspath(path), f"key file has the wrong size ({len(data)} bytes, expected {KEY_LEN})")
    return data


# --------------------------------------------------------------------------- storage


class EncryptedLogStorage(Storage):
    """TinyDB storage: encrypted append-only log of deltas, see the module docstring.

    ``TinyDB(path, storage=EncryptedLogStorage, key=key, label="live", create=True)``
    """

    def __init__(self, path, key: bytes, label: str, create: bool = False, compact_every: int = 2000,
                 read_only: bool = False, mirror=None, generation: int = 0):
        self.path = os.fspath(path)
        # the second copy every append also lands in, fsync'd, before it is acknowledged
        self.mirror = os.fspath(mirror) if mirror else None
        self.mirror_problem: Optional[str] = None   # the mirror failed: writes go on to the first copy alone
        self._mirror_fd: Optional[int] = None
        self.read_only = read_only      # one copy in memory, no writes: for moving an old file out
        if not isinstance(key, (bytes, bytearray)) or len(key) != KEY_LEN:
            raise ValueError(f"key must be {KEY_LEN} bytes")
        if not isinstance(label, str) or not label:
            raise ValueError("label must be a non-empty str")
        self.label = label
        self.compact_every = int(compact_every)
        self.records = 0
        self.recovered_torn_tail = False
        self.torn_tail_copy: Optional[str] = None
        self.cut_detection = True       # False where the file system keeps no witness (see module doc)
        self.nothing_lost_known = True  # a recovered torn tail lay past what was acknowledged
        self.replaced = False           # the file is another generation than the one last acknowledged here
        self._aead = AESGCM(bytes(key))
        self._label_b = label.encode("utf-8")
        self._dir = os.path.dirname(os.path.abspath(self.path))
        self._lock = threading.Lock()
        self._fd: Optional[int] = None
        self._failed: Optional[str] = None
        self._file_id = b""
        self._aad_prefix = b""
        self._end = 0
        self._data: dict = {}
        self._copies: dict = {}  # table -> {doc_id: what is on disk, as JSON text or decoded}
        self._declared: Optional[dict] = None   # {table: doc ids} the writes of a `changing` block change
        self._pending: Optional[dict] = None    # the state those writes left, appended when the block ends
        # which rewrite of the file this is (in its snapshot): a compaction or salvage makes the next one;
        # of two copies with different file ids the newer generation is the one to keep
        self.generation = generation

        if create and not os.path.lexists(self.path):
            self._create()
        self._open()
        if self.mirror and not read_only:
            self._open_mirror()

    # ------------------------------------------------------------------ TinyDB API

    def read(self) -> Optional[dict]:
        """The in-memory state (not a copy: TinyDB calls this on every operation)."""
        return self._data

    def changing(self, table: str, *doc_ids, also: Optional[dict] = None) -> "_Declared":
        """``with storage.changing("payments", doc_id): table.upsert(...)``:
        the writes inside change only these documents of ``table`` (and of
        the tables in ``also``, ``{table: [doc ids]}``), written if present,
        deleted if gone, so nothing else is compared.  However many TinyDB
        operations the block holds, they reach the file as ONE appended
        record when it ends (durable then, or not at all)."""
        declared = {table: frozenset(str(d) for d in doc_ids)}
        for name, ids in (also or {}).items():
            declared[name] = declared.get(name, frozenset()) | frozenset(str(d) for d in ids)
        return _Declared(self, declared)

    def write(self, data: dict) -> None:
        """Append one record holding what changed since the last write, then
        fdatasync; inside a ``changing`` block, when the block ends."""
        if self._declared is not None:
            with self._lock:
                self._check_usable()
                self._pending = self._data = data     # the next operation in the block reads this
            return
        self._write(data, self._diff)

    def _write(self, data: dict, diff) -> None:
        with self._lock:
            self._check_usable()
            try:
                plan = diff(data)
            except BaseException:
                self._rollback()
                raise
            payload = self._payload(plan)
            if payload is None:
                self._commit(data, plan)  # nothing to persist; just clear dirty flags
                return
            try:
                record = self._seal(payload, self.records)
                self._append(record, self.records + 1)
            except BaseException:
                self._rollback()
                raise
            self.records += 1
            self._commit(data, plan)

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            if self._mirror_fd is not None:
                os.close(self._mirror_fd)
                self._mirror_fd = None

    # ------------------------------------------------------------------ the mirror

    def _open_mirror(self) -> None:
        """The mirror must hold exactly the first copy's bytes (healed before opening)."""
        try:
            if not os.path.lexists(self.mirror):
                with open(self.path, "rb") as handle:
                    install_copy(self.mirror, handle.read(self._end), self._file_id, self.records)
            fd = os.open(self.mirror, os.O_RDWR | os.O_APPEND)
        except OSError as e:
            self._mirror_failed(f"cannot open it ({e.strerror})")
            return
        if os.fstat(fd).st_size != self._end:
            os.close(fd)
            self._mirror_failed("it differs from the first copy")
            return
        self._mirror_fd = fd

    def _mirror_failed(self, why: str) -> None:
        if self._mirror_fd is not None:
            os.close(self._mirror_fd)
            self._mirror_fd = None
        self.mirror_problem = f"mirror {self.mirror}: {why}; sales are kept on the first copy alone"
        log.error("%s", self.mirror_problem)

    def _write_mirror(self, record: bytes, records: int) -> None:
        """Append to the mirror, before either copy is fsync'd (on one file
        system the first fsync then commits both).  A mirror that fails (a
        stick pulled out) is dropped with an alarm, never the sale; opening
        heals it from the first copy."""
        fd = self._mirror_fd
        if fd is None:
            return
        crash_point("mirror:before_append")
        try:
            write_all(fd, record)
            if self.cut_detection:
                _write_witness(fd, self._file_id, self._end + len(record), records)
        except OSError as e:
            self._mirror_failed(f"a write failed ({e.strerror})")

    def _sync_mirror(self) -> None:
        fd = self._mirror_fd
        if fd is None:
            return
        try:
            (_fsync if self.cut_detection else _fdatasync)(fd)
        except OSError as e:
            self._mirror_failed(f"a write failed ({e.strerror})")

    # ------------------------------------------------------------------ maintenance

    def needs_compaction(self) -> bool:
        return self.records > self.compact_every

    def compact(self) -> None:
        """Rewrite the file as a single snapshot of the in-memory state (temp file + rename)."""
        with self._lock:
            self._check_usable()
            data = self._data
            snapshot = _encode(data)
            copies = json.loads(snapshot)
            file_id = os.urandom(FILE_ID_LEN)
            record = self._seal(self._snapshot_payload(snapshot, self.generation + 1), 0,
                                self._make_aad_prefix(file_id))
            content = MAGIC + file_id + record
            old_size = self._end
            tmp, fd = self._write_temp(content, file_id)
            try:
                os.replace(tmp, self.path)
            except BaseException:
                os.close(fd)
                self._unlink_quietly(tmp)
                raise
            # From here on the new file is at self.path: switch to it whatever happens.
            old_fd, self._fd = self._fd, fd
            os.close(old_fd)
            self._file_id, self._aad_prefix = file_id, self._make_aad_prefix(file_id)
            self._end = len(content)
            self.records = 1
            self.generation += 1
            if self._mirror_fd is not None:     # the first copy is renamed first: opening prefers it
                crash_point("mirror:after_rename")
                os.close(self._mirror_fd)
                self._mirror_fd = None
                try:
                    install_copy(self.mirror, content, file_id, 1)
                    self._mirror_fd = os.open(self.mirror, os.O_RDWR | os.O_APPEND)
                except OSError as e:
                    self._mirror_failed(f"compaction could not write it ({e.strerror})")
            self._copies = copies
            self._data = {name: _fresh(table) for name, table in copies.items()}
            try:
                settle_rename(self.path, self._fd)
            except OSError as e:
                self._failed = f"directory fsync after compaction failed ({e.strerror})"
                raise
            log.info("store %s compacted: %d -> %d bytes", self.path, old_size, self._end)

    # ------------------------------------------------------------------ open / create

    def _make_aad_prefix(self, file_id: bytes) -> bytes:
        return AAD_TAG + struct.pack(">H", len(self._label_b)) + self._label_b + file_id

    @staticmethod
    def _snapshot_payload(snapshot_json: str, generation: int = 0) -> bytes:
        return ('{"g":' + str(int(generation)) + ',"s":' + snapshot_json + ',"t":"s"}').encode("utf-8")

    def _seal(self, payload: bytes, seq: int, aad_prefix: Optional[bytes] = None) -> bytes:
        nonce = os.urandom(NONCE_LEN)
        aad = (self._aad_prefix if aad_prefix is None else aad_prefix) + _SEQ.pack(seq)
        body = nonce + self._aead.encrypt(nonce, payload, aad)
        if len(body) > MAX_BODY:
            raise ValueError(f"record of {len(body)} bytes exceeds the {MAX_BODY} byte limit")
        return _LEN.pack(len(body)) + body

    def _write_temp(self, content: bytes, file_id: bytes):
        base = os.path.basename(self.path)
        while True:
            tmp = os.path.join(self._dir, f".{base}.tmp-{secrets.token_hex(6)}")
            try:
                fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
                break
            except FileExistsError:
                continue
        try:
            os.fchmod(fd, 0o600)
            write_all(fd, content)
            if self.cut_detection:
                self.cut_detection = _write_witness(fd, file_id, len(content), 1)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            self._unlink_quietly(tmp)
            raise
        return tmp, fd

    @staticmethod
    def _unlink_quietly(path: str) -> None:
        try:
            os.unlink(path)
        except OSError:
            pass

    def _create(self) -> None:
        file_id = os.urandom(FILE_ID_LEN)
        record = self._seal(self._snapshot_payload("{}", self.generation), 0, self._make_aad_prefix(file_id))
        tmp, fd = self._write_temp(MAGIC + file_id + record, file_id)
        try:
            try:
                os.link(tmp, self.path)  # atomic and never overwrites
            except FileExistsError:
                pass  # created meanwhile by someone else: open that one
            except OSError as e:
                if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
                    raise
                if not os.path.lexists(self.path):  # no hard links here: rename instead
                    os.replace(tmp, self.path)
            self._unlink_quietly(tmp)
            settle_rename(self.path, fd)
        finally:
            os.close(fd)

    def _open(self) -> None:
        path = self.path
        try:
            fd = os.open(path, os.O_RDWR | os.O_APPEND)
        except FileNotFoundError:
            raise StoreAlarm(path, "store file missing (refusing to start with an empty queue)") from None
        except OSError as e:
            raise StoreAlarm(path, f"cannot open store file ({e.strerror})") from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise StoreAlarm(path, "store path is not a regular file")
            try:
                buf = _read_all(fd)
            except OSError as e:
                raise StoreAlarm(path, f"cannot read store file ({e.strerror})") from None
            witness = read_witness(fd)
            self.cut_detection = witness is not False
            try:
                state, file_id, count, good_end, ours = self._judge(buf, witness)
            except _Bad as bad:
                copy, note = self._keep_aside(buf, "bad")
                raise StoreAlarm(path, str(bad) + note, copy, damaged=True) from None
            if self.replaced:
                log.warning("store %s is not the file last written here (a copy put in its place?)", path)
            if good_end < len(buf):
                self.nothing_lost_known = ours is not None     # the tail lay past the acknowledged end
                copy, note = self._keep_aside(buf, "torn")
                if copy is None:
                    raise StoreAlarm(path, f"torn final record ({len(buf) - good_end} bytes)" + note)
                os.ftruncate(fd, good_end)
                os.fsync(fd)
                self.recovered_torn_tail = True
                self.torn_tail_copy = copy
                log.warning(
                    "store %s: removed a torn final record (%d bytes, from an interrupted write that was "
                    "never acknowledged); copy of the file kept as %s",
                    path, len(buf) - good_end, copy,
                )
            if stat.S_IMODE(st.st_mode) != 0o600:
                os.fchmod(fd, 0o600)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self._file_id = file_id
        self._aad_prefix = self._make_aad_prefix(file_id)
        self._end = good_end
        self.records = count
        self._copies = state
        self._data = state if self.read_only else {name: _fresh(table) for name, table in state.items()}

    def _judge(self, buf: bytes, witness):
        """Check a file's bytes against its witness: ``(state, file_id,
        records, good_end, witness if it is this file's)``, or _Bad."""
        # a header cut too short to name its file id is still this file, cut
        ours = witness if witness and (len(buf) < HEADER_LEN or buf[len(MAGIC):HEADER_LEN] == witness[0]) else None
        self.replaced = bool(witness) and ours is None
        try:
            state, file_id, count, good_end = self._parse(buf)
        except _Bad as bad:
            if ours and len(buf) < ours[1]:
                raise _Bad(f"{self._cut_short(buf, ours)}; {bad}") from None
            raise
        if ours and len(buf) < ours[1]:
            raise _Bad(self._cut_short(buf, ours))
        if ours and good_end < ours[1]:
            raise _Bad(f"record {count} at offset {good_end} cannot be read, inside the "
                       f"{ours[1]} bytes acknowledged")
        return state, file_id, count, good_end, ours

    @classmethod
    def judge(cls, buf: bytes, witness, key: bytes, label: str):
        """:meth:`_judge` without opening anything: ``(records, good_end,
        file_id, None, generation, state)`` for a file that reads, ``(0, 0,
        None, problem, 0, None)`` for one that does not."""
        judge = cls.__new__(cls)
        judge._aead, judge.label, judge._label_b = AESGCM(bytes(key)), label, label.encode("utf-8")
        judge.generation = 0
        try:
            state, file_id, count, good_end, _ = judge._judge(buf, witness)
        except _Bad as bad:
            return 0, 0, None, str(bad), 0, None
        return count, good_end, file_id, None, judge.generation, state

    def _cut_short(self, buf: bytes, witness) -> str:
        """The alarm for a file shorter than what was acknowledged: how much is missing."""
        _, end, records = witness
        try:
            present = self._parse(buf)[2]
        except _Bad:
            present = 0
        return (f"cut short: {end - len(buf)} bytes missing (the file ends at byte {len(buf)} of the "
                f"{end} acknowledged; {records - present} of {records} records lost)")

    def _keep_aside(self, buf: bytes, kind: str):
        """Copy the file's bytes to <name>.<kind>-<stamp> (0600). Returns (path|None, note).
        A damaged file is named by its content, so it is kept once however often it is opened."""
        if kind == "bad":
            base = f"{self.path}.{kind}-{hashlib.sha256(buf).hexdigest()[:16]}"
            if os.path.exists(base):
                return base, ""
        else:
            base = f"{self.path}.{kind}-{_utc_stamp()}"
        try:
            for i in range(1000):
                name = base if i == 0 else f"{base}-{i}"
                try:
                    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                except FileExistsError:
                    continue
                try:
                    os.fchmod(fd, 0o600)
                    write_all(fd, buf)
                    os.fsync(fd)
                finally:
                    os.close(fd)
                fsync_folder(self._dir)
                return name, ""
            return None, "; could not keep a copy aside (no free name)"
        except OSError as e:
            return None, f"; could not keep a copy aside ({e.strerror})"

    # ------------------------------------------------------------------ parsing

    def _decrypt(self, body, seq: int, aad_prefix: bytes) -> bytes:
        return self._aead.decrypt(bytes(body[:NONCE_LEN]), bytes(body[NONCE_LEN:]), aad_prefix + _SEQ.pack(seq))

    def _parse(self, buf: bytes):
        """Validate and replay the log. Returns (state, file_id, records, end of last complete record)."""
        size = len(buf)
        if size == 0:
            raise _Bad("file is empty (0 bytes)")
        if buf[: len(MAGIC)] != MAGIC[: min(size, len(MAGIC))]:
            raise _Bad("bad magic: not a kiosk store file, or its header is corrupted")
        if size < HEADER_LEN:
            raise _Bad(f"header truncated ({size} of {HEADER_LEN} bytes)")
        file_id = buf[len(MAGIC):HEADER_LEN]
        aad_prefix = self._make_aad_prefix(file_id)
        view = memoryview(buf)
        pos, seq, state = HEADER_LEN, 0, None
        while pos < size:
            remaining = size - pos
            if remaining < _LEN.size:
                break  # torn length prefix
            (length,) = _LEN.unpack_from(buf, pos)
            if length < MIN_BODY or length > MAX_BODY:
                raise _Bad(f"record {seq} at offset {pos}: invalid length {length}")
            if remaining - _LEN.size < length:
                self._check_misframed(view, pos, length, seq, aad_prefix)
                break  # torn body
            body = view[pos + _LEN.size: pos + _LEN.size + length]
            try:
                plain = self._decrypt(body, seq, aad_prefix)
            except InvalidTag:
                raise _Bad(self._diagnose(body, seq, aad_prefix)) from None
            try:
                rec = json.loads(plain)
            except ValueError:
                raise _Bad(f"record {seq}: invalid JSON") from None
            state = self._apply(state, rec, seq)
            if seq == 0:
                generation = rec.get("g", 0)
                self.generation = generation if isinstance(generation, int) and not isinstance(generation, bool) else 0
            pos += _LEN.size + length
            seq += 1
        if seq == 0:
            if pos < size:
                raise _Bad("snapshot record (record 0) truncated")
            raise _Bad("snapshot missing: the file holds only a header")
        return state, bytes(file_id), seq, pos

    def _check_misframed(self, view, pos: int, length: int, seq: int, aad_prefix: bytes) -> None:
        """A body running past EOF is a torn append -- unless a corrupted length field
        makes a complete record look torn. Look for the record under plausible lengths:
        exactly to EOF (the last record), or with any one byte of the length changed."""
        size = len(view)
        avail = size - pos - _LEN.size
        candidates = {avail}
        raw = _LEN.pack(length)
        for i in range(4):
            for b in range(256):
                candidates.add(_LEN.unpack(raw[:i] + bytes((b,)) + raw[i + 1:])[0])
        for cand in sorted(candidates):
            if cand == length or cand < MIN_BODY or cand > avail:
                continue
            end = pos + _LEN.size + cand
            if end != size:  # cheap framing check before paying for a decryption
                if end + _LEN.size > size:
                    continue
                (nxt,) = _LEN.unpack_from(view, end)
                if nxt < MIN_BODY or nxt > MAX_BODY:
                    continue
            try:
                self._decrypt(view[pos + _LEN.size: end], seq, aad_prefix)
            except InvalidTag:
                continue
            raise _Bad(f"record {seq} at offset {pos}: length field corrupted ({length}, record is {cand} bytes)")

    def _diagnose(self, body, seq: int, aad_prefix: bytes) -> str:
        if seq == 0:
            return ("record 0 (snapshot) failed authentication: wrong key or tampered, "
                    "or the file belongs to another store/label")
        for other in range(0, seq + _DIAGNOSE_WINDOW):
            if other == seq:
                continue
            try:
                self._decrypt(body, other, aad_prefix)
            except InvalidTag:
                continue
            return (f"sequence problem: record {seq} is genuine record {other} out of place "
                    f"(records reordered, duplicated or removed: tampered)")
        return f"record {seq} failed authentication: wrong key or tampered"

    @staticmethod
    def _apply(state, rec, seq: int) -> dict:
        def bad(what="malformed record"):
            return _Bad(f"record {seq}: {what}")

        def str_list(v):
            if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
                raise bad()
            return v

        def tables(v, leaf):
            if not isinstance(v, dict):
                raise bad()
            for t in v.values():
                if not isinstance(t, leaf):
                    raise bad()
            return v

        if not isinstance(rec, dict):
            raise bad()
        kind = rec.get("t")
        if seq == 0:
            if kind != "s":
                raise _Bad("sequence problem: record 0 is not a snapshot")
            snap = tables(rec.get("s"), dict)
            for t in snap.values():
                for doc in t.values():
                    if not isinstance(doc, dict):
                        raise bad()
            return snap
        if kind != "d":
            raise _Bad(f"sequence problem: record {seq} is not a delta")
        for name in str_list(rec.get("x", [])):
            state.pop(name, None)
        for name in str_list(rec.get("r", [])):
            state[name] = {}
        for name, ids in tables(rec.get("d", {}), list).items():
            table = state.get(name)
            if table is not None:
                for doc_id in str_list(ids):
                    table.pop(doc_id, None)
        for name, docs in tables(rec.get("u", {}), dict).items():
            table = state.setdefault(name, {})
            for doc_id, doc in docs.items():
                if not isinstance(doc, dict):
                    raise bad()
                table[doc_id] = doc
        return state

    # ------------------------------------------------------------------ writing

    def _check_usable(self) -> None:
        if self.read_only:
            raise ValueError(f"store {self.path} was opened read-only")
        if self._failed is not None:
            raise StoreAlarm(self.path, f"an earlier write failed ({self._failed}); reopen the store")
        if self._fd is None:
            raise ValueError(f"store {self.path} is closed")

    def _declared_diff(self, data: dict, declared: dict):
        """What changed, as declared: only the named documents are encoded."""
        if not isinstance(data, dict):
            raise TypeError("TinyDB state must be a dict")
        if any(t not in data for t in self._copies):
            raise ValueError("a declared write may not drop a table")
        reset, dels, ups, touched = [], {}, {}, []
        for name, ids in declared.items():
            table = data.get(name, {})
            old = self._copies.get(name)
            if old is None:
                reset.append(name)
            items, gone = [], []
            for doc_id in ids:
                doc = table.get(doc_id)
                if doc is None:
                    if old is not None and doc_id in old:
                        gone.append(doc_id)
                    continue
                # the caller said it changed: written as it is, without comparing or sorting
                js = _encode_as_is(doc)
                touched.append((name, doc_id, js, None))
                items.append((doc_id, js))
            if gone:
                dels[name] = gone
            if items:
                ups[name] = items
        return [], reset, dels, ups, touched

    def _diff(self, data: dict):
        """What changed since the last write, found by comparing every
        document with what is on disk: O(documents).  Only for writes nobody
        declared (see :meth:`changing`)."""
        if not isinstance(data, dict):
            raise TypeError("TinyDB state must be a dict")
        copies, enc = self._copies, _encode
        dropped = [name for name in copies if name not in data]
        reset, dels, ups, touched = [], {}, {}, []
        for name, table in data.items():
            old = copies.get(name)
            if old is None:  # new table
                reset.append(name)
                old = {}
            items = []
            for doc_id, doc in table.items():
                js = enc(doc)
                prev = old.get(doc_id, _MISSING)
                if prev is not _MISSING and js == (prev if type(prev) is str else enc(prev)):
                    continue
                items.append((doc_id, js))
                touched.append((name, doc_id, js, True))
            kept = sum(1 for doc_id in old if doc_id in table)
            if old and kept < len(old):
                if kept == 0:
                    if name not in reset:
                        reset.append(name)  # e.g. truncate(): one word instead of every id
                else:
                    dels[name] = [doc_id for doc_id in old if doc_id not in table]
            if items:
                ups[name] = items
        return dropped, reset, dels, ups, touched

    @staticmethod
    def _payload(plan) -> Optional[bytes]:
        dropped, reset, dels, ups, _ = plan
        if not (dropped or reset or dels or ups):
            return None
        enc = _encode
        parts = ['{"t":"d"']
        if dropped:
            parts += [',"x":', enc(dropped)]
        if reset:
            parts += [',"r":', enc(reset)]
        if dels:
            parts += [',"d":', enc(dels)]
        if ups:
            parts.append(',"u":{')
            parts.append(",".join(
                enc(name) + ":{" + ",".join(enc(doc_id) + ":" + js for doc_id, js in items) + "}"
                for name, items in ups.items()
            ))
            parts.append("}")
        parts.append("}")
        return "".join(parts).encode("utf-8")

    def _append(self, record: bytes, records: int) -> None:
        fd = self._fd
        try:
            write_all(fd, record)
            if self.cut_detection:     # in the same journal commit as the record (fsync below)
                self.cut_detection = _write_witness(fd, self._file_id, self._end + len(record), records)
            self._write_mirror(record, records)
        except BaseException as e:
            try:  # never leave a partial record in front of the next one
                os.ftruncate(fd, self._end)
                os.fsync(fd)
            except OSError as e2:
                self._failed = f"append failed and could not be undone ({e2.strerror})"
            raise e
        # both copies' fsyncs at once: on one file system they share a journal commit
        mirror = threading.Thread(target=self._sync_mirror) if self._mirror_fd is not None else None
        if mirror is not None:
            mirror.start()
        try:
            # fsync, not fdatasync: the witness is metadata; an append commits the inode anyway
            (_fsync if self.cut_detection else _fdatasync)(fd)
        except OSError as e:
            # After a failed fdatasync the state of the record on disk is unknown.
            self._failed = f"fdatasync failed ({e.strerror})"
            raise
        finally:
            if mirror is not None:
                mirror.join()
        self._end += len(record)

    def _commit(self, data: dict, plan) -> None:
        dropped, reset, dels, _, touched = plan
        copies = self._copies
        for name in dropped:
            del copies[name]
        for name in reset:
            copies[name] = {}
        for name, ids in dels.items():
            for doc_id in ids:
                copies[name].pop(doc_id, None)
        for name, doc_id, js, changed in touched:
            if changed is not None:
                # memory gets exactly what is on disk, shared with nobody (a
                # declared write keeps the caller's fresh, JSON-typed document)
                data[name][doc_id] = json.loads(js)
            if changed is not False:
                copies[name][doc_id] = js
        self._data = data

    def _rollback(self) -> None:
        """Make memory match the disk again after a write that did not happen."""
        self._data = {name: _fresh(table) for name, table in self._copies.items()}


def install_copy(path, content: bytes, file_id: Optional[bytes], records: int) -> None:
    """Put ``content`` (a whole, checked file) at ``path`` with its witness:
    written beside it, fsync'd, renamed over it, the folder fsync'd."""
    path = os.fspath(path)
    folder, base = os.path.split(os.path.abspath(path))
    tmp = os.path.join(folder, f".{base}.tmp-copy-{secrets.token_hex(6)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)
        write_all(fd, content)
        if file_id is not None:       # a key file has none
            _write_witness(fd, file_id, len(content), records)
        os.fsync(fd)
        os.close(fd)
        fd = None
        os.replace(tmp, path)
    except BaseException:
        if fd is not None:
            os.close(fd)
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    settle_rename(path)         # on a FAT stick the folder alone would keep an empty file


class _Declared:
    """The documents the writes inside a ``with`` block change (see ``changing``)."""

    def __init__(self, storage: EncryptedLogStorage, declared: dict):
        self.storage, self.declared = storage, declared

    def __enter__(self):
        storage = self.storage
        if storage._declared is not None:
            raise RuntimeError("changing() blocks do not nest")
        storage._declared, storage._pending = self.declared, None
        return self

    def __exit__(self, kind, exc, tb):
        storage = self.storage
        pending, storage._declared, storage._pending = storage._pending, None, None
        if pending is None:
            return False
        if kind is not None:              # the block failed half-way: memory goes back to the file
            with storage._lock:
                storage._rollback()
            return False
        storage._write(pending, lambda data: storage._declared_diff(data, self.declared))
        return False
