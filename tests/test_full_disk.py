"""A full disk, from outside: the data directory on a tmpfs of 256 KB mounted
for the test, filled by a filler file -- before a command, or at one of the
named points a power cut is tested at (``kiosk.faults``): after the card is
read, between storing a sale and its attempt, after Stripe answered, between
history and the queue.  Then space is freed and Stripe is counted: every sale
the vendor was told is kept is charged exactly once, and one told "not
stored" is never charged.

As root the tmpfs is mounted here; as a user, in a private mount namespace
(``unshare --user --map-root-user --mount``) that every ``kiosk`` command of
the test joins (``nsenter``).  ``KIOSK_TEST_DISK=userns`` takes that way as
root too.  Every command is a real child process; one that fills the disk at
a point runs ``kiosk.cli`` behind a wrapper that writes the filler when the
point is reached, where a crash test would have killed it.

The figures ("N tried, N survived, 0 lost, 0 doubled") are printed:
``pytest -rP tests/test_full_disk.py`` shows them.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import ROOT, write_config

SIZE = "512k"      # room for ~50 tries' queue and history (a payment record is ~1 KB with its log entries)
DEADLINE = 60.0         # a wait for something that must happen, never a measured time

# fills the file system holding argv[1] from a file of that name; argv[2]: bytes to leave free
FILL = r"""
import os, sys
path, leave = sys.argv[1], int(sys.argv[2])
stats = os.statvfs(os.path.dirname(path))
want = max(0, stats.f_bavail * stats.f_frsize - leave) if leave else None
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
written = 0
for chunk in (65536, 4096, 512, 1):
    while want is None or written + chunk <= want:
        try:
            written += os.write(fd, b"\0" * chunk)
        except OSError:
            break
os.close(fd)
"""

# `kiosk` with the disk filled when a named point is first reached (argv: point, filler, kiosk args)
AT_POINT = FILL.replace("path, leave = sys.argv[1], int(sys.argv[2])", "path, leave = FILLER, 0") \
    .replace("import os, sys\n", "")
WRAPPER = r"""
import os, sys
POINT, FILLER = sys.argv[1], sys.argv[2]
import kiosk, kiosk.faults as faults

def fill():
    exec(FILL_CODE, {"os": os, "sys": sys, "FILLER": FILLER})

original = faults.crash_point
reached = []

def crash_point(name):
    if name == POINT and not reached:
        reached.append(name)
        fill()
    original(name)

faults.crash_point = kiosk.crash_point = crash_point     # before the engine and the store import it
for name in ("kiosk.selling", "kiosk.forwarding"):        # or where they already have
    if name in sys.modules:
        sys.modules[name].crash_point = crash_point
