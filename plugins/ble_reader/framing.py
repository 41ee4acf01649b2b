"""Frames and segments of the kiosk reader protocol (docs/reader-protocol.md).

A *frame* is one message: header, payload, CRC-32.  A frame longer than one
ATT write or notification travels as several *segments*, each with a
one-byte header.  This module turns bytes into frames and back, and refuses
anything malformed with :class:`ProtocolError` -- never another exception,
and never by buffering without bound.

It knows nothing about message meanings (``messages.py``) or radios.
"""
from __future__ import annotations

import struct
import time
import zlib
from dataclasses import dataclass

from .profile import (CRC_SIZE, HEADER_SIZE, MAX_FRAME_SIZE, MAX_PAYLOAD_SIZE, MAX_SEQ, MIN_FRAME_SIZE,
                      PROTOCOL_VERSION, SEGMENT_TIMEOUT)

_HEADER = struct.Struct("<BBHH")
_CRC = struct.Struct("<I")

FIRST = 0x80     # segment header: this segment starts a frame
LAST = 0x40      # segment header: this segment ends a frame
INDEX_MASK = 0x3F


class ProtocolError(Exception):
    """Bytes that are not a valid frame.  ``kind`` names what was wrong, for
    tests and logs: truncated, oversized, version, length, crc, segment."""

    def __init__(self, kind: str, detail: str):
        super().__init__(detail)
        self.kind = kind


@dataclass(frozen=True)
class Frame:
    type: int
    seq: int
    payload: bytes = b""
    version: int = PROTOCOL_VERSION


def crc32(data: bytes) -> int:
    """CRC-32/ISO-HDLC (poly 0x04C11DB7 reflected, init and xorout 0xFFFFFFFF)."""
    return zlib.crc32(data) & 0xFFFFFFFF


def encode_frame(frame: Frame) -> bytes:
    if not 0 <= frame.type <= 0xFF or not 0 <= frame.seq <= MAX_SEQ or not 0 <= frame.version <= 0xFF:
        raise ValueError(f"frame field out of range: {frame!r}")
    if len(frame.payload) > MAX_PAYLOAD_SIZE:
        raise ValueError(f"payload of {len(frame.payload)} bytes is over the {MAX_PAYLOAD_SIZE}-byte maximum")
    body = _HEADER.pack(frame.version, frame.type, frame.seq, len(frame.payload)) + bytes(frame.payload)
    return body + _CRC.pack(crc32(body))


def decode_frame(data: bytes) -> Frame:
    """One whole frame; raises :class:`ProtocolError` and nothing else."""
    data = bytes(data)
    if len(data) > MAX_FRAME_SIZE:
        raise ProtocolError("oversized", f"frame of {len(data)} bytes is over the {MAX_FRAME_SIZE}-byte maximum")
    if len(data) < MIN_FRAME_SIZE:
        raise ProtocolError("truncated", f"frame of {len(data)} bytes is shorter than a header and CRC")
    version, msg_type, seq, length = _HEADER.unpack_from(data)
    if version != PROTOCOL_VERSION:
        raise ProtocolError("version", f"protocol version {version} is not supported "
                                       f"(this kiosk speaks version {PROTOCOL_VERSION})")
    if length > MAX_PAYLOAD_SIZE:
        raise ProtocolError("oversized", f"declared payload of {length} bytes is over the "
                                         f"{MAX_PAYLOAD_SIZE}-byte maximum")
    expected = HEADER_SIZE + length + CRC_SIZE
    if len(data) < expected:
        raise ProtocolError("truncated", f"frame is {len(data)} bytes but its header declares {expected}")
    if len(data) > expected:
        raise ProtocolError("length", f"frame is {len(data)} bytes but its header declares {expected}")
    (sent_crc,) = _CRC.unpack_from(data, expected - CRC_SIZE)
    if crc32(data[:expected - CRC_SIZE]) != sent_crc:
        raise ProtocolError("crc", "frame failed its CRC-32 check")
    return Frame(type=msg_type, seq=seq, payload=data[HEADER_SIZE:HEADER_SIZE + length], version=version)


