"""What the screen knows: the vendor's place in the UI and a copy of the queue.

Only the UI thread changes a :class:`UiState`.  A :class:`Snapshot` is built
on a worker thread (store reads may be slow) and handed over whole; the UI
never reads the store itself.  Nothing here holds a card token.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime

from .keypad import AmountEntry

# The screens, by the name `kiosk screenshot` and the tests use.
MAIN_SCREENS = ("sale", "payments", "today", "attention", "sync")    # with the navigation bar
FLOW_SCREENS = ("present_card", "confirm_offline", "contact", "result")
SALE_SCREENS = ("cart", "tip")         # quick items' cart and the tip choice, before the card
MONEY_SCREENS = ("payment_detail", "refund", "money_confirm")   # one payment: void, refund, reprint


@dataclass
class Snapshot:
    online: bool | None = None
    pending: int = 0
    totals: dict = field(default_factory=dict)        # currency -> minor units pending
    oldest_at: datetime | None = None
    last_sync_at: str | None = None
    live: list = field(default_factory=list)          # Payments, newest first
    settled: list = field(default_factory=list)       # Payments, newest first (the last few hundred)
    problem: str | None = None                        # the sync plugin's one-line trouble, if any
    key_problem: str | None = None                    # "missing" or "rejected": the Stripe key, named as such
    readiness: list | None = None                     # "ready to sell offline?" lines, once checked
    clock: dict | None = None                         # `kiosk status`'s clock object: trusted, reasons...
    seq: int = 0                                      # which refresh request this read answers


@dataclass
class Sale:
    """One sale under way on the sale thread."""
    amount: int
    currency: str
    cancel: threading.Event = field(default_factory=threading.Event)
    offer: object = None                 # kiosk.engine.OfflineOffer while the vendor decides
    answer: bool | None = None
    customer: str | None = None          # typed on the confirm screen, for following up a decline
    answered: threading.Event = field(default_factory=threading.Event)
    offline: bool = False
    items: list | None = None            # what was sold, as stored on the Payment (None: an amount alone)
    tip: int = 0                         # minor units, on top of ``amount`` (the goods total)
    receipt_email: str | None = None


@dataclass
class Detail:
    """One payment as its detail screen shows it, read on the chores thread."""
    payment: object                      # kiosk Payment (a sale or a refund record)
    when: str = ""                       # taken at, in the kiosk's time zone
    sale: object = None                  # a refund record's sale
    refunds: list = field(default_factory=list)    # a sale's refund records
    refundable: int = 0                  # minor units still refundable (kiosk.refundable)
    printer_ready: bool = False          # kiosk.receipt_printer_ready()


@dataclass
class Alert:
    """A notice that stays until the vendor taps OK."""
    kind: str                            # "declined" or a notice kind
    text: str
    payment_id: str | None = None


@dataclass
class UiState:
    entry: AmountEntry
    screen: str = "sale"
    sale_error: str = ""
    sale: Sale | None = None
    contact: str = ""
    contact_mode: str = "phone"          # "phone" or "email"
    contact_error: str = ""
    result: object = None                # kiosk.engine.SaleResult
    result_amount: tuple | None = None   # (amount, currency) of the sale shown
    scroll: dict = field(default_factory=lambda: {"payments": 0, "attention": 0})
    alerts: list = field(default_factory=list)
    toast: str = ""
    toast_until: float = 0.0
    sent_count: int = 0                  # forwarded payments the current toast covers
    following: set = field(default_factory=set)      # ids being marked followed up
    progress: tuple = (0, 0)
    attention: list | None = None        # kiosk.needs_attention(), read off the UI thread
    snapshot: Snapshot | None = None
    sync_asked: bool = False
    # the sale being put together (quick items, tip, receipt e-mail); see controller.SaleController
    quick_items: list = field(default_factory=list)  # kiosk QuickItems in the screen's currency
    cart: object = None                  # kiosk Cart of the sale being put together
    pad: str = "keypad"                  # narrow screens show "keypad" or "items" beside the amount
    receipt_email: str = ""              # Stripe e-mails its receipt here once the payment succeeds
    contact_for: str = "customer"        # what the contact keyboard types: "customer" or "receipt"
    contact_back: str = "confirm_offline"    # the screen the contact keyboard returns to
    tips: list = field(default_factory=list)         # [kiosk] tips: the percents offered after Charge
    # one payment's detail (void, refund, reprint) and the Today screen; see money_actions.py
    detail_id: str | None = None         # the payment the vendor tapped on Payments
    detail: Detail | None = None         # that payment, read fresh on the chores thread
    refund_entry: AmountEntry | None = None   # the refund keypad, prefilled with what is refundable
    refund_typed: bool = False           # a key pressed since the prefill (the first one replaces it)
    refund_error: str = ""
    confirming: tuple | None = None      # ("void" or "refund", amount, currency) on money_confirm
    money_busy: str = ""                 # "void", "refund" or "print" while the chores thread does it
    money_said: tuple | None = None      # (status, one line) of the last void, refund or reprint
    day: dict | None = None              # kiosk.day_report(), read off the UI thread
    day_seq: int = 0                     # which Today read the report answers
