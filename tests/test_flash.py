"""image/flash: updating a kiosk card keeps the payments waiting on it.

Small kiosk disk images are made here with the real tools (sfdisk, mkfs.vfat,
mtools, mkfs.ext4 -d), with a real encrypted queue made by the kiosk's own
code on the data partition; image/flash runs as a subprocess against them.
"""
from __future__ import annotations

import errno
import hashlib
import importlib
import json
import lzma
import os
import pty
import re
import select
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from conftest import ROOT, write_config
from kiosk.money import format_amount

FLASH = ROOT / "image" / "flash"
TOOLS = ("sfdisk", "mkfs.vfat", "mcopy", "mdir", "mdel", "mkfs.ext4", "debugfs", "dumpe2fs", "e2image", "e2fsck",
         "blkid")
# the e2fsprogs and fdisk tools live in sbin, which a user's PATH may lack
PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
MISSING = [tool for tool in TOOLS if shutil.which(tool, path=PATH) is None]
pytestmark = pytest.mark.skipif(bool(MISSING), reason=f"needs {', '.join(MISSING)} "
                                                      "(apt-get install mtools dosfstools e2fsprogs fdisk)")

MiB = 1 << 20
BOOT_START, BOOT_MIB, ROOT_START = 4, 8, 12
STRIPE_SECRET = "sk_test_" + "NEVERSHOWN" * 3
SAMPLE_SETTINGS = b'# sample\n[kiosk]\nid = "market-stall-1"\n'
VENDOR_APPLIED = b'# Applied 2026-11-01 09:00 UTC.\n[kiosk]\nid = "cheese-stall"\n[stripe]\nsecret_key = ""\n'


# -- building disks ------------------------------------------------------------------

def sh(*args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], check=True, capture_output=True,
                          env=dict(os.environ, PATH=PATH), **kwargs)


def make_disk(path: Path, *, boot: dict[str, bytes], root: dict[str, bytes], data: Path,
              root_mib: int = 16, data_mib: int = 16, data_label: str = "KIOSKDATA",
              mirror: Path | None = None, mirror_mib: int = 8) -> Path:
    """An MBR disk like image/build makes: FAT boot, ext4 root, ext4 data
    (DATA: the folder to make it from, or a data partition already made);
    with MIRROR (a folder), partition 4 as a card's first boot makes it:
    ext4 labelled KIOSKMIRROR, after the data partition."""
    parts = path.with_name(path.name + ".parts")
    parts.mkdir()
    boot_img = parts / "boot.img"
    # FAT12: too small for FAT32 here (the real boot partition is FAT32; see test_the_image_checks_agree_with_blkid)
    sh("mkfs.vfat", "-n", "KIOSKBOOT", "-C", boot_img, BOOT_MIB * 1024)
    for name, content in boot.items():
        (parts / name).write_bytes(content)
        sh("mcopy", "-i", boot_img, parts / name, f"::/{name}")
    tree = parts / "root"
    for name, content in root.items():
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        (tree / name).write_bytes(content)
    sh("mkfs.ext4", "-q", "-F", "-L", "KIOSKROOT", "-m", "0", "-d", tree, parts / "root.img", f"{root_mib}M")
    if data.is_dir():
        sh("mkfs.ext4", "-q", "-F", "-L", data_label, "-m", "0", "-d", data, parts / "data.img", f"{data_mib}M")
    else:
        shutil.copyfile(data, parts / "data.img")       # a data partition made already
    data_start = ROOT_START + root_mib
    mirror_start = data_start + data_mib
    with open(path, "wb") as disk:
        disk.truncate((mirror_start + (mirror_mib if mirror else 0)) * MiB)
    table = (f"label: dos\nunit: sectors\n"
             f"start={BOOT_START * 2048}, size={BOOT_MIB * 2048}, type=c, bootable\n"
             f"start={ROOT_START * 2048}, size={root_mib * 2048}, type=83\n"
             f"start={data_start * 2048}, size={data_mib * 2048}, type=83\n")
    places = [("boot.img", BOOT_START), ("root.img", ROOT_START), ("data.img", data_start)]
    if mirror:
        sh("mkfs.ext4", "-q", "-F", "-L", "KIOSKMIRROR", "-m", "0", "-d", mirror, parts / "mirror.img",
           f"{mirror_mib}M")
        table += f"start={mirror_start * 2048}, size={mirror_mib * 2048}, type=83\n"
        places.append(("mirror.img", mirror_start))
    sh("sfdisk", "--quiet", path, input=table.encode())
    with open(path, "r+b") as disk:
        for name, start in places:
            disk.seek(start * MiB)
            disk.write((parts / name).read_bytes())
    shutil.rmtree(parts)
    return path


def empty_data(where: Path) -> Path:
    """The data partition of a new image: kiosk/ and system/, nothing in them."""
    (where / "kiosk").mkdir(mode=0o700, parents=True)
    (where / "system").mkdir()
    return where


def make_image(path: Path, version: str, root_mib: int = 16) -> Path:
    data = empty_data(path.with_name(path.name + ".data"))
    image_id = f"KIOSK_IMAGE_NAME=kiosk-{version}-ci\nKIOSK_VERSION={version}\n".encode()
    return make_disk(path, root_mib=root_mib, data=data,
                     boot={"kiosk-image-id.txt": image_id, "kiosk-settings.toml": SAMPLE_SETTINGS,
                           "wifi.nmconnection.sample": b"[connection]\n"},
                     root={"etc/kiosk-image-id": image_id, f"etc/marker-{version}": b"new root\n"})


def queue_config(where: Path, data_dir: Path, api_base: str = "http://127.0.0.1:9",
                 mirror: Path | None = None) -> Path:
    where.mkdir(exist_ok=True)
    storage = {"path": str(data_dir), **({"mirror": str(mirror)} if mirror else {})}
    return write_config(where, api_base, storage=storage,
                        kiosk={"id": "cheese-stall", "currency": "eur", "offline_behavior": "force_offline"},
                        limits__currencies__jpy={"per_transaction": 20000, "total": 100000})


def fill_queue(data_dir: Path, sales: list[tuple[int, str]], settle_with=None, mirror: Path | None = None) -> None:
    """A real queue, made by the kiosk's own code: offline sales, forwarded
    to SETTLE_WITH (a FakeStripe) if given; kept on MIRROR too if given."""
    from kiosk.boot import open_kiosk
    api_base = settle_with.url if settle_with else "http://127.0.0.1:9"
    config = queue_config(data_dir.parent / "config", data_dir, api_base, mirror)
    kiosk = open_kiosk(config, create=True)
    try:
        for amount, currency in sales:
            result = kiosk.take_sale(amount, currency, behavior="force_offline", confirm=lambda offer: True,
                                     card="visa")
            assert result.ok, result.message
        if settle_with:
            report = kiosk.forward(force=True)
            assert report.reached and report.pending == 0, report.as_dict()
    finally:
        kiosk.close()


def make_card(path: Path, sales=(), settle_with=None, boot_settings: dict | None = None,
              damage: bool = False, version: str = "0.1.0", mirrored: bool = False) -> Path:
    """A kiosk card that has been in use: settings applied, a queue, a Stripe key;
    MIRRORED: its queue's second copy on partition 4 (a card from an image that makes one)."""
    data = empty_data(path.with_name(path.name + ".data"))
    mirror = path.with_name(path.name + ".mirror") if mirrored else None
    if mirror:
        (mirror / "kiosk").mkdir(mode=0o700, parents=True)
    fill_queue(data / "kiosk", list(sales), settle_with, mirror=mirror / "kiosk" if mirror else None)
    key = data / "kiosk" / "stripe.key"
    key.write_text(STRIPE_SECRET + "\n")
    key.chmod(0o600)
    (data / "system" / "config.toml").write_text('[kiosk]\nid = "cheese-stall"\n')
    (data / "system" / "hostname").write_text("cheese\n")
    if damage:
        live = data / "kiosk" / "live.kdb"
        raw = bytearray(live.read_bytes())
        for at in range(len(raw) - 40, len(raw) - 30):
            raw[at] ^= 0x5A
        live.write_bytes(bytes(raw))
    image_id = f"KIOSK_VERSION={version}\n".encode()
    settings = {"kiosk-settings.applied.toml": VENDOR_APPLIED} if boot_settings is None else boot_settings
    return make_disk(path, data=data, boot={"kiosk-image-id.txt": image_id, **settings},
                     root={"etc/kiosk-image-id": image_id, f"etc/marker-{version}": b"old root\n"},
                     mirror=mirror)


