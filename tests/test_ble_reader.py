"""The Bluetooth LE reader plugin, in a real kiosk, through bleak, against the
emulated reader on bumble (``[reader.ble] emulator = true``).

Every fault a reader can throw at the kiosk -- switched off mid-payment, not
there, refusing to pair, unable to work offline, bad frames of every kind,
random bytes, a stale answer -- ends in a clear one-line error, a reset, and
nothing stored; the next sale goes through and is recorded once."""
from __future__ import annotations

import asyncio
import logging
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kiosk.boot import load_host
from kiosk.hookspecs import hookimpl
from kiosk.interfaces import Reader, ReaderError
from kiosk_builtins.ble_reader import SETTINGS, plugin
from kiosk_builtins.ble_reader import messages as m
from kiosk_builtins.ble_reader.emulated_reader import BAD_FRAMES
from kiosk_builtins.ble_reader.framing import encode_frame
from kiosk_builtins.simulated_reader import TEST_CARDS

from conftest import write_config

WORDS_FOR = {   # what the one-line error says about each kind of bad frame
    "truncated": "header declares",
    "oversized": "maximum",
    "wrong_version": "protocol version 2 is not supported",
    "bad_crc": "CRC-32",
    "random": "bad frame",
}


class Notices:
    """A notifier plugin that keeps what it is told."""

    def __init__(self):
        self.seen = []

    @hookimpl
    def kiosk_notify(self, notice):
        self.seen.append(notice)

    def titles(self, kind="reader") -> list[str]:
        return [n.title for n in list(self.seen) if n.kind == kind]


