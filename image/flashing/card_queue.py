"""The payments on the card: the queue files its storage plugin names are
copied off the data partition (never mounted; the journal replayed on a
private copy when the kiosk was switched off without shutting down) into
the work folder, and listed by the kiosk's own code (``kiosk queue``)."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .disks import Partition
from .ext_usage import merge, subtract, used_blocks
from .storage import card_storage, storage_files
from .target import Target
from .tools import E2FSCK_OK, Unreadable, debugfs, listing, run

QUEUE_DIR = "kiosk"             # on the data partition


@dataclass
class Queue:
    """What the card's queue holds, or why it could not be read."""
    waiting: list[dict] = field(default_factory=list)   # pending or forwarding: not yet at Stripe
    settled: int = 0
    problem: str | None = None
    empty_card: bool = False        # never started: no queue yet

    def totals(self) -> str:
        from kiosk.money import format_amount
        sums: dict[str, int] = {}
        for payment in self.waiting:
            sums[payment["currency"]] = sums.get(payment["currency"], 0) + payment["amount"]
        return ", ".join(format_amount(amount, currency) for currency, amount in sorted(sums.items()))

    def oldest(self) -> str:
        from kiosk.payment import parse_iso
        first = min(parse_iso(p["created_at"]) for p in self.waiting)
        return first.strftime("%Y-%m-%d %H:%M UTC")

    def waiting_text(self) -> str:
        count = len(self.waiting)
        noun = "payment" if count == 1 else "payments"
        verb = "is" if count == 1 else "are"
        return (f"{count} {noun} ({self.totals()}) {verb} waiting to be forwarded to Stripe, "
                f"the oldest from {self.oldest()}")

    def summary(self) -> str:
        if self.problem:
            return f"the payment queue could not be read ({self.problem})"
        if self.empty_card:
            return "no payment queue yet (the card has not been started)"
        settled = f"; {self.settled} settled" if self.settled else ""
        if not self.waiting:
            return f"no payment waiting to be forwarded{settled}"
        return f"{self.waiting_text()}{settled}"


def replayed_copy(target: Path, data: Partition, work: Path) -> Path:
    """A private copy of the data partition, its journal replayed.  The
    partition is mounted data=journal, and a kiosk switched off without
    shutting down leaves its newest sales in the journal only: read without
    replaying, the queue would look older -- possibly empty -- and what lies
    in place may not even be readable (an inode pointing at a block only the
    journal holds).  The card itself is not written to.

    The copy holds every block the partition's bitmaps mark as used, so the
    Stripe key and the queue's key among them, and the journal, which
    (data=journal) may hold any file written lately: WORK must be the private
    RAM-backed folder (see work_folder), deleted when the run ends.  Blocks
    of zeros are left as holes; the partition is mostly the queue, so the
    copy is about the size of the queue."""
    copy = work / "data-replayed.img"
    card = f"{target}?offset={data.start}"
    block_size, in_place = used_blocks(card)
    _copy_and_replay(target, data, block_size, in_place, copy)
    # the bitmaps in place may be older than the journal's: a block in use only
    # once it is replayed, whose contents the journal did not carry (written in
    # place: a card once mounted data=ordered), is not in the copy.  Which
    # blocks the journal wrote cannot be told from the copy (a hole is per page,
    # not per block; a block written as zeros looks like one never written),
    # so the copy is made again with them and replayed again: the same result
    # the kernel reaches when it mounts the card
    _, replayed = used_blocks(str(copy))
    extra = subtract(replayed, in_place)
    if extra:
        copy.unlink()
        _copy_and_replay(target, data, block_size, merge(in_place + extra), copy)
    return copy


def _copy_and_replay(target: Path, data: Partition, block_size: int, ranges, copy: Path) -> None:
    """COPY made anew from the block RANGES of DATA on TARGET, then its journal replayed."""
    with open(target, "rb") as source, open(copy, "xb") as out:
        os.chmod(copy, 0o600)
        out.truncate(data.size)
        _copy_blocks(source, out, data.start, block_size, ranges)
    run(["e2fsck", "-p", "-E", "journal_only", str(copy)], "replaying the data partition's journal",
        ok=E2FSCK_OK)


CHUNK = 4 << 20


