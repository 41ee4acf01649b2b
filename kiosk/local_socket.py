"""``kiosk status``, ``queue``, ``notices``, ``sync``, ``charge``, ``void``,
``refund`` and ``report`` while
``kiosk run`` holds the queue: the running kiosk listens on a Unix socket in
its data directory (``kiosk.sock``) and runs those commands itself, on the
kiosk it already has open, sending back what the command prints and its exit
code; the CLI, refused the queue (``StoreBusy``), asks it there.

What it keeps to:

- only the kiosk's own user or root gets in: the socket is 0600 in the 0700
  data directory, and the server checks the caller's ``SO_PEERCRED`` (the
  client checks the server's the same way);
- it is made safely: a socket left by a killed ``kiosk run`` is replaced only
  when nothing answers on it; a symbolic link, or anything else that is not a
  socket, is never followed and never removed;
- one request at a time, on its own thread, never the screen's; a request is
  one small JSON line (size-limited, read with a timeout); a bad one gets one
  line and an exit code, never a traceback;
- a command's output is exactly what the command prints run on its own
  (the same code runs it); nothing else goes back, and the request's
  arguments are never logged (a contact may be among them);
- a charge, void or refund whose caller disconnects carries on and is
  recorded (``kiosk queue`` shows how it ended): it is never left
  half-done, never taken twice.
  The offline prompt reaches the caller's terminal as it does locally; if the
  caller is gone or does not answer, the sale is not confirmed and nothing is
  stored.

Wire format, one JSON object a line.  Request: ``{"argv": [...], "tty":
bool}``.  Answers: ``{"out": text}``, ``{"err": text}``, ``{"read": true}``
(the command reads a line: the client replies ``{"line": text}``, ``""`` at
end of input), and last ``{"exit": code}``.
"""
from __future__ import annotations

import contextlib
import errno
import io
import json
import logging
import os
import select
import socket
import stat
import struct
import sys
import threading
from pathlib import Path

log = logging.getLogger("kiosk.local_socket")

SOCKET_NAME = "kiosk.sock"
_BINDING = ".kiosk.sock.new"     # bound and made 0600 here, then renamed into place
COMMANDS = ("status", "queue", "notices", "sync", "charge", "report", "void", "refund", "receipt")
CARRY_ON = ("charge", "void", "refund")      # once begun, finished and recorded even if the caller hangs up

REQUEST_BYTES = 16 * 1024        # the request line; argv of any real command is far smaller
ANSWER_BYTES = 4 * 1024          # a line the caller typed at a prompt
REQUEST_SECONDS = 5.0            # to send the request once connected
ANSWER_SECONDS = 300.0           # to answer a prompt (the offline confirm) before it counts as "no"
SEND_SECONDS = 30.0              # for the caller to take a piece of output
CONNECT_SECONDS = 5.0
STOP_SECONDS = 60.0              # how long ``kiosk run`` waits at exit for a command under way
CHUNK = 8 * 1024                 # output is sent in pieces this size (``queue --all`` streams)
MESSAGE_BYTES = 1024 * 1024      # the longest answer line a client reads
_PATH_MAX = 100                  # sun_path holds 108 bytes; longer paths go through /proc/self/fd
EXIT_USAGE, EXIT_STORE, EXIT_FAILED = 2, 5, 1


class Refused(Exception):
    """The socket cannot be made here (another kiosk listens, or the name is taken)."""


# -- who is at the other end -----------------------------------------------------

def peer_uid(conn: socket.socket) -> tuple[int, int]:
    """(pid, uid) of the process at the other end, from the kernel (``SO_PEERCRED``)."""
    pid, uid, _gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                         struct.calcsize("3i")))
    return pid, uid


def _address(dir_fd: int, directory: Path, name: str) -> str:
    """``directory/name`` as a socket address, through the open directory when the path is too long."""
    full = str(directory / name)
    return full if len(os.fsencode(full)) <= _PATH_MAX else f"/proc/self/fd/{dir_fd}/{name}"


def _lstat(name: str, dir_fd: int):
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _listening(address: str) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(CONNECT_SECONDS)
    try:
        probe.connect(address)
        return True
    except OSError as exc:
        if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
            return False
        raise
    finally:
        probe.close()


