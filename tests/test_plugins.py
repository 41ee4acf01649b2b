"""The plugin contract: discovery through entry points, choice by config,
isolation of notifiers and displays, and docs that cannot rot."""
from __future__ import annotations

import inspect
import json
import re
import textwrap
import threading
from pathlib import Path

import pytest

from kiosk import hookspecs
from kiosk.boot import load_host
from kiosk.hookspecs import hookimpl
from kiosk.limits import Limits

from conftest import ROOT, run_kiosk, write_config

HOOKS = sorted(name for name, _ in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("kiosk_"))


def test_every_hook_has_a_docs_section():
    docs = (ROOT / "docs" / "plugins.md").read_text()
    missing = [hook for hook in HOOKS if f"### {hook}\n" not in docs]
    assert not missing, f"docs/plugins.md has no section for {missing}"


def test_every_hook_has_a_docstring_saying_how_it_is_called():
    for hook in HOOKS:
        doc = getattr(hookspecs, hook).__doc__ or ""
        assert "Called" in doc, f"{hook} does not say when it is called"
        firstresult = getattr(hookspecs, hook).kiosk_spec["firstresult"]
        assert ("Stops at first non-None result" in doc) == firstresult, hook


def test_every_hook_is_exercised_by_a_test():
    text = "".join(path.read_text() for path in (ROOT / "tests").glob("test_*.py")
                   if path.name != "test_plugins.py") + Path(__file__).read_text().split("HOOKS = ", 1)[1]
    # implemented by a test plugin, or called by name through the host
    untested = [hook for hook in HOOKS if not re.search(rf'def {hook}\b|"{hook}"', text)]
    assert not untested, f"no test implements or calls {untested}"


def test_plugins_command_lists_builtins_with_kind_version_and_hooks():
    result = run_kiosk("plugins", "--json")
    assert result.returncode == 0
    plugins = {p["name"]: p for p in json.loads(result.stdout)}
    assert {"simulated", "tinydb", "stripe", "feed", "standard_limits"} <= set(plugins)
    assert plugins["simulated"]["kind"] == ["reader"] and plugins["tinydb"]["kind"] == ["storage"]
    assert plugins["stripe"]["kind"] == ["sync"] and plugins["feed"]["kind"] == ["notifier"]
    assert "kiosk_offline_limits" in plugins["standard_limits"]["hooks"]
    assert all(p["version"] for p in plugins.values())
    text = run_kiosk("plugins").stdout
    assert re.search(r"^stripe \S+\s+\[sync\]", text, re.M)


def test_disabled_plugins_are_not_loaded(tmp_path, fake_stripe):
    env = {"KIOSK_DISABLE_PLUGINS": "feed, standard_limits"}
    names = [p["name"] for p in json.loads(run_kiosk("plugins", "--json", env=env).stdout)]
    assert "feed" not in names and "standard_limits" not in names and "stripe" in names
    path = write_config(tmp_path, fake_stripe.url)
    result = run_kiosk("init", "--config", path, env=env)
    # a notifier switched off is skipped with one line, never a stop (OctoPrint's rule)
    assert result.returncode == 0 and "'feed' is switched off by KIOSK_DISABLE_PLUGINS; skipped" in result.stderr
    assert result.stderr.count("\n") == 1
    charged = run_kiosk("charge", "5.00", "--config", path, env=env)
    assert charged.returncode == 0 and "APPROVED" in charged.stdout


def install_plugin(tmp_path: Path, name: str, source: str) -> dict:
    """Install a third-party plugin the way pip would: a module and a
    dist-info with an entry point in the ``kiosk`` group."""
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / f"{name}.py").write_text(textwrap.dedent(source))
    info = site / f"{name}-1.2.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.2.3\n")
    (info / "entry_points.txt").write_text(f"[kiosk]\n{name} = {name}\n")
    return {"PYTHONPATH": f"{site}:{ROOT}"}


def test_third_party_plugin_is_found_through_its_entry_point(tmp_path, fake_stripe):
    env = install_plugin(tmp_path, "acme_beeper", """
        from kiosk.hookspecs import hookimpl
        from kiosk.config import Setting
        import pathlib

        @hookimpl
        def kiosk_settings():
            return {"acme": {"log": Setting(str, "", "where to write", path=True)}}

        LOG = None

        @hookimpl
        def kiosk_startup(kiosk):
            global LOG
            LOG = pathlib.Path(kiosk.config["acme"]["log"])

        @hookimpl
        def kiosk_notify(notice):
            with open(LOG, "a") as f:
                f.write(notice.kind + "\\n")
    """)
    [plugin] = [p for p in json.loads(run_kiosk("plugins", "--json", env=env).stdout) if p["name"] == "acme_beeper"]
    assert plugin["version"] == "1.2.3" and plugin["kind"] == ["notifier"]
    path = write_config(tmp_path, fake_stripe.url, notifier={"use": ["feed", "acme_beeper"]}, acme={"log": "beeps"})
    assert run_kiosk("init", "--config", path, env=env).returncode == 0
    assert run_kiosk("charge", "5.00", "--config", path, env=env).returncode == 0
    assert (tmp_path / "beeps").read_text() == "online\napproved\n"
    bad = write_config(tmp_path, fake_stripe.url, acme={"lgo": "x"})
    result = run_kiosk("status", "--config", bad, env=env)
    assert result.returncode == 2 and "unknown key [acme] lgo" in result.stderr


