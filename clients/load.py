"""A voice agent for locust: `RealtimeUser` holds Realtime sessions the way a voice app does, under load.

Each user is one person talking to a voice agent over the WebSocket transport:

- credentials   an API key on the WebSocket, or (default) an ephemeral token minted with it from
                `POST /v1/realtime/client_secrets` (reused until a fifth of its lifetime is left);
- setup         `session.update` with pcm16 24 kHz audio both ways and server VAD;
- speaking      the microphone is open for the whole session, as a voice app's is: `--audio-chunk-ms`
                chunks in real time, a quiet room's noise between turns and speech-like audio from the
                test-audio kit (`audio.speech_for_text`) for a turn, so server VAD hears each start and end;
- listening     assistant audio plays by the user's own clock from its first delta (never by arrival:
                deltas may come faster than real time; an underrun pauses it, `player.Player`), and the
                next turn waits until it has played;
- barge-in      now and then the user talks over the reply: server VAD cancels it and the user truncates
                the item at the position played;
- reconnecting  a lost session is reopened with the reference client's policy (`reconnect.py`: capped,
                jittered backoff, Retry-After, fatal close codes and refusals never retried).

Everything is reported to locust's statistics (`events.request`), so it shows in the console, the web UI,
`--csv`/`--json` and, in distributed mode, is aggregated by the master:

    HTTP  client_secrets    minting a token
    WS    handshake         the WebSocket upgrade
    WS    session.created   from the start of the upgrade to session.created
    WS    session.updated   session.update → session.updated
    WS    reconnect         the gap the user lived through: session lost → the next session.created
    AUDIO first delta       response.created → its first audio delta
    AUDIO turn latency      speech_stopped → first audio delta; fails when the response fails, an `error`
                            event comes during it, the connection is lost or the server falls silent
    AUDIO lateness          per response, the latest any delta arrived after the moment its audio was due
                            to play (0 when audio keeps ahead of the player)
    AUDIO barge-in          the user starts talking over a reply → speech_started (the player stops)
    ERROR <code>            every `error` event the server sends, by code (its type when it has none);
                            always a failure
    WS    frame             a frame that is no JSON object (a broken server or relay): always a failure,
                            and the session is abandoned

The WebSocket is websocket-client's, which locust's gevent monkey-patching makes cooperative (as the
websocket users of locust-plugins do); one greenlet per user reads, the task greenlet speaks.

This module imports locust (which monkey-patches the process): load it only from a locustfile.
"""

from __future__ import annotations

import base64
import functools
import itertools
import json
import logging
import math
import os
import random
import struct
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import gevent
import websocket
from gevent.event import Event
from locust import User, between, events, task
from locust.argument_parser import LocustArgumentParser
from locust.clients import HttpSession
from locust.exception import StopUser

from rtsim.clients.common import BYTES_PER_MS, decoded_length
from rtsim.clients.player import Player
from rtsim.clients.reconnect import (
    FATAL_CLOSE_CODES,
    Backoff,
    Fatal,
    ReconnectBudget,
    Retry,
    error_message,
    parse_retry_after,
)
from rtsim.simulator import audio

log = logging.getLogger("rtsim.load")

DEFAULT_KEY = "sk-rtsim-locust"  # any sk- key is accepted by rtsim without --api-key
INSTRUCTIONS = "You are a friendly voice assistant. Keep answers short."
# What the users say; each turn picks one. Short and long, so VAD and replies vary.
PHRASES = (
    "Hello, can you hear me?",
    "What is the weather like tomorrow?",
    "Tell me a short story about a lighthouse keeper.",
    "Can you book a table for two at eight?",
    "Thanks, that is all for now.",
    "How long does it take to boil an egg?",
)
# The open microphone's first moments are the room: nobody speaks the instant a session opens, and server
# VAD, like a real one, judges the start of speech against what came before it.
MIC_LEAD_IN_MS = 300
CLOSE_NO_STATUS = 1005  # a close frame without a code
CLOSE_ABNORMAL = 1006  # the TCP connection ended without a close frame


# ---- options -------------------------------------------------------------------------------------------


