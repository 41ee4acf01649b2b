"""Stripe's request contract, read from the types stripe-python generates.

stripe-python's ``stripe/params`` TypedDicts are generated from Stripe's
OpenAPI spec for exactly the API version the library sends (:data:`API_VERSION`).
This module turns them into a checker for requests as they arrive on the wire,
so that :mod:`kiosk.testing.fake_stripe` refuses what real Stripe refuses (unknown,
missing or mistyped parameters, enum values outside the spec, parameters this
API version removed) instead of accepting whatever the kiosk sends.

Nothing here is a hand-written list of parameters: the route table is read
from the SDK's service classes (the ``self._request("post", "/v1/...")`` call
and the ``params: "...Params"`` annotation of each method), and each params
type from its generated class body.  Only the client options every params
class inherits from ``RequestOptions`` (``api_key``, ``idempotency_key``, ...)
are left out: the SDK sends those as headers, never as parameters.

Input is a request as :func:`kiosk.testing.fake_stripe.parse_form` decodes it: nested
dicts and lists of strings (stripe-python sends ``true``/``false`` for bools,
decimal strings for ints, ``a[0]=x`` for lists and ``a[b]=x`` for hashes).

A :class:`Breach` carries what Stripe answers: HTTP 400, type
``invalid_request_error``, ``param`` as Stripe's bracket path and a ``code``:

================================== ===========================================
code                               when
================================== ===========================================
parameter_unknown                  a key the type does not have, at any depth
parameter_missing                  a required key is absent
parameter_invalid_integer          an int that does not parse
parameter_invalid_empty            ``""`` for an optional key that cannot be unset
parameter_invalid_string_empty     ``""`` for a required key
parameter_invalid_string_blank     a string of whitespace only
payment_method_types_no_longer_supported
                                   ``payment_method_types`` on PaymentIntents
                                   create/update/confirm (removed in endive)
parameter_invalid_boolean *        a bool other than ``true``/``false``
parameter_invalid_enum *           a value outside the spec's enum
parameter_invalid_type *           a scalar where a hash or list belongs, or
                                   the other way round
parameter_invalid_number *         a decimal that does not parse
api_version_invalid *              a ``Stripe-Version`` this server does not serve
================================== ===========================================

Codes marked * are this module's own: Stripe answers those cases with a 400
and a message but documents no code, so a kiosk must never rely on them.
"""

from __future__ import annotations

import ast
import difflib
import functools
import inspect
import json
import re
import sys
import threading
import types
import typing
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping

import stripe
import stripe.params
from stripe._api_version import _ApiVersion
from stripe._stripe_object import UntypedStripeObject
from typing_extensions import Literal, NotRequired, Required, get_args, get_origin, is_typeddict

__all__ = ["API_VERSION", "OWN_CODES", "SERVICES", "Breach", "Field", "Hash", "Match", "Route",
           "Shape", "check", "check_params", "check_version", "match", "prepare", "routes",
           "schema"]

API_VERSION = _ApiVersion.CURRENT

# Service classes (names in the ``stripe`` package) whose routes are checked.
SERVICES = ("PaymentIntentService",)

_DOCS = "https://stripe.com/docs/error-codes/"
# This module's own codes (marked * above): Stripe has no page for them, so no doc_url.
OWN_CODES = frozenset({
    "parameter_invalid_boolean", "parameter_invalid_enum", "parameter_invalid_type",
    "parameter_invalid_number", "api_version_invalid",
})

# Stripe changelog 2026-09-30.endive, "Removes the payment method types parameter
# from Payment Intents and Setup Intents": passing it returns 400 with this code.
_REMOVED_PMT = ("payment_method_types", "payment_method_types_no_longer_supported")
REMOVED_PARAMS: dict[tuple[str, str], dict[str, str]] = {
    (service, operation): dict([_REMOVED_PMT])
    for service, operations in (("PaymentIntentService", ("create", "update", "confirm")),
                                ("SetupIntentService", ("create", "update")))
    for operation in operations
}

