"""The ``kiosk`` command as scripts use it: options, JSON, exit codes, errors.

``run_kiosk`` runs the command in this process; a real child process
(``run_kiosk_process``, ``Popen``) where that is the point: a second process
refused the queue, STRIPE_LOG (read at import), ``kiosk run`` under SIGTERM."""
from __future__ import annotations

import json
import os
import stat

import pytest

from conftest import ROOT, TEST_KEY, run_json, run_kiosk, run_kiosk_process, write_config


@pytest.fixture
def config(tmp_path, fake_stripe):
    path = write_config(tmp_path, fake_stripe.url)
    assert run_kiosk("init", "--config", path).returncode == 0
    return path


def test_init_is_safe_to_run_twice_and_never_replaces_the_key(tmp_path, fake_stripe):
    path = write_config(tmp_path, fake_stripe.url)
    first = run_kiosk("init", "--config", path)
    assert first.returncode == 0 and "created" in first.stdout
    key = tmp_path / "data" / "kiosk.key"
    original = key.read_bytes()
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "data").stat().st_mode) == 0o700
    for name in ("live.kdb", "history.sqlite"):
        assert stat.S_IMODE((tmp_path / "data" / name).stat().st_mode) == 0o600
    second = run_kiosk("init", "--config", path)
    assert second.returncode == 0 and "kept the existing one" in second.stdout
    assert key.read_bytes() == original


def test_charge_exit_codes(config, fake_stripe):
    ok = run_kiosk("charge", "12.50", "--config", config)
    assert ok.returncode == 0 and ok.stdout.startswith("APPROVED:") and "visa •••• 4242" in ok.stdout
    declined = run_kiosk("charge", "12.50", "--card", "insufficient_funds", "--config", config)
    assert declined.returncode == 1 and declined.stdout.startswith("DECLINED")
    offline = run_kiosk("charge", "3.00", "--offline", "--config", config)
    assert offline.returncode == 0 and "APPROVED OFFLINE" in offline.stdout
    over = run_kiosk("charge", "150.00", "--offline", "--config", config)
    assert over.returncode == 1 and "over the offline limit per sale" in over.stdout


@pytest.mark.parametrize("amount, currency, words", [
    ("12.505", "usd", "USD has 2 decimals at most"),
    ("0", "usd", "more than zero"),
    ("-5", "usd", "more than zero"),
    ("abc", "usd", "is not a number"),
    ("123456789", "usd", "8-digit maximum"),
    ("10", "xyz", "unknown currency"),
    ("0.49", "usd", "below Stripe's minimum"),
    ("1.5", "jpy", "JPY has no decimals"),
])
def test_bad_amounts_are_one_line_usage_errors(config, fake_stripe, amount, currency, words):
    result = run_kiosk("charge", amount, "--currency", currency, "--config", config)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and words in result.stderr
    assert run_json("queue", "--config", config) == [] and fake_stripe.payment_intents == []


def test_offline_prompt_needs_yes_when_not_interactive(config, fake_stripe):
    fake_stripe.set_offline(True)
    refused = run_kiosk("charge", "5.00", "--config", config, input="")
    assert refused.returncode == 1 and "pass --yes" in refused.stderr
    assert "Store this sale offline?" in refused.stderr and "offline limit left" in refused.stderr
    confirmed = run_kiosk("charge", "5.00", "--yes", "--customer", "bo@example.com", "--config", config)
    assert confirmed.returncode == 0
    [payment] = run_json("queue", "--config", config)
    assert payment["customer"] == "bo@example.com" and payment["offline"] is True


def test_queue_json_contract(config, fake_stripe):
    run_kiosk("charge", "12.50", "--config", config)
    run_kiosk("charge", "7.25", "--offline", "--card", "mastercard", "--config", config)
    payments = run_json("queue", "--config", config)
    assert len(payments) == 2
    for p in payments:
        assert set(p) >= {"id", "state", "amount", "currency", "created_at", "offline", "card",
                          "payment_intent", "decline_code", "message"}
        assert isinstance(p["amount"], int) and p["currency"] == "usd" and p["created_at"].endswith("Z")
        assert set(p["card"]) >= {"brand", "last4"}
        assert "token" not in json.dumps(p) and "pm_card" not in json.dumps(p)
    by_state = {p["state"]: p for p in payments}
    assert by_state["succeeded"]["payment_intent"].startswith("pi_")
    assert by_state["pending"]["amount"] == 725 and by_state["pending"]["payment_intent"] is None


