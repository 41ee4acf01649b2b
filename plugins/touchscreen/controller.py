"""What a tap does: the sale flow and every button, as changes to the UI state.

:class:`SaleController` owns the rules of the screens -- the keypad, Charge,
Cancel, the offline question and the customer contact, results, navigation
and scrolling, "followed up", Sync now -- and what the screen makes of the
kiosk's news (results, forwarded payments, notices, fresh snapshots).  It
changes :class:`~.state.UiState` on the UI thread only; the display draws
whatever the state says afterwards.

It never draws and never imports pygame, and it never blocks the UI thread:
``Kiosk.take_sale`` (online check, reader, charge) runs on a sale thread of
its own, store reads and writes go to the chores thread, and whatever another
thread learns comes back through ``post`` and is applied in :meth:`receive`.
(Only :meth:`close` waits: a sale already charging finishes and is stored
before the screen goes.)

Never logs card data beyond brand and last 4, and never logs a customer contact.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from kiosk import (CANCELLED, FAILED, FORWARDING, PENDING, REFUSED, SUCCEEDED, UNCONFIRMED, MoneyError,
                   SaleResult, check_amount, check_contact, contains_card_number, format_amount, minimum_charge)

from .cart_actions import CartActions, quick_items
from .catalog import Catalog
from .keypad import type_contact
from .money_actions import MoneyActions
from .state import Alert, Sale, UiState

log = logging.getLogger("kiosk.touchscreen")

TOAST_SECONDS = 4.0
SALE_JOIN_SECONDS = 90.0  # a sale's reader wait and charge finish before the kiosk closes
# Notices sent before the screen opened that it still shows when it does.
REPLAYED_NOTICES = ("store_recovered", "interrupted", "auth_failed", "key_missing", "reader", "needs_update",
                    "store_alarm")


class SaleController:
    """The actions behind the buttons, run on the UI thread.

    ``kiosk`` is the :class:`kiosk.KioskView`; ``chores`` the background
    thread (:class:`~.chores.Chores`); ``post(kind, payload)`` hands something
    to the UI thread from any thread; ``rows_shown(widget_name)`` says how
    many widgets of that name the last frame drew (a page when scrolling)."""

    def __init__(self, kiosk, ui: UiState, catalog: Catalog, chores, post: Callable[[str, object], None],
                 rows_shown: Callable[[str], int]):
        self.kiosk = kiosk
        self.ui = ui
        self.catalog = catalog
        self.chores = chores
        self.post = post
        self.rows_shown = rows_shown
        self.attention_seq = -1                 # which refresh the attention list answers
        self.closed = False
        self.sale_thread: threading.Thread | None = None
        self.money = MoneyActions(ui, catalog, chores, self._toast)     # one payment: void, refund, reprint; Today
        ui.quick_items = quick_items(kiosk.config, ui.entry.currency)
        ui.tips = list(kiosk.config["kiosk"].get("tips") or ())
        self.cart = CartActions(ui, catalog, self._start_sale)     # quick items, cart, tip, receipt e-mail

    # -- what each button does ---------------------------------------------------------

    def act(self, name: str) -> None:
        """Do what the button ``name`` does."""
        ui, t = self.ui, self.catalog
        if self.money.act(name):
            pass
        elif self.cart.act(name):
            pass
        elif name.startswith("key_"):
            ui.entry.press(name[4:])
            ui.sale_error = ""
        elif name == "clear":
            if ui.entry.empty:
                ui.cart.clear()     # a second Clear empties the cart
            ui.entry.clear()
            ui.sale_error = ""
        elif name == "charge":
            self._charge()
        elif name == "cancel_sale" and ui.sale is not None:
            ui.sale.cancel.set()
        elif name == "contact":
            ui.screen, ui.contact_error = "contact", ""
        elif name.startswith("type_"):
            ui.contact, ui.contact_error = type_contact(ui.contact, name[5:]), ""
        elif name in ("contact_back", "contact_clear"):
            ui.contact, ui.contact_error = type_contact(ui.contact, name[8:]), ""
        elif name == "contact_mode":
            ui.contact_mode = "email" if ui.contact_mode == "phone" else "phone"
        elif name == "contact_done" and ui.contact_for == "receipt":
            self.cart.receipt_done()
        elif name == "contact_done":
            if self._contact_ok():
                ui.screen = "confirm_offline"
        elif name == "offline_confirm":
            if self._contact_ok():
                self._answer(True)
        elif name == "offline_cancel":
            self._answer(False)
        elif name == "new_sale":
            ui.screen, ui.result = "sale", None
        elif name.startswith("nav_"):
            ui.screen = name[4:]
            if ui.screen == "attention":
                self.chores.refresh(attention=True)
        elif name.endswith("_up") or name.endswith("_down"):
            screen, _, direction = name.rpartition("_")
            page = self._page_size(screen)
            ui.scroll[screen] = max(0, ui.scroll.get(screen, 0) + (page if direction == "down" else -page))
        elif name.startswith("followed_up:"):
            payment_id = name.partition(":")[2]
            ui.following.add(payment_id)
            self.chores.follow_up(payment_id)
        elif name == "sync_now":
            self.kiosk.request_sync()        # only sets an Event: the forwarder does the work
            self._toast(t("toast_sync"))
        elif name == "alert_view":
            ui.alerts[:] = [a for a in ui.alerts if a.kind != "declined"]   # they are all on that screen
            ui.screen = "attention"
            self.chores.refresh(attention=True)
        elif name == "alert_ok" and ui.alerts:
            # only what the vendor saw: the grouped declines, or the one alert shown
            if ui.alerts[0].kind == "declined":
                ui.alerts[:] = [a for a in ui.alerts if a.kind != "declined"]
            else:
                ui.alerts.pop(0)

    def scroll(self, rows: int) -> bool:
        """The mouse wheel: ``rows`` down (negative: up) on a list screen.  True if anything moved."""
        ui = self.ui
        if ui.screen in ("payments", "attention") and rows:
            ui.scroll[ui.screen] = max(0, ui.scroll[ui.screen] + rows)
            return True
        return False

    def _page_size(self, screen: str) -> int:
        row_name = {"payments": "payment_row", "attention": "attention_row", "items": "quick_item",
                    "cart": "cart_line"}.get(screen)
        return max(1, self.rows_shown(row_name))

    def _contact_ok(self) -> bool:
        ui = self.ui
        if not ui.contact.strip():
            ui.contact = ""
            return True
        try:
            ui.contact = check_contact(ui.contact)
            return True
        except ValueError:
            if contains_card_number(ui.contact):
                # never shown back, never kept: the field is wiped
                ui.contact, ui.contact_error = "", self.catalog("contact_card_number")
            else:
                ui.contact_error = self.catalog("contact_invalid")
            ui.screen = "contact"
            return False

    def _toast(self, text: str) -> None:
        self.ui.toast, self.ui.toast_until = text, time.monotonic() + TOAST_SECONDS
        self.ui.sent_count = 0

    # -- a sale ----------------------------------------------------------------------

    def _charge(self) -> None:
        """Charge: the goods total checked, then the tip screen or the card."""
        amount, items = self.cart.goods()
        if self._amount_ok(amount) and not self.cart.charge():
            self._start_sale(amount, items, 0, self.ui.receipt_email or None)

    def _amount_ok(self, amount: int) -> bool:
        ui, currency = self.ui, self.ui.entry.currency
        try:
            check_amount(amount, currency)
            return True
        except MoneyError:
            low = minimum_charge(currency)
            ui.sale_error = (self.catalog("below_minimum", amount=format_amount(low, currency, self.catalog.locale))
                             if amount < low else self.catalog("too_large"))
            ui.screen = "sale"
            return False

    def _start_sale(self, amount: int, items: list | None = None, tip: int = 0,
                    receipt_email: str | None = None) -> None:
        ui = self.ui
        if ui.sale is not None or not self._amount_ok(amount):
            return
        currency = ui.entry.currency
        sale = Sale(amount, currency, items=items, tip=tip, receipt_email=receipt_email)
        ui.sale, ui.screen, ui.contact, ui.contact_mode = sale, "present_card", "", "phone"
        self.sale_thread = threading.Thread(target=self._sell, args=(sale,), name="touchscreen-sale", daemon=True)
        self.sale_thread.start()

    def _sell(self, sale: Sale) -> None:
        """On the sale thread: the whole sale, as the engine runs it."""
        extras = {"items": sale.items, "tip": sale.tip, "receipt_email": sale.receipt_email}
        try:
            result = self.kiosk.take_sale(sale.amount, sale.currency, confirm=lambda offer: self._confirm(sale, offer),
                                          cancel=sale.cancel, **{k: v for k, v in extras.items() if v})
        except (MoneyError, ValueError) as exc:
            result = SaleResult(REFUSED, str(exc))
        except Exception as exc:      # an engine, plugin or storage failure: say so, keep the screen alive
            log.exception("sale failed")
            # how far the sale got is unknown (a card may be charged): never "refused", which invites
            # charging again
            result = SaleResult(UNCONFIRMED, f"sale failed ({type(exc).__name__}): check Payments before "
                                "charging the card again")
        self.post("result", (sale, result))

    def _confirm(self, sale: Sale, offer) -> bool:
        """On the sale thread: ask the vendor about an offline sale and wait for the answer."""
        sale.offer = offer
        if sale.answered.is_set():      # asked again once the card is read (a repeated card): a fresh answer
            sale.answer = None
            sale.answered.clear()
        self.post("confirm", sale)
        while not sale.answered.wait(0.5):
            if self.closed or sale.cancel.is_set():
                return False
        if sale.answer:
            offer.customer = sale.customer
        return bool(sale.answer)

    def _answer(self, yes: bool) -> None:
        sale = self.ui.sale
        if sale is None or sale.offer is None or sale.answered.is_set():
            return
        sale.answer, sale.offline = yes, yes
        sale.customer = self.ui.contact or None
        sale.answered.set()
        self.ui.screen = "present_card"

    def _finish_sale(self, sale: Sale, result) -> None:
        ui = self.ui
        if sale is not ui.sale:
            return
        ui.sale = None
        if result.status == CANCELLED or (sale.cancel.is_set() and result.payment is None):
            ui.screen = "sale"
            self._toast(self.catalog("toast_cancelled" if sale.cancel.is_set() else "toast_not_confirmed"))
            return
        ui.result, ui.result_amount, ui.screen = result, (sale.amount + sale.tip, sale.currency), "result"
        if result.ok or result.status == "unconfirmed":   # never leave it ready to charge again
            ui.entry.clear()
            self.cart.sold()
        self.chores.refresh(attention=result.payment is not None and result.payment.state == FAILED)

    # -- what other threads sent (applied on the UI thread) ------------------------------

    def receive(self, kind: str, payload) -> None:
        """Apply one thing another thread posted."""
        ui = self.ui
        if self.money.receive(kind, payload):      # a payment's detail, a void/refund/reprint, Today
            return
        if kind == "snapshot":
            ui.snapshot = payload
        elif kind == "attention":
            self.attention_seq, ui.attention = payload
            ui.following &= {p.id for p in ui.attention}
        elif kind == "confirm":
            if payload is ui.sale:
                ui.screen, ui.contact = "confirm_offline", payload.offer.customer or payload.receipt_email or ""
                ui.contact_for, ui.contact_back = "customer", "confirm_offline"
        elif kind == "result":
            self._finish_sale(*payload)
        elif kind == "payment":
            self._payment(*payload)
        elif kind == "followed":
            payment_id, error = payload
            ui.following.discard(payment_id)
            self._toast(error or self.catalog("toast_followed"))
        elif kind == "notice":
            self._notice(payload)

    def _payment(self, payment, previous) -> None:
        t, ui = self.catalog, self.ui
        # settled after the customer left: an offline sale, or an online one whose answer was lost
        forwarded = previous in (PENDING, FORWARDING) and (payment.offline or payment.interrupted_told)
        what = (f"{format_amount(payment.amount, payment.currency, t.locale)} "
                f"{payment.card.brand} •••• {payment.card.last4}")
        if forwarded and payment.is_refund:      # money going back: never "sent" or "declined" like a sale
            if payment.state == SUCCEEDED:
                self._toast(t("toast_refund_sent", what=what))
            elif payment.state == FAILED:
                ui.alerts.append(Alert("refund_failed", t("refund_failed_one", what=f"{what} — {payment.message}"),
                                       payment.id))
        elif forwarded and payment.state == SUCCEEDED:
            if ui.toast and ui.sent_count:
                ui.sent_count += 1
                ui.toast = t("toast_sent_n", n=ui.sent_count)
                ui.toast_until = time.monotonic() + TOAST_SECONDS
            else:
                self._toast(t("toast_sent", what=what))
                ui.sent_count = 1
        elif forwarded and payment.state == FAILED:
            reason = t.decline(payment.decline_code, payment.message)
            ui.alerts.append(Alert("declined", t("failure_one", what=f"{what} — {reason}"), payment.id))
        self.chores.refresh(attention=payment.state == FAILED)
        self.money.payment_changed(payment)

    def _notice(self, notice) -> None:
        if notice.kind == "reader":
            what = f"{notice.title}: {notice.message}" if notice.message else notice.title
            if notice.level == "success":
                self._toast(self.catalog("notice_reader", what=what))
            else:      # off, not found, pairing refused, battery low: the vendor must see it
                self.ui.alerts.append(Alert("reader", self.catalog("notice_reader", what=what)))
            return
        if notice.kind == "clock":
            self.chores.refresh()       # its banner stays while the clock is not trusted: read it again
            return
        key = {"auth_failed": "notice_auth_failed", "key_missing": "notice_key_missing",
               "store_recovered": "notice_store_recovered",
               "interrupted": "notice_interrupted", "needs_update": "notice_needs_update",
               "declined_for_now": "notice_declined_for_now", "plugin_trouble": "notice_plugin_trouble",
               "safe_mode": "notice_safe_mode", "store_alarm": "notice_store_alarm",
               "battery_low": "notice_battery_low", "battery_critical": "notice_battery_critical",
               "power_restored": "notice_power_restored",
               "disk_full": "notice_disk_full", "disk_low": "notice_disk_low"}.get(notice.kind)
        if key is None:
            return     # the rest are on screen already: results, toasts, the status bar and its banner
        payment = notice.payment or {}
        what = notice.message.split(" — ")[0] if notice.kind == "plugin_trouble" else ""
        if payment:
            what = (f"{format_amount(payment['amount'], payment['currency'], self.catalog.locale)} "
                    f"{payment['card']['brand']} •••• {payment['card']['last4']}")
        if notice.kind == "power_restored":       # the battery warnings no longer hold
            self.ui.alerts[:] = [a for a in self.ui.alerts if a.kind not in ("battery_low", "battery_critical")]
        if notice.kind in ("declined_for_now", "power_restored"):
            self._toast(self.catalog(key, what=what))     # nothing to do: the kiosk tries again, sales go on
            return
        self.ui.alerts.append(Alert(notice.kind, self.catalog(key, what=what)))

    # -- closing -------------------------------------------------------------------------

    def close(self, cancel_sale: bool = True) -> None:
        """End the sale under way: one waiting for the card is cancelled
        (nothing is read, nothing stored) unless ``cancel_sale`` is False; an
        unanswered offline offer is a "no"; a sale already charging always
        finishes (waits up to SALE_JOIN_SECONDS for it)."""
        self.closed = True
        sale = self.ui.sale
        if sale is not None:
            if cancel_sale:
                sale.cancel.set()
            sale.answered.set()          # an unanswered offline offer is a "no": nothing read yet
        if self.sale_thread is not None:
            self.sale_thread.join(SALE_JOIN_SECONDS)
