"""Wire faults of a WebSocket connection: an abnormal drop, a close frame, a half-open stall, and delays on
the outbound chain (latency, a slow first audio delta)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from ..protocol import RealtimeError
from ..schema import Bool, Enum, Int, Num, Obj, Str
from ..stages import HoldFirstDelta, Latency
from .kind import CLOSE_CODES, MAX_FAULT_SECONDS, MAX_REASON_BYTES, WEBSOCKET, FaultKind, Target

if TYPE_CHECKING:
    from ..websocket import WebSocketCarrier


def _websocket(target: Target) -> WebSocketCarrier:
    return cast("WebSocketCarrier", target.carrier)  # the kind's transports say it is one


def drop(target: Target, params: dict[str, Any]) -> str:
    _websocket(target).drop(mid_frame=params.get("mid_frame", False))
    return "dropped (no close frame)" + (" mid-frame" if params.get("mid_frame") else "")


def close(target: Target, params: dict[str, Any]) -> str:
    code, reason = params.get("code", 1011), params.get("reason", "")
    error = None
    if params.get("error"):
        error = RealtimeError(
            params.get("error_message", reason or "The server is closing this session."),
            code=params.get("error_code"),
            type=params.get("error_type", "server_error"),
        )
    target.carrier.close_now(code, reason, error)
    return f"close {code}" + (" after an error event" if error else "")


def stall(target: Target, params: dict[str, Any]) -> str:
    seconds = params.get("seconds")
    target.carrier.stall(seconds)
    return "stalled" + (f" for {seconds:g} s" if seconds else "")


def latency(target: Target, params: dict[str, Any]) -> str:
    carrier = target.carrier
    delay, jitter = params.get("ms", 0) / 1000, params.get("jitter_ms", 0) / 1000
    if delay or jitter:
        carrier.add_stage(Latency.seeded(carrier.seed, carrier.conn_id, delay, jitter))
    else:
        carrier.remove_stage(Latency.name)
    return f"latency {params.get('ms', 0)} ± {params.get('jitter_ms', 0)} ms on server events"


def slow_first_delta(target: Target, params: dict[str, Any]) -> str:
    target.carrier.add_stage(HoldFirstDelta(params.get("ms", 3000) / 1000))
    return f"next response's first audio delta held {params.get('ms', 3000)} ms"


_TEXT = Str()
FAULTS = (
    FaultKind(
        "drop",
        "session",
        Obj({"mid_frame": Bool()}),
        drop,
        "abnormal closure: TCP torn down with no close frame (1006); mid_frame sends half a frame first",
        WEBSOCKET,
    ),
    FaultKind(
        "close",
        "session",
        Obj(
            {
                "code": Enum(CLOSE_CODES),
                "reason": Str(max_length=MAX_REASON_BYTES),
                "error": Bool(),
                "error_code": _TEXT,
                "error_type": _TEXT,
                "error_message": _TEXT,
            }
        ),
        close,
        "a close frame with a code and reason, optionally after an error event",
        WEBSOCKET,
    ),
    FaultKind(
        "stall",
        "session",
        Obj({"seconds": Num(0, MAX_FAULT_SECONDS)}),
        stall,
        "half-open: nothing sent, pings unanswered, socket left open (optionally for N seconds)",
        WEBSOCKET,
    ),
    FaultKind(
        "latency",
        "session",
        Obj({"ms": Int(0, 600000), "jitter_ms": Int(0, 600000)}),
        latency,
        "delay every server event by ms ± jitter_ms (order kept)",
        WEBSOCKET,
    ),
    FaultKind(
        "slow-first-delta",
        "session",
        Obj({"ms": Int(0, 600000)}),
        slow_first_delta,
        "hold the next response's first audio delta (and what follows) for ms",
        WEBSOCKET,
    ),
)
