"""Wire-level pieces shared by every transport: ids, the error shape, frame decoding and encoding.

Everything here is pure (no I/O). Error codes and messages follow the real service's wording:
`Unknown parameter: 'session.foo'.`, `Missing required parameter: 'type'.`, and so on.
"""

from __future__ import annotations

import json
import math
import random
import re
import string
from dataclasses import dataclass
from typing import Any

import orjson

CLIENT_EVENT_TYPES = (
    "session.update",
    "input_audio_buffer.append",
    "input_audio_buffer.commit",
    "input_audio_buffer.clear",
    "conversation.item.create",
    "conversation.item.retrieve",
    "conversation.item.truncate",
    "conversation.item.delete",
    "response.create",
    "response.cancel",
    "output_audio_buffer.clear",
)
# The event types the real GA WebSocket lists when it refuses an unknown one (a live capture of 2026-09-18,
# docs/parity.md): its own list, translation events included and `output_audio_buffer.clear` (WebRTC) not.
LISTED_CLIENT_EVENT_TYPES = (
    "session.update",
    "session.close",
    "input_audio_buffer.append",
    "session.input_audio_buffer.append",
    "input_audio_buffer.commit",
    "input_audio_buffer.clear",
    "conversation.item.create",
    "conversation.item.truncate",
    "conversation.item.delete",
    "conversation.item.retrieve",
    "response.create",
    "response.cancel",
)

# Every server event type the simulator emits (GA names). Tests drive each one and validate it against
# the SDK's `RealtimeServerEvent` union; a static test keeps this list in step with the source.
# Remote MCP tools' events (GA only: the beta shape had no MCP).
MCP_EVENT_TYPES = frozenset(
    {
        "mcp_list_tools.in_progress",
        "mcp_list_tools.completed",
        "mcp_list_tools.failed",
        "response.mcp_call_arguments.delta",
        "response.mcp_call_arguments.done",
        "response.mcp_call.in_progress",
        "response.mcp_call.completed",
        "response.mcp_call.failed",
    }
)
SERVER_EVENT_TYPES = frozenset(
    {
        "error",
        "session.created",
        "session.updated",
        "conversation.item.added",
        "conversation.item.done",
        "conversation.item.retrieved",
        "conversation.item.deleted",
        "conversation.item.truncated",
        "input_audio_buffer.committed",
        "input_audio_buffer.cleared",
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.timeout_triggered",
        "conversation.item.input_audio_transcription.delta",
        "conversation.item.input_audio_transcription.completed",
        "conversation.item.input_audio_transcription.failed",
        "conversation.item.input_audio_transcription.segment",
        "response.created",
        "response.done",
        "response.output_item.added",
        "response.output_item.done",
        "response.content_part.added",
        "response.content_part.done",
        "response.output_audio.delta",
        "response.output_audio.done",
        "response.output_audio_transcript.delta",
        "response.output_audio_transcript.done",
        "response.output_text.delta",
        "response.output_text.done",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "rate_limits.updated",
        *MCP_EVENT_TYPES,
    }
)

# Events only a transport emits (WebRTC's output audio buffer, SIP's keypad presses); validated by that
# transport's tests.
SIP_EVENT_TYPES = frozenset({"input_audio_buffer.dtmf_event_received"})
TRANSPORT_EVENT_TYPES = (
    frozenset({"output_audio_buffer.started", "output_audio_buffer.stopped", "output_audio_buffer.cleared"})
    | SIP_EVENT_TYPES
)

# The real service caps one client event at 15 MiB of audio; a frame a little larger than that is the
# largest event we parse. Larger frames get an error event and are dropped, the session goes on.
MAX_EVENT_BYTES = 16 * 1024 * 1024

# JSON from outside is refused beyond this nesting: deep enough for any real tool schema, and far below what
# Python's recursion (the decoder, deepcopy, the encoder) survives.
MAX_JSON_DEPTH = 100

_ALPHABET = string.ascii_letters + string.digits
_SURROGATE = re.compile("[\ud800-\udfff]")


