"""``kiosk status``, ``queue``, ``notices``, ``sync`` and ``charge`` while a
real ``kiosk run`` holds the queue: they reach it through ``kiosk.sock`` and
print what they print with no kiosk running, with the same exit code.

``kiosk run`` is always a real child process (headless, against the fake
Stripe); the commands run in this process (``run_kiosk``: refused the queue,
they ask the running kiosk) or as children where killing them is the point.
Attacks: the caller killed mid-charge and at the offline prompt, ``kiosk
run`` killed (a stale socket), a symbolic link planted at the socket's name,
another user, and requests that are not what the protocol says."""
from __future__ import annotations

import json
import os
import pty
import re
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import run_json, run_kiosk, write_config
from kiosk import local_socket

START_SECONDS = 60       # a deadline for `kiosk run` to come up, never a measure of anything


def kiosk_cmd(*args):
    return [sys.executable, "-m", "kiosk.cli", *map(str, args)]


class Running:
    """``kiosk run --headless`` in a child process, its log in a file."""

    def __init__(self, config: Path, data_dir: Path):
        self.config, self.data_dir = config, data_dir
        self.log_path = config.parent / f"run-{time.monotonic_ns()}.log"
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(kiosk_cmd("run", "--headless", "--config", config),
                                         stdout=subprocess.DEVNULL, stderr=log, env=dict(os.environ))

    def log(self) -> str:
        return self.log_path.read_text()

    def wait_for_log(self, words: str) -> None:
        deadline = time.monotonic() + START_SECONDS
        while words not in self.log():
            assert self.proc.poll() is None, f"kiosk run exited {self.proc.returncode}: {self.log()}"
            assert time.monotonic() < deadline, f"no {words!r} in the log of kiosk run: {self.log()}"
            time.sleep(0.05)

    def wait_serving(self) -> "Running":
        self.wait_for_log("commands reach this kiosk through")
        return self

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            assert self.proc.wait(60) == 0, self.log()

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(60)


@pytest.fixture
def config(tmp_path, fake_stripe):
    # the forwarder sleeps an hour between passes: only the commands under test forward
    path = write_config(tmp_path, fake_stripe.url, sync={"poll_seconds": 3600})
    assert run_kiosk("init", "--config", path).returncode == 0
    return path


@pytest.fixture
def running(config, tmp_path):
    started = []

    def start() -> Running:
        run = Running(config, tmp_path / "data").wait_serving()
        started.append(run)
        return run
    yield start
    for run in started:
        if run.proc.poll() is None:
            run.stop()


IDS = re.compile(r"\b(kp|pi)_[0-9A-Za-z]+")
TIMES = re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d([.,]\d+)?Z?")     # stored times, log lines


def same_shape(text: str) -> str:
    """Output with payment ids and times taken out: two sales differ only there."""
    return TIMES.sub("<time>", IDS.sub(r"\1_<id>", text))


def outcome(result) -> tuple:
    return result.returncode, result.stdout, result.stderr


def talk(data_dir: Path, raw: bytes, answers=()) -> list[dict]:
    """The protocol by hand: send ``raw``, answer each ``read`` from ``answers``, collect to ``exit``."""
    answers = list(answers)
    with socket.socket(socket.AF_UNIX) as conn:
        conn.connect(str(data_dir / local_socket.SOCKET_NAME))
        conn.sendall(raw)
        got = []
        with conn.makefile("rb") as lines:
            for line in lines:
                message = json.loads(line)
                got.append(message)
                if "read" in message:
                    conn.sendall(json.dumps({"line": answers.pop(0)}).encode() + b"\n")
                if "exit" in message:
                    break
    return got


def request(argv, tty=False) -> bytes:
    return json.dumps({"argv": argv, "tty": tty}).encode() + b"\n"


# -- the same output, the same exit codes ------------------------------------------------

READ_COMMANDS = [("notices",), ("notices", "--json"), ("notices", "--limit", "2"),
                 ("queue",), ("queue", "--json"), ("queue", "--limit", "1"), ("queue", "--all", "--json"),
                 ("queue", "--since", "2000-01-01"), ("queue", "--since", "tomorrow"),
                 ("queue", "--limit", "-1")]


def status_shape(text: str) -> str:
    """``kiosk status`` without what moves by itself: times, and the free space other programs use."""
    return same_shape("".join(line for line in text.splitlines(True) if not line.startswith("disk:")))


