"""Run ``kiosk.cli.main(argv)`` in this process as if it were the ``kiosk``
command in a child process, and hand back a ``subprocess.CompletedProcess``.

What a child process would have of its own, the call gets for its duration
and gives back afterwards:

- stdout and stderr: captured, but only what the command's own threads write
  (the caller's thread and every thread started from one of them); a thread
  of the test process (the fake Stripe's request handlers, say) still writes
  where it did, as it would beside a child process;
- logging: the root logger has no handlers during the call, so the command's
  ``logging.basicConfig(stream=sys.stderr)`` configures it as in a fresh
  process; its handlers, the root level and every existing logger's level
  are put back afterwards;
- warnings: a fresh interpreter's default filters, shown on the captured stderr;
- stdin: ``input`` (or nothing) through a pipe-like, non-tty stream;
- the environment (``env`` laid over ``os.environ``), the working directory
  and every signal handler;
- exit: ``SystemExit`` (argparse's usage errors, ``--help``) is the return
  code, an uncaught exception a traceback on stderr and code 1, as Python's;
  non-daemon threads it started are waited for, as interpreter exit does.

Daemon threads it leaves running are not stopped (a child's would die with
it); the kiosk's commands close everything they open, and none is left.
"""
from __future__ import annotations

import io
import logging
import os
import signal
import subprocess
import sys
import threading
import traceback
import warnings
import weakref

EXIT_WAIT_SECONDS = 60          # the child process's timeout in run_kiosk_process


class _Owner:
    """The threads that belong to one run: the caller's and those they start."""

    def __init__(self):
        self.threads = weakref.WeakSet([threading.current_thread()])

    def owns(self) -> bool:
        return threading.current_thread() in self.threads


class _Routed(io.TextIOBase):
    """A text stream writing the run's own threads to ``capture`` and every
    other thread to ``elsewhere`` (where it wrote before the run)."""

    def __init__(self, owner: _Owner, capture: io.StringIO, elsewhere):
        self.owner, self.capture, self.elsewhere = owner, capture, elsewhere

    def _target(self):
        return self.capture if self.owner.owns() else self.elsewhere

    @property
    def encoding(self):
        return "utf-8"

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        return self._target().write(text)

    def flush(self) -> None:
        target = self._target()
        if target is not None:
            target.flush()

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        raise io.UnsupportedOperation("captured stream has no file descriptor")


class _Pipe(io.StringIO):
    """``input`` as a child's stdin from a pipe: readable, not a terminal."""

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        raise io.UnsupportedOperation("captured stream has no file descriptor")


def _fresh_warning_filters() -> None:
    """The filters of a fresh ``python -m`` (no -W, no PYTHONWARNINGS)."""
    warnings.resetwarnings()
    warnings.filterwarnings("default", category=DeprecationWarning, module="__main__")
    for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
        warnings.filterwarnings("ignore", category=category)


def _set_environ(values: dict) -> None:
    for name in [n for n in os.environ if n not in values]:
        del os.environ[name]
    for name, value in values.items():
        if os.environ.get(name) != value:
            os.environ[name] = value


def _signal_handlers() -> dict:
    handlers = {}
    for signum in signal.valid_signals():
        try:
            handlers[signum] = signal.getsignal(signum)
        except (OSError, ValueError):
            continue
    return handlers


def _restore_signal_handlers(saved: dict) -> None:
    for signum, handler in saved.items():
        if handler is None or signal.getsignal(signum) is handler:
            continue
        try:
            signal.signal(signum, handler)
        except (OSError, ValueError):
            pass


def _exit_code(exc: SystemExit, stderr) -> int:
    code = exc.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=stderr)        # sys.exit("message"), as the interpreter does
    return 1


def run_main(argv: list[str], env: dict | None = None, input: str | None = None,
             cwd=None) -> subprocess.CompletedProcess:
    """``kiosk <argv>`` through ``kiosk.cli.main``; see the module docstring."""
    from kiosk import cli

    owner = _Owner()
    out, err = io.StringIO(), io.StringIO()
    saved_streams = sys.stdin, sys.stdout, sys.stderr
    saved_environ = dict(os.environ)
    saved_cwd = os.getcwd()
    saved_signals = _signal_handlers()
    root = logging.getLogger()
    saved_root = root.handlers[:], root.level
    saved_levels = {name: (logger.level, logger.disabled)
                    for name, logger in logging.Logger.manager.loggerDict.items()
                    if isinstance(logger, logging.Logger)}
    saved_disable = logging.root.manager.disable
    original_start = threading.Thread.start

    def start(thread, *args, **kwargs):
        if owner.owns():
            owner.threads.add(thread)
        return original_start(thread, *args, **kwargs)

    environ = dict(saved_environ)
    environ.update(env or {})
    # a child's stdout is a pipe: the terminal size is the fallback unless the environment says
    environ.setdefault("COLUMNS", "80")
    environ.setdefault("LINES", "24")
    stdout = _Routed(owner, out, saved_streams[1])
    stderr = _Routed(owner, err, saved_streams[2])
    try:
        _set_environ(environ)
        if cwd is not None:
            os.chdir(cwd)
        root.handlers = []
        threading.Thread.start = start
        sys.stdin, sys.stdout, sys.stderr = _Pipe(input or ""), stdout, stderr
        with warnings.catch_warnings():
            _fresh_warning_filters()
            try:
                returncode = cli.main(argv)
            except SystemExit as exc:
                returncode = _exit_code(exc, stderr)
            except Exception:       # KeyboardInterrupt and pytest's own outcomes go on up
                traceback.print_exc(file=stderr)
                returncode = 1
            # interpreter exit waits for the non-daemon threads the command left
            for thread in list(owner.threads):
                if thread is not threading.current_thread() and not thread.daemon and thread.is_alive():
                    thread.join(EXIT_WAIT_SECONDS)
                    if thread.is_alive():
                        raise subprocess.TimeoutExpired(["kiosk", *argv], EXIT_WAIT_SECONDS)
    finally:
        threading.Thread.start = original_start
        sys.stdin, sys.stdout, sys.stderr = saved_streams
        for handler in list(root.handlers):
            if handler not in saved_root[0]:
                root.removeHandler(handler)
                handler.close()
        root.handlers = saved_root[0]
        root.setLevel(saved_root[1])
        for name, (level, disabled) in saved_levels.items():
            logger = logging.Logger.manager.loggerDict.get(name)
            if isinstance(logger, logging.Logger) and (logger.level, logger.disabled) != (level, disabled):
                logger.setLevel(level)
                logger.disabled = disabled
        logging.disable(saved_disable)
        _restore_signal_handlers(saved_signals)
        os.chdir(saved_cwd)
        _set_environ(saved_environ)
    return subprocess.CompletedProcess(["kiosk", *argv], int(returncode or 0), out.getvalue(), err.getvalue())
