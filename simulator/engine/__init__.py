"""The session engine: one Realtime session as a pure state machine, with no sockets and no clock of its own.

A transport feeds a `Session` client events and the time, and sends what it produced; the same engine
serves WebSocket and WebRTC, and tests drive it directly. The session is a facade over three parts that
share one `SessionState` (limits, configuration, ids, outbox):

- `conversation`: the items, the client's item events, the context window and token accounting;
- `turns`: input audio, server VAD, commits and transcription, the idle nudge;
- `responses`: creating, pacing, delivering, cancelling and accounting for responses.
"""

from .conversation import AUDIO_TOKENS_PER_SECOND, ITEM, PARTS_BY_ROLE, Item, audio_tokens, heard_transcript
from .responses import RESPONSE_PARAMS, Output, ResponseRun
from .session import EVENT_FIELDS, Session
from .state import BYTES_PER_MS, ExpiryEnding, Limits, snapshot
from .turns import SEMANTIC_SILENCE_MS, UNSCRIPTED_TRANSCRIPT

__all__ = [
    "AUDIO_TOKENS_PER_SECOND",
    "BYTES_PER_MS",
    "EVENT_FIELDS",
    "ITEM",
    "PARTS_BY_ROLE",
    "RESPONSE_PARAMS",
    "SEMANTIC_SILENCE_MS",
    "UNSCRIPTED_TRANSCRIPT",
    "ExpiryEnding",
    "Item",
    "Limits",
    "Output",
    "ResponseRun",
    "Session",
    "audio_tokens",
    "heard_transcript",
    "snapshot",
]
