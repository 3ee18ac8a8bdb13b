"""What the parts of one session share: its limits, configuration and ids, the outbox, the close request."""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from .. import audio
from ..dialect import Dialect
from ..model import ScriptedModel
from ..protocol import IdFactory, RealtimeError

# How the session cap ends a session: the `session_expired` error event, a 1001 close, both, or (Azure) a
# `server_error` event and a close.
ExpiryEnding = Literal["error", "close", "both", "server_error"]
EXPIRY_ENDINGS: tuple[ExpiryEnding, ...] = ("error", "close", "both", "server_error")
BYTES_PER_MS = audio.SAMPLE_RATE * 2 // 1000  # pcm16 mono at 24 kHz
# The real service streams a reply's audio faster than it plays: clients buffer it and track playback
# themselves (what truncate's `audio_end_ms` is for). rtsim's default: 4x real time, a 100 ms chunk every
# 25 ms (docs/parity.md names the sources). `pacing` 1.0 is real-time delivery, 0 as fast as possible.
FASTER_THAN_REAL_TIME = 0.25
# Input transcription runs beside the response, arriving 0.5-1.4 s after the commit (captures), so often
# after `response.created`.
TRANSCRIPTION_DELAY = (0.5, 1.4)
# The gap between a message's `content_part.added` and its first audio delta (captures show one; the window
# in which a barge-in finds an assistant item with no audio, livekit/agents#6157).
AUDIO_START_DELAY = 0.1


@dataclass
class Limits:
    """Every limit a session obeys. Times are seconds; scale them down to compress an hour into seconds."""

    max_session: float = 3600.0
    context_window: int = 32768
    response_latency: float = 0.0
    expiry_ending: ExpiryEnding = "both"
    chunk_ms: int = 100
    pacing: float = FASTER_THAN_REAL_TIME  # seconds of delivery per second of audio: 1.0 = real time
    # Seconds from a commit to its transcription events, drawn (seeded) between the two; (0, 0): at once.
    transcription_delay: tuple[float, float] = TRANSCRIPTION_DELAY
    audio_start_delay: float = AUDIO_START_DELAY
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
        rng: random.Random | None = None,
    ) -> None:
        self.ids = ids
        self.rng = rng or random.Random(0)  # the session's seeded timing (transcription delays)
        self.model = model
        self.limits = limits
        self.dialect = dialect
        self.config = config  # GA-shaped; `session.update` replaces it whole
        self.outbox: list[dict[str, Any]] = []
        self.close_request: tuple[int, str] | None = None
        self.last_activity = now
        # Engine work due later that is not a response step (a transcription finishing): (due, order, action)
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._timer_order = itertools.count()

    def later(self, due: float, action: Callable[[], None]) -> None:
        """Run `action` once the session's time reaches `due` (events it emits go out then)."""
        heapq.heappush(self._timers, (due, next(self._timer_order), action))

    def run_timers(self, now: float) -> None:
        timers = self._timers
        while timers and timers[0][0] <= now and self.close_request is None:
            heapq.heappop(timers)[2]()

    @property
    def next_timer(self) -> float | None:
        return self._timers[0][0] if self._timers else None

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