_BOOLS = ("true", "false")
_INT = re.compile(r"-?\d+")
_NUMBER = re.compile(r"-?(\d+(\.\d*)?|\.\d+)")


# -- what Stripe answers ------------------------------------------------------------

@dataclass(frozen=True)
class Breach:
    """A request real Stripe refuses, and the answer it gives."""

    code: str
    param: str | None
    message: str
    status: int = 400
    type: str = "invalid_request_error"

    @property
    def error(self) -> dict:
        """The ``error`` object of Stripe's answer (null attributes left out, as Stripe does)."""
        err = {"type": self.type, "code": self.code, "message": self.message, "param": self.param}
        if self.code not in OWN_CODES:
            err["doc_url"] = _DOCS + self.code.replace("_", "-")
        return {k: v for k, v in err.items() if v is not None}


def check_version(sent: str | None, served: str = API_VERSION) -> Breach | None:
    """A ``Stripe-Version`` header other than the one served is refused (no header: served)."""
    if sent is None or sent == served:
        return None
    return Breach("api_version_invalid", None,
                  f"Invalid Stripe API version: {sent}. This server serves API version "
                  f"{served} only; send `Stripe-Version: {served}` or no Stripe-Version header.")


# -- the shape of a parameter, read from the generated types ------------------------------

@dataclass(frozen=True)
class Shape:
    """What one parameter accepts: the alternatives of its generated annotation."""

    scalars: frozenset[str] = frozenset()   # "str", "int", "bool", "number", "any"
    enum: tuple[str, ...] = ()              # the Literal values in the spec's order, a closed set
    empty: bool = False                     # Literal['']: the empty string unsets it
    hash: "Hash | None" = None              # a nested TypedDict
    items: "Shape | None" = None            # List[...]
    values: "Shape | None" = None           # Dict[str, ...] (metadata and the like)


@dataclass(frozen=True)
class Field:
    shape: Shape
    required: bool


@dataclass(eq=False)
class Hash:
    """A generated TypedDict: its own wire fields, by name."""

    name: str
    fields: dict[str, Field] = field(default_factory=dict)


_HASHES: dict[type, Hash] = {}
_BUILDING = threading.RLock()   # a half-read Hash must never be seen by another thread


def schema(params_type: type) -> Hash:
    """The wire fields of a generated params TypedDict (RequestOptions' keys left out)."""
    with _BUILDING:
        found = _HASHES.get(params_type)
        if found is None:
            # cached before its fields are read: a type may contain itself
            found = _HASHES[params_type] = Hash(params_type.__name__)
            ns = _Namespace(sys.modules[params_type.__module__])
            total = getattr(params_type, "__total__", True)
            for name, annotation in _own_annotations(params_type):
                tp = ns.eval(annotation)
                found.fields[name] = Field(_shape(tp, ns), _required(tp, ns, total))
        return found


def prepare(services: tuple[str, ...] = SERVICES) -> None:
    """Read every route's types now (a few tenths of a second, once per
    process), so that no request pays for it while a client's timeout runs."""
    for route in routes(services):
        if route.params_type is not None:
            schema(route.params_type)


def _own_annotations(cls: type) -> list[tuple[str, str]]:
    """The annotations written in *cls*'s own body, as source text.  Not
    ``__annotations__``: a TypedDict's holds its bases' keys too, here
    RequestOptions' client options, which are never sent as parameters."""
    tree = _module_tree(cls.__module__)
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == cls.__name__:
            return [(stmt.target.id, ast.unparse(stmt.annotation)) for stmt in node.body
                    if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)]
    raise LookupError(f"class {cls.__qualname__} not found in {cls.__module__}")


@functools.lru_cache(maxsize=None)
def _module_tree(module_name: str) -> ast.Module:
    return ast.parse(inspect.getsource(sys.modules[module_name]))


