"""The image file: streamed (an .img.xz is never unpacked to disk), read
once in full to check it is a complete kiosk image and to learn what each
range written should hash to, its boot partition staged on the way."""
from __future__ import annotations

import hashlib
import itertools
import lzma
import os
from dataclasses import dataclass, field
from pathlib import Path

from .common import (BOOT_LABEL, CHUNK, DATA_LABEL, EXIT_USAGE, ROOT_LABEL, SECTOR, Stop, human,
                     pwrite_all)
from .disks import Partition, ext_info, fat_label, partition_table

XZ_MAGIC = b"\xfd7zXZ\x00"


def read_at(path: Path, offset: int, length: int) -> bytes:
    """For the image only: the target is read with CardReader."""
    try:
        with open(path, "rb") as handle:
            handle.seek(offset)
            return handle.read(length)
    except OSError:
        return b""


def is_xz(path: Path) -> bool:
    return read_at(path, 0, len(XZ_MAGIC)) == XZ_MAGIC


def image_chunks(path: Path):
    """(offset, bytes) through the image as it streams past, .xz or not."""
    opener = lzma.open if is_xz(path) else open
    offset = 0
    try:
        with opener(path, "rb") as stream:
            while chunk := stream.read(CHUNK):
                yield offset, chunk
                offset += len(chunk)
    except (lzma.LZMAError, EOFError) as exc:
        raise Stop(f"{path}: the .xz file is damaged or cut short ({exc}); download or copy it again",
                   EXIT_USAGE) from None
    except OSError as exc:
        raise Stop(f"{path}: cannot read: {exc.strerror}", EXIT_USAGE) from None


def overlap(start: int, end: int, offset: int, chunk: bytes):
    """(position, the part of CHUNK at OFFSET that falls in [START, END)), or None."""
    low, high = max(start, offset), min(end, offset + len(chunk))
    if low >= high:
        return None
    return low, memoryview(chunk)[low - offset:high - offset]


@dataclass
class Piece:
    """A byte range of the image that goes to the same place on the card."""
    name: str
    start: int
    end: int
    sha: "hashlib._Hash" = field(default_factory=hashlib.sha256)

    def feed(self, offset: int, chunk: bytes):
        """The part of CHUNK (at OFFSET in the image) in this piece, hashed on the way."""
        hit = overlap(self.start, self.end, offset, chunk)
        if hit:
            self.sha.update(hit[1])
        return hit


@dataclass
class Image:
    path: Path
    size: int
    partitions: list[Partition]
    digests: dict[str, str]         # piece name -> sha256 of its bytes in the image


def pieces_for(keep: bool, parts: list[Partition]) -> list[Piece]:
    if keep:
        return [Piece("boot", parts[0].start, parts[0].end), Piece("root", parts[1].start, parts[1].end)]
    return [Piece("whole", 0, 1 << 62)]


def check_kiosk_layout(parts: list[Partition] | None, where: str) -> list[Partition]:
    if parts is None:
        raise Stop(f"{where}: not a kiosk image (no MBR partition table)", EXIT_USAGE)
    if [p.number for p in parts] != [1, 2, 3]:
        raise Stop(f"{where}: not a kiosk image (it has {len(parts)} partitions, a kiosk image 3)", EXIT_USAGE)
    return parts


def check_kiosk_filesystems(where: str, boot: bytes, root: bytes, data: bytes) -> None:
    def ext_label(superblock: bytes) -> str | None:
        info = ext_info(superblock)
        return info.label if info else None
    found = (("1", "FAT", BOOT_LABEL, fat_label(boot)),
             ("2", "ext4", ROOT_LABEL, ext_label(root)),
             ("3", "ext4", DATA_LABEL, ext_label(data)))
    for number, kind, label, seen in found:
        if seen != label:
            what = f"labelled {seen!r}" if seen is not None else f"not {kind}"
            raise Stop(f"{where}: not a kiosk image (partition {number} is {what}, "
                       f"expected {kind} labelled {label})", EXIT_USAGE)


def scan_image(path: Path, keep: bool, progress, staged: Path | None = None) -> Image:
    """Read the whole image once: is it a kiosk image, is it complete, and
    what should each written range hash to.  Nothing is written to the card
    before this has run to the end, so a damaged .xz writes nothing.  With
    STAGED, the image's boot partition is copied there on the way, to be
    fixed up before anything is written to the card."""
    chunks = image_chunks(path)
    first = next(chunks, (0, b""))
    parts = check_kiosk_layout(partition_table(first[1][:SECTOR]), str(path))
    pieces = pieces_for(keep, parts)
    probes = {"boot": Piece("probe", parts[0].start, parts[0].start + SECTOR),
              "root": Piece("probe", parts[1].start + 1024, parts[1].start + 2048),
              "data": Piece("probe", parts[2].start + 1024, parts[2].start + 2048)}
    seen = {name: bytearray() for name in probes}
    size = 0
    staged_fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600) if staged else None
    try:
        for offset, chunk in itertools.chain([first], chunks):
            for piece in pieces:
                hit = piece.feed(offset, chunk)
                if hit and piece.name == "boot" and staged_fd is not None:
                    pwrite_all(staged_fd, hit[1], hit[0] - piece.start)
            for name, probe in probes.items():
                hit = probe.feed(offset, chunk)
                if hit:
                    seen[name] += hit[1]
            size = offset + len(chunk)
            progress("checking the image", size, None)
    except OSError as exc:      # reading the image is Stop already: this is the staged copy
        raise Stop(f"copying the image's boot partition to {staged} failed: {exc.strerror}; "
                   f"nothing written (a --work-dir with more room?)", EXIT_USAGE) from None
    finally:
        if staged_fd is not None:
            os.close(staged_fd)
    progress(None, 0, None)
    if size < max(p.end for p in parts):
        raise Stop(f"{path}: the image is cut short ({human(size)}, its partitions need "
                   f"{human(max(p.end for p in parts))})", EXIT_USAGE)
    check_kiosk_filesystems(str(path), bytes(seen["boot"]), bytes(seen["root"]), bytes(seen["data"]))
    return Image(path, size, parts, {p.name: p.sha.hexdigest() for p in pieces})


def image_layout(path: Path) -> list[Partition]:
    """The image's partitions from its first sector: cards of its flavour have
    theirs at the same places.  Empty if it cannot be read now (the image is
    checked in full later)."""
    try:
        with (lzma.open if is_xz(path) else open)(path, "rb") as stream:
            return partition_table(stream.read(SECTOR)) or []
    except (OSError, lzma.LZMAError, EOFError):
        return []
