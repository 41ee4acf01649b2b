"""A receipt as ESC/POS bytes, and the bytes sent to the printer, with python-escpos.

The whole receipt is rendered first, into python-escpos' own ``Dummy``
printer, and only then sent in one write: a receipt that cannot be rendered
never half-prints, and what a test reads from ``Dummy`` is what the printer gets.

Text goes out in the printer's single-byte code pages (python-escpos picks
one per character from the printer's profile: CP437, CP858 for "€", CP932 --
half-width katakana only -- and so on).  Japanese kana and Kanji are in none
of them (ESC/POS prints Kanji only in a Japanese model's own double-byte
mode, and python-escpos sends Han characters as Chinese GB18030), so a receipt
with any character the code pages lack is drawn with a CJK font and printed
as an image instead: it prints the same on every printer.

Every connection has a time limit, so a printer that hangs ends in an
error, on the kiosk's receipt thread.  Never logs a receipt's contents.
"""
from __future__ import annotations

import copy
import logging
import os
import re

from escpos.printer import Dummy, File, Network, Serial, Usb
from PIL import Image, ImageDraw, ImageFont

from kiosk import Row

from .connection import Connection, describe, parse

DOTS_PER_CELL = 12              # font A: 12 dots wide, so 32 cells fill a 384-dot (58 mm) head
# the receipt's own punctuation, as every code page has it
PLAIN = str.maketrans({"—": "-", "–": "-", "•": "*", "×": "x", "’": "'", "‘": "'", "“": '"', "”": '"',
                       "…": "...", "\u00a0": " ", "\u202f": " "})
_HAN = re.compile(r"[\u4e00-\u9fa5]")   # python-escpos sends these as GB18030 (Chinese printers)


class _QuietEscpos(logging.Filter):
    """python-escpos logs "File printer enabled", "Closing ... connection" at
    INFO on the root logger for every receipt: lines in the kiosk's small
    RAM journal that say nothing.  Its warnings and errors still pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or f"{os.sep}escpos{os.sep}" not in record.pathname


if not any(isinstance(f, _QuietEscpos) for f in logging.getLogger().filters):
    logging.getLogger().addFilter(_QuietEscpos())
CJK_FONTS = ("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
             "/usr/share/fonts/opentype/noto/NotoSansCJKjp-Regular.otf",
             "/usr/share/fonts/google-noto-cjk/NotoSansCJK-Regular.ttc",
             "/usr/share/fonts/noto-cjk/NotoSansCJK-Regular.ttc")


def print_receipt(receipt, settings: dict) -> str:
    """Render ``receipt`` and send it to the printer ``settings`` name; returns the printer's name."""
    connection = parse(settings["connection"])
    data = render(receipt, settings)
    send(connection, data, settings.get("profile") or None, float(settings.get("timeout_seconds", 10.0)))
    return describe(connection)


def render(receipt, settings: dict) -> bytes:
    """The receipt as the ESC/POS bytes a printer with this profile prints."""
    width = int(settings.get("width", 32))
    printer = Dummy(profile=settings.get("profile") or None)
    printer.hw("INIT")
    font = None if printable(printer, receipt) else _font(settings.get("cjk_font", ""))
    if font is None:        # a printer's own text; without a CJK font, what it lacks prints as "?"
        _as_text(printer, receipt, width)
    else:
        _know_width(printer, width * DOTS_PER_CELL)
        printer.image(_as_image(receipt, width, font), center=False)
    if settings.get("qr", True):
        printer.set(align="center")
        printer.qr(receipt.payment_id, size=6, native=printer.profile.supports("qrCode"))
        printer.set(align="left")
    printer.cut()
    return printer.output


def _know_width(printer, dots: int) -> None:
    """Tell this printer's profile its paper width, where the profile does not know it (the
    generic one): python-escpos then checks the image fits, and prints no warning on stdout."""
    data = printer.profile.profile_data
    if str(data.get("media", {}).get("width", {}).get("pixels", "Unknown")) == "Unknown":
        data = copy.deepcopy(data)          # this printer's own copy: the profile class is shared
        data.setdefault("media", {}).setdefault("width", {})["pixels"] = dots
        printer.profile.profile_data = data


def printable(printer, receipt) -> bool:
    """Every character of the receipt is in one of the printer's code pages."""
    text = "".join(row.left + row.right for row in receipt.rows())
    return all(_in_code_pages(printer, ch) for ch in set(text.translate(PLAIN)))


def _in_code_pages(printer, ch: str) -> bool:
    return ord(ch) < 128 or (not _HAN.match(ch) and bool(printer.magic.encoder.find_suitable_encoding(ch)))


