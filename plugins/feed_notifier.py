"""Built-in notifier: writes every notice to the log, and keeps the ones the
vendor must be able to look at later (forwarded, declined with details,
reminders, limits, key rejected or missing, declined for now, needs an update) in the kiosk's feed, in the encrypted store.

Sale acknowledgements are not kept: the vendor saw them at the till and the
payment itself is stored -- a second fsync on the sale path buys nothing.
Never logs a customer contact: that stays in the encrypted feed.
"""
from __future__ import annotations

import logging

from kiosk import StoreAlarm, disk_trouble, hookimpl
from kiosk import notices

log = logging.getLogger("kiosk.notice")

KEPT = frozenset({notices.FORWARDED, notices.DECLINED, notices.REMINDER, notices.LIMIT_REACHED,
                  notices.AUTH_FAILED, notices.KEY_MISSING, notices.STORE_RECOVERED, notices.INTERRUPTED,
                  notices.DECLINED_FOR_NOW, notices.NEEDS_UPDATE})
# Already told on stderr, in one line, by the host that skipped the plugin: the
# notice is for the screen; logging it again would be a second line.
NOT_LOGGED = frozenset({notices.PLUGIN_TROUBLE})
_LEVELS = {"info": logging.INFO, "success": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


class FeedNotifier:
    def __init__(self):
        self.store = None

    @hookimpl
    def kiosk_startup(self, kiosk):
        self.store = kiosk.store

    @hookimpl
    def kiosk_shutdown(self):
        self.store = None

    @hookimpl
    def kiosk_notify(self, notice):
        message = notice.message
        customer = (notice.payment or {}).get("customer")
        if customer:
            message = message.replace(customer, "[contact in feed]")
        if notice.kind not in NOT_LOGGED:
            log.log(_LEVELS.get(notice.level, logging.INFO), "%s: %s", notice.title, message)
        if self.store is not None and notice.kind in KEPT:
            try:
                self.store.add_notice(notice.as_dict())
            except (StoreAlarm, OSError) as exc:
                if disk_trouble(exc) is None:
                    raise
                # logged above; the kiosk tells the vendor of the full disk itself, once
                log.debug("notice not kept in the feed: %s", exc)


plugin = FeedNotifier()
