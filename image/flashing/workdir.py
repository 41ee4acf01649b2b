"""The private work folder: 0700, made anew on RAM-backed storage and
removed however the run ends, for everything secret that passes through
the tool (the card's queue files and keys, its journal, the vendor's
settings)."""
from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
from pathlib import Path

from .common import EXIT_USAGE, Stop, read_lines, unescape

MOUNTS = Path("/proc/self/mounts")
RAM_FILESYSTEMS = ("tmpfs", "ramfs")


def filesystem_type(path: str) -> str | None:
    """The type of the filesystem PATH is on (the last mount over it in MOUNTS)."""
    real, found, kind = os.path.realpath(path), "", None
    for line in read_lines(MOUNTS):
        fields = line.split()
        if len(fields) < 3:
            continue
        point = unescape(fields[1])
        if (real == point or real.startswith(point.rstrip("/") + "/")) and len(point) >= len(found):
            found, kind = point, fields[2]
    return kind


def ram_folders() -> list[str]:
    """Where a private work folder in RAM may go, best first."""
    uid, places = os.getuid(), ["/dev/shm"]
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    try:
        if runtime and os.stat(runtime).st_uid == uid:
            places.append(runtime)
    except OSError:
        pass
    return places + [f"/run/user/{uid}", "/run"]


@contextlib.contextmanager
def work_folder(chosen: str | None):
    """A private (0700, made anew) folder on RAM-backed storage (tmpfs, ramfs), removed
    when the run ends however it ends: the card's queue files, kiosk.key, the
    data partition's journal (which may hold the Stripe key) and the vendor's
    settings pass through it and must never reach a disk."""
    places = [chosen] if chosen else ram_folders()
    work = None
    for place in places:
        kind = filesystem_type(place)
        if kind not in RAM_FILESYSTEMS:
            if chosen:
                raise Stop(f"--work-dir {chosen} is not RAM-backed (it is on {kind or 'an unknown filesystem'}, "
                           f"not tmpfs): the card's queue and keys must not reach a disk", EXIT_USAGE)
            continue
        try:
            work = tempfile.mkdtemp(prefix="kiosk-flash-", dir=place)
        except OSError as exc:
            if chosen:
                raise Stop(f"--work-dir {chosen}: cannot make a folder in it: {exc.strerror}", EXIT_USAGE) from None
            continue
        if filesystem_type(work) in RAM_FILESYSTEMS and not stat.S_IMODE(os.lstat(work).st_mode) & 0o077:
            break
        os.rmdir(work)
        work = None
    if work is None:
        raise Stop(f"no RAM-backed folder to read the card's queue in ({', '.join(places)}: none is a writable "
                   f"tmpfs); the queue and keys must not reach a disk: pass --work-dir with a folder on a tmpfs",
                   EXIT_USAGE)
    try:
        yield Path(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