def split_segments(frame_bytes: bytes, segment_size: int) -> list[bytes]:
    """The writes or notifications that carry one encoded frame."""
    if segment_size < 1:
        raise ValueError("segment size must be at least 1 byte")
    if len(frame_bytes) <= segment_size:
        return [bytes([FIRST | LAST]) + frame_bytes]
    chunks = [frame_bytes[i:i + segment_size] for i in range(0, len(frame_bytes), segment_size)] or [b""]
    segments = []
    for index, chunk in enumerate(chunks):
        header = index & INDEX_MASK
        if index == 0:
            header |= FIRST
        if index == len(chunks) - 1:
            header |= LAST
        segments.append(bytes([header]) + chunk)
    return segments


class Reassembler:
    """Collects segments into frames, one frame at a time.

    ``feed`` returns a decoded :class:`Frame` when a segment completes one,
    ``None`` when more segments are needed, and raises :class:`ProtocolError`
    for a bad segment or frame -- after which the partial frame is gone, the
    rest of its segments are dropped quietly, and the next FIRST segment starts
    clean.  Never holds more than one frame's worth.
    """

    def __init__(self, clock=time.monotonic, segment_timeout: float = SEGMENT_TIMEOUT):
        self._clock = clock
        self._segment_timeout = segment_timeout
        self._buffer: bytearray | None = None
        self._next_index = 0
        self._started = 0.0
        self._discarding = False     # after a bad frame: drop its remaining segments quietly

    @property
    def in_progress(self) -> bool:
        return self._buffer is not None

    def reset(self) -> None:
        self._buffer = None
        self._next_index = 0
        self._discarding = False

    def feed(self, segment: bytes) -> Frame | None:
        """One segment in; a frame, ``None`` (more to come, or the rest of a
        frame already reported bad), or :class:`ProtocolError`."""
        try:
            if segment and segment[0] == FIRST | LAST:
                # the common case, a whole frame in one segment: no buffer to build
                self._buffer, self._next_index, self._discarding = None, 0, False
                return decode_frame(segment[1:])
            return self._feed(bytes(segment))
        except ProtocolError:
            self._buffer, self._next_index, self._discarding = None, 0, True
            raise

    def _feed(self, segment: bytes) -> Frame | None:
        if not segment:
            raise ProtocolError("segment", "empty segment")
        header, chunk = segment[0], segment[1:]
        now = self._clock()
        if header & FIRST:
            self._buffer, self._next_index, self._started, self._discarding = bytearray(), 0, now, False
        elif self._buffer is None:
            if self._discarding:
                return None
            raise ProtocolError("segment", "segment without a frame start (FIRST) before it")
        elif now - self._started > self._segment_timeout:
            raise ProtocolError("segment", f"frame not completed within {self._segment_timeout:g} s")
        if header & INDEX_MASK != self._next_index:
            raise ProtocolError("segment", f"segment {header & INDEX_MASK} arrived where {self._next_index} was due")
        self._next_index = (self._next_index + 1) & INDEX_MASK
        self._buffer += chunk
        if len(self._buffer) > MAX_FRAME_SIZE:
            raise ProtocolError("oversized", f"frame grew past the {MAX_FRAME_SIZE}-byte maximum")
        if len(self._buffer) >= HEADER_SIZE:
            _, _, _, length = _HEADER.unpack_from(self._buffer)
            if self._buffer[0] == PROTOCOL_VERSION and length > MAX_PAYLOAD_SIZE:
                raise ProtocolError("oversized", f"declared payload of {length} bytes is over the "
                                                 f"{MAX_PAYLOAD_SIZE}-byte maximum")
        if not header & LAST:
            return None
        data, self._buffer = bytes(self._buffer), None
        return decode_frame(data)      # a bad whole frame raises here, and feed() starts discarding