class _Namespace(dict):
    """Evaluates annotation strings as the generated module would: its own
    names first, then any params class of the SDK (for cross-module names)."""

    def __init__(self, module: types.ModuleType):
        super().__init__(vars(module))

    def __missing__(self, name: str) -> Any:
        try:
            return getattr(stripe.params, name)
        except AttributeError:
            raise KeyError(name) from None   # then eval looks in builtins

    def eval(self, text: str) -> Any:
        return eval(text, {"__builtins__": __builtins__}, self)   # generated SDK source, not input


def _required(tp: Any, ns: _Namespace, total: bool) -> bool:
    origin = get_origin(_resolve(tp, ns))
    if origin is NotRequired:
        return False
    return origin is Required or total


def _resolve(tp: Any, ns: _Namespace) -> Any:
    while isinstance(tp, (str, typing.ForwardRef)):
        tp = ns.eval(tp if isinstance(tp, str) else tp.__forward_arg__)
    return tp


def _atoms(tp: Any, ns: _Namespace) -> Iterator[Any]:
    """The alternatives of an annotation, with NotRequired, Union and string forms unwrapped."""
    tp = _resolve(tp, ns)
    origin = get_origin(tp)
    if origin in (NotRequired, Required, typing.Union, types.UnionType):
        for arg in get_args(tp):
            yield from _atoms(arg, ns)
    else:
        yield tp


def _shape(tp: Any, ns: _Namespace) -> Shape:
    scalars: set[str] = set()
    enum: dict[str, None] = {}   # ordered set
    empty = False
    hash_ = items = values = None
    for atom in _atoms(tp, ns):
        origin = get_origin(atom)
        if origin is Literal:
            for value in get_args(atom):
                text = str(value).lower() if isinstance(value, bool) else str(value)
                if text == "":
                    empty = True
                else:
                    enum[text] = None
        elif origin in (list, typing.List):
            items = _shape(get_args(atom)[0], ns)
        elif origin in (dict, typing.Dict, Mapping) or origin is UntypedStripeObject:
            values = _shape(get_args(atom)[-1], ns)
        elif is_typeddict(atom):
            hash_ = schema(atom)
        elif atom is type(None):
            continue
        elif atom in _SCALARS:
            scalars.add(_SCALARS[atom])
        else:
            raise TypeError(f"annotation form not understood: {atom!r}")
    if enum:
        # The generated types write enums as Literal[...]|str only so that the SDK
        # keeps working when Stripe adds a value; Stripe itself refuses any value
        # outside the spec's enum, so the Literal set is the contract.
        scalars.discard("str")
    return Shape(frozenset(scalars), tuple(enum), empty, hash_, items, values)


_SCALARS: dict[Any, str] = {str: "str", int: "int", bool: "bool", float: "number",
                            Any: "any", object: "any"}


# -- routes, read from the SDK's service classes ---------------------------------------------

@dataclass(frozen=True)
class Route:
    service: str              # e.g. "PaymentIntentService"
    operation: str            # the service method, e.g. "confirm"
    method: str               # "GET", "POST", "DELETE"
    template: str             # e.g. "/v1/payment_intents/{intent}/confirm"
    params_type: type | None  # the generated params TypedDict (None: takes no parameters)
    pattern: re.Pattern = field(compare=False, repr=False)


@dataclass(frozen=True)
class Match:
    route: Route
    path_params: dict[str, str]


_REQUEST_CALL = re.compile(r'self\._request\(\s*"(?P<method>\w+)",\s*"(?P<path>/v\d+/[^"]*)"')
_PARAMS_NAME = re.compile(r"\b([A-Z]\w*Params)\b")


@functools.lru_cache(maxsize=None)
def routes(services: tuple[str, ...] = SERVICES) -> tuple[Route, ...]:
    """Every route of *services*, literal paths before templated ones
    (``/v1/payment_intents/search`` must not match ``{intent}``)."""
    found = [route for name in services for route in _service_routes(name)]
    return tuple(sorted(found, key=lambda r: (r.template.count("{"), -len(r.template))))


