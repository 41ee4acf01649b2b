"""Tests for kiosk.testing.stripe_contract against the types stripe-python really generates."""

from __future__ import annotations

import string
import urllib.parse

import pytest
import stripe
from hypothesis import HealthCheck, given, settings, strategies as st
from stripe._api_version import _ApiVersion
from stripe._encode import _api_encode
from stripe._request_options import RequestOptions

from kiosk.testing import stripe_contract as contract
from kiosk.testing.fake_stripe import FakeStripe, parse_form

pytestmark = pytest.mark.timeout(60)

KEY = "sk_test_contract_4242"
CREATE = "/v1/payment_intents"
CONFIRM = "/v1/payment_intents/pi_123/confirm"


def wire(params: dict) -> dict:
    """What the checker sees: stripe-python's own encoding, decoded as the fake does."""
    return parse_form(urllib.parse.urlencode(list(_api_encode(params))))


def check_create(**params) -> contract.Breach | None:
    return contract.check("POST", CREATE, wire({"amount": 1250, "currency": "usd", **params}))


def breach_of(**params) -> tuple[str, str, str]:
    b = check_create(**params)
    assert b is not None, params
    return b.code, b.param, b.message


# -- what the module is pinned to ------------------------------------------------------------

def test_api_version_is_the_one_stripe_python_sends():
    assert contract.API_VERSION == _ApiVersion.CURRENT == "2026-10-28.endive"


# -- routes are read from the service class -------------------------------------------------------

@pytest.mark.parametrize("operation,method,template,params_type", [
    ("create", "POST", "/v1/payment_intents", "PaymentIntentCreateParams"),
    ("list", "GET", "/v1/payment_intents", "PaymentIntentListParams"),
    ("retrieve", "GET", "/v1/payment_intents/{intent}", "PaymentIntentRetrieveParams"),
    ("update", "POST", "/v1/payment_intents/{intent}", "PaymentIntentUpdateParams"),
    ("confirm", "POST", "/v1/payment_intents/{intent}/confirm", "PaymentIntentConfirmParams"),
    ("cancel", "POST", "/v1/payment_intents/{intent}/cancel", "PaymentIntentCancelParams"),
    ("capture", "POST", "/v1/payment_intents/{intent}/capture", "PaymentIntentCaptureParams"),
    ("search", "GET", "/v1/payment_intents/search", "PaymentIntentSearchParams"),
])
def test_routes_are_derived_from_the_service(operation, method, template, params_type):
    by_op = {r.operation: r for r in contract.routes()}
    route = by_op[operation]
    assert (route.service, route.method, route.template) == \
        ("PaymentIntentService", method, template)
    assert route.params_type is getattr(stripe.params, params_type)


def test_no_async_twins_and_every_public_operation_is_routed():
    ops = {r.operation for r in contract.routes()}
    assert not any(op.endswith("_async") for op in ops)
    public = {name for name in vars(stripe.PaymentIntentService)
              if not name.startswith("_") and not name.endswith("_async")
              and callable(getattr(stripe.PaymentIntentService, name))}
    assert public <= ops


def test_another_service_can_be_added_by_name():
    routes = contract.routes(("PaymentIntentService", "SetupIntentService"))
    assert {(r.service, r.operation) for r in routes} >= {
        ("SetupIntentService", "create"), ("SetupIntentService", "confirm")}
    m = contract.match("POST", "/v1/setup_intents/seti_1/confirm",
                       ("PaymentIntentService", "SetupIntentService"))
    assert m.route.params_type is stripe.params.SetupIntentConfirmParams


def test_match_prefers_literal_paths_and_decodes_ids():
    assert contract.match("GET", "/v1/payment_intents/search").route.operation == "search"
    m = contract.match("POST", "/v1/payment_intents/pi_a%2Fb/cancel")
    assert m.route.operation == "cancel" and m.path_params == {"intent": "pi_a/b"}
    assert contract.match("GET", "/v1/payment_intents/pi_1").route.operation == "retrieve"
    assert contract.match("POST", "/v1/payment_intents/pi_1").route.operation == "update"
    assert contract.match("DELETE", "/v1/payment_intents/pi_1") is None
    assert contract.match("GET", "/v1/charges") is None
    assert contract.check("POST", "/v1/charges", {"anything": "x"}) is None   # not ours: a 404


