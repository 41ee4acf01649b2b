"""Finding fonts that can draw the chosen language.

Japanese needs a CJK font (Noto Sans CJK, Debian package ``fonts-noto-cjk``).
The known paths are tried first (no process to start), then ``fc-match``.
A font only counts when it really has the glyphs: ``fc-match`` always answers
with *some* font, and SDL_ttf draws a missing glyph as an empty box, so a
Japanese sample is checked against the font's own "missing glyph" box.
When none is found the screen falls back to English and says so; it never
shows boxes instead of words.
"""
from __future__ import annotations

import logging
import os
import shutil
import subprocess

log = logging.getLogger("kiosk.touchscreen")

# Debian/Raspberry Pi OS, Fedora, Arch, and a manual install.
CJK_PATHS = [
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJKjp-Regular.otf",
    "/usr/share/fonts/google-noto-cjk/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/noto-cjk/NotoSansCJK-Regular.ttc",
    "/usr/local/share/fonts/NotoSansCJK-Regular.ttc",
]
LATIN_PATHS = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
]
FC_MATCH = "fc-match"
JAPANESE_SAMPLE = "販売金額を請求"


def bold_sibling(path: str) -> str | None:
    """NotoSansCJK-Regular.ttc -> NotoSansCJK-Bold.ttc, DejaVuSans.ttf -> DejaVuSans-Bold.ttf."""
    head, name = os.path.split(path)
    stem, ext = os.path.splitext(name)
    for candidate in (stem.replace("Regular", "Bold"), stem + "-Bold"):
        if candidate != stem and os.path.exists(os.path.join(head, candidate + ext)):
            return os.path.join(head, candidate + ext)
    return None


def fc_match(family: str) -> str | None:
    exe = shutil.which(FC_MATCH) if not os.path.isabs(FC_MATCH) else FC_MATCH
    if not exe or not os.path.exists(exe):
        return None
    try:
        out = subprocess.run([exe, "-f", "%{file}", family], capture_output=True, text=True, timeout=3)
    except (OSError, subprocess.SubprocessError):
        return None
    path = out.stdout.strip()
    return path if out.returncode == 0 and path and os.path.exists(path) else None


def has_glyphs(font, text: str) -> bool:
    """Every character of ``text`` has its own glyph in this pygame font
    (not the missing-glyph box every other missing character shares)."""
    missing = font.metrics("\uffff")[0]
    return all(m is not None and m != missing for m in font.metrics(text))


def find_cjk(override: str, load) -> tuple[str, object] | tuple[None, None]:
    """A font that draws Japanese -- ``override`` when set, else the known
    paths, else fontconfig -- as (path, the pygame font ``load(path)`` opened)."""
    candidates = [override] if override else []
    candidates += CJK_PATHS
    for path in candidates:
        font = _draws_japanese(path, load) if path and os.path.exists(path) else None
        if font is not None:
            return path, font
    if override:
        log.warning("touchscreen: font %s is missing or has no Japanese glyphs; searching others", override)
    path = fc_match("Noto Sans CJK JP:lang=ja")
    font = _draws_japanese(path, load) if path else None
    return (path, font) if font is not None else (None, None)


def find_latin(override: str) -> str | None:
    """Path of the font for English, or None for pygame's bundled font."""
    if override:
        if os.path.exists(override):
            return override
        log.warning("touchscreen: font %s does not exist; using a default font", override)
    return next((p for p in LATIN_PATHS if os.path.exists(p)), None)


def _draws_japanese(path: str, load):
    try:
        font = load(path)
        return font if has_glyphs(font, JAPANESE_SAMPLE) else None
    except Exception:    # a broken file is simply not a candidate
        return None


class Fonts:
    """One pygame font per weight, resized as needed.

    A CJK font costs about 2.5 MB for each open size, so sizes are not
    cached as separate fonts: the one open font is set to the size asked for
    (``point_size``; rendered strings are cached by the display instead).
    """

    def __init__(self, pygame, regular: str | None, bold: str | None, first=None):
        self.pygame = pygame
        self.regular, self.bold = regular, bold
        self._open: dict[bool, object] = {}
        if first is not None:
            self._open[False] = first     # the font already opened to check its glyphs

    def get(self, size: int, bold: bool = False):
        font = self._open.get(bold)
        if font is None:
            path = (self.bold or self.regular) if bold else self.regular
            font = self.pygame.font.Font(path, size)
            if bold and not self.bold and self.regular is not None:
                font.bold = True       # synthetic bold when the family has no bold file
            self._open[bold] = font
        elif font.point_size != size:
            font.point_size = size
        return font