class RealtimeError(Exception):
    """A client mistake the server reports as an `error` event (or HTTP error body) and survives."""

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        type: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.param = param
        self.type = type

    def body(self, client_event_id: str | None = None) -> dict[str, Any]:
        return {
            "type": self.type,
            "code": self.code,
            "message": self.message,
            "param": self.param,
            "event_id": client_event_id,
        }


def unknown_parameter(param: str) -> RealtimeError:
    return RealtimeError(f"Unknown parameter: '{param}'.", code="unknown_parameter", param=param)


def missing_parameter(param: str) -> RealtimeError:
    return RealtimeError(
        f"Missing required parameter: '{param}'.", code="missing_required_parameter", param=param
    )


def invalid_value(param: str, value: Any, supported: tuple[str, ...] | None = None) -> RealtimeError:
    message = f"Invalid value: {_quote(value)}."
    if supported:
        message += f" Supported values are: {_listed(supported)}."
    return RealtimeError(message, code="invalid_value", param=param)


def _listed(values: tuple[str, ...]) -> str:
    """'a', 'b', and 'c' — as the real service lists allowed values ("Supported values are: 'pcm16',
    'g711_ulaw', and 'g711_alaw'.", captured in dongri/openai-api-rs#135)."""
    quoted = [f"'{v}'" for v in values]
    if len(quoted) <= 2:
        return " and ".join(quoted)
    return ", ".join(quoted[:-1]) + ", and " + quoted[-1]


JSON_TYPE_NAMES = {
    bool: "a boolean",
    int: "an integer",
    float: "a decimal",
    str: "a string",
    list: "an array",
    dict: "an object",
    type(None): "null",
}


def invalid_type(param: str, expected: str, value: Any) -> RealtimeError:
    got = JSON_TYPE_NAMES.get(type(value), type(value).__name__)
    return RealtimeError(
        f"Invalid type for '{param}': expected {expected}, but got {got} instead.",
        code="invalid_type",
        param=param,
    )


def out_of_range(param: str, value: float, low: float | None, high: float | None) -> RealtimeError:
    kind = "integer" if isinstance(value, int) else "decimal"
    if low is not None and value < low:
        return RealtimeError(
            f"Invalid '{param}': {kind} below minimum value. Expected a value >= {_number(low)}, "
            f"but got {_number(value)} instead.",
            code=f"{kind}_below_min_value",
            param=param,
        )
    return RealtimeError(
        f"Invalid '{param}': {kind} above maximum value. Expected a value <= {_number(high)}, "
        f"but got {_number(value)} instead.",
        code=f"{kind}_above_max_value",
        param=param,
    )


def _number(value: float | None) -> str:
    try:
        return f"{value:g}"
    except OverflowError:  # an integer too large for a float
        return str(value)


def _quote(value: Any) -> str:
    return f"'{value}'" if isinstance(value, str) else json.dumps(value)


def decode_client_frame(text: str) -> dict[str, Any]:
    """Parse one text frame into a client event dict, or raise RealtimeError as the real server reports it."""
    if len(text) > MAX_EVENT_BYTES:
        raise RealtimeError(
            f"Event is too large: {len(text)} bytes. The maximum is {MAX_EVENT_BYTES} bytes.",
            code="event_too_large",
        )
    try:
        event = loads_strict(text)
    except ValueError as exc:
        # The real wording (live capture of 2026-09-18), then what the parser found.
        message = f"Invalid event: failed to parse JSON value. {exc}"
        raise RealtimeError(message, code="invalid_json") from None
    if not isinstance(event, dict):
        raise RealtimeError(
            "Invalid event: expected a JSON object, but got "
            f"{JSON_TYPE_NAMES.get(type(event), 'a value')} instead.",
            code="invalid_json",
        )
    return event


class StrictJSONError(ValueError):
    """JSON that RFC 8259 or our bounds refuse (raised for NaN, Infinity, lone surrogates, deep nesting)."""


