"""The reference client: a voice agent that holds one conversation through the failures of the Realtime API.

It is written to be read. Each pattern lives in one place:

- lifecycle          `State`, `TRANSITIONS`, `ReferenceClient._enter`: idle → connecting → active →
                     rotating / reconnecting → closing → closed; every change is logged.
- reconnect          `reconnect.py`: `ReconnectBudget` and `Backoff` (capped exponential, full jitter,
                     seeded by RTSIM_SEED); `Retry` and `Fatal` sort every outcome: invalid key (close 3000),
                     1008, 403 and a 401 that a fresh token does not cure are never retried.
- ephemeral tokens   `tokens.py`: the API key only mints (`POST /realtime/client_secrets`); the WebSocket
                     carries an `ek_` token (`handshake.py`), minted again ahead of its expiry or age, once
                     more after an HTTP 401, and not before a 429's Retry-After.
- rotation           `rotation.HandoffSchedule` says when, `ReferenceClient._rotate` does it: before
                     `expires_at` (lead min(60 s, 20 % of the lifetime)) a second session opens, gets the
                     context, takes over between turns, and the old one is closed with 1000 — the user never
                     meets the cap. A turn due within half a lead of the handoff starts it (and goes to the
                     new session); a user turn over the old session's reply hands over at once.
- context restore    `context.ConversationMemory` and `context.Restore`: every new session gets a system
                     summary at `previous_item_id: "root"` plus the recent turns as GA items (`input_text` /
                     `output_text`).
- no turn lost       `link.TrackedTurn`, `_dispatch`, `_abandon`: a turn due while disconnected waits for the
                     next session; one cut off by a drop is asked again after each drop (at most 3 times),
                     one failed by a server_error once; nothing is asked twice otherwise. A turn given up on
                     is still remembered (the user's words), so later sessions are restored with it.
- barge-in           `barge_in.BargeIn`: assistant audio plays on a playback clock as it arrives (faster than
                     real time); a user turn over it cancels the response (if still generating) and truncates
                     the item at the position played, not at what arrived.
- remote MCP tools   a new session gets the MCP servers with the rest of the session config and lists their
                     tools anew: `_mcp_listed` holds the session's first turn until the listings ended (the
                     model cannot call a tool not listed yet). `_mcp_follow_up`: a response that ends with
                     an MCP call (or an approval request, which it approves: a real app would ask its user)
                     is followed by `response.create`, whose reply answers the turn, as openai-agents-js does.
- liveness           `_liveness` (a ping every RTSIM_PING_INTERVAL; dead when neither its pong nor any frame
                     came within RTSIM_PING_TIMEOUT: on a slow link a burst of audio delays the pong) and
                     `_watchdog` (a response asked for or underway and nothing heard for
                     RTSIM_RESPONSE_TIMEOUT) turn a stall into a reconnect.

Run as `python -m rtsim.clients.reference` with the environment described in clients/README.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import random
import time
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TextIO

import aiohttp
from websockets.exceptions import ConnectionClosed

from rtsim.clients import tls
from rtsim.clients.barge_in import BargeIn
from rtsim.clients.common import (
    EXIT_FATAL,
    EXIT_OK,
    EXIT_USAGE,
    ClientEnv,
    JsonLog,
    TurnSchedule,
    UsageError,
    append_event,
    create_item,
    message_item,
    response_text,
    run_cli,
    stream_utterance,
    utterance,
)
from rtsim.clients.context import ConversationMemory
from rtsim.clients.handshake import CLOSE_TIMEOUT, handshake, session_created
from rtsim.clients.link import Link, TrackedTurn
from rtsim.clients.reconnect import FATAL_CLOSE_CODES, Backoff, Fatal, ReconnectBudget, Retry
from rtsim.clients.rotation import HandoffSchedule
from rtsim.clients.tokens import TokenSource

CLIENT = "reference"
# Errors a live session survives; they are logged, never acted on.
BENIGN_ERRORS = frozenset(
    {
        "response_cancel_not_active",
        "conversation_already_has_active_response",
        "input_audio_buffer_commit_empty",
        "item_not_found",
        "item_truncate_invalid_item_id",
    }
)
TICK = 0.25  # how often the supervisor looks at the clock while a response is expected


class State(enum.Enum):
    IDLE = "idle"
    CONNECTING = "connecting"
    ACTIVE = "active"
    ROTATING = "rotating"
    RECONNECTING = "reconnecting"
    CLOSING = "closing"
    CLOSED = "closed"


TRANSITIONS: dict[State, frozenset[State]] = {
    State.IDLE: frozenset({State.CONNECTING, State.CLOSING}),
    State.CONNECTING: frozenset({State.ACTIVE, State.RECONNECTING, State.CLOSING}),
    State.ACTIVE: frozenset({State.ROTATING, State.RECONNECTING, State.CLOSING}),
    State.ROTATING: frozenset({State.ACTIVE, State.RECONNECTING, State.CLOSING}),
    State.RECONNECTING: frozenset({State.CONNECTING, State.CLOSING}),
    State.CLOSING: frozenset({State.CLOSED}),
    State.CLOSED: frozenset(),
}


@dataclass(frozen=True)
class Settings:
    """The client's timing, from RTSIM_* environment knobs (clients/README.md) so tests can compress time."""

    backoff_base: float = 0.5
    backoff_cap: float = 8.0
    max_attempts: int = 10  # consecutive failed attempts before giving up
    stable_after: float = 10.0  # a session that lived this long (or answered a turn) resets the backoff
    # A dead link is acted on within 2-3 s: pings go every 2 s and must be answered within 2.5 s; while a
    # response is active, 3 s without any event (paced audio comes every 100 ms) is a stall.
    ping_interval: float = 2.0
    ping_timeout: float = 2.5
    response_timeout: float = 3.0
    open_timeout: float = 10.0
    rotate_lead_max: float = 60.0
    rotate_lead_fraction: float = 0.2
    token_max_age: float = 240.0  # mint afresh every 4 min whatever expires_at claims
    shutdown_grace: float = 3.0
    recent_turns: int = 4  # turns replayed verbatim after a restore; older ones go into the summary
    max_reasks: int = 1  # re-asks of a turn whose response failed
    # Each drop that cuts a turn off earns it a re-ask on the next session (drops are independent failures of
    # the link); this cap on a turn's lifetime stops one that takes every session down with it.
    max_drop_reasks: int = 3

    @classmethod
    def from_env(cls, env: ClientEnv) -> Settings:
        defaults = cls()
        return cls(
            backoff_base=env.knob("RTSIM_BACKOFF_BASE", defaults.backoff_base),
            backoff_cap=env.knob("RTSIM_BACKOFF_CAP", defaults.backoff_cap),
            max_attempts=int(env.knob("RTSIM_MAX_ATTEMPTS", defaults.max_attempts)),
            stable_after=env.knob("RTSIM_STABLE_AFTER", defaults.stable_after),
            ping_interval=env.knob("RTSIM_PING_INTERVAL", defaults.ping_interval),
            ping_timeout=env.knob("RTSIM_PING_TIMEOUT", defaults.ping_timeout),
            response_timeout=env.knob("RTSIM_RESPONSE_TIMEOUT", defaults.response_timeout),
            open_timeout=env.knob("RTSIM_OPEN_TIMEOUT", defaults.open_timeout),
            rotate_lead_max=env.knob("RTSIM_ROTATE_LEAD_MAX", defaults.rotate_lead_max),
            rotate_lead_fraction=env.knob("RTSIM_ROTATE_LEAD_FRACTION", defaults.rotate_lead_fraction),
            token_max_age=env.knob("RTSIM_TOKEN_MAX_AGE", defaults.token_max_age),
            shutdown_grace=env.knob("RTSIM_SHUTDOWN_GRACE", defaults.shutdown_grace),
            recent_turns=int(env.knob("RTSIM_RECENT_TURNS", defaults.recent_turns)),
            max_reasks=int(env.knob("RTSIM_MAX_REASKS", defaults.max_reasks)),
            max_drop_reasks=int(env.knob("RTSIM_MAX_DROP_REASKS", defaults.max_drop_reasks)),
        )


