"""What every part of the flash tool shares: the exit codes and Stop (how a
run ends with one line for the vendor), the kiosk layout's labels, sizes
as the vendor reads them, and the few low-level helpers more than one part
needs (writing all of a buffer, reading the kernel's mount tables)."""
from __future__ import annotations

import os
import re
from pathlib import Path

EXIT_DONE, EXIT_FAILED, EXIT_USAGE, EXIT_REFUSED = 0, 1, 2, 3

CHUNK = 4 << 20                 # what is written at a time
SECTOR = 512
BOOT_LABEL, ROOT_LABEL, DATA_LABEL = "KIOSKBOOT", "KIOSKROOT", "KIOSKDATA"


class Stop(Exception):
    """Ends the run: one line for the vendor and an exit code."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


def mib(size: int) -> str:
    return f"{size / 2**20:g} MiB"


def human(size: int) -> str:
    """Sizes as card makers print them (decimal)."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} bytes"


def pwrite_all(fd: int, data, position: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, position)
        if written <= 0:
            raise OSError(28, "short write")
        view, position = view[written:], position + written


def unescape(field_text: str) -> str:
    """A field of /proc/self/mounts or /proc/swaps: spaces and the like are octal escapes there."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field_text)


def read_lines(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except OSError:
        return []
