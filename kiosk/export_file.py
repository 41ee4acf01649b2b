"""The export file that carries payments from one kiosk to another (``kiosk
export`` / ``kiosk import``): its format, sealing and checking.

Format, version 1 (all integers big-endian)::

    header   "KIOSKEXP" | version (1 byte) | KDF: 1 = scrypt (1 byte)
             | log2(n), r, p (1 byte each) | salt (16 bytes) | nonce prefix (7 bytes)
    frames   length (4 bytes) | AES-256-GCM(zlib(JSON))   ... one after another

The key is scrypt(passphrase, salt).  Frame ``i`` is sealed under the nonce
``prefix | i (4 bytes) | 1 if it is the last frame else 0``, with the whole
header as associated data: a flipped byte anywhere fails authentication, a
changed header (version, KDF parameters) too, frames cannot be reordered or
dropped, and a file cut at a frame boundary is told from a whole one (its
last frame never arrives).  The first frame is the manifest (which kiosk,
when), then frames of payment records, then a last frame counting them.
Frames keep memory flat when a whole history travels.

It never writes a passphrase, key or payment anywhere but into sealed frames,
never leaves a half-written file under the final name (temp file, fsync,
rename, fsync of the folder), never overwrites a file, and changes nothing
when it refuses a file.
"""
from __future__ import annotations

import errno
import json
import os
import struct
import zlib
from pathlib import Path
from typing import Iterable, Iterator

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from .durable import settle_rename

MAGIC = b"KIOSKEXP"
VERSION = 1
KDF_SCRYPT = 1
LOG2_N, R, P = 17, 8, 1          # OWASP's scrypt minimum: 128 MiB, about 0.3 s on a PC, a few on a Pi
READABLE_LOG2_N = range(14, 18)  # what a file may ask for: a crafted header cannot ask for gigabytes
SALT_LEN, PREFIX_LEN = 16, 7
HEADER = struct.Struct(f">8sBBBBB{SALT_LEN}s{PREFIX_LEN}s")
LENGTH = struct.Struct(">I")
MAX_FRAME = 64 * 1024 * 1024      # a length beyond this is damage, not a frame to allocate
PAYMENTS_PER_FRAME = 500
MIN_PASSPHRASE = 8


class ExportFileError(Exception):
    """The export file cannot be written or read: ``str()`` is one line naming it."""


def derive_key(passphrase: str, salt: bytes, log2_n: int = LOG2_N, r: int = R, p: int = P) -> bytes:
    return Scrypt(salt=salt, length=32, n=2 ** log2_n, r=r, p=p).derive(passphrase.encode("utf-8"))


def _nonce(prefix: bytes, index: int, last: bool) -> bytes:
    return prefix + struct.pack(">IB", index, 1 if last else 0)


def _seal(aead: AESGCM, prefix: bytes, header: bytes, index: int, last: bool, body: dict) -> bytes:
    plain = zlib.compress(json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode(), 6)
    sealed = aead.encrypt(_nonce(prefix, index, last), plain, header)
    return LENGTH.pack(len(sealed)) + sealed


def frames_of(manifest: dict, pending: list[dict], settled: Iterable[dict]) -> Iterator[tuple[bool, dict]]:
    """(last, body) of every frame: the manifest, the payments a frame at a time, the count."""
    yield False, {"manifest": manifest}
    counts = {"pending": 0, "settled": 0}
    for section, records in (("pending", pending), ("settled", settled)):
        batch = []
        for record in records:
            batch.append(record)
            if len(batch) == PAYMENTS_PER_FRAME:
                yield False, {section: batch}
                counts[section] += len(batch)
                batch = []
        if batch:
            yield False, {section: batch}
            counts[section] += len(batch)
    yield True, {"end": counts}


def write(path: Path, passphrase: str, manifest: dict, pending: list[dict], settled: Iterable[dict]) -> bytes:
    """Write the export file durably and return its key (for reading it
    back).  Refuses an existing file: an earlier export may be the only copy
    of the payments it moved."""
    path = Path(path)
    if path.exists() or path.is_symlink():
        raise ExportFileError(f"{path} already exists: choose another name (an earlier export is never overwritten)")
    folder = path.parent
    if not folder.is_dir():
        raise ExportFileError(f"cannot write {path}: folder {folder} does not exist")
    salt, prefix = os.urandom(SALT_LEN), os.urandom(PREFIX_LEN)
    header = HEADER.pack(MAGIC, VERSION, KDF_SCRYPT, LOG2_N, R, P, salt, prefix)
    key = derive_key(passphrase, salt)
    aead = AESGCM(key)
    temp = folder / f".{path.name}.tmp-{os.getpid()}"
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb", closefd=False) as out:
                out.write(header)
                for index, (last, body) in enumerate(frames_of(manifest, pending, settled)):
                    out.write(_seal(aead, prefix, header, index, last, body))
            os.fsync(fd)
        finally:
            os.close(fd)
        if path.exists():           # made while we wrote: still never overwritten
            raise FileExistsError(errno.EEXIST, "already exists", str(path))
        os.rename(temp, path)
        settle_rename(path)         # a FAT stick pulled out right after must hold the whole file
    except OSError as exc:
        _remove(temp)
        raise ExportFileError(f"cannot write {path}: {exc.strerror or exc}") from None
    except BaseException:
        _remove(temp)
        raise
    return key