@events.init_command_line_parser.add_listener
def add_options(parser: Any) -> None:
    parser.add_argument("--model", default="gpt-realtime", help="the Realtime model to ask for")
    parser.add_argument(
        "--auth",
        choices=("token", "key"),
        default="token",
        help="token: connect with ephemeral tokens minted from /realtime/client_secrets, each reused until "
        "a fifth of its lifetime is left (default); key: put the API key on the WebSocket",
    )
    parser.add_argument(
        "--api-key",
        default=os.environ.get("OPENAI_API_KEY", DEFAULT_KEY),
        is_secret=True,
        help="the API key (default $OPENAI_API_KEY, else a key rtsim accepts)",
    )
    parser.add_argument(
        "--key-per-user",
        action="store_true",
        default=False,
        help="each user its own key (KEY-<pid>-<n>): rtsim's summary then shows each user as an identity",
    )
    parser.add_argument(
        "--audio-chunk-ms",
        type=positive_int,
        default=100,
        help="user audio per input_audio_buffer.append, sent in real time (default 100)",
    )
    parser.add_argument(
        "--response-timeout",
        type=float,
        default=15.0,
        help="seconds of server silence, while a reply is due, before the session is taken for dead "
        "(default 15)",
    )
    parser.add_argument(
        "--open-timeout",
        type=float,
        default=10.0,
        help="seconds for the handshake and for session.created (default 10)",
    )
    parser.add_argument("--backoff-base", type=float, default=0.5, help="reconnect backoff base, seconds")
    parser.add_argument("--backoff-cap", type=float, default=8.0, help="reconnect backoff cap, seconds")
    parser.add_argument(
        "--max-attempts",
        type=positive_int,
        default=10,
        help="failed connection attempts in a row before a user gives up (default 10)",
    )
    parser.add_argument(
        "--stable-after",
        type=float,
        default=10.0,
        help="seconds a session must live (unless it answered) to reset the backoff (default 10)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seeds each user's choices and backoff jitter (with its worker and user number)",
    )


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise ValueError(f"must be a positive integer, not {text}")
    return value


def default_options() -> Any:
    """The options' defaults, for an Environment made without locust's command line (locust as a library)."""
    parser = LocustArgumentParser()
    add_options(parser)
    return parser.parse_args([])


# ---- what one user tracks ------------------------------------------------------------------------------


@dataclass(eq=False)
class Turn:
    """One thing the user said and the reply to it."""

    said: str
    spoke_at: float
    stopped_at: float | None = None  # speech_stopped: the server heard the end of the turn
    response_id: str | None = None
    created_at: float | None = None
    first_delta_at: float | None = None
    first_delta: Event = field(default_factory=Event)
    done: Event = field(default_factory=Event)
    status: str | None = None  # the response's final status, or "lost" with the connection
    errors: list[str] = field(default_factory=list)
    lateness_ms: float = 0.0
    reported: bool = False


@dataclass(eq=False)
class Link:
    """One WebSocket carrying one server session."""

    ws: websocket.WebSocket
    session_id: str
    opened_at: float
    updated: Event = field(default_factory=Event)
    closed: Event = field(default_factory=Event)
    closing: bool = False  # we closed it: not a loss
    close_code: int | None = None
    lost_at: float | None = None
    last_event_at: float = 0.0  # the latest server event: a reply is underway while they keep coming
    reader: gevent.Greenlet | None = None
    turn: Turn | None = None  # the user's latest turn, until its response is created
    responses: dict[str, Turn] = field(default_factory=dict)
    active_response: str | None = None
    playback: Player | None = None
    deferred_truncate: tuple[str, str, int] | None = None  # (response, item, audio_end_ms)
    utterance: Utterance | None = None  # what the microphone is sending, between silences
    microphone: gevent.Greenlet | None = None
    speech_started: Event = field(default_factory=Event)
    speech_started_at: float = 0.0
    silenced: set[str] = field(default_factory=set)  # responses the user talked over: no longer played
    responses_done: int = 0


