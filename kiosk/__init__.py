"""Offline card-payments kiosk -- and the one door for plugins.

A plugin imports what it may use from here, and from nowhere else in
``kiosk``::

    from kiosk import hookimpl, CardResult, ReaderInfo, Setting

Everything below is contract: documented in ``docs/plugins.md``, kept by
``tests/test_boundaries.py`` (the built-in plugins import nothing else of the
kiosk's) and ``tests/test_docs.py``.  The rest of the package is the core's
own business and may change in any release.
"""
from __future__ import annotations

from .card_numbers import contains_card_number
from .commands import Command, CommandError
from .config import ConfigError, Setting
from .disk_space import disk_trouble
from .durable import fsync_folder, rename_durably, settle_rename, write_all
from .durable import write_file as write_file_durably
from .faults import crash_point
from .hookspecs import hookimpl
from .interfaces import (OPTIONAL_MEMBERS, CardResult, Display, Forwarder, Outcome, PaymentStore, Readiness,
                         Reader, ReaderError, ReaderInfo, Request, StoreAlarm, StoreBusy, looks_like_card_number)
from .limits import History, Limits, Stored
from .local_time import short_time, shown_time
from .money import (MoneyError, check_amount, currency_code, format_amount, minimum_charge, minor_digits,
                    parse_amount, to_stripe_amount)
from .notices import Notice
from .receipts import Receipt, ReceiptItem, Row
from .quick_items import Cart, QuickItem, catalog, describe as describe_items, tip_amount
from .payment import (FAILED, FORWARDING, LIVE_STATES, MOVED, PENDING, SUCCEEDED, VOIDED, Card, Payment, iso,
                      parse_iso, utcnow)
from .sale_result import (APPROVED, APPROVED_OFFLINE, CANCELLED, DECLINED, REFUSED, UNCONFIRMED,
                          WINDOW_HOURS, OfflineOffer, SaleResult, check_contact)
from .view import KioskView
from .watchdog import heartbeat
from . import notices    # notice kinds (``notices.READER``...) and the builders the core uses

__all__ = [
    "hookimpl",
    # files whole on disk, FAT included (kiosk/durable.py)
    "fsync_folder", "rename_durably", "settle_rename", "write_all", "write_file_durably",
    # settings
    "Setting", "ConfigError",
    # what the kiosk_open_* hooks return, and what they exchange
    "Reader", "ReaderInfo", "CardResult", "ReaderError", "looks_like_card_number",
    "PaymentStore", "StoreAlarm", "StoreBusy", "disk_trouble",
    "Forwarder", "Outcome", "Request", "Readiness", "OPTIONAL_MEMBERS",
    "Display",
    # payments, notices, limits
    "Payment", "Card", "PENDING", "FORWARDING", "SUCCEEDED", "FAILED", "MOVED", "VOIDED", "LIVE_STATES",
    "iso", "parse_iso", "utcnow",
    # times as the vendor reads them, in the kiosk's zone (KioskView.zone)
    "short_time", "shown_time",
    "Notice", "notices",
    # what a receipt printer prints (kiosk_print_receipt)
    "Receipt", "ReceiptItem", "Row",
    "Limits", "History", "Stored",
    # money
    "MoneyError", "check_amount", "currency_code", "format_amount", "minimum_charge", "minor_digits",
    "parse_amount", "to_stripe_amount",
    # quick items and tips ([[catalog.items]], [kiosk] tips)
    "QuickItem", "Cart", "catalog", "tip_amount", "describe_items",
    # sales and the kiosk handed to hooks
    "SaleResult", "OfflineOffer", "APPROVED", "APPROVED_OFFLINE", "DECLINED", "REFUSED", "CANCELLED",
    "UNCONFIRMED", "WINDOW_HOURS", "check_contact", "contains_card_number",
    "KioskView", "opened_kiosk",
    # commands a plugin adds to `kiosk`
    "Command", "CommandError",
    # power-cut tests (KIOSK_CRASH_AT)
    "crash_point",
    # systemd's watchdog: a display's event loop proves the kiosk alive
    "heartbeat",
]


def opened_kiosk(config_path, *, create: bool = False, overrides: dict | None = None, clock=None,
                 plugins: dict | None = None):
    """A running kiosk for a tool (a screenshot, a report): a context manager
    that yields its :class:`KioskView` and closes the kiosk on leaving.
    ``overrides`` (``{section: {key: value}}``) is laid over the file;
    ``clock()`` replaces the wall clock; ``plugins`` (``{name: object}``) are
    registered for this kiosk alone, as ``pytest.main(plugins=...)`` does."""
    from .tools import opened_kiosk as _opened
    return _opened(config_path, create=create, overrides=overrides, clock=clock, plugins=plugins)
