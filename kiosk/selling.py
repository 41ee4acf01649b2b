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

from . import notices
from . import payment_states as states
from .faults import crash_point
from .interfaces import CardResult, ReaderError, StoreAlarm
from .limits import History, LimitRefused, Limits, Stored, base_limits, check_sale
from .money import check_amount, currency_code
from .notices import Notice
from .payment import FAILED, PENDING, SUCCEEDED, Card, Payment, iso, new_payment_id, parse_iso
from .sale_result import (APPROVED, APPROVED_OFFLINE, CANCELLED, DECLINED, REFUSED, UNCONFIRMED,
                          OfflineOffer, SaleResult, check_contact)

log = logging.getLogger("kiosk.engine")     # the engine's log lines keep their name


class Selling:
    def __init__(self, kiosk):
        self.kiosk = kiosk

    # -- limits --------------------------------------------------------------

    def history(self) -> History:
        kiosk = self.kiosk
        now = kiosk.clock()
        last = parse_iso(kiosk.store.get_meta("last_sync_at") or kiosk.store.get_meta("initialized_at"))
        live = kiosk.store.live()
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
        live = self.kiosk.store.live()
        return Stored(amount=sum(p.amount for p in live if p.currency == currency), count=len(live))

    # -- a sale --------------------------------------------------------------

    def take_sale(self, amount: int, currency: str | None = None, *, behavior: str | None = None,
                  confirm=None, customer: str | None = None, card: str | None = None,
                  cancel: threading.Event | None = None) -> SaleResult:
        """Take one sale through the reader.  ``confirm(offer) -> bool`` is asked
        before an offline sale in ``prefer_online``; without it the sale is refused."""
        kiosk = self.kiosk
        currency = currency_code(currency or kiosk.config.currency)
        check_amount(amount, currency)
        configured = kiosk.config["kiosk"]["offline_behavior"]
        if behavior == "force_offline" and configured == "require_online":
            # `kiosk charge --offline` (or any caller) may not store what the vendor chose never to store
            return SaleResult(REFUSED, "this kiosk takes online sales only ([kiosk] offline_behavior = "
                                       "\"require_online\"): nothing stored")
        behavior = behavior or configured
        cancel = cancel or threading.Event()
        if customer is not None:
            customer = check_contact(customer)

        offline = behavior == "force_offline" or not kiosk.check_online()
        if offline and behavior == "require_online":
            return SaleResult(REFUSED, "Stripe cannot be reached and this kiosk takes online sales only")
        if offline:
            refusal = self.offline_refusal(amount, currency)
            if refusal is not None:
                return refusal
            if behavior == "prefer_online":
                offer = OfflineOffer(amount, currency, kiosk.effective_limits(currency), kiosk.stored(currency),
                                     customer=customer)
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
        payment = self.store_sale(amount, currency, offline, card_result, customer)
        crash_point("sale:after_store")
        if offline:
            kiosk.notify(notices.stored_offline(payment))
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

    def store_sale(self, amount, currency, offline, card: CardResult, customer) -> Payment:
        kiosk = self.kiosk
        payment = Payment(id=new_payment_id(), amount=amount, currency=currency,
                          created_at=iso(kiosk.clock()), offline=offline,
                          card=Card(card.brand, card.last4, card.exp_month, card.exp_year),
                          token=card.token, reader=kiosk.reader.info().name, customer=customer)
        states.prepared(payment, kiosk.sync.prepare(payment))
        kiosk.store.add(payment)                         # durable: key and request before any attempt
        kiosk.telling.payment_changed(payment, None)
        return payment

    def charge_now(self, payment: Payment) -> SaleResult:
        try:
            return self._charge_now(payment)
        except (StoreAlarm, OSError) as exc:
            # the card may be charged and its answer not recorded: never "refused" (the vendor would
            # charge again); the sale is in the queue, and Stripe is asked before anything is resent
            self.kiosk.telling.alert_store(str(exc))
            return SaleResult(UNCONFIRMED, "not confirmed: the kiosk could not record Stripe's answer. "
                              "The sale is kept — do not charge the card again", payment)

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
        kiosk.notify(notices.interrupted(payment))
        return SaleResult(UNCONFIRMED, "not confirmed: Stripe did not answer. The sale is kept and will be "
                                       "settled when Stripe answers — do not charge the card again until then",
                          payment)

    # -- at opening ------------------------------------------------------------

    def tell_interrupted_sales(self) -> None:
        """An online sale the kiosk died in the middle of: the customer never
        saw "approved".  Tell the vendor once, before it is settled."""
        kiosk = self.kiosk
        for payment in kiosk.store.live():
            if payment.offline or payment.interrupted_told:
                continue
            states.told_interrupted(payment)
            kiosk.store.save(payment)
            kiosk.notify(notices.interrupted(payment))