def test_routes_match_the_paths_stripe_python_really_calls():
    """Every SDK call lands on the route of the same name (the fake records the path)."""
    calls = {
        "create": lambda c: c.v1.payment_intents.create(params={"amount": 50, "currency": "usd"}),
        "list": lambda c: c.v1.payment_intents.list(),
        "retrieve": lambda c: c.v1.payment_intents.retrieve("pi_x"),
        "update": lambda c: c.v1.payment_intents.update("pi_x"),
        "confirm": lambda c: c.v1.payment_intents.confirm("pi_x"),
        "cancel": lambda c: c.v1.payment_intents.cancel("pi_x"),
        "capture": lambda c: c.v1.payment_intents.capture("pi_x"),
        "search": lambda c: c.v1.payment_intents.search(params={"query": "status:'succeeded'"}),
    }
    with FakeStripe(rate_limit=0) as fake:
        client = stripe.StripeClient(KEY, base_addresses={"api": fake.url})
        for operation, call in calls.items():
            try:
                call(client)
            except stripe.InvalidRequestError:
                pass   # 404s: the route is what counts here
        seen = [(r["method"], r["path"]) for r in fake.requests]
    assert [contract.match(m, p).route.operation for m, p in seen] == list(calls)


# -- parameters: names ---------------------------------------------------------------------------

def test_request_options_are_never_wire_parameters():
    create = contract.schema(stripe.params.PaymentIntentCreateParams)
    assert set(RequestOptions.__annotations__) <= set(
        stripe.params.PaymentIntentCreateParams.__annotations__)   # why they must be left out
    assert not set(RequestOptions.__annotations__) & set(create.fields)
    for key in RequestOptions.__annotations__:
        b = contract.check("POST", CREATE, {"amount": "1250", "currency": "usd", key: "x"})
        assert (b.code, b.param) == ("parameter_unknown", key)


def test_unknown_top_level_parameter():
    assert breach_of(bogus="1") == (
        "parameter_unknown", "bogus", "Received unknown parameter: bogus")


def test_unknown_nested_parameter_is_named_with_its_bracket_path():
    code, param, message = breach_of(automatic_payment_methods={"enabled": True,
                                                                "allow_redirect": "never"})
    assert (code, param) == ("parameter_unknown", "automatic_payment_methods[allow_redirect]")
    assert message == ("Received unknown parameter: automatic_payment_methods[allow_redirect]. "
                       "Did you mean allow_redirects?")
    code, param, _ = breach_of(payment_method_options={"card": {"request_three_d_secure": "any",
                                                                 "bogus": "1"}})
    assert (code, param) == ("parameter_unknown", "payment_method_options[card][bogus]")


def test_unknown_parameter_inside_a_list_of_hashes():
    item = {"product_name": "Coffee", "quantity": 1, "unit_cost": 300, "colour": "brown"}
    code, param, _ = breach_of(amount_details={"line_items": [item]})
    assert (code, param) == ("parameter_unknown", "amount_details[line_items][0][colour]")


def test_missing_required_parameters():
    b = contract.check("POST", CREATE, wire({"currency": "usd"}))
    assert (b.code, b.param, b.message) == (
        "parameter_missing", "amount", "Missing required param: amount.")
    assert breach_of(automatic_payment_methods={"allow_redirects": "never"})[:2] == (
        "parameter_missing", "automatic_payment_methods[enabled]")
    assert breach_of(amount_details={"line_items": [{"quantity": 1, "unit_cost": 3}]})[:2] == (
        "parameter_missing", "amount_details[line_items][0][product_name]")


def test_payment_method_types_was_removed_in_endive():
    for path in (CREATE, CONFIRM, "/v1/payment_intents/pi_123"):
        b = contract.check("POST", path, wire({"amount": 1250, "currency": "usd",
                                               "payment_method_types": ["card"]}))
        assert (b.code, b.param, b.status) == (
            "payment_method_types_no_longer_supported", "payment_method_types", 400)
    b = contract.check("GET", CREATE, wire({"payment_method_types": ["card"]}))
    assert b.code == "parameter_unknown"   # list never took it: just unknown


# -- parameters: values ----------------------------------------------------------------------------

@pytest.mark.parametrize("amount", ["12.50", "abc", "1e3", " 12"])
def test_bad_integer(amount):
    assert breach_of(amount=amount) == (
        "parameter_invalid_integer", "amount", f"Invalid integer: {amount}")


def test_integers_parse_like_stripe_python_sends_them():
    assert check_create(amount=-5) is None   # a range is the endpoint's business, not the type's
    assert check_create(amount_details={"line_items": [
        {"product_name": "Tea", "quantity": 2, "unit_cost": 150}]}) is None


@pytest.mark.parametrize("value", ["maybe", "True", "1", "yes"])
def test_bad_boolean(value):
    assert breach_of(confirm=value) == ("parameter_invalid_boolean", "confirm",
                                        f"Invalid boolean: {value}")


def test_booleans_as_stripe_python_encodes_them():
    assert wire({"confirm": True, "use_stripe_sdk": False}) == {
        "confirm": "true", "use_stripe_sdk": "false"}
    assert check_create(confirm=True, use_stripe_sdk=False) is None


