"""The kiosk reader protocol's codec (plugins/ble_reader framing + messages):
what any bytes off the air can do to it, checked with hypothesis.

Decoding raises ProtocolError and nothing else; encoding round-trips; every
single-bit error is caught; segments reassemble at every ATT MTU; and the
example frame in docs/reader-protocol.md is what the code produces."""
from __future__ import annotations

import re
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kiosk_builtins.ble_reader import messages as m
from kiosk_builtins.ble_reader.framing import (FIRST, LAST, Frame, ProtocolError, Reassembler, crc32, decode_frame,
                                        encode_frame, split_segments)
from kiosk_builtins.ble_reader.profile import (COMMAND_UUID, EVENT_UUID, MAX_FRAME_SIZE, MAX_PAYLOAD_SIZE, SERVICE_UUID,
                                        segment_size)
from kiosk_builtins.simulated_reader import TEST_CARDS

from conftest import ROOT

relaxed = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])

frames = st.builds(Frame, type=st.integers(0, 255), seq=st.integers(0, 0xFFFF),
                   payload=st.binary(max_size=MAX_PAYLOAD_SIZE))
short_text = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=0x7E), max_size=20)
battery = st.one_of(st.none(), st.integers(0, 100))
messages = st.one_of(
    st.just(m.GetInfo()),
    st.just(m.Reset()),
    st.builds(m.StartPayment, amount=st.integers(1, 0xFFFFFFFF),
              currency=st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=3, max_size=3),
              offline_allowed=st.booleans(), card_timeout=st.integers(1, 300),
              test_card=st.sampled_from(["", *TEST_CARDS])),
    st.builds(m.Cancel, payment_seq=st.integers(0, 0xFFFF)),
    st.builds(m.Info, name=short_text.filter(lambda s: s.strip() == s and s), firmware=short_text.map(str.strip),
              supports_offline=st.booleans(), battery=battery, charging=st.booleans(),
              max_frame=st.integers(64, MAX_FRAME_SIZE)),
    st.builds(m.CardResultMessage, kind=st.just(m.ResultKind.PROCESSOR_TOKEN),
              brand=st.sampled_from(["visa", "mastercard", "amex", "jcb"]),
              last4=st.from_regex(r"\A[0-9]{4}\Z"), exp_month=st.integers(0, 12),
              exp_year=st.one_of(st.just(0), st.integers(2000, 2099)),
              token=st.from_regex(r"\Apm_[A-Za-z0-9_]{1,60}\Z").map(str.encode)),
    st.builds(m.CardResultMessage, kind=st.just(m.ResultKind.ENCRYPTED_PAYLOAD), brand=st.just("visa"),
              last4=st.just("4242"), exp_month=st.just(12), exp_year=st.just(2034),
              token=st.binary(min_size=1, max_size=m.MAX_TOKEN)),
    st.builds(m.ErrorMessage, code=st.sampled_from(list(m.ErrorCode)),
              message=st.from_regex(r"\A[a-z ]{0,40}\Z").map(lambda s: " ".join(s.split()))),
    st.builds(m.Status, state=st.sampled_from(list(m.ReaderState)), battery=battery, charging=st.booleans()),
)


# -- decoding never raises anything but ProtocolError ------------------------------

@relaxed
@given(st.binary(max_size=MAX_FRAME_SIZE + 64))
def test_decode_frame_of_any_bytes_raises_only_protocol_error(data):
    try:
        frame = decode_frame(data)
    except ProtocolError as exc:
        assert exc.kind in ("truncated", "oversized", "version", "length", "crc")
    else:
        assert encode_frame(frame) == data


@relaxed
@given(st.integers(0, 255), st.binary(max_size=MAX_PAYLOAD_SIZE))
def test_parse_of_any_payload_raises_only_protocol_error(msg_type, payload):
    try:
        message = m.parse(Frame(msg_type, 1, payload))
    except ProtocolError as exc:
        assert exc.kind in ("type", "payload")
    else:
        assert message.TYPE == msg_type


@relaxed
@given(st.lists(st.binary(max_size=300), max_size=12))
def test_reassembler_fed_any_segments_raises_only_protocol_error_and_stays_bounded(segments):
    reassembler = Reassembler()
    for segment in segments:
        try:
            frame = reassembler.feed(segment)
        except ProtocolError:
            assert not reassembler.in_progress
        else:
            assert frame is None or isinstance(frame, Frame)
        assert len(reassembler._buffer or b"") <= MAX_FRAME_SIZE


# -- encoding round-trips ------------------------------------------------------------

@relaxed
@given(frames)
def test_frames_round_trip(frame):
    assert decode_frame(encode_frame(frame)) == frame


@relaxed
@given(messages, st.integers(1, 0xFFFF))
def test_messages_round_trip(message, seq):
    frame = decode_frame(encode_frame(m.to_frame(message, seq)))
    assert frame.seq == seq and m.parse(frame) == message


@relaxed
@given(frames, st.integers(23, 517))
def test_segments_reassemble_at_every_att_mtu(frame, mtu):
    encoded = encode_frame(frame)
    segments = split_segments(encoded, segment_size(mtu))
    assert all(len(s) <= mtu - 3 for s in segments)
    reassembler = Reassembler()
    *head, tail = segments
    assert all(reassembler.feed(s) is None for s in head)
    assert reassembler.feed(tail) == frame


