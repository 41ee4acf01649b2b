"""What the objects returned by the ``kiosk_open_*`` hooks look like.

These are :class:`typing.Protocol` classes: a plugin's object needs the
methods, not the base class.  The small value types (``CardResult``,
``Outcome``...) are real classes a plugin constructs.
"""
from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from typing import Callable, Iterable, Literal, Protocol, runtime_checkable


# -- reader --------------------------------------------------------------------

class ReaderError(Exception):
    """The reader could not produce a card result (cancelled, timed out, switched
    off, bad frame).  ``str()`` is one line for the vendor.  No sale is stored."""


@dataclass(frozen=True)
class ReaderInfo:
    name: str
    supports_offline: bool          # False for Tap to Pay style readers
    battery: int | None = None      # percent, when the reader says
    firmware: str | None = None
    connected: bool = True


@dataclass(frozen=True)
class CardResult:
    """What a reader hands over: a processor token (or opaque encrypted blob)
    plus what the vendor may see.  Never a card number, CVV or track data."""
    token: str
    brand: str
    last4: str
    exp_month: int | None = None
    exp_year: int | None = None

    def __post_init__(self):
        if not (len(self.last4) == 4 and self.last4.isdigit()):
            raise ReaderError(f"reader sent a bad last 4 digits: {len(self.last4)} characters")
        if not self.token or any(ch.isspace() for ch in self.token):
            raise ReaderError("reader sent an empty or malformed payment token")
        if not _BRAND.fullmatch(self.brand):
            raise ReaderError("reader sent a card brand that is not a plain word; refusing it")
        if looks_like_card_number(self.token):
            raise ReaderError("reader sent what looks like a card number; refusing it")


_BRAND = re.compile(r"[A-Za-z][A-Za-z _-]{0,29}")
# 12 to 19 digits, however they are spaced or punctuated: a card number
_CARD_DIGITS = re.compile(r"(?:\d[\s./_-]*){12,19}")


def looks_like_card_number(text: str) -> bool:
    """True when ``text`` holds a run of 12-19 digits, with or without
    separators -- too close to a card number to store, log or show."""
    return bool(_CARD_DIGITS.search(text))


@runtime_checkable
class Reader(Protocol):
    def info(self) -> ReaderInfo: ...

    def read_card(self, amount: int, currency: str, offline: bool,
                  cancel: threading.Event, card: str | None = None) -> CardResult:
        """Wait for the customer's card.  ``offline`` tells the reader the sale
        will be stored; ``cancel`` is set when the vendor cancels (raise
        ReaderError then).  ``card`` names a test card for simulated readers and
        is ignored by real ones."""

    def close(self) -> None: ...


# -- storage -------------------------------------------------------------------

class StoreAlarm(Exception):
    """The queue on disk cannot be trusted (missing, empty, truncated, tampered,
    wrong key).  ``str()`` is one line naming the file; the kiosk refuses to
    start rather than read it as an empty queue.  A store that can salvage
    damage opens instead, and lists it in its ``alarms()``."""
    damaged = False      # the bytes are there but do not all read (a salvage may save the rest)
    kept_aside = None    # where a copy of the damaged file was kept
    problem = ""         # the problem alone, without the file's name


class StoreBusy(Exception):
    """Another kiosk process holds the queue."""


@runtime_checkable
class PaymentStore(Protocol):
    def add(self, payment) -> None:
        """Store a new payment durably (fsync'd) before returning."""

    def save(self, payment) -> None:
        """Store a payment's new state durably; settled payments may move out
        of the live queue."""

    def get(self, payment_id: str): ...

    def live(self) -> list:
        """Payments still to forward (``pending`` and ``forwarding``), oldest first."""

    def settled(self, limit: int | None = None) -> Iterable:
        """Settled payments (succeeded, failed, moved), newest first: at most ``limit``.
        May be an iterator: a store holding years of history reads what is
        asked for, not everything.  A store may also take ``since`` and
        ``until`` (ISO 8601 UTC times): only payments taken at or after
        ``since``, and before ``until``."""

    def get_meta(self, name: str, default=None): ...

    def set_meta(self, name: str, value) -> None: ...

    def add_notice(self, notice: dict) -> None: ...

    def notices(self, limit: int = 100) -> list[dict]: ...

    def maintain(self) -> None:
        """Background housekeeping (compaction); never called on the sale path."""

    def close(self) -> None: ...


# -- sync ----------------------------------------------------------------------

OutcomeKind = Literal["succeeded", "declined", "declined_for_now", "refused", "request_rejected",
                      "retry", "auth_error", "not_found"]


@dataclass(frozen=True)
class Outcome:
    """What the processor said about one payment.

    - ``succeeded``: charged; ``payment_intent`` is set.
    - ``declined``: the card was declined for good; ``decline_code`` and ``message``.
    - ``declined_for_now``: declined, but the issuer or processor says a later
      try may succeed (issuer unavailable, try again later), or the processor
      left the payment unfinished; ``decline_code`` when there is one.  The
      engine retries a bounded number of times, then fails it.
    - ``refused``: a permanent refusal that is not a card decline (the
      payment was cancelled at the processor...); ``message``.
    - ``request_rejected``: the processor refused *our request* (a parameter
      it does not know, a wrong type): a bug of the kiosk's, never the
      customer's.  The payment is kept and the vendor alarmed.
    - ``retry``: not processed or outcome unknown (network, 429, 5xx, still
      processing); try later.
    - ``auth_error``: the API key was rejected; stop forwarding, keep the queue.
    - ``not_found``: (lookups only) the processor has not charged this payment
      and nothing is in flight: it is safe to send.  ``payment_intent`` may
      name the processor's unfinished record of it, which ``send`` continues.
    """
    kind: OutcomeKind
    payment_intent: str | None = None
    decline_code: str | None = None
    message: str = ""
    retry_after: float | None = None
    advice_code: str | None = None      # the processor's advice on a decline (try_again_later...)
    attempt: str | None = None          # the processor's id of the attempt reported (a charge): a decline
                                        # is counted once, however often it is looked up
    refund: str | None = None           # a refund record's answer: the processor's id of the refund


