"""Shared fixtures: real Stripe peers on 127.0.0.1, configs in tmp dirs, and
the ``kiosk`` command.

Two ways to run the command, both returning a ``subprocess.CompletedProcess``:

- :func:`run_kiosk` calls ``kiosk.cli.main(argv)`` in this process (a fresh
  interpreter's start-up was most of a CLI test's time), with its own stdout,
  stderr, stdin, environment, working directory, log handler and signal
  handlers, so what it prints and logs, and its exit code, are what the real
  command gives.  When ``env`` holds a variable only a fresh interpreter
  honours (``PYTHONPATH`` and the other ``PYTHON*``, ``KIOSK_CRASH_AT``,
  ``STRIPE_LOG``: see ``FRESH_INTERPRETER_ENV``) it runs a real process instead.
- :func:`run_kiosk_process` is always a real child process: for tests where a
  separate process is the point (kills, signals, locks held by another process,
  the interpreter's own start-up and environment)."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kiosk.testing.fake_stripe import FakeStripe

ROOT = Path(__file__).resolve().parent.parent
TEST_KEY = "sk_test_" + "k1osk" * 5


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def fake_stripe():
    """The strict fake Stripe.  A test fails if the kiosk sent anything
    today's API refuses (a parameter it does not know, a wrong type, another
    API version), unless the test sets ``allow_breaches`` and checks them itself."""
    peer = FakeStripe().start()
    try:
        peer.allow_breaches = False
        yield peer
        if not peer.allow_breaches:
            assert peer.breaches == [], f"requests Stripe would refuse: {peer.breaches}"
    finally:
        peer.stop()


LOCALSTRIPE_RUNNER = """
import sys
from aiohttp import web
from localstripe.server import app
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None)
"""


@pytest.fixture
def localstripe():
    """The PyPI ``localstripe`` server, bound to 127.0.0.1 in a child process,
    behind the translating shim of ``localstripe_shim`` (it predates Stripe's
    2026 API).  ``.url`` is the shim the kiosk talks to, ``.upstream_url``
    localstripe itself."""
    from localstripe_shim import LocalstripeShim
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", LOCALSTRIPE_RUNNER, str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail("localstripe did not start")
    shim = LocalstripeShim(f"http://127.0.0.1:{port}").start()
    shim.upstream_url = f"http://127.0.0.1:{port}"
    yield shim
    shim.stop()
    proc.kill()             # its state lives in memory only: nothing to shut down gracefully
    proc.wait(timeout=10)


def _no_batteries(directory: Path) -> Path:
    folder = Path(directory) / "power_supply"
    folder.mkdir(exist_ok=True)
    return folder


def write_config(directory: Path, api_base: str = "http://127.0.0.1:9", **sections) -> Path:
    """A config.toml in ``directory``; ``sections`` override tables, e.g.
    ``kiosk={"offline_behavior": "force_offline"}``."""
    import tomli_w
    config = {
        "kiosk": {"id": "test-kiosk", "currency": "usd", "offline_behavior": "prefer_online"},
        "storage": {"path": "data"},
        "stripe": {"api_base": api_base, "max_network_retries": 0, "reachability_timeout": 1.0,
                   "request_timeout": 5.0, "lookup_margin_minutes": 1.0},
        "sync": {"retry_base_seconds": 0.0},
        "reader": {"use": "simulated"},
        # most tests sell offline again and again on one test card; tests/test_same_card.py tests the guard
        "limits": {"per_transaction": 100.0, "total": 500.0, "max_pending": 50, "same_card_max": 50},
        # no battery unless a test lays one out: a laptop running the suite on battery must not pause sales
        "power": {"path": str(_no_batteries(directory))},
    }
    for name, values in sections.items():
        target = config
        for part in name.split("__"):
            target = target.setdefault(part, {})
        target.update(values)
    path = directory / "config.toml"
    path.write_text(tomli_w.dumps(config))
    return path


def open_touchscreen(kiosk, size: tuple[int, int] | None = None):
    """The touchscreen plugin's display on an opened ``kiosk`` (SDL's dummy
    driver in tests), at ``size`` (w, h) or the configured one; the caller
    waits for its first frame (``display.catch_up()``) and closes it."""
    from kiosk.boot import plugin_settings
    settings = plugin_settings(kiosk.host, kiosk.config, "touchscreen")
    if size:
        settings["display.touchscreen"]["size"] = f"{size[0]}x{size[1]}"
    return kiosk.host.call_on("touchscreen", "kiosk_open_display", kiosk=kiosk.view, settings=settings)


@pytest.fixture
def touchscreens():
    """``display = touchscreens(kiosk, size=None)``: the touchscreen on ``kiosk``
    with its first frame drawn; every one opened is closed at the end."""
    opened = []

    def show(kiosk, size: tuple[int, int] | None = None):
        display = open_touchscreen(kiosk, size)
        opened.append(display)
        assert display.catch_up()
        return display

    yield show
    for display in opened:
        display.close()


@pytest.fixture(autouse=True)
def _api_key(monkeypatch):
    monkeypatch.setenv("STRIPE_API_KEY", TEST_KEY)
    monkeypatch.delenv("KIOSK_CONFIG", raising=False)
    monkeypatch.delenv("KIOSK_DISABLE_PLUGINS", raising=False)


def run_kiosk_process(*args, env: dict | None = None, input: str | None = None,
                      cwd=None) -> subprocess.CompletedProcess:
    """The real ``kiosk`` command in a child process."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "kiosk.cli", *map(str, args)], capture_output=True,
                          text=True, env=full_env, input=input, cwd=cwd, timeout=60)


# Read once when the interpreter or a module starts, so only a fresh process
# honours them: Python's own PYTHON* variables (PYTHONPATH for entry points),
# kiosk.faults' crash point, and STRIPE_LOG (stripe-python reads it at import;
# the stripe plugin must keep it away, which only a fresh import shows).
FRESH_INTERPRETER_ENV = ("KIOSK_CRASH_AT", "STRIPE_LOG")


def needs_fresh_interpreter(env: dict | None) -> bool:
    return any(name.startswith("PYTHON") or name in FRESH_INTERPRETER_ENV for name in env or {})


def run_kiosk(*args, env: dict | None = None, input: str | None = None, cwd=None) -> subprocess.CompletedProcess:
    """The ``kiosk`` command, in this process (see the module's docstring);
    a real child process when ``env`` needs a fresh interpreter."""
    if needs_fresh_interpreter(env):
        return run_kiosk_process(*args, env=env, input=input, cwd=cwd)
    from inprocess import run_main
    return run_main(list(map(str, args)), env=env, input=input, cwd=cwd)


def run_json(*args, **kwargs):
    result = run_kiosk(*args, "--json", **kwargs)
    assert result.returncode in (0, 1), result.stderr
    return json.loads(result.stdout)


@pytest.fixture
def open_kiosk():
    """Open in-process kiosks from a config path; all closed at the end."""
    from kiosk.boot import open_kiosk as _open
    opened = []

    def opener(config_path: Path, create: bool = True, **kwargs):
        kiosk = _open(config_path, create=create, **kwargs)
        opened.append(kiosk)
        return kiosk
    yield opener
    for kiosk in opened:
        try:
            kiosk.close()
        except Exception:
            pass
