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

from .disks import ExtInfo, Partition
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


def replayed_copy(target: Path, data: Partition, info: ExtInfo, work: Path, files: list[str]) -> Path:
    """A private copy of the data partition's metadata and queue FILES with its
    journal replayed.  The data partition is mounted data=journal, and a kiosk
    switched off without shutting down leaves its newest sales in the journal
    only: read without replaying, the queue would look older -- possibly empty.
    The card itself is not written to.  The copy holds the journal, which
    (data=journal) may hold the contents of any file written lately, the
    Stripe key's included, and the queue FILES, the queue's key among them:
    WORK must be the private RAM-backed folder (see work_folder), deleted
    when the run ends."""
    copy, peek = work / "data-meta.img", work / "data-peek.img"
    # metadata (inodes, folders, the journal and so what it holds), no other file contents
    run(["e2image", "-r", "-o", str(data.start), str(target), str(copy)], "copying the data partition's metadata")
    run(["cp", "--sparse=always", str(copy), str(peek)], "copying the data partition's metadata")
    run(["e2fsck", "-p", "-E", "journal_only", str(peek)], "replaying the data partition's journal",
        ok=E2FSCK_OK)
    # where the queue files' blocks are once the journal is replayed ...
    folder = listing(str(peek), "/", work)
    blocks: list[int] = []
    if QUEUE_DIR in folder:
        for name in listing(str(peek), f"/{QUEUE_DIR}", work):
            if name in files:
                blocks += [int(b) for b in debugfs(str(peek), f"blocks /{QUEUE_DIR}/{name}", work).split()]
    peek.unlink()
    # ... are copied from the card; replaying then lays the journal's newer blocks over them
    with open(target, "rb") as card, open(copy, "r+b") as out:
        for block in sorted(set(blocks)):
            card.seek(data.start + block * info.block_size)
            out.seek(block * info.block_size)
            out.write(card.read(info.block_size))
    run(["e2fsck", "-p", "-E", "journal_only", str(copy)], "replaying the data partition's journal",
        ok=E2FSCK_OK)
    return copy


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
        # the card's settings as they lie on it, journal not replayed: they name
        # the files the replayed copy must hold, so they are read before it is made
        storage = card_storage(card, work)
        files = storage_files(storage)      # Stop if the plugin cannot answer
        if target.data.recovering:
            device = str(replayed_copy(target.path, data, target.data, work, files))
        else:
            device = card
        if not dump_queue(device, work / "queue", work, files):
            return Queue(empty_card=True)
        payments, settled = list_payments(work / "queue", work, storage)
    except Unreadable as exc:
        return Queue(problem=str(exc))
    except OSError as exc:
        return Queue(problem=f"reading the card: {exc.strerror}")
    waiting = [p for p in payments if p["state"] in LIVE_STATES]
    return Queue(waiting=waiting, settled=settled)
