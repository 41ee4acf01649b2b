"""Built-in plugin ``receipt_printer``: prints receipts on an ESC/POS thermal
printer with python-escpos -- USB, serial (a Bluetooth printer is an rfcomm
serial device), network or a device file.  Settings in ``[receipt_printer]``;
``connection = ""`` (the default) leaves it off.  See docs/receipts.md.

Loading this plugin stays cheap: python-escpos (and Pillow) are imported only
when a receipt is printed.  It is handed brand and last 4 only, never a card
number or token, and logs no receipt's contents.
"""
from __future__ import annotations

from kiosk import Setting, hookimpl

from .connection import connection_problem, describe, parse

SECTION = "receipt_printer"

SETTINGS = {
    SECTION: {
        "connection": Setting(str, "", "The printer: usb:VID:PID, serial:/dev/ttyUSB0[:baud] (a Bluetooth "
                              "printer: serial:/dev/rfcomm0), network:HOST[:PORT], file:/dev/usb/lp0; "
                              "empty: no printer", check=connection_problem),
        "shop_name": Setting(str, "", "The name printed at the top of every receipt"),
        "auto": Setting(bool, True, "Print a receipt after every approved sale and every refund "
                        "(false: only when asked, from Payments or `kiosk receipt`)"),
        "width": Setting(int, 32, "Characters per line: 32 for 58 mm paper, 48 for 80 mm",
                         check=lambda width: None if width in (32, 48) else
                         f"must be 32 (58 mm paper) or 48 (80 mm), not {width}"),
        "qr": Setting(bool, True, "Print the kiosk's payment id as a QR code"),
        "timeout_seconds": Setting(float, 10.0, "How long to wait for the printer to connect and take a "
                                   "receipt before it counts as failed (the sale is never held)",
                                   check=lambda s: None if 0 < s <= 120 else "must be more than 0 and at most 120"),
        "profile": Setting(str, "", "python-escpos printer profile (e.g. TM-T88V; empty: a generic printer)"),
        "cjk_font": Setting(str, "", "Font for text the printer's code pages lack (Japanese), printed as an "
                            "image (default: Noto Sans CJK)", path=True),
    },
}


class ReceiptPrinterPlugin:
    def __init__(self):
        self.settings: dict = {}

    @hookimpl
    def kiosk_settings(self):
        return SETTINGS

    @hookimpl
    def kiosk_startup(self, kiosk):
        self.settings = dict(kiosk.config[SECTION])

    @hookimpl
    def kiosk_shutdown(self):
        self.settings = {}

    @hookimpl
    def kiosk_receipt_printer(self):
        connection = self.settings.get("connection", "")
        return describe(parse(connection)) if connection else None

    @hookimpl
    def kiosk_print_receipt(self, receipt, automatic):
        settings = self.settings
        if not settings.get("connection") or (automatic and not settings.get("auto", True)):
            return None
        from .printing import print_receipt       # python-escpos and Pillow, only now
        return print_receipt(receipt, settings)

    @hookimpl
    def kiosk_status(self, kiosk):
        connection = self.settings.get("connection", "")
        if not connection:
            return None
        auto = self.settings.get("auto", True)
        return {"receipt_printer": {"connection": describe(parse(connection)), "auto": auto,
                                    "line": f"{describe(parse(connection))}"
                                            f" ({'after every sale' if auto else 'when asked'})"}}


plugin = ReceiptPrinterPlugin()
