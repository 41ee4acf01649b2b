"""Which blocks of an ext2/3/4 filesystem hold something, as its block
bitmaps and group descriptors say (dumpe2fs).  A copy of the data
partition carrying these blocks is enough to replay its journal on the copy.

Read from the bitmaps, never by walking inodes: a card switched off in the
middle of writing may hold, in place, an inode that already points at an
extent block only the journal holds yet.  A tool that walks inodes (e2image
-r) stops there ("Corrupt extent header while iterating over inode N") and
the queue could not be counted; the bitmaps are only ever stale, and
whatever they miss the journal brings back."""
from __future__ import annotations

import os
import re
import subprocess

from .tools import Unreadable

Ranges = list[tuple[int, int]]      # [start, end) block numbers, sorted, not overlapping

_HEADER = {"Block count": "blocks", "First block": "first", "Blocks per group": "per_group",
           "Inodes per group": "inodes_per_group", "Inode size": "inode_size", "Block size": "block_size"}
_GROUP = re.compile(r"^Group (\d+): \(Blocks (\d+)-(\d+)\)")
_TABLE = re.compile(r"^\s+Inode table at (\d+)-(\d+)")
_UNUSED = re.compile(r", (\d+) unused inodes$")
_FREE = re.compile(r"^\s+Free blocks: ?(.*)$")


def used_blocks(device: str) -> tuple[int, Ranges]:
    """(block size, the blocks in use) of the filesystem on DEVICE (a path,
    ``?offset=`` allowed).  The part of each inode table past the inodes
    ever handed out (the group descriptor's unused count) is left out: on a
    grown card it is most of what the bitmaps mark, and nothing in it is read.
    Unreadable if dumpe2fs cannot list every group."""
    # dumpe2fs prints the groups even when a bitmap's checksum is off (exit
    # status 1), which a card cut off mid-write may well show: the listing,
    # checked to be whole, is what counts, not the status
    text, why = _dumpe2fs(device)
    header: dict[str, int] = {}
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name in _HEADER and value.strip().isdigit():
            header[_HEADER[name]] = int(value)
    if set(header) != set(_HEADER.values()):
        raise Unreadable(f"listing the data partition's block groups: {why}")
    groups, free, unread = _groups(text.splitlines())
    expected = -(-(header["blocks"] - header["first"]) // header["per_group"])
    if len(groups) != expected or len(free) != expected:
        raise Unreadable(f"listing the data partition's block groups: dumpe2fs listed {len(free)} "
                         f"of {expected} groups' free blocks ({why})")
    used = subtract([(start, end + 1) for start, end in groups], merge(sum(free, [])))
    used = merge([(0, header["first"] + 1)] + used)          # the boot block and superblock: always
    per_block = header["block_size"] // header["inode_size"]
    for (table_start, table_end), unused in unread:
        handed_out = -(-(header["inodes_per_group"] - unused) // per_block)
        used = subtract(used, [(table_start + handed_out, table_end + 1)])
    return header["block_size"], used


def _dumpe2fs(device: str) -> tuple[str, str]:
    """dumpe2fs's listing, and the last thing it said on stderr."""
    try:
        result = subprocess.run(["dumpe2fs", device], capture_output=True, text=True, errors="replace",
                                env=dict(os.environ, LC_ALL="C"))     # parsed: never translated
    except OSError as exc:
        raise Unreadable(f"listing the data partition's block groups: dumpe2fs: {exc.strerror}") from None
    said = [line for line in result.stderr.strip().splitlines() if not line.startswith("dumpe2fs 1.")]
    return result.stdout, (said[-1] if said else f"exit status {result.returncode}")


def _groups(lines: list[str]):
    """(group ranges, free ranges per group, (inode table, unused inodes)
    per group that counts its unused inodes) from dumpe2fs's listing."""
    groups, free, unread = [], [], []
    table = None
    for line in lines:
        if match := _GROUP.match(line):
            groups.append((int(match[2]), int(match[3])))
            table = None
        elif match := _TABLE.match(line):
            table = (int(match[1]), int(match[2]))
        elif (match := _UNUSED.search(line)) and table:
            unread.append((table, int(match[1])))
        elif match := _FREE.match(line):
            free.append(_parse_ranges(match[1]))
    return groups, free, unread


def _parse_ranges(text: str) -> Ranges:
    ranges = []
    for piece in filter(None, (p.strip() for p in text.split(","))):
        first, _, last = piece.partition("-")
        ranges.append((int(first), int(last or first) + 1))
    return ranges


def merge(ranges: Ranges) -> Ranges:
    out: Ranges = []
    for start, end in sorted(ranges):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        elif start < end:
            out.append((start, end))
    return out


def subtract(ranges: Ranges, holes: Ranges) -> Ranges:
    """RANGES less HOLES (both sorted and merged)."""
    out: Ranges = []
    holes = merge(holes)
    at = 0
    for start, end in ranges:
        while at < len(holes) and holes[at][1] <= start:
            at += 1
        probe = at
        while start < end:
            if probe >= len(holes) or holes[probe][0] >= end:
                out.append((start, end))
                break
            hole_start, hole_end = holes[probe]
            if hole_start > start:
                out.append((start, hole_start))
            start = max(start, hole_end)
            probe += 1
    return out
