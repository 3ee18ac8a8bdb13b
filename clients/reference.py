"""The reference client: a voice agent that holds one conversation through the failures of the Realtime API.

It is written to be read — the right patterns from the seeds (000: limits, tokens, context restore,
dual-session handoff; 002: lifecycle, turns, truncation, timeouts), each in one place:

- lifecycle          `State`, `TRANSITIONS`, `ReferenceClient._enter`: idle → connecting → active →
                     rotating / reconnecting → closing → closed; every change is logged.
- reconnect          `Backoff` (capped exponential, full jitter, seeded by RTSIM_SEED); `Retry` and `Fatal`
                     sort every outcome: invalid key (close 3000), 1008, 403 and a 401 that a fresh token does
                     not cure are never retried.
- ephemeral tokens   `TokenSource`: the API key only mints (`POST /realtime/client_secrets`); the WebSocket
                     carries an `ek_` token, minted again ahead of its expiry or age, once more after an HTTP
                     401, and not before a 429's Retry-After.
- rotation           `ReferenceClient._rotate`: before `expires_at` (lead min(60 s, 20 % of the lifetime)) a
                     second session opens, gets the context, takes over between turns, and the old one is
                     closed with 1000 — the user never meets the cap. A turn due within half a lead of the
                     handoff starts it (and goes to the new session); a user turn over the old session's
                     reply hands over at once.
- context restore    `ReferenceClient._restore`: every new session gets a system summary at
                     `previous_item_id: "root"` plus the recent turns as GA items (`input_text` /
                     `output_text`).
- no turn lost       `Turn`, `_dispatch`, `_abandon`: a turn due while disconnected waits for the next
                     session; one cut off by a drop, or failed by a server_error, is asked again once;
                     nothing is asked twice otherwise.
- barge-in           `Playback`, `_barge_in`, `_on_speech_started`: assistant audio "plays" in real time from
                     its first delta; a user turn over it cancels the response and truncates the item at the
                     position played (never beyond the audio received).
- liveness           the websockets keepalive (ping every RTSIM_PING_INTERVAL, dead after RTSIM_PING_TIMEOUT)
                     and `_watchdog` (a response asked for or underway and nothing heard for
                     RTSIM_RESPONSE_TIMEOUT) turn a stall into a reconnect.

Run as `python -m rtsim.clients.reference` with the environment described in clients/README.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import enum
import itertools
import json
import random
import time
from collections import Counter, deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TextIO

import aiohttp
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from rtsim.clients.common import (
    BYTES_PER_MS,
    EXIT_FATAL,
    EXIT_OK,
    EXIT_USAGE,
    ClientEnv,
    JsonLog,
    TurnSchedule,
    TurnSpec,
    UsageError,
    append_event,
    create_item,
    decoded_length,
    message_item,
    response_text,
    run_cli,
    stream_utterance,
    utterance,
)

CLIENT = "reference"
# Close codes that mean "you may not": reconnecting would only repeat the refusal.
FATAL_CLOSE_CODES = {1008: "policy violation", 3000: "invalid API key"}
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
CLOSE_TIMEOUT = 1.0  # seconds to wait for the server's close frame; a stalled peer never sends one
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


class Fatal(Exception):
    """An outcome no retry can cure (refused credentials, policy close, retries exhausted): exit non-zero."""


class Retry(Exception):
    """A failure worth another attempt, after the backoff delay or the server's Retry-After if longer."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


@dataclass(frozen=True)
class Settings:
    """The client's timing, from RTSIM_* environment knobs (clients/README.md) so tests can compress time."""

    backoff_base: float = 0.5
    backoff_cap: float = 8.0
    max_attempts: int = 10  # consecutive failed attempts before giving up
    stable_after: float = 10.0  # a session that lived this long (or answered a turn) resets the backoff
    # Seed 001: a dead link should be acted on within 2-3 s. Pings go every 2 s and must be answered within
    # 2.5 s; while a response is active, 3 s without any event (paced audio comes every 100 ms) is a stall.
    ping_interval: float = 2.0
    ping_timeout: float = 2.5
    response_timeout: float = 3.0
    open_timeout: float = 10.0
    rotate_lead_max: float = 60.0
    rotate_lead_fraction: float = 0.2
    token_max_age: float = 240.0  # seed 000: refresh every 4-5 min whatever expires_at claims
    shutdown_grace: float = 3.0
    recent_turns: int = 4  # turns replayed verbatim after a restore; older ones go into the summary
    max_reasks: int = 1

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
        )