def _service_routes(service_name: str) -> Iterator[Route]:
    service = functools.reduce(getattr, service_name.split("."), stripe)
    for operation, fn in inspect.getmembers(service, inspect.isfunction):
        if operation.startswith("_") or operation.endswith("_async"):
            continue
        call = _REQUEST_CALL.search(inspect.getsource(fn))
        if call is None:
            continue
        template = call.group("path")
        yield Route(service_name, operation, call.group("method").upper(), template,
                    _params_type(fn), _path_pattern(template))


def _params_type(fn: Any) -> type | None:
    parameter = inspect.signature(fn).parameters.get("params")
    if parameter is None:
        return None
    name = _PARAMS_NAME.search(str(parameter.annotation))
    if name is None:
        raise TypeError(f"{fn.__qualname__}: params annotation not understood: "
                        f"{parameter.annotation!r}")
    return getattr(stripe.params, name.group(1))


def _path_pattern(template: str) -> re.Pattern:
    parts = re.split(r"\{(\w+)\}", template)
    regex = "".join(re.escape(p) if i % 2 == 0 else f"(?P<{p}>[^/]+)" for i, p in enumerate(parts))
    return re.compile(f"^{regex}$")


def match(method: str, path: str, services: tuple[str, ...] = SERVICES) -> Match | None:
    """The route *method* and *path* call, with its path parameters, or None."""
    for route in routes(services):
        if route.method != method.upper():
            continue
        m = route.pattern.match(path)
        if m:
            return Match(route, {k: urllib.parse.unquote(v) for k, v in m.groupdict().items()})
    return None


# -- checking a request -------------------------------------------------------------------------

def check(method: str, path: str, params: dict,
          services: tuple[str, ...] = SERVICES) -> Breach | None:
    """What Stripe would refuse in this decoded request; None if it holds the
    contract or the route is not one of *services*' (the caller answers 404)."""
    found = match(method, path, services)
    if found is None:
        return None
    return check_params(found.route, params)


def check_params(route: Route, params: dict) -> Breach | None:
    """Check decoded *params* against *route*'s generated params type."""
    removed = REMOVED_PARAMS.get((route.service, route.operation), {})
    for name, code in removed.items():
        if name in params:
            return Breach(code, name,
                          f"The `{name}` parameter is no longer supported on API version "
                          f"{API_VERSION}. Use `allowed_payment_method_types` or dynamic payment "
                          "methods to choose the payment methods of this intent.")
    if route.params_type is None:
        return _unknown(next(iter(params)), ()) if params else None
    return _check_hash(schema(route.params_type), params, "")


def _path(prefix: str, key: str) -> str:
    return f"{prefix}[{key}]" if prefix else key


def _check_hash(hash_: Hash, value: dict, prefix: str) -> Breach | None:
    for key, item in value.items():
        f = hash_.fields.get(key)
        if f is None:
            return _unknown(_path(prefix, key), hash_.fields)
        breach = _check_value(f.shape, item, _path(prefix, key), f.required)
        if breach:
            return breach
    for key, f in hash_.fields.items():
        if f.required and key not in value:
            return Breach("parameter_missing", _path(prefix, key),
                          f"Missing required param: {_path(prefix, key)}.")
    return None


def _unknown(param: str, known: Any) -> Breach:
    leaf = param.rsplit("[", 1)[-1].rstrip("]")
    close = difflib.get_close_matches(leaf, list(known), n=1)
    hint = f". Did you mean {close[0]}?" if close else ""
    return Breach("parameter_unknown", param, f"Received unknown parameter: {param}{hint}")


