"""The disk tools the flash tool runs (e2fsprogs, mtools): that they are
installed, and running them so that a failure is one line -- never taken
for "nothing there"."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from .common import EXIT_USAGE, Stop

TOOLS_CARD = ("debugfs", "dumpe2fs", "e2fsck")
TOOLS_KEEP = ("mdir", "mcopy", "mdel")
E2FSCK_OK = (0, 1)               # 1: "errors corrected", which replaying the journal is
MTOOLS_ENV = {"MTOOLS_SKIP_CHECK": "1"}     # a partition inside a disk, not a floppy


class Unreadable(Exception):
    """The queue cannot be read: must never count as empty."""


_DEBUGFS_NOISE = re.compile(r"^debugfs \d|while changing ownership")    # banner; not root


def debugfs(device: str, request: str, cwd: Path) -> str:
    """One read-only debugfs request.  debugfs exits 0 even when a request
    fails, so anything it says on stderr (but its banner) is a failure."""
    result = subprocess.run(["debugfs", "-R", request, device], cwd=cwd, capture_output=True,
                            text=True, errors="replace")
    problems = [line.strip() for line in result.stderr.splitlines()
                if line.strip() and not _DEBUGFS_NOISE.search(line)]
    if result.returncode or problems:
        raise Unreadable(f"debugfs {request.split()[0]}: "
                         f"{problems[0] if problems else f'exit status {result.returncode}'}")
    return result.stdout


def listing(device: str, folder: str, cwd: Path) -> dict[str, tuple[int, int]]:
    """name -> (mode, size) in FOLDER of the filesystem on DEVICE."""
    entries = {}
    for line in debugfs(device, f"ls -p {folder}", cwd).splitlines():
        fields = line.split("/")       # /inode/mode/uid/gid/name/size/
        if len(fields) >= 7 and fields[5] not in (".", ".."):
            entries[fields[5]] = (int(fields[2], 8), int(fields[6] or 0))
    return entries


def run(command: list[str], what: str, error=Unreadable, env: dict | None = None, ok=(0,)) -> str:
    """A tool's output; ERROR with its last line of stderr if it fails."""
    full_env = dict(os.environ, **(env or {}))
    try:
        result = subprocess.run(command, capture_output=True, text=True, errors="replace", env=full_env)
    except OSError as exc:
        raise error(f"{what}: {command[0]}: {exc.strerror}") from None
    if result.returncode not in ok:
        last = (result.stderr.strip().splitlines() or [f"exit status {result.returncode}"])[-1]
        raise error(f"{what}: {last}")
    return result.stdout


def check_tools(names) -> None:
    missing = [name for name in names if shutil.which(name) is None]
    if missing:
        raise Stop(f"missing {', '.join(missing)}: install mtools, dosfstools and e2fsprogs "
                   f"(sudo apt-get install mtools dosfstools e2fsprogs)", EXIT_USAGE)
