"""Where things go on the screen, worked out from its size alone.

Nothing here imports pygame: boxes are plain integers, so the layout can be
checked (inside the screen, targets at least 48 px, none overlapping) without
drawing.  Every position is derived from the screen's width and height
through one unit ``u`` (a tenth of the short side, never under 48 px), so
800x480, 1024x600 and 720x1280 portrait all lay out from the same rules.
"""
from __future__ import annotations

from dataclasses import dataclass

MIN_TARGET = 48          # px: the smallest touch target on any screen
MIN_TEXT = 16            # px: nothing smaller is drawn


@dataclass(frozen=True)
class Box:
    x: int
    y: int
    w: int
    h: int

    @property
    def right(self) -> int:
        return self.x + self.w

    @property
    def bottom(self) -> int:
        return self.y + self.h

    @property
    def center(self) -> tuple[int, int]:
        return (self.x + self.w // 2, self.y + self.h // 2)

    def contains(self, point) -> bool:
        px, py = point
        return self.x <= px < self.right and self.y <= py < self.bottom

    def overlaps(self, other: "Box") -> bool:
        return (self.x < other.right and other.x < self.right
                and self.y < other.bottom and other.y < self.bottom)

    def inside(self, other: "Box") -> bool:
        return (self.x >= other.x and self.y >= other.y
                and self.right <= other.right and self.bottom <= other.bottom)

    def inset(self, dx: int, dy: int | None = None) -> "Box":
        dy = dx if dy is None else dy
        return Box(self.x + dx, self.y + dy, max(0, self.w - 2 * dx), max(0, self.h - 2 * dy))

    def tuple(self) -> tuple[int, int, int, int]:
        return (self.x, self.y, self.w, self.h)


def _split(total: int, specs: list[tuple[int, float]], gap: int) -> list[int]:
    """Sizes for ``specs`` of (minimum, weight): minimums first, the rest
    shared by weight.  When even the minimums do not fit, the parts with a
    weight give way and those without one (touch targets) keep their size."""
    room = total - gap * (len(specs) - 1)
    minimum = sum(m for m, _ in specs)
    if minimum <= room:
        spare = room - minimum
        weights = sum(w for _, w in specs) or 1
        return [m + int(spare * w / weights) for m, w in specs]
    rigid = sum(m for m, w in specs if not w)
    flexible = minimum - rigid
    scale = max(0.0, room - rigid) / flexible if flexible else 0.0
    if rigid > room:                       # nothing left to give: everything shrinks evenly
        scale, rigid_scale = room / minimum, room / minimum
    else:
        rigid_scale = 1.0
    return [int(m * (scale if w else rigid_scale)) for m, w in specs]


def column(box: Box, specs: list[tuple[int, float]], gap: int) -> list[Box]:
    boxes, y = [], box.y
    for size in _split(box.h, specs, gap):
        boxes.append(Box(box.x, y, box.w, size))
        y += size + gap
    return boxes


def row(box: Box, specs: list[tuple[int, float]], gap: int) -> list[Box]:
    boxes, x = [], box.x
    for size in _split(box.w, specs, gap):
        boxes.append(Box(x, box.y, size, box.h))
        x += size + gap
    return boxes


def grid(box: Box, rows: int, cols: int, gap: int) -> list[list[Box]]:
    return [row(line, [(0, 1)] * cols, gap) for line in column(box, [(0, 1)] * rows, gap)]


class Geometry:
    """The frame of every screen: status bar, banners, content, navigation."""

    def __init__(self, width: int, height: int, banners: int = 0, nav: bool = True):
        self.width, self.height = width, height
        self.screen = Box(0, 0, width, height)
        self.portrait = height > width
        self.u = u = max(MIN_TARGET, min(width, height) // 10)
        self.gap = gap = max(6, u // 8)
        self.status = Box(0, 0, width, max(40, int(u * 0.85)))
        banner_h = u + gap
        y = self.status.bottom
        self.banners = []
        for _ in range(banners):
            self.banners.append(Box(0, y, width, banner_h))
            y += banner_h
        nav_h = (u + gap) if nav else 0
        self.nav = Box(0, height - nav_h, width, nav_h) if nav else None
        self.content = Box(0, y, width, height - nav_h - y).inset(gap)
        # text sizes in px, by role
        self.text = {
            "small": max(MIN_TEXT, round(u * 0.36)),
            "body": max(18, round(u * 0.44)),
            "large": round(u * 0.62),
            "title": round(u * 0.75),
            "huge": round(u * 1.35),
        }

    def banner_buttons(self, banner: Box, count: int) -> tuple[Box, list[Box]]:
        """A banner's text area and ``count`` buttons at its right end."""
        inner = banner.inset(self.gap // 2 + 2, self.gap // 2)
        width = max(MIN_TARGET, int(self.u * 1.6))
        specs = [(0, 1)] + [(width, 0)] * count
        parts = row(inner, specs, self.gap)
        return parts[0], parts[1:]