def test_enum_is_the_closed_literal_set_despite_the_str_in_the_type():
    annotation = stripe.params.PaymentIntentCreateParams.__annotations__["capture_method"]
    assert "|str" in str(annotation)     # the SDK's forward-compatibility escape hatch
    assert breach_of(capture_method="later") == (
        "parameter_invalid_enum", "capture_method",
        "Invalid capture_method: must be one of automatic, automatic_async, or manual")
    for value in ("automatic", "automatic_async", "manual"):
        assert check_create(capture_method=value) is None


def test_bool_or_enum():
    for value in (True, False, "one_off", "recurring"):
        assert check_create(confirm=True, off_session=value) is None
    assert breach_of(off_session="sometimes")[0] == "parameter_invalid_enum"


def test_list_of_enums():
    assert check_create(allowed_payment_method_types=["card", "link"]) is None
    code, param, message = breach_of(allowed_payment_method_types=["card", "cardd"])
    assert (code, param) == ("parameter_invalid_enum", "allowed_payment_method_types[1]")
    assert message.startswith(
        "Invalid allowed_payment_method_types[1]: must be one of acss_debit, ")
    assert breach_of(excluded_payment_method_types=["paypal", "nope"])[1] == \
        "excluded_payment_method_types[1]"


def test_literal_empty_string_unsets():
    confirm = {"receipt_email": "", "mandate_data": "", "shipping": ""}
    assert contract.check("POST", CONFIRM, wire(confirm)) is None
    assert contract.check("POST", "/v1/payment_intents/pi_1", wire({"metadata": ""})) is None


def test_empty_strings_where_nothing_can_be_unset():
    code, param, message = breach_of(description="")
    assert (code, param) == ("parameter_invalid_empty", "description")
    assert message.startswith("You passed an empty string for 'description'.")
    b = contract.check("POST", CREATE, {"amount": "1250", "currency": ""})
    assert (b.code, b.param) == ("parameter_invalid_string_empty", "currency")
    assert breach_of(description="   ")[:2] == ("parameter_invalid_string_blank", "description")


def test_metadata_takes_any_keys_and_string_values():
    assert check_create(metadata={"kiosk_payment_id": "kp-1", "0": "zero", "a b": "c&d=e",
                                  "unset me": ""}) is None
    assert breach_of(metadata="kp-1")[:2] == ("parameter_invalid_type", "metadata")
    b = contract.check("POST", CREATE, {"amount": "1", "currency": "usd",
                                        "metadata": {"k": {"nested": "x"}}})
    assert (b.code, b.param) == ("parameter_invalid_type", "metadata[k]")


def test_scalar_where_hash_or_list_belongs_and_the_other_way_round():
    assert breach_of(automatic_payment_methods="true") == (
        "parameter_invalid_type", "automatic_payment_methods", "Invalid hash")
    assert breach_of(allowed_payment_method_types="card") == (
        "parameter_invalid_type", "allowed_payment_method_types", "Invalid array")
    assert breach_of(amount={"value": 5})[:2] == ("parameter_invalid_type", "amount")
    assert breach_of(description=["a", "b"])[:2] == ("parameter_invalid_type", "description")
    b = contract.check("GET", CREATE, wire({"expand": "latest_charge"}))
    assert (b.code, b.param, b.message) == ("parameter_invalid_type", "expand", "Invalid array")


def test_union_of_integer_and_hash():
    for created in (1_700_000_000, {"gte": 1_700_000_000, "lt": 1_800_000_000}):
        assert contract.check("GET", CREATE, wire({"created": created, "limit": 100})) is None
    b = contract.check("GET", CREATE, wire({"created": {"between": 5}}))
    assert (b.code, b.param) == ("parameter_unknown", "created[between]")
    b = contract.check("GET", CREATE, wire({"created": "yesterday"}))
    assert (b.code, b.message) == ("parameter_invalid_integer", "Invalid integer: yesterday")


def test_the_kiosks_request_shape_holds():
    create = {"amount": 1250, "currency": "usd", "payment_method": "pm_card_visa",
              "confirm": True, "allowed_payment_method_types": ["card"],
              "error_on_requires_action": True,
              "metadata": {"kiosk_payment_id": "kp-1", "kiosk_id": "kiosk-1"}}
    assert contract.check("POST", CREATE, wire(create)) is None
    assert contract.check("POST", CONFIRM, wire({"payment_method": "pm_card_visa",
                                                 "error_on_requires_action": True})) is None
    assert contract.check("POST", "/v1/payment_intents/pi_1/cancel",
                          wire({"cancellation_reason": "abandoned"})) is None
    assert contract.check("GET", CREATE, wire({"limit": 100, "created": {"gte": 5},
                                               "starting_after": "pi_1"})) is None


