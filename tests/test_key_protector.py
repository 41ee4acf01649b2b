"""The queue's key sealed to the Raspberry Pi (``[storage.tinydb] key_protector
= "device"``), driven through the real ``kiosk`` command against a FAKE OTP
source: an executable ``rpi-otp-private-key`` on PATH that prints what this
test's "Pi" holds in its OTP (a key, zeros, garbage, nothing, another Pi's key).

A card taken to another Pi, a Pi whose OTP cannot be read, and a switch from
``file`` cut by a power cut at each step: one line, exit 5, nothing lost, never
a new key over an old one."""
from __future__ import annotations

import hashlib
import os
import signal
import stat
import sys
from pathlib import Path

import pytest

from kiosk_builtins.tinydb_store import key_protector
from kiosk_builtins.tinydb_store.log_storage import StoreAlarm

from conftest import run_json, run_kiosk, run_kiosk_process, write_config

OTP_SCRIPT = """#!/bin/sh
# a fake rpi-otp-private-key: prints this test Pi's OTP, as the real one does
here="$(dirname "$0")"
[ -f "$here/otp.fail" ] && { cat "$here/otp.fail" >&2; exit 1; }
cat "$here/otp.hex"
"""
PI_A, PI_B = bytes(range(1, 33)), bytes(range(101, 133))
ZEROS = "0" * 64


class FakePi:
    """The OTP a test's kiosk runs on; ``env`` puts its reader on PATH."""

    def __init__(self, root: Path):
        self.bin = root / "bin"
        self.bin.mkdir()
        script = self.bin / "rpi-otp-private-key"
        script.write_text(OTP_SCRIPT)
        script.chmod(0o755)
        self.env = {"PATH": f"{self.bin}{os.pathsep}{os.environ['PATH']}"}
        self.prints(PI_A.hex())

    def prints(self, text: str) -> None:
        (self.bin / "otp.hex").write_text(text + "\n")
        (self.bin / "otp.fail").unlink(missing_ok=True)

    def fails(self, message: str) -> None:
        (self.bin / "otp.fail").write_text(message + "\n")


@pytest.fixture
def pi(tmp_path):
    return FakePi(tmp_path)


def config_for(tmp_path, fake_stripe, protector: str, **tinydb) -> Path:
    return write_config(tmp_path, fake_stripe.url, kiosk={"offline_behavior": "force_offline"},
                        storage__tinydb={"key_protector": protector, **tinydb})


def kiosk(*args, config, pi, **kwargs):
    return run_kiosk(*args, "--config", config, env=pi.env, **kwargs)


def pending(config, pi) -> list[dict]:
    return [p for p in run_json("queue", "--config", config, env=pi.env) if p["state"] == "pending"]


