"""A reference Realtime client over WebRTC (aiortc): what a voice app does to survive its transport failing.

Read it as documentation; every rule below answers a failure real apps hit.

Liveness — the core problem. aiortc reports ICE `completed` until its consent checks have gone unanswered for
~30 s, then `closed`; it has no `disconnected` state (browsers have one, within seconds). Waiting for it
means 30 s of dead air. So the client derives `disconnected` itself: the server's audio track sends a packet
every 20 ms for the whole call (silence between responses), so nothing received — no RTP frame, no event —
for `silence_after` seconds means the path is down. It then waits a grace period, because transient
disconnects come back by themselves (SCTP retransmits what was lost) and must not tear a call down; still
silent after `grace` seconds, the call is dead and the client reconnects: ~2.5 s after the cut, not ~30 s.

States (`transitions` records each change with its reason):

    connecting ─ data channel open, session.created, context restored ─▶ live
    live ─ nothing received for silence_after ─▶ degraded ─ traffic again ─▶ live
    degraded ─ still silent after grace ─▶ reconnecting
    live/degraded ─ connection failed|closed, data channel closed ─▶ reconnecting   (no grace: said dead)
    reconnecting ─ fresh token, NEW call, restore ─▶ live     (backoff between failed attempts)
    live ─ expires_at − lead ─▶ rotating ─ next call opened and restored, then swapped ─▶ live
    any ─ close() ─▶ closed

Setup is bounded too: a call whose data channel is not open within `setup_timeout` (ICE checks unanswered,
which aiortc would wait out for ~64 s) is abandoned for a new one. Nothing is sent before the channel is open
(`RTCDataChannel.send` refuses, as a browser does, and a client that ignores it breaks on a late channel).

Context restore: a new call is a new session that knows nothing. The client keeps the conversation's messages
(from `conversation.item.done` and input transcriptions) and, on every new call, puts them back as the
WebSocket reference client does (`context.Restore`): a system message at `root` summarising the older ones,
then the most recent replayed as items (user `input_text`, assistant `output_text` — not `text`, which the API
rejects). Rotation before the session cap uses the same restore, make-before-break, so the conversation
survives the 60-minute limit without a gap. Backoff between failed attempts and the rotation lead are the
WebSocket client's too (`reconnect.Backoff`, without jitter; `rotation.rotation_lead`).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TextIO

from aiortc.exceptions import InvalidStateError

from rtsim.clients.common import (
    EXIT_FATAL,
    EXIT_OK,
    EXIT_USAGE,
    ClientEnv,
    JsonLog,
    TurnSchedule,
    UsageError,
    run_cli,
    utterance,
)
from rtsim.clients.context import Restore
from rtsim.clients.reconnect import Backoff
from rtsim.clients.rotation import rotation_lead
from rtsim.clients.webrtc_call import (
    CallAbandoned,
    CallRefused,
    ClientCall,
    mint_token,
    reply_text,
    sleep_until,
)

CLIENT = "reference-webrtc"

State = Literal["idle", "connecting", "live", "degraded", "reconnecting", "rotating", "closed"]
RESTORE_PREFIX = "restore_"  # ids of items this client replays; they are not new turns


@dataclass
class Settings:
    setup_timeout: float = 8.0  # offer → data channel open → session.created
    silence_after: float = 0.5  # nothing received this long: the path is 'disconnected' (25 lost RTP packets)
    grace: float = 2.0  # 'disconnected' this long: dead, reconnect (transient cuts recover within it)
    rotate_lead_max: float = 60.0  # rotate min(this, fraction × lifetime) before the cap (rotation.py)
    rotate_lead_fraction: float = 0.2
    token_ttl: int = 600
    recent_turns: int = 6  # items replayed verbatim on restore; older ones go into the summary
    max_attempts: int = 6
    backoff_first: float = 0.25
    backoff_cap: float = 4.0
    tick: float = 0.05

    @classmethod
    def from_env(cls, env: ClientEnv) -> Settings:
        """The RTSIM_* knobs the WebSocket reference client reads, plus two of WebRTC's own."""
        d = cls()
        return cls(
            setup_timeout=env.knob("RTSIM_OPEN_TIMEOUT", d.setup_timeout),
            silence_after=env.knob("RTSIM_MEDIA_SILENCE", d.silence_after),
            grace=env.knob("RTSIM_DISCONNECT_GRACE", d.grace),
            rotate_lead_max=env.knob("RTSIM_ROTATE_LEAD_MAX", d.rotate_lead_max),
            rotate_lead_fraction=env.knob("RTSIM_ROTATE_LEAD_FRACTION", d.rotate_lead_fraction),
            recent_turns=int(env.knob("RTSIM_RECENT_TURNS", d.recent_turns)),
            max_attempts=int(env.knob("RTSIM_MAX_ATTEMPTS", d.max_attempts)),
            backoff_first=env.knob("RTSIM_BACKOFF_BASE", d.backoff_first),
            backoff_cap=env.knob("RTSIM_BACKOFF_CAP", d.backoff_cap),
        )