def switched_off_during_a_sale(where: Path, torn: bool = False) -> Path:
    """A data partition as a kiosk switched off without shutting down leaves
    it (mounted data=journal): the queue in place holds no payment, the
    newest sale is only in the ext4 journal, not yet replayed.  TORN: the
    power went while the journal's blocks were being laid in place (a
    checkpoint cut short): the group descriptors and an inode already are,
    and that inode -- a log grown in pieces, with an extent block -- points
    at an extent block still only in the journal."""
    from kiosk.boot import open_kiosk
    data = empty_data(where / "data")
    fill_queue(data / "kiosk", [])
    before, after = where / "before.img", where / "after.img"
    sh("mkfs.ext4", "-q", "-F", "-L", "KIOSKDATA", "-m", "0", "-b", "1024", "-d", data, before, "16M")
    kiosk = open_kiosk(queue_config(where / "config", data / "kiosk"))
    try:
        assert kiosk.take_sale(1250, "eur", behavior="force_offline", confirm=lambda offer: True, card="visa").ok
    finally:
        kiosk.close()
    # the same filesystem after the sale ...
    shutil.copyfile(before, after)
    script = "".join(f"rm /kiosk/{name}\nwrite {data}/kiosk/{name} /kiosk/{name}\nsif /kiosk/{name} mode 0100600\n"
                     for name in ("live.kdb", "history.sqlite"))
    if torn:
        log = where / "pieces.log"              # 12 pieces with holes between: more than an inode holds
        with open(log, "wb") as out:
            for piece in range(12):
                out.seek(2 * piece * 1024)
                out.write(b"L" * 1024)
        script += f"write {log} /system/pieces.log\n"
    (where / "sale.debugfs").write_text(script)
    sh("debugfs", "-w", "-f", where / "sale.debugfs", after)
    # ... goes into BEFORE's journal only: every block that changed but the superblock
    old, new = before.read_bytes(), after.read_bytes()
    changed = [n for n in range(2, len(old) // 1024) if old[n * 1024:(n + 1) * 1024] != new[n * 1024:(n + 1) * 1024]]
    (where / "blocks.bin").write_bytes(b"".join(new[n * 1024:(n + 1) * 1024] for n in changed))
    (where / "journal.debugfs").write_text(f"jo\njw -b {','.join(map(str, changed))} {where / 'blocks.bin'}\njc\n")
    sh("debugfs", "-w", "-f", where / "journal.debugfs", before)
    if torn:
        located = sh("debugfs", "-R", "imap /system/pieces.log", after, text=True).stdout
        inode_block = int(re.search(r"located at block (\d+)", located)[1])
        extent_block = int(re.search(r"^ 0/ 1 .*?(\d+)\s+\d+\s*$", sh("debugfs", "-R", "ex /system/pieces.log",
                                                                    after, text=True).stdout, re.M)[1])
        assert {2, inode_block, extent_block} <= set(changed)
        with open(before, "r+b") as card:
            for block in (2, inode_block):      # laid in place; the extent block is not
                card.seek(block * 1024)
                card.write(new[block * 1024:(block + 1) * 1024])
    return before


# -- reading disks ---------------------------------------------------------------------

def part_offset(disk: Path, number: int) -> int:
    table = json.loads(sh("sfdisk", "--json", disk).stdout)["partitiontable"]
    return table["partitions"][number - 1]["start"] * 512


def byte_range(disk: Path, start: int, end: int | None = None) -> bytes:
    with open(disk, "rb") as handle:
        handle.seek(start)
        return handle.read(-1 if end is None else end - start)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def boot_files(disk: Path) -> dict[str, bytes]:
    image = f"{disk}@@{part_offset(disk, 1)}"
    names = [line[3:] for line in sh("mdir", "-b", "-i", image, "::/", text=True).stdout.splitlines()]
    return {name: sh("mcopy", "-n", "-i", image, f"::/{name}", "-").stdout for name in names}


def ext_cat(disk: Path, number: int, path: str) -> str:
    result = sh("debugfs", "-R", f"cat {path}", f"{disk}?offset={part_offset(disk, number)}", text=True)
    assert "not found" not in result.stderr, result.stderr
    return result.stdout


def ext_label(disk: Path, number: int) -> str:
    return sh("blkid", "--probe", "--offset", part_offset(disk, number), "-s", "LABEL", "-o", "value",
              disk, text=True).stdout.strip()


def queue_on(disk: Path, where: Path) -> list[dict]:
    """Dump the card's queue files again and list them with `kiosk queue`."""
    data_dir = where / "dumped"
    data_dir.mkdir(mode=0o700, parents=True)
    device = f"{disk}?offset={part_offset(disk, 3)}"
    for name in ("kiosk.key", "live.kdb", "history.sqlite"):
        sh("debugfs", "-R", f"dump -p /kiosk/{name} {name}", device, cwd=data_dir)
    config = queue_config(where / "dumped-config", data_dir)
    result = subprocess.run([sys.executable, "-m", "kiosk.cli", "queue", "--all", "--json", "--config", str(config)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def flash(*args) -> subprocess.CompletedProcess:
    """image/flash as a script runs it: no terminal."""
    return subprocess.run([sys.executable, str(FLASH), *map(str, args)], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=120, env=dict(os.environ, PATH=PATH))


def flash_answering(*args, before_answer, answer: bytes) -> subprocess.CompletedProcess:
    """image/flash on a terminal: waits for its question, runs BEFORE_ANSWER,
    then types ANSWER."""
    terminal, keyboard = pty.openpty()
    try:
        proc = subprocess.Popen([sys.executable, str(FLASH), *map(str, args)], stdin=keyboard,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ, PATH=PATH))
        err, deadline = b"", time.monotonic() + 60
        while not (b"Type " in err and err.endswith(b": ")) and time.monotonic() < deadline:
            if select.select([proc.stderr], [], [], 1)[0]:
                chunk = os.read(proc.stderr.fileno(), 4096)
                if not chunk:
                    break
                err += chunk
        if b"Type " in err:
            before_answer()
        os.write(terminal, answer)
        out, rest = proc.communicate(timeout=60)
    finally:
        os.close(terminal)
        os.close(keyboard)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out.decode(), (err + rest).decode())


def fs_type(path: Path) -> str:
    return sh("stat", "-f", "-c", "%T", path, text=True).stdout.strip()


def load_flash_module(part: str = "cli"):
    """A part of image/flash's package (image/flashing/), imported as image/flash imports it."""
    if str(FLASH.parent) not in sys.path:
        sys.path.insert(0, str(FLASH.parent))
    return importlib.import_module(f"flashing.{part}")


def flash_in_process(module, monkeypatch, capsys, *args) -> subprocess.CompletedProcess:
    """image/flash's main() in this process, to watch or fake what it cannot be made to do for real."""
    monkeypatch.setenv("PATH", PATH)
    capsys.readouterr()
    code = module.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out, err)


# -- fixtures: built once, copied per test -------------------------------------------

PENDING_SALES = [(1250, "eur"), (500, "jpy"), (300, "eur")]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    from kiosk.testing.fake_stripe import FakeStripe
    where = tmp_path_factory.mktemp("flash")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STRIPE_API_KEY", "sk_test_" + "k1osk" * 5)
        with FakeStripe() as peer:
            cards = {
                "pending": make_card(where / "pending" / "card.img", PENDING_SALES),
                "settled": make_card(where / "settled" / "card.img", [(800, "eur"), (900, "eur")], settle_with=peer),
                "fresh": make_card(where / "fresh" / "card.img"),
                "damaged": make_card(where / "damaged" / "card.img", [(700, "eur")], damage=True),
                "mirrored": make_card(where / "mirrored" / "card.img", PENDING_SALES, mirrored=True),
            }
    new = make_image(where / "new" / "kiosk-0.2.0-ci.img", "0.2.0")
    xz = new.with_name(new.name + ".xz")
    xz.write_bytes(lzma.compress(new.read_bytes(), preset=1))
    bigger = make_image(where / "bigger" / "kiosk-0.3.0-ci.img", "0.3.0", root_mib=20)
    return {"where": where, "new": new, "xz": xz, "bigger": bigger, **cards}


@pytest.fixture
def card(built, tmp_path):
    """A copy of one of the built cards: ``card("pending")``."""
    def copy(kind: str) -> Path:
        target = tmp_path / f"{kind}-card.img"
        shutil.copyfile(built[kind], target)
        return target
    return copy


# -- keeping the data partition ---------------------------------------------------------

def test_update_keeps_the_data_partition_and_its_payments(built, card, tmp_path):
    target = card("pending")
    before = target.read_bytes()
    before_ids = sorted(p["id"] for p in queue_on(target, tmp_path / "before"))
    data_at = part_offset(target, 3)

    result = flash("--yes", built["new"], target)

    assert result.returncode == 0, result.stderr
    after = target.read_bytes()
    assert after[data_at:] == before[data_at:]                      # the data partition, byte for byte
    assert after[:BOOT_START * MiB] == before[:BOOT_START * MiB]    # the partition table too
    payments = queue_on(target, tmp_path / "after")
    assert sorted(p["id"] for p in payments) == before_ids
    assert {p["state"] for p in payments} == {"pending"}
    # boot and root are the new image's
    assert b"KIOSK_VERSION=0.2.0" in boot_files(target)["kiosk-image-id.txt"]
    assert "KIOSK_VERSION=0.2.0" in ext_cat(target, 2, "/etc/kiosk-image-id")
    assert ext_cat(target, 2, "/etc/marker-0.2.0") == "new root\n"
    assert [ext_label(target, n) for n in (2, 3)] == ["KIOSKROOT", "KIOSKDATA"]
    # what was kept, in the vendor's money
    out = result.stdout
    assert "3 payments" in out
    assert format_amount(1550, "eur") in out and format_amount(500, "jpy") in out
    assert "verified" in out and "MB/s" in out
    assert STRIPE_SECRET not in out + result.stderr and "4242" not in out + result.stderr


def ext_bytes(disk: Path, number: int, path: str, where: Path) -> bytes:
    where.mkdir(parents=True, exist_ok=True)
    out = where / f"p{number}-{Path(path).name}"
    sh("debugfs", "-R", f"dump -p {path} {out}", f"{disk}?offset={part_offset(disk, number)}")
    return out.read_bytes()


def test_update_keeps_the_mirror_partition_and_its_copy_of_the_queue(built, card, tmp_path):
    """A card from an image that makes the mirror partition at first boot (4,
    after the data partition): an update writes boot and root only, so the
    table keeps partition 4 and the mirror its copy, byte for byte."""
    target = card("mirrored")
    table = lambda: json.loads(sh("sfdisk", "--json", target).stdout)["partitiontable"]["partitions"]  # noqa: E731
    before, table_before = target.read_bytes(), table()
    assert len(table_before) == 4 and ext_label(target, 4) == "KIOSKMIRROR"
    copy_before = ext_bytes(target, 4, "/kiosk/live.kdb", tmp_path / "before")
    assert copy_before == ext_bytes(target, 3, "/kiosk/live.kdb", tmp_path / "before"), "a mirrored card"
    data_at = part_offset(target, 3)

    result = flash("--keep-data", "--yes", built["new"], target)

    assert result.returncode == 0, result.stderr
    after = target.read_bytes()
    assert table() == table_before
    assert after[:BOOT_START * MiB] == before[:BOOT_START * MiB]      # the partition table, 4 entries
    assert after[data_at:] == before[data_at:]                          # the data and mirror partitions
    assert [ext_label(target, n) for n in (2, 3, 4)] == ["KIOSKROOT", "KIOSKDATA", "KIOSKMIRROR"]
    assert ext_bytes(target, 4, "/kiosk/live.kdb", tmp_path / "after") == copy_before
    assert ext_bytes(target, 4, "/kiosk/kiosk.key", tmp_path / "after") == \
        ext_bytes(target, 3, "/kiosk/kiosk.key", tmp_path / "after-data")
    assert sorted(p["state"] for p in queue_on(target, tmp_path / "queue")) == ["pending"] * 3
    assert "KIOSK_VERSION=0.2.0" in ext_cat(target, 2, "/etc/kiosk-image-id")


def test_update_carries_the_applied_settings_and_drops_the_sample(built, card):
    target = card("pending")
    assert flash("--yes", built["new"], target).returncode == 0
    files = boot_files(target)
    assert files["kiosk-settings.applied.toml"] == VENDOR_APPLIED
    assert "kiosk-settings.toml" not in files                   # the sample would replace the vendor's settings
    assert "wifi.nmconnection.sample" in files                  # the rest of the new boot partition is there


def test_update_carries_settings_and_wifi_not_yet_applied(built, tmp_path):
    vendor = b'[kiosk]\nid = "bakery"\n[stripe]\nsecret_key = ""\n'
    wifi = b"[connection]\nid=market\ntype=wifi\n[wifi]\nssid=market\n"
    target = make_card(tmp_path / "card.img",
                       boot_settings={"kiosk-settings.toml": vendor, "market.nmconnection": wifi})
    result = flash("--yes", built["new"], target)
    assert result.returncode == 0, result.stderr
    files = boot_files(target)
    assert files["kiosk-settings.toml"] == vendor and files["market.nmconnection"] == wifi
    assert "kiosk-settings.applied.toml" not in files


def test_xz_image_updates_the_card(built, card):
    target = card("pending")
    data_at = part_offset(target, 3)
    data_before = byte_range(target, data_at)
    result = flash("--keep-data", "--yes", built["xz"], target)
    assert result.returncode == 0, result.stderr
    assert byte_range(target, data_at) == data_before
    assert b"KIOSK_VERSION=0.2.0" in boot_files(target)["kiosk-image-id.txt"]


def test_a_damaged_queue_is_kept_untouched_by_an_update(built, card):
    target = card("damaged")
    data_at = part_offset(target, 3)
    data_before = byte_range(target, data_at)
    result = flash("--yes", built["new"], target)
    assert result.returncode == 0, result.stderr
    assert byte_range(target, data_at) == data_before
    assert "could not be read" in result.stdout and "live.kdb" in result.stderr
    assert result.stderr.startswith("flash: warning: ")


def test_image_whose_root_does_not_fit_the_card_is_refused(built, card):
    target = card("pending")
    before = sha(target)
    result = flash("--yes", built["bigger"], target)
    assert result.returncode == 3
    assert result.stderr.startswith("flash: ") and result.stderr.count("\n") == 1
    assert "--erase" in result.stderr and "root" in result.stderr
    assert sha(target) == before


def test_the_newest_sales_still_in_the_journal_are_counted(built, tmp_path):
    data = switched_off_during_a_sale(tmp_path / "parts")
    image_id = b"KIOSK_VERSION=0.1.0\n"
    target = make_disk(tmp_path / "card.img", data=data, boot={"kiosk-image-id.txt": image_id},
                       root={"etc/kiosk-image-id": image_id})
    # read as it lies on the card, the queue looks empty ...
    assert queue_on(target, tmp_path / "as-is") == []
    before = sha(target)
    # ... but erasing would lose the sale in the journal
    refused = flash("--erase", "--yes", built["new"], target)
    assert refused.returncode == 3, refused.stderr
    assert "1 payment" in refused.stderr and format_amount(1250, "eur") in refused.stderr
    assert sha(target) == before                    # and the card was not written to, not even replayed
    kept = flash("--yes", built["new"], target)
    assert kept.returncode == 0, kept.stderr
    assert "1 payment" in kept.stdout and format_amount(1250, "eur") in kept.stdout


def test_a_card_cut_off_while_its_journal_was_laid_in_place_is_read_once_replayed(built, tmp_path):
    data = switched_off_during_a_sale(tmp_path / "parts", torn=True)
    image_id = b"KIOSK_VERSION=0.1.0\n"
    target = make_disk(tmp_path / "card.img", data=data, boot={"kiosk-image-id.txt": image_id},
                       root={"etc/kiosk-image-id": image_id})
    # as it lies on the card, an inode points at an extent block only the journal holds
    walked = subprocess.run(["e2image", "-r", "-o", str(part_offset(target, 3)), target, tmp_path / "walked.img"], capture_output=True, text=True,
                            env=dict(os.environ, PATH=PATH, LC_ALL="C"))
    assert walked.returncode != 0 and "Corrupt extent header" in walked.stderr, walked.stderr
    before = sha(target)
    refused = flash("--erase", "--yes", built["new"], target)
    assert refused.returncode == 3, refused.stderr
    assert "1 payment" in refused.stderr and format_amount(1250, "eur") in refused.stderr
    assert sha(target) == before
    kept = flash("--yes", built["new"], target)
    assert kept.returncode == 0, kept.stderr
    assert "1 payment" in kept.stdout and format_amount(1250, "eur") in kept.stdout


# -- erasing ---------------------------------------------------------------------------

def test_erase_is_refused_while_payments_wait(built, card):
    target = card("pending")
    before = sha(target)
    result = flash("--erase", "--yes", built["new"], target)
    assert result.returncode == 3
    assert sha(target) == before
    err = result.stderr
    assert err.startswith("flash: refusing to erase") and err.count("\n") == 1
    assert "3 payments" in err and format_amount(1550, "eur") in err and format_amount(500, "jpy") in err
    assert "Sync now" in err and "--keep-data" in err
    assert STRIPE_SECRET not in err + result.stdout


def test_erase_is_refused_when_the_queue_cannot_be_read(built, card):
    target = card("damaged")
    before = sha(target)
    result = flash("--erase", "--yes", built["xz"], target)
    assert result.returncode == 3
    assert sha(target) == before
    assert result.stderr.startswith("flash: refusing to erase") and "cannot be read" in result.stderr
    assert "live.kdb" in result.stderr and result.stderr.count("\n") == 1


@pytest.mark.parametrize("kind", ["settled", "fresh"])
def test_erase_is_allowed_once_nothing_is_pending(built, card, kind):
    target = card(kind)
    image = built["new"].read_bytes()
    result = flash("--erase", "--yes", built["xz"], target)
    assert result.returncode == 0, result.stderr
    written = target.read_bytes()
    assert written[:len(image)] == image
    assert "verified" in result.stdout


def test_erase_grows_a_smaller_file_and_never_shrinks_a_larger_one(built, tmp_path):
    image = built["new"].read_bytes()
    small, large = tmp_path / "small.img", tmp_path / "large.img"
    small.write_bytes(b"\1" * MiB)
    large.write_bytes(b"\2" * (len(image) + 3 * MiB))
    for target in (small, large):
        result = flash("--erase", "--yes", built["new"], target)
        assert result.returncode == 0, result.stderr
        assert target.read_bytes()[:len(image)] == image
    assert small.stat().st_size == len(image)
    assert large.stat().st_size == len(image) + 3 * MiB


def test_a_blank_target_is_written_whole_without_asking_for_erase(built, tmp_path):
    target = tmp_path / "blank.img"
    target.write_bytes(b"")
    result = flash("--yes", built["new"], target)
    assert result.returncode == 0, result.stderr
    assert target.read_bytes() == built["new"].read_bytes()
    again = flash("--keep-data", "--yes", built["new"], target)
    assert again.returncode == 0, again.stderr      # a kiosk card now, never started: nothing to count
    assert "no payment queue yet" in again.stdout
    other = tmp_path / "other.img"
    other.write_bytes(b"\0" * MiB)
    assert flash("--keep-data", "--yes", built["new"], other).returncode == 2


# -- the storage plugin says which files hold payments ------------------------------------

def card_naming_storage(path: Path, config: str, sales=(), extra: dict[str, bytes] | None = None) -> Path:
    """A kiosk card whose settings on the data partition (/system/config.toml) are CONFIG."""
    data = empty_data(path.with_name(path.name + ".data"))
    fill_queue(data / "kiosk", list(sales))
    (data / "kiosk" / "stripe.key").write_text(STRIPE_SECRET + "\n")
    for name, content in (extra or {}).items():
        (data / "kiosk" / name).write_bytes(content)
    (data / "system" / "config.toml").write_text(config)
    image_id = b"KIOSK_VERSION=0.1.0\n"
    return make_disk(path, data=data, root={"etc/kiosk-image-id": image_id},
                     boot={"kiosk-image-id.txt": image_id, "kiosk-settings.applied.toml": VENDOR_APPLIED})


LEDGER_FILES = ["kiosk.key", "live.kdb", "history.sqlite", "ledger.txt"]


def test_the_files_the_cards_storage_plugin_names_are_the_ones_read(built, card, tmp_path, monkeypatch, capsys):
    site = tmp_path / "site"            # a third-party storage plugin, installed as pip would
    site.mkdir()
    (site / "ledger_store.py").write_text(textwrap.dedent(f"""
        from kiosk import hookimpl
        from kiosk_builtins.tinydb_store import plugin as tinydb

        @hookimpl
        def kiosk_storage_files(settings):
            return {LEDGER_FILES!r}

        @hookimpl
        def kiosk_open_storage(settings, data_dir, create):
            return tinydb.kiosk_open_storage(settings={{"storage.tinydb": {{"compact_every": 2000}}}},
                                             data_dir=data_dir, create=create)
    """))
    info = site / "ledger_store-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: ledger_store\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[kiosk]\nledger = ledger_store\n")
    monkeypatch.syspath_prepend(str(site))          # for image/flash, and for the `kiosk queue` it runs
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])))
    module, card_queue = load_flash_module(), load_flash_module("card_queue")
    copied, real_list = [], card_queue.list_payments

    def watched(data_dir, work, storage):
        copied.append((storage, sorted(path.name for path in data_dir.iterdir())))
        return real_list(data_dir, work, storage)
    monkeypatch.setattr(card_queue, "list_payments", watched)

    target = card_naming_storage(tmp_path / "ledger" / "card.img", '[kiosk]\nid = "cheese-stall"\n\n'
                                 '[storage]\nuse = "ledger"\npath = "/data/kiosk"\n', PENDING_SALES,
                                 extra={"ledger.txt": b"3 sales\n", "notes.txt": b"not the plugin's\n"})
    before = sha(target)
    result = flash_in_process(module, monkeypatch, capsys, "--erase", "--yes", built["new"], target)
    assert result.returncode == 3, result.stderr
    assert result.stderr.startswith("flash: refusing to erase: 3 payments") and sha(target) == before
    assert copied == [("ledger", sorted(LEDGER_FILES))]      # not notes.txt, never stripe.key
    # a card whose settings name no storage plugin: the kiosk's default, tinydb, and its files
    result = flash_in_process(module, monkeypatch, capsys, "--erase", "--yes", built["new"], card("pending"))
    assert result.returncode == 3, result.stderr
    assert copied[1] == ("tinydb", sorted(["kiosk.key", "live.kdb", "history.sqlite"]))
    assert STRIPE_SECRET not in result.stdout + result.stderr


