"""The fault catalogue: each production failure as a small unit — its parameters, its scope, its effect.

A fault is either *session-scoped* (applied to each targeted live session: drop, close, stall, ...) or
*server-scoped* (changes how the server treats what comes next: reject-connects, expire-tokens,
rate-limit). `inject()` is the one way in, used by the control API, the CLI (through the control API) and
fault plans; every injection enters the history with its time, target and route.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from .dialect import BETA_EVENT_NAMES
from .protocol import SERVER_EVENT_TYPES, RealtimeError
from .schema import Bool, Enum, Int, Num, Obj, Str, check
from .stages import HoldFirstDelta, Latency

if TYPE_CHECKING:
    from .carrier import Carrier
    from .server import RealtimeServer
    from .webrtc.call import Call
    from .websocket import WebSocketCarrier

Scope = Literal["session", "server"]
MAX_REASON_BYTES = 123  # a close frame's reason: 125 bytes of payload less the 2-byte code
DEFAULT_RETRY_AFTER = 1.0  # seconds, when a 429 is not given its own Retry-After
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
    # Which session carriers a session fault can act on: the engine's faults work over any transport; wire
    # faults need a WebSocket, ICE/DTLS/SCTP faults a WebRTC call.
    transports: tuple[str, ...] = ("websocket", "webrtc")


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
    rate_limit_retry_after_asked: float | None = None  # None: Retry-After is what is left of the limit
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

    def rate_limit_retry_after(self) -> str:
        """The Retry-After of a rate-limited call: as the fault asked, or what is left of the limit."""
        asked = self.rate_limit_retry_after_asked
        return retry_after_header(asked if asked is not None else self.rate_limited())


def retry_after_header(seconds: float) -> str:
    """Retry-After in whole seconds (HTTP's delay-seconds), rounded up."""
    return str(math.ceil(seconds))


# ---- session-scoped -----------------------------------------------------------------------------------


def _drop(conn: WebSocketCarrier, params: dict[str, Any]) -> str:
    conn.drop(mid_frame=params.get("mid_frame", False))
    return "dropped (no close frame)" + (" mid-frame" if params.get("mid_frame") else "")


def _close(conn: WebSocketCarrier, params: dict[str, Any]) -> str:
    code, reason = params.get("code", 1011), params.get("reason", "")
    error = None
    if params.get("error"):
        error = RealtimeError(
            params.get("error_message", reason or "The server is closing this session."),
            code=params.get("error_code"),
            type=params.get("error_type", "server_error"),
        )
    conn.close_now(code, reason, error)
    return f"close {code}" + (" after an error event" if error else "")


def _expire_session(conn: Carrier, params: dict[str, Any]) -> str:
    session = conn.session
    if "ending" in params:
        session.limits.expiry_ending = params["ending"]
    session.expire()
    conn.pump()
    return f"session cap reached ({session.limits.expiry_ending})"


def _stall(conn: WebSocketCarrier, params: dict[str, Any]) -> str:
    seconds = params.get("seconds")
    conn.stall(seconds)
    return "stalled" + (f" for {seconds:g} s" if seconds else "")


def _latency(conn: WebSocketCarrier, params: dict[str, Any]) -> str:
    latency, jitter = params.get("ms", 0) / 1000, params.get("jitter_ms", 0) / 1000
    if latency or jitter:
        conn.add_stage(Latency.seeded(conn.seed, conn.conn_id, latency, jitter))
    else:
        conn.remove_stage(Latency.name)
    return f"latency {params.get('ms', 0)} ± {params.get('jitter_ms', 0)} ms on server events"


def _slow_first_delta(conn: WebSocketCarrier, params: dict[str, Any]) -> str:
    conn.add_stage(HoldFirstDelta(params.get("ms", 3000) / 1000))
    return f"next response's first audio delta held {params.get('ms', 3000)} ms"


def _server_error(conn: Carrier, params: dict[str, Any]) -> str:
    conn.session.inject_server_error(conn.loop.time())
    conn.pump()
    return "server_error mid-response"


def _benign_error(conn: Carrier, params: dict[str, Any]) -> str:
    code = params.get("code", "response_cancel_not_active")
    conn.session.error(RealtimeError(BENIGN_ERRORS[code], code=code))
    conn.pump()
    return f"benign error {code}"


def _idle_timeout(conn: Carrier, params: dict[str, Any]) -> str:
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


def _transcription_failed(conn: Carrier, params: dict[str, Any]) -> str:
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
        # A 429 always says when to come back.
        retry_after=params.get("retry_after", DEFAULT_RETRY_AFTER if status == 429 else None),
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
    server.faults.rate_limit_retry_after_asked = params.get("retry_after")
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


# ---- WebRTC: each cuts one call's real transport (see simulator/webrtc/call.py for how) -------------------


def _ice_blackhole(call: Call, params: dict[str, Any]) -> str:
    call.ice_blackhole()
    return "ICE black hole: every datagram of the call dropped both ways; consent checks go unanswered"


def _ice_disconnect_recover(call: Call, params: dict[str, Any]) -> str:
    seconds = params.get("seconds", 3.0)
    call.ice_disconnect_recover(seconds)
    return f"transient ICE cut for {seconds:g} s, then the path comes back by itself"


def _spawn_on(call: Call, coroutine: Coroutine[Any, Any, Any]) -> None:
    call.spawn(coroutine)


def _dtls_close(call: Call, params: dict[str, Any]) -> str:
    _spawn_on(call, call.dtls_close())
    return "DTLS closed (close_notify): the peer connection ends"


def _sctp_abort(call: Call, params: dict[str, Any]) -> str:
    _spawn_on(call, call.sctp_abort())
    return "SCTP aborted: the data channel dies, ICE/DTLS/media stay up"


def _datachannel_close(call: Call, params: dict[str, Any]) -> str:
    call.datachannel_close()
    return "oai-events data channel closed by the server"


def _arm_next_calls(
    server: RealtimeServer, key_id: str | None, count: int, setup: Callable[[Call], None]
) -> None:
    """Apply `setup` to the next `count` WebRTC calls (of `key_id`, or any) before their answer is made."""
    if server.webrtc is None:
        raise RealtimeError("WebRTC is not available on this server.", code="unsupported", param="kind")
    hooks = server.webrtc.on_new_call
    remaining = [count]

    def hook(call: Call) -> None:
        if key_id is not None and call.key_id != key_id:
            return
        setup(call)
        remaining[0] -= 1
        if remaining[0] <= 0:
            hooks.remove(hook)

    hooks.append(hook)


def _ice_fail_setup(server: RealtimeServer, params: dict[str, Any], key_id: str | None) -> str:
    count = params.get("count", 1)

    def fail(call: Call) -> None:
        call.fail_ice_setup()

    _arm_next_calls(server, key_id, count, fail)
    return f"the next {count} call(s) get an answer but their connectivity checks are never answered"


def _datachannel_delay(server: RealtimeServer, params: dict[str, Any], key_id: str | None) -> str:
    count, seconds = params.get("count", 1), params.get("seconds", 3.0)
    _arm_next_calls(server, key_id, count, lambda call: call.datachannel_delay(seconds))
    return f"the next {count} call(s) get their data channel opened {seconds:g} s late"


_TEXT = Str()
_WEBSOCKET = ("websocket",)
_WEBRTC = ("webrtc",)
CATALOGUE: dict[str, FaultKind] = {
    kind.name: kind
    for kind in (
        FaultKind(
            "drop",
            "session",
            Obj({"mid_frame": Bool()}),
            _drop,
            "abnormal closure: TCP torn down with no close frame (1006); mid_frame sends half a frame first",
            _WEBSOCKET,
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
            _close,
            "a close frame with a code and reason, optionally after an error event",
            _WEBSOCKET,
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
            _WEBSOCKET,
        ),
        FaultKind(
            "latency",
            "session",
            Obj({"ms": Int(0, 600000), "jitter_ms": Int(0, 600000)}),
            _latency,
            "delay every server event by ms ± jitter_ms (order kept)",
            _WEBSOCKET,
        ),
        FaultKind(
            "slow-first-delta",
            "session",
            Obj({"ms": Int(0, 600000)}),
            _slow_first_delta,
            "hold the next response's first audio delta (and what follows) for ms",
            _WEBSOCKET,
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
                    "reason": Str(max_length=MAX_REASON_BYTES),
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
        FaultKind(
            "ice-blackhole",
            "session",
            Obj({}),
            _ice_blackhole,
            "WebRTC: the server silently stops answering and sending; the client's consent checks fail "
            "(aiortc ~30 s to closed) unless its own watchdog acts",
            _WEBRTC,
        ),
        FaultKind(
            "ice-disconnect-recover",
            "session",
            Obj({"seconds": Num(0)}),
            _ice_disconnect_recover,
            "WebRTC: a transient cut that heals by itself; clients must not tear down",
            _WEBRTC,
        ),
        FaultKind(
            "dtls-close", "session", Obj({}), _dtls_close, "WebRTC: DTLS close_notify, an abrupt end", _WEBRTC
        ),
        FaultKind(
            "sctp-abort",
            "session",
            Obj({}),
            _sctp_abort,
            "WebRTC: SCTP ABORT; the data channel dies while media and ICE stay up",
            _WEBRTC,
        ),
        FaultKind(
            "datachannel-close",
            "session",
            Obj({}),
            _datachannel_close,
            "WebRTC: the server closes the oai-events channel",
            _WEBRTC,
        ),
        FaultKind(
            "ice-fail-setup",
            "server",
            Obj({"count": Int(1, 100000)}),
            _ice_fail_setup,
            "WebRTC: the next N calls get an answer whose connectivity checks are never answered",
        ),
        FaultKind(
            "datachannel-delay",
            "server",
            Obj({"count": Int(1, 100000), "seconds": Num(0)}),
            _datachannel_delay,
            "WebRTC: the next N calls' data channel opens late (send-before-open breaks)",
        ),
    )
}

TARGET = Obj({"session": Str(), "key_id": Str(), "key": Str(), "all": Bool()})


# What `at_event` / `after_event` may name: every server event type, in either dialect.
EVENT_TYPES = SERVER_EVENT_TYPES | frozenset(BETA_EVENT_NAMES.values())


def check_event_type(event_type: str, param: str) -> str:
    if event_type not in EVENT_TYPES:
        raise RealtimeError(
            f"Unknown server event type '{event_type}'. Faults can follow any event the server sends, "
            f"e.g. response.output_audio.delta.",
            code="invalid_value",
            param=param,
        )
    return event_type


def validate(kind: str, params: Any) -> tuple[FaultKind, dict[str, Any]]:
    if kind not in CATALOGUE:
        raise RealtimeError(
            f"Unknown fault kind '{kind}'. Known kinds: {', '.join(CATALOGUE)}.",
            code="invalid_value",
            param="kind",
        )
    spec = CATALOGUE[kind]
    checked = check(spec.params, params if params is not None else {}, "params")
    reason = checked.get("reason")
    if reason is not None and len(reason.encode()) > MAX_REASON_BYTES:
        raise RealtimeError(
            f"Invalid 'params.reason': a close reason is at most {MAX_REASON_BYTES} bytes of UTF-8, "
            f"got {len(reason.encode())}.",
            code="string_above_max_length",
            param="params.reason",
        )
    return spec, checked


def inject(
    server: RealtimeServer,
    kind: str,
    params: dict[str, Any] | None,
    target: dict[str, Any] | None,
    *,
    route: str,
    connections: list[Carrier] | None = None,
) -> dict[str, Any]:
    """Validate, resolve the target, apply, and record. Returns what was done (for the API and the CLI).

    A session fault is recorded once per session it hit (with that `session` and its `key_id`), so the
    history of one session or one key shows the faults it met; a server fault is recorded once.
    """
    spec, checked = validate(kind, params)
    target = check(TARGET, target or {}, "target")
    key_id = server.target_key_id(target)
    record = {"fault": kind, "params": checked, "target": target, "route": route}
    if spec.scope == "server":
        result = spec.apply(server, checked, key_id)
        server.history.record("fault", **record, key_id=key_id, applied_to=[], result=result)
        return {"kind": kind, "scope": "server", "applied_to": [], "result": result}
    if connections is None:
        connections = server.resolve_targets(target)
    connections = [c for c in connections if c.transport in spec.transports]
    if not connections:
        over = "" if len(spec.transports) > 1 else f" {spec.transports[0]}"
        raise RealtimeError(f"No live{over} session matches the target.", code="no_target", param="target")
    results = {}
    for conn in connections:
        sid = conn.session.id
        results[sid] = spec.apply(conn, checked)
        server.history.record(
            "fault", **record, session=sid, key_id=conn.key_id, applied_to=[sid], result=results[sid]
        )
    return {
        "kind": kind,
        "scope": "session",
        "applied_to": list(results),
        "result": next(iter(results.values())),
    }