class Backoff:
    """Capped exponential backoff with full jitter: attempt n waits U(0, min(cap, base·2ⁿ)).

    Full jitter spreads a crowd of clients that lost the same server, instead of having them return in waves.
    """

    def __init__(self, base: float, cap: float, rng: random.Random) -> None:
        self.base, self.cap, self.rng = base, cap, rng
        self.attempt = 0

    def next_delay(self) -> float:
        ceiling = min(self.cap, self.base * 2 ** min(self.attempt, 30))
        self.attempt += 1
        return self.rng.uniform(0.0, ceiling)

    def reset(self) -> None:
        self.attempt = 0


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After as seconds: a number, or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - time.time())


def error_message(body: bytes | str) -> str:
    """The `error.message` of an OpenAI-style JSON error body, else the body's start."""
    text = body.decode(errors="replace") if isinstance(body, bytes) else body
    try:
        return str(json.loads(text)["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return text[:200]


# ---- ephemeral tokens ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Token:
    value: str
    expires_at: float  # epoch seconds, as the server says
    refresh_at: float  # epoch seconds from which the client mints a new one instead


class TokenSource:
    """Ephemeral client secrets, minted with the API key; the key itself never goes on the WebSocket.

    A token is reused for new sessions until `refresh_at`: a fifth of its lifetime before `expires_at`, and at
    most RTSIM_TOKEN_MAX_AGE after minting, because `expires_at` has been seen to promise more than it holds.
    """

    def __init__(self, http: aiohttp.ClientSession, env: ClientEnv, settings: Settings, log: JsonLog) -> None:
        self.http, self.env, self.settings, self.log = http, env, settings, log
        self.token: Token | None = None

    async def get(self, *, fresh: bool = False) -> str:
        if fresh or self.token is None or time.time() >= self.token.refresh_at:
            self.token = await self._mint()
        return self.token.value

    def discard(self) -> None:
        self.token = None

    async def _mint(self) -> Token:
        scenario = self.env.scenario
        body = {"session": {**scenario.session_config(), "model": scenario.model}}
        try:
            async with self.http.post(
                f"{self.env.base_url}/realtime/client_secrets",
                json=body,
                headers={"Authorization": f"Bearer {self.env.api_key}"},
                timeout=aiohttp.ClientTimeout(total=self.settings.open_timeout),
            ) as response:
                status, text = response.status, await response.text()
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise Retry(f"minting a token failed: {exc!r}") from None
        if status == 429:
            self.log("token_refused", status=status, retry_after=retry_after)
            raise Retry(
                "HTTP 429 minting a token", retry_after=retry_after if retry_after is not None else 1.0
            )
        if status >= 500:
            raise Retry(f"HTTP {status} minting a token")
        if (
            status != 200
        ):  # 401/403: the key is refused; 400: our request is wrong. Neither heals by retrying.
            raise Fatal(f"HTTP {status} minting a token: {error_message(text)}")
        try:
            data = json.loads(text)
            value, expires_at = str(data["value"]), float(data["expires_at"])
        except (ValueError, KeyError, TypeError):
            raise Retry("the client_secrets answer is not a token") from None
        now = time.time()
        lifetime = max(0.0, expires_at - now)
        refresh_at = min(expires_at - max(1.0, 0.2 * lifetime), now + self.settings.token_max_age)
        self.log("token_minted", expires_in=round(lifetime, 1), refresh_in=round(refresh_at - now, 1))
        return Token(value, expires_at, refresh_at)


# ---- what the client tracks ------------------------------------------------------------------------------


@dataclass(eq=False)
class Turn:
    """One user turn and its fate: queued → sent → answered | interrupted | failed | lost."""

    spec: TurnSpec
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
    """Assistant audio as the user hears it: it plays in real time from its first delta."""

    item_id: str
    response_id: str
    started_at: float
    received_ms: float = 0.0

    def played_ms(self, now: float) -> int:
        return int(min(self.received_ms, (now - self.started_at) * 1000))

    def playing(self, now: float) -> bool:
        return (now - self.started_at) * 1000 < self.received_ms


@dataclass(eq=False)
class Link:
    """One WebSocket carrying one server session, and what the client knows about that session."""

    number: int
    ws: ClientConnection
    session_id: str
    opened_at: float
    rotate_at: float | None  # when to start the handoff to a new session
    rotate_early_at: float | None  # from when a waiting user turn starts the handoff (not the old session)
    switch_by: float | None  # when to hand over even mid-response: the cap is near
    last_event_at: float
    kept_alive_at: float = 0.0  # the last keep-alive call (streaming-session rules)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    close_code: int | None = None
    close_reason: str = ""
    reader: asyncio.Task[None] | None = None
    inflight: Turn | None = None  # the latest user turn sent on this session and not finished
    response_id: str | None = None  # the response being generated
    awaiting_since: float | None = None  # a response was asked for (or audio committed), none created yet
    response_turns: dict[str, Turn] = field(default_factory=dict)
    cancelled: set[str] = field(default_factory=set)
    playback: Playback | None = None
    deferred_truncate: tuple[str, str, int] | None = (
        None  # (response, item, audio_end_ms) after a VAD barge-in
    )
    streaming: asyncio.Task[None] | None = None  # an audio turn going out
    acks: dict[str, asyncio.Future[bool]] = field(default_factory=dict)  # item id -> created?
    ack_events: dict[str, str] = field(default_factory=dict)  # client event id -> item id
    remembered: int = 0  # how many of the client's memory entries this session holds
    responses_done: int = 0
    retired: bool = False
    abandoned: bool = False
    event_ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def busy(self) -> bool:
        return self.response_id is not None or self.awaiting_since is not None or self.streaming is not None

    def next_event_id(self) -> str:
        return f"evt_ref{self.number}_{next(self.event_ids)}"

    async def send(self, event: dict[str, Any]) -> None:
        event.setdefault("event_id", self.next_event_id())
        await self.ws.send(json.dumps(event))

    def abort(self) -> None:
        """Drop the TCP connection at once: a stalled peer would never answer a close handshake."""
        transport = self.ws.transport
        if transport is not None:
            transport.abort()


def summary_text(older: list[tuple[str, str]]) -> str:
    """The system message that opens a restored session (a real agent might have a model write it)."""
    if not older:
        return "The conversation continues on a new connection; its most recent turns follow."
    lines = [f"{'User' if role == 'user' else 'Assistant'}: {text}" for role, text in older]
    return "Summary of the conversation so far, continued on a new connection:\n" + "\n".join(lines)


# ---- the client ------------------------------------------------------------------------------------------


class ReferenceClient:
    def __init__(self, env: ClientEnv, log: JsonLog) -> None:
        self.env, self.scenario, self.log = env, env.scenario, log
        self.settings = Settings.from_env(env)
        self.backoff = Backoff(self.settings.backoff_base, self.settings.backoff_cap, random.Random(env.seed))
        self.state = State.IDLE
        self.link: Link | None = None  # the session the user is on
        self.links: list[Link] = []  # every open link: two during a rotation
        self.turns: list[Turn] = []
        self.queue: deque[Turn] = deque()
        self.memory: list[tuple[str, str]] = []  # (role, text): the conversation as the client keeps it
        self.wake = asyncio.Event()
        self.failures = 0  # consecutive failed attempts
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
        async with aiohttp.ClientSession() as http:
            self.tokens = TokenSource(http, self.env, self.settings, self.log)
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
            turn = Turn(spec, backlog=not connected)
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
            if self._was_healthy(lost):
                self.backoff.reset()
                self.failures = 0
            else:
                self._count_failure(reason)
            delay = self.backoff.next_delay()
            self._enter(State.RECONNECTING, reason=reason)
            self.log(
                "reconnect_scheduled", attempt=self.backoff.attempt, delay=round(delay, 3), reason=reason
            )
            if not await self._pause(delay):
                return
            link = await self._connect("reconnect")

    def _was_healthy(self, link: Link) -> bool:
        # A session that answered or lived a while was a success; one that died at once must not reset the
        # backoff, or an accept-then-close server would be hammered.
        return link.responses_done > 0 or self.loop.time() - link.opened_at >= self.settings.stable_after

    def _count_failure(self, reason: str) -> None:
        self.failures += 1
        if self.failures > self.settings.max_attempts:
            raise Fatal(f"gave up after {self.failures} failed attempts in a row (last: {reason})")

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
                self._count_failure(str(exc))
                delay = self.backoff.next_delay()
                if exc.retry_after is not None:
                    delay = max(delay, exc.retry_after)
                self._enter(State.RECONNECTING, reason=str(exc))
                self.log(
                    "reconnect_scheduled",
                    attempt=self.backoff.attempt,
                    delay=round(delay, 3),
                    reason=str(exc),
                    retry_after=exc.retry_after,
                )
                if not await self._pause(delay):
                    return None

    # ---- opening a session -------------------------------------------------------------------------------

    async def _open_link(self, purpose: str) -> Link:
        ws = await self._handshake(purpose)
        try:
            session = await self._session_created(ws)
        except BaseException:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(1000), CLOSE_TIMEOUT)
            raise
        self.link_count += 1
        now = self.loop.time()
        rotate_at = rotate_early_at = switch_by = None
        expires_at = session.get("expires_at") or 0
        if expires_at:
            # Lead relative to the lifetime: a compressed 6 s cap rotates at ~4.8 s, a real hour at 59 min.
            expires_in = expires_at - time.time()
            lead = min(self.settings.rotate_lead_max, self.settings.rotate_lead_fraction * expires_in)
            rotate_at = now + expires_in - lead
            rotate_early_at = rotate_at - lead / 2
            switch_by = now + expires_in - lead / 4
        link = Link(
            number=self.link_count,
            ws=ws,
            session_id=str(session.get("id")),
            opened_at=now,
            rotate_at=rotate_at,
            rotate_early_at=rotate_early_at,
            switch_by=switch_by,
            last_event_at=now,
        )
        self.links.append(link)
        link.reader = asyncio.create_task(self._read(link))
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
        return link

    async def _handshake(self, purpose: str) -> ClientConnection:
        """The WebSocket upgrade with an ephemeral token: a 401 earns one fresh token, then it is fatal."""
        assert self.tokens is not None
        for fresh in (False, True):
            token = await self.tokens.get(fresh=fresh)
            self.log("connect_attempt", purpose=purpose, fresh_token=fresh)
            try:
                return await connect(
                    self.env.realtime_url(),
                    additional_headers={"Authorization": f"Bearer {token}"},
                    open_timeout=self.settings.open_timeout,
                    ping_interval=self.settings.ping_interval or None,
                    ping_timeout=self.settings.ping_timeout or None,
                    close_timeout=CLOSE_TIMEOUT,
                )
            except InvalidStatus as exc:
                status = exc.response.status_code
                message = error_message(exc.response.body or b"")
                self.log("handshake_refused", status=status, message=message)
                if status == 401 and not fresh:
                    self.tokens.discard()
                    continue
                if status in (401, 403):
                    raise Fatal(f"HTTP {status} at the handshake: {message}") from None
                if status == 429:
                    retry_after = parse_retry_after(exc.response.headers.get("Retry-After"))
                    raise Retry("HTTP 429 at the handshake", retry_after=retry_after) from None
                raise Retry(f"HTTP {status} at the handshake") from None
            except (OSError, TimeoutError, InvalidHandshake) as exc:
                raise Retry(f"cannot connect: {exc!r}") from None
        raise AssertionError("unreachable: the second 401 is fatal")

    async def _session_created(self, ws: ClientConnection) -> dict[str, Any]:
        """Wait for session.created; a close before it is fatal for 1008/3000, else worth a retry."""
        deadline = self.loop.time() + self.settings.open_timeout
        while True:
            try:
                raw = await asyncio.wait_for(ws.recv(), max(0.0, deadline - self.loop.time()))
            except ConnectionClosed as exc:
                code = exc.rcvd.code if exc.rcvd is not None else 1006
                reason = exc.rcvd.reason if exc.rcvd is not None else ""
                if code in FATAL_CLOSE_CODES:
                    raise Fatal(f"closed {code} ({FATAL_CLOSE_CODES[code]}) {reason!r} at once") from None
                raise Retry(f"closed {code} before session.created") from None
            except TimeoutError:
                raise Retry("no session.created in time") from None
            event = json.loads(raw)
            if event.get("type") == "session.created":
                return dict(event.get("session") or {})
            if event.get("type") == "error":
                error = event.get("error") or {}
                self.log("error", code=error.get("code"), message=error.get("message"), session=None)

    async def _restore(self, link: Link) -> None:
        """Give a new session the conversation so far: a summary at the root, then the recent turns verbatim.

        GA part types only: system and user parts are `input_text`, assistant parts `output_text` (a replayed
        'text' part is rejected and the context silently lost).
        """
        entries = list(self.memory)
        if not entries:
            return
        keep = self.settings.recent_turns * 2
        recent = entries[-keep:] if keep else []
        older = entries[: len(entries) - len(recent)]
        items = [message_item("system", summary_text(older), f"ctx{link.number}_0")]
        items += [
            message_item(role, text, f"ctx{link.number}_{k}") for k, (role, text) in enumerate(recent, 1)
        ]
        events = [create_item(items[0], previous_item_id="root")] + [create_item(item) for item in items[1:]]
        accepted = await self._send_acknowledged(link, events)
        link.remembered = len(entries)
        self.log(
            "context_restored",
            session=link.session_id,
            summarized=len(older),
            replayed=len(recent),
            accepted=accepted,
        )

    async def _send_acknowledged(self, link: Link, events: list[dict[str, Any]]) -> bool:
        """Send item creations and wait until the server has them all (True) or refused one (False)."""
        futures = []
        for event in events:
            item_id = event["item"]["id"]
            future: asyncio.Future[bool] = self.loop.create_future()
            link.acks[item_id] = future
            event["event_id"] = link.next_event_id()
            link.ack_events[event["event_id"]] = item_id
            futures.append(future)
            await link.send(event)
        try:
            results = await asyncio.wait_for(asyncio.gather(*futures), self.settings.open_timeout)
        except TimeoutError:
            raise Retry("the context restore was not acknowledged") from None
        if link.closed.is_set():
            raise Retry(f"closed {link.close_code} during the restore")
        return all(results)

    # ---- reading events ----------------------------------------------------------------------------------

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
            await self._on_speech_started(link, now)
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
            self._on_audio(link, event, now)
        elif kind == "response.done":
            await self._on_response_done(link, event.get("response") or {}, now)
        elif kind == "error":
            self._on_error(link, event.get("error") or {})
        elif kind == "rate_limits.updated":
            exhausted = [r.get("name") for r in event.get("rate_limits") or () if r.get("remaining") == 0]
            if exhausted:
                self.log("rate_limited", session=link.session_id, limits=exhausted)

    def _on_item(self, link: Link, item: dict[str, Any]) -> None:
        future = link.acks.pop(str(item.get("id")), None)
        if future is not None and not future.done():
            future.set_result(True)
        turn = link.inflight
        if item.get("role") == "user" and turn is not None and turn.spec.mode == "audio":
            for part in item.get("content") or ():
                if part.get("type") == "input_audio" and part.get("transcript"):
                    turn.heard = part["transcript"]

    def _on_audio(self, link: Link, event: dict[str, Any], now: float) -> None:
        response_id, item_id = str(event.get("response_id")), str(event.get("item_id"))
        if response_id in link.cancelled:
            return  # already silenced by a barge-in
        playback = link.playback
        if playback is None or playback.item_id != item_id:
            playback = link.playback = Playback(item_id, response_id, started_at=now)
        playback.received_ms += decoded_length(str(event.get("delta", ""))) / BYTES_PER_MS

    def _on_error(self, link: Link, error: dict[str, Any]) -> None:
        code = error.get("code")
        item_id = link.ack_events.get(str(error.get("event_id")))
        if item_id is not None:  # the restore was refused: say so, carry on with what the session has
            future = link.acks.pop(item_id, None)
            if future is not None and not future.done():
                future.set_result(False)
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
        deferred = link.deferred_truncate
        if deferred is not None and deferred[0] == response_id:
            link.deferred_truncate = None
            await self._truncate(link, deferred[1], deferred[2], received_ms=None)
        turn = link.response_turns.pop(response_id, None)
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

    def _interrupt(self, link: Link, turn: Turn) -> None:
        # Keep the user's words; the cut-off reply is not what they heard, so it is not restored.
        turn.status = "interrupted"
        self._remember(link, turn, None)

    def _remember(self, link: Link, turn: Turn, reply: str | None) -> None:
        self.memory.append(("user", turn.heard or turn.spec.say))
        if reply:
            self.memory.append(("assistant", reply))
        if link.remembered == len(self.memory) - (2 if reply else 1):
            link.remembered = len(self.memory)  # this session holds everything the client remembers

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
        if link.rotate_at is None or now >= self.end:
            return False
        if now >= link.rotate_at:
            return True
        return bool(self.queue) and link.rotate_early_at is not None and now >= link.rotate_early_at

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
        if self.state is State.ACTIVE and link.rotate_at is not None:
            deadline = min(deadline, max(now, link.rotate_at))
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

    async def _send_turn(self, link: Link, turn: Turn, now: float) -> None:
        if not turn.backlog and turn.spec.mode == "text":
            await self._barge_in(link, now)
        turn.sends += 1
        turn.status, turn.response_id = "sent", None
        link.inflight = turn
        self.log(
            "turn_sent",
            turn=turn.spec.index,
            mode=turn.spec.mode,
            send=turn.sends,
            text=turn.spec.say,
            session=link.session_id,
        )
        if turn.spec.mode == "text":
            link.awaiting_since = now
            await link.send(create_item(message_item("user", turn.spec.say)))
            await link.send({"type": "response.create"})
        else:
            link.streaming = asyncio.create_task(self._speak(link, turn))

    async def _speak(self, link: Link, turn: Turn) -> None:
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

    # ---- barge-in ------------------------------------------------------------------------------------------

    async def _barge_in(self, link: Link, now: float) -> None:
        """A typed turn over the assistant: cancel the response, truncate what was not heard.

        Spoken turns do the same through server VAD: it cancels the response (interrupt_response) and
        `_on_speech_started` truncates.
        """
        playback = link.playback
        response_id = link.response_id
        if response_id is not None:
            link.cancelled.add(response_id)
            interrupted = link.response_turns.get(response_id)
            if interrupted is not None and interrupted.status == "sent":
                self._interrupt(link, interrupted)
            self.log("barge_in", action="cancel", response=response_id, session=link.session_id)
            # Sent before the truncate: the server closes the item (fixing its audio length) on cancel.
            await link.send({"type": "response.cancel", "response_id": response_id})
        if playback is not None and playback.playing(now):
            await self._truncate(link, playback.item_id, playback.played_ms(now), playback.received_ms)
        link.playback = None

    async def _on_speech_started(self, link: Link, now: float) -> None:
        playback = link.playback
        link.playback = None  # the user talks: local playback stops
        if playback is None or not playback.playing(now):
            return
        played = playback.played_ms(now)
        if link.response_id == playback.response_id:
            # The server cancels this response for the barge-in; truncate once it is closed, not before.
            link.deferred_truncate = (playback.response_id, playback.item_id, played)
            self.log(
                "barge_in", action="await_cancel", response=playback.response_id, session=link.session_id
            )
        else:
            await self._truncate(link, playback.item_id, played, playback.received_ms)

    async def _truncate(self, link: Link, item_id: str, played_ms: int, received_ms: float | None) -> None:
        if played_ms <= 0:
            return  # nothing was heard; the real API rejects audio_end_ms 0
        self.log(
            "barge_in",
            action="truncate",
            item=item_id,
            audio_end_ms=played_ms,
            received_ms=int(received_ms) if received_ms is not None else None,
            session=link.session_id,
        )
        await link.send(
            {
                "type": "conversation.item.truncate",
                "item_id": item_id,
                "content_index": 0,
                "audio_end_ms": played_ms,
            }
        )

    # ---- rotation ----------------------------------------------------------------------------------------

    async def _rotate(self) -> None:
        """Dual-session handoff before the cap: open, restore, switch the user between turns, close old."""
        old = self.link
        assert old is not None
        self._enter(State.ROTATING, session=old.session_id)
        try:
            new = await self._open_link("rotation")
        except Retry as exc:
            retry_at = self.loop.time() + self.backoff.next_delay()
            old.rotate_at = retry_at if old.switch_by is not None and retry_at < old.switch_by else None
            old.rotate_early_at = old.rotate_at  # a waiting turn must not bring the retry forward
            self.log("rotation_failed", reason=str(exc), retry=old.rotate_at is not None)
            self._enter(State.ACTIVE, session=old.session_id)
            return
        # The user stays on the old session until it is between turns, until they talk over its reply (a
        # barge-in: the new turn goes to the new session), or until the cap is too close.
        while old.busy and not old.closed.is_set() and not new.closed.is_set():
            now = self.loop.time()
            if old.switch_by is None or now >= old.switch_by or now >= self.end:
                break
            if self._barging_in(old):
                break
            self.wake.clear()
            if self._watchdog(old, now):
                old.abort()
                break
            await self._wait(min(old.switch_by, now + TICK))
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
        missing = self.memory[new.remembered :]
        for role, text in missing:
            await new.send(create_item(message_item(role, text)))
        new.remembered = len(self.memory)
        if missing:
            self.log("context_caught_up", session=new.session_id, items=len(missing))

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
        """A session is left (lost or rotated away from): ask its unfinished turns again, once."""
        if link.abandoned:
            return
        link.abandoned = True
        if link.streaming is not None:
            link.streaming.cancel()
            link.streaming = None
        unfinished = {turn for turn in link.response_turns.values() if turn.status == "sent"}
        if link.inflight is not None and link.inflight.status == "sent":
            unfinished.add(link.inflight)
        for turn in sorted(unfinished, key=lambda t: t.spec.index, reverse=True):
            self._requeue(turn, reason)
        link.playback = None
        self.wake.set()

    def _requeue(self, turn: Turn, reason: str) -> None:
        if turn.reasked_after_drop >= self.settings.max_reasks:
            turn.status = "lost"
            self.log("turn_lost", turn=turn.spec.index, reason=reason)
            return
        turn.reasked_after_drop += 1
        turn.status, turn.backlog, turn.response_id = "queued", True, None
        self.queue.appendleft(turn)
        self.log("reask", turn=turn.spec.index, reason=reason)

    async def _close_link(self, link: Link, reason: str) -> None:
        """Close 1000 and wait for the reader; a peer that does not answer the close gets the TCP aborted."""
        link.retired = True
        if link.streaming is not None:
            link.streaming.cancel()
            link.streaming = None
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
