"""What a tap does on one payment's screens and on Today: open a payment,
void it, refund it (the amount keypad, then a confirm), reprint its receipt,
and read the day's totals.

:class:`MoneyActions` changes :class:`~.state.UiState` on the UI thread only,
the way :class:`~.controller.SaleController` does (which hands it the taps
and the news it owns).  ``kiosk.void``, ``kiosk.refund``,
``kiosk.print_receipt``, the payment's detail and ``kiosk.day_report`` run on
the chores thread; their answers come back through ``receive``.

It never draws, never imports pygame and never calls the kiosk itself: the
UI thread must not wait on the disk, Stripe or a printer.  Which buttons a
payment offers is decided here (:func:`actions_for`) and nowhere else.
"""
from __future__ import annotations

from kiosk import FORWARDING, PENDING, SUCCEEDED, format_amount

from .catalog import Catalog
from .keypad import AmountEntry
from .state import MONEY_SCREENS, Detail, UiState

# what the vendor is told after each outcome, by status: the colour's name in screens.py
SAID_TONE = {"voided": "good", "refunded": "good", "printed": "good", "refund_queued": "offline",
             "unconfirmed": "unsure", "refused": "bad", "not_printed": "bad", "failed": "bad"}


def actions_for(detail: Detail | None) -> list[str]:
    """The buttons a payment's detail shows: only those that apply to it."""
    if detail is None or detail.payment is None:
        return []
    payment, shown = detail.payment, []
    if not payment.is_refund and payment.state in (PENDING, FORWARDING):
        shown.append("void")           # not forwarded yet: never sent (the kiosk waits out one being sent)
    if not payment.is_refund and payment.state == SUCCEEDED and detail.refundable > 0:
        shown.append("refund")
    if detail.printer_ready and payment.state in (PENDING, FORWARDING, SUCCEEDED):
        shown.append("reprint")        # a receipt is for what the customer paid (or will pay)
    return shown


def prefilled(minor: int, currency: str) -> AmountEntry:
    """An amount keypad showing ``minor`` (the vendor's first key replaces it)."""
    entry = AmountEntry(currency)
    whole, fraction = divmod(max(0, minor), 10 ** entry.digits)
    entry.whole = str(whole) if whole else ""
    if entry.digits and fraction:
        entry.fraction = str(fraction).rjust(entry.digits, "0")
    return entry


