"""What the reference client tracks: each user turn's fate, the assistant audio playing, and each session.

- `TrackedTurn`: one user turn of the scenario and its fate, queued → sent → answered | interrupted | failed
  | lost.
- `Playback`: assistant audio as the user hears it: a playback clock over what arrived (ahead of it).
- `Link`: one WebSocket carrying one server session, with the turn on it, the response underway, the
  handoff schedule and the item acknowledgements a context restore waits for.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection

from rtsim.clients.common import ScheduledTurn
from rtsim.clients.reconnect import Retry
from rtsim.clients.rotation import HandoffSchedule


@dataclass(eq=False)
class TrackedTurn:
    """One user turn and its fate: queued → sent → answered | interrupted | failed | lost."""

    spec: ScheduledTurn
    backlog: bool  # held back (due while disconnected, or being asked again): never barges in
    status: str = "queued"
    sends: int = 0
    reasked_after_drop: int = 0
    reasked_after_failure: int = 0
    response_id: str | None = None
    heard: str | None = None  # what the server heard of an audio turn (its transcript)
    reply: str | None = None


@dataclass
class Playback:
    """Assistant audio as the user hears it: a speaker that plays what arrived, in real time, in order.

    The server sends audio faster than real time, so arrival runs ahead of playback: what was heard is the
    playback clock's position, not what was received. A gap in arrival (the audio ran out) pauses playback.
    """

    item_id: str
    response_id: str
    started_at: float  # when its first audio started playing (after any audio queued before it)
    received_ms: float = 0.0
    ends_at: float = 0.0  # when the speaker will have played everything received

    def __post_init__(self) -> None:
        self.ends_at = max(self.ends_at, self.started_at)

    def queue(self, ms: float, now: float) -> None:
        """Audio arrived: it plays after what is already queued (or at once, if the speaker ran dry)."""
        self.ends_at = max(self.ends_at, now) + ms / 1000
        self.received_ms += ms

    def played_ms(self, now: float) -> int:
        unplayed = max(0.0, self.ends_at - max(now, self.started_at)) * 1000
        return int(max(0.0, self.received_ms - unplayed))

    def playing(self, now: float) -> bool:
        return now < self.ends_at and self.received_ms > 0


@dataclass(eq=False)
class Link:
    """One WebSocket carrying one server session, and what the client knows about that session."""

    number: int
    ws: ClientConnection
    session_id: str
    opened_at: float
    handoff: HandoffSchedule  # when to rotate to a new session before this one's cap
    last_event_at: float
    kept_alive_at: float = 0.0  # the last keep-alive call (streaming-session rules)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    close_code: int | None = None
    close_reason: str = ""
    reader: asyncio.Task[None] | None = None
    liveness: asyncio.Task[None] | None = None  # the client's pings
    inflight: TrackedTurn | None = None  # the latest user turn sent on this session and not finished
    response_id: str | None = None  # the response being generated
    awaiting_since: float | None = None  # a response was asked for (or audio committed), none created yet
    response_turns: dict[str, TrackedTurn] = field(default_factory=dict)
    cancelled: set[str] = field(default_factory=set)
    playback: Playback | None = None
    # (response, item, audio_end_ms) of a VAD barge-in, truncated once the cancelled response is done
    deferred_truncate: tuple[str, str, int] | None = None
    streaming: asyncio.Task[None] | None = None  # an audio turn going out
    acks: dict[str, asyncio.Future[bool]] = field(default_factory=dict)  # item id -> created?
    ack_events: dict[str, str] = field(default_factory=dict)  # client event id -> item id
    remembered: int = 0  # how many of the client's memory entries this session holds
    responses_done: int = 0
    abandoned: bool = False
    # MCP servers declared for this session whose tool listing has not ended yet, and "all have"
    mcp_unlisted: set[str] = field(default_factory=set)
    mcp_listed: asyncio.Event = field(default_factory=asyncio.Event)
    event_ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def busy(self) -> bool:
        return self.response_id is not None or self.awaiting_since is not None or self.streaming is not None

    def next_event_id(self) -> str:
        return f"evt_ref{self.number}_{next(self.event_ids)}"

    async def send(self, event: dict[str, Any]) -> None:
        event.setdefault("event_id", self.next_event_id())
        await self.ws.send(json.dumps(event))

    async def send_acknowledged(self, events: list[dict[str, Any]], timeout: float) -> bool:
        """Send item creations and wait until the server has them all (True) or refused one (False).

        The reader resolves each item's future on its `conversation.item.done` (or `.created`), or with
        False on an error naming the event, or when the link closes.
        """
        loop = asyncio.get_running_loop()
        futures = []
        for event in events:
            item_id = event["item"]["id"]
            future: asyncio.Future[bool] = loop.create_future()
            self.acks[item_id] = future
            event["event_id"] = self.next_event_id()
            self.ack_events[event["event_id"]] = item_id
            futures.append(future)
            await self.send(event)
        try:
            results = await asyncio.wait_for(asyncio.gather(*futures), timeout)
        except TimeoutError:
            raise Retry("the context restore was not acknowledged") from None
        if self.closed.is_set():
            raise Retry(f"closed {self.close_code} during the restore")
        return all(results)

    def acknowledge(self, item_id: str, created: bool) -> None:
        future = self.acks.pop(item_id, None)
        if future is not None and not future.done():
            future.set_result(created)

    def stop_streaming(self) -> None:
        if self.streaming is not None:
            self.streaming.cancel()
            self.streaming = None

    def abort(self) -> None:
        """Drop the TCP connection at once: a stalled peer would never answer a close handshake."""
        transport = self.ws.transport
        if transport is not None:
            transport.abort()