# -- the server, in ``kiosk run`` --------------------------------------------------

class _Gone(BrokenPipeError):
    """The caller hung up."""


class _Channel:
    """One request's connection: the command's stdout, stderr and stdin."""

    def __init__(self, conn: socket.socket, reader, tty: bool, abort_when_gone: bool):
        self.conn, self.reader, self.tty = conn, reader, tty
        self.abort_when_gone = abort_when_gone     # a charge carries on without its caller; a listing need not
        self.gone = False
        self.log_level = logging.WARNING
        self._pending: list[tuple[str, str]] = []
        self._size = 0

    def write(self, stream: str, text: str, raising: bool = True) -> None:
        if self.gone:
            if raising and self.abort_when_gone:
                raise _Gone("the caller hung up")
            return
        if self._pending and self._pending[-1][0] == stream:
            self._pending[-1] = (stream, self._pending[-1][1] + text)
        else:
            self._pending.append((stream, text))
        self._size += len(text)
        if self._size >= CHUNK:
            self.flush(raising)

    def flush(self, raising: bool = True) -> None:
        pending, self._pending, self._size = self._pending, [], 0
        for stream, text in pending:
            self.send({stream: text})
        if self.gone and raising and self.abort_when_gone:
            raise _Gone("the caller hung up")

    def send(self, message: dict) -> None:
        if self.gone:
            return
        try:
            self.conn.settimeout(SEND_SECONDS)
            self.conn.sendall(json.dumps(message, ensure_ascii=False).encode() + b"\n")
        except OSError:
            self.gone = True

    def readline(self) -> str:
        """A line the caller types (``""`` at its end of input); an empty line,
        which every prompt here takes as "no", if it is gone, silent or talks nonsense."""
        self.flush(raising=False)
        self.send({"read": True})
        if self.gone:
            return "\n"
        try:
            self.conn.settimeout(ANSWER_SECONDS)
            raw = self.reader.readline(ANSWER_BYTES + 64)
            line = json.loads(raw)["line"] if raw.endswith(b"\n") else None
        except (OSError, ValueError, KeyError, TypeError):
            line = None
        if not isinstance(line, str) or len(line) > ANSWER_BYTES:
            self.gone = True        # a caller that does not follow the protocol gets nothing more
            return "\n"
        return line


_current = threading.local()        # .channel on the thread serving a request


def _channel() -> _Channel | None:
    return getattr(_current, "channel", None)


class _RoutedOutput(io.TextIOBase):
    """``sys.stdout``/``sys.stderr`` of ``kiosk run`` while it serves: the
    serving thread's writes go to its caller, every other thread's where they went."""

    def __init__(self, stream: str, original):
        self.stream, self.original = stream, original

    @property
    def encoding(self):
        return getattr(self.original, "encoding", "utf-8")

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        channel = _channel()
        if channel is None:
            return self.original.write(text)
        channel.write(self.stream, text)
        return len(text)

    def flush(self) -> None:
        channel = _channel()
        if channel is None:
            self.original.flush()
        else:
            channel.flush()

    def isatty(self) -> bool:
        return False if _channel() is not None else self.original.isatty()

    def fileno(self) -> int:
        if _channel() is not None:     # input() must not reach the real terminal from here
            raise io.UnsupportedOperation("the caller's stream has no file descriptor here")
        return self.original.fileno()


class _RoutedInput(io.TextIOBase):
    """``sys.stdin`` of ``kiosk run`` while it serves: the serving thread reads its caller's."""

    def __init__(self, original):
        self.original = original

    @property
    def encoding(self):
        return getattr(self.original, "encoding", "utf-8")

    def readable(self) -> bool:
        return True

    def readline(self, size: int = -1) -> str:
        channel = _channel()
        return channel.readline() if channel is not None else self.original.readline(size)

    def isatty(self) -> bool:
        channel = _channel()
        return channel.tty if channel is not None else self.original.isatty()

    def fileno(self) -> int:
        if _channel() is not None:
            raise io.UnsupportedOperation("the caller's stream has no file descriptor here")
        return self.original.fileno()