@pytest.mark.parametrize("config, code, words", [
    ('[storage]\nuse = "nosuch"\n', 2, "flash: cannot ask the card's storage plugin 'nosuch' which files"),
    ('[storage\nuse = "tinydb"\n', 3, "flash: refusing to erase: the payment queue on"),
])
def test_a_card_whose_storage_plugin_cannot_be_asked_is_not_erased(built, tmp_path, config, code, words):
    target = card_naming_storage(tmp_path / "card.img", config, [(1250, "eur")])
    before = sha(target)
    result = flash("--erase", "--yes", built["new"], target)
    assert result.returncode == code, result.stderr
    assert result.stderr.startswith(words) and result.stderr.count("\n") == 1
    assert ("no storage plugin named 'nosuch'" if code == 2 else "config.toml") in result.stderr
    assert sha(target) == before


# -- a damaged kiosk card is never written ------------------------------------------------

def damage_card(target: Path, how: str) -> None:
    """What a power cut, a bad reader or a careless tool leaves: the card's
    queue is intact, but where it is can no longer be read at a glance."""
    data_at = part_offset(target, 3)
    with open(target, "r+b") as disk:
        if how in ("superblock magic", "only a backup superblock"):
            disk.seek(data_at + 1024 + 56)          # the ext4 magic in the primary superblock
            disk.write(b"\0\0")
        if how == "only a backup superblock":       # and no label on partitions 1 and 2 either
            disk.seek(BOOT_START * MiB)
            disk.write(b"\0" * 512)
            disk.seek(ROOT_START * MiB + 1024)
            disk.write(b"\0" * 1024)
        if how == "MBR status byte":
            disk.seek(446 + 16)                     # partition 2's entry: neither 0x00 nor 0x80
            disk.write(b"\x12")
        if how == "partition table wiped":
            disk.seek(0)
            disk.write(b"\0" * 512)