@dataclass
class RememberedItem:
    """One message of the conversation as this client keeps it, by the id the server gave its item."""

    role: Literal["user", "assistant"]
    text: str
    item_id: str


@dataclass
class Transition:
    at: float  # seconds since start()
    state: State
    reason: str


@dataclass
class ReferenceWebRTCClient:
    base_url: str
    api_key: str
    session: dict[str, Any] | None = None  # GA session config for the tokens this client mints
    settings: Settings = field(default_factory=Settings)
    record_audio: bool = False
    log: Callable[..., None] = field(
        default=lambda event, **fields: None
    )  # JsonLog-style: log(event, **fields)

    def __post_init__(self) -> None:
        self.state: State = "idle"
        self.transitions: list[Transition] = []
        self.call: ClientCall | None = None
        self.calls: list[ClientCall] = []  # every call ever opened, in order
        self.memory: list[RememberedItem] = []  # restored into every new call
        self.expires_at: float | None = None  # the live session's cap, epoch seconds
        self.rotate_at: float | None = None  # epoch seconds
        self.reconnects = 0
        self.rotations = 0
        self._responding = False
        self._live = asyncio.Event()
        self._gave_up = asyncio.Event()
        self.fatal: str | None = None  # why the client gave up (every reconnect attempt failed)
        self._started = time.monotonic()
        self._supervisor: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()

    # ---- the application's side -------------------------------------------------------------------

    async def start(self) -> None:
        self._started = time.monotonic()
        self._set_state("connecting", "start")
        self.call = await self._open_call()
        self._go_live("connected")
        self._supervisor = asyncio.ensure_future(self._supervise())

    async def _wait_live(self) -> ClientCall:
        """The live call, waiting while (re)connecting; ConnectionError once the client has given up."""
        while not self._live.is_set():
            if self._gave_up.is_set():
                raise ConnectionError(self.fatal or "closed")
            live, gave_up = (
                asyncio.ensure_future(self._live.wait()),
                asyncio.ensure_future(self._gave_up.wait()),
            )
            await asyncio.wait({live, gave_up}, return_when=asyncio.FIRST_COMPLETED)
            live.cancel()
            gave_up.cancel()
        assert self.call is not None
        return self.call

    async def send(self, event: dict[str, Any], timeout: float = 30.0) -> None:
        """Send on the live call; while reconnecting, wait for the next one (never on a closed channel)."""
        async with asyncio.timeout(timeout):
            while True:
                call = await self._wait_live()
                try:
                    call.send(event)
                    return
                except InvalidStateError:
                    await asyncio.sleep(self.settings.tick)

    async def ask(self, text: str, timeout: float = 30.0) -> str:
        """A user text turn and the model's reply (its transcript). Survives a reconnect in between."""
        async with asyncio.timeout(timeout):
            while True:
                call = await self._wait_live()
                mark = len(call.received)
                try:
                    call.send(user_message(text))
                    call.send({"type": "response.create"})
                    return reply_text(await call.wait_for("response.done", since=mark, timeout=timeout))
                except (InvalidStateError, CallAbandoned):
                    await asyncio.sleep(self.settings.tick)  # the call broke under us: ask on the next one

    async def speak(self, pcm16_24k: bytes, timeout: float = 30.0) -> str:
        """A spoken user turn (into the microphone track; server VAD ends it) and the reply it gets."""
        async with asyncio.timeout(timeout):
            while True:
                call = await self._wait_live()
                assert call.mic is not None
                mark = len(call.received)
                call.mic.say(pcm16_24k)
                try:
                    return reply_text(await call.wait_for("response.done", since=mark, timeout=timeout))
                except CallAbandoned:
                    await asyncio.sleep(self.settings.tick)  # say it again on the next call

    async def close(self) -> None:
        self._set_state("closed", "close()")
        self._live.clear()
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        for call in self.calls:  # the live one, and any a cancelled reconnect left half-open
            if not call.abandoned:
                await call.hangup(self.api_key)
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    def elapsed(self) -> float:
        return time.monotonic() - self._started

    def states(self) -> list[State]:
        return [t.state for t in self.transitions]

    # ---- supervision ---------------------------------------------------------------------------------

    async def _supervise(self) -> None:
        settings = self.settings
        while self.state != "closed":
            await asyncio.sleep(settings.tick)
            call = self.call
            if call is None or self.state not in ("live", "degraded"):
                continue
            dead = self._said_dead(call)
            if dead is not None:
                await self._reconnect(dead)
                continue
            silent_for = time.monotonic() - call.last_inbound
            if self.state == "live" and silent_for > settings.silence_after:
                self._set_state("degraded", f"nothing received for {silent_for:.1f} s")
            elif self.state == "degraded":
                if silent_for < settings.silence_after:
                    self._set_state("live", "traffic resumed")
                elif silent_for > settings.silence_after + settings.grace:
                    await self._reconnect(f"watchdog: nothing received for {silent_for:.1f} s")
                    continue
            if self.state == "live" and self._rotation_due():
                await self._rotate()

    @staticmethod
    def _said_dead(call: ClientCall) -> str | None:
        """What the stack itself reports as dead: no grace period for these."""
        if call.pc.connectionState in ("failed", "closed"):
            return f"connection {call.pc.connectionState}"
        if call.channel.readyState in ("closing", "closed"):
            return "data channel closed"
        return None

    async def _reconnect(self, reason: str) -> None:
        self._live.clear()
        self._set_state("reconnecting", reason)
        self.reconnects += 1
        old, self.call = self.call, None
        if old is not None:
            self._retire(old)
        try:
            self.call = await self._open_call()
        except ConnectionError as exc:
            self.fatal = str(exc)
            self._set_state("closed", f"gave up: {exc}")
            self._gave_up.set()
            return
        self._go_live("reconnected")

    def _rotation_due(self) -> bool:
        return self.rotate_at is not None and time.time() >= self.rotate_at

    async def _rotate(self) -> None:
        assert self.expires_at is not None
        if self._responding and time.time() < self.expires_at - 1:
            return  # let the model finish its sentence; try again on the next tick
        self._set_state("rotating", "session cap ahead")
        still_current = self.expires_at
        try:
            fresh = await self._open_call()  # make before break: the old call stays up meanwhile
        except ConnectionError as exc:
            # The old session runs on (the cap will end it if nothing else does); try again shortly.
            self.expires_at, self.rotate_at = still_current, time.time() + 1.0
            self._set_state("live", f"rotation failed: {exc}")
            return
        self.rotations += 1
        old, self.call = self.call, fresh
        self._go_live("rotated")
        if old is not None:
            self._retire(old)

    def _retire(self, call: ClientCall) -> None:
        """Hang up a call we leave behind, in the background (its path may be dead)."""
        task = asyncio.ensure_future(call.hangup(self.api_key))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # ---- opening a call ------------------------------------------------------------------------------

    async def _open_call(self) -> ClientCall:
        settings = self.settings
        backoff = Backoff(settings.backoff_first, settings.backoff_cap)  # no jitter: one client, one server
        last_error: Exception | None = None
        for _attempt in range(settings.max_attempts):
            call: ClientCall | None = None
            try:
                token = await mint_token(
                    self.base_url, self.api_key, session=self.session, ttl=settings.token_ttl
                )
                call = ClientCall(self.base_url, token["value"], record_audio=self.record_audio)
                call.on_event = lambda event, source=call: self._on_event(source, event)
                self.calls.append(call)
                await call.connect(open_timeout=settings.setup_timeout)
                created = await call.wait_for("session.created", timeout=settings.setup_timeout)
                self.expires_at = created["session"].get("expires_at") or None
                if self.expires_at:
                    lead = rotation_lead(
                        self.expires_at - time.time(),
                        lead_max=settings.rotate_lead_max,
                        lead_fraction=settings.rotate_lead_fraction,
                    )
                    self.rotate_at = self.expires_at - lead
                await self._restore(call)
                self.log("connected", session=created["session"]["id"], call=call.call_id)
                return call
            except (TimeoutError, CallRefused, CallAbandoned, ConnectionError, OSError) as exc:
                last_error = exc
                self.log("connect_failed", reason=repr(exc), call=call.call_id if call else None)
                if call is not None:
                    self._retire(call)
                await asyncio.sleep(backoff.next_delay())
        raise ConnectionError(f"no call after {settings.max_attempts} attempts: {last_error!r}")

    async def _restore(self, call: ClientCall) -> None:
        """Put the conversation back into a new session (`context.Restore`) and wait until it has it."""
        entries = [(m.role, m.text) for m in self.memory if m.text]
        if not entries:
            return
        restore = Restore.of(
            entries, keep=self.settings.recent_turns, id_stem=RESTORE_PREFIX + secrets.token_hex(4)
        )
        mark = len(call.received)
        for event in restore.events():
            call.send(event)
        last = restore.last_item_id
        await call.wait_for(
            lambda e: e.get("type") == "conversation.item.done" and e["item"]["id"] == last,
            since=mark,
            timeout=self.settings.setup_timeout,
        )

    # ---- what the calls report -------------------------------------------------------------------------

    def _on_event(self, call: ClientCall, event: dict[str, Any]) -> None:
        if call is not self.call:
            return  # a call being opened, or one left behind
        kind = event.get("type")
        if kind == "response.created":
            self._responding = True
        elif kind == "response.done":
            self._responding = False
        elif kind == "conversation.item.done":
            self._remember(event["item"])
        elif kind == "conversation.item.input_audio_transcription.completed":
            self._update_item(event["item_id"], event.get("transcript") or "")
        elif kind == "conversation.item.deleted":
            self.memory = [m for m in self.memory if m.item_id != event["item_id"]]
        elif kind == "error":
            error = event.get("error") or {}
            self.log("error", code=error.get("code"), message=error.get("message"))

    def _remember(self, item: dict[str, Any]) -> None:
        role = item.get("role")
        if item.get("type") != "message" or role not in ("user", "assistant"):
            return
        if item["id"].startswith(RESTORE_PREFIX):
            return
        text = " ".join(
            part.get("text") or part.get("transcript") or "" for part in item.get("content", [])
        ).strip()
        if not self._update_item(item["id"], text):
            self.memory.append(RememberedItem(role, text, item["id"]))

    def _update_item(self, item_id: str, text: str) -> bool:
        for remembered in self.memory:
            if remembered.item_id == item_id:
                remembered.text = text or remembered.text
                return True
        return False

    # ---- state ---------------------------------------------------------------------------------------

    def _go_live(self, reason: str) -> None:
        self._responding = False
        self._set_state("live", reason)
        self._live.set()

    def _set_state(self, state: State, reason: str) -> None:
        self.state = state
        self.transitions.append(Transition(round(self.elapsed(), 3), state, reason))
        self.log("state", to=state, reason=reason)


