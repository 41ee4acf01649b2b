"""Display plugin ``touchscreen``: the vendor's screen on pygame-ce.

``[display] use = "touchscreen"``; settings in ``[display.touchscreen]``.
Full screen on a Raspberry Pi without X (``driver = "kmsdrm"``), a window on
a desktop, headless with ``SDL_VIDEODRIVER=dummy``.  See docs/touchscreen.md.

Loading this plugin must stay cheap and must never import pygame: every
``kiosk`` command loads all plugins, and only ``kiosk run`` opens a screen.
The screen itself is in :mod:`.display`.
"""
from __future__ import annotations

from kiosk import Setting, hookimpl

SETTINGS = {
    "display.touchscreen": {
        "size": Setting(str, "800x480", "Window size WIDTHxHEIGHT (full screen uses the screen's own size)"),
        "fullscreen": Setting(bool, False, "Fill the screen (on a Pi: true, with driver = \"kmsdrm\" without X)"),
        "driver": Setting(str, "", "SDL video driver: empty lets SDL choose, kmsdrm on a Pi without X; "
                                   "SDL_VIDEODRIVER in the environment wins"),
        "font": Setting(str, "", "Font file for English (default: DejaVu Sans, else pygame's own)", path=True),
        "cjk_font": Setting(str, "", "Font file with Japanese glyphs (default: Noto Sans CJK, found by "
                                     "path or fontconfig)", path=True),
    },
}

# The screens open in this process; the hooks below pass events on to them.
# One kiosk per process in production; tests and benches open one screen at a time.
OPEN_DISPLAYS: list = []


class TouchscreenPlugin:
    @hookimpl
    def kiosk_settings(self):
        return SETTINGS

    @hookimpl
    def kiosk_commands(self):
        from .screenshot import command      # no pygame until the command runs
        return [command()]

    @hookimpl
    def kiosk_open_display(self, kiosk, settings):
        from .display import TouchscreenDisplay      # pygame is imported here, when a screen opens
        return TouchscreenDisplay(kiosk, settings)

    @hookimpl
    def kiosk_payment_changed(self, payment, previous_state):
        for display in list(OPEN_DISPLAYS):
            display.payment_changed(payment, previous_state)

    @hookimpl
    def kiosk_sync_progress(self, done, total):
        for display in list(OPEN_DISPLAYS):
            display.sync_progress(done, total)

    @hookimpl
    def kiosk_notify(self, notice):
        """The kiosk sends every notice to the display plugin in use: the ones
        the screen shows no other way (key rejected, queue recovered, sale
        unconfirmed, reader trouble) stay up until acknowledged."""
        for display in list(OPEN_DISPLAYS):
            display.notice(notice)


plugin = TouchscreenPlugin()
