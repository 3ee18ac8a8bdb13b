"""JSON as the real (Go) Toxiproxy speaks it: compact output and Go-style decoding errors.

Clients only ever see these texts inside `bad request body: ...` messages, but matching them keeps
error handling written against the real server working against this one.
"""

from __future__ import annotations

import json
import math
import re
import struct
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from .errors import BadRequestBody

_GO_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


class JsonFloat(float):
    """A JSON number written with a fraction or exponent; keeps its literal for Go-style messages."""

    literal: str

    def __new__(cls, literal: str) -> JsonFloat:
        value = super().__new__(cls, literal)
        value.literal = literal
        return value


class Float32(float):
    """A float32 value (Go's `toxicity` type), rendered with the shortest text that round-trips."""

    def __new__(cls, value: float) -> Float32:
        return super().__new__(cls, struct.unpack("f", struct.pack("f", value))[0])

    def go_text(self) -> str:
        for digits in range(1, 10):
            text = f"{float(self):.{digits - 1}e}"
            if struct.unpack("f", struct.pack("f", float(text)))[0] == float(self):
                break
        positional = format(Decimal(text), "f")
        if "." in positional:
            positional = positional.rstrip("0").rstrip(".")
        return positional or "0"


MAX_NESTING_DEPTH = 10_000  # encoding/json's maxNestingDepth
_SURROGATE = re.compile("[\ud800-\udfff]")
INT_RANGES = {"int64": (-(2**63), 2**63 - 1), "int32": (-(2**31), 2**31 - 1), "int": (-(2**63), 2**63 - 1)}


class _Constant(ValueError):
    """NaN, Infinity or -Infinity where a value belongs: Python accepts them, Go's scanner does not."""


def _reject_constant(name: str) -> Any:
    raise _Constant(name)


def _scan(text: str) -> tuple[int, str] | None:
    """Where Go's scanner stops on what Python's decoder lets through or cannot reach: the first nesting
    past MAX_NESTING_DEPTH, or the first NaN/Infinity literal. (offset, Go's phrase), or None."""
    depth, in_string, escaped = 0, False, False
    for offset, char in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > MAX_NESTING_DEPTH:
                return offset, "exceeded max depth"
        elif char in "]}":
            depth -= 1
        elif char in "NI" and text.startswith(("NaN", "Infinity"), offset):
            after_minus = offset > 0 and text[offset - 1] == "-"
            return offset, "in numeric literal" if after_minus else "looking for beginning of value"
    return None


_DECODER = json.JSONDecoder(parse_float=JsonFloat, parse_constant=_reject_constant)

# Python's decoder messages mapped onto the phrases Go's encoding/json uses.
_SYNTAX_PHRASES = (
    ("Expecting value", "looking for beginning of value"),
    ("Expecting property name", "looking for beginning of object key string"),
    ("Expecting ':' delimiter", "after object key"),
    ("Expecting ',' delimiter", "after object key:value pair"),
)


def decode_body(raw: bytes) -> object:
    """Decode the first JSON value of a request body like Go's `json.Decoder.Decode` (rest ignored)."""
    text = raw.decode("utf-8", errors="replace").lstrip(" \t\r\n")
    if not text:
        raise BadRequestBody("EOF")
    try:
        value, _end = _DECODER.raw_decode(text)
    except (_Constant, RecursionError):
        found = _scan(text)
        if found is None:  # deeper than Python's decoder goes, within Go's limit: still refused
            raise BadRequestBody("exceeded max depth") from None
        offset, phrase = found
        raise BadRequestBody(f"invalid character {text[offset]!r} {phrase}") from None
    except ValueError as exc:
        position = getattr(exc, "pos", 0)
        if position >= len(text.rstrip(" \t\r\n")):
            raise BadRequestBody("unexpected EOF") from None
        phrase = "looking for beginning of value"
        for python_text, go_phrase in _SYNTAX_PHRASES:
            if str(exc).startswith(python_text):
                phrase = go_phrase
        raise BadRequestBody(f"invalid character {text[position]!r} {phrase}") from None
    return _well_formed(value)


def _well_formed(value: object) -> object:
    """Lone surrogate escapes become U+FFFD, as Go's decoder makes them (in place, without recursion)."""
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value) if not value.isascii() else value
    stack: list[object] = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for key in list(node):
                item = node[key]
                if isinstance(key, str) and not key.isascii() and _SURROGATE.search(key):
                    del node[key]
                    key = _SURROGATE.sub("\ufffd", key)
                node[key] = _well_formed(item) if isinstance(item, str) else item
                stack.append(item)
        elif isinstance(node, list):
            for index, item in enumerate(node):
                if isinstance(item, str):
                    node[index] = _well_formed(item)
                else:
                    stack.append(item)
    return value


def json_kind(value: object, *, with_literal: bool = False) -> str:
    """The JSON type name Go puts in 'cannot unmarshal X' (numbers with their text when asked)."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, JsonFloat):
        return f"number {value.literal}" if with_literal else "number"
    if isinstance(value, int | float):
        return f"number {value}" if with_literal else "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def field_type_error(value: object, struct_name: str, field: str, go_type: str) -> BadRequestBody:
    kind = json_kind(value, with_literal=go_type.startswith("int"))
    return BadRequestBody(
        f"json: cannot unmarshal {kind} into Go struct field {struct_name}.{field} of type {go_type}"
    )


def value_type_error(value: object, go_type: str) -> BadRequestBody:
    return BadRequestBody(f"json: cannot unmarshal {json_kind(value)} into Go value of type {go_type}")


def read_string(body: Mapping[str, object], key: str, struct_name: str, default: str) -> str:
    value = body.get(key)
    if value is None:
        return default
    if not isinstance(value, str):
        raise field_type_error(value, struct_name, key, "string")
    return value


def read_bool(body: Mapping[str, object], key: str, struct_name: str, default: bool) -> bool:
    value = body.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise field_type_error(value, struct_name, key, "bool")
    return value


def read_float32(body: Mapping[str, object], key: str, struct_name: str, default: float) -> float:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise field_type_error(value, struct_name, key, "float32")
    try:
        number = Float32(value)
    except OverflowError:  # beyond float32, as strconv.ParseFloat(s, 32) reports ErrRange
        number = Float32(math.inf)
    if not math.isfinite(number):
        literal = value.literal if isinstance(value, JsonFloat) else str(value)
        raise BadRequestBody(
            f"json: cannot unmarshal number {literal} into Go struct field {struct_name}.{key} "
            "of type float32"
        )
    return number


def read_int(value: object, struct_name: str, field: str, go_type: str) -> int:
    """Go refuses fractions and exponents for integer fields, even when the value is whole."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise field_type_error(value, struct_name, field, go_type)
    low, high = INT_RANGES.get(go_type, (-math.inf, math.inf))
    if not low <= value <= high:  # Go: the number does not fit the field's type
        raise field_type_error(value, struct_name, field, go_type)
    return value


def _go_default(value: object) -> object:
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _render(value: object) -> str:
    if isinstance(value, Float32):
        return value.go_text()
    if isinstance(value, dict):
        return "{" + ",".join(f"{_render(str(k))}:{_render(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_render(item) for item in value) + "]"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return json.dumps(value, ensure_ascii=False, default=_go_default)


def dumps(value: object) -> bytes:
    """Compact JSON with Go's HTML-safe escapes, as `json.Marshal` writes it."""
    text = _render(value)
    for raw, escaped in _GO_ESCAPES.items():
        if raw in text:
            text = text.replace(raw, escaped)
    return text.encode()
