"""The kiosk reader profile: the GATT service a card reader offers, and the
numbers both ends agree on.  ``docs/reader-protocol.md`` is the prose version
of this file; change them together.

Nothing here talks to a radio.
"""
from __future__ import annotations

# Fixed random 128-bit UUIDs (generated once; never change them within a
# protocol major version).  They share a base, Nordic-UART style.
SERVICE_UUID = "874adfed-c95b-4644-a693-24324bcf0fba"
COMMAND_UUID = "874adfee-c95b-4644-a693-24324bcf0fba"   # kiosk -> reader: Write, Write Without Response
EVENT_UUID = "874adfef-c95b-4644-a693-24324bcf0fba"     # reader -> kiosk: Notify

PROTOCOL_VERSION = 1

HEADER_SIZE = 6          # version u8, type u8, seq u16, length u16
CRC_SIZE = 4             # CRC-32/ISO-HDLC over header + payload
MAX_FRAME_SIZE = 512     # whole frame, header to CRC
MAX_PAYLOAD_SIZE = MAX_FRAME_SIZE - HEADER_SIZE - CRC_SIZE
MIN_FRAME_SIZE = HEADER_SIZE + CRC_SIZE

SEGMENT_HEADER_SIZE = 1
ATT_HEADER_SIZE = 3      # opcode + handle in a Write Request or a Handle Value Notification
DEFAULT_ATT_MTU = 23     # every BLE link can carry this much
PREFERRED_ATT_MTU = 247
SEGMENT_TIMEOUT = 1.0    # a frame's segments must all arrive within this many seconds

COMMAND_TIMEOUT = 2.0    # a reader answers (or acknowledges) every command within this
MAX_CARD_TIMEOUT = 300   # seconds; START_PAYMENT's card wait is capped here

# Sequence number 0 is reserved for unsolicited reader events.
UNSOLICITED_SEQ = 0
MAX_SEQ = 0xFFFF


def segment_size(att_mtu: int) -> int:
    """Frame bytes one write or notification can carry on a link with this ATT MTU."""
    return max(DEFAULT_ATT_MTU, att_mtu) - ATT_HEADER_SIZE - SEGMENT_HEADER_SIZE