from kiosk import cli
sys.exit(cli.main(sys.argv[3:]))
"""


class SmallDisk:
    """A tmpfs of ``SIZE`` at ``path``, and the way into it for a child process."""

    def __init__(self, path: Path, prefix: list[str], how: str):
        self.path, self.prefix, self.how = path, prefix, how
        self.filler = path / "filler"

    def command(self, *args, fill_at: str = "") -> list[str]:
        code = WRAPPER.replace("FILL_CODE", repr(AT_POINT))
        return [*self.prefix, sys.executable, "-c", code, fill_at, str(self.filler), *map(str, args)]

    def kiosk(self, *args, fill_at: str = "") -> subprocess.CompletedProcess:
        return subprocess.run(self.command(*args, fill_at=fill_at), capture_output=True, text=True,
                              cwd=ROOT, timeout=DEADLINE)

    def fill(self, leave: int = 0) -> None:
        """Fill it, leaving ``leave`` bytes (0: not one byte more fits)."""
        subprocess.run([*self.prefix, sys.executable, "-c", FILL, str(self.filler), str(leave)],
                       check=True, timeout=DEADLINE)

    def free(self) -> None:
        subprocess.run([*self.prefix, "rm", "-f", str(self.filler)], check=True, timeout=DEADLINE)

    def free_bytes(self) -> int:
        out = subprocess.run([*self.prefix, sys.executable, "-c",
                              "import os,sys; s=os.statvfs(sys.argv[1]); print(s.f_bavail*s.f_frsize)",
                              str(self.path)], capture_output=True, text=True, check=True, timeout=DEADLINE)
        return int(out.stdout)


def _mount_here(path: Path):
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={SIZE},mode=0700", "tmpfs", str(path)],
                          capture_output=True, text=True)
    return done.returncode == 0, done.stderr.strip()


@pytest.fixture
def small_disk(tmp_path):
    path = tmp_path / "disk"
    path.mkdir()
    why = []
    if os.geteuid() == 0 and os.environ.get("KIOSK_TEST_DISK") != "userns":
        mounted, error = _mount_here(path)
        if mounted:
            try:
                yield SmallDisk(path, [], "mount as root")
            finally:
                subprocess.run(["umount", "-l", str(path)], check=False)
            return
        why.append(f"mount as root: {error}")
    if not (shutil.which("unshare") and shutil.which("nsenter")):
        pytest.skip("no tmpfs for the test: not root, and util-linux unshare/nsenter are missing"
                    + (f" ({why[0]})" if why else ""))
    # the namespace lives as long as this keeper (cat waits on its stdin); joining it needs no privilege
    keeper = subprocess.Popen(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                               f'mount -t tmpfs -o size={SIZE},mode=0700 tmpfs "$1" && echo mounted && exec cat',
                               "sh", str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    if keeper.stdout.readline().strip() != "mounted":
        keeper.stdin.close()
        error = keeper.stderr.read().strip()
        keeper.wait(DEADLINE)
        pytest.skip(f"no tmpfs for the test: {'; '.join(why + [f'unshare --user --mount: {error}'])}")
    try:
        yield SmallDisk(path, ["nsenter", "-t", str(keeper.pid), "-U", "-m", "--preserve-credentials", "--"],
                        "a private mount namespace")
    finally:
        keeper.stdin.close()
        keeper.wait(DEADLINE)


@pytest.fixture
def config(tmp_path, small_disk, fake_stripe):
    path = write_config(tmp_path, fake_stripe.url, storage={"path": str(small_disk.path / "data"),
                                                          "min_free_mb": 0.1},
                        sync={"retry_base_seconds": 0.0, "poll_seconds": 0.2})
    assert small_disk.kiosk("init", "--config", path).returncode == 0
    return path


def queue(disk, config) -> list[dict]:
    result = disk.kiosk("queue", "--all", "--json", "--config", config)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def one_line(result) -> str:
    """What the vendor reads on stderr: one line, never a traceback."""
    lines = result.stderr.strip().splitlines()
    assert "Traceback" not in result.stderr and len(lines) == 1, result.stderr
    return lines[0]


class Tally:
    """Sales tried against a full disk, and what became of them once space was freed."""

    def __init__(self):
        self.tried = self.survived = self.lost = self.doubled = 0

    def count(self, fake_stripe, kept: list[dict], told_not_stored: list[str]) -> None:
        """``kept``: the queue after freeing and syncing; ``told_not_stored``: sales (by what stdout
        said) the vendor was told were not stored, which Stripe must never see."""
        for payment in kept:
            self.tried += 1
            intents = fake_stripe.intents_for(payment["id"])
            if len(intents) > 1:
                self.doubled += 1
            elif payment["state"] not in ("succeeded", "failed") or (payment["state"] == "succeeded"
                                                                     and len(intents) != 1):
                self.lost += 1
            else:
                self.survived += 1
        for _ in told_not_stored:
            self.tried += 1
            self.survived += 1

    def line(self) -> str:
        return f"{self.tried} tried, {self.survived} survived, {self.lost} lost, {self.doubled} doubled"


# -- a sale, the disk filling at each point ----------------------------------------------

def outcome(sale: subprocess.CompletedProcess) -> str:
    """What the vendor was told, in one word; "unexpected" for anything a full disk must never give."""
    said = sale.stdout + sale.stderr
    if "Traceback" in said:
        return "unexpected"
    told = [(0, "APPROVED OFFLINE:", "approved_offline"), (0, "APPROVED:", "approved"),
            (7, "no sale taken: nothing stored, nothing charged", "no_sale"),
            (7, "REFUSED: $10.00 — not stored — disk full: the card was not charged", "not_stored"),
            (7, "not charged yet: the kiosk's disk is full. The sale is kept", "kept_not_charged"),
            (7, "charged at Stripe — do not charge again", "charged_not_stored"),
            (1, "DECLINED:", "declined")]
    return next((word for code, words, word in told if sale.returncode == code and words in said), "unexpected")


NOTHING = ("no_sale", "not_stored")       # told nothing was stored: Stripe must never see it
# (where the disk fills, offline, card): what the vendor must be told there, and what else may be true.  A
# write that fits in the last page of its file (tmpfs gives space a page at a time) needs no more room and
# is stored: then the sale goes on, and must be shown as what it is.  Each case is tried until the write
# crosses into a page the full disk cannot give (an append is under a page: a few tries at most).
SALES = [
    ("before", False, "visa", "no_sale", ()),      # offline: in test_every_command_on_a_full_disk_is_one_line...
    ("sale:after_card", True, "visa", "not_stored", ("approved_offline",)),
    # stored in the last page's slack, then a later write of the same sale (the attempt's mark, the
    # settled record) finds no page: told exactly how far it got, and each is checked below
    ("sale:after_card", False, "visa", "not_stored", ("approved", "kept_not_charged", "charged_not_stored")),
    ("sale:after_store", True, "visa", "approved_offline", ()),      # nothing more to write for it
    ("sale:after_store", False, "visa", "kept_not_charged", ("charged_not_stored",)),
    ("forward:after_mark", False, "visa", "charged_not_stored", ()),
    ("forward:after_send", False, "visa", "charged_not_stored", ()),
    ("forward:after_send", False, "insufficient_funds", "declined", ()),
    # settled in history, then the disk fills: taking it out of the queue is an append small enough to fit
    # almost always (it is durable as settled either way); when it does not, Stripe is asked
    ("settle:after_history", False, "visa", "approved", ("charged_not_stored",)),
]
TRIES = 40      # an append lands in the last page's slack more often than not: vary the alignment


def test_a_sale_on_a_filling_disk_is_never_shown_done_unless_stored_and_is_charged_once(
        small_disk, config, fake_stripe):
    disk, tally, seen = small_disk, Tally(), []
    known = set()
    for point, offline, card, target, also in SALES:
        for _ in range(TRIES):
            intents_before = len(fake_stripe.payment_intents)
            if point == "before":
                disk.fill()
            flags = ["--offline", "--yes"] if offline else []
            # a contact of another length each try moves where the sale's append lands in a page (a try's
            # records add up to about one page: with one length, every sale would land in the same slack)
            flags += ["--customer", f"{'v' * (1 + len(seen) * 113 % 240)}@example.com"]
            sale = disk.kiosk("charge", "10.00", "--card", card, *flags, "--config", config,
                              fill_at="" if point == "before" else point)
            told = outcome(sale)
            where = f"{point} {'offline' if offline else 'online'} {card}: told {told}"
            seen.append(f"{point}/{'offline' if offline else 'online'}/{card}: {told}")
            assert told in (target, *also), f"{where}: {sale.returncode} {sale.stdout} {sale.stderr}"
            if told == "no_sale":
                one_line(sale)
            if told == "charged_not_stored":
                assert len(fake_stripe.payment_intents) == intents_before + 1, where
            disk.free()
            synced = disk.kiosk("sync", "--config", config)
            assert synced.returncode == 0, f"{where}: {synced.stderr}"
            payments = queue(disk, config)
            new = [p for p in payments if p["id"] not in known]
            known |= {p["id"] for p in payments}
            if told in NOTHING:
                assert new == [] and len(fake_stripe.payment_intents) == intents_before, f"{where}: {new}"
                tally.count(fake_stripe, [], [where])
            else:
                assert len(new) == 1, f"{where}: {new}"
                assert new[0]["state"] == ("failed" if card == "insufficient_funds" else "succeeded"), where
                tally.count(fake_stripe, new, [])
            if told == target:
                break
        else:
            pytest.fail(f"{point} {card}: never told {target!r} in {TRIES} tries: {seen[-TRIES:]}")
    print(f"full disk, a sale at each point: {tally.line()}")
    print("\n".join(seen))
    assert tally.lost == 0 and tally.doubled == 0 and tally.survived == tally.tried == len(seen)
    kiosk_ids = [i["metadata"]["kiosk_payment_id"] for i in fake_stripe.payment_intents]
    assert len(kiosk_ids) == len(set(kiosk_ids))


@pytest.mark.parametrize("point", ["forward:after_send", "settle:after_history"])   # "before": the test below
def test_sync_on_a_filling_disk_says_so_in_one_line_and_charges_each_sale_once(
        small_disk, config, fake_stripe, point):
    disk = small_disk
    for amount in ("3.00", "4.00", "5.00"):
        assert disk.kiosk("charge", amount, "--offline", "--yes", "--config", config).returncode == 0
    synced = disk.kiosk("sync", "--config", config, fill_at=point)
    assert synced.returncode == 7, (synced.stdout, synced.stderr)
    # one line: a "payment sent" notice the feed could not keep on the full disk is dropped, not told again
    assert one_line(synced).startswith("kiosk: disk full: the data partition")
    disk.free()
    assert disk.kiosk("sync", "--config", config).returncode == 0
    payments = queue(disk, config)
    assert len(payments) == 3 and all(p["state"] == "succeeded" for p in payments), payments
    tally = Tally()
    tally.count(fake_stripe, payments, [])
    print(f"full disk at {point} during sync: {tally.line()}")
    assert tally.lost == 0 and tally.doubled == 0 and tally.survived == 3


def test_every_command_on_a_full_disk_is_one_line_and_exit_7(small_disk, config):
    disk = small_disk
    assert disk.kiosk("charge", "2.00", "--offline", "--yes", "--config", config).returncode == 0
    disk.fill()
    for args in (["status"], ["status", "--json"], ["queue"], ["notices"], ["sync"], ["check"],
                 ["charge", "2.00", "--offline", "--yes"], ["run", "--headless"]):
        result = disk.kiosk(*args, "--config", config)
        if args == ["check"]:           # "ready to sell offline?" answers, with the queue's line
            assert result.returncode == 1 and "disk full" in result.stdout, result.stdout
            continue
        assert result.returncode == 7, (args, result.stdout, result.stderr)
        assert "disk full" in one_line(result), args
    listed = subprocess.run([*disk.prefix, "ls", "-A", str(disk.path / "data")], capture_output=True, text=True)
    assert ".incomplete_startup" not in listed.stdout      # a start the disk refused is no crash: no safe mode
    disk.free()
    assert [p["amount"] for p in queue(disk, config)] == [200]


def test_status_warns_when_free_space_runs_low(small_disk, config):
    disk = small_disk
    status = json.loads(disk.kiosk("status", "--json", "--config", config).stdout)
    assert status["disk"]["low"] is False and status["disk"]["min_free_mb"] == 0.1
    disk.fill(leave=64 * 1024)            # under [storage] min_free_mb = 0.1 (100 KB), room to open
    assert disk.free_bytes() < 100_000
    text = disk.kiosk("status", "--config", config)
    assert text.returncode == 0, text.stderr
    [line] = [line for line in text.stdout.splitlines() if line.startswith("disk:")]
    assert "LOW: below [storage] min_free_mb = 0.1" in line
    status = json.loads(disk.kiosk("status", "--json", "--config", config).stdout)
    assert status["disk"]["low"] is True and status["disk"]["free_mb"] < 0.1


def test_what_counts_as_the_disk_refusing_a_write(tmp_path):
    """ENOSPC (a real write to /dev/full), EDQUOT and SQLite's "disk is full" are a full disk, even
    behind the store's own alarm; EIO is a failing card unless the partition is all but full."""
    from kiosk import StoreAlarm, disk_trouble
    from kiosk.disk_space import FAILING, FULL
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    fd = os.open("/dev/full", os.O_WRONLY)
    try:
        with pytest.raises(OSError) as written:
            os.write(fd, b"sale")
    finally:
        os.close(fd)
    try:
        try:
            raise written.value
        except OSError:
            raise StoreAlarm("live.kdb: append failed") from None    # as a store wraps it
    except StoreAlarm as alarm:
        assert disk_trouble(alarm) == FULL
    assert disk_trouble(OSError(errno.EDQUOT, os.strerror(errno.EDQUOT))) == FULL
    assert disk_trouble(StoreAlarm("history.sqlite: history cannot be used (database or disk is full)")) == FULL
    assert disk_trouble(OSError(errno.EIO, os.strerror(errno.EIO)), tmp_path) == FAILING
    assert disk_trouble(StoreAlarm("live.kdb: record 3 failed authentication"), tmp_path) is None
    assert disk_trouble(OSError(errno.EACCES, os.strerror(errno.EACCES)), tmp_path) is None