class _RequestLog(logging.Handler):
    """The log lines a command logs on the serving thread reach its caller's
    stderr, as they would run on its own (level WARNING, DEBUG with ``-v``)."""

    def emit(self, record: logging.LogRecord) -> None:
        channel = _channel()
        if channel is not None and record.levelno >= channel.log_level:
            channel.write("err", self.format(record) + "\n", raising=False)


class _Running:
    """The running kiosk as a command's ``_open`` hands it out: closing it is
    ``kiosk run``'s job, and a forwarding pass stops when ``kiosk run`` does."""

    def __init__(self, kiosk, stop: threading.Event):
        self._kiosk, self._stop = kiosk, stop

    def __getattr__(self, name):
        return getattr(self._kiosk, name)

    def forward(self, force: bool = True, stop=None, progress=None):
        return self._kiosk.forward(force=force, stop=stop or self._stop, progress=progress)

    def close(self) -> None:
        pass


class Server:
    """The socket ``kiosk run`` serves commands on; :meth:`close` when it stops."""

    def __init__(self, kiosk, stop: threading.Event):
        self.kiosk, self.stop = kiosk, stop
        self.directory = Path(kiosk.config.data_dir)
        self._dir_fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self._listener: socket.socket | None = None
        self._inode = None
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC)
        self._thread = threading.Thread(target=self._serve, name="kiosk-commands", daemon=True)
        self._saved_streams = None
        self._log_handler = None
        try:
            self._listen()
        except BaseException:
            self._close_fds()
            raise

    # -- making the socket ------------------------------------------------------

    def _listen(self) -> None:
        fd = self._dir_fd
        address = _address(fd, self.directory, SOCKET_NAME)
        found = _lstat(SOCKET_NAME, fd)
        if found is not None:
            if not stat.S_ISSOCK(found.st_mode):
                kind = "a symbolic link" if stat.S_ISLNK(found.st_mode) else "not a socket"
                raise Refused(f"{self.directory / SOCKET_NAME} is {kind}: left alone (remove it to let "
                              "commands reach the running kiosk)")
            if _listening(address):
                raise Refused(f"another kiosk is already listening on {self.directory / SOCKET_NAME}")
        leftover = _lstat(_BINDING, fd)          # a `kiosk run` killed between bind and rename
        if leftover is not None:
            if not stat.S_ISSOCK(leftover.st_mode):
                raise Refused(f"{self.directory / _BINDING} is not a socket: left alone")
            os.unlink(_BINDING, dir_fd=fd)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            listener.bind(_address(fd, self.directory, _BINDING))
            os.chmod(_BINDING, 0o600, dir_fd=fd)
            listener.listen(8)
            # in place at once, 0600 from the first moment anyone can find it; a stale socket is replaced
            os.rename(_BINDING, SOCKET_NAME, src_dir_fd=fd, dst_dir_fd=fd)
        except BaseException:
            listener.close()
            with contextlib.suppress(OSError):
                os.unlink(_BINDING, dir_fd=fd)
            raise
        self._listener = listener
        self._inode = _lstat(SOCKET_NAME, fd).st_ino

    def start(self) -> "Server":
        self._saved_streams = sys.stdin, sys.stdout, sys.stderr
        # a service may have no streams at all: its own threads then write nowhere, as before
        sys.stdin = _RoutedInput(sys.stdin or io.StringIO())
        sys.stdout = _RoutedOutput("out", sys.stdout or open(os.devnull, "w"))
        sys.stderr = _RoutedOutput("err", sys.stderr or open(os.devnull, "w"))
        self._log_handler = _RequestLog()
        self._log_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logging.getLogger().addHandler(self._log_handler)
        self._thread.start()
        log.info("commands reach this kiosk through %s", self.directory / SOCKET_NAME)
        return self

    # -- serving ----------------------------------------------------------------

    def _serve(self) -> None:
        while True:
            ready, _, _ = select.select([self._listener, self._wake_r], [], [])
            if self._wake_r in ready:
                return
            try:
                conn, _ = self._listener.accept()
            except OSError:
                continue
            try:
                self._handle(conn)
            except Exception:
                log.exception("serving a command failed")
            finally:
                conn.close()

    def _handle(self, conn: socket.socket) -> None:
        pid, uid = peer_uid(conn)
        reader = conn.makefile("rb")
        channel = _Channel(conn, reader, tty=False, abort_when_gone=True)
        if uid not in (os.geteuid(), 0):
            log.warning("refused a command from uid %d (pid %d): not this kiosk's user", uid, pid)
            self._refuse(channel, "the running kiosk takes commands only from its own user", EXIT_USAGE)
            return
        try:
            conn.settimeout(REQUEST_SECONDS)
            raw = reader.readline(REQUEST_BYTES + 1)
        except OSError:
            self._refuse(channel, "no request within "
                         f"{REQUEST_SECONDS:.0f} s", EXIT_USAGE)
            return
        argv, tty, problem = _parse_request(raw)
        if problem:
            self._refuse(channel, f"bad request to the running kiosk: {problem}", EXIT_USAGE)
            return
        channel.tty = tty
        command, code = self._run(channel, argv, pid)
        channel.flush(raising=False)
        channel.send({"exit": code})
        if channel.gone and command == "charge":
            log.warning("`kiosk charge`: the caller hung up; the sale went on and is in the queue")

    @staticmethod
    def _refuse(channel: _Channel, message: str, code: int) -> None:
        channel.send({"err": f"kiosk: error: {message}\n"})
        channel.send({"exit": code})

    def _run(self, channel: _Channel, argv: list[str], pid: int) -> tuple[str | None, int]:
        """(the command, its exit code), the command's output going to ``channel``."""
        _current.channel = channel
        try:
            return self._command(channel, argv, pid)
        finally:
            _current.channel = None

    def _command(self, channel: _Channel, argv: list[str], pid: int) -> tuple[str | None, int]:
        from . import cli
        command = None
        try:
            try:
                args = cli.build_parser().parse_args(argv)
            except SystemExit as exc:       # argparse has said why, in one line, on the caller's stderr
                return None, exc.code if isinstance(exc.code, int) else EXIT_USAGE
            command = args.command
            if command not in COMMANDS:
                channel.write("err", f"kiosk: error: `kiosk {command}` does not run through the running "
                                     f"kiosk (only {', '.join(COMMANDS)}); stop it first\n")
                return command, EXIT_USAGE
            channel.abort_when_gone = command not in CARRY_ON
            channel.log_level = logging.DEBUG if args.verbose else logging.WARNING
            args.running, args.argv, args.config_given = _Running(self.kiosk, self.stop), argv, True
            args.config = str(getattr(self.kiosk.config, "path", "") or "")
            log.info("`kiosk %s` asked by pid %d", command, pid)
            return command, cli.run_command(args)
        except BrokenPipeError:
            log.info("`kiosk %s`: the caller hung up; stopped", command)
            return command, EXIT_FAILED
        except EOFError:         # the caller's input ended at a prompt (run alone, a traceback)
            channel.write("err", "kiosk: error: end of input at the prompt: not confirmed\n", raising=False)
            return command, EXIT_FAILED
        except Exception as exc:
            log.exception("`kiosk %s` failed in the running kiosk", command)
            advice = "; check `kiosk queue` before charging the card again" if command == "charge" else ""
            channel.write("err", f"kiosk: error: the running kiosk failed on this command "
                                 f"({type(exc).__name__}){advice}\n", raising=False)
            return command, EXIT_FAILED

    # -- stopping ---------------------------------------------------------------

    def close(self) -> None:
        """Stop serving: a command under way is let finish first (a sale is never cut short here)."""
        if self._thread.is_alive():
            os.write(self._wake_w, b"x")
            self._thread.join(STOP_SECONDS)
            if self._thread.is_alive():
                log.error("a command was still running after %.0f s; stopping anyway", STOP_SECONDS)
        if self._saved_streams is not None:
            routed = sys.stdin, sys.stdout, sys.stderr
            if all(isinstance(s, (_RoutedInput, _RoutedOutput)) for s in routed):
                sys.stdin, sys.stdout, sys.stderr = self._saved_streams
            self._saved_streams = None
        if self._log_handler is not None:
            logging.getLogger().removeHandler(self._log_handler)
            self._log_handler = None
        if self._listener is not None:
            self._listener.close()
            self._listener = None
            found = _lstat(SOCKET_NAME, self._dir_fd)
            if found is not None and found.st_ino == self._inode:      # ours, not a later kiosk's
                with contextlib.suppress(OSError):
                    os.unlink(SOCKET_NAME, dir_fd=self._dir_fd)
        self._close_fds()

    def _close_fds(self) -> None:
        for fd in (self._wake_r, self._wake_w, self._dir_fd):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._wake_r = self._wake_w = self._dir_fd = -1


