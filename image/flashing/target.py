"""The target card: what is on it (a kiosk card, a damaged one, or not one
at all), read through CardReader so that a read error stops the run;
whether anything has it in use; and, just before writing, whether the card
in the reader is still the one that was checked."""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from .common import (BOOT_LABEL, DATA_LABEL, EXIT_REFUSED, EXIT_USAGE, ROOT_LABEL, SECTOR, Stop, mib,
                     read_lines, unescape)
from .disks import ExtInfo, Partition, backup_superblock, ext_info, fat_label, mbr_entries, partition_table


@dataclass
class Target:
    path: Path
    block: bool
    size: int
    partitions: list[Partition] | None
    data: ExtInfo | None            # the card's data partition, if it is a readable kiosk card
    signs: list[str] = field(default_factory=list)     # what makes it look like a kiosk card
    damage: str | None = None       # why a card that looks like one is not a readable kiosk card
    seen: dict[tuple[int, int], tuple[str, bytes]] = field(default_factory=dict)   # what was read: see CardReader

    @property
    def is_kiosk_card(self) -> bool:
        return self.data is not None

    @property
    def is_damaged_kiosk_card(self) -> bool:
        return bool(self.signs) and not self.is_kiosk_card

    @property
    def name(self) -> str:
        return self.path.name


class CardReader:
    """Reads the target at given offsets; a read error stops the run (never
    taken for "nothing there"), and what was read is kept, to check just
    before writing that the card in the reader is still the same."""

    def __init__(self, target: Path, fd: int, size: int):
        self.target, self.fd, self.size = target, fd, size
        self.seen: dict[tuple[int, int], tuple[str, bytes]] = {}   # (offset, length) -> (what, bytes)

    def read(self, offset: int, length: int, what: str) -> bytes:
        length = max(0, min(length, self.size - offset))     # past the end: nothing there
        try:
            data = os.pread(self.fd, length, offset) if length else b""
        except OSError as exc:
            raise Stop(f"{self.target}: reading {what} failed ({exc.strerror}); the card or the card reader "
                       f"may be failing: nothing written (try another reader)", EXIT_USAGE) from None
        if len(data) != length:
            raise Stop(f"{self.target}: reading {what} came back short; the card or the card reader "
                       f"may be failing: nothing written (try another reader)", EXIT_USAGE)
        self.seen.setdefault((offset, length), (what, data))
        return data


def look_for_kiosk(reader: CardReader, sector0: bytes, hint: list[Partition]) -> list[str]:
    """The signs of a kiosk layout on the card, damaged or not: a KIOSKBOOT or
    KIOSKROOT label on partition 1 or 2, an ext filesystem on partition 3, a
    backup superblock labelled KIOSKDATA.  Partitions are looked for where the
    card's MBR entries point, even with a damaged signature or status byte,
    and where the image's are (only a kiosk label counts there)."""
    signs: list[str] = []
    places = [(p, True) for p in mbr_entries(sector0)] + [(p, False) for p in hint]
    looked = set()
    for part, in_table in places:
        if (part.number, part.start) in looked or part.number > 3:
            continue
        looked.add((part.number, part.start))
        where = (f"partition {part.number}" if in_table
                 else f"{mib(part.start)} into the card (the image's partition {part.number})")
        if part.number == 1:
            if fat_label(reader.read(part.start, SECTOR, f"the boot sector at {where}")) == BOOT_LABEL:
                signs.append(f"{where} is labelled {BOOT_LABEL}")
            continue
        info = ext_info(reader.read(part.start + 1024, 1024, f"the superblock at {where}"))
        if part.number == 2:
            if info and info.label == ROOT_LABEL:
                signs.append(f"{where} is labelled {ROOT_LABEL}")
            continue
        if info and (in_table or info.label == DATA_LABEL):
            signs.append(f"{where} holds an ext filesystem labelled {info.label!r}")
            continue
        what = f"a backup superblock at {where}"
        backup = backup_superblock(lambda offset, length: reader.read(offset, length, what), part.start)
        if backup and (in_table or backup[1].label == DATA_LABEL):
            signs.append(f"{where} has a backup superblock labelled {backup[1].label!r} at block {backup[0]}")
    return signs


def why_damaged(parts: list[Partition] | None, data: ExtInfo | None, signs: list[str]) -> str:
    if parts is None:
        return "its partition table is damaged"
    if not (len(parts) >= 3 and parts[2].number == 3):
        return "its partition table has no partition 3"
    backups = [sign for sign in signs if "backup superblock" in sign and f"labelled {DATA_LABEL!r}" in sign]
    if data is None and backups:
        block = backups[0].rsplit(" ", 1)[-1]
        return f"the data partition's superblock is damaged; a backup is intact at block {block}"
    return f"partition 3 is not an ext filesystem labelled {DATA_LABEL}"