def test_listings_and_status_through_the_running_kiosk_are_what_they_are_alone(config, running, fake_stripe):
    assert run_kiosk("charge", "12.50", "--config", config).returncode == 0
    assert run_kiosk("charge", "2.00", "--card", "insufficient_funds", "--config", config).returncode == 1
    fake_stripe.set_offline(True)          # nothing forwards while outputs are compared
    assert run_kiosk("charge", "3.00", "--yes", "--config", config).returncode == 0
    assert run_kiosk("status", "--config", config).returncode == 0      # the kiosk has seen Stripe offline
    run = running()
    served = {args: outcome(run_kiosk(*args, "--config", config)) for args in READ_COMMANDS}
    status = run_kiosk("status", "--config", config)
    status_json = run_json("status", "--config", config)
    run.stop()
    alone = {args: outcome(run_kiosk(*args, "--config", config)) for args in READ_COMMANDS}
    assert served == alone
    status_alone = run_kiosk("status", "--config", config)
    assert status.returncode == status_alone.returncode == 0
    assert status_shape(status.stdout) == status_shape(status_alone.stdout)
    assert "OFFLINE" in status.stdout and "pending: 1 ($3.00)" in status.stdout
    # a kiosk opened afresh tells "Offline" as it finds it so; the running one told it when it did
    assert status.stderr == "" and "Offline: sales are stored on the kiosk" in status_alone.stderr
    assert served[("queue",)][1].count("\n") == 3 and served[("queue", "--limit", "-1")][0] == 2
    # served, not refused: all but the two whose arguments are refused before the queue is opened
    assert run.log().count("asked by pid") == len(READ_COMMANDS) - 2 + 2
    status_alone = run_json("status", "--config", config)
    assert status_json.keys() == status_alone.keys()
    assert status_json["pending"] == status_alone["pending"] and status_json["pending"]["count"] == 1
    assert status_json["online"] is status_alone["online"] is False


def test_charge_through_the_running_kiosk_prints_and_exits_as_alone(config, running, fake_stripe):
    sales = [("12.50",), ("2.00", "--card", "insufficient_funds"), ("3.00", "--offline"),
             ("150.00", "--offline"), ("abc",), ("0.10",), ("5.00", "--json"), ("4.00", "--offline", "--json")]
    run = running()
    served = [outcome(run_kiosk("charge", *sale, "--config", config)) for sale in sales]
    run.stop()
    charged = len(fake_stripe.payment_intents)
    alone = [outcome(run_kiosk("charge", *sale, "--config", config)) for sale in sales]
    assert [(code, same_shape(out), same_shape(err)) for code, out, err in served] == \
           [(code, same_shape(out), same_shape(err)) for code, out, err in alone]
    assert [code for code, _, _ in served] == [0, 1, 0, 1, 2, 2, 0, 0]
    assert served[0][1].startswith("APPROVED: $12.50 visa •••• 4242 (kp_")
    # one PaymentIntent per online sale each time: nothing charged twice through the socket
    assert charged == 3 and len(fake_stripe.payment_intents) == 6
    assert run.log().count("`kiosk charge` asked by pid") == len(sales)


def test_offline_sale_without_a_terminal_is_not_confirmed_as_alone(config, running, fake_stripe):
    fake_stripe.set_offline(True)
    run = running()
    served = outcome(run_kiosk("charge", "6.00", "--config", config))
    answered = outcome(run_kiosk("charge", "6.00", "--config", config, input="y\n"))
    run.stop()
    code, out, err = outcome(run_kiosk("charge", "6.00", "--config", config))
    # a kiosk opened afresh tells "Offline" as it finds it so; the running one told it when it started
    told, err = err.split("\n", 1)
    assert told.endswith("WARNING kiosk.notice: Offline: sales are stored on the kiosk")
    assert served == (code, out, err)
    assert served[0] == 1 and "pass --yes to confirm offline sales without a prompt" in served[2]
    assert answered == served          # piped input is no terminal: never taken as a "yes"
    assert run_json("queue", "--config", config) == []


def read_until(fd: int, words: bytes) -> bytes:
    seen = b""
    while words not in seen:
        chunk = os.read(fd, 4096)
        assert chunk, f"ended before {words!r}: {seen!r}"
        seen += chunk
    return seen


