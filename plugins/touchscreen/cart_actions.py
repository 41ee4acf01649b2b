"""What the sale screen's quick items, cart, tip and receipt buttons do.

A sale is put together on the UI thread before the card is asked for: quick
items tapped into a :class:`kiosk.Cart` (quantities, +/-, remove), an amount
typed on the keypad (a line of its own beside the items, or the whole sale
alone), a tip chosen after Charge when ``[kiosk] tips`` lists any, and an
e-mail address Stripe sends its receipt to once the payment goes through.
:class:`CartActions` changes :class:`~.state.UiState` for those buttons and
hands the finished sale -- goods total, items, tip, receipt e-mail -- to
:class:`~.controller.SaleController`, which runs it on the sale thread.

It never draws, never blocks, never stores anything: nothing about a sale is
kept before ``Kiosk.take_sale`` stores it.  Never logs a receipt e-mail.
"""
from __future__ import annotations

from kiosk import Cart, check_contact, contains_card_number, tip_amount
from kiosk import catalog as quick_catalog

from .state import UiState


def quick_items(config, currency: str) -> list:
    """The catalog's quick items the screen can sell: those priced in its currency."""
    return [item for item in quick_catalog(config) if item.currency == currency]


def sale_goods(ui: UiState, custom_name: str) -> tuple[int, list | None]:
    """(goods total, items to store) of the sale as it stands: the cart's items
    plus the typed amount as a line of its own (called ``custom_name``); the
    typed amount alone is a sale without items."""
    typed = ui.entry.minor
    if ui.cart is None or not len(ui.cart):
        return typed, None
    items = ui.cart.items()
    if typed:
        items.append({"name": custom_name, "price": typed, "quantity": 1})
    return ui.cart.total + typed, items


def tip_choices(ui: UiState, amount: int) -> list[tuple[int, int]]:
    """(percent, tip in minor units) of each tip offered on ``amount``."""
    return [(percent, tip_amount(amount, percent, ui.entry.currency)) for percent in ui.tips]


class CartActions:
    """The buttons of the sale being put together.  ``start(amount, items, tip, receipt_email)``
    begins the sale (:meth:`.controller.SaleController._start_sale`)."""

    def __init__(self, ui: UiState, catalog, start):
        self.ui = ui
        self.catalog = catalog
        self.start = start
        if ui.cart is None:
            ui.cart = Cart()

    def goods(self) -> tuple[int, list | None]:
        """(goods total, items) of the sale as it stands (:func:`sale_goods`)."""
        return sale_goods(self.ui, self.catalog("custom_item"))

    # -- the buttons -------------------------------------------------------------------

    def act(self, name: str) -> bool:
        """Do what button ``name`` does; False if it is not one of these."""
        ui = self.ui
        kind, _, arg = name.partition(":")
        error, ui.sale_error = ui.sale_error, ""      # an error stays until the next tap
        if kind == "item":
            self._add(int(arg))
        elif kind in ("line_plus", "line_minus", "line_remove"):
            self._change_line(kind, int(arg))
        elif name == "open_cart":
            ui.screen = "cart"
        elif name == "cart_back":
            ui.screen = "sale"
        elif name in ("pad_items", "pad_keypad"):
            ui.pad = name[4:]
        elif name == "receipt":
            ui.contact_for, ui.contact_back, ui.contact_mode = "receipt", ui.screen, "email"
            ui.contact, ui.contact_error, ui.screen = ui.receipt_email, "", "contact"
        elif kind == "tip":
            self._tip(int(arg))
        elif name == "tip_back":
            ui.screen = "sale"
        else:
            ui.sale_error = error
            return False
        return True

    def charge(self) -> bool:
        """Charge was tapped: ask for the tip first when tips are offered.
        True if the tip screen is shown (the sale starts from there)."""
        if not self.ui.tips:
            return False
        self.ui.screen = "tip"
        return True

    def receipt_done(self) -> bool:
        """Done on the keyboard typing the receipt e-mail: True when it is an
        e-mail address (or nothing: no receipt), back to where it was asked."""
        ui = self.ui
        text = ui.contact.strip()
        if text:
            try:
                if "@" not in text:
                    raise ValueError("not an e-mail address")
                text = check_contact(text)
            except ValueError:
                if contains_card_number(text):
                    # never shown back, never kept: the field is wiped
                    ui.contact, ui.contact_error = "", self.catalog("contact_card_number")
                else:
                    ui.contact_error = self.catalog("receipt_invalid")
                return False
        ui.receipt_email, ui.contact, ui.contact_for = text, "", "customer"
        ui.screen = ui.contact_back
        return True

    def sold(self) -> None:
        """The sale went through (or may have): the next customer starts afresh."""
        ui = self.ui
        ui.cart.clear()
        ui.receipt_email = ""       # the pad stays as the vendor left it: items or keypad

    # -- helpers ---------------------------------------------------------------------------

    def _add(self, index: int) -> None:
        ui = self.ui
        if 0 <= index < len(ui.quick_items):
            try:
                ui.cart.add(ui.quick_items[index])
            except ValueError:          # the most of one item a cart takes
                ui.sale_error = self.catalog("cart_full")

    def _change_line(self, kind: str, index: int) -> None:
        lines = self.ui.cart.lines()
        if not 0 <= index < len(lines):
            return                      # a line removed by the tap before: nothing to change
        line = lines[index]
        quantity = {"line_plus": line.quantity + 1, "line_minus": line.quantity - 1}.get(kind, 0)
        try:
            self.ui.cart.set_quantity(line.item, quantity)
        except ValueError:
            self.ui.sale_error = self.catalog("cart_full")
        if not len(self.ui.cart):
            self.ui.screen = "sale"

    def _tip(self, percent: int) -> None:
        amount, items = self.goods()
        tip = dict(tip_choices(self.ui, amount)).get(percent, 0)
        self.start(amount, items, tip, self.ui.receipt_email or None)