@relaxed
@given(frames, st.data())
def test_every_single_bit_error_is_caught(frame, data):
    encoded = bytearray(encode_frame(frame))
    bit = data.draw(st.integers(0, len(encoded) * 8 - 1))
    encoded[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(ProtocolError):
        decode_frame(bytes(encoded))


# -- each kind of bad frame, by name -------------------------------------------------

def card_result_frame(seq=7) -> bytes:
    return encode_frame(m.to_frame(m.CardResultMessage(m.ResultKind.PROCESSOR_TOKEN, "visa", "4242", 12, 2034,
                                                       b"pm_card_visa"), seq))


@relaxed
@given(st.integers(0, 40))
def test_truncated(cut):
    good = card_result_frame()
    with pytest.raises(ProtocolError) as err:
        decode_frame(good[:max(0, len(good) - 1 - cut)])
    assert err.value.kind == "truncated"


def test_oversized_is_refused_before_it_is_buffered():
    body = struct.pack("<BBHH", 1, m.MessageType.CARD_RESULT, 7, MAX_FRAME_SIZE) + bytes(MAX_FRAME_SIZE)
    with pytest.raises(ProtocolError) as err:
        decode_frame(body + struct.pack("<I", crc32(body)))
    assert err.value.kind == "oversized"
    reassembler = Reassembler()
    with pytest.raises(ProtocolError) as err:
        reassembler.feed(bytes([FIRST]) + body[:100])        # the header alone gives it away
    assert err.value.kind == "oversized" and not reassembler.in_progress
    assert reassembler.feed(bytes([1]) + body[100:200]) is None   # the rest of it is dropped quietly
    assert reassembler.feed(bytes([FIRST | LAST]) + card_result_frame()).seq == 7


def test_wrong_version():
    body = bytes([2]) + card_result_frame()[1:-4]
    with pytest.raises(ProtocolError, match="protocol version 2 is not supported") as err:
        decode_frame(body + struct.pack("<I", crc32(body)))
    assert err.value.kind == "version"


def test_failing_the_crc():
    bad = bytearray(card_result_frame())
    bad[-1] ^= 0xFF
    with pytest.raises(ProtocolError, match="CRC-32") as err:
        decode_frame(bytes(bad))
    assert err.value.kind == "crc"


def test_segments_out_of_order_or_orphaned():
    encoded = card_result_frame()
    first, second = split_segments(encoded, 20)[:2]
    reassembler = Reassembler()
    with pytest.raises(ProtocolError, match="without a frame start"):
        reassembler.feed(second)
    reassembler.feed(first)
    with pytest.raises(ProtocolError, match="arrived where 1 was due"):
        reassembler.feed(first[:1].replace(bytes([FIRST]), bytes([5])) + first[1:])


def test_a_frame_must_complete_within_the_segment_timeout():
    now = [0.0]
    reassembler = Reassembler(clock=lambda: now[0])
    first, second, *_ = split_segments(card_result_frame(), 20)
    reassembler.feed(first)
    now[0] = 1.5
    with pytest.raises(ProtocolError, match="not completed within 1 s"):
        reassembler.feed(second)


# -- no card numbers --------------------------------------------------------------------

def test_there_is_no_field_for_a_card_number_and_reader_text_is_scrubbed():
    assert {f for f in m.CardResultMessage.__dataclass_fields__} == {
        "kind", "brand", "last4", "exp_month", "exp_year", "token"}
    payload = m.ErrorMessage(3, "chip error on card 4242 4242 4242 4242, try again").encode()
    assert m.ErrorMessage.decode(payload).message == "chip error on card [redacted], try again"
    assert m.scrub("line\none\x00 5555-5555-5555-4444") == "line one [redacted]"


def test_a_card_result_needs_four_digits_and_a_real_expiry():
    good = m.CardResultMessage(m.ResultKind.PROCESSOR_TOKEN, "visa", "4242", 12, 2034, b"pm_card_visa")
    for bad in (good.__class__(good.kind, good.brand, "42a2", 12, 2034, good.token),
                good.__class__(good.kind, good.brand, "4242", 13, 2034, good.token),
                good.__class__(good.kind, "vi sa", "4242", 12, 2034, good.token),
                good.__class__(good.kind, good.brand, "4242", 12, 2034, b"pm card visa")):
        with pytest.raises(ProtocolError):
            m.CardResultMessage.decode(bad.encode())


# -- the documented profile is the coded one ---------------------------------------------

def test_protocol_doc_names_the_uuids_and_its_example_frames_decode():
    doc = (ROOT / "docs" / "reader-protocol.md").read_text()
    for uuid in (SERVICE_UUID, COMMAND_UUID, EVENT_UUID):
        assert uuid in doc
    examples = re.findall(r"<!-- example: (\w+) -->\s*```text\n(.*?)```", doc, re.S)
    assert len(examples) >= 3
    for name, block in examples:
        hex_bytes = "".join(line.split("#")[0] for line in block.splitlines()).split()
        data = bytes.fromhex("".join(hex_bytes))
        if name.startswith("segment"):
            data = Reassembler().feed(data)
            data = encode_frame(data)
        message = m.parse(decode_frame(data))
        assert type(message).__name__.lower().replace("message", "").replace("_", "") in name.replace("_", "")
