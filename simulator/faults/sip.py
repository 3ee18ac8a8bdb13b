"""SIP faults: what the caller's phone does on the line. `dtmf` presses keypad keys on an accepted SIP call
(`input_audio_buffer.dtmf_event_received` per key), so a fault plan or an `at_event` schedule can script
keypad input at any moment of a conversation."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from ..protocol import RealtimeError
from ..schema import Obj, Str
from .kind import SIP, FaultKind, Target

if TYPE_CHECKING:
    from ..sip import SipCall


def dtmf(target: Target, params: dict[str, Any]) -> str:
    from ..sip import DTMF_KEYS

    keys = params.get("keys", "1")
    if not keys or any(key not in DTMF_KEYS for key in keys):
        raise RealtimeError(
            f"Invalid 'params.keys': expected keypad keys (0-9, *, #, A-D), but got '{keys[:50]}' instead.",
            code="invalid_value",
            param="params.keys",
        )
    cast("SipCall", target.carrier).dtmf(keys)
    return f"the caller pressed {keys}"


FAULTS = (
    FaultKind(
        "dtmf",
        "session",
        Obj({"keys": Str(max_length=64)}),
        dtmf,
        "SIP: the caller presses keypad keys (default 1): one input_audio_buffer.dtmf_event_received each",
        SIP,
    ),
)