# ---- the client ------------------------------------------------------------------------------------------


class ReferenceClient:
    def __init__(self, env: ClientEnv, log: JsonLog) -> None:
        self.env, self.scenario, self.log = env, env.scenario, log
        self.settings = Settings.from_env(env)
        backoff = Backoff(self.settings.backoff_base, self.settings.backoff_cap, random.Random(env.seed))
        self.budget = ReconnectBudget(backoff, self.settings.max_attempts, self.settings.stable_after)
        self.state = State.IDLE
        self.link: Link | None = None  # the session the user is on
        self.links: list[Link] = []  # every open link: two during a rotation
        self.turns: list[TrackedTurn] = []
        self.queue: deque[TrackedTurn] = deque()
        self.memory = ConversationMemory(self.settings.recent_turns)
        self.barge_in = BargeIn(log, self._interrupt)
        self.wake = asyncio.Event()
        self.link_count = 0
        self.loop = asyncio.get_running_loop()
        self.started = self.loop.time()
        self.end = self.started + self.scenario.end_at
        self.tokens: TokenSource | None = None

    # ---- lifecycle ---------------------------------------------------------------------------------------

    def _enter(self, state: State, **why: Any) -> None:
        if state not in TRANSITIONS[self.state]:
            raise RuntimeError(f"illegal transition {self.state.value} -> {state.value}")
        self.log("state", **{"from": self.state.value, "to": state.value}, **why)
        self.state = state

    async def run(self) -> int:
        feeder = asyncio.create_task(self._feed_turns())
        code = EXIT_OK
        async with tls.http_session(self.env.base_url, self.env.raw) as http:
            self.tokens = TokenSource(
                http,
                self.env,
                self.log,
                timeout=self.settings.open_timeout,
                max_age=self.settings.token_max_age,
            )
            try:
                await self._converse()
            except Fatal as exc:
                self.log("fatal", reason=str(exc))
                code = EXIT_FATAL
            finally:
                feeder.cancel()
                await self._close_all()
        counts = Counter(turn.status for turn in self.turns)
        self.log(
            "summary",
            turns=len(self.scenario.turns),
            unsaid=len(self.scenario.turns) - len(self.turns),
            sessions=self.link_count,
            **counts,
        )
        self.log("exit", code=code)
        return code

    async def _feed_turns(self) -> None:
        """The user's side: each turn joins the queue when it is due (never after end_at)."""
        schedule = TurnSchedule.for_scenario(self.scenario, self.started)
        async for spec in schedule.play():
            connected = self.state in (State.ACTIVE, State.ROTATING)
            turn = TrackedTurn(spec, backlog=not connected)
            self.turns.append(turn)
            self.queue.append(turn)
            self.log("turn_due", turn=spec.index, mode=spec.mode, connected=connected)
            self.wake.set()

    async def _converse(self) -> None:
        """Connect, serve, and after every loss reconnect, until end_at."""
        link = await self._connect("start")
        while link is not None:
            self.link = link
            self._enter(State.ACTIVE, session=link.session_id)
            if await self._serve():
                return
            lost = self.link  # a rotation may have swapped links while serving
            assert lost is not None
            reason = self._on_link_lost(lost)
            # A session that answered or lived a while was a success; one that died at once must not reset
            # the backoff, or an accept-then-close server would be hammered.
            self.budget.session_ended(
                lived=self.loop.time() - lost.opened_at, answered=lost.responses_done > 0, reason=reason
            )
            delay = self.budget.delay()
            self._enter(State.RECONNECTING, reason=reason)
            self.log(
                "reconnect_scheduled",
                attempt=self.budget.backoff.attempt,
                delay=round(delay, 3),
                reason=reason,
            )
            if not await self._pause(delay):
                return
            link = await self._connect("reconnect")

    async def _pause(self, delay: float) -> bool:
        """Wait out a backoff delay; False if end_at comes first."""
        deadline = min(self.loop.time() + delay, self.end)
        await asyncio.sleep(max(0.0, deadline - self.loop.time()))
        return self.loop.time() < self.end

    async def _connect(self, purpose: str) -> Link | None:
        """A new session with the context restored, retrying with backoff; None if end_at comes first."""
        while True:
            self._enter(State.CONNECTING, purpose=purpose)
            try:
                return await self._open_link(purpose)
            except Retry as exc:
                self.budget.failed(str(exc))
                delay = self.budget.delay(exc.retry_after)
                self._enter(State.RECONNECTING, reason=str(exc))
                self.log(
                    "reconnect_scheduled",
                    attempt=self.budget.backoff.attempt,
                    delay=round(delay, 3),
                    reason=str(exc),
                    retry_after=exc.retry_after,
                )
                if not await self._pause(delay):
                    return None

    # ---- opening a session -------------------------------------------------------------------------------

    async def _open_link(self, purpose: str) -> Link:
        assert self.tokens is not None
        ws = await handshake(
            self.env,
            self.tokens,
            self.log,
            purpose=purpose,
            open_timeout=self.settings.open_timeout,
            ping_interval=0,  # the client's own liveness check pings (`_liveness`)
            ping_timeout=0,
        )
        try:
            session = await session_created(ws, self.log, timeout=self.settings.open_timeout)
        except BaseException:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(1000), CLOSE_TIMEOUT)
            raise
        self.link_count += 1
        now = self.loop.time()
        expires_at = session.get("expires_at") or 0
        handoff = (
            HandoffSchedule.before_cap(
                now,
                expires_at - time.time(),
                lead_max=self.settings.rotate_lead_max,
                lead_fraction=self.settings.rotate_lead_fraction,
            )
            if expires_at
            else HandoffSchedule.none()
        )
        link = Link(
            number=self.link_count,
            ws=ws,
            session_id=str(session.get("id")),
            opened_at=now,
            handoff=handoff,
            last_event_at=now,
        )
        self.links.append(link)
        link.mcp_unlisted = {
            str(tool.get("server_label")) for tool in self.scenario.tools if tool.get("type") == "mcp"
        }
        if not link.mcp_unlisted:
            link.mcp_listed.set()
        link.reader = asyncio.create_task(self._read(link))
        if self.settings.ping_interval:
            link.liveness = asyncio.create_task(self._liveness(link))
        rotate_at = handoff.rotate_at
        self.log(
            "connected",
            session=link.session_id,
            purpose=purpose,
            rotate_in=round(rotate_at - now, 2) if rotate_at is not None else None,
        )
        try:
            await self._restore(link)
        except (Retry, ConnectionClosed) as exc:
            await self._close_link(link, "failed while restoring")
            raise Retry(f"lost while restoring the context: {exc}") from None
        await self._mcp_listed(link)
        return link

    async def _mcp_listed(self, link: Link) -> None:
        """Wait (at most open_timeout) until every declared MCP server's tool listing has ended."""
        try:
            await asyncio.wait_for(link.mcp_listed.wait(), self.settings.open_timeout)
        except TimeoutError:
            self.log("mcp_tools_not_listed", session=link.session_id, servers=sorted(link.mcp_unlisted))

    async def _restore(self, link: Link) -> None:
        restored = await self.memory.restore(link, timeout=self.settings.open_timeout)
        if restored is None:
            return
        restore, accepted = restored
        self.log(
            "context_restored",
            session=link.session_id,
            summarized=restore.summarized,
            replayed=restore.replayed,
            accepted=accepted,
        )

    # ---- reading events ----------------------------------------------------------------------------------

    async def _liveness(self, link: Link) -> None:
        """Ping every ping_interval; a link that answers within ping_timeout with neither the pong nor any
        frame is dead. Frames count: the server sends audio in bursts faster than real time, and on a slow
        link the pong waits behind them while the session is alive and well."""
        interval, timeout = self.settings.ping_interval, self.settings.ping_timeout
        while not link.closed.is_set():
            await asyncio.sleep(interval)
            sent_at = self.loop.time()
            try:
                pong = await link.ws.ping()
            except ConnectionClosed:
                return
            while not pong.done() and link.last_event_at <= sent_at:
                if self.loop.time() - sent_at >= timeout:
                    self.log("ping_timeout", session=link.session_id, waited_s=round(timeout, 2))
                    link.abort()
                    return
                await asyncio.sleep(min(TICK, timeout / 4))

    async def _read(self, link: Link) -> None:
        try:
            async for raw in link.ws:
                link.last_event_at = self.loop.time()
                try:
                    event = json.loads(raw)
                except ValueError:
                    self.log("unreadable_event", session=link.session_id, size=len(raw))
                    continue
                await self._on_event(link, event)
        except ConnectionClosed:
            pass
        finally:
            if link.liveness is not None:
                link.liveness.cancel()
            link.close_code = link.ws.close_code if link.ws.close_code is not None else 1006
            link.close_reason = link.ws.close_reason or ""
            for future in link.acks.values():
                if not future.done():
                    future.set_result(False)
            link.closed.set()
            self.wake.set()

    async def _on_event(self, link: Link, event: dict[str, Any]) -> None:
        kind = event.get("type")
        now = self.loop.time()
        if kind in ("conversation.item.done", "conversation.item.created"):  # GA, beta
            self._on_item(link, event.get("item") or {})
        elif kind == "input_audio_buffer.speech_started":
            await self.barge_in.on_speech_started(link, now)
        elif kind == "input_audio_buffer.committed":
            if link.response_id is None:
                link.awaiting_since = now  # server VAD answers a committed turn: a response is due
        elif kind == "response.created":
            response_id = str((event.get("response") or {}).get("id"))
            link.response_id, link.awaiting_since = response_id, None
            turn = link.inflight
            if turn is not None and turn.status == "sent" and turn.response_id is None:
                turn.response_id = response_id
                link.response_turns[response_id] = turn
        elif kind in ("response.output_audio.delta", "response.audio.delta"):
            self.barge_in.on_audio(link, event, now)
        elif kind == "response.done":
            await self._on_response_done(link, event.get("response") or {}, now)
        elif kind == "error":
            self._on_error(link, event.get("error") or {})
        elif kind == "rate_limits.updated":
            exhausted = [r.get("name") for r in event.get("rate_limits") or () if r.get("remaining") == 0]
            if exhausted:
                self.log("rate_limited", session=link.session_id, limits=exhausted)

    def _on_item(self, link: Link, item: dict[str, Any]) -> None:
        if item.get("type") == "mcp_list_tools":  # listed (or failed): conversation.item.done ends it
            link.mcp_unlisted.discard(str(item.get("server_label")))
            if not link.mcp_unlisted:
                link.mcp_listed.set()
            return
        link.acknowledge(str(item.get("id")), created=True)
        turn = link.inflight
        if item.get("role") == "user" and turn is not None and turn.spec.mode == "audio":
            for part in item.get("content") or ():
                if part.get("type") == "input_audio" and part.get("transcript"):
                    turn.heard = part["transcript"]

    def _on_error(self, link: Link, error: dict[str, Any]) -> None:
        code = error.get("code")
        item_id = link.ack_events.get(str(error.get("event_id")))
        if item_id is not None:  # the restore was refused: say so, carry on with what the session has
            link.acknowledge(item_id, created=False)
        self.log(
            "error",
            session=link.session_id,
            code=code,
            type=error.get("type"),
            message=error.get("message"),
            benign=code in BENIGN_ERRORS,
        )

    async def _on_response_done(self, link: Link, response: dict[str, Any], now: float) -> None:
        response_id, status = str(response.get("id")), response.get("status")
        if link.response_id == response_id:
            link.response_id = None
        link.responses_done += 1
        await self.barge_in.on_response_done(link, response_id)
        turn = link.response_turns.pop(response_id, None)
        if turn is not None and status == "completed" and await self._mcp_follow_up(link, response):
            turn.response_id = None  # the follow-up response answers the turn
            link.awaiting_since = now
            return
        text = response_text(response)
        details = response.get("status_details") or {}
        if turn is None:
            self.log("reply", turn=None, status=status, text=text, session=link.session_id)
            return
        if status in ("completed", "incomplete"):
            turn.status, turn.reply = "answered", text
            self._remember(link, turn, text)
        elif status == "cancelled":
            if turn.status != "interrupted":  # server VAD heard the barge-in (a typed one was marked at once)
                self._interrupt(link, turn)
        elif status == "failed":
            if turn is link.inflight and turn.reasked_after_failure < self.settings.max_reasks:
                turn.reasked_after_failure += 1
                turn.sends += 1
                turn.response_id = None
                link.awaiting_since = now
                self.log("reask", turn=turn.spec.index, reason="response failed", error=details.get("error"))
                await link.send({"type": "response.create"})
                return
            turn.status = "failed"
            self._remember(link, turn, None)  # no answer, but the user said it: a later session must know
        self.log(
            "reply",
            turn=turn.spec.index,
            status=status,
            reason=details.get("reason"),
            text=text,
            session=link.session_id,
        )
        if link.inflight is turn:
            link.inflight = None
        self.wake.set()

    async def _mcp_follow_up(self, link: Link, response: dict[str, Any]) -> bool:
        """After a response that used a remote MCP tool, ask for the one that answers from it (True)."""
        outputs = response.get("output") or ()
        requests = [item for item in outputs if item.get("type") == "mcp_approval_request"]
        calls = [item for item in outputs if item.get("type") == "mcp_call"]
        if not requests and not calls:
            return False
        for request in requests:
            answer = {"type": "mcp_approval_response", "approval_request_id": request["id"], "approve": True}
            await link.send(create_item(answer))
        self.log(
            "mcp_follow_up",
            session=link.session_id,
            approved=[request.get("name") for request in requests],
            calls=[{"name": call.get("name"), "failed": call.get("error") is not None} for call in calls],
        )
        await link.send({"type": "response.create"})
        return True

    def _interrupt(self, link: Link, turn: TrackedTurn) -> None:
        # Keep the user's words; the cut-off reply is not what they heard, so it is not restored.
        turn.status = "interrupted"
        self._remember(link, turn, None)

    def _remember(self, link: Link, turn: TrackedTurn, reply: str | None) -> None:
        self.memory.remember(link, turn.heard or turn.spec.say, reply)

    # ---- serving one session -----------------------------------------------------------------------------

    async def _serve(self) -> bool:
        """Run the conversation on the current link until end_at (True) or until the link dies (False)."""
        while True:
            self.wake.clear()
            link = self.link
            assert link is not None
            now = self.loop.time()
            if link.closed.is_set():
                self._raise_reader_bug(link)
                return False
            if now >= self.end and not self._finishing(link, now):
                return True
            if self._watchdog(link, now):
                link.abort()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(link.closed.wait(), CLOSE_TIMEOUT)
                continue
            if self.state is State.ACTIVE and self._rotation_due(link, now):
                await self._rotate()
                continue
            if self._keep_alive_due(link, now):
                await self._keep_alive(link, now)
            with contextlib.suppress(ConnectionClosed):  # the reader reports the loss
                await self._dispatch(link, now)
            await self._wait(self._next_deadline(link, now))

    def _rotation_due(self, link: Link, now: float) -> bool:
        """Time to hand over: the lead before the cap has come, or a turn is waiting to start close to it —
        better asked on the next session than cut off on this one."""
        return now < self.end and link.handoff.due(now, turn_waiting=bool(self.queue))

    def _keep_alive_due(self, link: Link, now: float) -> bool:
        """Quiet periods must not look like abandonment: keep-alive at half the idle timeout."""
        idle = self.env.scenario.idle_timeout
        return idle is not None and now - max(link.kept_alive_at, link.opened_at) >= idle / 2

    async def _keep_alive(self, link: Link, now: float) -> None:
        assert self.tokens is not None
        link.kept_alive_at = now
        try:
            async with self.tokens.http.post(
                f"{self.env.base_url}/streaming.keep_alive",
                json={"session_id": link.session_id},
                headers={"Authorization": f"Bearer {self.env.api_key}"},
                timeout=aiohttp.ClientTimeout(total=self.settings.open_timeout),
            ) as response:
                self.log("keep_alive", session=link.session_id, status=response.status)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:  # the watchdogs judge the link, not this
            self.log("keep_alive", session=link.session_id, error=str(exc))

    def _raise_reader_bug(self, link: Link) -> None:
        reader = link.reader
        if reader is not None and reader.done() and not reader.cancelled() and reader.exception():
            raise reader.exception()  # type: ignore[misc]

    def _finishing(self, link: Link, now: float) -> bool:
        """After end_at, a short grace lets the reply in progress (or a re-asked turn) complete."""
        return now < self.end + self.settings.shutdown_grace and (link.busy or bool(self.queue))

    def _next_deadline(self, link: Link, now: float) -> float:
        deadline = now + (TICK if link.busy else 1.0)
        deadline = min(deadline, self.end if now < self.end else self.end + self.settings.shutdown_grace)
        idle = self.env.scenario.idle_timeout
        if idle is not None:
            deadline = min(deadline, max(link.kept_alive_at, link.opened_at) + idle / 2)
        if self.state is State.ACTIVE and link.handoff.rotate_at is not None:
            deadline = min(deadline, max(now, link.handoff.rotate_at))
        return deadline

    async def _wait(self, deadline: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.wake.wait(), max(0.0, deadline - self.loop.time()))

    def _watchdog(self, link: Link, now: float) -> bool:
        """A stall the keepalive has not caught yet: a response is expected and nothing came for a while."""
        if link.response_id is None and link.awaiting_since is None:
            return False
        quiet = now - max(link.last_event_at, link.awaiting_since or 0.0)
        if quiet < self.settings.response_timeout:
            return False
        self.log("watchdog", session=link.session_id, quiet_s=round(quiet, 2), response=link.response_id)
        return True

    async def _dispatch(self, link: Link, now: float) -> None:
        """Send queued user turns, one at a time; a fresh turn over a reply in progress is a barge-in."""
        if self.state is not State.ACTIVE:
            return
        while self.queue and not link.closed.is_set():
            turn = self.queue[0]
            if link.streaming is not None or link.awaiting_since is not None:
                return  # one user turn at a time
            if link.response_id is not None and turn.backlog:
                return  # a held-back turn waits for the reply in progress rather than cut it off
            self.queue.popleft()
            await self._send_turn(link, turn, now)

    async def _send_turn(self, link: Link, turn: TrackedTurn, now: float) -> None:
        if not turn.backlog and turn.spec.mode == "text":
            await self.barge_in.typed_over(link, now)
        turn.sends += 1
        turn.status, turn.response_id = "sent", None
        link.inflight = turn
        # An audio turn the server already transcribed, then cut off, is asked again as that transcript: the
        # words heard are exact, while a second pass over the audio could hear it differently or not at all.
        as_text = turn.spec.mode == "text" or turn.heard is not None
        self.log(
            "turn_sent",
            turn=turn.spec.index,
            mode=turn.spec.mode,
            send=turn.sends,
            text=turn.heard or turn.spec.say,
            session=link.session_id,
            **({"as_transcript": True} if as_text and turn.spec.mode == "audio" else {}),
        )
        if as_text:
            link.awaiting_since = now
            await link.send(create_item(message_item("user", turn.heard or turn.spec.say)))
            await link.send({"type": "response.create"})
        else:
            link.streaming = asyncio.create_task(self._speak(link, turn))

    async def _speak(self, link: Link, turn: TrackedTurn) -> None:
        """Stream an audio turn like a microphone; server VAD hears its end, commits and answers."""
        try:
            pcm = utterance(turn.spec.say, self.env.seed)
            await stream_utterance(pcm, lambda chunk: link.send(append_event(chunk)))
        except ConnectionClosed:
            pass  # the link is gone: _abandon asks this turn again on the next session
        finally:
            if link.streaming is asyncio.current_task():
                link.streaming = None
            self.wake.set()

    # ---- rotation ----------------------------------------------------------------------------------------

    async def _rotate(self) -> None:
        """Dual-session handoff before the cap: open, restore, switch the user between turns, close old."""
        old = self.link
        assert old is not None
        self._enter(State.ROTATING, session=old.session_id)
        try:
            new = await self._open_link("rotation")
        except Retry as exc:
            old.handoff.retry_at(self.loop.time() + self.budget.backoff.next_delay())
            self.log("rotation_failed", reason=str(exc), retry=old.handoff.rotate_at is not None)
            self._enter(State.ACTIVE, session=old.session_id)
            return
        # The user stays on the old session until it is between turns, until they talk over its reply (a
        # barge-in: the new turn goes to the new session), or until the cap is too close.
        while old.busy and not old.closed.is_set() and not new.closed.is_set():
            now = self.loop.time()
            switch_by = old.handoff.switch_by
            if switch_by is None or now >= switch_by or now >= self.end:
                break
            if self._barging_in(old):
                break
            self.wake.clear()
            if self._watchdog(old, now):
                old.abort()
                break
            await self._wait(min(switch_by, now + TICK))
        if self._barging_in(old):
            for turn in list(old.response_turns.values()):
                if turn.status == "sent":
                    self._interrupt(old, turn)  # heard in part, not asked again
        with contextlib.suppress(ConnectionClosed):
            await self._catch_up(new)
        self.link = new
        self._enter(State.ACTIVE, session=new.session_id)
        self.log("rotated", old=old.session_id, new=new.session_id, old_busy=old.busy)
        self._abandon(old, "rotated away mid-turn")
        await self._close_link(old, "rotated to a new session")

    def _barging_in(self, link: Link) -> bool:
        """A fresh user turn waits while `link` produces a reply (not while the user is still speaking)."""
        return (
            link.streaming is None
            and link.response_id is not None
            and any(not turn.backlog for turn in self.queue)
        )

    async def _catch_up(self, new: Link) -> None:
        """Turns the old session finished after the new one was restored: append them to the new one."""
        caught_up = await self.memory.catch_up(new)
        if caught_up:
            self.log("context_caught_up", session=new.session_id, items=caught_up)

    # ---- losing and closing sessions ---------------------------------------------------------------------

    def _on_link_lost(self, link: Link) -> str:
        reason = f"closed {link.close_code}" + (f" {link.close_reason!r}" if link.close_reason else "")
        self.log(
            "disconnected",
            session=link.session_id,
            code=link.close_code,
            reason=link.close_reason,
            lived_s=round(self.loop.time() - link.opened_at, 2),
        )
        self._abandon(link, reason)
        if link in self.links:
            self.links.remove(link)
        if link.close_code in FATAL_CLOSE_CODES:
            raise Fatal(f"the server closed {link.close_code} ({FATAL_CLOSE_CODES[link.close_code]})")
        return reason

    def _abandon(self, link: Link, reason: str) -> None:
        """A session is left (lost or rotated away from): ask its unfinished turns again."""
        if link.abandoned:
            return
        link.abandoned = True
        link.stop_streaming()
        unfinished = {turn for turn in link.response_turns.values() if turn.status == "sent"}
        if link.inflight is not None and link.inflight.status == "sent":
            unfinished.add(link.inflight)
        for turn in sorted(unfinished, key=lambda t: t.spec.index, reverse=True):
            self._requeue(link, turn, reason)
        link.playback = None
        self.wake.set()

    def _requeue(self, link: Link, turn: TrackedTurn, reason: str) -> None:
        if turn.reasked_after_drop >= self.settings.max_drop_reasks:
            turn.status = "lost"
            # Given up on, the turn was still said (and maybe heard): keep the user's words, or the next
            # session is restored without them and forgets, say, the name the user gave.
            self._remember(link, turn, None)
            self.log("turn_lost", turn=turn.spec.index, reason=reason)
            return
        turn.reasked_after_drop += 1
        turn.status, turn.backlog, turn.response_id = "queued", True, None
        self.queue.appendleft(turn)
        self.log("reask", turn=turn.spec.index, reason=reason)

    async def _close_link(self, link: Link, reason: str) -> None:
        """Close 1000 and wait for the reader; a peer that does not answer the close gets the TCP aborted."""
        link.stop_streaming()
        if not link.closed.is_set():
            try:
                await asyncio.wait_for(link.ws.close(1000, reason), CLOSE_TIMEOUT + 0.5)
            except Exception:
                link.abort()
            self.log("closed", session=link.session_id, code=1000, reason=reason)
        if link.reader is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(link.reader, CLOSE_TIMEOUT)
        if link in self.links:
            self.links.remove(link)

    async def _close_all(self) -> None:
        if self.state is not State.CLOSING:
            self._enter(State.CLOSING)
        for link in list(self.links):
            await self._close_link(link, "conversation over")
        self._enter(State.CLOSED)


async def main(env: Mapping[str, str], *, out: TextIO | None = None) -> int:
    log = JsonLog(CLIENT, out)
    try:
        client_env = ClientEnv.from_env(env)
        client = ReferenceClient(client_env, log)
    except UsageError as exc:
        log("usage_error", message=str(exc))
        return EXIT_USAGE
    return await client.run()


if __name__ == "__main__":
    run_cli(main)