def _refuse_constant(name: str) -> Any:
    raise StrictJSONError(f"'{name}' is not a JSON value")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise StrictJSONError(f"number '{text}' is out of range")
    return value


def loads_strict(text: str | bytes) -> Any:
    """Parse JSON as strict parsers do: no NaN/Infinity, no number that overflows to infinity, no lone
    surrogate escape (it cannot be encoded as UTF-8), and at most MAX_JSON_DEPTH levels of nesting.

    Raises ValueError (json.JSONDecodeError, or StrictJSONError naming the problem)."""
    if isinstance(text, bytes | bytearray):
        text = bytes(text).decode("utf-8")  # UnicodeDecodeError is a ValueError
    try:
        value = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except RecursionError:
        raise StrictJSONError(f"nesting deeper than {MAX_JSON_DEPTH} levels") from None
    _check_tree(value)
    return value


def _check_tree(value: Any) -> None:
    """Depth and lone surrogates, without recursion (the tree may be as deep as the decoder allowed)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, str):
            if not node.isascii() and _SURROGATE.search(node):
                raise StrictJSONError("lone leading surrogate in hex escape")
        elif isinstance(node, dict | list):
            if depth > MAX_JSON_DEPTH:
                raise StrictJSONError(f"nesting deeper than {MAX_JSON_DEPTH} levels")
            if isinstance(node, dict):
                stack.extend((key, depth) for key in node)
                stack.extend((item, depth + 1) for item in node.values())
            else:
                stack.extend((item, depth + 1) for item in node)


def check_event_type(event: dict[str, Any]) -> str:
    event_type = event.get("type")
    if event_type is None:
        raise missing_parameter("type")
    if not isinstance(event_type, str):
        raise invalid_type("type", "a string", event_type)
    if event_type not in CLIENT_EVENT_TYPES:
        raise invalid_value("type", event_type, LISTED_CLIENT_EVENT_TYPES)
    return event_type


def client_event_id(event: Any) -> str | None:
    """The client's own `event_id`, echoed in errors, when it is a string."""
    if isinstance(event, dict):
        value = event.get("event_id")
        if isinstance(value, str):
            return value
    return None


def encode_bytes(event: dict[str, Any]) -> bytes:
    """One event as the UTF-8 payload of a JSON text frame (compact, keys in order).

    orjson on the hot path (encoding was the largest share of a loaded server's CPU with the stdlib); what
    orjson refuses — a lone surrogate, an integer beyond 64 bits, a non-string key — takes the stdlib
    path below, so every event still goes out."""
    try:
        return orjson.dumps(event)
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        return _encode_stdlib(event).encode("utf-8")


def encode(event: dict[str, Any]) -> str:
    """One event as a JSON text frame, always encodable as UTF-8: a lone surrogate that reached an event
    (input refuses them, so only a server-side source could) goes out as U+FFFD."""
    return encode_bytes(event).decode("utf-8")


def _encode_stdlib(event: dict[str, Any]) -> str:
    text = json.dumps(event, separators=(",", ":"), ensure_ascii=False)
    if not text.isascii() and _SURROGATE.search(text):
        text = _SURROGATE.sub("\ufffd", text)
    return text


@dataclass
class IdFactory:
    """Seeded ids in the real prefixes' style (`sess_`, `item_`, `resp_`, `event_`), reproducible per seed.

    Event ids use a random stem and a counter: unique, cheap on the hot path, and deterministic.
    """

    rng: random.Random
    _event_stem: str = ""
    _event_count: int = 0

    def __post_init__(self) -> None:
        self._event_stem = "event_" + self._random(12)

    @classmethod
    def seeded(cls, *parts: object) -> IdFactory:
        return cls(random.Random("/".join(map(str, parts))))

    def _random(self, length: int) -> str:
        return "".join(self.rng.choices(_ALPHABET, k=length))

    def new(self, prefix: str) -> str:
        return f"{prefix}_{self._random(21)}"

    def event(self) -> str:
        self._event_count += 1
        return f"{self._event_stem}{self._event_count:08x}"