@dataclass(eq=False)
class Utterance:
    """A turn's audio, queued for the microphone, which sends it chunk by chunk in place of room noise."""

    turn: Turn
    chunks: tuple[str, ...]
    sent: int = 0
    done: Event = field(default_factory=Event)  # every chunk has gone (or the session was lost)


@dataclass
class Token:
    value: str
    refresh_at: float  # epoch seconds: mint a new one from then on


@functools.cache
def spoken_chunks(text: str, seed: int, chunk_ms: int) -> tuple[str, ...]:
    """`text` said as speech-like pcm16 audio, as ready-to-send append events (built once)."""
    speech = audio.speech_for_text(text, seed=seed)
    return tuple(append_event(chunk) for chunk in audio.chunks(speech, chunk_ms))


@functools.cache
def room_noise_chunk(seed: int, chunk_ms: int) -> str:
    """What an open microphone hears between turns: a quiet room (pink noise at -60 dBFS)."""
    return append_event(audio.to_pcm(audio.noise(chunk_ms, level_dbfs=-60.0, seed=seed, color="pink")))


def append_event(chunk: bytes) -> str:
    return json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(chunk).decode()})


def endpoints(host: str, model: str) -> tuple[str, str]:
    """(REST base, WebSocket URL) for a base URL such as rtsim's `http://127.0.0.1:PORT/v1`; a bare origin
    gets `/v1`, as the SDKs' default base URL has."""
    parts = urlsplit(host.rstrip("/"))
    path = parts.path or "/v1"
    rest = urlunsplit((parts.scheme, parts.netloc, path, "", ""))
    scheme = {"https": "wss", "http": "ws"}.get(parts.scheme, parts.scheme)
    return rest, urlunsplit((scheme, parts.netloc, f"{path}/realtime", f"model={model}", ""))


class RealtimeError(Exception):
    """An `error` event, a failed response or a lost session, as locust's failure."""


# ---- the user ------------------------------------------------------------------------------------------


