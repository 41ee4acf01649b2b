"""One payment's screens -- its detail (void, refund, reprint), the refund
amount keypad and the confirm -- and the Today screen, as widgets.

Pure builders like the rest of :mod:`.screens` (this module adds them to
its ``SCREENS``): no pygame, no store reads, no I/O.  They draw only what the
chores thread read into the UI state (:class:`~.state.Detail`, the day's
report), and only the buttons :func:`.money_actions.actions_for` allows.
Never draws card data beyond brand and last 4.
"""
from __future__ import annotations

from kiosk import FAILED

from . import screens as _screens     # the registry these builders join (below)
from .layout import Box, column, row
from .money_actions import SAID_TONE, actions_for
from .screens import (APPROVED_OFFLINE, BACKGROUND, DANGER, INK, KEY_BORDER, MUTED, ONLINE, PANEL, RESULT,
                      STATE_COLOUR, UNCONFIRMED, Context, Scene, keypad)
from .state import UiState

TONES = {"good": ONLINE, "offline": RESULT[APPROVED_OFFLINE], "unsure": RESULT[UNCONFIRMED], "bad": DANGER}
# Today's lines (keys of kiosk.report.totals), in the order shown
DAY_LINES = ("sales", "offline", "pending", "declined", "voided", "refunded", "tips", "net")


def _what(payment, ctx: Context) -> str:
    return f"{ctx.money(payment.amount, payment.currency)} {ctx.card(payment)}"


def detail_lines(ui: UiState, ctx: Context) -> list[tuple[str, str, tuple]]:
    """(widget name, text, colour) of the facts under the amount, most useful first."""
    t, detail = ctx.t, ui.detail
    payment = detail.payment
    lines = [("detail_taken", t("detail_taken", when=detail.when), INK)]
    if payment.is_refund:
        sale = detail.sale
        what = f"{_what(sale, ctx)}  {ctx.when(sale.created_at)}" if sale is not None else payment.refund_of
        lines.append(("detail_refund_of", t("detail_refund_of", what=what), INK))
    if payment.items:
        items = ", ".join(f"{item['quantity']}× {item['name']}" for item in payment.items)
        lines.append(("detail_items", t("detail_items", items=items), INK))
    if payment.tip:
        lines.append(("detail_tip", t("detail_tip", amount=ctx.money(payment.tip, payment.currency)), INK))
    if payment.state == FAILED:
        lines.append(("detail_declined", t("detail_declined", reason=t.decline(payment.decline_code,
                                                                            payment.message)), DANGER))
    if detail.refunds:
        refunds = ", ".join(t("detail_refund_line", amount=ctx.money(r.amount, r.currency),
                              state=t(f"state_{r.state}")) for r in detail.refunds)
        lines.append(("detail_refunds", t("detail_refunds", refunds=refunds), INK))
    if detail.refundable and not payment.is_refund:
        lines.append(("detail_refundable",
                      t("detail_refundable", amount=ctx.money(detail.refundable, payment.currency)), MUTED))
    return lines


def payment_detail_screen(scene: Scene, ui: UiState, ctx: Context) -> None:
    geo, t = scene.geometry, ctx.t
    u, gap = geo.u, geo.gap
    body = geo.text["body"] + 8
    top, amount, *facts, said, _, bottom = column(
        geo.content, [(u, 0), (geo.text["huge"] + 8, 10)] + [(body, 4)] * 5 + [(body, 4), (0, 1),
                                                                              (int(u * 1.2), 0)], gap)
    back, title, state = row(top, [(int(u * 2.2), 0), (0, 1), (0, 1)], gap)
    scene.button(back, "detail_back", t("back"), style="light")
    detail = ui.detail
    if detail is None or detail.payment is None:
        scene.text(amount, t("detail_loading" if detail is None else "detail_gone"), name="detail_empty",
                   colour=MUTED)
        return
    payment = detail.payment
    scene.text(title, t("detail_title_refund" if payment.is_refund else "detail_title_sale"), name="detail_title",
               role="large", bold=True, align="left")
    words = t(f"state_{payment.state}") + (f" · {t('tag_offline')}" if payment.offline else "")
    scene.text(state, words, name=f"state_{payment.state}", role="body", bold=True, align="right",
               colour=STATE_COLOUR.get(payment.state, INK))
    money, card = row(amount, [(0, 55), (0, 45)], gap)
    shown = ctx.money(payment.amount, payment.currency)
    scene.text(money, t("refund_row", amount=shown) if payment.is_refund else shown, name="detail_amount",
               role="huge", bold=True, align="left")
    scene.text(card, ctx.card(payment), name="detail_card", role="large", align="right")
    for box, (name, text, colour) in zip(facts, detail_lines(ui, ctx)):
        scene.text(box, text, name=name, align="left", colour=colour)
    if ui.money_busy:
        scene.text(said, t(f"money_busy_{ui.money_busy}"), name="money_busy", align="left", bold=True,
                   colour=MUTED)
    elif ui.money_said is not None:
        status, text = ui.money_said
        scene.text(said, text, name="money_said", align="left", bold=True,
                   colour=TONES[SAID_TONE.get(status, "bad")])
    buttons = actions_for(detail)
    if not buttons:
        return
    styles = {"void": "danger", "refund": "primary", "reprint": "light"}
    boxes = row(bottom, [(0, 1)] * len(buttons), gap) if len(buttons) > 1 else \
        row(bottom, [(0, 1), (max(u * 3, int(bottom.w * 0.4)), 0), (0, 1)], gap)[1:2]
    for box, name in zip(boxes, buttons):
        scene.button(box, name, t(name), style=styles[name], enabled=not ui.money_busy, role="large")


