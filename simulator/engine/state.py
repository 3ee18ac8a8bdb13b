"""What the parts of one session share: its limits, configuration and ids, the outbox, the close request."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from .. import audio
from ..dialect import Dialect
from ..model import ScriptedModel
from ..protocol import IdFactory, RealtimeError

ExpiryEnding = Literal["error", "close", "both"]
BYTES_PER_MS = audio.SAMPLE_RATE * 2 // 1000  # pcm16 mono at 24 kHz


@dataclass
class Limits:
    """Every limit a session obeys. Times are seconds; scale them down to compress an hour into seconds."""

    max_session: float = 3600.0
    context_window: int = 32768
    response_latency: float = 0.0
    expiry_ending: ExpiryEnding = "both"
    chunk_ms: int = 100
    pacing: float = 1.0  # 1.0 = audio delivered in real time; 0 = as fast as possible
    # Close the session after this long without client activity (streaming sessions); None = never.
    idle_timeout: float | None = None
    # Response steps one `advance` runs at most; the rest stay due, so an unpaced reply is produced in slices
    # and a live server's event loop serves other sessions in between.
    steps_per_advance: int = 64
    # How long a (scripted) remote MCP server takes to list its tools or run a call; 0 = at once.
    mcp_latency: float = 0.0


class SessionState:
    """The state every part of a session reads or writes, and the one way its events leave: `emit`."""

    def __init__(
        self,
        *,
        ids: IdFactory,
        model: ScriptedModel,
        limits: Limits,
        dialect: Dialect,
        config: dict[str, Any],
        now: float,
    ) -> None:
        self.ids = ids
        self.model = model
        self.limits = limits
        self.dialect = dialect
        self.config = config  # GA-shaped; `session.update` replaces it whole
        self.outbox: list[dict[str, Any]] = []
        self.close_request: tuple[int, str] | None = None
        self.last_activity = now

    def emit(self, event: dict[str, Any]) -> None:
        """Queue a server event: stamped with an event id, rendered in the session's dialect."""
        if "item" in event:  # items keep changing after they are announced; the event shows them as they were
            event["item"] = snapshot(event["item"])
        event["event_id"] = self.ids.event()
        out = self.dialect.outgoing(event)
        if out is not None:
            self.outbox.append(out)

    def error(self, exc: RealtimeError, client_event_id: str | None = None) -> None:
        self.emit({"type": "error", "error": exc.body(client_event_id)})


def snapshot(item: dict[str, Any]) -> dict[str, Any]:
    content = item.get("content")
    if content is None:
        return dict(item)
    return {**item, "content": [dict(part) for part in content]}


def word_pieces(text: str, n: int) -> list[str]:
    """Split text into n consecutive pieces on word boundaries, in step with n audio chunks."""
    if n <= 1:
        return [text]
    pieces: list[str] = []
    start = 0
    for k in range(1, n + 1):
        end = len(text) if k == n else int(len(text) * k / n)
        while 0 < end < len(text) and not text[end - 1].isspace() and end > start:
            end = text.find(" ", end)
            end = len(text) if end < 0 else end + 1
        end = max(end, start)
        pieces.append(text[start:end])
        start = end
    return pieces