def test_a_hook_the_contract_does_not_know_fails_at_start(tmp_path):
    env = install_plugin(tmp_path, "typo_plugin", """
        from kiosk.hookspecs import hookimpl

        @hookimpl
        def kiosk_notfy(notice):
            pass
    """)
    result = run_kiosk("plugins", env=env)
    assert result.returncode == 2
    assert "plugin typo_plugin" in result.stderr and "kiosk_notfy" in result.stderr
    assert result.stderr.count("\n") == 1


def test_a_plugin_that_fails_to_import_is_skipped_unless_chosen(tmp_path, fake_stripe):
    env = install_plugin(tmp_path, "broken_reader", "raise RuntimeError('no such hardware')\n")
    listing = run_kiosk("plugins", env=env)
    assert listing.returncode == 0 and "broken_reader  FAILED TO LOAD: RuntimeError: no such hardware" in listing.stdout
    path = write_config(tmp_path, fake_stripe.url)
    run_kiosk("init", "--config", path, env=env)
    assert run_kiosk("charge", "5.00", "--config", path, env=env).returncode == 0
    chosen = write_config(tmp_path, fake_stripe.url, reader={"use": "broken_reader"})
    result = run_kiosk("charge", "5.00", "--config", chosen, env=env)
    assert result.returncode == 2 and "reader plugin 'broken_reader' failed to load" in result.stderr


class Recorder:
    """A plugin that records what the host tells it."""

    def __init__(self):
        self.events = []

    @hookimpl
    def kiosk_startup(self, kiosk):
        self.events.append(("startup", kiosk.config.kiosk_id))

    @hookimpl
    def kiosk_shutdown(self):
        self.events.append(("shutdown",))

    @hookimpl
    def kiosk_payment_changed(self, payment, previous_state):
        self.events.append(("changed", previous_state, payment.state))

    @hookimpl
    def kiosk_notify(self, notice):
        self.events.append(("notice", notice.kind))

    @hookimpl
    def kiosk_sync_progress(self, done, total):
        self.events.append(("progress", done, total))


class Exploding:
    @hookimpl
    def kiosk_notify(self, notice):
        raise RuntimeError("LED driver on fire")

    @hookimpl
    def kiosk_payment_changed(self, payment):
        raise RuntimeError("receipt printer jammed")


def host_with(*plugins):
    host = load_host()
    for name, plugin in plugins:
        host.register(plugin, name)
    host.check()
    return host


def test_lifecycle_and_payment_events_reach_plugins(tmp_path, fake_stripe, open_kiosk):
    recorder = Recorder()
    host = host_with(("recorder", recorder))
    kiosk = open_kiosk(write_config(tmp_path, fake_stripe.url, notifier={"use": ["feed", "recorder"]}), host=host)
    kiosk.take_sale(1000, card="visa", behavior="force_offline")
    kiosk.forward()
    kiosk.close()
    assert recorder.events == [
        ("startup", "test-kiosk"),
        ("changed", None, "pending"), ("notice", "stored_offline"),
        ("notice", "online"), ("progress", 0, 1),
        ("changed", "pending", "succeeded"), ("notice", "forwarded"), ("progress", 1, 1),
        ("shutdown",),
    ]


def test_failing_notifier_never_stops_or_loses_a_sale(tmp_path, fake_stripe, open_kiosk, caplog):
    host = host_with(("exploding", Exploding()))
    caplog.set_level("INFO")
    kiosk = open_kiosk(write_config(tmp_path, fake_stripe.url, notifier={"use": ["exploding", "feed"]}), host=host)
    result = kiosk.take_sale(1000, card="visa")
    assert result.status == "approved"
    assert kiosk.store.get(result.payment.id).state == "succeeded"
    assert "kiosk.notice" in caplog.text and "Approved: $10.00" in caplog.text   # the next notifier still ran
    assert "plugin exploding raised in kiosk_notify" in caplog.text
    assert "plugin exploding raised in kiosk_payment_changed" in caplog.text


class Cautious:
    @hookimpl(tryfirst=True)
    def kiosk_offline_limits(self, base, history):
        if history.declined:
            return Limits(base.currency, 0, 0, 0)
        return None