@pytest.mark.parametrize("how", ["superblock magic", "MBR status byte", "only a backup superblock",
                                 "partition table wiped"])
def test_a_damaged_kiosk_card_is_never_written(built, card, how):
    target = card("pending")
    damage_card(target, how)
    before = sha(target)
    for mode in ([], ["--erase"], ["--keep-data"]):
        result = flash(*mode, "--yes", built["new"], target)
        assert result.returncode == 3, (mode, result.stderr)
        err = result.stderr
        assert err.startswith("flash: refusing to write") and err.count("\n") == 1
        assert "looks like a kiosk card" in err and "e2fsck" in err and "Sync now" in err
        assert sha(target) == before
    if how == "superblock magic":
        assert "backup is intact at block 8193" in err
    if how == "partition table wiped":
        assert "partition table is damaged" in err and "the image's partition 1" in err


def test_a_third_partition_with_any_ext_filesystem_is_not_erased_blindly(built, tmp_path):
    other = make_disk(tmp_path / "other.img", boot={}, root={"x": b"x"},
                      data=empty_data(tmp_path / "other-data"), data_label="STUFF")
    with open(other, "r+b") as disk:            # no kiosk label on partitions 1 and 2
        disk.seek(BOOT_START * MiB)
        disk.write(b"\0" * 512)
        disk.seek(ROOT_START * MiB + 1024)
        disk.write(b"\0" * 1024)
    before = sha(other)
    result = flash("--erase", "--yes", built["new"], other)
    assert result.returncode == 3 and "labelled 'STUFF'" in result.stderr
    assert sha(other) == before


