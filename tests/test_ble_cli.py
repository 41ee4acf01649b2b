"""``kiosk charge`` end to end through the BLE reader plugin, bleak, our bleak
backend and the emulated reader -- the real command (in this process, through
``run_kiosk``), with ``[reader] use = "ble"`` and ``[reader.ble] emulator = true``."""
from __future__ import annotations

import json
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from kiosk.defaults import DEFAULT_PLUGINS

from conftest import ROOT, run_json, run_kiosk, write_config


def ble_entry_point(tmp_path: Path) -> dict:
    """Nothing to do when ``ble`` is a built-in (``DEFAULT_PLUGINS``) or has its
    entry point; otherwise a dist-info in a temporary site directory (the way
    tests/test_plugins.py installs plugins), which only a child process sees
    (``run_kiosk`` then runs one)."""
    if any(name == "ble" for name, _ in DEFAULT_PLUGINS) or any(e.name == "ble" for e in entry_points(group="kiosk")):
        return {}
    info = tmp_path / "site" / "kiosk_ble_reader-0.1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: kiosk-ble-reader\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text("[kiosk]\nble = kiosk_builtins.ble_reader:plugin\n")
    return {"PYTHONPATH": f"{info.parent}:{ROOT}"}


@pytest.fixture
def ble_cli(tmp_path, fake_stripe):
    """``ble_cli(ble={...}, emulated={...})`` -> (config path, env) for a kiosk on the emulated reader."""
    env = ble_entry_point(tmp_path)

    def make(ble=None, emulated=None, **sections):
        path = write_config(tmp_path, fake_stripe.url, reader={"use": "ble"},
                            reader__ble={"emulator": True, **(ble or {})}, reader__ble__emulated=emulated or {},
                            **sections)
        assert run_kiosk("init", "--config", path, env=env).returncode == 0
        return path, env
    return make


def test_kiosk_charge_goes_end_to_end_through_bleak_and_the_emulated_reader(ble_cli, fake_stripe):
    path, env = ble_cli()
    result = run_kiosk("charge", "5.00", "--card", "visa", "--config", path, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("APPROVED: $5.00 visa •••• 4242")
    [intent] = fake_stripe.payment_intents
    assert intent["payment_method"] == "pm_card_visa" and intent["amount"] == 500
    [payment] = run_json("queue", "--config", path, env=env)
    assert payment["state"] == "succeeded" and payment["card"]["last4"] == "4242"
    declined = run_kiosk("charge", "5.00", "--card", "insufficient_funds", "--config", path, env=env)
    assert declined.returncode == 1 and declined.stdout.startswith("DECLINED")
    status = run_kiosk("status", "--config", path, env=env)
    assert "reader: Emulated card reader\n" in status.stdout


def test_the_plugin_is_listed_as_a_reader(tmp_path):
    env = ble_entry_point(tmp_path)
    [ble] = [p for p in json.loads(run_kiosk("plugins", "--json", env=env).stdout) if p["name"] == "ble"]
    assert ble["kind"] == ["reader"] and "kiosk_open_reader" in ble["hooks"]


def test_an_offline_charge_through_a_reader_that_cannot_is_refused(ble_cli):
    path, env = ble_cli(emulated={"supports_offline": False})
    result = run_kiosk("charge", "5.00", "--offline", "--config", path, env=env)
    assert result.returncode == 1
    assert "Emulated card reader cannot take payments offline" in result.stdout
    assert run_json("queue", "--config", path, env=env) == []


def test_reader_switched_off_mid_payment_is_one_line_and_stores_nothing(ble_cli, fake_stripe):
    path, env = ble_cli(emulated={"fault": "power_off"})
    result = run_kiosk("charge", "5.00", "--config", path, env=env)
    assert result.returncode == 1 and result.stdout.count("\n") == 1
    assert result.stdout == ("REFUSED: $5.00 — reader: the card reader switched off or went out of range during "
                             "the payment; nothing was charged — switch it on and try again\n")
    assert run_json("queue", "--config", path, env=env) == [] and fake_stripe.payment_intents == []


def test_reader_not_found_is_one_line(ble_cli):
    path, env = ble_cli(ble={"address": "C0:00:00:00:00:01", "scan_timeout": 0.5})
    result = run_kiosk("charge", "5.00", "--config", path, env=env)
    assert result.returncode == 1
    assert result.stdout == ("REFUSED: $5.00 — reader: card reader C0:00:00:00:00:01 not found within 0.5 s "
                             "— is it switched on and near the kiosk?\n")


def test_a_bad_frame_is_one_line_and_stores_nothing(ble_cli):
    path, env = ble_cli(emulated={"fault": "bad_crc"})
    result = run_kiosk("charge", "5.00", "--config", path, env=env)
    assert result.returncode == 1 and result.stdout.count("\n") == 1
    assert "bad frame (frame failed its CRC-32 check); it was reset and nothing was charged" in result.stdout
    assert run_json("queue", "--config", path, env=env) == []


def test_an_unknown_emulator_setting_is_refused(tmp_path, fake_stripe):
    env = ble_entry_point(tmp_path / "x")
    path = write_config(tmp_path, fake_stripe.url, reader={"use": "ble"},
                        reader__ble={"emulator": True}, reader__ble__emulated={"fault": "fire"})
    result = run_kiosk("charge", "5.00", "--config", path, env=env)
    assert result.returncode == 2 and "[reader.ble.emulated] fault must be one of" in result.stderr


def test_the_real_bluetooth_backend_without_hardware_fails_in_one_line(tmp_path, fake_stripe):
    """``emulator = false`` (the default) is bleak's BlueZ backend.  On a machine
    with no Bluetooth (CI) it must refuse the sale in one line, not hang or crash;
    on one with Bluetooth, no reader answers at that address."""
    env = ble_entry_point(tmp_path)
    path = write_config(tmp_path, fake_stripe.url, reader={"use": "ble"},
                        reader__ble={"address": "C0:00:00:00:00:01", "scan_timeout": 1.0})
    assert run_kiosk("init", "--config", path, env=env).returncode == 0
    result = run_kiosk("charge", "5.00", "--config", path, env=env)
    assert result.returncode == 1 and result.stdout.count("\n") == 1
    assert result.stdout.startswith("REFUSED: $5.00 — reader: ")
    assert "Bluetooth is not available on this kiosk" in result.stdout or "not found within 1 s" in result.stdout
    assert run_json("queue", "--config", path, env=env) == []
