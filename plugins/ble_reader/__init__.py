"""Bluetooth LE card reader plugin: ``[reader] use = "ble"``.

Drives any reader that implements the open kiosk reader profile
(``docs/reader-protocol.md``) through bleak; ``docs/ble-reader.md`` says
which hardware that is today.  ``[reader.ble] emulator = true`` runs an
emulated reader on the bumble stack inside the kiosk process instead, behind
a bleak backend, so the same plugin code is exercised without hardware.

Modules, one job each: ``profile`` (UUIDs and limits), ``framing`` (frames,
segments, CRC), ``messages`` (payloads), ``errors`` (shared errors, what the
reader's codes mean), ``link`` (bleak: find, connect, pair, reconnect, talk),
``payment`` (one START_PAYMENT until its card result), ``reader`` (the
kiosk's synchronous Reader, the loop thread, the notices); for the emulator
``emulated_radio`` (bumble's in-process air), ``emulated_reader`` (the
profile on a bumble peripheral) and ``bumble_backend`` (bleak's backend
interface on a bumble central).

Imports nothing heavy until the kiosk opens the reader.  Never logs card data.
"""
from __future__ import annotations

from kiosk import Setting, hookimpl

from kiosk_builtins.simulated_reader import TEST_CARDS

from .profile import COMMAND_TIMEOUT

FAULT_CHOICES = ("", "power_off", "truncated", "oversized", "wrong_version", "bad_crc", "random")

SETTINGS = {
    "reader.ble": {
        "address": Setting(str, "", "Bluetooth address of the reader; empty: the first one advertising the "
                                    "kiosk reader service"),
        "scan_timeout": Setting(float, 5.0, "Seconds to look for the reader"),
        "connect_timeout": Setting(float, 10.0, "Seconds to connect (and pair) once it is found"),
        "connect_attempts": Setting(int, 3, "Connection attempts per connect (bleak-retry-connector)"),
        "command_timeout": Setting(float, COMMAND_TIMEOUT, "Seconds the reader has to answer a command"),
        "card_timeout": Setting(float, 60.0, "Seconds the customer has to present a card"),
        "pair": Setting(bool, True, "Pair (LE Secure Connections) when the reader is not bonded yet"),
        "battery_low": Setting(int, 20, "Tell the vendor when the reader's battery is at or below this %"),
        "adapter": Setting(str, "", "BlueZ adapter, e.g. hci1; empty: the default one"),
        "emulator": Setting(bool, False, "Use the emulated reader inside the kiosk (no hardware)"),
    },
    "reader.ble.emulated": {
        "supports_offline": Setting(bool, True, "Emulated reader: can take payments offline"),
        "battery": Setting(int, 87, "Emulated reader: battery %"),
        "card_delay": Setting(float, 0.0, "Emulated reader: seconds the customer takes to present the card"),
        "refuse_pairing": Setting(bool, False, "Emulated reader: refuse to pair"),
        "default_card": Setting(str, "visa", "Emulated reader: test card when a sale names none",
                                choices=tuple(TEST_CARDS)),
        "fault": Setting(str, "", "Emulated reader: power_off, or a bad frame (truncated, oversized, "
                                  "wrong_version, bad_crc, random), in payment number fault_in_payment",
                         choices=FAULT_CHOICES),
        "fault_in_payment": Setting(int, 1, "Emulated reader: which payment the fault hits (1 = the first)"),
        "power_on_after": Setting(float, 0.0, "Emulated reader: after power_off, switch on again after this "
                                              "many seconds (0: stay off)"),
    },
}


class BleReaderPlugin:
    @hookimpl
    def kiosk_settings(self):
        return SETTINGS

    @hookimpl
    def kiosk_open_reader(self, settings, report):
        from .reader import BleReader
        # battery low, lost and found again: told to the vendor through the kiosk's report
        return BleReader(settings["reader.ble"], settings.get("reader.ble.emulated"), report=report)


plugin = BleReaderPlugin()