def test_range_arithmetic_agrees_with_sets():
    ext_usage = load_flash_module("ext_usage")
    import random
    rng = random.Random(7)

    def blocks(ranges):
        return {block for start, end in ranges for block in range(start, end)}
    for _ in range(300):
        pieces = [(a, a + rng.randrange(0, 9)) for a in (rng.randrange(0, 60) for _ in range(rng.randrange(0, 6)))]
        holes = [(a, a + rng.randrange(0, 9)) for a in (rng.randrange(0, 60) for _ in range(rng.randrange(0, 6)))]
        merged = ext_usage.merge(pieces)
        assert blocks(merged) == blocks(pieces)
        assert all(end < start for (_, end), (start, _) in zip(merged, merged[1:]))
        assert blocks(ext_usage.subtract(merged, holes)) == blocks(pieces) - blocks(holes)


@pytest.mark.parametrize("block_size", [1024, 4096])
def test_the_blocks_in_use_carry_everything_a_full_check_reads(tmp_path, block_size):
    """A copy holding only the blocks used_blocks names is the whole
    filesystem to e2fsck -f: every file, folder, the journal; the unused
    parts of the inode tables (most of what the bitmaps mark) are left out."""
    ext_usage = load_flash_module("ext_usage")
    data = empty_data(tmp_path / "data")
    (data / "kiosk" / "history.sqlite").write_bytes(os.urandom(300_000))
    for n in range(40):
        (data / "system" / f"pairing-{n}").write_bytes(os.urandom(100 + 37 * n))
    fs = tmp_path / "data.img"
    sh("mkfs.ext4", "-q", "-F", "-b", block_size, "-d", data, fs, "64M")
    got_size, used = ext_usage.used_blocks(str(fs))
    assert got_size == block_size
    copy = tmp_path / "copy.img"
    raw = fs.read_bytes()
    with open(copy, "wb") as out:
        out.truncate(len(raw))
        for start, end in used:
            out.seek(start * block_size)
            out.write(raw[start * block_size:end * block_size])
    sh("e2fsck", "-fn", copy)                  # exit status 0: nothing missing, nothing wrong
    assert sh("debugfs", "-R", "cat /kiosk/history.sqlite", copy).stdout == (data / "kiosk" / "history.sqlite").read_bytes()
    listed = subprocess.run(["dumpe2fs", "-h", fs], capture_output=True, text=True, check=True,
                            env=dict(os.environ, PATH=PATH, LC_ALL="C")).stdout
    count, free = (int(re.search(rf"^{name}:\s+(\d+)", listed, re.M)[1]) for name in ("Block count", "Free blocks"))
    in_use = sum(end - start for start, end in used)
    assert in_use < (count - free) * 0.8, (in_use, count - free)


@pytest.mark.parametrize("unreadable", ["the partition table", "the data partition's superblock"])
def test_a_read_error_on_the_card_stops_the_run(built, card, monkeypatch, capsys, unreadable):
    module = load_flash_module()
    target = card("settled")        # erasable if it read as "not a kiosk card"
    before = sha(target)
    bad = 0 if unreadable == "the partition table" else part_offset(target, 3) + 1024
    card_inode, real_pread = target.stat().st_ino, os.pread

    def failing_pread(fd, length, offset):
        if os.fstat(fd).st_ino == card_inode and offset <= bad < offset + length:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return real_pread(fd, length, offset)
    monkeypatch.setattr(os, "pread", failing_pread)
    for mode in ([], ["--erase"]):
        result = flash_in_process(module, monkeypatch, capsys, *mode, "--yes", built["new"], target)
        assert result.returncode == 2, result.stderr
        assert result.stderr.startswith(f"flash: {target}: reading {unreadable} failed (Input/output error)")
        assert result.stderr.count("\n") == 1 and "nothing written" in result.stderr
        assert sha(target) == before


@pytest.mark.parametrize("block_size, size_mib", [(1024, 16), (2048, 40), (4096, 160)])
def test_backup_superblocks_are_found_where_dumpe2fs_lists_them(tmp_path, block_size, size_mib):
    module = load_flash_module("disks")
    fs = tmp_path / "data.img"
    with open(fs, "wb") as handle:
        handle.truncate(size_mib * MiB)
    sh("mkfs.ext4", "-q", "-F", "-L", "KIOSKDATA", "-b", block_size, fs)
    listed = re.findall(r"Backup superblock at (\d+)", sh("dumpe2fs", fs, text=True).stdout)
    with open(fs, "r+b") as handle:
        handle.seek(1024 + 56)
        handle.write(b"\0\0")
    assert module.ext_info(byte_range(fs, 1024, 2048)) is None
    block, info = module.backup_superblock(lambda offset, length: byte_range(fs, offset, offset + length), 0)
    assert block == int(listed[0]) and info.label == "KIOSKDATA" and info.block_size == block_size


# -- the card written is the card checked -------------------------------------------------

@pytest.mark.parametrize("mode, checked, swapped_in", [("--erase", "fresh", "pending"),
                                                       ("--keep-data", "pending", "settled"),
                                                       ("--keep-data", "pending", "pending, used since")])
def test_another_card_put_in_the_reader_before_writing_is_not_written(built, card, tmp_path, mode, checked,
                                                                       swapped_in):
    target, other = card(checked), tmp_path / "other-card.img"
    shutil.copyfile(built[swapped_in.split(",")[0]], other)
    if swapped_in == "pending, used since":     # same image, same partition table: only the data partition differs
        sh("debugfs", "-w", "-R", "mkdir /system/more", f"{other}?offset={part_offset(other, 3)}")
        assert byte_range(other, 0, 512) == byte_range(target, 0, 512)
    expected = sha(other)

    def swap_cards():       # the same /dev/sdX, another card: while the image was checked, or at the question
        shutil.copyfile(other, target)
    result = flash_answering(mode, built["new"], target, before_answer=swap_cards,
                             answer=target.name.encode() + b"\n")
    assert result.returncode == 3, result.stderr
    assert f"flash: refusing to write: {target} is not the card that was checked" in result.stderr
    assert result.stderr.rstrip("\n").count("\n") <= 1 and result.stderr.endswith("run image/flash again\n")
    assert sha(target) == expected          # the card now in the reader is untouched
    if swapped_in == "pending, used since":
        assert "(the data partition's superblock changed" in result.stderr


