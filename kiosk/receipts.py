"""A receipt as the customer reads it: what a receipt-printer plugin prints.

:func:`receipt_of` builds a :class:`Receipt` from a stored payment, the
configuration and the kiosk's time zone: the shop's name, the local time, the
items, the tip, the amount (Babel), the card's brand and last 4, whether the
card was approved offline and what checking it later came to, and the ids to
find the payment again (the kiosk's payment id, Stripe's PaymentIntent).
A refund record makes a "REFUND" receipt.

It must never carry a token, a full card number or anything that looks like
one: the card is its brand and last 4 only, and free text (the shop's name,
item names) holding a card number is left out.  It never reads the clock: the
time printed is the payment's own.
"""
from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field

from .card_numbers import contains_card_number
from .local_time import shown_time
from .money import format_amount
from .payment import FAILED, MOVED, SUCCEEDED, VOIDED, Payment

OFFLINE_LINE = "approved offline — card checked later"

# the receipt's own words; [kiosk] language picks them (a Japanese receipt prints as an image)
WORDS = {
    "en": {
        "refund": "REFUND", "refund_of": "Refund of", "subtotal": "Subtotal", "tip": "Tip",
        "total": "TOTAL", "refunded": "REFUNDED", "card": "Card", "payment": "Payment",
        "stripe": "Stripe", "offline": OFFLINE_LINE,
        "forwarded": "card checked: charged", "declined": "card checked: DECLINED",
        "voided": "VOIDED — not charged", "declined_online": "DECLINED", "moved": "moved to another kiosk",
        "refund_queued": "refund kept: sent when back online", "refund_failed": "refund REFUSED",
        "locale": "en_US",
    },
    "ja": {
        "refund": "返金", "refund_of": "返金対象", "subtotal": "小計", "tip": "チップ",
        "total": "合計", "refunded": "返金額", "card": "カード", "payment": "支払番号",
        "stripe": "Stripe", "offline": "オフライン承認 — カードは後で確認",
        "forwarded": "カード確認済み: 請求完了", "declined": "カード確認: 拒否",
        "voided": "取消 — 請求なし", "declined_online": "拒否", "moved": "別の端末へ移動",
        "refund_queued": "返金はオンライン復帰後に送信", "refund_failed": "返金拒否",
        "locale": "ja_JP",
    },
}

LEFT_OUT = "[left out: looked like a card number]"


@dataclass(frozen=True)
class ReceiptItem:
    name: str
    quantity: int
    total: str                  # the line's total, formatted (price × quantity)


@dataclass(frozen=True)
class Row:
    """One row as printed: ``left`` and ``right`` (an amount), and how it is shown."""
    left: str
    right: str = ""
    style: str = "normal"       # "title" (large, centred), "center", "bold", "normal" or "rule"

    def lines(self, width: int) -> list[str]:
        """This row as lines of at most ``width`` character cells."""
        return layout(self, width)


@dataclass(frozen=True)
class Receipt:
    payment_id: str             # the kiosk's id (kp_…): `kiosk receipt ID` prints it again
    kind: str                   # "sale" or "refund"
    shop_name: str
    time: str                   # the payment's time in the kiosk's zone: "2026-12-05 18:30 JST"
    amount: str                 # charged (a sale, tip included) or given back (a refund), formatted
    currency: str               # lowercase ISO 4217
    card: str                   # brand and last 4 only: "VISA **** 4242"
    items: tuple = ()           # ReceiptItem each
    subtotal: str | None = None     # before the tip, when there is one
    tip: str | None = None
    offline: str | None = None      # "approved offline — card checked later", when it applies
    outcome: str | None = None      # once known: checked and charged, declined, voided, refund kept...
    payment_intent: str | None = None
    refund_of: str | None = None    # a refund: the sale's payment id
    language: str = "en"
    words: dict = field(default_factory=lambda: dict(WORDS["en"]), compare=False, repr=False)

    def rows(self) -> list[Row]:
        """What is printed, top to bottom."""
        w = self.words
        rows = [Row(self.shop_name, style="title")] if self.shop_name else []
        if self.kind == "refund":
            rows.append(Row(w["refund"], style="title"))
        rows += [Row(self.time, style="center"), Row("", style="rule")]
        for item in self.items:
            rows.append(Row(f"{item.quantity} x {item.name}", item.total))
        if self.subtotal is not None:
            rows.append(Row(w["subtotal"], self.subtotal))
        if self.tip is not None:
            rows.append(Row(w["tip"], self.tip))
        rows.append(Row(w["refunded"] if self.kind == "refund" else w["total"], self.amount, style="bold"))
        rows.append(Row(f"{w['card']} {self.card}"))
        if self.offline:
            rows.append(Row(self.offline, style="bold"))
        if self.outcome:
            rows.append(Row(self.outcome, style="bold"))
        rows.append(Row("", style="rule"))
        if self.refund_of:
            rows.append(Row(f"{w['refund_of']} {self.refund_of}"))
        rows.append(Row(f"{w['payment']} {self.payment_id}"))
        if self.payment_intent:
            rows.append(Row(f"{w['stripe']} {self.payment_intent}"))
        return rows

    def text_lines(self, width: int) -> list[str]:
        """The rows laid out in ``width`` character cells (a wide character takes two)."""
        return [line for row in self.rows() for line in layout(row, width)]

    def text(self, width: int = 32) -> str:
        return "\n".join(self.text_lines(width)) + "\n"


