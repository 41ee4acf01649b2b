"""The requests the kiosk sends Stripe, in the shape of one API version.

Every request is built here and nowhere else, so the shape the kiosk speaks
is one page to read (docs/stripe.md explains each choice).  ``upgrade``
brings a request an earlier release stored to today's shape.  No I/O.
"""
from __future__ import annotations

# The API version stripe-python 16.1 is generated for (its stripe/params types
# describe exactly this version).  Sent explicitly on every request, so the
# wire cannot change under a vendor when the library is updated; a test fails
# if the pinned library speaks another.
API_VERSION = "2026-10-28.endive"

# A token from the reader is a card: allow only that payment method type, so
# Stripe needs no return_url and never offers a redirect the kiosk cannot follow.
CARD_ONLY = ["card"]


# Stripe's limits: a PaymentIntent's description, and any one metadata value
DESCRIPTION_MAX, METADATA_VALUE_MAX = 1000, 500


def create_params(*, amount: int, currency: str, token: str, metadata: dict, description: str = "",
                  receipt_email: str | None = None) -> dict:
    """POST /v1/payment_intents: create and confirm at once with the reader's token.
    ``description`` (what was sold) and ``receipt_email`` (Stripe e-mails its receipt
    once the payment succeeds) only when there are some: a bare sale's request is unchanged."""
    extras: dict = {}
    if description:
        extras["description"] = description[:DESCRIPTION_MAX]
    if receipt_email:
        extras["receipt_email"] = receipt_email
    return {
        "amount": amount,
        "currency": currency,
        "payment_method": token,
        "confirm": True,
        "allowed_payment_method_types": list(CARD_ONLY),
        # fail the attempt instead of leaving it waiting for 3-D Secure: nobody is there to authenticate
        "error_on_requires_action": True,
        "metadata": metadata,
        **extras,
    }


def confirm_params(create: dict) -> dict:
    """POST /v1/payment_intents/{id}/confirm: try the sale's card again on its own PaymentIntent."""
    return {"payment_method": create["payment_method"], "error_on_requires_action": True}


def cancel_params() -> dict:
    """POST /v1/payment_intents/{id}/cancel: one the kiosk cannot finish (it asks for 3-D Secure)."""
    return {"cancellation_reason": "abandoned"}


def list_params(since: int, starting_after: str | None = None) -> dict:
    """GET /v1/payment_intents: the lookup of an attempt whose answer was lost."""
    params: dict = {"limit": 100, "created": {"gte": since}}
    if starting_after:
        params["starting_after"] = starting_after
    return params


# Stripe's own words for a refund the customer asked for (RefundCreateParams.reason)
REFUND_REASON = "requested_by_customer"


def refund_params(*, payment_intent: str, amount: int, metadata: dict) -> dict:
    """POST /v1/refunds: give back ``amount`` (Stripe's units) of the sale's PaymentIntent."""
    return {"payment_intent": payment_intent, "amount": amount, "reason": REFUND_REASON, "metadata": metadata}


def refund_list_params(payment_intent: str, starting_after: str | None = None) -> dict:
    """GET /v1/refunds: a sale's refunds, for the lookup of one whose answer was lost."""
    params: dict = {"payment_intent": payment_intent, "limit": 100}
    if starting_after:
        params["starting_after"] = starting_after
    return params


def idempotency_key(payment_id: str) -> str:
    return f"kiosk-{payment_id}"


def confirm_key(base: str, round_: int) -> str:
    """One key per retry round (the stored count of declines for now): a
    confirm resent after a crash or a lost answer is the same request, which
    Stripe replays instead of trying the card again."""
    return f"{base}-confirm-{round_}"


def step_key(base: str, step: str) -> str:
    """Cancel and capture: once per PaymentIntent (Stripe's own state makes a second one a no-op)."""
    return f"{base}-{step}"


def upgrade(params: dict) -> dict | None:
    """Today's shape of a create request an earlier release stored, or None
    if it is already today's.  Amount, currency, card and metadata never
    change, so the idempotency key stays valid: the old shape (0.1.0 sent
    ``payment_method_types``) was refused by this API version's validation,
    and Stripe saves no idempotent result for a request that failed validation."""
    if not params.get("amount") or "payment_intent" in params:
        return None              # not a PaymentIntent create request (a refund's): nothing to bring forward
    if "payment_method_types" not in params and "error_on_requires_action" in params \
            and "allowed_payment_method_types" in params:
        return None
    new = {k: v for k, v in params.items() if k != "payment_method_types"}
    types = params.get("payment_method_types") or CARD_ONLY
    new.setdefault("allowed_payment_method_types", list(types))
    if new.get("confirm"):
        new.setdefault("error_on_requires_action", True)
    return new
