"""A small declarative validator that reports the first problem the way the real service words it.

Specs are data: `Obj({...})`, `Int(0, 10)`, `Enum(...)`, `Tagged("type", {...})`. `check(spec, value, path)`
returns the value (objects copied) or raises `RealtimeError` with `param` set to the dotted path.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .protocol import (
    JSON_TYPE_NAMES,
    RealtimeError,
    invalid_type,
    invalid_value,
    missing_parameter,
    out_of_range,
    unknown_parameter,
)

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


class Spec:
    def check(self, value: Any, path: str) -> Any:
        raise NotImplementedError


@dataclass(frozen=True)
class AnyValue(Spec):
    def check(self, value: Any, path: str) -> Any:
        return value


@dataclass(frozen=True)
class Str(Spec):
    max_length: int | None = None

    def check(self, value: Any, path: str) -> Any:
        if not isinstance(value, str):
            raise invalid_type(path, "a string", value)
        if self.max_length is not None and len(value) > self.max_length:
            raise RealtimeError(
                f"Invalid '{path}': string too long. Expected a string with maximum length "
                f"{self.max_length}, but got a string with length {len(value)} instead.",
                code="string_above_max_length",
                param=path,
            )
        return value


@dataclass(frozen=True)
class Bool(Spec):
    def check(self, value: Any, path: str) -> Any:
        if not isinstance(value, bool):
            raise invalid_type(path, "a boolean", value)
        return value


@dataclass(frozen=True)
class Int(Spec):
    low: int | None = None
    high: int | None = None

    def check(self, value: Any, path: str) -> Any:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            else:
                raise invalid_type(path, "an integer", value)
        # Unbounded means a 64-bit integer, as the service's own parsers hold them.
        low = self.low if self.low is not None else INT64_MIN
        high = self.high if self.high is not None else INT64_MAX
        if not low <= value <= high:
            raise out_of_range(path, value, low, high)
        return value


@dataclass(frozen=True)
class Num(Spec):
    low: float | None = None
    high: float | None = None

    def check(self, value: Any, path: str) -> Any:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise invalid_type(path, "a number", value)
        try:
            finite = math.isfinite(value)  # an int too large for a float overflows here
        except OverflowError:
            finite = False
        if not finite:
            raise not_finite(path, value)
        if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
            raise out_of_range(path, float(value), self.low, self.high)
        return value


def not_finite(path: str, value: Any) -> RealtimeError:
    """NaN, an infinity or an overflowing number: never a valid parameter (JSON has no such values)."""
    shown = value if isinstance(value, float) else "a number too large"
    return RealtimeError(
        f"Invalid '{path}': expected a finite number, but got {shown} instead.",
        code="invalid_value",
        param=path,
    )


@dataclass(frozen=True)
class Enum(Spec):
    values: tuple[Any, ...]

    def check(self, value: Any, path: str) -> Any:
        if isinstance(value, bool) or value not in self.values:
            if not any(type(v) is type(value) for v in self.values):
                # A value of another JSON type is a type mismatch (so a OneOf reports its sibling's error).
                raise invalid_type(path, JSON_TYPE_NAMES.get(type(self.values[0]), "a value"), value)
            raise invalid_value(path, value, tuple(str(v) for v in self.values))
        return value


@dataclass(frozen=True)
class Nullable(Spec):
    inner: Spec

    def check(self, value: Any, path: str) -> Any:
        return None if value is None else self.inner.check(value, path)


@dataclass(frozen=True)
class List(Spec):
    inner: Spec
    max_items: int | None = None

    def check(self, value: Any, path: str) -> Any:
        if not isinstance(value, list):
            raise invalid_type(path, "an array", value)
        if self.max_items is not None and len(value) > self.max_items:
            raise RealtimeError(
                f"Invalid '{path}': array too long. Expected an array with maximum length "
                f"{self.max_items}, but got an array with length {len(value)} instead.",
                code="array_above_max_length",
                param=path,
            )
        return [self.inner.check(item, f"{path}[{i}]") for i, item in enumerate(value)]


@dataclass(frozen=True)
class Obj(Spec):
    fields: Mapping[str, Spec]
    required: tuple[str, ...] = ()
    open: bool = False  # open objects keep unknown keys (free-form payloads such as tool parameters)
    null_is_absent: bool = False  # a null field is "not given": dropped, so its default applies

    def check(self, value: Any, path: str) -> Any:
        if not isinstance(value, dict):
            raise invalid_type(path, "an object", value)
        result: dict[str, Any] = {}
        for key, item in value.items():
            spec = self.fields.get(key)
            sub = f"{path}.{key}" if path else key
            if spec is None:
                if not self.open:
                    raise unknown_parameter(sub)
                result[key] = item
                continue
            if item is None and self.null_is_absent:
                continue
            result[key] = spec.check(item, sub)
        for key in self.required:
            if key not in value:
                raise missing_parameter(f"{path}.{key}" if path else key)
        return result


@dataclass(frozen=True)
class OneOf(Spec):
    """The first alternative that accepts the value wins. Otherwise the error of the first alternative of the
    value's own JSON type (not a mere type mismatch) is reported, else the first alternative's."""

    options: tuple[Spec, ...]

    def check(self, value: Any, path: str) -> Any:
        errors: list[RealtimeError] = []
        for option in self.options:
            try:
                return option.check(value, path)
            except RealtimeError as exc:
                errors.append(exc)
        assert errors
        raise next((e for e in errors if e.code != "invalid_type"), errors[0])


@dataclass(frozen=True)
class Tagged(Spec):
    """A union discriminated by one key (`type`), as the API's turn detection, formats and items are."""

    key: str
    variants: Mapping[str, Spec]
    default: str | None = None
    tags: tuple[str, ...] = field(init=False, default=())

    def __post_init__(self) -> None:
        object.__setattr__(self, "tags", tuple(self.variants))

    def check(self, value: Any, path: str) -> Any:
        if not isinstance(value, dict):
            raise invalid_type(path, "an object", value)
        tag = value.get(self.key, self.default)
        if tag is None:
            raise missing_parameter(f"{path}.{self.key}")
        if not isinstance(tag, str) or tag not in self.variants:
            raise invalid_value(f"{path}.{self.key}", tag, self.tags)
        return self.variants[tag].check(value, path)


def check(spec: Spec, value: Any, path: str = "") -> Any:
    return spec.check(value, path)