def user_message(text: str) -> dict[str, Any]:
    return {
        "type": "conversation.item.create",
        "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]},
    }


# ---- as a scenario client: `python -m rtsim.clients.reference_webrtc` (see clients/README.md) ---


async def play(client: ReferenceWebRTCClient, env: ClientEnv, log: JsonLog, started: float) -> None:
    """The scenario's user: each turn at its time (typed, or spoken into the microphone), until end_at.

    Times count from the client's start, as the WebSocket reference client's do (and the fault timeline):
    a first call that takes seconds to connect delays the first turn, not the whole timeline."""
    scenario = env.scenario
    loop = asyncio.get_running_loop()
    end = started + scenario.end_at
    schedule = TurnSchedule.for_scenario(scenario, started)
    async for turn in schedule.play():
        remaining = end - loop.time()
        if remaining <= 0:
            break
        log("turn_sent", turn=turn.index, mode=turn.mode, text=turn.say)
        try:
            if turn.mode == "audio":
                reply = await client.speak(utterance(turn.say, env.seed), timeout=remaining)
            else:
                reply = await client.ask(turn.say, timeout=remaining)
        except TimeoutError:
            log("turn_lost", turn=turn.index, reason="no reply before end_at")
            break
        log("reply", turn=turn.index, status="completed", text=reply)
    await sleep_until(end)


async def main(env: Mapping[str, str], *, out: TextIO | None = None) -> int:
    log = JsonLog(CLIENT, out)
    try:
        client_env = ClientEnv.from_env(env)
        settings = Settings.from_env(client_env)
    except UsageError as exc:
        log("usage_error", message=str(exc))
        return EXIT_USAGE
    session = {**client_env.scenario.session_config(), "model": client_env.scenario.model}
    client = ReferenceWebRTCClient(client_env.base_url, client_env.api_key, session, settings, log=log)
    code = EXIT_OK
    started = asyncio.get_running_loop().time()
    try:
        await client.start()
        await play(client, client_env, log, started)
    except ConnectionError as exc:
        log("fatal", reason=str(exc))
        code = EXIT_FATAL
    finally:
        await client.close()
    log("summary", calls=len(client.calls), reconnects=client.reconnects, rotations=client.rotations)
    log("exit", code=code)
    return code


if __name__ == "__main__":
    run_cli(main)
