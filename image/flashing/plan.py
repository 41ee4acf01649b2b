"""Deciding and telling: whether this card may be written this way (the
image's layout against the card's, payments waiting, a damaged card), what
will happen, the question the vendor answers by typing the card's name,
the progress line and the report at the end."""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from .boot_settings import SETTINGS, fix_boot_settings, save_card_settings
from .card_queue import Queue
from .common import EXIT_REFUSED, EXIT_USAGE, Stop, human, mib
from .image_file import Image
from .target import Target


def check_keep_layout(image: Image, target: Target) -> None:
    """The new boot and root must land exactly in the card's slots, so that
    the data partition after them stays where it is."""
    card, new = target.partitions, image.partitions
    for index, what in ((0, "boot"), (1, "root")):
        if new[index].start != card[index].start or new[index].size > card[index].size:
            raise Stop(
                f"this image's layout cannot keep the card's data partition (its {what} partition is "
                f"{mib(new[index].size)} at {mib(new[index].start)}, the card's {mib(card[index].size)} at "
                f"{mib(card[index].start)}); --erase is possible only once nothing is pending on the card",
                EXIT_REFUSED)
    if new[1].end > card[2].start:
        raise Stop("this image's root partition would overlap the card's data partition", EXIT_REFUSED)


def refuse_erase(queue: Queue, target: Target) -> None:
    if queue.problem:
        raise Stop(f"refusing to erase: the payment queue on {target.path} cannot be read ({queue.problem}); "
                   f"it may hold payments not yet forwarded to Stripe.  Update with --keep-data, "
                   f"which leaves the queue untouched", EXIT_REFUSED)
    if queue.waiting:
        raise Stop(f"refusing to erase: {queue.waiting_text()}; switch the kiosk on with a connection "
                   f"and tap Sync now, or update with --keep-data", EXIT_REFUSED)


def refuse_damaged(target: Target) -> None:
    """A card with signs of a kiosk layout whose queue cannot be reached is
    never written to, in any mode: what cannot be counted is not erased."""
    if target.is_damaged_kiosk_card:
        raise Stop(f"refusing to write: {target.path} looks like a kiosk card ({target.signs[0]}) but its payment "
                   f"queue cannot be read ({target.damage}); it may hold payments not yet forwarded to Stripe.  "
                   f"Repair the card (e2fsck, see docs/updating.md) and run image/flash again, or put it back in "
                   f"the kiosk and, if it starts, tap Sync now until 0 are pending", EXIT_REFUSED)


def confirm(target: Target, image: Image, plan: str) -> None:
    print(f"{target.path}: {human(target.size)}, {plan}.", file=sys.stderr)
    print(f"Type {target.name} to write {image.path.name} to it: ", end="", file=sys.stderr, flush=True)
    answer = sys.stdin.readline()
    if answer.strip() != target.name:
        raise Stop("not confirmed; nothing written", EXIT_USAGE)


def check_inputs(image_path: Path, target_path: Path) -> None:
    if not image_path.is_file():
        raise Stop(f"{image_path}: no such image file", EXIT_USAGE)
    if not os.access(image_path, os.R_OK):
        raise Stop(f"{image_path}: cannot read it", EXIT_USAGE)
    if target_path.exists() and os.path.samefile(image_path, target_path):
        raise Stop(f"{target_path} is the image itself", EXIT_USAGE)


def progress_printer(enabled: bool):
    state = {"last": 0.0}

    def progress(what, done, total):
        if not enabled:
            return
        if what is None:
            print("\r\033[K", end="", file=sys.stderr, flush=True)
            return
        now = time.monotonic()
        if now - state["last"] >= 0.5:
            state["last"] = now
            tail = f" of {human(total)}" if total else ""
            print(f"\r\033[K{what}: {human(done)}{tail}", end="", file=sys.stderr, flush=True)
    return progress


def prepare_update(image: Image, target: Target, queue: Queue, work: Path, staged: Path) -> tuple[list[Path], str]:
    """Checks for --keep-data, and the new boot partition made ready in
    STAGED, settings carried over, before anything is written to the card;
    returns (the settings files carried over, what will happen)."""
    check_keep_layout(image, target)
    carried, warning = save_card_settings(target, work / "settings")
    try:
        fix_boot_settings(staged, carried)
    except OSError as exc:
        raise Stop(f"the new boot partition could not be prepared ({exc}); nothing written", EXIT_USAGE) from None
    if warning:
        print(f"flash: warning: {warning}", file=sys.stderr)
    if queue.problem:
        print(f"flash: warning: {queue.summary()}; the data partition is kept untouched", file=sys.stderr)
    return carried, (f"a kiosk card: {queue.summary()}.  This writes the new boot and root partitions "
                     f"and keeps the data partition as it is")


def prepare_erase(image: Image, target: Target, queue: Queue | None) -> str:
    """Checks for --erase (the queue's were made before the image was read); returns what will happen."""
    if target.block and target.size < image.size:
        raise Stop(f"{target.path} is too small: {human(target.size)}, the image needs {human(image.size)}",
                   EXIT_USAGE)
    what = f"a kiosk card: {queue.summary()}" if queue else "not a kiosk card"
    return f"{what}.  EVERYTHING ON IT WILL BE ERASED"


def report(target: Target, result: str, queue: Queue | None, carried: list[Path] | None) -> None:
    print(f"{target.path}: {result}")
    if carried is None:
        print(f"done: a fresh card; fill in {SETTINGS} on its boot partition before the first start")
        return
    print(f"kept the data partition: {queue.summary()}")
    print(f"kept the settings on the boot partition: {', '.join(p.name for p in carried) or 'none found on the card'}")
    print("done: put the card back in the kiosk and switch it on")
