"""Taking a sale: online or offline, the offline limits, storing the sale with
its request, and charging it while the customer waits at the till.

A sale is stored (key and request included, durable) before it is charged or
anyone hears of it, and the vendor is told only what is durable.  It never
tells the vendor "approved" for a charge Stripe has not confirmed, and never
lets a reader or limits plugin's failure take the kiosk down: the sale is
refused instead.
"""
from __future__ import annotations

import logging
import threading

from . import disk_space, notices, same_card
from . import payment_states as states
from .card_numbers import refuse_card_number
from .faults import crash_point
from .interfaces import CardResult, ReaderError, StoreAlarm
from .limits import History, LimitRefused, Limits, Stored, base_limits, check_sale
from .money import check_amount, currency_code, format_amount
from .notices import Notice
from .payment import FAILED, PENDING, SUCCEEDED, Card, Payment, iso, new_payment_id, parse_iso
from .quick_items import check_items
from .sale_result import (APPROVED, APPROVED_OFFLINE, CANCELLED, DECLINED, OFFLINE_BECAUSE, REFUSED, UNCONFIRMED,
                          OfflineOffer, SaleResult, check_contact)

from .sale_result import CHARGED_NOT_STORED, KEPT_NOT_CHARGED, MAYBE_STORED, NOT_STORED, SENT_NOT_STORED

log = logging.getLogger("kiosk.engine")     # the engine's log lines keep their name


def check_receipt_email(address: str) -> str:
    """An e-mail address for Stripe's receipt, checked as a customer contact is.
    ``ValueError`` in one line, never repeating what was typed."""
    text = str(address).strip()
    refuse_card_number(text, "receipt e-mail")
    if "@" not in text:
        raise ValueError("receipt e-mail is not an e-mail address (name@example.com)")
    try:
        return check_contact(text)
    except ValueError:
        raise ValueError("receipt e-mail is not an e-mail address (name@example.com)") from None


def check_extras(amount: int, currency: str, items: list | None, tip: int,
                 receipt_email: str | None) -> tuple[list, int, str | None]:
    """A sale's items, tip and receipt e-mail checked against its ``amount`` (the goods,
    before the tip); ``ValueError`` (one line) before anything is read or stored."""
    if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
        check_amount(amount, currency)      # its one line says what is wrong
    if isinstance(tip, bool) or not isinstance(tip, int) or tip < 0:
        raise ValueError(f"tip must be a whole number of minor units, 0 or more, not {tip!r}")
    if items:
        total = check_items(items)
        if total != amount:
            raise ValueError(f"the items add up to {format_amount(total, currency)}, not the amount "
                             f"{format_amount(amount, currency)}: nothing taken")
    if receipt_email is not None and str(receipt_email).strip():
        receipt_email = check_receipt_email(receipt_email)
    return [dict(entry) for entry in items or ()], tip, receipt_email or None


