"""What each answer Stripe gives means for a payment.

Stripe's errors (``stripe.StripeError`` subclasses), PaymentIntent and
Refund statuses become :class:`kiosk.interfaces.Outcome` values here, following
Stripe's docs on declines (``decline_code``, ``advice_code``), error handling
the PaymentIntent lifecycle and refunds.  docs/stripe.md has the whole table.  No I/O.
"""
from __future__ import annotations

import stripe

from kiosk import Outcome

# Decline codes Stripe's docs answer with "attempt the payment again": the
# issuer could not decide now, so a later try may be approved.
TRY_AGAIN_CODES = frozenset({
    "try_again_later", "processing_error", "issuer_not_available", "reenter_transaction",
    "approve_with_id",
})

# Declines that are final whatever the advice: the card will not be approved
# again (Visa's category 1, Mastercard's merchant advice codes 03 and 21 --
# retrying these is penalised), or it needs the customer, who has gone.
NEVER_RETRY_CODES = frozenset({
    "lost_card", "stolen_card", "pickup_card", "fraudulent", "merchant_blacklist", "restricted_card",
    "invalid_account", "new_account_information_available", "revocation_of_all_authorizations",
    "revocation_of_authorization", "stop_payment_order", "security_violation", "expired_card",
    "incorrect_number", "invalid_number", "incorrect_cvc", "invalid_cvc", "incorrect_pin", "invalid_pin",
    "insufficient_funds", "authentication_required", "card_not_supported", "currency_not_supported",
    "transaction_not_allowed", "testmode_decline", "do_not_try_again",
})

# advice_code values (Stripe: "declines/card#retrying-issuer-declines")
ADVICE_TRY_AGAIN = "try_again_later"
ADVICE_FINAL = frozenset({"do_not_try_again", "confirm_card_data"})

AUTHENTICATION = ("the card asks the customer to authenticate (3-D Secure), which a kiosk cannot do: "
                  "ask for another card or another way to pay")


def is_try_again(decline_code: str | None, advice_code: str | None) -> bool:
    """May a later try of this decline be approved?"""
    if advice_code in ADVICE_FINAL or decline_code in NEVER_RETRY_CODES:
        return False
    return advice_code == ADVICE_TRY_AGAIN or decline_code in TRY_AGAIN_CODES


def error_body(exc: stripe.StripeError) -> dict:
    """The ``error`` object exactly as Stripe sent it."""
    body = exc.json_body if isinstance(exc.json_body, dict) else {}
    return body.get("error") if isinstance(body.get("error"), dict) else {}


def declined(decline_code: str | None, advice_code: str | None, message: str | None,
             payment_intent: str | None, charge: str | None = None) -> Outcome:
    code = decline_code or "card_declined"
    if code == "authentication_required":
        message = AUTHENTICATION
    kind = "declined_for_now" if is_try_again(code, advice_code) else "declined"
    return Outcome(kind, payment_intent=payment_intent, decline_code=code, advice_code=advice_code,
                   message=(message or "The card was declined.").splitlines()[0], attempt=charge)


def from_card_error(exc: stripe.CardError) -> Outcome:
    error = error_body(exc)
    intent = error.get("payment_intent")
    intent_id = intent.get("id") if isinstance(intent, dict) else intent
    return declined(error.get("decline_code") or exc.code, error.get("advice_code"),
                    error.get("message") or exc.user_message, intent_id, error.get("charge"))


def request_rejected(exc: stripe.InvalidRequestError) -> Outcome:
    """A 400/404 about our own request: never the customer's fault, never a decline."""
    error = error_body(exc)
    code = error.get("code") or exc.code
    param = error.get("param")
    what = (exc.user_message or "invalid request").splitlines()[0]
    if param and param.startswith("payment_method"):
        # Stripe's text quotes the value: a card token never goes into a notice or a log
        what = "No such PaymentMethod" if code == "resource_missing" else "the card token was refused"
    if code == "resource_missing" and param == "payment_method":
        # the reader's token belongs to another Stripe account (or none): a setting, not the customer
        return Outcome("request_rejected", message=f"Stripe does not know the reader's card token ({what}): "
                                                   "the reader and the Stripe key must belong to one account")
    detail = ", ".join(part for part in (code, f"param {param}" if param else None) if part)
    return Outcome("request_rejected", message=f"Stripe refused the kiosk's request: {what}"
                                               + (f" ({detail})" if detail else ""))


def from_error(exc: stripe.StripeError) -> Outcome:
    """Any error but a card decline, an idempotency clash or an unexpected state
    (``send`` deals with those itself)."""
    if isinstance(exc, (stripe.AuthenticationError, stripe.PermissionError)):
        detail = (exc.user_message or "").splitlines()[0] if isinstance(exc, stripe.PermissionError) else ""
        return Outcome("auth_error", message="Stripe rejected the API key" + (f": {detail}" if detail else ""))
    if isinstance(exc, stripe.RateLimitError):
        # 429: Stripe did not act (stripe-python retries one itself only when Stripe says
        # Stripe-Should-Retry, as for lock_timeout)
        return Outcome("retry", message="Stripe is busy (rate limit); trying again later")
    if isinstance(exc, stripe.APIConnectionError):
        return Outcome("retry", message="Stripe could not be reached")
    if isinstance(exc, stripe.InvalidRequestError) and (exc.http_status or 400) < 500:
        return request_rejected(exc)
    # 409 and 5xx (stripe-python already retried them with the same key), anything else
    return Outcome("retry", message="Stripe had a problem; trying again later")