def wait_for(predicate, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def ble_host(*extra):
    host = load_host()
    if host.pm.get_plugin("ble") is None:      # until pyproject.toml names it, register it as a test would
        host.register(plugin, "ble")
    for name, other in extra:
        host.register(other, name)
    host.check()
    return host


@pytest.fixture
def notices():
    return Notices()


@pytest.fixture
def ble_kiosk(tmp_path, fake_stripe, open_kiosk, notices):
    """``ble_kiosk(ble={...}, emulated={...}, kiosk={...})``: a kiosk whose reader is
    the BLE plugin talking to the emulated reader; reader notices land in ``notices``."""
    def make(ble=None, emulated=None, **sections):
        path = write_config(tmp_path, fake_stripe.url, reader={"use": "ble"},
                            reader__ble={"emulator": True, **(ble or {})}, reader__ble__emulated=emulated or {},
                            notifier={"use": ["feed", "notices"]}, **sections)
        return open_kiosk(path, host=ble_host(("notices", notices)))
    return make


def stored(kiosk) -> list:
    return kiosk.store.live() + list(kiosk.store.settled())


def frames_sent(kiosk, kind) -> list:
    return [f for f in kiosk.reader.emulator.frames_received if isinstance(f, kind)]


# -- the happy path ----------------------------------------------------------------

def test_an_online_sale_goes_through_bleak_and_the_emulated_reader(ble_kiosk, fake_stripe, notices):
    kiosk = ble_kiosk()
    assert isinstance(kiosk.reader, Reader)
    result = kiosk.take_sale(500, card="visa")
    assert result.status == "approved", result.message
    assert (result.payment.card.brand, result.payment.card.last4) == ("visa", "4242")
    assert result.payment.reader == "Emulated card reader"
    [intent] = fake_stripe.payment_intents
    assert intent["payment_method"] == "pm_card_visa" and intent["amount"] == 500
    [start] = frames_sent(kiosk, m.StartPayment)
    assert start == m.StartPayment(500, "usd", False, 60, "visa")
    # production code all the way: bleak's own client, on the emulator backend
    from bleak import BleakClient
    client = kiosk.reader.link._client
    assert type(client) is BleakClient and client.backend_id == "EmulatedBleakClient"
    wait_for(lambda: "Card reader connected" in notices.titles(), what="connected notice")


def test_the_emulated_reader_hands_out_the_simulated_readers_test_tokens(ble_kiosk):
    reader = ble_kiosk().reader
    for name in ("visa", "mastercard", "amex", "insufficient_funds", "expired_card"):
        token, brand, last4 = TEST_CARDS[name]
        result = reader.read_card(1000, "usd", False, threading.Event(), name)
        assert (result.token, result.brand, result.last4, result.exp_month, result.exp_year) == \
            (token, brand, last4, 12, 2034)
    with pytest.raises(ReaderError, match="the card could not be read: unknown test card 'nope'"):
        reader.read_card(1000, "usd", False, threading.Event(), "nope")


def test_info_reports_the_reader_connected_with_its_battery(ble_kiosk):
    kiosk = ble_kiosk(emulated={"battery": 64})
    info = kiosk.reader.info()
    assert info.connected and info.battery == 64 and info.firmware == "emu-1.0" and info.supports_offline
    assert kiosk.status()["reader"] == {"name": "Emulated card reader", "supports_offline": True,
                                        "battery": 64, "connected": True}


# -- offline -----------------------------------------------------------------------

def test_a_reader_that_cannot_work_offline_gets_no_offline_sale(ble_kiosk):
    kiosk = ble_kiosk(emulated={"supports_offline": False})
    assert kiosk.reader.info().supports_offline is False
    result = kiosk.take_sale(500, card="visa", behavior="force_offline")
    assert result.status == "refused" and result.limit == "reader"
    assert result.message.startswith("Emulated card reader cannot take payments offline")
    assert stored(kiosk) == [] and kiosk.reader.emulator.payments_started == 0
    # and had anyone asked it anyway, the plugin says no before the reader is asked
    with pytest.raises(ReaderError, match="^Emulated card reader cannot take payments offline$"):
        kiosk.reader.read_card(500, "usd", True, threading.Event(), "visa")
    assert kiosk.reader.emulator.payments_started == 0
    assert kiosk.take_sale(500, card="visa").status == "approved"     # online it is fine


def test_an_offline_sale_through_a_reader_that_can(ble_kiosk, fake_stripe):
    kiosk = ble_kiosk()
    result = kiosk.take_sale(700, card="mastercard", behavior="force_offline")
    assert result.status == "approved_offline" and fake_stripe.payment_intents == []
    assert frames_sent(kiosk, m.StartPayment)[0].offline_allowed is True
    assert kiosk.forward().succeeded == 1


# -- switched off, not found, not paired ----------------------------------------------

@pytest.mark.parametrize("behavior", ["prefer_online", "force_offline"])
def test_reader_switched_off_mid_payment(ble_kiosk, fake_stripe, notices, behavior):
    kiosk = ble_kiosk(emulated={"fault": "power_off", "card_delay": 0.05, "power_on_after": 0.3})
    result = kiosk.take_sale(500, card="visa", behavior=behavior)
    assert result.status == "refused" and result.payment is None
    assert result.message == ("reader: the card reader switched off or went out of range during the payment; "
                              "nothing was charged — switch it on and try again")
    assert stored(kiosk) == [] and fake_stripe.payment_intents == []
    wait_for(lambda: "Card reader disconnected" in notices.titles(), what="disconnected notice")
    wait_for(lambda: kiosk.reader.info().connected, what="the plugin to reconnect on its own")
    again = kiosk.take_sale(500, card="visa", behavior=behavior)
    assert again.ok, again.message
    assert [p.id for p in stored(kiosk)] == [again.payment.id]          # recorded once
    assert len(fake_stripe.payment_intents) == (1 if behavior == "prefer_online" else 0)
    assert notices.titles().count("Card reader connected") == 2


def test_reader_not_found(ble_kiosk, notices):
    kiosk = ble_kiosk(ble={"address": "C0:00:00:00:00:01", "scan_timeout": 0.3})
    assert kiosk.reader.info().connected is False
    result = kiosk.take_sale(500, card="visa")
    assert result.status == "refused" and "\n" not in result.message
    assert result.message == ("reader: card reader C0:00:00:00:00:01 not found within 0.3 s — is it switched "
                              "on and near the kiosk?")
    assert stored(kiosk) == []
    wait_for(lambda: "Card reader not connected" in notices.titles(), what="not-connected notice")


def test_pairing_refused(ble_kiosk, notices):
    kiosk = ble_kiosk(ble={"connect_attempts": 1}, emulated={"refuse_pairing": True})
    result = kiosk.take_sale(500, card="visa")
    assert result.status == "refused"
    assert result.message == ("reader: the card reader C0:FF:EE:4B:52:01 refused pairing — put it in pairing "
                              "mode and pair it with the kiosk again")
    assert stored(kiosk) == []
    assert kiosk.reader.emulator.frames_received == []        # not a byte over a link that is not secure
    wait_for(lambda: "Card reader refused pairing" in notices.titles(), what="pairing notice")
    [notice] = [n for n in notices.seen if n.title == "Card reader refused pairing"]
    assert notice.level == "error"
    kiosk.reader.emulator.behaviour.refuse_pairing = False    # the installer pairs it again
    wait_for(lambda: kiosk.reader.info().connected, what="the retry to pair")
    assert kiosk.take_sale(500, card="visa").status == "approved"


# -- bad frames ----------------------------------------------------------------------

@pytest.mark.parametrize("kind", BAD_FRAMES)
def test_a_bad_frame_from_the_reader_is_a_clear_error_and_a_reset(ble_kiosk, fake_stripe, kind):
    kiosk = ble_kiosk(emulated={"fault": kind})
    result = kiosk.take_sale(500, card="visa")
    assert result.status == "refused" and "\n" not in result.message
    assert result.message.startswith("reader: the card reader sent a bad frame (")
    assert result.message.endswith("); it was reset and nothing was charged — try again")
    assert WORDS_FOR[kind] in result.message
    assert stored(kiosk) == [] and fake_stripe.payment_intents == []
    assert isinstance(kiosk.reader.emulator.frames_received[-1], m.Reset)
    again = kiosk.take_sale(500, card="visa")
    assert again.status == "approved" and [p.id for p in stored(kiosk)] == [again.payment.id]


@pytest.fixture(scope="module")
def lone_reader():
    """The plugin's reader on its own (no kiosk), for many quick payments."""
    values = {section: {key: s.default for key, s in keys.items()} for section, keys in SETTINGS.items()}
    values["reader.ble"]["emulator"] = True
    reader = plugin.kiosk_open_reader(settings=values, report=lambda notice: None)
    assert reader.info().connected
    yield reader
    reader.close()


def pay_while(reader, inject=None, delay=0.03):
    """One payment; ``inject()`` (a coroutine) runs on the radio while the reader waits for the card."""
    reader.emulator.behaviour.card_delay = delay
    if inject is not None:
        async def later():
            await asyncio.sleep(delay / 3)
            await inject()
        reader._loop.call_soon_threadsafe(lambda: asyncio.ensure_future(later()))
    try:
        return reader.read_card(500, "usd", False, threading.Event(), "visa")
    finally:
        reader.emulator.behaviour.card_delay = 0.0


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.binary(min_size=1, max_size=60), min_size=1, max_size=3))
def test_random_bytes_on_the_live_link_never_make_a_corrupted_sale(lone_reader, segments):
    async def inject():
        await lone_reader.emulator.send_segments(segments)
    try:
        result = pay_while(lone_reader, inject)
    except ReaderError as exc:
        assert "bad frame" in str(exc) and "\n" not in str(exc)
    else:   # the noise was a partial frame the real answer replaced: then it is the real answer
        assert (result.token, result.brand, result.last4) == ("pm_card_visa", "visa", "4242")
    wait_for(lambda: lone_reader.info().connected, what="the link")
    assert pay_while(lone_reader).token == "pm_card_visa"      # and the link is clean again