# -- the work folder --------------------------------------------------------------------------

needs_shm = pytest.mark.skipif(not Path("/dev/shm").is_dir() or fs_type(Path("/dev/shm")) not in ("tmpfs", "ramfs"),
                               reason="needs /dev/shm on tmpfs")


@needs_shm
def test_the_journal_copy_is_made_in_a_private_folder_in_ram_and_removed(built, tmp_path, monkeypatch, capsys):
    module = load_flash_module()
    data = switched_off_during_a_sale(tmp_path / "parts")
    target = make_disk(tmp_path / "card.img", data=data, boot={"kiosk-image-id.txt": b"KIOSK_VERSION=0.1.0\n"},
                       root={"etc/kiosk-image-id": b"KIOSK_VERSION=0.1.0\n"})
    system_tmp = tmp_path / "system-tmp"        # where tempfile would put it: here, on a disk
    system_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(system_tmp))
    seen = []
    card_queue = load_flash_module("card_queue")
    real_copy = card_queue.replayed_copy

    def watched(card_path, partition, work):
        copy = real_copy(card_path, partition, work)
        seen.append((work, fs_type(work), stat.S_IMODE(work.stat().st_mode), fs_type(copy)))
        return copy
    monkeypatch.setattr(card_queue, "replayed_copy", watched)
    result = flash_in_process(module, monkeypatch, capsys, "--yes", built["new"], target)
    assert result.returncode == 0, result.stderr
    [(work, kind, mode, copy_kind)] = seen
    assert kind in ("tmpfs", "ramfs") and copy_kind == kind and mode == 0o700
    assert not work.exists() and not list(system_tmp.iterdir())
    assert STRIPE_SECRET not in result.stdout + result.stderr


@needs_shm
def test_without_a_ram_backed_folder_a_kiosk_card_is_not_read(built, card, tmp_path, monkeypatch, capsys):
    module = load_flash_module()
    mounts = tmp_path / "mounts"
    mounts.write_text("/dev/vda / ext4 rw,relatime 0 0\nproc /proc proc rw 0 0\n")
    monkeypatch.setattr(load_flash_module("workdir"), "MOUNTS", mounts)
    target = card("pending")
    before = sha(target)
    for extra in ([], ["--work-dir", tmp_path]):
        result = flash_in_process(module, monkeypatch, capsys, *extra, "--yes", built["new"], target)
        assert result.returncode == 2, result.stderr
        assert result.stderr.startswith("flash: ") and result.stderr.count("\n") == 1
        assert "RAM-backed" in result.stderr and "--work-dir" in result.stderr
        assert sha(target) == before
    blank = tmp_path / "blank.img"          # no queue to read: no work folder needed
    blank.write_bytes(b"")
    assert flash_in_process(module, monkeypatch, capsys, "--yes", built["new"], blank).returncode == 0
    monkeypatch.setattr(load_flash_module("workdir"), "MOUNTS", Path("/proc/self/mounts"))
    already = set(Path("/dev/shm").glob("kiosk-flash-*"))
    result = flash_in_process(module, monkeypatch, capsys, "--work-dir", "/dev/shm", "--yes", built["new"], target)
    assert result.returncode == 0, result.stderr
    assert set(Path("/dev/shm").glob("kiosk-flash-*")) == already


@needs_shm
def test_a_block_in_use_only_once_the_journal_is_replayed_comes_from_the_card(tmp_path):
    """F's block was written in place, but the bitmap marking it used is still
    only in the journal (a card once mounted data=ordered), and the journal
    also writes G's block -- in the same 4 KiB page of the RAM copy, 1 KiB
    blocks: F must still read whole from the copy."""
    card_queue, disks = load_flash_module("card_queue"), load_flash_module("disks")
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "F").write_bytes(b"A" * 1024)
    (tree / "G").write_bytes(b"B" * 1024)
    card = tmp_path / "card.img"
    sh("mkfs.ext4", "-q", "-F", "-b", "1024", "-O", "^metadata_csum", "-d", tree, card, "16M")
    f_block, g_block = (int(sh("debugfs", "-R", f"blocks /{name}", card, text=True).stdout.split()[0])
                        for name in ("F", "G"))
    assert f_block * 1024 // 4096 == g_block * 1024 // 4096, "the fixture needs F and G in one page"
    listed = subprocess.run(["dumpe2fs", card], capture_output=True, text=True, check=True,
                            env=dict(os.environ, PATH=PATH, LC_ALL="C")).stdout
    bitmap_block = int(re.search(r"Block bitmap at (\d+)", listed)[1])
    (tmp_path / "bitmap").write_bytes(byte_range(card, bitmap_block * 1024, (bitmap_block + 1) * 1024))
    (tmp_path / "g-new").write_bytes(b"C" * 1024)
    sh("debugfs", "-w", "-R", f"freeb {f_block}", card)        # in place F's block looks free ...
    (tmp_path / "journal.debugfs").write_text(             # ... the journal marks it used, and writes G
        f"jo\njw -b {bitmap_block} {tmp_path / 'bitmap'}\njw -b {g_block} {tmp_path / 'g-new'}\njc\n")
    sh("debugfs", "-w", "-f", tmp_path / "journal.debugfs", card)
    work = Path(tempfile.mkdtemp(dir="/dev/shm", prefix="kiosk-flash-test-"))
    try:
        copy = card_queue.replayed_copy(card, disks.Partition(3, 0, card.stat().st_size), work)
        assert sh("debugfs", "-R", "cat /F", copy).stdout == b"A" * 1024
        assert sh("debugfs", "-R", "cat /G", copy).stdout == b"C" * 1024
        sh("e2fsck", "-fn", copy)
    finally:
        shutil.rmtree(work)


# -- the new boot partition is ready before anything is written ----------------------------

def test_a_boot_partition_that_cannot_take_the_settings_writes_nothing(built, tmp_path):
    new = make_image(tmp_path / "new" / "kiosk-0.2.1-ci.img", "0.2.1")
    boot = f"{new}@@{part_offset(new, 1)}"
    listed = sh("mdir", "-i", boot, "::/", text=True).stdout
    free = int(re.sub(r"\D", "", re.search(r"([\d ,.]+) bytes free", listed)[1]))
    filler = tmp_path / "filler.bin"
    filler.write_bytes(b"\xa5" * (free - 4096))
    sh("mcopy", "-i", boot, filler, "::/filler.bin")        # the new boot partition has next to no room left
    big_settings = VENDOR_APPLIED + b"# " + b"x" * (64 * 1024) + b"\n"
    target = make_card(tmp_path / "card" / "card.img", [(1250, "eur")],
                       boot_settings={"kiosk-settings.applied.toml": big_settings})
    before = sha(target)
    result = flash("--yes", new, target)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("flash: the new boot partition could not be prepared")
    assert result.stderr.count("\n") == 1 and "nothing written" in result.stderr
    assert sha(target) == before            # not even the root


# -- bad input writes nothing ------------------------------------------------------------