def _plain(printer, line: str) -> str:
    """``line`` as the printer's code pages can print it: what none has becomes "?"."""
    return "".join(ch if _in_code_pages(printer, ch) else "?" for ch in line.translate(PLAIN))


def _as_text(printer, receipt, width: int) -> None:
    for row in receipt.rows():
        if row.style == "title":          # double width: half as many cells to a line
            printer.set(align="center", bold=True, double_height=True, double_width=True)
            for line in Row(row.left).lines(width // 2):
                printer.textln(_plain(printer, line.strip()))
            printer.set(align="left", bold=False, normal_textsize=True)
            continue
        printer.set(bold=row.style == "bold")
        for line in row.lines(width):
            printer.textln(_plain(printer, line))
    printer.set(bold=False)


def _as_image(receipt, width: int, font_path: str) -> Image.Image:
    """The receipt's rows drawn in black on white, ``width`` cells wide."""
    dots = width * DOTS_PER_CELL
    font, title = ImageFont.truetype(font_path, 24), ImageFont.truetype(font_path, 36)
    lines: list[tuple[str, str, object, str]] = []     # (left, right, font, style)
    for row in receipt.rows():
        face = title if row.style == "title" else font
        room = dots - (_px(face, row.right) + DOTS_PER_CELL if row.right else 0)
        parts = _wrap_px(row.left, face, room)
        lines += [(part, "", face, row.style) for part in parts[:-1]]
        lines.append((parts[-1], row.right, face, row.style))
    heights = [_line_height(face) for _left, _right, face, _style in lines]
    image = Image.new("1", (dots, sum(heights) + 8), 1)
    draw = ImageDraw.Draw(image)
    y = 4
    for (left, right, face, style), height in zip(lines, heights):
        if style == "rule":
            draw.line((0, y + height // 2, dots, y + height // 2), fill=0, width=2)
        elif style in ("title", "center"):
            draw.text(((dots - _px(face, left)) // 2, y), left, font=face, fill=0)
        else:
            for shift in ((0, 1) if style == "bold" else (0,)):     # bold: drawn twice, a dot apart
                draw.text((shift, y), left, font=face, fill=0)
            if right:
                draw.text((dots - _px(face, right), y), right, font=face, fill=0)
        y += height
    return image


def _font(path: str) -> str | None:
    """A font file that draws Japanese: ``cjk_font``, else Noto Sans CJK; None when there is none."""
    for candidate in ([path] if path else []) + list(CJK_FONTS):
        if candidate and os.path.exists(candidate):
            try:
                ImageFont.truetype(candidate, 24)
            except OSError:         # not a font Pillow can read: try the next
                continue
            return candidate
    return None


def _px(font, text: str) -> int:
    return int(font.getlength(text)) if text else 0


def _line_height(font) -> int:
    ascent, descent = font.getmetrics()
    return ascent + descent + 4


def _wrap_px(text: str, font, room: int) -> list[str]:
    """``text`` cut into lines no wider than ``room`` dots (Japanese has no spaces: cut anywhere)."""
    lines, line = [], ""
    for ch in text:
        if line and _px(font, line + ch) > room:
            cut = line.rfind(" ")
            if cut > 0 and ch != " ":
                lines.append(line[:cut])
                line = line[cut + 1:]
            else:
                lines.append(line)
                line = ""
            if ch == " " and not line:
                continue
        line += ch
    lines.append(line)
    return lines


def send(connection: Connection, data: bytes, profile: str | None, seconds: float = 10.0) -> None:
    """Open the printer, write ``data`` in one go, close it; raises on any failure,
    and when connecting or writing takes longer than ``seconds``."""
    printer = _open(connection, profile, seconds)
    if connection.kind == "serial":     # a stalled link fails; a slow one gets the time its bytes need
        printer.device.write_timeout = seconds + len(data) * 10 / connection.port
    try:
        printer._raw(data)
    finally:
        try:
            printer.close()
        finally:
            printer.device = False      # closed, or broken: python-escpos' __del__ must not close it again


def _open(connection: Connection, profile: str | None, seconds: float):
    if connection.kind == "network":
        printer = Network(connection.device, connection.port, timeout=seconds, profile=profile)
    elif connection.kind == "serial":
        printer = Serial(connection.device, baudrate=connection.port, timeout=seconds, profile=profile)
    elif connection.kind == "usb":
        printer = Usb(connection.vendor, connection.product, timeout=int(seconds * 1000), profile=profile)
    else:
        printer = File(connection.device, profile=profile)
    printer.open()
    return printer
