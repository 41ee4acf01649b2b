"""The data partition: how much room is left on it, and telling a write the
disk refused (full, over quota, failing) from every other error.

A full card is not damage: what is stored is intact, only nothing more can
be written.  The vendor must hear "disk full", in one line, never "storage
damaged" nor a traceback -- and never "approved" for a sale that is not
stored.  This module only reads (``statvfs``); it never writes, deletes or
frees anything on the partition.
"""
from __future__ import annotations

import errno
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from . import notices

FULL, FAILING = "full", "failing"
FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
FAILING_ERRNOS = frozenset({errno.EIO})
SQLITE_IOERR, SQLITE_FULL = 10, 13          # primary result codes (the low byte of extended ones)
NEARLY_EMPTY_BYTES = 64 * 1024              # an I/O error with less than this left is the disk filling up
# what a StoreAlarm's one line carries of the OS's or SQLite's words when the error itself is gone
FULL_WORDS = ("No space left on device", "Disk quota exceeded", "database or disk is full")


@dataclass(frozen=True)
class Space:
    """Free room on the partition holding ``path``, as an unprivileged writer sees it."""
    path: str
    free_bytes: int
    total_bytes: int

    @property
    def free_mb(self) -> float:
        return self.free_bytes / 1_000_000


def space(path: Path | str) -> Space | None:
    """Free space where ``path`` (or its nearest existing parent) lives; None if it cannot be asked."""
    probe = Path(path)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        stats = os.statvfs(probe)
    except OSError:
        return None
    return Space(str(path), stats.f_bavail * stats.f_frsize, stats.f_blocks * stats.f_frsize)


def _chain(exc: BaseException):
    """The error and every error it was raised from or while handling (``raise ... from None`` keeps
    ``__context__``): a store turns a failed write into its own alarm."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def disk_trouble(exc: BaseException, data_dir: Path | str | None = None) -> str | None:
    """``FULL`` when ``exc`` is the disk refusing a write for want of room
    (ENOSPC, EDQUOT, SQLite's "disk is full", or an I/O error with the
    partition all but full), ``FAILING`` for an I/O error with room left (a
    card going bad), None for anything else."""
    io_error = False
    for err in _chain(exc):
        if isinstance(err, OSError) and err.errno in FULL_ERRNOS:
            return FULL
        if isinstance(err, OSError) and err.errno in FAILING_ERRNOS:
            io_error = True
        code = getattr(err, "sqlite_errorcode", None) if isinstance(err, sqlite3.Error) else None
        if code is not None and code & 0xFF == SQLITE_FULL:
            return FULL
        if code is not None and code & 0xFF == SQLITE_IOERR:
            io_error = True
        if any(words in str(err) for words in FULL_WORDS):
            return FULL
    if not io_error:
        return None
    # SQLite reports a shared-memory file it could not grow as an I/O error: ask the partition
    room = space(data_dir) if data_dir is not None else None
    return FULL if room is not None and room.free_bytes < NEARLY_EMPTY_BYTES else FAILING


def describe(trouble: str, data_dir: Path | str | None) -> str:
    """One line for the vendor: what is wrong with the data partition and what to do."""
    return f"{'disk full' if trouble == FULL else 'write error'}: {advice(trouble, data_dir)}"


def advice(trouble: str, data_dir: Path | str | None) -> str:
    """:func:`describe` without its first words, for a notice whose title says them."""
    where = f" ({data_dir})" if data_dir is not None else ""
    if trouble == FULL:
        return f"the data partition{where} cannot take another write; free some space there"
    return (f"the data partition{where} failed a write: the card may be failing; "
            "what is stored is kept, get the kiosk checked")


class DiskWatch:
    """For the background loop: one notice each time free space falls below
    ``[storage] min_free_mb`` and each time a write finds the disk full or
    failing -- not one per poll; it clears once there is room again."""

    def __init__(self, kiosk):
        self.kiosk = kiosk
        self.low = False           # below min_free_mb at the last look
        self.told: str | None = None   # the write trouble already told (FULL, FAILING)

    def check(self) -> Space | None:
        """Look at the free space; never raises."""
        kiosk = self.kiosk
        room = space(kiosk.config.data_dir)
        if room is None:
            return None
        minimum = kiosk.config["storage"]["min_free_mb"]
        low = room.free_mb < minimum
        if low and not self.low:
            kiosk.notify(notices.disk_low(room.free_mb, minimum))
        self.low = low
        if not low and room.free_bytes >= NEARLY_EMPTY_BYTES:
            self.told = None       # room again: the next full disk is a new one
        return room

    def failed(self, exc: BaseException) -> bool:
        """A pass failed: if the disk refused a write, tell the vendor (once
        until there is room again) and say so; False for any other error."""
        trouble = disk_trouble(exc, self.kiosk.config.data_dir)
        if trouble is None:
            return False
        if trouble != self.told:
            self.told = trouble
            self.kiosk.notify(notices.disk_trouble(trouble == FULL, advice(trouble, self.kiosk.config.data_dir)))
        return True