def _parse_request(raw: bytes) -> tuple[list[str], bool, str | None]:
    """(argv, tty, problem): ``problem`` names what is wrong, never echoing what was sent."""
    if len(raw) > REQUEST_BYTES:
        return [], False, f"longer than {REQUEST_BYTES} bytes"
    if not raw.endswith(b"\n"):
        return [], False, "not one line"
    try:
        request = json.loads(raw)
    except ValueError:
        return [], False, "not JSON"
    if not isinstance(request, dict) or set(request) - {"argv", "tty"}:
        return [], False, "not an object with argv and tty"
    argv, tty = request.get("argv"), request.get("tty", False)
    if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv) or not isinstance(tty, bool):
        return [], False, "argv must be a list of strings and tty true or false"
    return argv, tty, None


@contextlib.contextmanager
def serving(kiosk, stop: threading.Event):
    """Serve commands while the block runs.  A socket that cannot be made is
    one line in the log: the kiosk sells all the same."""
    try:
        server = Server(kiosk, stop).start()
    except (Refused, OSError) as exc:
        log.error("commands cannot reach this kiosk while it runs: %s", exc)
        server = None
    try:
        yield server
    finally:
        if server is not None:
            server.close()


# -- the client, in the ``kiosk`` command ---------------------------------------------