# -- what is answered -----------------------------------------------------------------------------

def test_breach_error_object():
    b = check_create(bogus="1")
    assert b.status == 400 and b.type == "invalid_request_error"
    assert b.error == {"type": "invalid_request_error", "code": "parameter_unknown",
                       "param": "bogus", "message": "Received unknown parameter: bogus",
                       "doc_url": "https://stripe.com/docs/error-codes/parameter-unknown"}
    own = check_create(confirm="maybe")
    assert own.code in contract.OWN_CODES and "doc_url" not in own.error


def test_version_check():
    assert contract.check_version(None) is None
    assert contract.check_version(contract.API_VERSION) is None
    b = contract.check_version("2025-01-27.acacia")
    assert (b.status, b.code, b.param) == (400, "api_version_invalid", None)
    assert "2025-01-27.acacia" in b.message and contract.API_VERSION in b.message
    assert contract.check_version("2025-01-27.acacia", "2025-01-27.acacia") is None


def test_the_checker_sees_what_a_real_client_puts_on_the_wire():
    with FakeStripe(rate_limit=0) as fake:
        client = stripe.StripeClient(KEY, base_addresses={"api": fake.url})
        sent = {"amount": 1250, "currency": "usd", "payment_method": "pm_card_visa",
                "confirm": True, "automatic_payment_methods": {"enabled": True,
                                                               "allow_redirect": "never"}}
        with pytest.raises(stripe.InvalidRequestError) as ei:
            client.v1.payment_intents.create(params=sent)
        on_wire = fake.requests[0]["params"]
    assert ei.value.http_status == 400 and ei.value.code == "parameter_unknown"
    assert ei.value.param == "automatic_payment_methods[allow_redirect]"
    assert on_wire == wire(sent) == {
        "amount": "1250", "currency": "usd", "payment_method": "pm_card_visa",
        "confirm": "true", "automatic_payment_methods": {"enabled": "true",
                                                         "allow_redirect": "never"}}
    assert fake.breaches == [{"method": "POST", "path": CREATE, "code": "parameter_unknown",
                              "param": "automatic_payment_methods[allow_redirect]",
                              "message": ei.value.user_message}]
    assert fake.requests[0]["stripe_version"] == contract.API_VERSION


# -- round trip: anything valid per the types passes ---------------------------------------------

_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12).filter(
    lambda s: s.strip() != "")
_KEYS = st.text(string.ascii_letters + string.digits + "_ ", min_size=1, max_size=10)
_MAX_DEPTH = 4


def _values(shape: contract.Shape, depth: int) -> st.SearchStrategy:
    options = []
    if shape.empty:
        options.append(st.just(""))
    if shape.enum:
        options.append(st.sampled_from(shape.enum))
    if shape.scalars & {"str", "any"}:
        options.append(_TEXT)
    if "int" in shape.scalars:
        options.append(st.integers(-(2 ** 40), 2 ** 40))
    if "bool" in shape.scalars:
        options.append(st.booleans())
    if "number" in shape.scalars:
        options.append(st.integers(0, 10 ** 6))
    if shape.hash is not None:
        options.append(_hashes(shape.hash, depth + 1))
    if shape.items is not None:
        options.append(st.lists(_values(shape.items, depth + 1), min_size=1, max_size=2))
    if shape.values is not None:
        value = st.one_of(st.just(""), _values(shape.values, depth + 1))
        options.append(st.dictionaries(_KEYS, value, max_size=3))
    return st.one_of(options)


def _hashes(h: contract.Hash, depth: int) -> st.SearchStrategy:
    required = {k: f for k, f in h.fields.items() if f.required}
    optional = sorted(k for k, f in h.fields.items() if not f.required)
    most = 3 if depth < _MAX_DEPTH else 0
    least = 0 if required or not optional else 1   # an empty hash vanishes on the wire
    chosen = st.lists(st.sampled_from(optional), min_size=least, max_size=max(most, least),
                      unique=True) if optional else st.just([])
    return chosen.flatmap(lambda names: st.fixed_dictionaries({
        **{k: st.deferred(lambda f=f: _values(f.shape, depth)) for k, f in required.items()},
        **{k: st.deferred(lambda k=k: _values(h.fields[k].shape, depth)) for k in names}}))


_ROUTES = [r for r in contract.routes() if r.params_type is not None]


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.data())
def test_anything_valid_per_the_types_round_trips_without_a_breach(data):
    route = data.draw(st.sampled_from(_ROUTES))
    params = data.draw(_hashes(contract.schema(route.params_type), 0))
    decoded = parse_form(urllib.parse.urlencode(list(_api_encode(params))))
    assert contract.check_params(route, decoded) is None, (route.operation, params, decoded)
