"""Reading the card's and the image's layout from raw bytes: the MBR
partition table, a FAT boot sector's label, an ext superblock (primary or
backup).  Pure functions of bytes: nothing here opens a file."""
from __future__ import annotations

import struct
from dataclasses import dataclass

from .common import SECTOR

EXT_RECOVER = 0x4               # ext4 incompat flag: the journal holds changes not yet in place


@dataclass(frozen=True)
class Partition:
    number: int
    start: int      # bytes
    size: int       # bytes

    @property
    def end(self) -> int:
        return self.start + self.size


def partition_table(sector0: bytes) -> list[Partition] | None:
    """The MBR's primary partitions, or None if SECTOR0 holds no MBR."""
    if len(sector0) < SECTOR or sector0[510:512] != b"\x55\xaa":
        return None
    if any(sector0[446 + 16 * i] not in (0x00, 0x80) for i in range(4)):
        return None             # a FAT boot sector, not a partition table
    return mbr_entries(sector0)


def mbr_entries(sector0: bytes) -> list[Partition]:
    """Whatever the four MBR entries in SECTOR0 point at, even with a damaged
    signature or status byte: where to look for the signs of a kiosk card."""
    if len(sector0) < SECTOR:
        return []
    parts = []
    for i in range(4):
        entry = sector0[446 + 16 * i: 462 + 16 * i]
        start, count = struct.unpack_from("<II", entry, 8)
        if entry[4] and start and count:
            parts.append(Partition(i + 1, start * SECTOR, count * SECTOR))
    return parts


def fat_label(boot_sector: bytes) -> str | None:
    """The volume label of a FAT12/16/32 boot sector, or None if it is not FAT."""
    if len(boot_sector) < SECTOR or boot_sector[510:512] != b"\x55\xaa":
        return None
    if struct.unpack_from("<H", boot_sector, 11)[0] not in (512, 1024, 2048, 4096):
        return None
    fat32 = struct.unpack_from("<H", boot_sector, 22)[0] == 0
    label_at, type_at, sig_at = (71, 82, 66) if fat32 else (43, 54, 38)
    if boot_sector[sig_at] != 0x29 or not boot_sector[type_at:type_at + 3] == b"FAT":
        return None
    return boot_sector[label_at:label_at + 11].decode("latin-1").strip()


@dataclass(frozen=True)
class ExtInfo:
    label: str
    block_size: int
    recovering: bool    # switched off while mounted: the journal must be replayed before reading


def ext_info(superblock: bytes) -> ExtInfo | None:
    """The ext2/3/4 superblock (the 1024 bytes at 1024 into the partition), or None."""
    if len(superblock) < 1024 or struct.unpack_from("<H", superblock, 56)[0] != 0xEF53:
        return None
    incompat = struct.unpack_from("<I", superblock, 96)[0]
    return ExtInfo(label=superblock[120:136].rstrip(b"\0").decode("latin-1"),
                   block_size=1024 << struct.unpack_from("<I", superblock, 24)[0],
                   recovering=bool(incompat & EXT_RECOVER))


def backup_superblock(read, start: int) -> tuple[int, ExtInfo] | None:
    """(block number for e2fsck -b, what it says) of a backup copy of the
    superblock of the ext filesystem at START, or None.  READ(offset, length)
    reads the disk.  Backups are where mke2fs puts them: at the start of block
    groups 1 and 3 (sparse_super), a group being 8 * block-size blocks, block
    0 being the boot block for 1 KiB blocks -- byte 8193 * 1024 for 1 KiB
    blocks, 32768 * 4096 for 4 KiB (what dumpe2fs lists as "Backup superblock")."""
    for block_size in (1024, 2048, 4096):
        per_group, first = 8 * block_size, (1 if block_size == 1024 else 0)
        for group in (1, 3):
            block = first + group * per_group
            superblock = read(start + block * block_size, 1024)
            info = ext_info(superblock)
            if (info and info.block_size == block_size
                    and struct.unpack_from("<I", superblock, 20)[0] == first
                    and struct.unpack_from("<I", superblock, 32)[0] == per_group
                    and struct.unpack_from("<H", superblock, 90)[0] == group):
                return block, info
    return None
