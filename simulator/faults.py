"""The fault catalogue: each production failure as a small unit — its parameters, its scope, its effect.

A fault is either *session-scoped* (applied to each targeted live session: drop, close, stall, ...) or
*server-scoped* (changes how the server treats what comes next: reject-connects, expire-tokens,
rate-limit). `inject()` is the one way in, used by the control API, the CLI (through the control API) and
fault plans; every injection enters the history with its time, target and route.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from .protocol import RealtimeError
from .schema import Bool, Enum, Int, Num, Obj, Str, check

if TYPE_CHECKING:
    from .server import Connection, RealtimeServer

Scope = Literal["session", "server"]
CLOSE_CODES = (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 4000)
BENIGN_ERRORS = {
    "response_cancel_not_active": "Cancellation failed: no active response found.",
    "conversation_already_has_active_response": (
        "Conversation already has an active response in progress. Wait until the response is finished "
        "before creating a new one."
    ),
    "input_audio_buffer_commit_empty": (
        "Error committing input audio buffer: buffer too small. Expected at least 100ms of audio, but buffer "
        "only has 0.00ms of audio."
    ),
    "item_not_found": "Item with item_id 'item_unknown' not found.",
}


@dataclass(frozen=True)
class FaultKind:
    name: str
    scope: Scope
    params: Obj
    apply: Callable[..., str]
    doc: str


@dataclass
class Rejection:
    """One pending `reject-connects` rule: the next `remaining` handshakes (of `key_id`, or any) refused."""

    remaining: int
    status: int | None = None
    close_code: int | None = None
    reason: str = ""
    retry_after: float | None = None
    key_id: str | None = None


@dataclass
class FaultState:
    """What server-scoped faults leave behind for the handshake and REST paths to consult."""

    rejections: list[Rejection] = field(default_factory=list)
    rate_limited_until: float = 0.0
    rate_limit_retry_after: float = 0.0
    token_advertised_ttl: float | None = None
    token_usable_for: float | None = None

    def take_rejection(self, key_id: str | None) -> Rejection | None:
        for rule in self.rejections:
            if rule.key_id in (None, key_id):
                rule.remaining -= 1
                if rule.remaining <= 0:
                    self.rejections.remove(rule)
                return rule
        return None

    def rate_limited(self) -> float:
        """Seconds left of an active rate limit (0 when none)."""
        return max(0.0, self.rate_limited_until - time.time())


# ---- session-scoped -----------------------------------------------------------------------------------


def _drop(conn: Connection, params: dict[str, Any]) -> str:
    conn.drop(mid_frame=params.get("mid_frame", False))
    return "dropped (no close frame)" + (" mid-frame" if params.get("mid_frame") else "")


def _close(conn: Connection, params: dict[str, Any]) -> str:
    code, reason = params.get("code", 1011), params.get("reason", "")
    error = None
    if params.get("error"):
        error = RealtimeError(
            params.get("error_message", reason or "The server is closing this session."),
            code=params.get("error_code"),
            type=params.get("error_type", "server_error"),
        )
    conn.close_after(code, reason, error)
    return f"close {code}" + (" after an error event" if error else "")


def _expire_session(conn: Connection, params: dict[str, Any]) -> str:
    session = conn.session
    if "ending" in params:
        session.limits.expiry_ending = params["ending"]
    session.expire()
    conn.pump()
    return f"session cap reached ({session.limits.expiry_ending})"


def _stall(conn: Connection, params: dict[str, Any]) -> str:
    seconds = params.get("seconds")
    conn.stall(seconds)
    return "stalled" + (f" for {seconds:g} s" if seconds else "")


def _latency(conn: Connection, params: dict[str, Any]) -> str:
    conn.set_latency(params.get("ms", 0) / 1000, params.get("jitter_ms", 0) / 1000)
    return f"latency {params.get('ms', 0)} ± {params.get('jitter_ms', 0)} ms on server events"


def _slow_first_delta(conn: Connection, params: dict[str, Any]) -> str:
    conn.first_delta_delay = params.get("ms", 3000) / 1000
    return f"next response's first audio delta held {params.get('ms', 3000)} ms"


def _server_error(conn: Connection, params: dict[str, Any]) -> str:
    conn.session.inject_server_error(conn.loop.time())
    conn.pump()
    return "server_error mid-response"


def _benign_error(conn: Connection, params: dict[str, Any]) -> str:
    code = params.get("code", "response_cancel_not_active")
    conn.session.error(RealtimeError(BENIGN_ERRORS[code], code=code))
    conn.pump()
    return f"benign error {code}"


def _idle_timeout(conn: Connection, params: dict[str, Any]) -> str:
    seconds = params.get("seconds", 0)
    session = conn.session
    if seconds == 0:
        session.idle_timeout = session.idle_timeout or 0.0
        session.idle_expire()
        conn.pump()
        return "idle timeout now"
    session.idle_timeout = float(seconds)
    conn.pump()
    return f"idle timeout set to {seconds:g} s"


def _transcription_failed(conn: Connection, params: dict[str, Any]) -> str:
    conn.session.fail_next_transcription = True
    return "next input transcription fails"


# ---- server-scoped ------------------------------------------------------------------------------------


def _reject_connects(server: RealtimeServer, params: dict[str, Any], key_id: str | None) -> str:
    status, close_code = params.get("status"), params.get("close_code")
    if status is None and close_code is None:
        status = 503
    rule = Rejection(
        remaining=params.get("count", 1),
        status=status,
        close_code=close_code,
        reason=params.get("reason", ""),
        retry_after=params.get("retry_after"),
        key_id=key_id,
    )
    server.faults.rejections.append(rule)
    how = f"HTTP {status}" if status is not None else f"accept then close {close_code}"
    return f"next {rule.remaining} handshake(s) answered with {how}"


def _expire_tokens(server: RealtimeServer, params: dict[str, Any], key_id: str | None) -> str:
    if "usable_for" in params:
        server.faults.token_usable_for = params["usable_for"]
        server.faults.token_advertised_ttl = params.get("advertise", 7200)
        return (
            f"tokens minted from now on say {server.faults.token_advertised_ttl:g} s but stop working "
            f"after {params['usable_for']:g} s"
        )
    if "token_id" in params:
        server.tokens.revoke_token(params["token_id"])
        return f"token {params['token_id']} expired"
    if key_id is None:
        raise RealtimeError(
            "expire-tokens needs a key (target.key or target.key_id), a token_id, or usable_for",
            code="missing_required_parameter",
            param="target",
        )
    server.tokens.revoke_key(key_id)
    return f"every token minted for {key_id} expired"


def _rate_limit(server: RealtimeServer, params: dict[str, Any], key_id: str | None) -> str:
    seconds = params.get("seconds", 30)
    server.faults.rate_limited_until = time.time() + seconds
    server.faults.rate_limit_retry_after = params.get("retry_after", seconds)
    for conn in server.live_connections(key_id=key_id):
        conn.session.emit(
            {
                "type": "rate_limits.updated",
                "rate_limits": [
                    {"name": "requests", "limit": 5000, "remaining": 0, "reset_seconds": float(seconds)},
                    {"name": "tokens", "limit": 40000, "remaining": 0, "reset_seconds": float(seconds)},
                ],
            }
        )
        conn.pump()
    return f"rate limited for {seconds:g} s (token minting answers 429)"


_TEXT = Str()
CATALOGUE: dict[str, FaultKind] = {
    kind.name: kind
    for kind in (
        FaultKind(
            "drop",
            "session",
            Obj({"mid_frame": Bool()}),
            _drop,
            "abnormal closure: TCP torn down with no close frame (1006); mid_frame sends half a frame first",
        ),
        FaultKind(
            "close",
            "session",
            Obj(
                {
                    "code": Enum(CLOSE_CODES),
                    "reason": Str(max_length=123),
                    "error": Bool(),
                    "error_code": _TEXT,
                    "error_type": _TEXT,
                    "error_message": _TEXT,
                }
            ),
            _close,
            "a close frame with a code and reason, optionally after an error event",
        ),
        FaultKind(
            "expire-session",
            "session",
            Obj({"ending": Enum(("error", "close", "both"))}),
            _expire_session,
            "the session cap reached now (session_expired error, close 1001, or both)",
        ),
        FaultKind(
            "stall",
            "session",
            Obj({"seconds": Num(0)}),
            _stall,
            "half-open: nothing sent, pings unanswered, socket left open (optionally for N seconds)",
        ),
        FaultKind(
            "latency",
            "session",
            Obj({"ms": Int(0, 600000), "jitter_ms": Int(0, 600000)}),
            _latency,
            "delay every server event by ms ± jitter_ms (order kept)",
        ),
        FaultKind(
            "slow-first-delta",
            "session",
            Obj({"ms": Int(0, 600000)}),
            _slow_first_delta,
            "hold the next response's first audio delta (and what follows) for ms",
        ),
        FaultKind(
            "server-error",
            "session",
            Obj({}),
            _server_error,
            "an error event of type server_error mid-response; the response ends failed",
        ),
        FaultKind(
            "benign-error",
            "session",
            Obj({"code": Enum(tuple(BENIGN_ERRORS))}),
            _benign_error,
            "an error real clients must survive (response_cancel_not_active and friends)",
        ),
        FaultKind(
            "idle-timeout",
            "session",
            Obj({"seconds": Num(0)}),
            _idle_timeout,
            "set the activity idle timeout (seconds), or 0: the idle timeout fires now",
        ),
        FaultKind(
            "transcription-failed",
            "session",
            Obj({}),
            _transcription_failed,
            "the next input audio transcription ends with .failed",
        ),
        FaultKind(
            "reject-connects",
            "server",
            Obj(
                {
                    "count": Int(1, 100000),
                    "status": Enum((401, 403, 429, 500, 502, 503)),
                    "close_code": Enum(CLOSE_CODES),
                    "reason": Str(max_length=123),
                    "retry_after": Num(0),
                }
            ),
            _reject_connects,
            "the next N handshakes refused with an HTTP status, or accepted then closed with a code",
        ),
        FaultKind(
            "expire-tokens",
            "server",
            Obj({"token_id": _TEXT, "usable_for": Num(0), "advertise": Num(0)}),
            _expire_tokens,
            "every token of a key (or one token) expires now; or usable_for: tokens stop working early",
        ),
        FaultKind(
            "rate-limit",
            "server",
            Obj({"seconds": Num(0), "retry_after": Num(0)}),
            _rate_limit,
            "rate_limits.updated to zero on live sessions; token minting answers 429 with Retry-After",
        ),
    )
}

TARGET = Obj({"session": Str(), "key_id": Str(), "key": Str(), "all": Bool()})


def validate(kind: str, params: Any) -> tuple[FaultKind, dict[str, Any]]:
    if kind not in CATALOGUE:
        raise RealtimeError(
            f"Unknown fault kind '{kind}'. Known kinds: {', '.join(CATALOGUE)}.",
            code="invalid_value",
            param="kind",
        )
    spec = CATALOGUE[kind]
    return spec, check(spec.params, params if params is not None else {}, "params")


def inject(
    server: RealtimeServer,
    kind: str,
    params: dict[str, Any] | None,
    target: dict[str, Any] | None,
    *,
    route: str,
    connections: list[Connection] | None = None,
) -> dict[str, Any]:
    """Validate, resolve the target, apply, and record. Returns what was done (for the API and the CLI)."""
    spec, checked = validate(kind, params)
    target = check(TARGET, target or {}, "target")
    key_id = server.target_key_id(target)
    if spec.scope == "server":
        outcome = {
            "kind": kind,
            "scope": "server",
            "applied_to": [],
            "result": spec.apply(server, checked, key_id),
        }
    else:
        if connections is None:
            connections = server.resolve_targets(target)
        if not connections:
            raise RealtimeError("No live session matches the target.", code="no_target", param="target")
        results = {conn.session.id: spec.apply(conn, checked) for conn in connections}
        outcome = {
            "kind": kind,
            "scope": "session",
            "applied_to": list(results),
            "result": next(iter(results.values())),
        }
    server.history.record(
        "fault",
        fault=kind,
        params=checked,
        target=target,
        route=route,
        applied_to=outcome["applied_to"],
        result=outcome["result"],
        key_id=key_id,
    )
    return outcome