def _copy_blocks(source, out, offset: int, block_size: int, ranges) -> None:
    """Copy the block RANGES of the partition at OFFSET in SOURCE to the
    same blocks of OUT, leaving blocks of zeros as holes."""
    zero = bytes(block_size)
    for start, end in ranges:
        at, stop = start * block_size, end * block_size
        while at < stop:
            source.seek(offset + at)
            chunk = source.read(min(CHUNK, stop - at))
            if not chunk:
                raise Unreadable(f"the card ends inside its data partition (block {at // block_size})")
            for piece in range(0, len(chunk), block_size):
                if chunk[piece:piece + block_size] != zero:
                    out.seek(at + piece)
                    out.write(chunk[piece:piece + block_size])
            at += len(chunk)


def dump_queue(device: str, into: Path, work: Path, files: list[str]) -> bool:
    """Copy the queue FILES out of the data partition on DEVICE into INTO;
    False if the card has no queue yet."""
    top = listing(device, "/", work)
    if QUEUE_DIR not in top:
        if set(top) & set(files):
            raise Unreadable(f"the queue is not in /{QUEUE_DIR} on the data partition, where this tool looks")
        return False
    folder = listing(device, f"/{QUEUE_DIR}", work)
    present = [name for name in files if name in folder]
    if not present:
        return False
    into.mkdir(mode=0o700)
    for name in present:
        debugfs(device, f"dump -p /{QUEUE_DIR}/{name} {name}", into)
        copied = into / name
        if not copied.is_file() or copied.stat().st_size != folder[name][1]:
            raise Unreadable(f"{QUEUE_DIR}/{name} could not be copied off the card in full")
    return True


def list_payments(data_dir: Path, work: Path, storage: str) -> tuple[list[dict], int]:
    """The payments waiting on the copy and how many are settled, as the
    kiosk's own code reads them (``kiosk queue --limit 0`` and ``kiosk
    status``), opened with the card's STORAGE plugin: it decides what is a
    payment and raises its alarm on a damaged or tampered file.  Settled
    payments are counted, never listed: a card may hold a million."""
    config = work / "flash-queue.toml"
    config.write_text(f'[storage]\nuse = {json.dumps(storage)}\npath = {json.dumps(str(data_dir))}\n\n'
                      f'[reader]\nuse = "simulated"\n')
    waiting = _kiosk_json(["queue", "--limit", "0"], config, data_dir, work)
    status = _kiosk_json(["status"], config, data_dir, work)
    for alarm in status.get("store_alarms") or ():
        # the kiosk salvaged what reads and would sell on: erasing would lose the rest for good
        alarm = re.sub(r"; kept aside as .*", "", alarm)
        raise Unreadable(f"{QUEUE_DIR}/{alarm}")
    return waiting, (status.get("settled") or {}).get("count", 0)


def _kiosk_json(command: list[str], config: Path, data_dir: Path, work: Path):
    env = {k: v for k, v in os.environ.items() if k not in ("STRIPE_API_KEY", "KIOSK_CONFIG")}
    result = subprocess.run([sys.executable, "-m", "kiosk.cli", *command, "--json", "--config", str(config)],
                            capture_output=True, text=True, errors="replace", env=env, cwd=work)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or [f"kiosk {command[0]} exit status {result.returncode}"])[-1]
        last = re.sub(r"^kiosk: (alarm|error): ", "", last).replace(str(data_dir), QUEUE_DIR)
        last = re.sub(r"; copy kept aside as .*", "", last)    # a copy in our own temp folder: gone soon
        raise Unreadable(last)
    try:
        return json.loads(result.stdout)
    except json.JSONDecodeError:
        raise Unreadable(f"kiosk {command[0]} printed something that is not JSON") from None


def read_queue(target: Target, work: Path) -> Queue:
    """What the queue on TARGET, a kiosk card, holds -- or why it cannot be
    read; a storage plugin that cannot say which files hold it is a Stop."""
    from kiosk.payment import LIVE_STATES
    data = target.partitions[2]
    card = f"{target.path}?offset={data.start}"
    try:
        # switched off without shutting down: everything, the card's settings
        # too, is read as the kiosk will find it, the journal replayed
        device = str(replayed_copy(target.path, data, work)) if target.data.recovering else card
        storage = card_storage(device, work)
        files = storage_files(storage)      # Stop if the plugin cannot answer
        if not dump_queue(device, work / "queue", work, files):
            return Queue(empty_card=True)
        payments, settled = list_payments(work / "queue", work, storage)
    except Unreadable as exc:
        return Queue(problem=str(exc))
    except OSError as exc:
        return Queue(problem=f"reading the card: {exc.strerror}")
    waiting = [p for p in payments if p["state"] in LIVE_STATES]
    return Queue(waiting=waiting, settled=settled)