class Selling:
    def __init__(self, kiosk):
        self.kiosk = kiosk
        self.paused: str | None = None           # why new sales are refused (a plugin's pause_sales), or None
        self._under_way = 0                      # sales started and not yet returned
        self._sales = threading.Condition()      # guards both: a pause and a sale's start cannot cross
        self._shown: set[str] = set()            # offline sales seen approved, not yet written (write_shown)
        self._shown_lock = threading.Lock()      # the screen adds while the background loop writes

    # -- limits --------------------------------------------------------------

    def history(self) -> History:
        kiosk = self.kiosk
        now = kiosk.clock()
        last = parse_iso(kiosk.store.get_meta("last_sync_at") or kiosk.store.get_meta("initialized_at"))
        live = [p for p in kiosk.store.live() if not p.is_refund]           # the limits weigh sales only
        oldest = min((p.created() for p in live), default=None)
        return History(forwarded=kiosk.store.get_meta("offline_forwarded", 0),
                       declined=kiosk.store.get_meta("offline_declined", 0),
                       hours_since_sync=(now - last).total_seconds() / 3600 if last else 0.0,
                       oldest_pending_hours=None if oldest is None else (now - oldest).total_seconds() / 3600)

    def effective_limits(self, currency: str) -> Limits | None:
        kiosk = self.kiosk
        base = base_limits(kiosk.config["limits"], kiosk.config.currency, currency)
        if base is None:
            return None
        return kiosk.host.offline_limits(base=base, history=self.history())

    def stored(self, currency: str) -> Stored:
        live = [p for p in self.kiosk.store.live() if not p.is_refund]     # a refund waiting is not a sale
        return Stored(amount=sum(p.amount for p in live if p.currency == currency), count=len(live))

    # -- pausing (a plugin stops new sales: the battery is about to run out) ---

    def pause(self, reason: str) -> None:
        """From now on every new sale is refused with ``reason``; a sale already
        started is not touched (:meth:`wait` for it)."""
        with self._sales:
            self.paused = " ".join(str(reason).split()) or "sales are paused"

    def resume(self) -> None:
        with self._sales:
            self.paused = None

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until no sale is under way; ``True`` when none is."""
        with self._sales:
            return self._sales.wait_for(lambda: self._under_way == 0, timeout)

    # -- a sale --------------------------------------------------------------

    def take_sale(self, amount: int, currency: str | None = None, *, behavior: str | None = None,
                  confirm=None, customer: str | None = None, card: str | None = None,
                  cancel: threading.Event | None = None, items: list | None = None, tip: int = 0,
                  receipt_email: str | None = None) -> SaleResult:
        """Take one sale through the reader, unless sales are paused or one
        is already under way (the screen and `kiosk charge` through the
        running kiosk share one reader and one customer at a time).
        ``amount`` is the goods (``items``' total when given), before ``tip``;
        the card is charged ``amount + tip``."""
        with self._sales:
            if self.paused is not None:
                return SaleResult(REFUSED, f"{self.paused}; nothing stored", limit="paused")
            if self._under_way:
                return SaleResult(REFUSED, "another sale is under way on this kiosk: finish it first; "
                                  "nothing stored", limit="busy")
            self._under_way += 1
        try:
            return self._take_sale(amount, currency, behavior=behavior, confirm=confirm, customer=customer,
                                   card=card, cancel=cancel, items=items, tip=tip, receipt_email=receipt_email)
        finally:
            with self._sales:
                self._under_way -= 1
                self._sales.notify_all()

    def _take_sale(self, amount: int, currency: str | None = None, *, behavior: str | None = None,
                   confirm=None, customer: str | None = None, card: str | None = None,
                   cancel: threading.Event | None = None, items: list | None = None, tip: int = 0,
                   receipt_email: str | None = None) -> SaleResult:
        """Take one sale through the reader.  ``confirm(offer) -> bool`` is asked
        before an offline sale in ``prefer_online``; without it the sale is refused.
        It is asked again, with ``offer.same_card`` set, once the card is read
        if that card already has offline sales waiting."""
        kiosk = self.kiosk
        currency = currency_code(currency or kiosk.config.currency)
        items, tip, receipt_email = check_extras(amount, currency, items, tip, receipt_email)
        amount = check_amount(amount + tip, currency)   # limits, the guard and the card: the whole charge
        configured = kiosk.config["kiosk"]["offline_behavior"]
        if behavior == "force_offline" and configured == "require_online":
            # `kiosk charge --offline` (or any caller) may not store what the vendor chose never to store
            return SaleResult(REFUSED, "this kiosk takes online sales only ([kiosk] offline_behavior = "
                                       "\"require_online\"): nothing stored")
        behavior = behavior or configured
        cancel = cancel or threading.Event()
        if customer is not None:
            customer = check_contact(customer)
        if card is not None:
            refuse_card_number(card, "test card name")     # it goes to the reader, and its error repeats it

        offline = behavior == "force_offline" or not kiosk.check_online()
        because = kiosk.health.offline_because() if offline and behavior != "force_offline" else None
        if offline and behavior == "require_online":
            return SaleResult(REFUSED, f"{OFFLINE_BECAUSE[because]} and this kiosk takes online sales only")
        offer = None        # the confirm step's offer, when the vendor was asked
        if offline:
            refusal = self.offline_refusal(amount, currency)
            if refusal is not None:
                return refusal
            if behavior == "prefer_online":
                offer = OfflineOffer(amount, currency, kiosk.effective_limits(currency), kiosk.stored(currency),
                                     customer=customer, because=because)
                if confirm is None or not confirm(offer):
                    return SaleResult(CANCELLED, "offline sale not confirmed; nothing stored")
                if offer.customer != customer:       # the vendor typed a contact on the confirm screen
                    customer = check_contact(offer.customer) if offer.customer else None

        try:
            card_result = kiosk.reader.read_card(amount, currency, offline, cancel, card)
        except ReaderError as exc:
            return SaleResult(REFUSED, f"reader: {exc}")
        except Exception as exc:   # a reader plugin's bug must not take the kiosk down
            log.exception("reader plugin failed in read_card")
            return SaleResult(REFUSED, f"reader failed ({type(exc).__name__}); nothing stored")
        crash_point("sale:after_card")
        if offline:
            # the card is known only now: the repeated-card guard runs before anything is stored
            repeats = self.repeated_card(card_result)
            if isinstance(repeats, SaleResult):
                return repeats
            if repeats and offer is not None:
                # the confirm step again, now with the warning (docs/plugins.md: "The repeated-card guard")
                offer.same_card, offer.same_card_max = repeats, kiosk.config["limits"]["same_card_max"]
                if not confirm(offer):
                    return SaleResult(CANCELLED, f"offline sale not confirmed ({offer.same_card_warning}); "
                                                 "nothing stored")
                if offer.customer != customer:
                    customer = check_contact(offer.customer) if offer.customer else None
        try:
            payment = self.store_sale(amount, currency, offline, card_result, customer,
                                      items=items, tip=tip, receipt_email=receipt_email)
        except (StoreAlarm, OSError) as exc:
            trouble = self.disk_trouble(exc)
            if trouble is None:
                raise
            # nothing was charged: the sale is stored before any attempt
            if trouble == disk_space.FULL:
                return SaleResult(REFUSED, "not stored — disk full: the card was not charged; free space on "
                                  "the data partition, then take the sale again", disk=NOT_STORED)
            return SaleResult(UNCONFIRMED, "the kiosk's card failed a write: this sale may be kept and charged "
                              "later — check `kiosk queue` before charging again; get the kiosk checked",
                              disk=MAYBE_STORED)
        crash_point("sale:after_store")
        if offline:
            kiosk.notify(notices.stored_offline(payment))
            self.mark_shown(payment)          # the caller shows it now; written later, off the sale path
            return SaleResult(APPROVED_OFFLINE, "approved offline — will be sent when back online", payment)
        return self.charge_now(payment)

    def offline_refusal(self, amount: int, currency: str) -> SaleResult | None:
        kiosk = self.kiosk
        info = kiosk.reader.info()
        if not info.supports_offline:
            return SaleResult(REFUSED, f"{info.name} cannot take payments offline; "
                                       "use a chip reader or wait until Stripe is reachable", limit="reader")
        try:
            limits = kiosk.effective_limits(currency)
        except Exception as exc:
            log.exception("offline-limits policy failed")
            return SaleResult(REFUSED, f"the offline-limits policy failed ({type(exc).__name__}); "
                                       "offline sales are refused until it is fixed", limit="policy")
        if limits is None:
            return SaleResult(REFUSED, f"no offline limit is set for {currency.upper()}; "
                                       "offline sales in it are refused", limit="currency")
        try:
            check_sale(amount, limits, kiosk.stored(currency))
        except LimitRefused as exc:
            kiosk.notify(notices.limit_reached(str(exc)))
            return SaleResult(REFUSED, str(exc), limit=exc.which)
        return None

    def repeated_card(self, card: CardResult) -> int | SaleResult:
        """How many offline sales ``card`` already has waiting, or the refusal
        when one more would be above ``[limits] same_card_max``."""
        kiosk = self.kiosk
        pending = same_card.pending_on_card(kiosk.store.live(), card)
        try:
            same_card.check_card(pending, kiosk.config["limits"]["same_card_max"])
        except LimitRefused as exc:
            kiosk.notify(notices.limit_reached(str(exc)))
            return SaleResult(REFUSED, str(exc), limit=exc.which)
        return pending

    def store_sale(self, amount, currency, offline, card: CardResult, customer, *, items=None, tip: int = 0,
                   receipt_email: str | None = None) -> Payment:
        """``amount`` is the whole charge, ``tip`` included."""
        kiosk = self.kiosk
        payment = Payment(id=new_payment_id(), amount=amount, currency=currency,
                          created_at=iso(kiosk.clock()), offline=offline,
                          card=Card(card.brand, card.last4, card.exp_month, card.exp_year),
                          token=card.token, reader=kiosk.reader.info().name, customer=customer,
                          unshown=offline,     # in the same write: cleared once "approved" has been shown
                          items=list(items or ()), tip=tip, receipt_email=receipt_email)
        states.prepared(payment, kiosk.sync.prepare(payment))
        kiosk.store.add(payment)                         # durable: key and request before any attempt
        kiosk.telling.payment_changed(payment, None)
        return payment

    def charge_now(self, payment: Payment) -> SaleResult:
        try:
            return self._charge_now(payment)
        except (StoreAlarm, OSError) as exc:
            trouble = self.disk_trouble(exc)
            if trouble is not None:
                return self.result_not_stored(payment, trouble)
            # the card may be charged and its answer not recorded: never "refused" (the vendor would
            # charge again); the sale is in the queue, and Stripe is asked before anything is resent
            self.kiosk.telling.alert_store(str(exc))
            return SaleResult(UNCONFIRMED, "not confirmed: the kiosk could not record Stripe's answer. "
                              "The sale is kept — do not charge the card again", payment)

    def disk_trouble(self, exc: BaseException) -> str | None:
        """The data partition refused a write (``disk_space.FULL`` or ``FAILING``): the vendor is told
        "disk full", never "storage damaged"; None for any other error."""
        kiosk = self.kiosk
        trouble = disk_space.disk_trouble(exc, kiosk.config.data_dir)
        if trouble is not None:
            log.debug("a write to the data partition failed: %s", exc)
            kiosk.notify(notices.disk_trouble(trouble == disk_space.FULL,
                                              disk_space.advice(trouble, kiosk.config.data_dir)))
        return trouble

    def result_not_stored(self, payment: Payment, trouble: str) -> SaleResult:
        """An online sale whose attempt or answer could not be written: what the
        queue holds says whether it was sent, and Stripe (asked, nothing written)
        whether it was charged.  Never "approved": that is not durable."""
        kiosk = self.kiosk
        why, when = (("the kiosk's disk is full", "once space is freed") if trouble == disk_space.FULL
                     else ("the kiosk's card failed a write", "once it can write again"))
        stored = kiosk.store.get(payment.id) or payment      # a write that failed left memory as the file is
        if stored.state == PENDING and not states.outcome_unknown(stored):
            return SaleResult(UNCONFIRMED, f"not charged yet: {why}. The sale is kept and charged {when} — "
                              "do not charge again", stored, disk=KEPT_NOT_CHARGED)
        try:
            outcome = kiosk.sync.lookup(stored)
        except Exception:        # a sync plugin's bug: the answer stays unknown, the sale kept
            log.exception("sync plugin failed in lookup")
            outcome = None
        kind = outcome.kind if outcome is not None else None
        if kind == "succeeded":
            return SaleResult(UNCONFIRMED, f"charged at Stripe — do not charge again. {why.capitalize()}: "
                              f"the sale is recorded {when}", stored, disk=CHARGED_NOT_STORED)
        if kind in ("declined", "declined_for_now"):
            return SaleResult(DECLINED, f"declined: {outcome.message} — not charged ({why}: recorded {when})",
                              stored)
        if kind == "not_found":
            return SaleResult(UNCONFIRMED, f"not charged yet: Stripe holds no charge for it and {why}. The sale "
                              f"is kept and charged {when} — do not charge again", stored, disk=KEPT_NOT_CHARGED)
        return SaleResult(UNCONFIRMED, f"not confirmed: sent to Stripe, and {why}, so its answer is not "
                          f"recorded; it settles {when} — do not charge again", stored, disk=SENT_NOT_STORED)

    def _charge_now(self, payment: Payment) -> SaleResult:
        kiosk = self.kiosk
        outcome = kiosk.forward_one(payment, tell=False, at_till=True)
        if outcome.kind == "retry" and (kiosk.store.get(payment.id) or payment).state == PENDING:
            # the answer was lost: ask Stripe what happened before telling the vendor anything
            outcome = kiosk.forward_one(payment, tell=False, lookup_only=True, at_till=True)
        payment = kiosk.store.get(payment.id) or payment
        if outcome.kind == "auth_error" and payment.state == PENDING:
            # the key was refused between the online check and the answer: stripe-python may have
            # retried a create Stripe had already charged, so this is not "not charged" -- keep it
            kiosk.telling.alert_key(outcome.message)
        if payment.state == SUCCEEDED:
            kiosk.notify(notices.approved(payment))
            return SaleResult(APPROVED, "approved", payment)
        if payment.state == FAILED:
            kiosk.notify(Notice(notices.SALE_DECLINED, "Declined" if payment.decline_code else "Not charged",
                                f"{payment.decline_code}: {payment.message}" if payment.decline_code
                                else payment.message, "warning", payment.public()))
            if not payment.decline_code:
                return SaleResult(REFUSED, payment.message, payment)
            return SaleResult(DECLINED, f"declined: {payment.message}", payment)
        # Stripe's answer is lost and the lookup could not settle it: the vendor must know
        states.told_interrupted(payment)
        kiosk.store.save(payment)
        kiosk.notify(notices.interrupted(payment, kiosk.zone))
        return SaleResult(UNCONFIRMED, "not confirmed: Stripe did not answer. The sale is kept and will be "
                                       "settled when Stripe answers — do not charge the card again until then",
                          payment)

    # -- at opening ------------------------------------------------------------

    def mark_shown(self, payment: Payment) -> None:
        """An offline sale the vendor has seen approved.  Kept in memory and
        written later (:meth:`write_shown`), never on the sale path: a sale
        costs one fsync."""
        with self._shown_lock:
            self._shown.add(payment.id)

    def write_shown(self) -> None:
        """Record which offline sales were seen approved (background passes,
        close).  A kill before this only means one extra "may not have been
        shown" notice at the next start -- never a silent one."""
        with self._shown_lock:
            shown, self._shown = self._shown, set()
        store = self.kiosk.store
        for payment_id in sorted(shown):
            payment = store.get(payment_id)
            if payment is not None and payment.unshown and not payment.settled:
                states.seen_approved(payment)
                store.save(payment)

    def tell_interrupted_sales(self) -> None:
        """A sale the kiosk died in the middle of: an online one whose answer
        was lost, or an offline one stored but perhaps never shown approved.
        Tell the vendor once, before it is settled, so the card is not taken again."""
        kiosk = self.kiosk
        for payment in kiosk.store.live():
            if payment.interrupted_told or (payment.offline and not payment.unshown) or payment.is_refund:
                continue        # (a refund is sent by the next pass, and its own notice tells how it ended)
            states.told_interrupted(payment)
            try:
                kiosk.store.save(payment)
            except (StoreAlarm, OSError) as exc:
                if disk_space.disk_trouble(exc, kiosk.config.data_dir) is None:
                    raise
                # a full disk must not stop the kiosk opening: told now, and again at the next start
            kiosk.notify(notices.offline_interrupted(payment, kiosk.zone) if payment.offline
                         else notices.interrupted(payment, kiosk.zone))