def test_a_stale_answer_is_never_taken_for_a_new_payment(lone_reader, caplog):
    caplog.set_level(logging.WARNING, "kiosk.ble_reader")
    pay_while(lone_reader)
    old_seq = lone_reader.link._seq
    stale = encode_frame(m.to_frame(m.CardResultMessage(m.ResultKind.PROCESSOR_TOKEN, "amex", "8431", 1, 2030,
                                                        b"pm_card_amex"), old_seq))

    async def replay():
        await lone_reader.emulator.send_frame_bytes(stale)
    result = pay_while(lone_reader, replay, delay=0.1)
    assert (result.token, result.last4) == ("pm_card_visa", "4242")
    assert f"answered sequence {old_seq}, which the kiosk no longer waits for" in caplog.text


def test_a_token_that_looks_like_a_card_number_is_refused(ble_kiosk):
    kiosk = ble_kiosk(emulated={"card_delay": 0.3})
    emulator = kiosk.reader.emulator

    async def pan():
        while emulator._payment_seq is None:        # once the customer is asked for a card
            await asyncio.sleep(0.01)
        frame = m.to_frame(m.CardResultMessage(m.ResultKind.PROCESSOR_TOKEN, "visa", "4242", 12, 2034,
                                               b"4242424242424242"), emulator._payment_seq)
        await emulator.send_frame_bytes(encode_frame(frame))
    kiosk.reader._loop.call_soon_threadsafe(lambda: asyncio.ensure_future(pan()))
    result = kiosk.take_sale(500, card="visa")
    assert result.status == "refused" and "looks like a card number" in result.message
    assert stored(kiosk) == []


def test_bad_frames_from_the_kiosk_are_answered_and_harmless(lone_reader):
    link = lone_reader.link
    before = lone_reader.emulator.bad_frames_received
    lone_reader.run(link._client.write_gatt_char(link._command_char, b"\xc0 not a frame", response=False))
    wait_for(lambda: lone_reader.emulator.bad_frames_received == before + 1, what="the reader to see it")
    time.sleep(0.05)
    assert lone_reader.info().connected and pay_while(lone_reader).token == "pm_card_visa"


