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
MAIN_SCREENS = ("sale", "payments", "attention", "sync")          # with the navigation bar
FLOW_SCREENS = ("present_card", "confirm_offline", "contact", "result")


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