def _connect(directory: Path) -> socket.socket | None:
    """A connection to the kiosk running on ``directory``, or ``None`` if none listens there
    (or what listens is not the data directory's owner, root or this user)."""
    try:
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        found = _lstat(SOCKET_NAME, dir_fd)
        if found is None or not stat.S_ISSOCK(found.st_mode):     # a symbolic link is never followed
            return None
        trusted = {os.geteuid(), 0, os.fstat(dir_fd).st_uid}
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            conn.settimeout(CONNECT_SECONDS)
            conn.connect(_address(dir_fd, directory, SOCKET_NAME))
            if peer_uid(conn)[1] not in trusted:
                conn.close()
                return None
        except OSError:
            conn.close()
            return None
        return conn
    finally:
        os.close(dir_fd)


def ask(directory: Path, argv: list[str], command: str) -> int | None:
    """Run ``kiosk <argv>`` on the kiosk running on ``directory``: its output
    on this process's stdout and stderr, its exit code returned; ``None`` if
    no kiosk listens there (the caller says the queue is held, as before)."""
    conn = _connect(directory)
    if conn is None:
        return None
    with conn, conn.makefile("rb") as answers:
        conn.settimeout(None)        # a charge waits for the card as long as it does locally
        tty = bool(sys.stdin is not None and sys.stdin.isatty())
        reply = {"argv": list(argv), "tty": tty}
        while True:
            try:
                if reply is not None:
                    with contextlib.suppress(OSError):     # it may have answered and hung up: read what it said
                        conn.sendall(json.dumps(reply).encode() + b"\n")
                    reply = None
                raw = answers.readline(MESSAGE_BYTES)
                message = json.loads(raw) if raw.endswith(b"\n") else None
            except (OSError, ValueError):
                message = None
            if not isinstance(message, dict):
                sys.stdout.flush()
                advice = "; check `kiosk queue` before charging the card again" if command == "charge" else ""
                print(f"kiosk: alarm: the running kiosk stopped before it answered{advice}", file=sys.stderr)
                return EXIT_STORE
            if "out" in message:
                sys.stdout.write(str(message["out"]))
            elif "err" in message:
                sys.stdout.flush()
                sys.stderr.write(str(message["err"]))
            elif "read" in message:
                sys.stdout.flush()
                sys.stderr.flush()
                line = sys.stdin.readline() if sys.stdin is not None else ""
                reply = {"line": line[:ANSWER_BYTES]}
            elif "exit" in message:
                sys.stdout.flush()
                sys.stderr.flush()
                code = message["exit"]
                return code if isinstance(code, int) else EXIT_FAILED