class RealtimeUser(User):
    """A person talking to a voice agent: speaks, listens to the reply, sometimes talks over it."""

    abstract = True  # the locustfile makes the concrete class (so it can set weights, wait_time, ...)
    wait_time = between(0.5, 2.0)  # the user thinks between turns
    barge_in_after = (0.3, 1.0)  # seconds of a reply the user hears before talking over it (uniform)
    numbers = itertools.count(1)

    def __init__(self, environment: Any) -> None:
        super().__init__(environment)
        options = self.options = environment.parsed_options or default_options()
        self.number = next(self.numbers)
        worker = getattr(environment.runner, "worker_index", 0)
        self.rng = random.Random(f"{options.seed}/{worker}/{self.number}")
        self.key = options.api_key
        if options.key_per_user:
            self.key = f"{self.key}-{os.getpid()}-{self.number}"
        self.model = options.model
        self.rest_url, self.ws_url = endpoints(self.host or "", self.model)
        self.http = HttpSession(base_url=self.rest_url, request_event=environment.events.request, user=self)
        backoff = Backoff(options.backoff_base, options.backoff_cap, self.rng)
        self.budget = ReconnectBudget(backoff, options.max_attempts, options.stable_after)
        self.token: Token | None = None
        self.link: Link | None = None
        self.connected = Event()  # self.link is open (or self.fatal says why there will be none)
        self.fatal: Fatal | None = None
        self.stopping = False
        self.connection: gevent.Greenlet | None = None

    # ---- locust's lifecycle --------------------------------------------------------------------------

    def on_start(self) -> None:
        # The connection has its own greenlet, so a lost session is reopened at once, not when the next
        # task begins: the reconnect gap is the policy's, never the user's think time.
        self.connection = gevent.spawn(self._keep_connected)

    def on_stop(self) -> None:
        self.stopping = True
        if self.connection is not None:
            self.connection.kill(block=True, timeout=2.0)
        link, self.link = self.link, None
        if link is not None:
            self._close(link)

    @task(4)
    def conversation_turn(self) -> None:
        """Say something, and listen to the whole reply."""
        link = self._session()
        turn = self._speak(link, self._phrase())
        if self._await_reply(link, turn):
            self._listen_to_end(link)

    @task(1)
    def barge_in(self) -> None:
        """Say something, then talk over the reply once it has played for a moment."""
        link = self._session()
        turn = self._speak(link, self._phrase())
        if not turn.first_delta.wait(self.options.response_timeout) or link.closed.is_set():
            self._await_reply(link, turn)  # reports why there was no reply
            return
        gevent.sleep(self.rng.uniform(*self.barge_in_after))
        playback = link.playback
        if link.closed.is_set() or playback is None or not playback.playing(time.monotonic()):
            self._listen_to_end(link)  # the reply was shorter than the patience: nothing to talk over
            return
        link.speech_started.clear()
        over = self._speak(link, self._phrase(), barge_in=True)
        if self._await_reply(link, over):
            self._listen_to_end(link)

    def _phrase(self) -> str:
        return self.rng.choice(PHRASES)

    # ---- sessions ------------------------------------------------------------------------------------

    def _session(self) -> Link:
        """The live session, waiting while the connection greenlet opens or reopens it."""
        while True:
            self.connected.wait()
            if self.fatal is not None:
                raise StopUser()
            link = self.link
            if link is not None and not link.closed.is_set():
                return link
            gevent.sleep(0.01)  # lost a moment ago: the connection greenlet has yet to notice

    def _keep_connected(self) -> None:
        """Open a session; each time it is lost, reopen it with the reference client's backoff."""
        lost: Link | None = None
        while not self.stopping:
            try:
                link = self._reconnect(lost)
            except Fatal as exc:
                log.error("user %d gives up: %s", self.number, exc)
                if lost is not None:
                    self._fire("WS", "reconnect", _ms(lost.lost_at or time.monotonic()), exc)
                self.fatal = exc
                self.connected.set()
                return
            self.link = link
            self.connected.set()
            link.closed.wait()
            self.connected.clear()
            lost = link

    def _reconnect(self, lost: Link | None) -> Link:
        if lost is not None:
            now = time.monotonic()
            if lost.close_code in FATAL_CLOSE_CODES:
                raise Fatal(f"the server closed {lost.close_code} ({FATAL_CLOSE_CODES[lost.close_code]})")
            reason = f"closed {lost.close_code}"
            self.budget.session_ended(
                lived=now - lost.opened_at, answered=lost.responses_done > 0, reason=reason
            )
            gevent.sleep(self.budget.delay())
        while True:
            try:
                link = self._open()
                break
            except Retry as exc:
                self.budget.failed(str(exc))
                gevent.sleep(self.budget.delay(exc.retry_after))
        if lost is not None and lost.lost_at is not None:
            self._fire("WS", "reconnect", (time.monotonic() - lost.lost_at) * 1000)
        return link

    def _open(self) -> Link:
        credential = self.key
        for fresh in (False, True):
            if self.options.auth == "token":
                credential = self._token(fresh=fresh)
            started = time.monotonic()
            try:
                ws = websocket.create_connection(
                    self.ws_url,
                    header=[f"Authorization: Bearer {credential}"],
                    timeout=self.options.open_timeout,
                    enable_multithread=True,  # the reader greenlet answers pings while the task sends
                    # websocket-client checks UTF-8 byte by byte in Python (2.5 ms per 100 ms audio delta,
                    # the load generator's whole budget at 200 users); json.loads checks it in C instead.
                    skip_utf8_validation=True,
                )
            except websocket.WebSocketBadStatusException as exc:
                status = exc.status_code
                body = exc.resp_body or b""
                self._fire("WS", "handshake", _ms(started), RealtimeError(f"HTTP {status}"))
                if status == 401 and self.options.auth == "token" and not fresh:
                    self.token = None
                    continue
                if status in (401, 403):
                    raise Fatal(f"HTTP {status} at the handshake: {error_message(body)}") from None
                headers = exc.resp_headers or {}
                retry_after = parse_retry_after(headers.get("retry-after") or headers.get("Retry-After"))
                raise Retry(f"HTTP {status} at the handshake", retry_after=retry_after) from None
            except (OSError, websocket.WebSocketException) as exc:
                self._fire("WS", "handshake", _ms(started), exc)
                raise Retry(f"cannot connect: {exc!r}") from None
            self._fire("WS", "handshake", _ms(started))
            return self._start_session(ws, started)
        raise AssertionError("unreachable: the second 401 is fatal")

    def _token(self, *, fresh: bool) -> str:
        token = self.token
        if not fresh and token is not None and time.time() < token.refresh_at:
            return token.value
        body = {"session": {"type": "realtime", "model": self.model}}
        with self.http.post(
            "/realtime/client_secrets",
            json=body,
            headers={"Authorization": f"Bearer {self.key}"},
            name="client_secrets",
            timeout=self.options.open_timeout,
            catch_response=True,
        ) as response:
            status = response.status_code
            if status != 200:
                response.failure(f"HTTP {status}: {error_message(response.text or '')}")
                if status == 429 or status >= 500 or status == 0:
                    retry_after = parse_retry_after(response.headers.get("Retry-After"))
                    raise Retry(f"HTTP {status} minting a token", retry_after=retry_after)
                raise Fatal(f"HTTP {status} minting a token: {error_message(response.text or '')}")
            try:
                data = response.json()
                value, expires_at = str(data["value"]), float(data["expires_at"])
            except (ValueError, KeyError, TypeError):
                response.failure("the client_secrets answer is not a token")
                raise Retry("the client_secrets answer is not a token") from None
        now = time.time()
        self.token = Token(value, refresh_at=expires_at - max(1.0, 0.2 * max(0.0, expires_at - now)))
        return value

    def _start_session(self, ws: websocket.WebSocket, started: float) -> Link:
        """session.created (waited for here, before the reader starts), then session.update."""
        try:
            session = self._await_created(ws, started)
        except BaseException:
            ws.shutdown()
            raise
        ws.settimeout(None)
        link = Link(ws=ws, session_id=str(session.get("id")), opened_at=time.monotonic())
        link.reader = gevent.spawn(self._read, link)
        asked = time.monotonic()
        try:
            self._send(link, json.dumps({"type": "session.update", "session": self._session_config()}))
            updated = link.updated.wait(self.options.open_timeout)
        except BaseException:  # the user is stopped while waiting: the session must not outlive it
            self._close(link)
            raise
        if updated:
            self._fire("WS", "session.updated", _ms(asked))
        elif not link.closed.is_set():
            self._fire("WS", "session.updated", _ms(asked), RealtimeError("no session.updated in time"))
        link.microphone = gevent.spawn(self._microphone, link)
        return link

    def _await_created(self, ws: websocket.WebSocket, started: float) -> dict[str, Any]:
        deadline = started + self.options.open_timeout
        while True:
            ws.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                opcode, frame = ws.recv_data_frame()
            except websocket.WebSocketTimeoutException:
                self._fire("WS", "session.created", _ms(started), RealtimeError("no session.created in time"))
                raise Retry("no session.created in time") from None
            except (OSError, websocket.WebSocketException) as exc:
                self._fire("WS", "session.created", _ms(started), exc)
                raise Retry(f"lost before session.created: {exc!r}") from None
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                code = close_code(frame.data)
                self._fire("WS", "session.created", _ms(started), RealtimeError(f"closed {code}"))
                if code in FATAL_CLOSE_CODES:
                    raise Fatal(f"closed {code} ({FATAL_CLOSE_CODES[code]}) before session.created")
                raise Retry(f"closed {code} before session.created")
            try:
                event = server_event(frame.data)
            except ValueError as exc:
                self._fire("WS", "session.created", _ms(started), exc)
                raise Retry(f"unreadable frame before session.created: {exc}") from None
            if event.get("type") == "session.created":
                self._fire("WS", "session.created", _ms(started))
                return dict(event.get("session") or {})
            if event.get("type") == "error":
                self._error_event(event)

    def _session_config(self) -> dict[str, Any]:
        pcm = {"type": "audio/pcm", "rate": audio.SAMPLE_RATE}
        return {
            "type": "realtime",
            "instructions": INSTRUCTIONS,
            "audio": {
                "input": {"format": pcm, "turn_detection": {"type": "server_vad"}},
                "output": {"format": pcm},
            },
        }

    def _close(self, link: Link) -> None:
        """Close 1000 and let the reader take the server's close frame; a silent peer is cut off."""
        link.closing = True
        if link.microphone is not None:
            link.microphone.kill(block=True, timeout=1.0)
        if not link.closed.is_set():
            try:
                link.ws.send_close(websocket.STATUS_NORMAL, b"load test over")
            except (OSError, websocket.WebSocketException):
                pass
            link.closed.wait(2.0)
        if link.reader is not None:
            link.reader.kill(block=True, timeout=1.0)
        link.ws.shutdown()

    # ---- speaking and listening ----------------------------------------------------------------------

    def _speak(self, link: Link, text: str, *, barge_in: bool = False) -> Turn:
        """Say `text` into the open microphone; server VAD hears its start, and its end in the noise after.

        Over a reply (`barge_in`), the time until server VAD hears the user is the barge-in metric.
        """
        chunks = spoken_chunks(text, self.options.seed + self.number, self.options.audio_chunk_ms)
        turn = Turn(said=text, spoke_at=time.monotonic())
        utterance = Utterance(turn, chunks)
        link.turn, link.utterance = turn, utterance
        gevent.wait([utterance.done, link.closed], count=1)
        if barge_in and not link.closed.is_set():
            if link.speech_started.wait(self.options.response_timeout) and not link.closed.is_set():
                self._fire("AUDIO", "barge-in", (link.speech_started_at - turn.spoke_at) * 1000)
            elif not link.closed.is_set():
                self._fire("AUDIO", "barge-in", _ms(turn.spoke_at), RealtimeError("no speech_started"))
        return turn

    def _microphone(self, link: Link) -> None:
        """The open microphone of a voice app: a chunk every --audio-chunk-ms, in real time, for as long as
        the session lives; a turn's speech when there is one, room noise otherwise."""
        chunk_s = self.options.audio_chunk_ms / 1000
        noise = room_noise_chunk(self.options.seed, self.options.audio_chunk_ms)
        started, sent = time.monotonic(), 0
        lead_in = math.ceil(MIC_LEAD_IN_MS / self.options.audio_chunk_ms)  # chunks of room before any turn
        while not link.closed.is_set():
            # A chunk exists once its audio has been captured: chunk n leaves at (n + 1) chunk lengths.
            delay = started + (sent + 1) * chunk_s - time.monotonic()
            if delay > 0:
                gevent.sleep(delay)
            elif delay < -1.0:  # the generator was starved for over a second: resume from now, not in a burst
                started, sent = time.monotonic() - chunk_s, 0
            utterance = link.utterance
            if utterance is None or lead_in > 0:
                lead_in -= 1
                chunk = noise
            else:
                if utterance.sent == 0:
                    utterance.turn.spoke_at = time.monotonic() - chunk_s  # its first sound was captured then
                chunk = utterance.chunks[utterance.sent]
                utterance.sent += 1
                if utterance.sent == len(utterance.chunks):
                    link.utterance = None
                    utterance.done.set()
            sent += 1
            if not self._send(link, chunk):
                break
        if link.utterance is not None:
            link.utterance.done.set()

    def _await_reply(self, link: Link, turn: Turn) -> bool:
        """Wait for the response to `turn` however long it plays; True if it came. A server that says
        nothing for --response-timeout while the reply is due is a dead session (the reference client's
        watchdog)."""
        timeout = self.options.response_timeout
        asked = time.monotonic()
        while not turn.done.wait(max(0.0, max(asked, link.last_event_at) + timeout - time.monotonic())):
            if time.monotonic() - max(asked, link.last_event_at) < timeout:
                continue  # something came meanwhile: the reply is underway
            # Where it stuck, in the failure's name: the server never heard the end of the turn, never
            # started a response, or started one that went quiet.
            stage = (
                "no speech_stopped"
                if turn.stopped_at is None
                else "no response.created"
                if turn.response_id is None
                else "no response.done"
            )
            self._report_turn(turn, RealtimeError(f"silent for {timeout:g} s ({stage})"))
            log.warning("user %d, %s: silent for %g s (%s)", self.number, link.session_id, timeout, stage)
            link.ws.abort()  # the reader sees the loss; the connection greenlet reconnects
            link.closed.wait(2.0)
            return False
        return turn.status in ("completed", "incomplete", "cancelled")

    def _listen_to_end(self, link: Link) -> None:
        """The user hears the reply out, by their own clock (deltas may have arrived long before)."""
        playback = link.playback
        if playback is not None:
            remaining = playback.plays_until - time.monotonic()
            if remaining > 0:
                link.closed.wait(remaining)

    # ---- the reader ----------------------------------------------------------------------------------

    def _read(self, link: Link) -> None:
        try:
            while True:
                opcode, frame = link.ws.recv_data_frame()
                if opcode == websocket.ABNF.OPCODE_CLOSE:
                    link.close_code = close_code(frame.data)
                    break
                if opcode == websocket.ABNF.OPCODE_TEXT:
                    self._on_event(link, server_event(frame.data), time.monotonic())
        except (OSError, websocket.WebSocketException):
            link.close_code = link.close_code or CLOSE_ABNORMAL
        except (ValueError, TypeError, AttributeError) as exc:
            # Not a Realtime event (not JSON, or fields of the wrong shape): a broken server or relay.
            log.error("user %d: unreadable server frame: %r", self.number, exc)
            self._fire("WS", "frame", 0, exc)
            link.close_code = CLOSE_ABNORMAL
        finally:
            link.ws.shutdown()  # the socket goes with the session, however it ended
            link.lost_at = time.monotonic()
            link.closed.set()
            for turn in {*link.responses.values(), *([link.turn] if link.turn else [])}:
                if not turn.done.is_set():
                    turn.status = "lost"
                    if not link.closing:
                        self._report_turn(turn, RealtimeError(f"connection lost ({link.close_code})"))
                    turn.done.set()
                    turn.first_delta.set()
            link.speech_started.set()

    def _on_event(self, link: Link, event: dict[str, Any], now: float) -> None:
        link.last_event_at = now
        kind = event.get("type")
        if kind == "response.output_audio.delta":
            self._on_audio(link, event, now)
        elif kind == "input_audio_buffer.speech_started":
            link.speech_started_at = now
            link.speech_started.set()
            self._user_interrupts(link, now)
        elif kind == "input_audio_buffer.speech_stopped":
            if link.turn is not None and link.turn.stopped_at is None:
                link.turn.stopped_at = now
        elif kind == "response.created":
            response_id = str((event.get("response") or {}).get("id"))
            link.active_response = response_id
            turn = link.turn
            if turn is not None and turn.response_id is None:
                turn.response_id, turn.created_at = response_id, now
                link.responses[response_id] = turn
        elif kind == "response.done":
            self._on_response_done(link, event.get("response") or {}, now)
        elif kind == "session.updated":
            link.updated.set()
        elif kind == "error":
            code = self._error_event(event)
            # It fails every turn in flight: those with a response underway, and one still waiting for its.
            for turn in {*link.responses.values(), *([link.turn] if link.turn else [])}:
                if not turn.done.is_set():
                    turn.errors.append(code)

    def _on_audio(self, link: Link, event: dict[str, Any], now: float) -> None:
        response_id, item_id = str(event.get("response_id")), str(event.get("item_id"))
        turn = link.responses.get(response_id)
        playback = link.playback
        if response_id in link.silenced:
            return  # audio of a reply the user already talked over is not played
        if playback is None or playback.item_id != item_id:
            # A new item plays after what is still playing, as a player queues it.
            start = max(now, playback.plays_until) if playback is not None else now
            playback = link.playback = Player.start(item_id, response_id, start)
        late = playback.add(decoded_length(str(event.get("delta", ""))) / BYTES_PER_MS, now)
        if turn is None:
            return
        turn.lateness_ms = max(turn.lateness_ms, late)
        if turn.first_delta_at is None:
            turn.first_delta_at = now
            turn.first_delta.set()
            if turn.created_at is not None:
                self._fire("AUDIO", "first delta", (now - turn.created_at) * 1000)

    def _user_interrupts(self, link: Link, now: float) -> None:
        """Server VAD heard the user: local playback stops; truncate what was not heard."""
        playback, link.playback = link.playback, None
        if playback is None or not playback.playing(now):
            return
        link.silenced.add(playback.response_id)
        played = playback.played_ms(now)
        if link.active_response == playback.response_id:
            # The server cancels this response; its item's audio is fixed once the response is done.
            link.deferred_truncate = (playback.response_id, playback.item_id, played)
        else:
            self._truncate(link, playback.item_id, played)

    def _on_response_done(self, link: Link, response: dict[str, Any], now: float) -> None:
        response_id = str(response.get("id"))
        if link.active_response == response_id:
            link.active_response = None
        link.responses_done += 1
        deferred = link.deferred_truncate
        if deferred is not None and deferred[0] == response_id:
            link.deferred_truncate = None
            self._truncate(link, deferred[1], deferred[2])
        turn = link.responses.pop(response_id, None)
        if turn is None:
            return
        turn.status = str(response.get("status"))
        if turn.first_delta_at is not None:
            self._fire("AUDIO", "lateness", turn.lateness_ms)
        failure: Exception | None = None
        if turn.errors:
            failure = RealtimeError(f"error event {', '.join(turn.errors)}")
        elif turn.status == "failed":
            error = ((response.get("status_details") or {}).get("error")) or {}
            failure = RealtimeError(f"response failed: {error.get('code') or error.get('type')}")
        elif turn.first_delta_at is None and turn.status != "cancelled":
            failure = RealtimeError(f"response {turn.status} without audio")
        if failure is not None or turn.first_delta_at is not None:
            self._report_turn(turn, failure)
        turn.done.set()
        turn.first_delta.set()

    def _report_turn(self, turn: Turn, failure: Exception | None) -> None:
        if turn.reported:
            return
        turn.reported = True
        latency = 0.0
        if turn.stopped_at is not None and turn.first_delta_at is not None:
            latency = (turn.first_delta_at - turn.stopped_at) * 1000
        elif failure is None:
            return  # a reply with no speech_stopped before it (VAD split a turn): no latency to report
        self._fire("AUDIO", "turn latency", latency, failure)

    def _error_event(self, event: dict[str, Any]) -> str:
        error = event.get("error") or {}
        code = str(error.get("code") or error.get("type") or "unknown")
        self._fire("ERROR", code, 0, RealtimeError(str(error.get("message") or code)))
        return code

    def _truncate(self, link: Link, item_id: str, played_ms: int) -> None:
        if played_ms > 0:  # the real API rejects audio_end_ms 0
            truncate = {
                "type": "conversation.item.truncate",
                "item_id": item_id,
                "content_index": 0,
                "audio_end_ms": played_ms,
            }
            self._send(link, json.dumps(truncate))

    # ---- plumbing ------------------------------------------------------------------------------------

    def _send(self, link: Link, text: str) -> bool:
        try:
            link.ws.send(text)
            return True
        except (OSError, websocket.WebSocketException):
            link.ws.abort()  # the reader notices and reports the loss
            return False

    def _fire(self, kind: str, name: str, ms: float, exception: Exception | None = None) -> None:
        self.environment.events.request.fire(
            request_type=kind,
            name=name,
            response_time=ms,
            response_length=0,
            exception=exception,
            context={"user": self.number},
        )


def server_event(data: bytes | str) -> dict[str, Any]:
    """A text frame as a server event: a JSON object, UTF-8 checked by the decoder (ValueError if not)."""
    event = json.loads(data)
    if not isinstance(event, dict):
        raise ValueError(f"a server event is a JSON object, not {type(event).__name__}")
    return event


def close_code(payload: bytes) -> int:
    return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else CLOSE_NO_STATUS


def _ms(since: float) -> float:
    return (time.monotonic() - since) * 1000