def test_noise_while_idle_resets_the_reader(lone_reader):
    resets = len([f for f in lone_reader.emulator.frames_received if isinstance(f, m.Reset)])
    lone_reader.run(lone_reader.emulator.send_segments([b"\xc0\x01\x02\x03"]))
    wait_for(lambda: len([f for f in lone_reader.emulator.frames_received if isinstance(f, m.Reset)]) > resets,
             what="a reset")
    assert pay_while(lone_reader).token == "pm_card_visa"


# -- cancel and timeouts ------------------------------------------------------------------

def test_the_vendor_cancels_while_the_reader_waits(ble_kiosk):
    kiosk = ble_kiosk(emulated={"card_delay": 5})
    cancel = threading.Event()
    threading.Timer(0.2, cancel.set).start()
    started = time.monotonic()
    result = kiosk.take_sale(500, card="visa", cancel=cancel)
    assert time.monotonic() - started < 2
    assert result.status == "refused" and result.message == "reader: cancelled at the kiosk; nothing was charged"
    [cancelled] = frames_sent(kiosk, m.Cancel)
    assert cancelled.payment_seq == kiosk.reader.link._seq - 1
    assert stored(kiosk) == []


def test_no_card_in_time(ble_kiosk):
    kiosk = ble_kiosk(ble={"card_timeout": 1}, emulated={"card_delay": 3})
    started = time.monotonic()
    result = kiosk.take_sale(500, card="visa")
    assert result.message == "reader: no card was presented in time" and time.monotonic() - started < 2.5
    assert stored(kiosk) == []


def test_a_reader_that_goes_silent_is_reset(lone_reader, monkeypatch):
    emulator = lone_reader.emulator
    real = emulator._take_card

    async def mute(start, seq, number):        # accepts the payment, then says nothing
        await asyncio.sleep(30)
    monkeypatch.setattr(emulator, "_take_card", mute)
    monkeypatch.setattr(lone_reader, "card_timeout", 0.5)
    with pytest.raises(ReaderError, match="^the card reader stopped answering; it was reset and nothing was "
                                          "charged — try again$"):
        lone_reader.read_card(500, "usd", False, threading.Event(), "visa")
    monkeypatch.setattr(emulator, "_take_card", real)
    assert pay_while(lone_reader).token == "pm_card_visa"


# -- state and notices ----------------------------------------------------------------------

def test_battery_low_is_told_once_per_discharge(ble_kiosk, notices):
    kiosk = ble_kiosk(ble={"battery_low": 20})
    reader = kiosk.reader
    for level in (19, 12, 60, 15):
        reader.run(reader.emulator.set_battery(level))
        wait_for(lambda: reader.info().battery == level, what=f"battery {level}")
    wait_for(lambda: notices.titles().count("Card reader battery low") == 2, what="two battery notices")
    low = [n.message for n in notices.seen if n.title == "Card reader battery low"]
    assert low == ["Emulated card reader: 19% — charge it soon", "Emulated card reader: 15% — charge it soon"]


def test_the_reader_reconnects_on_its_own(ble_kiosk, notices):
    kiosk = ble_kiosk()
    reader = kiosk.reader
    assert reader.info().connected
    reader.run(reader.emulator.switch_off())
    wait_for(lambda: not reader.info().connected, what="the drop")
    reader.run(reader.emulator.switch_on())
    wait_for(lambda: reader.info().connected, what="the reconnection")
    # notices travel on the reader's own thread: they may trail the state by a moment
    wait_for(lambda: notices.titles()[-2:] == ["Card reader disconnected", "Card reader connected"],
             what="the notices")
    assert kiosk.take_sale(500, card="visa").status == "approved"


def test_close_stops_the_radio_thread_cleanly(ble_kiosk, caplog):
    caplog.set_level(logging.WARNING)
    kiosk = ble_kiosk()
    kiosk.take_sale(500, card="visa")
    reader = kiosk.reader
    kiosk.close()
    assert not reader._thread.is_alive() and reader._loop.is_closed()
    assert not [t for t in reader._notices._threads if t.is_alive()]
    reader.close()                                                     # twice is fine
    assert "Task was destroyed" not in caplog.text
    with pytest.raises(ReaderError, match="closed"):
        reader.read_card(500, "usd", False, threading.Event())


def test_a_kiosk_opens_and_closes_while_the_reader_is_still_being_found(ble_kiosk):
    kiosk = ble_kiosk(ble={"address": "C0:00:00:00:00:01", "scan_timeout": 5})
    started = time.monotonic()
    kiosk.close()
    assert time.monotonic() - started < 3