@dataclass(frozen=True)
class Request:
    """The exact request for one payment, stored before the first attempt and
    reused on every retry.  It changes only when a newer kiosk brings a stored
    request to the API version it speaks (``Forwarder.upgrade``), and then
    keeps its idempotency key."""
    idempotency_key: str
    params: dict = field(default_factory=dict)


@runtime_checkable
class Forwarder(Protocol):
    name: str
    max_requests_per_second: float
    concurrency: int

    def reachable(self) -> bool:
        """Can the processor be reached right now?  Answers within 2 s."""

    def prepare(self, payment) -> Request:
        """Build the idempotency key and request parameters (no I/O)."""

    def send(self, payment) -> Outcome:
        """Send the stored request once (the library may retry with the same key)."""

    def lookup(self, payment) -> Outcome:
        """Find what became of an attempt whose outcome is unknown: the
        payment's processor record, or ``Outcome("not_found")``."""

    def close(self) -> None: ...



# Members a plugin's object may leave out.  The kiosk reads them only through
# :func:`optional`, which knows each one's default: a forwarder or store
# without them works, and nothing undeclared is ever read.
OPTIONAL_MEMBERS: dict[str, dict[str, object]] = {
    "Forwarder": {
        # upgrade(payment) -> Request | None: bring a request an earlier release
        #     stored to today's shape, same idempotency key; None if unchanged
        "upgrade": None,
        # check() -> list[Readiness]: "ready to sell offline?" as the processor sees it
        "check": None,
        # one line of trouble for status and screens
        "problem": None,
        # the last online check was refused for the key
        "key_rejected": False,
        # no API key is set: reachable() is False and nothing can be sent until one is
        "key_missing": False,
        # the processor refuses the kiosk's own request (reachable() is then
        # False: sales go offline and are kept; the vendor is alarmed)
        "request_refused": None,
        # stripe_now() -> float | None: the processor's clock (unix), for
        # lookups and the kiosk's clock; None until the processor has answered
        "stripe_now": None,
        # reconcile(payments) -> set[str] | None: the ids, among payments this
        # kiosk never sent, that the processor already holds (restored data);
        # those are looked up instead of sent.  None: could not ask, so the
        # pass sends nothing.  A few requests per pass at most.
        "reconcile": None,
        # True when prepare/send/lookup/reconcile also handle refund records
        # (a Payment whose ``refund_of`` is set: ``payment_intent`` names the
        # sale's PaymentIntent, ``amount`` what to give back); without it the
        # kiosk refuses to take a refund rather than queue one nobody can send
        "refunds": False,
    },
    "PaymentStore": {
        # files set aside at open after an unfinished write (a power cut): the
        # vendor is told once; each has ``nothing_lost_known`` (False: the
        # store cannot prove nothing acknowledged was lost)
        "recovered": (),
        # one line per copy healed from the other at open ([storage] mirror):
        # the vendor is told once
        "healed": (),
        # alarms() -> list[str]: damage found and salvaged but not yet dealt
        # with, one line each; shown on the screen, the light and `kiosk
        # status` until recover() clears them
        "alarms": None,
        # recover() -> list[str]: `kiosk recover`: salvage what still reads
        # from every damaged copy, report exactly what could not be read
        # (lines), and clear alarms()
        "recover": None,
        # needing_follow_up() -> list[Payment]: settled payments whose
        # ``needs_follow_up`` is true, newest first, without reading the rest
        # (without it the kiosk looks through settled())
        "needing_follow_up": None,
        # prune(before: str) -> int: forget a bounded number of settled
        # payments settled before that ISO time, never one that needs follow
        # up; the kiosk calls it again while it returns more than 0
        # ([storage] keep_days; without it history is kept)
        "prune": None,
        # settled_count() -> int: settled payments held, cheaply (kiosk status)
        "settled_count": None,
        # move_out(payments): payments already moved to ``moved`` (exported) leave
        # the queue for history in one durable step (without it: save() each)
        "move_out": None,
        # add_settled(payments) -> int: settled payments stored in one durable
        # transaction, each unless already stored; returns how many were new
        # (kiosk import --all; without it: add() each)
        "add_settled": None,
    },
}


def optional(obj, kind: str, name: str):
    """The optional member ``name`` of a plugin's ``kind`` object, or its
    declared default.  A name not declared above is a bug: ``KeyError``."""
    default = OPTIONAL_MEMBERS[kind][name]
    return getattr(obj, name, default)


@dataclass(frozen=True)
class Readiness:
    """One line of ``kiosk check``: is this part ready for selling offline?"""
    name: str                    # short, stable: "api_key", "clock", "reader"...
    ok: bool
    detail: str                  # one line for the vendor
    advice: str | None = None    # what to do, when not ok (or a recommendation when ok)


# -- display -------------------------------------------------------------------

@runtime_checkable
class Display(Protocol):
    def run(self, stop: threading.Event) -> None:
        """Show the screen until ``stop`` is set; called on the main thread."""


ConfirmOffline = Callable[["OfflineOffer"], bool]
