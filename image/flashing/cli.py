"""The command line: the usage text, the run from start to end in the order
that keeps payments safe (flash), and main -- its exit code, one line on
stderr when it stops, the work folder removed however it ends."""
from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
from pathlib import Path

from .card_queue import read_queue
from .common import DATA_LABEL, EXIT_DONE, EXIT_FAILED, EXIT_USAGE, Stop
from .image_file import image_layout, scan_image
from .plan import (check_inputs, confirm, prepare_erase, prepare_update, progress_printer, refuse_damaged,
                   refuse_erase, report)
from .target import in_use, inspect_target
from .tools import TOOLS_CARD, TOOLS_KEEP, check_tools
from .workdir import work_folder
from .writing import write_and_verify

USAGE = """Put a kiosk image on an SD card without losing the payments waiting on it.

    sudo .venv/bin/python image/flash [--keep-data | --erase] [--yes] [--work-dir DIR] IMAGE TARGET

IMAGE   a kiosk-<version>-<flavour>.img or .img.xz made by image/build
        (an .img.xz is read as a stream, never unpacked to disk)
TARGET  the whole SD card (/dev/sdX, /dev/mmcblk0) or a disk-image file

--keep-data  the default when TARGET is already a kiosk card: write only the
             new boot and root partitions.  The card's partition table and its
             data partition (payment queue and keys, settings, Wi-Fi, ssh keys,
             Bluetooth pairings) stay byte for byte as they are.  The vendor's
             settings file on the boot partition is carried over and the
             image's sample kiosk-settings.toml is left out.  Needs an image
             whose boot and root partitions fit the card's.
--erase      write the whole image: the card starts afresh.  Refused while the
             card holds payments not yet forwarded to Stripe, or a queue that
             cannot be read.
--yes        do not ask to type the target's name
--work-dir   where the private work folder goes; it MUST be RAM-backed (tmpfs),
             and is checked to be.  Default: the first writable tmpfs of
             /dev/shm, $XDG_RUNTIME_DIR, /run/user/UID, /run.

A card showing any sign of a kiosk layout (a KIOSKBOOT or KIOSKROOT label, an
ext filesystem on partition 3, a backup superblock labelled KIOSKDATA) whose
queue cannot be reached -- a damaged partition table or data partition
superblock -- is never written to, in any mode (exit 3): repair it first.  A
read error on the card stops the run.

Before writing, the card's queue is read with the kiosk's own code from the
queue files copied off the card (never mounted) into a private 0700 folder in
RAM, removed at the end.  If the data partition's journal must be replayed,
every block of the partition in use (its block bitmaps say which) is copied
there and the journal replayed on that copy: the Stripe key is among them,
and nothing of it is printed.
The image is read to the end and checked before anything is written (an
.img.xz is streamed once to check it, once to write it), so that a bad image
writes nothing; for --keep-data the new boot partition, settings carried
over, is made ready in the work folder then too.  After the question, the
card is read again through the descriptor that writes it: if it is not the
card that was checked (another card in the reader), nothing is written.
After writing, everything written is read back and compared (sha256).

Exit codes:
    0  done: written and verified
    1  writing or verifying failed: flash the card again
    2  bad input or usage (not a kiosk image, damaged .xz, TARGET mounted,
       too small or unreadable, no RAM-backed work folder, the new boot
       partition cannot be prepared, not confirmed); nothing written
    3  refused to protect payments: payments waiting, a queue that cannot be
       read, a damaged kiosk card, another card put in the reader since it
       was checked, or an image whose layout cannot keep the data partition;
       nothing written
"""


def flash(args) -> int:
    image_path, target_path = Path(args.image), Path(args.target)
    check_inputs(image_path, target_path)
    target = inspect_target(target_path, image_layout(image_path))
    busy = in_use(target.path)
    if busy:
        raise Stop(f"{target.path} is in use: {'; '.join(busy)} (unmount it first)", EXIT_USAGE)
    refuse_damaged(target)
    if not args.yes and not sys.stdin.isatty():
        raise Stop("not confirmed: pass --yes to flash without typing the target's name", EXIT_USAGE)
    if args.keep_data and not target.is_kiosk_card:
        raise Stop(f"{target.path} is not a kiosk card (no {DATA_LABEL} data partition): "
                   f"there is nothing to keep; use --erase", EXIT_USAGE)
    keep = target.is_kiosk_card and not args.erase
    check_tools((TOOLS_CARD if target.is_kiosk_card else ()) + (TOOLS_KEEP if keep else ()))
    progress = progress_printer(sys.stderr.isatty())
    # the queue, its key and the settings pass through WORK: only for a kiosk card, and only in RAM
    with work_folder(args.work_dir) if target.is_kiosk_card else contextlib.nullcontext() as work:
        queue = read_queue(target, work) if target.is_kiosk_card else None
        if queue is not None and not keep:
            refuse_erase(queue, target)     # before reading the image: no waiting for a refusal
        staged = work / "boot.img" if keep else None
        image = scan_image(image_path, keep, progress, staged)
        if keep:
            carried, plan = prepare_update(image, target, queue, work, staged)
        else:
            carried, plan = None, prepare_erase(image, target, queue)
        if not args.yes:
            confirm(target, image, plan)
        result = write_and_verify(image, target, staged, progress)
    report(target, result, queue, carried)
    return EXIT_DONE


class Parser(argparse.ArgumentParser):
    def error(self, message):
        print(f"flash: {message} (try --help)", file=sys.stderr)
        sys.exit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="image/flash", description=USAGE, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--keep-data", action="store_true",
                      help="write boot and root only, keep the data partition (default for a kiosk card)")
    mode.add_argument("--erase", action="store_true", help="write the whole image (refused while payments wait)")
    parser.add_argument("--yes", action="store_true", help="do not ask to type the target's name")
    parser.add_argument("--work-dir", metavar="DIR",
                        help="where the private work folder goes; must be RAM-backed (tmpfs): "
                             "default /dev/shm, $XDG_RUNTIME_DIR, /run/user/UID or /run")
    parser.add_argument("image", metavar="IMAGE", help="kiosk-<version>-<flavour>.img or .img.xz")
    parser.add_argument("target", metavar="TARGET", help="the SD card (/dev/sdX, /dev/mmcblk0) or a disk-image file")
    return parser


def interrupted(signum, frame):
    raise KeyboardInterrupt     # killed or hung up: the work folder is still removed


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    before = {signum: signal.signal(signum, interrupted) for signum in (signal.SIGTERM, signal.SIGHUP)}
    try:
        return _main(args)
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)


def _main(args) -> int:
    # debugfs, dumpe2fs and e2fsck live in sbin, which a user's PATH (no sudo) may lack
    os.environ["PATH"] = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    try:
        import kiosk.money  # noqa: F401  (the queue is read with the kiosk's own code)
    except ImportError:
        print("flash: the kiosk package is not importable: run it with the project's venv, "
              "e.g. sudo .venv/bin/python image/flash IMAGE TARGET", file=sys.stderr)
        return EXIT_USAGE
    try:
        return flash(args)
    except Stop as exc:
        print(f"flash: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print("flash: interrupted; if writing had started, flash the card again", file=sys.stderr)
        return EXIT_FAILED