# -- the touchscreen ------------------------------------------------------------------

# one online sale on the touchscreen (SDL's dummy driver) in the small disk, the disk filling once
# Stripe has answered; prints every string of the result screen (argv: point, filler, config)
TOUCHSCREEN_SALE = WRAPPER.split("from kiosk import cli")[0] + r"""
import json, time
from pathlib import Path
import pygame
from kiosk.boot import open_kiosk, plugin_settings
os.environ["SDL_VIDEODRIVER"] = os.environ["SDL_AUDIODRIVER"] = "dummy"
kiosk = open_kiosk(Path(sys.argv[3]))
display = kiosk.host.call_on("touchscreen", "kiosk_open_display", kiosk=kiosk.view,
                             settings=plugin_settings(kiosk.host, kiosk.config, "touchscreen"))
display.catch_up()

def tap(name):
    x, y = display.widget(name).box.center
    for kind in (pygame.MOUSEBUTTONDOWN, pygame.MOUSEBUTTONUP):
        pygame.event.post(pygame.event.Event(kind, pos=(x, y), button=1))
    display.step()

for key in "12":
    tap("key_" + key)
tap("charge")
deadline = time.monotonic() + 60
while display.ui.screen != "result" and time.monotonic() < deadline:
    display.step(0.02)
display.step()
print(json.dumps({"screen": display.ui.screen, "texts": display.texts()}))
display.close()
kiosk.close()
"""


