"""The appliance loop, for ``kiosk run`` and the demo: forward and remind in
the background, show the screen on the main thread.  A screen that cannot
open, or fails, never stops forwarding: the kiosk carries on headless."""
from __future__ import annotations

import logging
import threading

from . import watchdog
from .boot import plugin_settings
from .host import PluginError

log = logging.getLogger("kiosk")


def open_display(kiosk, name: str):
    """The display plugin ``name`` opened on ``kiosk``, or ``None`` (told in one line)."""
    try:
        return kiosk.host.call_on(name, "kiosk_open_display", kiosk=kiosk.view,
                                  settings=plugin_settings(kiosk.host, kiosk.config, name))
    except PluginError as exc:
        log.error("%s; carrying on headless", exc)       # no screen is bad; no forwarding would be worse
        log.debug("display %s failed to open", name, exc_info=exc)
        kiosk.telling.plugin_failed(name, str(exc))      # on status and the notifiers, as any skipped plugin
        return None


def run(kiosk, stop: threading.Event, *, display_name: str | None, on_started=None,
        headless_after_screen: bool = True) -> None:
    """Run until ``stop`` is set (or, with ``headless_after_screen=False``,
    until the screen closes).  ``on_started()`` is called once the kiosk is up,
    and systemd is told so (``READY=1``); its watchdog is beaten while the
    background loop and the screen's loop keep turning (:mod:`kiosk.watchdog`)."""
    dog = watchdog.start()
    dog.watch(watchdog.BACKGROUND)      # the screen's loop is watched from its first heartbeat()
    try:
        _run(kiosk, stop, dog, display_name=display_name, on_started=on_started,
             headless_after_screen=headless_after_screen)
    finally:
        dog.stopping()


def _run(kiosk, stop: threading.Event, dog, *, display_name, on_started, headless_after_screen) -> None:
    display = open_display(kiosk, display_name) if display_name else None
    if on_started is not None:
        on_started()
    dog.ready()
    if display is None:
        if headless_after_screen:
            log.info("kiosk %s running headless", kiosk.config.kiosk_id)
            kiosk.run_background(stop)
        return
    worker = threading.Thread(target=kiosk.run_background, args=(stop,), name="forwarder", daemon=True)
    worker.start()
    try:
        display.run(stop)
    except Exception as exc:
        dog.forget(watchdog.SCREEN)     # no screen loop any more: the background loop alone proves us alive
        # a broken screen must not stop forwarding: carry on headless
        log.error("display plugin %s failed; carrying on headless: %s", display_name,
                  f"{type(exc).__name__}: {exc}".splitlines()[0])
        log.debug("display plugin %s failed", display_name, exc_info=exc)
        kiosk.telling.plugin_failed(display_name, f"display plugin {display_name} failed: {type(exc).__name__}")
        while headless_after_screen and not stop.is_set():
            stop.wait(1)
    finally:
        dog.stopping()                  # before the wait for the forwarder: systemd stops watching now
        stop.set()
        kiosk.wake.set()
        worker.join(timeout=30)