def test_sync_counts_and_exit_codes(config, fake_stripe):
    for card in ("visa", "insufficient_funds", "visa"):
        run_kiosk("charge", "10.00", "--offline", "--card", card, "--config", config)
    fake_stripe.set_offline(True)
    unreachable = run_kiosk("sync", "--config", config)
    assert unreachable.returncode == 3 and "unreachable" in unreachable.stderr
    assert all(p["state"] == "pending" for p in run_json("queue", "--config", config))
    fake_stripe.set_offline(False)
    result = run_kiosk("sync", "--json", "--config", config)
    assert result.returncode == 0
    assert json.loads(result.stdout) == {"reached": True, "succeeded": 2, "failed": 1, "pending": 0,
                                         "auth_error": None}
    notices = run_json("notices", "--config", config)
    declined = [n for n in notices if n["kind"] == "declined"]
    assert len(declined) == 1 and "insufficient_funds" in declined[0]["message"]


def test_sync_with_rejected_key_exits_4_and_keeps_the_queue(config, fake_stripe):
    run_kiosk("charge", "10.00", "--offline", "--config", config)
    fake_stripe.reject_api_keys(True)
    result = run_kiosk("sync", "--config", config)
    assert result.returncode == 4 and "rejected the API key" in result.stderr
    assert [p["state"] for p in run_json("queue", "--config", config)] == ["pending"]


def test_status_json(config, fake_stripe):
    run_kiosk("charge", "10.00", "--offline", "--config", config)
    run_kiosk("charge", "1500", "--currency", "jpy", "--config", config)
    status = run_json("status", "--config", config)
    assert status["online"] is True and status["kiosk_id"] == "test-kiosk"
    assert status["pending"]["count"] == 1
    assert status["pending"]["by_currency"]["usd"] == {"count": 1, "amount": 1000, "formatted": "$10.00"}
    assert 0 <= status["oldest_pending_age_hours"] < 0.1 and status["window_hours_left"] > 23.9
    assert status["limits"]["usd"]["per_transaction"] == 10000 and status["limits"]["usd"]["left"] == 49000
    assert status["last_sync_at"] is None or status["last_sync_at"].endswith("Z")
    fake_stripe.set_offline(True)
    assert run_json("status", "--config", config)["online"] is False


def test_config_from_environment_and_default_path(tmp_path, fake_stripe):
    path = write_config(tmp_path, fake_stripe.url)
    assert run_kiosk("init", env={"KIOSK_CONFIG": str(path)}).returncode == 0
    assert run_kiosk("status", "--json", cwd=tmp_path).returncode == 0   # ./config.toml
    missing = run_kiosk("status", "--config", tmp_path / "nope.toml")
    assert missing.returncode == 2 and "no such configuration file" in missing.stderr


@pytest.mark.parametrize("text, words", [
    ('[kiosk]\nidd = "x"\n', "unknown key [kiosk] idd"),
    ('[kiosk]\ncurrency = "zzz"\n', "[kiosk] currency: unknown currency"),
    ('[limits]\nmax_pending = "ten"\n', "[limits] max_pending must be int"),
    ('[limits]\nper_transaction = true\n', "[limits] per_transaction must be float"),
    ('[kiosk]\noffline_behavior = "sometimes"\n', "[kiosk] offline_behavior must be one of"),
    ('[reader.simulated]\nmode = "magic"\n', "[reader.simulated] mode must be one of"),
    ('[mystery]\na = 1\n', "unknown section [mystery]"),
    ('[kiosk\n', "not valid TOML"),
    ('[reader]\nuse = "nothing"\n', "no reader plugin named 'nothing'"),
    ('[limits.currencies.jpy]\nper_transaction = 100\n', "[limits.currencies.jpy] total is missing"),
])
def test_bad_config_is_one_line_naming_the_key(tmp_path, text, words):
    path = tmp_path / "config.toml"
    path.write_text(f'[storage]\npath = "data"\n{text}' if not text.startswith("[storage]") else text)
    result = run_kiosk("status", "--config", path)
    assert result.returncode == 2, result.stderr
    assert words in result.stderr and result.stderr.strip().count("\n") == 0


def test_uninitialised_data_dir_is_a_clear_alarm(tmp_path, fake_stripe):
    path = write_config(tmp_path, fake_stripe.url)
    result = run_kiosk("queue", "--config", path)
    assert result.returncode == 5 and "run `kiosk init` first" in result.stderr


def test_second_process_is_refused_while_the_queue_is_held(config, open_kiosk):
    held = open_kiosk(config)
    result = run_kiosk_process("queue", "--config", config)
    assert result.returncode == 5 and "in use by another kiosk process" in result.stderr
    held.close()


