"""Salvage: what still reads of a damaged or cut queue file.

Each record is sealed on its own (AES-GCM, bound to its file and place), so a
flipped byte or a lost stretch costs the records it touches and no more: the
walk skips what does not authenticate and finds the next genuine record.
Used when a file fails its checks at open (the kiosk goes on selling on what
reads, with an alarm) and by ``kiosk recover``.  Never writes over the file it
reads; never logs payment contents.
"""
from __future__ import annotations

import json
import os
import secrets
import struct
from typing import Optional

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from kiosk import rename_durably

from .log_storage import (AAD_TAG, HEADER_LEN, MAGIC, MIN_BODY, NONCE_LEN, EncryptedLogStorage, _Bad,
                          _DIAGNOSE_WINDOW, _LEN, _SEQ, read_witness)


class Salvage:
    """What :func:`salvage` could read of a damaged file: ``state`` (every
    record that still authenticates, applied in order), ``records`` read, and
    ``unreadable``: ``(start, end)`` byte ranges that could not be read."""

    def __init__(self, state: dict, records: int, unreadable: list, size: int, acknowledged: Optional[int],
                 generation: int = 0):
        self.state, self.records, self.unreadable = state, records, unreadable
        self.size, self.acknowledged = size, acknowledged
        self.generation = generation      # of the snapshot read, if it was

    @property
    def missing(self) -> int:
        """Bytes acknowledged but no longer in the file (cut off)."""
        return max(0, (self.acknowledged or 0) - self.size)

    def describe(self) -> str:
        """One line: exactly what could not be read."""
        parts = [f"bytes {a}-{b - 1}" for a, b in self.unreadable]
        if self.missing:
            parts.append(f"{self.missing} bytes cut off the end")
        lost = "; ".join(parts) if parts else "nothing"
        return f"{self.records} records read; could not read: {lost}"


def _scan(buf: bytes, key: bytes, label: str, file_ids):
    """Walk a possibly damaged file: yields ``(start, end, seq, record)`` for
    each genuine record and ``(start, end, None, None)`` for each stretch that
    does not read.  Costs a decryption per plausible record start in a
    damaged stretch: for rare use."""
    aead = AESGCM(bytes(key))
    label_b = label.encode("utf-8")
    prefixes = [AAD_TAG + struct.pack(">H", len(label_b)) + label_b + fid for fid in file_ids]
    size, view = len(buf), memoryview(buf)

    def record_at(pos: int, seq: int, skipped: int = 0):
        if pos + _LEN.size + MIN_BODY > size:
            return None
        (length,) = _LEN.unpack_from(buf, pos)
        end = pos + _LEN.size + length
        if length < MIN_BODY or end > size:
            return None
        body = view[pos + _LEN.size:end]
        # past a lost stretch of ``skipped`` bytes, as many records as could have fitted in it
        for other in range(seq, seq + _DIAGNOSE_WINDOW + skipped // (_LEN.size + MIN_BODY)):
            for prefix in prefixes:
                try:
                    plain = aead.decrypt(bytes(body[:NONCE_LEN]), bytes(body[NONCE_LEN:]), prefix + _SEQ.pack(other))
                except InvalidTag:
                    continue
                try:
                    return json.loads(plain), other, end
                except ValueError:
                    return None
        return None

    pos, seq = HEADER_LEN, 0
    while pos < size:
        found = record_at(pos, seq)
        if found is None:
            start, pos = pos, pos + 1
            while pos < size and (found := record_at(pos, seq, pos - start)) is None:
                pos += 1
            yield start, pos, None, None
            if found is None:
                return
        rec, seq, end = found
        yield pos, end, seq, rec
        pos, seq = end, seq + 1


def _file_ids(buf: bytes, *others) -> list:
    ids = [buf[len(MAGIC):HEADER_LEN]]
    return ids + [other for other in others if other and other not in ids]


def genuine_records(buf: bytes, key: bytes, label: str) -> dict:
    """``{seq: record bytes with their length}`` of every record that still authenticates."""
    return {seq: buf[start:end] for start, end, seq, _ in _scan(buf, key, label, _file_ids(buf))
            if seq is not None}


def salvage(path, key: bytes, label: str, file_id: Optional[bytes] = None) -> Salvage:
    """Every record of ``path`` that still authenticates, applied in order,
    skipping what does not (never read as empty: the caller keeps the file).
    ``file_id`` (and the witness's) is tried when the header's own is damaged."""
    path = os.fspath(path)
    with open(path, "rb") as handle:
        buf = handle.read()
        witness = read_witness(handle.fileno())
    ids = _file_ids(buf, file_id, witness[0] if witness else None)
    state: dict = {}
    records, unreadable, generation = 0, [], 0
    for start, end, seq, rec in _scan(buf, key, label, ids):
        if seq is None:
            unreadable.append((start, end))
            continue
        try:
            if rec.get("t") == "s":
                state = EncryptedLogStorage._apply(None, rec, 0)
                generation = rec.get("g", 0) if type(rec.get("g", 0)) is int else 0
            else:
                state = EncryptedLogStorage._apply(state, rec, max(seq, 1))
        except _Bad:
            unreadable.append((start, end))     # genuine but malformed: cannot happen with our writer
            continue
        records += 1
    acknowledged = witness[1] if witness and witness[0] in ids else None
    if acknowledged is not None:     # past the acknowledged end lies only a torn, unacknowledged write
        unreadable = [(a, min(b, acknowledged)) for a, b in unreadable if a < acknowledged]
    return Salvage(state, records, unreadable, len(buf), acknowledged, generation)


def rewrite(path, key: bytes, label: str, state: dict, generation: int) -> None:
    """Replace ``path`` by a new file holding ``state``: written beside it,
    fsync'd, then renamed over it -- the old file or the new, never neither."""
    path = os.fspath(path)
    folder, base = os.path.split(os.path.abspath(path))
    tmp = os.path.join(folder, f".{base}.tmp-salvage-{secrets.token_hex(6)}")
    storage = EncryptedLogStorage(tmp, key=key, label=label, create=True, generation=generation)
    try:
        storage.write(state)
    except BaseException:
        storage.close()
        os.unlink(tmp)
        raise
    storage.close()
    rename_durably(tmp, path)