def from_intent(intent: dict) -> Outcome:
    """A PaymentIntent as Stripe holds it.  Statuses the kiosk must act on
    (requires_action, requires_capture, requires_confirmation and
    requires_payment_method) are ``not_found`` with the intent's id: nothing
    is charged yet, and ``send`` continues that PaymentIntent."""
    status = intent.get("status")
    intent_id = intent.get("id")
    if status == "succeeded":
        return Outcome("succeeded", payment_intent=intent_id)
    if status == "processing":
        return Outcome("retry", payment_intent=intent_id, message="Stripe is still processing the payment")
    if status == "canceled":
        reason = intent.get("cancellation_reason")
        if reason == "abandoned":     # what the kiosk itself sends when a card asks for 3-D Secure
            return Outcome("refused", payment_intent=intent_id,
                           message=f"the payment was cancelled at Stripe (abandoned): {AUTHENTICATION}")
        return Outcome("refused", payment_intent=intent_id,
                       message="the payment was cancelled at Stripe" + (f" ({reason})" if reason else ""))
    return Outcome("not_found", payment_intent=intent_id, message=f"Stripe holds it as {status}")


def last_error(intent: dict) -> Outcome | None:
    """The decline recorded on a PaymentIntent that asks for a payment method."""
    error = intent.get("last_payment_error") or {}
    if intent.get("status") != "requires_payment_method" or not error:
        return None
    return declined(error.get("decline_code") or error.get("code"), error.get("advice_code"),
                    error.get("message"), intent.get("id"), error.get("charge"))


def uncounted_decline(intent: dict, counted: str | None) -> Outcome | None:
    """The decline a PaymentIntent records, unless the kiosk has counted it
    already (``counted``: the attempt of the last decline it recorded).  A
    final decline always settles the sale; one for now is counted once, so a
    confirm whose answer was lost still counts against the retry bound."""
    declined = last_error(intent)
    if declined is None or declined.kind == "declined":
        return declined
    return None if declined.attempt == counted else declined


# -- refunds ---------------------------------------------------------------------

# Stripe refusing a refund for what the sale allows (not for the shape of our request):
# fully refunded already, more than is left, a disputed charge.  Final for that refund,
# and the vendor's business, not a kiosk bug: never ``request_rejected``.
REFUND_REFUSED_CODES = frozenset({
    "charge_already_refunded", "amount_too_large", "charge_disputed", "refund_disputed_payment",
})
# Stripe answers some of those (no successful charge to refund...) with no code, naming the parameter
REFUND_REFUSED_PARAMS = frozenset({"amount", "payment_intent", "charge"})


def refund_refused(exc: stripe.InvalidRequestError, payment_intent: str | None) -> Outcome | None:
    """A refund Stripe will not make for this sale, or None if the error is about our request."""
    if (exc.http_status or 400) >= 500:
        return None
    error = error_body(exc)
    code = error.get("code") or exc.code
    if code not in REFUND_REFUSED_CODES and (code or error.get("param") not in REFUND_REFUSED_PARAMS):
        return None
    why = (error.get("message") or exc.user_message or "the refund was refused").splitlines()[0]
    return Outcome("refused", payment_intent=payment_intent, decline_code=code,
                   message=f"Stripe refused the refund: {why}")


def from_refund(refund: dict, payment_intent: str | None) -> Outcome:
    """A refund as Stripe holds it (``payment_intent``: the sale's, which the record keeps)."""
    status, refund_id = refund.get("status"), refund.get("id")
    if status == "succeeded":
        return Outcome("succeeded", payment_intent=payment_intent, refund=refund_id, message="refunded")
    if status == "pending":
        # Stripe has taken it, but it may still fail at the card network (the money then goes back to
        # the charge and the customer gets nothing): not final; later passes look it up by its id
        reason = refund.get("pending_reason")
        return Outcome("retry", payment_intent=payment_intent, refund=refund_id,
                       message="refund accepted by Stripe, still pending with the card network"
                               + (f" ({reason})" if reason else ""))
    if status in ("failed", "canceled"):
        reason = refund.get("failure_reason")
        return Outcome("refused", payment_intent=payment_intent, refund=refund_id, decline_code=reason,
                       message=f"the refund {status} at Stripe" + (f": {reason}" if reason else ""))
    # requires_action (never for a card) or a status newer than this release: ask again later
    return Outcome("retry", payment_intent=payment_intent, refund=refund_id,
                   message=f"Stripe holds the refund as {status}")


def refunds_not_permitted(exc: stripe.PermissionError) -> Outcome:
    """403 on a refund: a restricted key without Refunds: Write.  The refund
    waits for the permission; it must not stop the sales (auth_error would)."""
    detail = (exc.user_message or "").splitlines()[0] if exc.user_message else ""
    return Outcome("retry", message="the Stripe key may not make refunds: give it Refunds: Write"
                                    + (f" ({detail})" if detail else ""))