def test_offline_prompt_reaches_the_callers_terminal(config, running, fake_stripe):
    fake_stripe.set_offline(True)
    running()
    terminal, keyboard = pty.openpty()
    try:
        proc = subprocess.Popen(kiosk_cmd("charge", "7.00", "--config", config), stdin=keyboard,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        read_until(proc.stdout.fileno(), b"Confirm offline sale? [y/N] ")
        os.write(terminal, b"y\n")
        out, err = proc.communicate(timeout=60)
    finally:
        os.close(terminal)
        os.close(keyboard)
    assert proc.returncode == 0, err
    assert b"APPROVED OFFLINE: $7.00" in out and b"Store this sale offline? $7.00" in err
    [sale] = run_json("queue", "--config", config)
    assert sale["state"] == "pending" and sale["offline"] and sale["amount"] == 700


def test_caller_killed_at_the_offline_prompt_stores_nothing(config, running, fake_stripe):
    fake_stripe.set_offline(True)
    run = running()
    terminal, keyboard = pty.openpty()
    try:
        proc = subprocess.Popen(kiosk_cmd("charge", "8.00", "--config", config), stdin=keyboard,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        read_until(proc.stdout.fileno(), b"[y/N] ")
        proc.kill()
        proc.communicate(timeout=60)
    finally:
        os.close(terminal)
        os.close(keyboard)
    assert run_json("queue", "--config", config) == []        # served next, once the prompt gave up
    assert "asked by pid" in run.log() and run.proc.poll() is None
    assert outcome(run_kiosk("charge", "8.00", "--yes", "--config", config))[0] == 0
    assert len(run_json("queue", "--config", config)) == 1


def test_caller_killed_mid_charge_the_sale_goes_on_and_is_taken_once(tmp_path, fake_stripe, running):
    # Stripe holds its answer 10 s; the kiosk waits up to 30 s for it: the caller dies in between
    config = write_config(tmp_path, fake_stripe.url, sync={"poll_seconds": 3600},
                          stripe={"request_timeout": 30.0})
    assert run_kiosk("init", "--config", config).returncode == 0
    run = running()
    fake_stripe.hang_next(1, 10)
    proc = subprocess.Popen(kiosk_cmd("charge", "9.00", "--config", config),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + START_SECONDS
    while not fake_stripe.payment_intents:
        assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL and b"APPROVED" not in out
    # served after the sale: the running kiosk takes one command at a time
    [sale] = run_json("queue", "--config", config)
    assert sale["state"] == "succeeded" and sale["amount"] == 900
    [intent] = fake_stripe.payment_intents
    assert intent["metadata"]["kiosk_payment_id"] == sale["id"] and sale["payment_intent"] == intent["id"]
    assert "the caller hung up; the sale went on and is in the queue" in run.log()
    run.stop()
    assert run_kiosk("sync", "--config", config).returncode == 0
    assert len(fake_stripe.payment_intents) == 1


def test_kiosk_run_killed_mid_charge_the_caller_says_so_and_the_sale_settles_once(tmp_path, fake_stripe):
    config = write_config(tmp_path, fake_stripe.url, sync={"poll_seconds": 3600},
                          stripe={"request_timeout": 30.0})
    assert run_kiosk("init", "--config", config).returncode == 0
    run = Running(config, tmp_path / "data").wait_serving()
    fake_stripe.hang_next(1, 10)
    proc = subprocess.Popen(kiosk_cmd("charge", "9.00", "--config", config),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + START_SECONDS
    while not fake_stripe.payment_intents:
        assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    run.kill()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 5 and out == "" and "APPROVED" not in err
    assert err == ("kiosk: alarm: the running kiosk stopped before it answered; "
                   "check `kiosk queue` before charging the card again\n")
    [sale] = run_json("queue", "--config", config)
    assert sale["state"] == "forwarding"                 # outcome unknown, not guessed
    fake_stripe.prune_idempotency_keys()
    assert run_kiosk("sync", "--config", config).returncode == 0
    [sale] = run_json("queue", "--config", config)
    assert sale["state"] == "succeeded" and len(fake_stripe.intents_for(sale["id"])) == 1


def test_sync_through_the_running_kiosk_forwards_now_and_reports(config, running, fake_stripe):
    fake_stripe.set_offline(True)
    run = running()
    for amount in ("4.00", "5.00"):
        assert run_kiosk("charge", amount, "--yes", "--config", config).returncode == 0
    unreachable = outcome(run_kiosk("sync", "--config", config))
    assert unreachable[0] == 3 and unreachable[2].endswith("nothing sent; 2 pending\n") and unreachable[1] == ""
    assert fake_stripe.payment_intents == []
    fake_stripe.set_offline(False)
    report = run_json("sync", "--config", config)
    assert report["reached"] and (report["succeeded"], report["failed"], report["pending"]) == (2, 0, 0)
    assert outcome(run_kiosk("sync", "--config", config)) == (0, "succeeded 0, failed 0, pending 0\n", "")
    assert len(fake_stripe.payment_intents) == 2
    run.stop()
    assert outcome(run_kiosk("sync", "--config", config)) == (0, "succeeded 0, failed 0, pending 0\n", "")
    fake_stripe.set_offline(True)
    assert outcome(run_kiosk("sync", "--config", config))[:2] == (3, "")


# -- made safely, stopped safely ----------------------------------------------------------

@pytest.mark.parametrize("long_path", [False, True])
def test_killed_kiosk_run_leaves_a_stale_socket_and_the_next_one_starts(tmp_path, fake_stripe, long_path):
    # a data directory whose socket path is longer than a Unix socket address holds (108 bytes)
    data = tmp_path / ("d" * 90 if long_path else ".") / "data"
    config = write_config(tmp_path, fake_stripe.url, storage={"path": str(data)}, sync={"poll_seconds": 3600})
    assert run_kiosk("init", "--config", config).returncode == 0
    assert (len(str(data / local_socket.SOCKET_NAME)) > 108) is long_path
    first = Running(config, data).wait_serving()
    assert run_kiosk("status", "--config", config).returncode == 0
    first.kill()
    sock = data / local_socket.SOCKET_NAME
    assert stat.S_ISSOCK(os.lstat(sock).st_mode)                # stale: nothing listens on it
    assert run_kiosk("charge", "5.00", "--config", config).returncode == 0     # the lock went with the process
    second = Running(config, data).wait_serving()
    try:
        mode = os.lstat(sock)
        assert stat.S_IMODE(mode.st_mode) == 0o600 and mode.st_uid == os.geteuid()
        assert len(run_json("queue", "--config", config)) == 1
        assert "asked by pid" in second.log()
    finally:
        second.stop()
    assert not os.path.lexists(sock)          # a clean stop takes its socket away


@pytest.mark.parametrize("planted", ["symlink", "file"])
def test_something_planted_at_the_socket_name_is_never_followed_or_removed(config, tmp_path, planted):
    sock = tmp_path / "data" / local_socket.SOCKET_NAME
    target = tmp_path / "elsewhere"
    if planted == "symlink":
        sock.symlink_to(target)
    else:
        sock.write_text("not a socket")
    run = Running(config, tmp_path / "data")
    run.wait_for_log("commands cannot reach this kiosk while it runs")
    try:
        assert run.proc.poll() is None               # it sells all the same
        assert os.path.lexists(sock) and not target.exists()
        assert stat.S_ISLNK(os.lstat(sock).st_mode) if planted == "symlink" else sock.read_text() == "not a socket"
        refused = run_kiosk("status", "--config", config)   # nothing to ask: refused as before
        assert refused.returncode == 5 and "in use by another kiosk process" in refused.stderr
        assert refused.stderr.count("\n") == 1
    finally:
        run.stop()
    assert os.path.lexists(sock) and not target.exists()


def test_second_kiosk_run_is_refused_and_leaves_the_first_ones_socket(config, running):
    first = running()
    sock = first.data_dir / local_socket.SOCKET_NAME
    inode = os.lstat(sock).st_ino
    second = subprocess.run(kiosk_cmd("run", "--headless", "--config", config), capture_output=True, text=True,
                            timeout=60)
    assert second.returncode == 5 and "in use by another kiosk process" in second.stderr
    assert os.lstat(sock).st_ino == inode and run_kiosk("status", "--config", config).returncode == 0


OTHER_USER = """
import json, os, socket, sys
os.chdir(sys.argv[1])          # as root (the test's folders are root's); the rest as nobody
os.setgid(65534); os.setuid(65534)
conn = socket.socket(socket.AF_UNIX)
try:
    conn.connect("kiosk.sock")
except PermissionError:
    print("permission denied"); sys.exit(0)
try:
    conn.sendall(json.dumps({"argv": ["queue", "--json"], "tty": False}).encode() + b"\\n")
except BrokenPipeError:       # refused before it could ask: what the kiosk said is still there to read
    pass
for line in conn.makefile("rb"):      # to its last line: the kiosk hangs up on what it did not read
    print(line.decode(), end="")
    if b'"exit"' in line:
        break
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to become another user (os.setuid)")
def test_another_user_cannot_connect_even_if_the_permissions_are_opened(config, running):
    run = running()
    assert run_kiosk("charge", "5.00", "--config", config).returncode == 0
    data = run.data_dir
    sock = data / local_socket.SOCKET_NAME

    def as_nobody() -> str:
        result = subprocess.run([sys.executable, "-c", OTHER_USER, str(data)], capture_output=True, text=True,
                                timeout=60)
        assert result.returncode == 0, result.stderr
        return result.stdout
    assert as_nobody().strip() == "permission denied"       # 0600 in a 0700 directory
    os.chmod(data, 0o711)
    os.chmod(sock, 0o777)
    try:
        answer = [json.loads(line) for line in as_nobody().splitlines() if line.strip()]
    finally:
        os.chmod(sock, 0o600)
        os.chmod(data, 0o700)
    # SO_PEERCRED: still refused, in one line, and nothing of the queue in it
    assert answer == [{"err": "kiosk: error: the running kiosk takes commands only from its own user\n"},
                      {"exit": 2}]
    assert "refused a command from uid 65534" in run.log()
    assert len(run_json("queue", "--config", config)) == 1


# -- requests that are not what the protocol says ----------------------------------------------

@pytest.mark.parametrize("raw, words", [
    (b"not json\n", "bad request to the running kiosk: not JSON"),
    (b'{"argv": 5}\n', "argv must be a list of strings"),
    (b'{"argv": ["status"], "tty": "yes"}\n', "argv must be a list of strings and tty true or false"),
    (b'{"argv": ["status"], "token": "x"}\n', "not an object with argv and tty"),
    (b"[1, 2]\n", "not an object with argv and tty"),
    (b'{"argv": ["' + b"q" * 20000 + b'"]}\n', "longer than 16384 bytes"),
    (b'{"argv": ["status"]}', "not one line"),
    (request(["run", "--headless"]), "`kiosk run` does not run through the running kiosk"),
    (request(["init"]), "`kiosk init` does not run through the running kiosk"),
    (request(["check"]), "`kiosk check` does not run through the running kiosk"),
    (request(["charge"]), "the following arguments are required: amount"),
    (request(["nosuch"]), "invalid choice"),
])
def test_a_bad_request_gets_one_line_and_the_kiosk_serves_on(config, running, raw, words):
    run = running()
    data = run.data_dir
    with socket.socket(socket.AF_UNIX) as conn:
        conn.connect(str(data / local_socket.SOCKET_NAME))
        conn.sendall(raw)
        conn.shutdown(socket.SHUT_WR)         # all the request there is
        got = []
        for line in conn.makefile("rb"):      # to the exit line: the kiosk hangs up on what it did not read
            got.append(json.loads(line))
            if "exit" in got[-1]:
                break
    assert got[-1] == {"exit": 2}
    errors = "".join(m.get("err", "") for m in got)
    assert words in errors and errors.count("\n") == 1 and "Traceback" not in errors
    assert not any("out" in m for m in got)
    assert "q" * 100 not in errors           # what was sent is never echoed
    assert talk(data, request(["queue"]))[-1] == {"exit": 0}
    assert "Traceback" not in run.log()


def test_a_silent_caller_is_timed_out_and_the_next_one_served(config, running):
    run = running()
    data = run.data_dir
    with socket.socket(socket.AF_UNIX) as silent:
        silent.connect(str(data / local_socket.SOCKET_NAME))
        # served once the silent caller's request time is up
        assert run_kiosk("notices", "--config", config).returncode == 0
        got = [json.loads(line) for line in silent.makefile("rb")]
    assert got == [{"err": f"kiosk: error: no request within {local_socket.REQUEST_SECONDS:.0f} s\n"},
                   {"exit": 2}]


def test_a_listing_stops_when_its_caller_hangs_up(config, running, fake_stripe):
    fake_stripe.set_offline(True)
    for amount in range(5, 25):           # more than one piece of `queue --all --json` output
        assert run_kiosk("charge", f"{amount}.00", "--offline", "--config", config).returncode == 0
    run = running()
    sock = str(run.data_dir / local_socket.SOCKET_NAME)
    with socket.socket(socket.AF_UNIX) as holder, socket.socket(socket.AF_UNIX) as listing:
        # the kiosk is busy asking `holder` about an offline sale while `listing` asks and hangs up
        holder.connect(sock)
        holder.sendall(request(["charge", "6.00"], tty=True))
        answers = holder.makefile("rb")
        while "read" not in json.loads(answers.readline()):
            pass
        listing.connect(sock)
        listing.sendall(request(["queue", "--all", "--json"]))
        listing.shutdown(socket.SHUT_RDWR)
        listing.close()
        holder.sendall(json.dumps({"line": "n\n"}).encode() + b"\n")
        said = [json.loads(line) for line in answers]
        assert said[-1] == {"exit": 1} and "CANCELLED" in "".join(m.get("out", "") for m in said)
    # the next caller is served once the listing has stopped
    assert len(run_json("queue", "--all", "--config", config)) == 20
    assert "`kiosk queue`: the caller hung up; stopped" in run.log() and "Traceback" not in run.log()
