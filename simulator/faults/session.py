"""Faults of the session itself, over any transport: its cap reached, a server error mid-response, benign
errors, the idle timeout, a failed input transcription. Each acts on the carrier's engine session and
pumps what the session produced."""

from __future__ import annotations

from typing import Any

from ..engine.state import EXPIRY_ENDINGS
from ..protocol import RealtimeError
from ..schema import Enum, Num, Obj
from .kind import MAX_FAULT_SECONDS, FaultKind, Target

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


def expire_session(target: Target, params: dict[str, Any]) -> str:
    carrier = target.carrier
    session = carrier.session
    if "ending" in params:
        session.limits.expiry_ending = params["ending"]
    session.expire()
    carrier.pump()
    return f"session cap reached ({session.limits.expiry_ending})"


def server_error(target: Target, params: dict[str, Any]) -> str:
    carrier = target.carrier
    carrier.session.inject_server_error(carrier.loop.time())
    carrier.pump()
    return "server_error mid-response"


def benign_error(target: Target, params: dict[str, Any]) -> str:
    code = params.get("code", "response_cancel_not_active")
    target.carrier.session.error(RealtimeError(BENIGN_ERRORS[code], code=code))
    target.carrier.pump()
    return f"benign error {code}"


def idle_timeout(target: Target, params: dict[str, Any]) -> str:
    seconds = params.get("seconds", 0)
    carrier = target.carrier
    session = carrier.session
    if seconds == 0:
        session.idle_timeout = session.idle_timeout or 0.0
        session.idle_expire()
        carrier.pump()
        return "idle timeout now"
    session.idle_timeout = float(seconds)
    carrier.pump()
    return f"idle timeout set to {seconds:g} s"


def transcription_failed(target: Target, params: dict[str, Any]) -> str:
    target.carrier.session.fail_next_transcription = True
    return "next input transcription fails"


FAULTS = (
    FaultKind(
        "expire-session",
        "session",
        Obj({"ending": Enum(EXPIRY_ENDINGS)}),
        expire_session,
        "the session cap reached now (session_expired error, close 1001, both, or Azure's server_error)",
    ),
    FaultKind(
        "server-error",
        "session",
        Obj({}),
        server_error,
        "an error event of type server_error mid-response; the response ends failed",
    ),
    FaultKind(
        "benign-error",
        "session",
        Obj({"code": Enum(tuple(BENIGN_ERRORS))}),
        benign_error,
        "an error real clients must survive (response_cancel_not_active and friends)",
    ),
    FaultKind(
        "idle-timeout",
        "session",
        Obj({"seconds": Num(0, MAX_FAULT_SECONDS)}),
        idle_timeout,
        "set the activity idle timeout (seconds), or 0: the idle timeout fires now",
    ),
    FaultKind(
        "transcription-failed",
        "session",
        Obj({}),
        transcription_failed,
        "the next input audio transcription ends with .failed",
    ),
)