def _remove(temp: Path) -> None:
    try:
        temp.unlink()
    except FileNotFoundError:
        pass
    except OSError:
        pass          # a read-only or vanished folder holds no temp file worth a second error


class Reader:
    """Reads and checks an export file frame by frame.  ``passphrase`` or
    ``key`` (as :func:`write` returned it)."""

    def __init__(self, path: Path, passphrase: str | None = None, key: bytes | None = None):
        self.path = Path(path)
        try:
            with open(self.path, "rb") as handle:
                head = handle.read(HEADER.size)
        except OSError as exc:
            raise ExportFileError(f"cannot read {self.path}: {exc.strerror or exc}") from None
        if len(head) < len(MAGIC) or head[:len(MAGIC)] != MAGIC:
            raise ExportFileError(f"{self.path} is not a kiosk export file")
        if len(head) < HEADER.size:
            raise ExportFileError(f"{self.path} is cut short: it ends inside its header ({len(head)} bytes)")
        _, version, kdf, log2_n, r, p, salt, self.prefix = HEADER.unpack(head)
        if version != VERSION:
            raise ExportFileError(f"{self.path} is a kiosk export of format version {version}; "
                                  f"this kiosk reads version {VERSION}")
        if kdf != KDF_SCRYPT or log2_n not in READABLE_LOG2_N or r != R or p != P:
            raise ExportFileError(f"{self.path} asks for key derivation this kiosk does not use "
                                  f"(kdf {kdf}, n 2^{log2_n}, r {r}, p {p}): damaged or not ours")
        self.header = head
        self.aead = AESGCM(key if key is not None else derive_key(passphrase, salt, log2_n, r, p))

    def frames(self) -> Iterator[dict]:
        """Every frame's body, checked; the last one (the count) included."""
        with open(self.path, "rb") as handle:
            handle.seek(HEADER.size)
            index, offset = 0, HEADER.size
            while True:
                raw = handle.read(LENGTH.size)
                if not raw:
                    raise ExportFileError(f"{self.path} is cut short at byte {offset}: its last part is missing")
                if len(raw) < LENGTH.size:
                    raise ExportFileError(f"{self.path} is cut short at byte {offset + len(raw)}")
                (length,) = LENGTH.unpack(raw)
                if not 16 <= length <= MAX_FRAME:
                    raise ExportFileError(f"{self.path} is damaged at byte {offset}: not a frame length")
                sealed = handle.read(length)
                if len(sealed) < length:
                    raise ExportFileError(f"{self.path} is cut short at byte {offset + LENGTH.size + len(sealed)}")
                body, last = self._open(index, offset, sealed)
                offset += LENGTH.size + length
                index += 1
                if last:
                    extra = len(handle.read())
                    if extra:
                        raise ExportFileError(f"{self.path} has {extra} unexpected bytes after its end (byte {offset})")
                yield body
                if last:
                    return

    def manifest(self) -> dict:
        """The first frame: which kiosk wrote the file, and when."""
        frames = self.frames()
        try:
            first = next(frames)
        finally:
            frames.close()
        if not isinstance(first.get("manifest"), dict):
            raise ExportFileError(f"{self.path}: its first part is not a manifest (written by a broken kiosk?)")
        return first["manifest"]

    def payments(self) -> Iterator[tuple[str, dict]]:
        """``("pending" | "settled", record)`` for every payment, in order;
        raises at the end if the count the file ends with does not match."""
        counts = {"pending": 0, "settled": 0}
        for index, body in enumerate(self.frames()):
            if index == 0:
                continue
            if "end" in body:
                if body["end"] != counts:
                    raise ExportFileError(f"{self.path}: its end counts {body['end']}, its frames hold {counts}")
                return
            for section in ("pending", "settled"):
                for record in body.get(section, ()):
                    counts[section] += 1
                    yield section, record

    def _open(self, index: int, offset: int, sealed: bytes) -> tuple[dict, bool]:
        for last in (False, True):
            try:
                plain = self.aead.decrypt(_nonce(self.prefix, index, last), sealed, self.header)
            except InvalidTag:
                continue
            try:
                return json.loads(zlib.decompress(plain)), last
            except (zlib.error, ValueError):
                raise ExportFileError(f"{self.path}: frame {index} is sealed but unreadable "
                                      f"(written by a broken kiosk?)") from None
        if index == 0:
            raise ExportFileError(f"wrong passphrase for {self.path} (or its start is damaged)")
        raise ExportFileError(f"{self.path} is damaged at byte {offset} (changed after it was written)")