def refund_screen(scene: Scene, ui: UiState, ctx: Context) -> None:
    geo, t = scene.geometry, ctx.t
    u, gap, c = geo.u, geo.gap, geo.content
    detail, entry = ui.detail, ui.refund_entry
    if detail is None or detail.payment is None or entry is None:
        return
    info_h = geo.text["small"] + 10
    title_h = geo.text["body"] + 10
    if geo.portrait:
        title, amount_box, info, pad, buttons = column(c, [(title_h, 4), (u, 14), (info_h, 4), (4 * u, 60),
                                                           (u, 16)], gap)
    else:
        left, pad = row(c, [(0, 46), (0, 54)], gap)
        title, amount_box, info, _, buttons = column(left, [(title_h, 10), (u, 30), (info_h, 16), (0, 4),
                                                            (u, 30)], gap)
    currency = detail.payment.currency
    scene.text(title, t("refund_title", amount=ctx.money(detail.refundable, currency)), name="refund_title",
               bold=True, align="left")
    amount_text, clear = row(amount_box, [(0, 1), (int(u * 1.7), 0)], gap)
    scene.add("fill", amount_text, name="refund_panel", fill=PANEL, border=KEY_BORDER)
    scene.text(amount_text.inset(gap), ctx.money(entry.minor, currency), name="refund_amount", role="huge",
               bold=True, align="right")
    scene.button(clear, "refund_clear", t("clear"), style="light", enabled=not entry.empty)
    if ui.refund_error:
        scene.text(info, ui.refund_error, name="refund_error", colour=DANGER, role="small", bold=True)
    else:
        scene.text(info, _what(detail.payment, ctx), name="refund_of", colour=MUTED, role="small")
    keypad(scene, pad, entry, gap, prefix="refund_key_")
    cancel, next_ = row(buttons, [(0, 40), (0, 60)], gap)
    scene.button(cancel, "refund_cancel", t("cancel"), style="light", role="large")
    scene.button(next_, "refund_next", t("confirm_refund", amount=ctx.money(entry.minor, currency)),
                 enabled=not entry.empty, role="large")


def money_confirm_screen(scene: Scene, ui: UiState, ctx: Context) -> None:
    geo, t = scene.geometry, ctx.t
    u, gap = geo.u, geo.gap
    detail = ui.detail
    if ui.confirming is None or detail is None or detail.payment is None:
        return
    action, amount, currency = ui.confirming
    question, money, card, note, _, buttons = column(
        geo.content, [(geo.text["large"] * 2 + 12, 10), (geo.text["huge"] + 8, 20), (geo.text["body"] + 8, 6),
                      (geo.text["small"] * 2 + 10, 6), (0, 4), (int(u * 1.2), 0)], gap)
    scene.text(question, t(f"{action}_question"), name="confirm_question", role="large", bold=True, lines=2)
    scene.text(money, ctx.money(amount, currency), name="confirm_amount", role="huge", bold=True)
    payment = detail.payment
    scene.text(card, f"{ctx.card(payment)}  {ctx.when(payment.created_at)}", name="confirm_card", colour=MUTED)
    if action == "refund" and ctx.online is False:
        scene.text(note, t("refund_offline_note"), name="confirm_note", role="small", lines=2)
    cancel, confirm = row(buttons, [(0, 40), (0, 60)], gap)
    scene.button(cancel, "money_cancel", t("cancel"), style="light", role="large")
    scene.button(confirm, "money_confirm", t(f"confirm_{action}", amount=ctx.money(amount, currency)),
                 style="danger" if action == "void" else "primary", role="large")


def today_screen(scene: Scene, ui: UiState, ctx: Context) -> None:
    geo, t = scene.geometry, ctx.t
    gap = geo.gap
    day = ui.day
    header, table = column(geo.content, [(geo.text["body"] + 10, 0), (0, 1)], gap)
    if day is None:
        scene.text(table, t("today_loading"), name="today_empty", colour=MUTED)
        return
    scene.text(header, t("today_title", date=day["date"], zone=day["timezone"]), name="today_title", bold=True,
               align="left")
    currencies = day["currencies"]
    if not currencies:
        scene.text(table, t("today_none"), name="today_empty", colour=MUTED)
        return
    codes = list(currencies)
    heading = len(codes) > 1          # one column per currency, named when there are several
    lines = ([("", None)] if heading else []) + [(name, t(f"day_{name}")) for name in DAY_LINES]
    line_h = table.h // len(lines)
    for i, (name, label) in enumerate(lines):
        line = Box(table.x, table.y + i * line_h, table.w, line_h - 2)
        scene.add("fill", line, name="day_row", fill=PANEL if i % 2 == 0 else BACKGROUND)
        label_box, *cells = row(line.inset(gap // 2, 0), [(0, 40)] + [(0, 60 / len(codes))] * len(codes), gap)
        if label is None:
            for box, code in zip(cells, codes):
                scene.text(box, code.upper(), name="day_currency", bold=True, align="right", role="small")
            continue
        scene.text(label_box, label, name=f"day_label_{name}", align="left", bold=name == "net", role="small")
        for box, code in zip(cells, codes):
            totals = currencies[code]
            if name == "net":
                text = ctx.money(totals["net"], code)
            else:
                text = t("day_line", amount=ctx.money(totals[name]["amount"], code), n=totals[name]["count"])
            scene.text(box, text, name=f"day_{name}_{code}", align="right", bold=name == "net",
                       colour=DANGER if name == "declined" and totals[name]["count"] else INK)


SCREENS = {
    "payment_detail": payment_detail_screen,
    "refund": refund_screen,
    "money_confirm": money_confirm_screen,
    "today": today_screen,
}
_screens.SCREENS.update(SCREENS)