def _check_value(shape: Shape, value: Any, param: str, required: bool) -> Breach | None:
    if "any" in shape.scalars:
        return None
    if isinstance(value, dict):
        return _check_dict(shape, value, param)
    if isinstance(value, list):
        return _check_list(shape, value, param)
    return _check_string(shape, value, param, required)


def _check_dict(shape: Shape, value: dict, param: str) -> Breach | None:
    if shape.hash is not None:
        return _check_hash(shape.hash, value, param)
    if shape.values is not None:
        return _check_map(shape.values, value, param)
    if shape.items is not None:
        return _invalid_type(param, "Invalid array")
    return _invalid_type(param, f"Invalid {_kind(shape)}: {json.dumps(value)}")


def _check_list(shape: Shape, value: list, param: str) -> Breach | None:
    if shape.items is not None:
        for i, item in enumerate(value):
            breach = _check_value(shape.items, item, f"{param}[{i}]", True)
            if breach:
                return breach
        return None
    if shape.values is not None:   # a hash whose keys are all digits decodes as a list
        return _check_map(shape.values, {str(i): v for i, v in enumerate(value)}, param)
    if shape.hash is not None:
        return _invalid_type(param, "Invalid hash")
    return _invalid_type(param, f"Invalid {_kind(shape)}: {json.dumps(value)}")


def _check_map(values: Shape, value: dict, param: str) -> Breach | None:
    for key, item in value.items():
        if item == "":
            continue   # an empty value unsets that key (metadata)
        breach = _check_value(values, item, f"{param}[{key}]", False)
        if breach:
            return breach
    return None


def _check_string(shape: Shape, value: str, param: str, required: bool) -> Breach | None:
    if value == "":
        return None if shape.empty else _empty(param, required)
    if value in shape.enum:
        return None
    if "bool" in shape.scalars and value in _BOOLS:
        return None
    if "int" in shape.scalars and _INT.fullmatch(value):
        return None
    if "number" in shape.scalars and _NUMBER.fullmatch(value):
        return None
    if "str" in shape.scalars:
        if value.strip() == "":
            return Breach("parameter_invalid_string_blank", param,
                          f"Invalid {param}: the value cannot consist only of whitespace.")
        return None
    return _invalid_scalar(shape, value, param)


def _empty(param: str, required: bool) -> Breach:
    if required:
        return Breach("parameter_invalid_string_empty", param,
                      f"You passed an empty string for '{param}', which is required. "
                      f"Supply a non-empty value for '{param}'.")
    return Breach("parameter_invalid_empty", param,
                  f"You passed an empty string for '{param}'. We assume empty values are an "
                  f"attempt to unset a parameter; however '{param}' cannot be unset. You should "
                  f"remove '{param}' from your request or supply a non-empty value.")


def _invalid_scalar(shape: Shape, value: str, param: str) -> Breach:
    if shape.enum:
        choices = list(shape.enum) + (list(_BOOLS) if "bool" in shape.scalars else [])
        listed = ", ".join(choices[:-1]) + f", or {choices[-1]}" if len(choices) > 1 else choices[0]
        return Breach("parameter_invalid_enum", param, f"Invalid {param}: must be one of {listed}")
    if "int" in shape.scalars:
        return Breach("parameter_invalid_integer", param, f"Invalid integer: {value}")
    if "bool" in shape.scalars:
        return Breach("parameter_invalid_boolean", param, f"Invalid boolean: {value}")
    if "number" in shape.scalars:
        return Breach("parameter_invalid_number", param, f"Invalid decimal: {value}")
    if shape.hash is not None or shape.values is not None:
        return _invalid_type(param, "Invalid hash")
    return _invalid_type(param, "Invalid array")


def _invalid_type(param: str, message: str) -> Breach:
    return Breach("parameter_invalid_type", param, message)


def _kind(shape: Shape) -> str:
    if shape.enum or "str" in shape.scalars:
        return "string"
    if "int" in shape.scalars:
        return "integer"
    if "bool" in shape.scalars:
        return "boolean"
    return "value"