@pytest.mark.parametrize("damage", ["truncated", "corrupt"])
def test_damaged_xz_is_exit_2_and_writes_nothing(built, card, tmp_path, damage):
    raw = bytearray(built["xz"].read_bytes())
    if damage == "truncated":
        raw = raw[:len(raw) // 2]
    else:
        raw[len(raw) // 2] ^= 0xFF
    bad = tmp_path / "kiosk-bad.img.xz"
    bad.write_bytes(bytes(raw))
    for target in (card("pending"), card("settled")):
        before = sha(target)
        result = flash("--erase" if "settled" in target.name else "--keep-data", "--yes", bad, target)
        assert result.returncode == 2, result.stderr
        assert result.stderr.startswith("flash: ") and ".xz" in result.stderr and result.stderr.count("\n") == 1
        assert sha(target) == before


def test_not_a_kiosk_image_is_exit_2(built, card, tmp_path):
    random_bytes = tmp_path / "random.img"
    random_bytes.write_bytes(os.urandom(MiB))
    wrong_label = make_disk(tmp_path / "other.img", boot={}, root={"x": b"x"},
                            data=empty_data(tmp_path / "other-data"), data_label="STUFF")
    target = card("settled")
    before = sha(target)
    for image in (random_bytes, wrong_label):
        result = flash("--erase", "--yes", image, target)
        assert result.returncode == 2
        assert result.stderr.startswith("flash: ") and "not a kiosk image" in result.stderr
        assert sha(target) == before
    assert "KIOSKDATA" in flash("--erase", "--yes", wrong_label, target).stderr


def test_usage_errors_are_exit_2(built, card, tmp_path):
    target = card("settled")
    before = sha(target)
    no_yes = flash(built["new"], target)
    assert no_yes.returncode == 2 and "--yes" in no_yes.stderr
    both = flash("--erase", "--keep-data", "--yes", built["new"], target)
    assert both.returncode == 2 and both.stderr.startswith("flash: ")
    same = flash("--yes", built["new"], built["new"])
    assert same.returncode == 2 and "image itself" in same.stderr
    missing = flash("--yes", tmp_path / "nope.img.xz", target)
    assert missing.returncode == 2 and "nope.img.xz" in missing.stderr
    nowhere = flash("--yes", built["new"], tmp_path / "no-such-card")
    assert nowhere.returncode == 2
    assert sha(target) == before and not (tmp_path / "no-such-card").exists()
    for result in (no_yes, both, same, missing, nowhere):
        assert result.stderr.startswith("flash: ") and result.stderr.count("\n") == 1


def test_the_vendor_types_the_target_name_to_go_on(built, card):
    import pty
    target = card("settled")
    before = sha(target)

    def typed(answer: bytes) -> subprocess.CompletedProcess:
        terminal, keyboard = pty.openpty()
        try:
            proc = subprocess.Popen([sys.executable, str(FLASH), "--erase", str(built["new"]), str(target)],
                                    stdin=keyboard, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                    env=dict(os.environ, PATH=PATH))
            os.write(terminal, answer)
            out, err = proc.communicate(timeout=60)
        finally:
            os.close(terminal)
            os.close(keyboard)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)

    wrong = typed(b"sdb\n")
    assert wrong.returncode == 2 and "not confirmed" in wrong.stderr
    assert f"Type {target.name}" in wrong.stderr and "ERASED" in wrong.stderr and "MB" in wrong.stderr
    assert sha(target) == before
    right = typed(target.name.encode() + b"\n")
    assert right.returncode == 0, right.stderr
    assert target.read_bytes()[:built["new"].stat().st_size] == built["new"].read_bytes()


def test_help_documents_the_exit_codes():
    result = flash("--help")
    assert result.returncode == 0
    for words in ("--keep-data", "--erase", "--yes", "0  done", "1  writing", "2  bad input", "3  refused"):
        assert words in result.stdout


# -- in use -----------------------------------------------------------------------------

def test_mounted_targets_are_found(tmp_path):
    flash_module = load_flash_module("target")
    card_file = tmp_path / "card.img"
    card_file.write_bytes(b"")
    sys_block = tmp_path / "sys"
    (sys_block / "loop7" / "loop").mkdir(parents=True)
    (sys_block / "loop7" / "loop" / "backing_file").write_text(f"{card_file}\n")
    (sys_block / "loop7" / "loop7p1").mkdir()
    (sys_block / "loop7" / "loop7p1" / "partition").write_text("1\n")
    (sys_block / "loop3" / "loop").mkdir(parents=True)
    (sys_block / "loop3" / "loop" / "backing_file").write_text("/somewhere/else.img\n")
    swaps = tmp_path / "swaps"
    swaps.write_text("Filename Type Size Used Priority\n")
    mounts = tmp_path / "mounts"
    mounts.write_text("proc /proc proc rw 0 0\n/dev/loop3 /mnt/else ext4 rw 0 0\n")
    assert flash_module.in_use(card_file, mounts, swaps, sys_block) == []
    mounts.write_text("proc /proc proc rw 0 0\n/dev/loop7p1 /media/vendor/KIOSK\\040BOOT vfat rw 0 0\n")
    [found] = flash_module.in_use(card_file, mounts, swaps, sys_block)
    assert "/dev/loop7p1" in found and "/media/vendor/KIOSK BOOT" in found
    mounts.write_text(f"{card_file} /mnt/card ext4 rw 0 0\n")
    assert flash_module.in_use(card_file, mounts, swaps, sys_block)


def test_the_image_checks_agree_with_blkid(built):
    flash_module = load_flash_module("disks")
    disk = built["new"]
    assert flash_module.fat_label(byte_range(disk, part_offset(disk, 1), part_offset(disk, 1) + 512)) == "KIOSKBOOT"
    for number, label in ((2, "KIOSKROOT"), (3, "KIOSKDATA")):
        at = part_offset(disk, number)
        assert flash_module.ext_info(byte_range(disk, at + 1024, at + 2048)).label == label == ext_label(disk, number)
    assert flash_module.fat_label(byte_range(disk, 0, 512)) is None


def test_fat32_labels_are_read_like_blkid_reads_them(tmp_path):
    flash_module = load_flash_module("disks")
    fat32 = tmp_path / "boot32.img"
    sh("mkfs.vfat", "-F", "32", "-n", "KIOSKBOOT", "-C", fat32, 40 * 1024)
    assert "FAT32" in sh("blkid", "--probe", fat32, text=True).stdout
    assert flash_module.fat_label(byte_range(fat32, 0, 512)) == "KIOSKBOOT"


# -- the card's mirror partition (image/firstboot/grow-data) and its mount (mount-mirror) --------
# On real block devices: loop devices with their partitions (partx), as root.

GROW_DATA = ROOT / "image" / "firstboot" / "grow-data"
MOUNT_MIRROR = ROOT / "image" / "firstboot" / "mount-mirror"
CARD_MIB, MIRROR_MIB = 200, 64


class LoopCards:
    """Disk-image files attached as loop devices, partitions and all; detached afterwards."""

    def __init__(self, where: Path):
        self.where, self.devices, self.mounts = where, [], []

    def attach(self, image: Path, partitioned: bool = True) -> str:
        device = sh("losetup", "-f", "--show", image, text=True).stdout.strip()
        self.devices.append(device)
        if partitioned:
            sh("partx", "--add", device)
        return device

    def card(self, name: str, table: str, data_mib: tuple[int, int], before=None) -> tuple[str, Path]:
        """A card image with TABLE (sfdisk), an ext4 KIOSKDATA at DATA_MIB (start, size)
        filling partition 3, attached, its data partition mounted; (device, mount point)."""
        image = self.where / f"{name}.img"
        with open(image, "wb") as disk:
            disk.truncate(CARD_MIB * MiB)
        sh("sfdisk", "--quiet", image, input=("label: dos\nunit: sectors\n" + table).encode())
        data = self.where / f"{name}.data"
        sh("mkfs.ext4", "-q", "-F", "-L", "KIOSKDATA", data, f"{data_mib[1]}M")
        put(image, data, data_mib[0])
        if before:
            before(image)
        device = self.attach(image)
        if not Path(f"{device}p3").exists():
            pytest.skip("this kernel makes no partition devices for loop devices")
        point = self.where / f"{name}.mnt"
        point.mkdir()
        self.mount(f"{device}p3", point)
        return device, point

    def mount(self, device: str, point: Path, *options: str) -> None:
        sh("mount", *options, device, point)
        self.mounts.append(point)

    def close(self) -> None:
        for point in reversed(self.mounts):
            subprocess.run(["umount", str(point)], capture_output=True)
        for device in reversed(self.devices):
            subprocess.run(["partx", "-d", device], capture_output=True)
            subprocess.run(["losetup", "-d", device], capture_output=True)


def put(image: Path, content: Path, at_mib: int) -> None:
    with open(image, "r+b") as disk:
        disk.seek(at_mib * MiB)
        disk.write(content.read_bytes())


def table_of(image: Path) -> list[tuple[int, int]]:
    """(start, size) of each partition, in MiB."""
    parts = json.loads(sh("sfdisk", "--json", image).stdout)["partitiontable"]["partitions"]
    return [(p["start"] // 2048, p["size"] // 2048) for p in parts]


def probe_fs(device: str) -> dict:
    result = subprocess.run(["blkid", "-p", "-o", "export", device], capture_output=True, text=True)
    return dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)


def grow_data(point: Path) -> subprocess.CompletedProcess:
    result = subprocess.run(["sh", str(GROW_DATA), str(point)], capture_output=True, text=True,
                            env=dict(os.environ, PATH=PATH, MIRROR_MIB=str(MIRROR_MIB)))
    # growing a mounted ext4 (EXT4_IOC_RESIZE_FS) needs CAP_SYS_RESOURCE, which a container may lack:
    # the last step then fails here; the qemu boot test (test_image.py) runs it for real
    denied = "Permission denied to resize" in result.stderr
    assert result.returncode == 0 or denied, result.stdout + result.stderr
    return result


@pytest.fixture
def loops(tmp_path):
    if os.geteuid() != 0 or not all(shutil.which(t, path=PATH) for t in ("losetup", "partx", "mount")):
        pytest.skip("needs root, losetup, partx and mount")
    cards = LoopCards(tmp_path)
    yield cards
    cards.close()


NEW_CARD = ("start=8192, size=16384, type=c\nstart=24576, size=32768, type=83\n"
            "start=57344, size=32768, type=83\n")          # boot 4+8, root 12+16, data 28+16 MiB, as built


def test_first_boot_makes_the_mirror_partition_at_the_cards_end_and_keeps_it(loops, tmp_path):
    device, point = loops.card("new", NEW_CARD, (28, 16))
    result = grow_data(point)
    image = tmp_path / "new.img"
    assert table_of(image) == [(4, 8), (12, 16), (28, CARD_MIB - MIRROR_MIB - 28), (CARD_MIB - MIRROR_MIB, MIRROR_MIB)]
    assert "making partition 4" in result.stdout and "formatting" in result.stdout
    assert {k: probe_fs(f"{device}p4").get(k) for k in ("TYPE", "LABEL")} == {"TYPE": "ext4", "LABEL": "KIOSKMIRROR"}
    # the next start: nothing made or formatted again, the copy on it kept
    mirror = tmp_path / "mirror.mnt"
    mirror.mkdir()
    sh("mount", f"{device}p4", mirror)
    (mirror / "live.kdb").write_bytes(b"the second copy")
    sh("umount", mirror)
    again = grow_data(point)
    assert "partition 4" not in again.stdout and "formatting" not in again.stdout
    assert table_of(image)[3] == (CARD_MIB - MIRROR_MIB, MIRROR_MIB)
    loops.mount(f"{device}p4", mirror)
    assert (mirror / "live.kdb").read_bytes() == b"the second copy"


def stale_mirror(image: Path) -> None:
    """A KIOSKMIRROR filesystem where partition 4 will go, left by the card's earlier life."""
    tree = image.with_name("stale")
    (tree / "kiosk").mkdir(parents=True)
    (tree / "kiosk" / "live.kdb").write_bytes(b"an old queue")
    sh("mkfs.ext4", "-q", "-F", "-L", "KIOSKMIRROR", "-d", tree, image.with_name("stale.ext4"), f"{MIRROR_MIB}M")
    put(image, image.with_name("stale.ext4"), CARD_MIB - MIRROR_MIB)


def test_a_power_cut_after_the_data_partition_grew_is_finished_without_the_stale_filesystem(loops, tmp_path):
    """Cut after step 1: partition 3 grown (its ext4 too), no partition 4 yet, and a
    KIOSKMIRROR filesystem from the card's earlier life where it will go."""
    grown = CARD_MIB - MIRROR_MIB - 28
    table = NEW_CARD.replace("start=57344, size=32768", f"start=57344, size={grown * 2048}")
    device, point = loops.card("cut", table, (28, grown), before=stale_mirror)
    result = grow_data(point)
    assert result.returncode == 0, result.stderr
    assert table_of(tmp_path / "cut.img")[2:] == [(28, grown), (CARD_MIB - MIRROR_MIB, MIRROR_MIB)]
    assert "formatting" in result.stdout, "zeroed first: the old filesystem is not taken for the mirror"
    mirror = tmp_path / "mirror.mnt"
    mirror.mkdir()
    loops.mount(f"{device}p4", mirror)
    assert not (mirror / "kiosk").exists()


@pytest.mark.parametrize("on_it", ["nothing", "ext4 OTHER"])
def test_partition_4_is_formatted_only_when_it_holds_no_filesystem(loops, tmp_path, on_it):
    """Cut after the table named partition 4, before mkfs: formatted.  A partition 4
    holding any filesystem is never formatted."""
    grown = CARD_MIB - MIRROR_MIB - 28
    table = (NEW_CARD.replace("start=57344, size=32768", f"start=57344, size={grown * 2048}")
             + f"start={(CARD_MIB - MIRROR_MIB) * 2048}, size={MIRROR_MIB * 2048}, type=83\n")

    def other(image: Path) -> None:
        if on_it != "nothing":
            sh("mkfs.ext4", "-q", "-F", "-L", "OTHER", image.with_name("other.ext4"), f"{MIRROR_MIB}M")
            put(image, image.with_name("other.ext4"), CARD_MIB - MIRROR_MIB)
    device, point = loops.card("p4", table, (28, grown), before=other)
    result = grow_data(point)
    assert result.returncode == 0, result.stderr
    assert len(table_of(tmp_path / "p4.img")) == 4
    label = probe_fs(f"{device}p4").get("LABEL")
    assert label == ("KIOSKMIRROR" if on_it == "nothing" else "OTHER"), result.stdout


def test_a_card_from_an_older_image_gets_no_mirror_partition_and_is_told_to_use_a_stick(loops, tmp_path):
    table = NEW_CARD.replace("start=57344, size=32768", f"start=57344, size={(CARD_MIB - 28) * 2048}")
    device, point = loops.card("old", table, (28, CARD_MIB - 28))
    result = grow_data(point)
    assert result.returncode == 0, result.stderr
    assert len(table_of(tmp_path / "old.img")) == 3
    assert "no room for a mirror partition" in result.stdout and "USB stick labelled KIOSKMIRROR" in result.stdout


def mount_mirror(point: Path, data: Path, state: Path) -> subprocess.CompletedProcess:
    result = subprocess.run(["sh", str(MOUNT_MIRROR), str(point), str(data)], capture_output=True, text=True,
                            env=dict(os.environ, PATH=PATH, MIRROR_STATE=str(state), KIOSK_USER="nobody"))
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_the_mirror_is_a_kiosk_stick_when_plugged_in_else_the_cards_partition_else_nothing(loops, tmp_path):
    grown = CARD_MIB - MIRROR_MIB - 28
    table = NEW_CARD.replace("start=57344, size=32768", f"start=57344, size={grown * 2048}")
    device, data = loops.card("card", table, (28, grown))
    point, state = tmp_path / "mirror", tmp_path / "run" / "mirror"
    point.mkdir()
    # no stick, no partition: nothing mounted, nothing said to kiosk-firstboot
    result = mount_mirror(point, data, state)
    assert not os.path.ismount(point) and not state.exists(), result.stdout
    assert "nothing mounted" in result.stdout
    # the card's partition (as grow-data makes it)
    grow_data(data)
    stick_image = tmp_path / "stick.img"
    sh("mkfs.ext4", "-q", "-F", "-L", "KIOSKMIRROR", stick_image, "16M")
    stick = loops.attach(stick_image, partitioned=False)      # a stick without a partition table
    result = mount_mirror(point, data, state)
    try:
        assert state.read_text().split() == ["stick", stick, "ext4"], result.stdout
        assert sh("findmnt", "-no", "SOURCE", point, text=True).stdout.strip() == stick
        folder = (point / "kiosk").stat()
        nobody = int(sh("id", "-u", "nobody", text=True).stdout)
        assert (folder.st_uid, folder.st_mode & 0o777) == (nobody, 0o700)
        assert "mounted already" in mount_mirror(point, data, state).stdout
    finally:
        sh("umount", point)
    subprocess.run(["losetup", "-d", stick], check=True)
    result = mount_mirror(point, data, state)
    try:
        assert state.read_text().split() == ["partition", f"{device}p4", "ext4"], result.stdout
    finally:
        sh("umount", point)
