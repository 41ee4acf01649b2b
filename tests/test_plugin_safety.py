"""A broken plugin never stops sales; safe mode; tracing; plugin commands; a
checkout that is not installed.  Third-party plugins are installed the way pip
would (a module and a dist-info on ``PYTHONPATH``), so these run the real
``kiosk`` command in a child process."""
from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

from kiosk.boot import load_host
from kiosk.safe_mode import FLAG_NAME

from conftest import ROOT, run_kiosk, write_config
from test_plugins import install_plugin

STARTUP_MARK = """
import pathlib
from kiosk import hookimpl

@hookimpl
def kiosk_startup(kiosk):
    pathlib.Path(kiosk.config.data_dir, "third_party_started").write_text("yes")

@hookimpl
def kiosk_notify(notice):
    pass
"""


def start_run(path: Path, env: dict, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "kiosk.cli", "run", "--headless", "--config", str(path), *extra],
                            env=dict(os.environ, **env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_until_up(proc: subprocess.Popen, flag: Path, timeout: float = 30) -> list[str]:
    """``kiosk run`` is up once it says it runs headless -- after it removed
    its start-up flag.  Returns the log lines read so far."""
    lines, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        lines.append(line)
        if "running headless" in line:
            assert not flag.exists()
            return lines
    raise AssertionError(f"kiosk run did not come up (exit {proc.poll()}): {''.join(lines)}")


def stop(proc: subprocess.Popen, lines: list[str]) -> str:
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    return "".join(lines) + err


# -- a broken notifier ------------------------------------------------------------------

def test_a_broken_third_party_notifier_leaves_kiosk_charge_working(tmp_path, fake_stripe):
    env = install_plugin(tmp_path, "acme_lights", "raise ImportError('no module named acme_gpio')\n")
    path = write_config(tmp_path, fake_stripe.url, notifier={"use": ["feed", "acme_lights"]})
    assert run_kiosk("init", "--config", path, env=env).returncode == 0
    result = run_kiosk("charge", "5.00", "--config", path, env=env)
    assert result.returncode == 0 and "APPROVED" in result.stdout
    assert len(fake_stripe.payment_intents) == 1
    lines = result.stderr.splitlines()
    assert [line for line in lines if "acme_lights" in line] and "Traceback" not in result.stderr
    assert any("notifier plugin 'acme_lights' failed to load" in line and "skipped" in line for line in lines)
    status = json.loads(run_kiosk("status", "--json", "--config", path, env=env).stdout)
    assert "acme_lights" in status["plugin_trouble"]


def test_a_notifier_that_raises_is_told_in_one_line_not_a_traceback(tmp_path, fake_stripe):
    env = install_plugin(tmp_path, "acme_buzzer", """
        from kiosk import hookimpl

        @hookimpl
        def kiosk_notify(notice):
            raise OSError("buzzer unplugged")
    """)
    path = write_config(tmp_path, fake_stripe.url, notifier={"use": ["acme_buzzer", "feed"]})
    run_kiosk("init", "--config", path, env=env)
    result = run_kiosk("charge", "5.00", "--config", path, env=env)
    assert result.returncode == 0 and "APPROVED" in result.stdout
    told = [line for line in result.stderr.splitlines() if "acme_buzzer" in line]
    assert len(told) == 1 and "raised in kiosk_notify: OSError: buzzer unplugged" in told[0]
    assert "Traceback" not in result.stderr
    verbose = run_kiosk("-v", "charge", "6.00", "--config", path, env=env)
    assert verbose.returncode == 0 and "Traceback" in verbose.stderr     # the debug log has it


def test_a_broken_reader_still_stops_the_kiosk(tmp_path, fake_stripe):
    env = install_plugin(tmp_path, "acme_reader", "raise ImportError('no bluetooth stack')\n")
    path = write_config(tmp_path, fake_stripe.url, reader={"use": "acme_reader"})
    result = run_kiosk("charge", "5.00", "--config", path, env=env)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "reader plugin 'acme_reader' failed to load" in result.stderr and not fake_stripe.payment_intents


def test_the_screen_is_told_when_a_plugin_raises(tmp_path, fake_stripe, open_kiosk):
    from kiosk import hookimpl

    class Flaky:
        @hookimpl
        def kiosk_payment_changed(self, payment):
            raise RuntimeError("receipt printer jammed")

    class Screen:
        def __init__(self):
            self.notices = []

        @hookimpl
        def kiosk_notify(self, notice):
            self.notices.append(notice)

    screen = Screen()
    host = load_host()
    host.register(Flaky(), "flaky")
    host.register(screen, "screen")
    kiosk = open_kiosk(write_config(tmp_path, fake_stripe.url, display={"use": "screen"}), host=host)
    assert kiosk.take_sale(1000, card="visa").status == "approved"
    assert kiosk.take_sale(1100, card="visa").status == "approved"
    trouble = [n for n in screen.notices if n.kind == "plugin_trouble"]
    assert len(trouble) == 1 and "flaky" in trouble[0].message     # told once, not per sale
    assert "flaky" in kiosk.status(check=False)["plugin_trouble"]


# -- safe mode --------------------------------------------------------------------------

def test_a_start_that_did_not_complete_brings_safe_mode_then_normal_again(tmp_path, fake_stripe):
    env = install_plugin(tmp_path, "acme_extra", STARTUP_MARK + """
import os
if os.environ.get("ACME_CRASH"):
    os._exit(7)          # dies while plugins load, as a plugin that segfaults would
""")
    path = write_config(tmp_path, fake_stripe.url, notifier={"use": ["feed", "acme_extra"]})
    assert run_kiosk("init", "--config", path, env=env).returncode == 0
    data = tmp_path / "data"
    (data / "third_party_started").unlink()                  # kiosk init started it once
    crashed = subprocess.run([sys.executable, "-m", "kiosk.cli", "run", "--headless", "--config", str(path)],
                             env=dict(os.environ, **env, ACME_CRASH="1"), capture_output=True, timeout=60)
    assert crashed.returncode == 7 and (data / FLAG_NAME).exists()

    proc = start_run(path, env)                      # the last start did not complete: safe mode
    err = stop(proc, wait_until_up(proc, data / FLAG_NAME))
    assert proc.returncode == 0, err
    assert not (data / "third_party_started").exists()
    assert "'acme_extra' is not built in and the kiosk is in safe mode" in err
    feed = json.loads(run_kiosk("notices", "--json", "--config", path, env=env).stdout)
    assert feed is not None

    proc = start_run(path, env)                      # that start completed: plugins are back
    err = stop(proc, wait_until_up(proc, data / FLAG_NAME))
    assert proc.returncode == 0, err
    assert (data / "third_party_started").read_text() == "yes"


def test_run_safe_loads_only_the_built_ins_and_says_so(tmp_path, fake_stripe):
    env = install_plugin(tmp_path, "acme_extra", STARTUP_MARK)
    path = write_config(tmp_path, fake_stripe.url, notifier={"use": ["feed", "acme_extra"]})
    run_kiosk("init", "--config", path, env=env)
    (tmp_path / "data" / "third_party_started").unlink()      # kiosk init started it once
    proc = start_run(path, env, "--safe")
    err = stop(proc, wait_until_up(proc, tmp_path / "data" / FLAG_NAME))
    assert proc.returncode == 0 and not (tmp_path / "data" / "third_party_started").exists()
    assert "Safe mode: Asked for with --safe: only the built-in plugins are loaded" in err


def test_safe_mode_is_on_the_status_and_the_screen(tmp_path, fake_stripe, open_kiosk):
    from kiosk import hookimpl

    class Screen:
        notices: list = []

        @hookimpl
        def kiosk_notify(self, notice):
            Screen.notices.append(notice.kind)
    host = load_host(safe_mode="Asked for with --safe")
    host.register(Screen(), "screen")
    assert "standard_limits" in {info.name for info in host.plugins()}
    kiosk = open_kiosk(write_config(tmp_path, fake_stripe.url, display={"use": "screen"}), host=host)
    assert kiosk.status(check=False)["safe_mode"] is True and "safe_mode" in Screen.notices


# -- tracing ----------------------------------------------------------------------------

def test_trace_plugins_logs_every_hook_call_and_its_time(tmp_path, fake_stripe, open_kiosk, monkeypatch, caplog):
    monkeypatch.setenv("KIOSK_TRACE_PLUGINS", "1")
    caplog.set_level(logging.DEBUG, logger="kiosk.trace")
    kiosk = open_kiosk(write_config(tmp_path, fake_stripe.url))
    kiosk.take_sale(1000, card="visa")
    traced = [r.getMessage() for r in caplog.records if r.name == "kiosk.trace"]
    assert any(m.startswith("hook kiosk_open_storage -> tinydb: ") and m.endswith(" ms") for m in traced)
    assert any(m.startswith("hook kiosk_notify -> feed: ") for m in traced)
    assert any(m.startswith("hook kiosk_offline_limits") for m in traced) or any(
        m.startswith("hook kiosk_payment_changed") for m in traced)


def test_no_trace_without_the_switch(tmp_path, fake_stripe, open_kiosk, caplog):
    caplog.set_level(logging.DEBUG, logger="kiosk.trace")
    open_kiosk(write_config(tmp_path, fake_stripe.url)).take_sale(1000, card="visa")
    assert not [r for r in caplog.records if r.name == "kiosk.trace"]


# -- plugin commands --------------------------------------------------------------------

COMMAND_PLUGIN = """
from kiosk import Command, CommandError, hookimpl, opened_kiosk

def waiting(args):
    if args.fail:
        raise CommandError("the count was refused", exit_code=3)
    with opened_kiosk(args.config) as kiosk:
        print(len(kiosk.live()), "waiting")
    return 0

def arguments(parser):
    parser.add_argument("--fail", action="store_true")

@hookimpl
def kiosk_commands():
    return [Command("waiting", "how many payments wait", run=waiting, arguments=arguments)]
"""


def test_a_third_party_plugin_adds_a_command(tmp_path, fake_stripe):
    env = install_plugin(tmp_path, "acme_count", COMMAND_PLUGIN)
    path = write_config(tmp_path, fake_stripe.url, kiosk={"offline_behavior": "force_offline"})
    run_kiosk("init", "--config", path, env=env)
    run_kiosk("charge", "5.00", "--yes", "--config", path, env=env)
    result = run_kiosk("waiting", "--config", path, env=env)
    assert (result.returncode, result.stdout) == (0, "1 waiting\n"), result.stderr
    failed = run_kiosk("waiting", "--fail", "--config", path, env=env)
    assert failed.returncode == 3 and failed.stderr == "kiosk: error: the count was refused\n"
    assert "waiting" in run_kiosk("--help", env=env).stdout


def test_a_command_name_already_taken_is_refused_in_one_line(tmp_path):
    env = install_plugin(tmp_path, "acme_dup", COMMAND_PLUGIN.replace('Command("waiting"', 'Command("screenshot"'))
    result = run_kiosk("screenshot", "sale", "--out", tmp_path / "x.png", env=env)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "plugin acme_dup: command 'screenshot' is already taken (by touchscreen)" in result.stderr


# -- a checkout that is not installed ---------------------------------------------------

def test_a_checkout_that_is_not_installed_runs(tmp_path, fake_stripe):
    """No pip install of the kiosk: the dependencies are there, the project is
    only a folder.  The built-ins are found in ``plugins/`` under their
    installed name."""
    checkout = tmp_path / "checkout"
    for part in ("kiosk", "plugins"):
        shutil.copytree(ROOT / part, checkout / part, ignore=shutil.ignore_patterns("__pycache__"))
    site = sysconfig.get_paths()["purelib"]
    env = dict(os.environ, PYTHONPATH=f"{checkout}:{site}")
    # -S: no site-packages .pth files, so the editable install of this repository is not seen
    listing = subprocess.run([sys.executable, "-S", "-m", "kiosk", "plugins", "--json"], cwd=checkout, env=env,
                             capture_output=True, text=True, timeout=60)
    assert listing.returncode == 0, listing.stderr
    plugins = {p["name"]: p for p in json.loads(listing.stdout)}
    assert {"tinydb", "stripe", "simulated", "feed", "touchscreen"} <= set(plugins)
    assert all(p["builtin"] for p in plugins.values())
    probe = subprocess.run([sys.executable, "-S", "-c", "import kiosk, kiosk_builtins; "
                            "print(kiosk.__file__); print(kiosk_builtins.__file__)"],
                           cwd=checkout, env=env, capture_output=True, text=True, timeout=60)
    # kiosk_builtins is only importable once the host has looked for it
    assert probe.returncode != 0 and "kiosk_builtins" in probe.stderr
    path = write_config(tmp_path, fake_stripe.url)
    init = subprocess.run([sys.executable, "-S", "-m", "kiosk", "init", "--config", str(path)],
                          cwd=checkout, env=env, capture_output=True, text=True, timeout=60)
    assert init.returncode == 0, init.stderr
    charged = subprocess.run([sys.executable, "-S", "-m", "kiosk", "charge", "5.00", "--config", str(path)],
                             cwd=checkout, env=dict(env, KIOSK_CONFIG=""), capture_output=True, text=True,
                             timeout=60)
    assert charged.returncode == 0 and "APPROVED" in charged.stdout, charged.stderr


# -- the storage plugin names its files -------------------------------------------------

def test_the_storage_plugin_names_the_files_that_hold_the_queue(tmp_path, fake_stripe, open_kiosk):
    host = load_host()
    kiosk = open_kiosk(write_config(tmp_path, fake_stripe.url, kiosk={"offline_behavior": "force_offline"}),
                       host=host)
    kiosk.take_sale(500, card="visa")
    kiosk.close()
    named = host.call_on("tinydb", "kiosk_storage_files", settings={"storage.tinydb": {"compact_every": 2000}})
    on_disk = {p.name for p in (tmp_path / "data").iterdir() if p.is_file()}
    assert on_disk - set(named) <= {"kiosk.lock"} and {"kiosk.key", "live.kdb", "history.sqlite"} <= on_disk
    # exactly these are enough: a copy of those there opens with the sale in it
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in set(named) & on_disk:
        shutil.copy2(tmp_path / "data" / name, copy / name)
    store = host.call_on("tinydb", "kiosk_open_storage", settings={"storage.tinydb": {"compact_every": 2000}},
                         data_dir=copy, create=False)
    try:
        assert [p.amount for p in store.live()] == [500]
    finally:
        store.close()


SECTIONED_NOTIFIER = """
from kiosk import Setting, hookimpl

@hookimpl
def kiosk_settings():
    return {"notifier.acme_sms": {"to": Setting(str, "", "Vendor's phone")}}

@hookimpl
def kiosk_notify(notice):
    pass
"""


def test_a_notifier_with_its_own_settings_is_skipped_however_it_is_missing(tmp_path, fake_stripe):
    """Its section names it: failed to import, switched off or held back by
    safe mode, its settings are left unchecked and never stop a sale."""
    path = write_config(tmp_path, fake_stripe.url, notifier={"use": ["feed", "acme_sms"]},
                        notifier__acme_sms={"to": "+1 555 0100"})
    (tmp_path / "ok").mkdir()
    (tmp_path / "broken").mkdir()
    working = install_plugin(tmp_path / "ok", "acme_sms", SECTIONED_NOTIFIER)
    assert run_kiosk("init", "--config", path, env=working).returncode == 0
    broken = install_plugin(tmp_path / "broken", "acme_sms", "raise ImportError('no modem')\n")
    for env in (broken, dict(working, KIOSK_DISABLE_PLUGINS="acme_sms")):
        result = run_kiosk("charge", "5.00", "--config", path, env=env)
        assert result.returncode == 0 and "APPROVED" in result.stdout, result.stderr
        assert [line for line in result.stderr.splitlines() if "acme_sms" in line], result.stderr
    proc = start_run(path, working, "--safe")
    err = stop(proc, wait_until_up(proc, tmp_path / "data" / FLAG_NAME))
    assert proc.returncode == 0 and "'acme_sms' is not built in and the kiosk is in safe mode" in err
    typo = write_config(tmp_path, fake_stripe.url, notifier={"use": ["feed", "acme_sms"]},
                        notifier__acme_sms={"too": "x"})
    assert run_kiosk("charge", "5.00", "--config", typo, env=working).returncode == 2   # loaded: still checked


def test_a_start_that_fails_with_an_error_does_not_bring_safe_mode(tmp_path, fake_stripe):
    """Only a start that died leaves the flag: one that stopped with its one
    line (a missing reader, a queue in use) is not a plugin crash."""
    path = write_config(tmp_path, fake_stripe.url)
    assert run_kiosk("init", "--config", path).returncode == 0
    wrong = write_config(tmp_path, fake_stripe.url, reader={"use": "no_such_reader"})
    result = run_kiosk("run", "--headless", "--config", wrong)
    assert result.returncode == 2 and "no reader plugin named 'no_such_reader'" in result.stderr
    assert not (tmp_path / "data" / FLAG_NAME).exists()
