"""Playing a power cut on a queue file, for tests.

A power cut during an append leaves bytes past what was acknowledged: the
file's witness (an extended attribute, see ``log_storage``) still names the
end it had before.  A kill cannot produce that (the kernel finishes the
write), so tests write the torn bytes and set the witness back themselves.
"""
import os
import struct

from kiosk_builtins.tinydb_store import log_storage

HEADER = len(log_storage.MAGIC) + log_storage.FILE_ID_LEN


def records_in(raw: bytes) -> int:
    """Whole records in a well-formed file's bytes."""
    count, pos = 0, HEADER
    while pos + 4 <= len(raw):
        (n,) = struct.unpack_from(">I", raw, pos)
        if pos + 4 + n > len(raw):
            break
        count, pos = count + 1, pos + 4 + n
    return count


def records_of(raw: bytes) -> list[tuple[int, int]]:
    """(offset, length with its 4-byte prefix) of each whole record."""
    found, pos = [], HEADER
    while pos + 4 <= len(raw):
        (n,) = struct.unpack_from(">I", raw, pos)
        if pos + 4 + n > len(raw):
            break
        found.append((pos, 4 + n))
        pos += 4 + n
    return found


def acknowledged_only(path, prefix: bytes) -> None:
    """As a power cut during an append leaves the file: only ``prefix`` was ever acknowledged."""
    os.setxattr(path, log_storage.WITNESS, log_storage._WITNESS.pack(
        prefix[len(log_storage.MAGIC):HEADER], len(prefix), records_in(prefix)))