def files(data: Path) -> dict[str, str]:
    """What the data directory holds, by name and content."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in data.iterdir() if p.name != "kiosk.lock"}


def assert_alarm(result, *words):
    assert result.returncode == 5, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    alarm = [line for line in lines if line.startswith("kiosk: alarm:")]
    assert len(alarm) == 1 and "Traceback" not in result.stderr, result.stderr
    for word in words:
        assert word in alarm[0], alarm[0]
    return alarm[0]


# -- a kiosk made with "device" --------------------------------------------------------

def test_a_device_kiosk_keeps_no_key_in_clear_and_sells_as_before(tmp_path, fake_stripe, pi):
    config = config_for(tmp_path, fake_stripe, "device")
    assert kiosk("init", config=config, pi=pi).returncode == 0
    data = tmp_path / "data"
    sealed = data / "kiosk.key.device"
    assert not (data / "kiosk.key").exists()
    assert stat.S_IMODE(sealed.stat().st_mode) == 0o600 and sealed.stat().st_size == key_protector.SEALED_LEN
    for amount in ("5.00", "7.25"):
        assert kiosk("charge", amount, "--card", "visa", "--yes", config=config, pi=pi).returncode == 0
    assert [p["amount"] for p in pending(config, pi)] == [500, 725]
    # the queue's key, which only the Pi's secret unseals, and the Pi's secret itself, are nowhere on the card
    key = key_protector.unseal(sealed.read_bytes(), PI_A, sealed)
    for path in data.iterdir():
        raw = path.read_bytes()
        for secret in (key, PI_A, PI_A.hex().encode()):
            assert secret not in raw, path.name
    # a second init keeps the key it has (never a new one over it)
    again = kiosk("init", config=config, pi=pi)
    assert again.returncode == 0 and "kept the existing one" in again.stdout
    assert key_protector.unseal(sealed.read_bytes(), PI_A, sealed) == key
    # and the sales reach Stripe from the sealed queue
    online = write_config(tmp_path, fake_stripe.url, storage__tinydb={"key_protector": "device"})
    assert kiosk("sync", config=online, pi=pi).returncode == 0
    assert sorted(i["amount"] for i in fake_stripe.payment_intents) == [500, 725]


def test_the_card_in_another_pi_is_an_alarm_and_changes_nothing(tmp_path, fake_stripe, pi):
    config = config_for(tmp_path, fake_stripe, "device")
    assert kiosk("init", config=config, pi=pi).returncode == 0
    assert kiosk("charge", "9.00", "--card", "visa", "--yes", config=config, pi=pi).returncode == 0
    before = files(tmp_path / "data")
    pi.prints(PI_B.hex())
    for command in (["status"], ["charge", "1.00", "--card", "visa", "--yes"], ["init"]):
        assert_alarm(kiosk(*command, config=config, pi=pi), "written by another kiosk's Pi")
    assert files(tmp_path / "data") == before
    pi.prints(PI_A.hex())      # back in its own Pi: all there
    assert [p["amount"] for p in pending(config, pi)] == [900]


@pytest.mark.parametrize("otp, words", [
    (ZEROS, ["not programmed"]),
    ("garbage, not hex", ["not a 64-digit hex key"]),
    ("abcd" * 8, ["not a 64-digit hex key"]),                      # 32 digits: too short to be the key
    (None, ["failed (exit 1", "video group"]),
    ("missing", ["is not installed"]),
])
def test_an_unreadable_otp_makes_no_key(tmp_path, fake_stripe, pi, otp, words):
    config = config_for(tmp_path, fake_stripe, "device")
    if otp is None:
        pi.fails("Failed to read the current key from OTP " + PI_B.hex())
    elif otp == "missing":
        config = config_for(tmp_path, fake_stripe, "device", otp_command=str(tmp_path / "no-such-tool"))
    else:
        pi.prints(otp)
    alarm = assert_alarm(kiosk("init", config=config, pi=pi), *words)
    assert PI_B.hex()[:16] not in alarm            # whatever the tool said, no key material is echoed
    data = tmp_path / "data"
    assert not (data / "kiosk.key").exists() and not (data / "kiosk.key.device").exists()
    assert not [p for p in data.iterdir() if p.name.startswith(".kiosk.key")] if data.exists() else True


def test_back_to_file_on_a_sealed_card_is_refused_not_a_new_key(tmp_path, fake_stripe, pi):
    config = config_for(tmp_path, fake_stripe, "device")
    assert kiosk("init", config=config, pi=pi).returncode == 0
    assert kiosk("charge", "3.00", "--card", "visa", "--yes", config=config, pi=pi).returncode == 0
    before = files(tmp_path / "data")
    plain = config_for(tmp_path, fake_stripe, "file")
    for command in ("init", "status"):
        assert_alarm(kiosk(command, config=plain, pi=pi), "sealed to this Pi", 'key_protector = "device"')
    assert files(tmp_path / "data") == before


# -- switching an existing kiosk from "file" to "device" ----------------------------------

@pytest.fixture
def file_kiosk(tmp_path, fake_stripe, pi):
    """A kiosk made as every earlier release made it, with two sales waiting."""
    config = config_for(tmp_path, fake_stripe, "file")
    assert kiosk("init", config=config, pi=pi).returncode == 0
    for amount in ("4.00", "6.00"):
        assert kiosk("charge", amount, "--card", "visa", "--yes", config=config, pi=pi).returncode == 0
    return config, (tmp_path / "data" / "kiosk.key").read_bytes()


def test_switching_to_device_seals_the_same_key_and_keeps_every_sale(tmp_path, fake_stripe, pi, file_kiosk):
    _, key = file_kiosk
    config = config_for(tmp_path, fake_stripe, "device")
    assert [p["amount"] for p in pending(config, pi)] == [400, 600]
    data = tmp_path / "data"
    assert sorted(p.name for p in data.iterdir() if "key" in p.name) == ["kiosk.key.device"]
    assert key_protector.unseal((data / "kiosk.key.device").read_bytes(), PI_A, data) == key
    assert kiosk("charge", "2.00", "--card", "visa", "--yes", config=config, pi=pi).returncode == 0
    assert [p["amount"] for p in pending(config, pi)] == [400, 600, 200]


@pytest.mark.parametrize("otp", [ZEROS, "garbage", None])
def test_a_switch_that_cannot_read_the_otp_leaves_the_file_kiosk_as_it_was(tmp_path, fake_stripe, pi, file_kiosk,
                                                                          otp):
    before = files(tmp_path / "data")
    pi.fails("no mailbox") if otp is None else pi.prints(otp)
    assert_alarm(kiosk("status", config=config_for(tmp_path, fake_stripe, "device"), pi=pi))
    assert files(tmp_path / "data") == before
    # still the file kiosk it was (config_for rewrote config.toml: back to "file")
    assert [p["amount"] for p in pending(config_for(tmp_path, fake_stripe, "file"), pi)] == [400, 600]


@pytest.mark.parametrize("point", ["seal:after_temp", "seal:after_link", "seal:after_aside", "seal:after_overwrite"])
def test_a_power_cut_during_the_switch_loses_no_key(tmp_path, fake_stripe, pi, file_kiosk, point):
    _, key = file_kiosk
    config = config_for(tmp_path, fake_stripe, "device")
    data = tmp_path / "data"
    cut = run_kiosk_process("status", "--config", config, env={**pi.env, "KIOSK_CRASH_AT": point})
    assert cut.returncode == -signal.SIGKILL, cut.stderr
    # at the cut, the key is on disk in clear or sealed, or both: never neither
    left = {p.name for p in data.iterdir()}
    plain_there = "kiosk.key" in left and (data / "kiosk.key").read_bytes() == key
    sealed_there = ("kiosk.key.device" in left and
                    key_protector.unseal((data / "kiosk.key.device").read_bytes(), PI_A, data) == key)
    assert plain_there or sealed_there, left
    # the next start finishes the switch: the same key, sealed; nothing else
    assert [p["amount"] for p in pending(config, pi)] == [400, 600]
    assert sorted(p.name for p in data.iterdir() if "key" in p.name) == ["kiosk.key.device"]
    assert key_protector.unseal((data / "kiosk.key.device").read_bytes(), PI_A, data) == key


def test_two_different_keys_for_one_queue_is_an_alarm_and_deletes_neither(tmp_path, fake_stripe, pi, file_kiosk):
    config = config_for(tmp_path, fake_stripe, "device")
    assert pending(config, pi)
    data = tmp_path / "data"
    (data / "kiosk.key").write_bytes(os.urandom(32))       # say, a backup's kiosk.key copied back in
    (data / "kiosk.key").chmod(0o600)
    before = files(data)
    assert_alarm(kiosk("status", config=config, pi=pi), "two keys for one queue")
    assert files(data) == before


# -- the sealed file itself -----------------------------------------------------------------

def test_a_changed_sealed_file_is_told_apart_from_another_pi(tmp_path):
    sealed = key_protector.seal(b"k" * 32, PI_A)
    assert key_protector.unseal(sealed, PI_A, tmp_path) == b"k" * 32
    flipped = bytearray(sealed)
    flipped[-1] ^= 1
    with pytest.raises(StoreAlarm, match="damaged or was changed"):
        key_protector.unseal(bytes(flipped), PI_A, tmp_path)
    with pytest.raises(StoreAlarm, match="another kiosk's Pi"):
        key_protector.unseal(sealed, PI_B, tmp_path)
    with pytest.raises(StoreAlarm, match="not a sealed kiosk key"):
        key_protector.unseal(sealed[:-1], PI_A, tmp_path)
    # every seal is fresh: the same key sealed twice shares no bytes past the magic
    assert key_protector.seal(b"k" * 32, PI_A)[16:] != sealed[16:]


def test_a_pi5_key_of_128_digits_is_taken(tmp_path, pi):
    pi.prints((PI_A + PI_B).hex())
    secret = key_protector.read_device_secret(str(pi.bin / "rpi-otp-private-key"), tmp_path)
    assert secret == PI_A + PI_B


def test_the_real_tools_flags_pass_through(tmp_path, pi):
    # otp_command is a command line: e.g. "rpi-otp-private-key -o 8" for a key in the Pi 5's second half
    script = pi.bin / "echo-args"
    script.write_text(f"#!{sys.executable}\nimport sys\nprint(('11' if sys.argv[1:] == ['-o', '8'] else '00') * 32)\n")
    script.chmod(0o755)
    assert key_protector.read_device_secret(f"{script} -o 8", tmp_path) == b"\x11" * 32


# -- the Stripe key: a restricted one, with only what the kiosk uses ---------------------------

def api_key_line(tmp_path, fake_stripe, key: str) -> dict:
    config = write_config(tmp_path, fake_stripe.url)
    assert run_kiosk("init", "--config", config).returncode == 0
    answer = run_json("check", "--config", config, env={"STRIPE_API_KEY": key})
    return {line["name"]: line for line in answer["checks"]}["api_key"]


def test_a_live_secret_key_is_a_warning_that_names_the_restricted_key_to_use(tmp_path, fake_stripe):
    key = "sk_live_" + "L1ve" * 6
    line = api_key_line(tmp_path, fake_stripe, key)
    assert line["detail"].startswith("warning:") and "live secret key" in line["detail"]
    assert "rk_live_" in line["advice"] and "PaymentIntents: Write" in line["advice"]
    assert key not in str(line) and key[8:] not in str(line)


@pytest.mark.parametrize("key", ["rk_live_" + "R3st" * 6, "rk_test_" + "R3st" * 6])
def test_a_restricted_key_is_no_warning(tmp_path, fake_stripe, key):
    line = api_key_line(tmp_path, fake_stripe, key)
    assert line["ok"] and line["advice"] is None and "warning" not in line["detail"]


def test_the_kiosk_asks_stripe_for_nothing_but_payment_intents(tmp_path, fake_stripe):
    """What the docs tell vendors to allow (PaymentIntents: Write, which includes Read) covers
    every request the kiosk makes: sales, every step after one, lookups and `kiosk check`."""
    config = write_config(tmp_path, fake_stripe.url)
    assert run_kiosk("init", "--config", config).returncode == 0

    def charge(*flags):
        return run_kiosk("charge", "5.00", *flags, "--config", config).returncode

    assert charge() == 0                                    # create (confirm=true)
    for status in ("requires_capture", "requires_confirmation", "requires_action", "processing"):
        fake_stripe.leave_next(1, status)                   # capture, confirm, cancel, retrieve (at sync)
        charge()
    fake_stripe.drop_next(1)                                # the answer lost: looked up (list)
    charge()
    assert charge("--offline", "--yes") == 0
    assert run_kiosk("sync", "--config", config).returncode == 0
    assert run_kiosk("check", "--config", config).returncode in (0, 1)
    routes = {(r["method"], "/".join("{id}" if part.startswith("pi_") else part for part in r["path"].split("/")))
              for r in fake_stripe.requests}
    assert routes == {("GET", "/v1/payment_intents"), ("POST", "/v1/payment_intents"),
                      ("GET", "/v1/payment_intents/{id}"), ("POST", "/v1/payment_intents/{id}/confirm"),
                      ("POST", "/v1/payment_intents/{id}/capture"), ("POST", "/v1/payment_intents/{id}/cancel")}, routes