def inspect_target(path: Path, hint: list[Partition] | None = None) -> Target:
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise Stop(f"{path}: no such card or file (for a new disk-image file: truncate -s 0 {path} first)",
                   EXIT_USAGE) from None
    except OSError as exc:
        raise Stop(f"{path}: {exc.strerror}", EXIT_USAGE) from None
    if not (stat.S_ISBLK(mode) or stat.S_ISREG(mode)):
        raise Stop(f"{path}: not a block device or a regular file", EXIT_USAGE)
    if stat.S_ISBLK(mode) and (Path("/sys/class/block") / os.path.realpath(path).split("/")[-1] / "partition").exists():
        raise Stop(f"{path}: is a partition; give the whole card (e.g. /dev/sdb, /dev/mmcblk0)", EXIT_USAGE)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise Stop(f"{path}: cannot open: {exc.strerror}", EXIT_USAGE) from None
    try:
        try:
            size = os.lseek(fd, 0, os.SEEK_END)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)     # read the card, not what was cached
        except OSError as exc:
            raise Stop(f"{path}: cannot read it: {exc.strerror}", EXIT_USAGE) from None
        reader = CardReader(path, fd, size)
        sector0 = reader.read(0, SECTOR, "the partition table")
        parts = partition_table(sector0)
        data = None
        if parts and len(parts) >= 3 and parts[2].number == 3:
            info = ext_info(reader.read(parts[2].start + 1024, 1024, "the data partition's superblock"))
            data = info if info and info.label == DATA_LABEL else None
        signs = look_for_kiosk(reader, sector0, hint or [])
    finally:
        os.close(fd)
    damage = why_damaged(parts, data, signs) if signs and data is None else None
    return Target(path, stat.S_ISBLK(mode), size, parts, data, signs, damage, reader.seen)


def _kernel_names(target: Path, sys_block: Path) -> set[str]:
    """TARGET's kernel block devices and their partitions: sdb, sdb1, ...; for
    a file, the loop devices it is attached to and theirs."""
    real = os.path.realpath(target)
    disks = set()
    try:
        is_block = stat.S_ISBLK(os.stat(real).st_mode)
    except OSError:
        is_block = False
    if is_block:
        disks.add(os.path.basename(real))
    else:
        for loop in sys_block.glob("loop*/loop/backing_file"):
            backing = loop.read_text().strip().removesuffix(" (deleted)")
            if backing == real:
                disks.add(loop.parent.parent.name)
    names = set(disks)
    for disk in disks:
        names.update(p.parent.name for p in (sys_block / disk).glob("*/partition"))
    return names


def in_use(target: Path, mounts: Path = Path("/proc/self/mounts"), swaps: Path = Path("/proc/swaps"),
           sys_block: Path = Path("/sys/class/block")) -> list[str]:
    """How TARGET or one of its partitions is in use: mounted, swap, or held
    (e.g. by device-mapper).  Empty if it is free to write."""
    names = _kernel_names(target, sys_block)
    real = os.path.realpath(target)

    def is_ours(source: str) -> bool:
        if not source.startswith("/"):
            return False
        resolved = os.path.realpath(source)
        return resolved == real or (resolved.startswith("/dev/") and os.path.basename(resolved) in names)

    found = []
    for line in read_lines(mounts):
        fields = line.split()
        if len(fields) >= 2 and is_ours(unescape(fields[0])):
            found.append(f"{unescape(fields[0])} is mounted on {unescape(fields[1])}")
    for line in read_lines(swaps)[1:]:
        if line.split() and is_ours(unescape(line.split()[0])):
            found.append(f"{line.split()[0]} is in use as swap")
    for name in sorted(names):
        for holder in sorted((sys_block / name / "holders").glob("*")):
            found.append(f"/dev/{name} is held by /dev/{holder.name}")
    return found


def check_same_card(target: Target, fd: int) -> None:
    """The card in the reader now, read through the descriptor that writes it,
    must be the one inspected: the image check and the question take minutes,
    time enough to put another card in the reader under the same name.  Every
    range read while inspecting it -- the partition table, the data partition's
    superblock (its UUID, last mount and write times) -- and its size must be
    the same, byte for byte."""
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)     # the card, not what was cached
        changed = [] if os.lseek(fd, 0, os.SEEK_END) == target.size else ["its size"]
        for (offset, length), (what, data) in sorted(target.seen.items()):
            if os.pread(fd, length, offset) != data:
                changed.append(what)
    except OSError as exc:
        raise Stop(f"{target.path}: reading it again before writing failed ({exc.strerror}); nothing written",
                   EXIT_USAGE) from None
    if changed:
        raise Stop(f"refusing to write: {target.path} is not the card that was checked ({changed[0]} changed; "
                   f"another card in the reader?); nothing written: run image/flash again", EXIT_REFUSED)