@pytest.mark.parametrize("language, words", [("en", "Charged at Stripe — do not charge again"),
                                             ("ja", "Stripeで請求済み — 再度請求しないでください")])
def test_the_touchscreen_says_charged_at_stripe_when_the_disk_fills_after_the_charge(
        small_disk, config, fake_stripe, tmp_path, language, words):
    disk = small_disk
    (tmp_path / "screen").mkdir()
    screen_config = write_config(tmp_path / "screen", fake_stripe.url, storage={"path": str(disk.path / "data")},
                                 display={"use": "touchscreen"}, kiosk={"language": language})
    code = TOUCHSCREEN_SALE.replace("FILL_CODE", repr(AT_POINT))
    shown = subprocess.run([*disk.prefix, sys.executable, "-c", code, "forward:after_send", str(disk.filler),
                            str(screen_config)], capture_output=True, text=True, cwd=ROOT, timeout=DEADLINE)
    assert shown.returncode == 0 and "Traceback" not in shown.stderr, shown.stderr
    frame = json.loads(shown.stdout.splitlines()[-1])
    text = " ".join(frame["texts"]) + "".join(frame["texts"])     # wrapped at spaces, or anywhere (Japanese)
    assert frame["screen"] == "result" and words in text, frame
    assert len(fake_stripe.payment_intents) == 1
    disk.free()
    assert disk.kiosk("sync", "--config", config).returncode == 0
    [payment] = queue(disk, config)
    assert payment["state"] == "succeeded" and len(fake_stripe.intents_for(payment["id"])) == 1


