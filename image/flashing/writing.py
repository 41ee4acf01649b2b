"""Writing the card and proving it: the image's ranges (and the staged boot
partition) written through the descriptor that re-checked the card, then
everything written read back from the card and compared (sha256)."""
from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

from .common import CHUNK, EXIT_FAILED, EXIT_USAGE, Stop, human, pwrite_all
from .image_file import Image, Piece, image_chunks, pieces_for
from .target import Target, check_same_card


def open_for_writing(target: Target) -> int:
    # never O_TRUNC: a file target larger than the image keeps its length;
    # O_EXCL on a block device fails if anything (a mount) holds it;
    # read-write: the card is read again through this descriptor before writing
    flags = os.O_RDWR | os.O_CLOEXEC | (os.O_EXCL if target.block else 0)
    try:
        return os.open(target.path, flags)
    except OSError as exc:
        raise Stop(f"{target.path}: cannot open for writing: {exc.strerror}", EXIT_USAGE) from None


def stream_to_card(image: Image, fd: int, pieces: list[Piece], progress) -> int:
    """Write the image's PIECES to the card as the image streams past."""
    written, total = 0, sum(min(p.end, image.size) - p.start for p in pieces)
    try:
        for offset, chunk in image_chunks(image.path):
            for piece in pieces:
                hit = piece.feed(offset, chunk)
                if hit:
                    position, data = hit
                    pwrite_all(fd, data, position)
                    written += len(data)
            progress("writing", written, total)
    except Stop as exc:     # the image was fine a moment ago: the card is half written now
        raise Stop(f"{exc}; the card is half written: flash it again", EXIT_FAILED) from None
    for piece in pieces:
        if piece.sha.hexdigest() != image.digests[piece.name]:
            raise Stop(f"{image.path} changed while it was being written; flash the card again", EXIT_FAILED)
    return written


def copy_staged(staged: Path, fd: int, start: int) -> tuple[str, int]:
    sha, written = hashlib.sha256(), 0
    with open(staged, "rb") as source:
        while chunk := source.read(CHUNK):
            pwrite_all(fd, chunk, start + written)
            sha.update(chunk)
            written += len(chunk)
    return sha.hexdigest(), written


def read_back(path: Path, start: int, length: int, progress) -> str:
    """sha256 of what the card holds now -- from the card, not the page cache."""
    sha, done = hashlib.sha256(), 0
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)    # drop cached pages: read the card itself
        while done < length:
            chunk = os.pread(fd, min(CHUNK, length - done), start + done)
            if not chunk:
                break
            sha.update(chunk)
            done += len(chunk)
            progress("verifying", done, length)
    finally:
        os.close(fd)
    return sha.hexdigest() if done == length else "short"


def write_and_verify(image: Image, target: Target, staged: Path | None, progress) -> str:
    """Write the whole image, or (STAGED: the new boot partition, settings
    fixed already) the image's root and then STAGED as the boot partition."""
    pieces = [p for p in pieces_for(staged is not None, image.partitions) if not (staged and p.name == "boot")]
    expected = {p.name: (p.start, image.digests[p.name], min(p.end, image.size) - p.start) for p in pieces}
    fd = open_for_writing(target)
    try:
        check_same_card(target, fd)
        started = time.monotonic()
        try:
            written = stream_to_card(image, fd, pieces, progress)
            if staged:
                digest, size = copy_staged(staged, fd, image.partitions[0].start)
                expected["boot"] = (image.partitions[0].start, digest, size)
                written += size
            os.fsync(fd)
        except OSError as exc:
            raise Stop(f"writing {target.path} failed: {exc.strerror or exc}; flash the card again",
                       EXIT_FAILED) from None
    finally:
        os.close(fd)
    seconds = max(time.monotonic() - started, 1e-6)
    progress(None, 0, None)
    for name, (start, digest, length) in expected.items():
        try:
            again = read_back(target.path, start, length, progress)
        except OSError as exc:
            raise Stop(f"reading {target.path} back failed: {exc.strerror}; flash the card again",
                       EXIT_FAILED) from None
        if again != digest:
            raise Stop(f"{target.path}: what was written does not read back the same ({name}); "
                       f"the card may be failing: flash it again or use another card", EXIT_FAILED)
    progress(None, 0, None)
    return f"wrote {human(written)} in {seconds:.1f} s ({written / seconds / 1e6:.1f} MB/s), read back and verified"