def test_an_integrator_limits_policy_goes_first(tmp_path, fake_stripe, open_kiosk):
    host = host_with(("cautious", Cautious()))
    kiosk = open_kiosk(write_config(tmp_path, fake_stripe.url, kiosk={"offline_behavior": "force_offline"}),
                       host=host)
    assert kiosk.effective_limits("usd").per_transaction == 10000   # None: the standard policy answers
    kiosk.store.set_meta("offline_declined", 1)
    assert kiosk.effective_limits("usd") == Limits("usd", 0, 0, 0)
    result = kiosk.take_sale(100)
    assert result.status == "refused" and result.limit == "count"


def test_reader_hook_is_called_only_on_the_chosen_plugin(tmp_path, fake_stripe, open_kiosk):
    from kiosk_builtins.simulated_reader import SimulatedReader

    class OtherReader:
        opened = 0

        @hookimpl
        def kiosk_open_reader(self, settings):
            OtherReader.opened += 1
            return SimulatedReader(mode="tap_to_pay")
    host = host_with(("other", OtherReader()))
    kiosk = open_kiosk(write_config(tmp_path, fake_stripe.url), host=host)
    assert OtherReader.opened == 0 and kiosk.reader.info().supports_offline
    kiosk.close()
    kiosk = open_kiosk(write_config(tmp_path, fake_stripe.url, reader={"use": "other"}), host=host_with(
        ("other", OtherReader())))
    assert OtherReader.opened == 1 and not kiosk.reader.info().supports_offline


def test_storage_and_sync_hooks_open_the_configured_plugins(tmp_path, fake_stripe, open_kiosk):
    from kiosk.interfaces import Forwarder, PaymentStore
    host = load_host()
    config_path = write_config(tmp_path, fake_stripe.url)
    kiosk = open_kiosk(config_path, host=host)
    assert isinstance(kiosk.store, PaymentStore) and isinstance(kiosk.sync, Forwarder)
    kiosk.close()
    opened = host.call_on("tinydb", "kiosk_open_storage", settings={"storage.tinydb": {"compact_every": 10}},
                          data_dir=tmp_path / "data", create=False)
    assert opened.live() == [] and opened.get_meta("initialized_at")
    opened.close()
    forwarder = host.call_on("stripe", "kiosk_open_sync", settings=kiosk.config.sections_of(
        host.settings_of("stripe")), kiosk_id="k9")
    assert forwarder.reachable() is True


class Screen:
    """A display plugin that sells one thing and stops."""

    def __init__(self, fail=False):
        self.fail = fail
        self.sold = None

    @hookimpl
    def kiosk_open_display(self, kiosk, settings):
        plugin = self

        class Display:
            def run(self, stop: threading.Event):
                plugin.sold = kiosk.take_sale(700, card="visa", behavior="force_offline")
                if plugin.fail:
                    raise RuntimeError("framebuffer gone")
                stop.set()
        return Display()


def test_display_runs_on_the_main_thread_of_kiosk_run(tmp_path, fake_stripe):
    env = install_plugin(tmp_path, "tiny_screen", """
        import threading
        from kiosk.hookspecs import hookimpl

        @hookimpl
        def kiosk_open_display(kiosk, settings):
            class Display:
                def run(self, stop):
                    assert threading.current_thread() is threading.main_thread()
                    print("SOLD", kiosk.take_sale(700, card="visa", behavior="force_offline").status, flush=True)
                    stop.set()
            return Display()
    """)
    path = write_config(tmp_path, fake_stripe.url, display={"use": "tiny_screen"})
    run_kiosk("init", "--config", path, env=env)
    result = run_kiosk("run", "--config", path, env=env)
    assert result.returncode == 0 and "SOLD approved_offline" in result.stdout


def test_display_that_fails_hands_over_to_headless_forwarding(tmp_path, fake_stripe):
    import signal
    import subprocess
    import sys
    import time
    env = install_plugin(tmp_path, "bad_screen", """
        from kiosk.hookspecs import hookimpl

        @hookimpl
        def kiosk_open_display(kiosk, settings):
            class Display:
                def run(self, stop):
                    kiosk.take_sale(700, card="visa", behavior="force_offline")
                    raise RuntimeError("framebuffer gone")
            return Display()
    """)
    path = write_config(tmp_path, fake_stripe.url, display={"use": "bad_screen"}, sync={"poll_seconds": 0.1})
    run_kiosk("init", "--config", path, env=env)
    import os
    proc = subprocess.Popen([sys.executable, "-m", "kiosk.cli", "run", "--config", str(path)],
                            env=dict(os.environ, **env), stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while not fake_stripe.payment_intents and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0
    assert "display plugin bad_screen failed; carrying on headless" in err
    assert len(fake_stripe.payment_intents) == 1     # the sale made on the broken screen was still forwarded