# -- kiosk run ------------------------------------------------------------------------

class Run:
    """``kiosk run --headless`` in the small disk, its log read as it comes."""

    def __init__(self, disk: SmallDisk, config: Path):
        self.proc = subprocess.Popen(disk.command("run", "--headless", "--config", config), cwd=ROOT,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line)

    def count(self, words: str) -> int:
        return sum(words in line for line in list(self.lines))

    def wait_for(self, condition, what: str) -> None:
        deadline = time.monotonic() + DEADLINE
        while not condition():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.stop()
                pytest.fail(f"kiosk run: {what} did not happen (exit {self.proc.returncode}): {''.join(self.lines)}")
            time.sleep(0.05)

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(DEADLINE)
        self.reader.join(DEADLINE)
        return "".join(self.lines)


def test_kiosk_run_tells_a_full_disk_once_per_crossing_and_forwards_once_space_is_freed(
        small_disk, config, fake_stripe):
    disk = small_disk
    fake_stripe.set_offline(True)
    for amount in ("6.00", "7.00", "8.00"):
        assert disk.kiosk("charge", amount, "--offline", "--yes", "--config", config).returncode == 0
    run = Run(disk, config)
    run.wait_for(lambda: run.count("running headless"), "start")
    disk.fill()
    fake_stripe.set_offline(False)
    run.wait_for(lambda: run.count("Disk full:"), "the disk-full notice")
    passes = len(fake_stripe.requests)
    run.wait_for(lambda: len(fake_stripe.requests) >= passes + 5, "five more passes")    # each asks Stripe
    assert run.count("Disk full:") == 1 and run.count("Disk space low:") == 1
    # an attempt marked (the mark may fit in its page) whose answer cannot be stored is looked up, never resent
    sent = [i["metadata"]["kiosk_payment_id"] for i in fake_stripe.payment_intents]
    assert len(sent) == len(set(sent)) <= 3
    disk.free()
    run.wait_for(lambda: run.count("Payment sent:") == 3, "three payments forwarded")
    passes = len(fake_stripe.requests)
    run.wait_for(lambda: len(fake_stripe.requests) >= passes + 2, "a pass that sees the room")
    disk.fill()                                     # a second crossing: told again, once
    run.wait_for(lambda: run.count("Disk space low:") == 2, "the second low-space notice")
    log = run.stop()
    assert run.proc.returncode == 0, log
    assert "Traceback" not in log and "storage damaged" not in log.lower(), log
    disk.free()
    payments = queue(disk, config)
    tally = Tally()
    tally.count(fake_stripe, payments, [])
    print(f"full disk under kiosk run: {tally.line()}")
    assert tally.lost == 0 and tally.doubled == 0 and tally.survived == 3 == len(payments)