class MoneyActions:
    """The actions behind Payments' rows, the detail's buttons and Today (UI thread only)."""

    def __init__(self, ui: UiState, catalog: Catalog, chores, toast):
        self.ui = ui
        self.catalog = catalog
        self.chores = chores
        self.toast = toast             # SaleController._toast: a line over the status bar for a few seconds

    def act(self, name: str) -> bool:
        """Do what button ``name`` does if it is one of these; False when it is not."""
        ui = self.ui
        if name.startswith("payment:"):
            self.open(name.partition(":")[2])
            return True
        if name == "nav_today":
            ui.screen = "today"
            self.chores.read_day()
            return True
        if ui.screen not in MONEY_SCREENS:
            return False
        detail = ui.detail
        payment = detail.payment if detail is not None else None
        shown = actions_for(detail)
        if name == "detail_back":
            ui.screen, ui.detail_id, ui.detail, ui.money_said = "payments", None, None, None
        elif name == "void" and "void" in shown and not ui.money_busy:
            ui.confirming, ui.screen = ("void", payment.amount, payment.currency), "money_confirm"
        elif name == "refund" and "refund" in shown and not ui.money_busy:
            ui.refund_entry, ui.refund_typed, ui.refund_error = prefilled(detail.refundable, payment.currency), \
                False, ""
            ui.screen = "refund"
        elif name == "reprint" and "reprint" in shown and not ui.money_busy:
            self._start("print", None)
        elif name.startswith("refund_key_") and ui.refund_entry is not None:
            key = name[len("refund_key_"):]
            if not ui.refund_typed and key != "back":
                ui.refund_entry.clear()        # the prefilled amount goes at the first digit
            ui.refund_typed, ui.refund_error = True, ""
            ui.refund_entry.press(key)
        elif name == "refund_clear" and ui.refund_entry is not None:
            ui.refund_entry.clear()
            ui.refund_typed, ui.refund_error = True, ""
        elif name == "refund_next" and ui.refund_entry is not None and payment is not None:
            self._refund_next(detail)
        elif name in ("refund_cancel", "money_cancel"):
            ui.screen, ui.confirming = "payment_detail", None
        elif name == "money_confirm" and ui.confirming is not None and not ui.money_busy:
            action, amount, _ = ui.confirming
            if action in shown:         # still applies: it may have been forwarded meanwhile
                self._start(action, amount if action == "refund" else None)
            else:
                ui.screen, ui.confirming = "payment_detail", None
        return True

    def open(self, payment_id: str) -> None:
        ui = self.ui
        ui.screen, ui.detail_id, ui.detail, ui.money_said = "payment_detail", payment_id, None, None
        self.chores.read_detail(payment_id)

    def _refund_next(self, detail: Detail) -> None:
        ui, t = self.ui, self.catalog
        amount, currency = ui.refund_entry.minor, detail.payment.currency
        if amount <= 0:
            ui.refund_error = t("refund_enter")
        elif amount > detail.refundable:
            ui.refund_error = t("refund_too_much", amount=format_amount(detail.refundable, currency, t.locale))
        else:
            ui.confirming, ui.screen = ("refund", amount, currency), "money_confirm"

    def _start(self, action: str, amount: int | None) -> None:
        ui = self.ui
        ui.money_busy, ui.money_said, ui.screen, ui.confirming = action, None, "payment_detail", None
        self.chores.money(action, ui.detail_id, amount)

    # -- what the chores thread sent ------------------------------------------------------

    def receive(self, kind: str, payload) -> bool:
        """Apply one answer of the chores thread if it is one of these; False when it is not."""
        ui = self.ui
        if kind == "detail":
            payment_id, detail = payload
            if payment_id == ui.detail_id:
                ui.detail = detail if detail is not None else Detail(None)
        elif kind == "day":
            seq, report = payload
            if seq >= ui.day_seq:
                ui.day_seq = seq
                if report is not None:      # a failed read keeps the last totals on screen
                    ui.day = report
        elif kind == "money":
            action, payment_id, outcome = payload
            ui.money_busy = ""
            said = self.said(action, outcome)
            if payment_id == ui.detail_id:
                ui.money_said = said
            else:
                self.toast(said[1])
        else:
            return False
        return True

    def payment_changed(self, payment) -> None:
        """A payment moved: read again what the screen shows of it."""
        ui = self.ui
        if ui.detail_id is not None and ui.detail_id in (payment.id, payment.refund_of):
            self.chores.read_detail(ui.detail_id)
        if ui.screen == "today":
            self.chores.read_day()

    def reason(self, outcome) -> str | None:
        """Why a void or refund was refused or not confirmed, in the screen's
        language (the result's reason code); None in English, where the
        kiosk's own sentence says more (the payment, the amounts), or when
        the code is not one this screen knows."""
        t, reason = self.catalog, getattr(outcome, "reason", "")
        if t.language == "en" or not reason or not t.has(f"why_{reason}"):
            return None
        details = dict(getattr(outcome, "details", None) or {})
        for amount in ("left", "step"):         # minor units, shown as money
            if amount in details:
                details[amount] = format_amount(details[amount], details.get("currency", ""), t.locale)
        try:
            return t(f"why_{reason}", **details)
        except (KeyError, IndexError, ValueError):    # a detail missing: the words without it
            return None

    def said(self, action: str, outcome) -> tuple[str, str]:
        """(status, one line) the vendor reads after a void, refund or reprint."""
        t = self.catalog
        if isinstance(outcome, Exception):
            what = " ".join(f"{type(outcome).__name__}: {outcome}".split())[:120]
            return "failed", t("money_failed", what=what)
        if action == "print":
            return ("printed", t("money_printed")) if outcome is None else \
                ("not_printed", t("money_not_printed", why=outcome))
        status, message = outcome.status, " ".join(str(outcome.message or "").split())
        why = self.reason(outcome)
        if status == "refused":
            return status, t("money_refused", why=why or message or status)
        if status == "unconfirmed" and why:
            return status, why[:1].upper() + why[1:]
        if t.language == "en" and message:       # the kiosk's own sentence says the most (amount, card, why)
            return status, message[:1].upper() + message[1:]
        text = t(f"money_{status}") if t.has(f"money_{status}") else message or status
        refund = outcome.payment
        if status in ("refunded", "refund_queued") and refund is not None:
            text = f"{text}：{format_amount(refund.amount, refund.currency, t.locale)}"
        return status, text