def test_api_key_and_card_data_never_reach_output_or_logs(config, fake_stripe, tmp_path):
    outputs = []
    for args in (("charge", "12.50"), ("charge", "3.00", "--offline", "--card", "insufficient_funds"),
                 ("sync",), ("status",), ("queue",), ("notices",), ("status", "--json")):
        # a child process each: stripe-python reads STRIPE_LOG once, at import
        result = run_kiosk_process("-v", *args, "--config", config, env={"STRIPE_LOG": "debug"})
        outputs.append(result.stdout + result.stderr)
    everything = "\n".join(outputs)
    assert TEST_KEY not in everything and TEST_KEY[8:] not in everything
    assert "pm_card" not in everything and "payment_method" not in everything   # no request bodies


def test_key_file_must_be_private(tmp_path, fake_stripe):
    key_file = tmp_path / "stripe.key"
    key_file.write_text(TEST_KEY)
    os.chmod(key_file, 0o644)
    path = write_config(tmp_path, fake_stripe.url, stripe={"api_key_file": "stripe.key"})
    run_kiosk("init", "--config", path)
    env = {"STRIPE_API_KEY": ""}
    loose = run_kiosk("status", "--config", path, env=env)
    assert loose.returncode == 2 and "chmod 600" in loose.stderr
    os.chmod(key_file, 0o600)
    assert run_kiosk("charge", "5.00", "--config", path, env=env).returncode == 0
    assert len(fake_stripe.payment_intents) == 1


def test_version_and_help():
    assert run_kiosk("--version").stdout.startswith("kiosk ")
    assert "charge" in run_kiosk("--help").stdout


def test_demo_walks_through_a_market_day():
    result = run_kiosk("demo", "--no-screen", "--config", ROOT / "config.toml", env={"STRIPE_API_KEY": ""}, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "APPROVED visa •••• 4242" in out and out.count("APPROVED OFFLINE") == 5
    assert "2 × Coffee, 1 × Bun: $12.50 + tip $1.88" in out
    assert "VOIDED: voided $4.00 amex •••• 8431" in out and "REFUNDED: refunded $4.50" in out
    assert "voided         1           $4.00" in out and "net                       $41.38" in out
    assert "over the offline limit per sale" in out and "cannot take payments offline" in out
    assert "succeeded 2, failed 1, pending 1" in out
    assert "Payment declined — follow up" in out and "insufficient_funds" in out and "+1 555 0100" in out
    assert "Declined for now — will retry" in out and "processing_error" in out


def test_run_headless_forwards_when_stripe_returns_and_stops_cleanly(tmp_path, fake_stripe):
    import signal
    import subprocess
    import sys
    import time
    path = write_config(tmp_path, fake_stripe.url, sync={"poll_seconds": 0.2})
    run_kiosk("init", "--config", path)
    fake_stripe.set_offline(True)
    for _ in range(2):
        assert run_kiosk("charge", "4.00", "--yes", "--config", path).returncode == 0
    proc = subprocess.Popen([sys.executable, "-m", "kiosk.cli", "run", "--headless", "--config", str(path)],
                            stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    time.sleep(1.0)
    assert fake_stripe.payment_intents == []
    fake_stripe.set_offline(False)
    deadline = time.monotonic() + 20
    while len(fake_stripe.payment_intents) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0
    assert len(fake_stripe.payment_intents) == 2 and "Payment sent" in err
    assert {p["state"] for p in run_json("queue", "--config", path)} == {"succeeded"}


@pytest.mark.parametrize("text, words", [
    ("[limits]\nper_transaction = inf\n", "[limits] per_transaction must be a number from 0"),
    ("[limits]\ntotal = nan\n", "[limits] total must be a number from 0"),
    ("[reader.simulated]\ndelay_seconds = inf\n", "[reader.simulated] delay_seconds must be a number"),
    ("[limits.currencies.usd]\nper_transaction = 1e300\ntotal = 1\n", "per_transaction must be a number from 0"),
])
def test_numbers_out_of_range_are_config_errors(tmp_path, text, words):
    path = tmp_path / "config.toml"
    path.write_text(f'[storage]\npath = "data"\n{text}')
    result = run_kiosk("status", "--config", path)
    assert result.returncode == 2 and words in result.stderr and result.stderr.count("\n") == 1


def test_absurdly_long_amount_is_a_usage_error(config):
    result = run_kiosk("charge", "9" * 5000, "--config", config)
    assert result.returncode == 2 and "too long" in result.stderr and result.stderr.count("\n") == 1


@pytest.mark.parametrize("args, words", [(("charge",), "required: amount"), (("nosuch",), "invalid choice"),
                                         (("queue", "--limit", "x"), "invalid int value")])
def test_a_usage_error_is_one_line(args, words):
    result = run_kiosk(*args)
    assert result.returncode == 2 and words in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
