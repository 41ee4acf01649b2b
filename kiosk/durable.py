"""Files that are whole on disk before anyone is told: written beside their
place, fsync'd, renamed into place, and the rename made durable -- on every
file system a kiosk writes to, FAT included (a USB stick holding the mirror
or an export, the boot partition).

On FAT a rename writes the new directory entry with size 0 and no first
cluster; the real ones reach the disk only with the file's inode, which the
rename leaves dirty in memory for up to half a minute.  Syncing the folder
alone makes an empty file durable: a power cut then leaves the key or the
export at 0 bytes.  So after a rename the file is fsync'd again under its
new name, then its folder.  On ext4 the second fsync finds nothing to do.

Used by the built-in plugins as by the core; a third-party plugin may use it too.
"""
from __future__ import annotations

import errno
import os
import secrets
from pathlib import Path

__all__ = ["fsync_folder", "rename_durably", "settle_rename", "write_all", "write_file"]


def fsync_folder(folder) -> None:
    """fsync a folder, so that the names in it (a new file, a rename) last."""
    fd = os.open(os.fspath(folder) or ".", os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno != errno.EINVAL:     # a folder some file systems (FUSE ones) cannot fsync
            raise
    finally:
        os.close(fd)


def settle_rename(path, fd: int | None = None) -> None:
    """Make a rename into PATH durable: the file fsync'd under its new name
    (FD if the caller holds it open, else PATH opened for it), then its folder."""
    if fd is not None:
        os.fsync(fd)
    else:
        handle = os.open(path, os.O_RDONLY)
        try:
            os.fsync(handle)
        finally:
            os.close(handle)
    fsync_folder(os.path.dirname(os.path.abspath(path)))


def rename_durably(src, dst, fd: int | None = None) -> None:
    """os.replace(SRC, DST), durable once it returns (see settle_rename)."""
    os.replace(src, dst)
    settle_rename(dst, fd)


def write_all(fd: int, data: bytes) -> None:
    """All of DATA to FD, however short the kernel's writes."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written <= 0:
            raise OSError(errno.ENOSPC, "short write")
        view = view[written:]


def write_file(path, data: bytes, mode: int = 0o600, owner: tuple[int, int] | None = None) -> None:
    """DATA at PATH, all of it or none (the old file stays until the new one
    is whole), durable once this returns; MODE from the start, never wider."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{secrets.token_hex(6)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)
        if owner:
            os.fchown(fd, *owner)
        write_all(fd, data)
        os.fsync(fd)
        rename_durably(tmp, path, fd)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        os.close(fd)
