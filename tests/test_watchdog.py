"""systemd's watchdog, from systemd's side of the socket: the real ``kiosk
run`` as a child process, ``$NOTIFY_SOCKET`` a Unix datagram socket this test
owns (as systemd's is), ``WATCHDOG_USEC`` as systemd sets it.  READY=1 once up,
WATCHDOG=1 again and again while the loops turn -- and none while the
background loop hangs on a Stripe that takes a payment and never answers
(the fake's ``hang_next``: nothing in the kiosk is patched), STOPPING=1 on
SIGTERM.  The beat rule itself (every watched loop, or no beat) is driven on
the same kind of socket."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import pytest

from conftest import run_kiosk, write_config
from kiosk import watchdog
from kiosk.watchdog import BACKGROUND, SCREEN, Watchdog

WATCHDOG_SEC = 1.0          # what the unit's WatchdogSec= would be; small, so the test is short
DEADLINE = 60.0             # for what must come (a slow machine is not a failure)


class NotifySocket:
    """systemd's end of sd_notify(3): a bound AF_UNIX datagram socket."""

    def __init__(self):
        self._dir = tempfile.mkdtemp(prefix="kiosk-notify-", dir="/tmp")   # sun_path holds 107 bytes
        self.path = os.path.join(self._dir, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.received: list[str] = []

    def next(self, timeout: float) -> str | None:
        """The next notification, or None if none came within ``timeout`` s."""
        self.sock.settimeout(timeout)
        try:
            message = self.sock.recv(4096).decode()
        except socket.timeout:
            return None
        self.received.append(message)
        return message

    def wait_for(self, state: str, timeout: float = DEADLINE) -> None:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            if self.next(left) == state:
                return
        pytest.fail(f"no {state} within {timeout:g} s; got {self.received[-5:]}")

    def drain(self) -> list[str]:
        """What is already queued (sent before now)."""
        self.sock.setblocking(False)
        got = []
        try:
            while True:
                got.append(self.sock.recv(4096).decode())
        except BlockingIOError:
            return got
        finally:
            self.sock.setblocking(True)

    def collect(self, seconds: float) -> list[str]:
        """Everything that arrives in the next ``seconds``."""
        deadline = time.monotonic() + seconds
        got = []
        while (left := deadline - time.monotonic()) > 0:
            message = self.next(left)
            if message is not None:
                got.append(message)
        return got

    def close(self):
        self.sock.close()
        os.unlink(self.path)
        os.rmdir(self._dir)


@pytest.fixture
def notify_socket():
    sock = NotifySocket()
    yield sock
    sock.close()


def systemd_env(notify_socket: NotifySocket, **extra) -> dict:
    return dict(os.environ, NOTIFY_SOCKET=notify_socket.path, WATCHDOG_USEC=str(int(WATCHDOG_SEC * 1e6)),
                **extra)


def wait_until(condition, what: str, timeout: float = DEADLINE, reading: NotifySocket | None = None) -> None:
    """Poll ``condition``; meanwhile read ``reading`` as systemd would (a full socket blocks the sender)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout:g} s")
        if reading is None or reading.next(0.05) is None:
            time.sleep(0.05)


def payment_posts(fake_stripe) -> list[dict]:
    return [r for r in fake_stripe.requests if r["method"] == "POST" and r["path"] == "/v1/payment_intents"]


@pytest.mark.parametrize("screen", [False, True], ids=["headless", "touchscreen"])
def test_beats_while_the_loops_turn_and_not_while_the_background_loop_hangs(
        tmp_path, fake_stripe, notify_socket, screen):
    display = {"display": {"use": "touchscreen"}} if screen else {}
    config = write_config(tmp_path, fake_stripe.url, sync={"poll_seconds": 0.2, "retry_base_seconds": 0.0},
                          stripe={"request_timeout": 3600.0}, **display)   # the hang is Stripe's, not a timeout
    assert run_kiosk("init", "--config", config).returncode == 0
    sale = run_kiosk("charge", "7.00", "--offline", "--config", config)
    assert sale.returncode == 0, sale.stderr
    fake_stripe.set_offline(True)      # Stripe out of reach: the background loop polls and sleeps
    args = ["run", "--config", str(config)] + ([] if screen else ["--headless"])
    env = systemd_env(notify_socket, SDL_VIDEODRIVER="dummy", SDL_AUDIODRIVER="dummy")
    kiosk = subprocess.Popen([sys.executable, "-m", "kiosk.cli", *args], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        notify_socket.wait_for("READY=1")
        for _ in range(3):
            notify_socket.wait_for("WATCHDOG=1")

        # Stripe is back, takes the payment, and never answers: the pass hangs inside the background loop
        fake_stripe.hang_next(1, 3600)
        fake_stripe.set_offline(False)
        wait_until(lambda: payment_posts(fake_stripe), "the kiosk sent the payment", reading=notify_socket)
        notify_socket.drain()           # beats sent before the request went out
        silence = notify_socket.collect(3 * WATCHDOG_SEC)
        assert "WATCHDOG=1" not in silence, f"beat while the background loop hung: {silence}"
        assert kiosk.poll() is None     # hung, not dead: only systemd's watchdog would end it

        fake_stripe.stop()              # the hung request is cut: the pass ends, the loop turns again
        notify_socket.wait_for("WATCHDOG=1")

        kiosk.send_signal(signal.SIGTERM)
        notify_socket.wait_for("STOPPING=1")
        _, err = kiosk.communicate(timeout=DEADLINE)
        assert kiosk.returncode == 0, err
    finally:
        if kiosk.poll() is None:
            kiosk.kill()
            kiosk.wait()
    if screen:
        assert "carrying on headless" not in err     # the screen's loop was there to be watched


def test_outside_systemd_kiosk_run_tells_nobody(tmp_path, fake_stripe):
    """No $NOTIFY_SOCKET (a WATCHDOG_USEC alone means nothing): nothing is tried, nothing complains."""
    config = write_config(tmp_path, fake_stripe.url, sync={"poll_seconds": 0.1})
    assert run_kiosk("init", "--config", config).returncode == 0
    env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
    env["WATCHDOG_USEC"] = "1000000"
    kiosk = subprocess.Popen([sys.executable, "-m", "kiosk.cli", "run", "--headless", "--config", str(config)],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: len(fake_stripe.requests) >= 3, "the background loop polled Stripe")
        kiosk.send_signal(signal.SIGTERM)
        _, err = kiosk.communicate(timeout=DEADLINE)
    finally:
        if kiosk.poll() is None:
            kiosk.kill()
            kiosk.wait()
    assert kiosk.returncode == 0, err
    assert "running headless" in err and "tell systemd" not in err and "told systemd" not in err


# -- the beat rule, on the same socket ---------------------------------------------

def systemd_asks(monkeypatch, notify_path, **extra) -> Watchdog:
    """A Watchdog as ``kiosk run`` makes it under systemd (libsystemd reads the real environment)."""
    monkeypatch.setenv("NOTIFY_SOCKET", str(notify_path))
    monkeypatch.setenv("WATCHDOG_USEC", str(int(WATCHDOG_SEC * 1e6)))
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    for name, value in extra.items():
        monkeypatch.setenv(name, value)
    return Watchdog.from_environment()


@pytest.fixture
def dog(monkeypatch, notify_socket):
    dog = systemd_asks(monkeypatch, notify_socket.path)
    dog.watch(BACKGROUND)
    dog.ready()
    assert notify_socket.next(DEADLINE) == "READY=1"
    return dog


def beat_after(dog, notify_socket, *loops) -> bool:
    """Tick ``loops`` once a beat's minimum gap has passed; True if a beat came of it."""
    time.sleep(WATCHDOG_SEC / watchdog.MIN_GAP)
    for loop in loops:
        dog.tick(loop)
    return "WATCHDOG=1" in notify_socket.drain()


def test_a_hung_screen_stops_the_beats_however_busy_the_background_loop_is(dog, notify_socket):
    assert beat_after(dog, notify_socket, BACKGROUND)          # headless so far: the background loop alone
    assert beat_after(dog, notify_socket, SCREEN, BACKGROUND)  # the screen's first heartbeat: watched from now
    for _ in range(5):                                         # the screen hangs; forwarding goes on
        assert not beat_after(dog, notify_socket, BACKGROUND)
    assert beat_after(dog, notify_socket, SCREEN)              # it turns again: one beat for both
    dog.forget(SCREEN)                                         # the display failed; headless from here
    assert beat_after(dog, notify_socket, BACKGROUND)


def test_ready_then_beats_then_stopping_once_and_nothing_after(monkeypatch, notify_socket):
    dog = systemd_asks(monkeypatch, notify_socket.path)
    dog.tick(BACKGROUND)
    assert notify_socket.drain() == []          # systemd's watchdog starts at READY=1: no beat before
    dog.ready()
    time.sleep(WATCHDOG_SEC / watchdog.MIN_GAP)
    dog.tick(BACKGROUND)
    dog.tick(BACKGROUND)                        # within the minimum gap: no second beat
    dog.stopping()
    dog.stopping()
    time.sleep(WATCHDOG_SEC / watchdog.MIN_GAP)
    dog.tick(BACKGROUND)
    assert notify_socket.drain() == ["READY=1", "WATCHDOG=1", "STOPPING=1"]


def test_a_watchdog_meant_for_another_process_is_not_beaten(monkeypatch, notify_socket):
    """WATCHDOG_PID names the process systemd watches: a child that inherited it stays quiet."""
    inherited = systemd_asks(monkeypatch, notify_socket.path, WATCHDOG_PID=str(os.getppid()))
    assert inherited.timeout is None
    inherited.ready()
    assert not beat_after(inherited, notify_socket, BACKGROUND)
    ours = systemd_asks(monkeypatch, notify_socket.path, WATCHDOG_PID=str(os.getpid()))
    assert ours.timeout == WATCHDOG_SEC and ours.tick_every == WATCHDOG_SEC / watchdog.SLICES


def test_a_sleeping_loop_ticks_between_slices(dog, notify_socket, monkeypatch):
    """``watchdog.wait`` (the background loop's sleep) beats while it sleeps and wakes at once when woken."""
    monkeypatch.setattr(watchdog, "_current", dog)     # what watchdog.start() does in kiosk run
    wake = threading.Event()
    slept = []
    sleeper = threading.Thread(target=lambda: slept.append(watchdog.wait(wake, 3 * WATCHDOG_SEC, BACKGROUND)))
    sleeper.start()
    heard = []
    while sleeper.is_alive():                 # read as systemd does, while the loop sleeps
        heard.append(notify_socket.next(WATCHDOG_SEC))
    sleeper.join()
    assert slept == [False]
    assert heard.count("WATCHDOG=1") >= 2, heard   # a 3 s sleep under a 1 s watchdog: beats in between
    wake.set()
    assert watchdog.wait(wake, 3600, BACKGROUND) is True


def test_outside_systemd_nothing_is_sent_and_sleeps_are_whole(monkeypatch, notify_socket):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")
    dog = Watchdog.from_environment()
    assert not dog.active and dog.tick_every is None
    dog.ready()
    assert not beat_after(dog, notify_socket, BACKGROUND)
    dog.stopping()
    assert notify_socket.drain() == []


def test_a_gone_socket_is_logged_once_and_never_raised(monkeypatch, tmp_path, caplog):
    dog = systemd_asks(monkeypatch, tmp_path / "gone")
    dog.ready()
    time.sleep(WATCHDOG_SEC / watchdog.MIN_GAP)
    dog.tick(BACKGROUND)
    dog.stopping()
    errors = [r for r in caplog.records if "could not tell systemd" in r.getMessage()]
    assert len(errors) == 1 and "READY=1" in errors[0].getMessage()
