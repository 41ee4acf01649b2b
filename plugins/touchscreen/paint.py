"""Pixels for a frame: paints the widgets :mod:`.screens` built onto a pygame surface.

Its one job is rendering -- rectangles, bars, icons and text fitted to its
box (smaller type first, then wrapped, then an ellipsis), with a bounded
cache of rendered strings.  It never decides what is on screen (that is
:func:`.screens.build`), never changes the UI state, never handles input and
never flips the display; it reads no store and does no I/O.
"""
from __future__ import annotations

import collections
import os
import re

from .layout import MIN_TEXT

os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")   # pygame prints a banner on stdout otherwise
import pygame  # noqa: E402  (only imported when a display opens: see plugins/touchscreen/__init__.py)

TEXT_CACHE_BYTES = 1024 * 1024   # rendered strings kept, least recently drawn dropped first


class Painter:
    """Draws scenes onto ``surface`` with ``fonts`` (a :class:`~.fonts.Fonts`)."""

    def __init__(self, surface, fonts):
        self.surface = surface
        self.fonts = fonts
        self._text_cache: collections.OrderedDict = collections.OrderedDict()
        self._text_cache_bytes = 0

    def paint(self, scene, pressed: str | None = None) -> list[tuple[str, str, int]]:
        """Draw every widget of ``scene`` in order (the button named
        ``pressed`` darker).  Returns (widget name, text, px) of each string drawn."""
        drawn: list[tuple[str, str, int]] = []
        for widget in scene.widgets:
            self._draw_widget(self.surface, widget, scene.geometry, pressed, drawn)
        return drawn

    def _draw_widget(self, surface, widget, geo, pressed, drawn) -> None:
        box = widget.box
        rect = pygame.Rect(box.tuple())
        kind = widget.kind
        if kind == "fill":
            radius = 0 if widget.name in ("background", "status_bar", "nav_bar") or widget.name.startswith("banner") \
                else geo.gap
            pygame.draw.rect(surface, widget.fill, rect, border_radius=radius)
            if widget.border:
                pygame.draw.rect(surface, widget.border, rect, width=2, border_radius=radius)
        elif kind == "button":
            fill = widget.fill
            if widget.name == pressed:
                fill = tuple(int(c * 0.75) for c in fill)
            pygame.draw.rect(surface, fill, rect, border_radius=geo.gap)
            if widget.border:
                pygame.draw.rect(surface, widget.border, rect, width=2, border_radius=geo.gap)
            if widget.icon:
                self._draw_icon(surface, widget, rect)
            if widget.text:
                self._draw_text(surface, widget, box.inset(max(4, geo.gap), 2), geo, drawn)
        elif kind == "text":
            self._draw_text(surface, widget, box, geo, drawn)
        elif kind == "bar":
            pygame.draw.rect(surface, (255, 255, 255), rect, border_radius=geo.gap)
            filled = rect.copy()
            filled.width = int(rect.width * max(0.0, min(1.0, widget.value)))
            if filled.width:
                pygame.draw.rect(surface, widget.fill, filled, border_radius=geo.gap)
            pygame.draw.rect(surface, widget.border, rect, width=2, border_radius=geo.gap)

    def _draw_icon(self, surface, widget, rect) -> None:
        cx, cy = rect.center
        s = max(8, min(rect.width, rect.height) // 4)
        colour = widget.colour
        if widget.icon == "up":
            pygame.draw.polygon(surface, colour, [(cx - s, cy + s // 2), (cx + s, cy + s // 2), (cx, cy - s)])
        elif widget.icon == "down":
            pygame.draw.polygon(surface, colour, [(cx - s, cy - s // 2), (cx + s, cy - s // 2), (cx, cy + s)])
        elif widget.icon == "back":       # a backspace key: a tag pointing left with an x
            w = int(s * 1.6)
            points = [(cx - w, cy), (cx - w // 2, cy - s), (cx + w, cy - s), (cx + w, cy + s), (cx - w // 2, cy + s)]
            pygame.draw.polygon(surface, colour, points, width=3)
            d = s // 2
            pygame.draw.line(surface, colour, (cx - d + s // 3, cy - d), (cx + d + s // 3, cy + d), 3)
            pygame.draw.line(surface, colour, (cx - d + s // 3, cy + d), (cx + d + s // 3, cy - d), 3)

    def _draw_text(self, surface, widget, box, geo, drawn) -> None:
        if not widget.text or box.w <= 0 or box.h <= 0:
            return
        image, px = self.text_image(widget.text, geo.text[widget.role], widget.bold, widget.colour, box.w, box.h,
                                    widget.lines, widget.align)
        drawn.append((widget.name, widget.text, px))
        width, height = image.get_size()
        if widget.align == "left":
            x = box.x
        elif widget.align == "right":
            x = box.right - width
        else:
            x = box.x + (box.w - width) // 2
        y = box.y + (box.h - height) // 2
        clip = surface.get_clip()
        surface.set_clip(pygame.Rect(box.tuple()))      # text never spills out of its widget
        surface.blit(image, (x, y))
        surface.set_clip(clip)

    def text_image(self, text: str, px: int, bold: bool, colour, width: int, height: int, lines: int = 1,
                   align: str = "center"):
        """Rendered text that fits ``width`` x ``height`` on at most ``lines``
        lines: smaller type first, then an ellipsis.  Returns (image, px used)."""
        key = (text, px, bold, colour, width, height, lines, align)
        cached = self._text_cache.get(key)
        if cached is not None:
            self._text_cache.move_to_end(key)
            return cached
        size = max(MIN_TEXT, min(px, int(height / 1.2)))
        while True:
            font = self.fonts.get(size, bold)
            rows = [text] if lines == 1 else wrap(text, font, width)
            tall = len(rows) * font.get_linesize() if len(rows) > 1 else 0
            fits = len(rows) <= lines and tall <= height and all(font.size(r)[0] <= width for r in rows)
            if fits or size <= MIN_TEXT:
                break
            size = max(MIN_TEXT, int(size * 0.9))
        rows = rows[:lines]
        if len(rows) == lines and lines > 1 and len(wrap(text, font, width)) > lines:
            rows[-1] = rows[-1] + "…"
        rows = [ellipsize(r, font, width) for r in rows]
        if len(rows) == 1:
            image = font.render(rows[0], True, colour)
        else:
            images = [font.render(r, True, colour) for r in rows]
            step = font.get_linesize()
            image = pygame.Surface((max(i.get_width() for i in images), step * len(images)), pygame.SRCALPHA)
            for n, line in enumerate(images):
                x = {"left": 0, "right": image.get_width() - line.get_width()}.get(
                    align, (image.get_width() - line.get_width()) // 2)
                image.blit(line, (x, n * step))
        self._text_cache[key] = (image, size)
        self._text_cache_bytes += image.get_width() * image.get_height() * image.get_bytesize()
        while self._text_cache_bytes > TEXT_CACHE_BYTES and len(self._text_cache) > 1:
            _, (old, _) = self._text_cache.popitem(last=False)
            self._text_cache_bytes -= old.get_width() * old.get_height() * old.get_bytesize()
        return image, size


def wrap(text: str, font, width: int) -> list[str]:
    """Break ``text`` into lines no wider than ``width``: at spaces, or between
    any two characters where there are none (Japanese)."""
    rows: list[str] = []
    line = ""
    for word in re.findall(r"\S+\s*", text):
        if font.size(line + word.rstrip())[0] <= width:
            line += word
            continue
        if line:
            rows.append(line.rstrip())
            line = ""
        while font.size(word.rstrip())[0] > width:      # a word (or a Japanese sentence) wider than a line
            low, high = 1, len(word)
            while low < high:
                mid = (low + high + 1) // 2
                if font.size(word[:mid])[0] <= width:
                    low = mid
                else:
                    high = mid - 1
            rows.append(word[:low])
            word = word[low:]
        line = word
    if line.strip():
        rows.append(line.rstrip())
    return rows or [""]


def ellipsize(text: str, font, width: int) -> str:
    if font.size(text)[0] <= width:
        return text
    low, high = 0, len(text)
    while low < high:             # the longest prefix that fits with the ellipsis
        mid = (low + high + 1) // 2
        if font.size(text[:mid].rstrip() + "…")[0] <= width:
            low = mid
        else:
            high = mid - 1
    return text[:low].rstrip() + "…"