def layout(row: Row, width: int) -> list[str]:
    """One row as lines of at most ``width`` cells: centred, or ``right`` flush right."""
    if row.style == "rule":
        return ["-" * width]
    if row.style in ("title", "center"):
        return [_center(part, width) for part in _wrap(row.left, width)]
    if not row.right:
        return _wrap(row.left, width)
    parts = _wrap(row.left, max(width - cells(row.right) - 1, 1))
    last = parts[-1] + " " * max(width - cells(parts[-1]) - cells(row.right), 1) + row.right
    return parts[:-1] + [last]


def cells(text: str) -> int:
    """Character cells ``text`` takes on a receipt: East Asian wide characters take two."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def _center(text: str, width: int) -> str:
    pad = max(width - cells(text), 0) // 2
    return " " * pad + text


def _wrap(text: str, width: int) -> list[str]:
    """Cut ``text`` into lines of at most ``width`` cells, at spaces when it can."""
    lines, line = [], ""
    for word in text.split(" "):
        candidate = f"{line} {word}" if line else word
        if cells(candidate) <= width:
            line = candidate
            continue
        if line:
            lines.append(line)
        while cells(word) > width:          # a word longer than the line (an id, Japanese): cut it
            cut = 0
            while cut < len(word) and cells(word[:cut + 1]) <= width:
                cut += 1
            lines.append(word[:cut])
            word = word[cut:]
        line = word
    lines.append(line)
    return lines


def _free_text(text: str) -> str:
    """A name typed by the vendor, as plain printable text -- no control characters, which a
    printer would take for commands (ESC p opens the cash drawer) -- unless it holds a card number."""
    text = "".join(ch if unicodedata.category(ch)[0] != "C" else " " for ch in str(text))
    text = " ".join(text.split())
    return LEFT_OUT if contains_card_number(text) else text


def receipt_of(payment: Payment, *, shop_name: str, zone, language: str = "en",
               sale: Payment | None = None) -> Receipt:
    """The receipt for a stored payment (a sale or a refund record), its time
    in ``zone``; ``sale`` is the sale a refund record gives money back for, if known."""
    words = WORDS.get(language, WORDS["en"])
    locale = words["locale"]

    def money(amount: int) -> str:
        return format_amount(amount, payment.currency, locale)

    when = shown_time(payment.created_at, zone)         # as every time a vendor reads
    items = tuple(ReceiptItem(_free_text(item.get("name", "")), int(item.get("quantity", 1)),
                              money(int(item.get("price", 0)) * int(item.get("quantity", 1))))
                  for item in payment.items or ())
    refund = payment.is_refund
    tip = None if refund or not payment.tip else money(payment.tip)
    subtotal = money(payment.amount - payment.tip) if tip is not None else None
    offline = words["offline"] if payment.offline and not refund else None
    return Receipt(
        payment_id=payment.id, kind="refund" if refund else "sale", shop_name=_free_text(shop_name),
        time=when, amount=money(payment.amount), currency=payment.currency,
        card=f"{payment.card.brand.upper()} **** {str(payment.card.last4)[-4:]}",
        items=items, subtotal=subtotal, tip=tip, offline=offline, outcome=_outcome(payment, words),
        payment_intent=payment.payment_intent or (sale.payment_intent if sale else None),
        refund_of=payment.refund_of, language=language if language in WORDS else "en", words=dict(words))


def _outcome(payment: Payment, words: dict) -> str | None:
    """What became of it, once that is known and worth printing."""
    if payment.is_refund:
        if payment.state == FAILED:
            return words["refund_failed"]
        return None if payment.state == SUCCEEDED else words["refund_queued"]
    if payment.state == VOIDED:
        return words["voided"]
    if payment.state == MOVED:
        return words["moved"]
    if payment.offline and payment.state == SUCCEEDED:
        return words["forwarded"]
    if payment.state == FAILED:
        return words["declined"] if payment.offline else words["declined_online"]
    return None
