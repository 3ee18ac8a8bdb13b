"""The fake Realtime origin: one aiohttp app serving REST and WebSocket under `/v1`, as the real one does.

aiohttp (not the `websockets` server) because one port must take POST bodies (client secrets, WebRTC
calls, the control API) next to the WebSocket upgrade, and because it exposes the transport: faults need
exact control of the wire (close frames, aborts, half-open stalls, handshake statuses).

Each WebSocket connection is a thin shell around a `Session` engine: frames in → `receive`, engine
deadlines → a loop timer → `advance`, produced events → one writer task.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import random
import socket
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import WSMsgType, web

from . import control, plan, session_config
from .dialect import BETA, GA, Dialect
from .engine import Limits, Session
from .faults import FaultState, retry_after_header
from .history import History
from .model import Script, ScriptedModel
from .protocol import IdFactory, RealtimeError, decode_client_frame, encode
from .schema import Enum, Int, Obj, check
from .tokens import TOKEN_PREFIX, Token, TokenAuthority, TokenError, key_id

if TYPE_CHECKING:
    from .webrtc.endpoint import WebRTCEndpoint

STALL_WATCH_SECONDS = 0.5
TCP_GONE_STATES = (7, 8, 9)  # TCP_CLOSE, TCP_CLOSE_WAIT (the peer sent FIN), TCP_LAST_ACK (tcp_states.h)


def peer_has_gone(transport: asyncio.BaseTransport) -> bool:
    """The peer closed its end (FIN or reset seen by the kernel), even though nothing is being read."""
    sock = transport.get_extra_info("socket")
    if sock is None or not hasattr(socket, "TCP_INFO"):
        return False
    try:
        state = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0]
    except OSError:
        return True
    return state in TCP_GONE_STATES


MAX_FRAME_BYTES = (
    64 * 1024 * 1024
)  # beyond this aiohttp closes with 1009; below it we answer with an error event
INVALID_KEY_CLOSE = (3000, "invalid_request_error.invalid_api_key")


@dataclass(frozen=True)
class Profile:
    name: str
    dialect: Dialect
    max_session: float
    azure: bool = False


PROFILES = {
    "openai": Profile("openai", GA, 3600.0),
    "openai-beta": Profile("openai-beta", BETA, 1800.0),
    "azure": Profile("azure", GA, 1800.0, azure=True),
}


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 0
    profile: str = "openai"
    max_session: float | None = None  # None: the profile's cap
    token_ttl: float | None = (
        None  # None: 600 s for client_secrets, 60 s for beta /sessions (the real defaults)
    )
    api_keys: list[str] = field(default_factory=list)  # empty: any key starting "sk-" is accepted
    seed: int = 0
    response_latency: float = 0.0
    record_dir: str | None = None
    expiry_ending: str = "both"
    context_window: int = 32768
    pacing: float = 1.0
    script: str | None = None
    idle_timeout: float | None = None  # streaming-session rule: close after this long without activity
    max_sessions_per_key: int | None = None  # concurrent-session limit; the refusal names the leaked sessions
    admin_token: str | None = None  # guards the control API when bound beyond loopback
    chaos: str | None = None  # a fault plan applied to every session (see simulator/plan.py)
    history_limit: int | None = None  # records kept in memory (None: all); --record DIR keeps all on disk

    @property
    def profile_spec(self) -> Profile:
        return PROFILES[self.profile]

    def limits(self) -> Limits:
        return Limits(
            max_session=self.max_session if self.max_session is not None else self.profile_spec.max_session,
            context_window=self.context_window,
            response_latency=self.response_latency,
            expiry_ending=self.expiry_ending,  # type: ignore[arg-type]
            pacing=self.pacing,
            idle_timeout=self.idle_timeout,
        )


_STATUS_TEXT = {
    401: "Incorrect API key provided.",
    403: "You are not allowed to access this model.",
    429: "Rate limit reached for requests. Please try again later.",
    500: "The server had an error while processing your request. Sorry about that!",
    502: "Bad gateway.",
    503: "The engine is currently overloaded, please try again later.",
}


def error_body(
    message: str, *, type: str = "invalid_request_error", code: str | None = None, param: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def json_error(status: int, message: str, **fields: Any) -> web.Response:
    return web.json_response(error_body(message, **fields), status=status)


def masked(key: str) -> str:
    return key[:3] + "*" * 4 + key[-4:] if len(key) > 8 else "*" * len(key)


class Credential:
    """Who is asking: an API key or an ephemeral token, from a header or a browser subprotocol."""

    def __init__(self, value: str | None, source: str) -> None:
        self.value = value
        self.source = source

    @property
    def is_token(self) -> bool:
        return bool(self.value and self.value.startswith(TOKEN_PREFIX))


def read_credential(request: web.Request, *, azure: bool) -> Credential:
    auth = request.headers.get("Authorization", "")
    if auth.lower().startswith("bearer "):
        return Credential(auth[7:].strip(), "bearer")
    if azure and request.headers.get("api-key"):
        return Credential(request.headers["api-key"].strip(), "api-key")
    for proto in request.headers.get("Sec-WebSocket-Protocol", "").split(","):
        proto = proto.strip()
        if proto.startswith("openai-insecure-api-key."):
            return Credential(proto[len("openai-insecure-api-key.") :], "subprotocol")
    return Credential(None, "none")


class LiveSession(Protocol):
    """What carries a live session — a WebSocket `Connection` or a WebRTC `Call` — as faults see it."""

    transport: str
    session: Session
    key_id: str
    conn_id: str
    loop: asyncio.AbstractEventLoop
    closed_by: str | None
    sent_counts: Counter[str]
    triggers: list[tuple[str, int, Callable[[], Any]]]
    on_close: list[Callable[[], Any]]

    def pump(self) -> None: ...


class Connection:
    """One WebSocket connection carrying one session: the I/O shell around the engine.

    It also owns the wire-level faults, because only it can touch the socket: `drop` (no close frame, the
    client sees 1006; optionally after half a frame), `stall` (half-open: nothing sent, pings unanswered),
    per-event `latency` ± jitter, a slow first audio delta, and `close` with any code.
    """

    transport = "websocket"

    def __init__(
        self,
        server: RealtimeServer,
        request: web.Request,
        ws: web.WebSocketResponse,
        session: Session,
        conn_id: str,
        key: str,
    ) -> None:
        self.server = server
        self.request = request
        self.ws = ws
        self.session = session
        self.conn_id = conn_id
        self.key_id = key
        self.loop = asyncio.get_running_loop()
        self.pending: deque[tuple[float, dict[str, Any]]] = deque()  # (due time, event), due times ascending
        self.wake = asyncio.Event()
        self.timer: asyncio.TimerHandle | None = None
        self.closed_by: str | None = None
        self.close_sent: tuple[int, str] | None = None
        self.client_close: tuple[int, str] | None = None
        self.fault_ending: str | None = None
        self.done = asyncio.Event()
        self.sent_counts: Counter[str] = Counter()
        # (event type, nth, callback): fire the callback right after the nth event of that type is sent
        self.triggers: list[tuple[str, int, Callable[[], Any]]] = []
        self.on_close: list[Callable[[], Any]] = []  # e.g. cancel a fault plan's pending timers
        self.latency = 0.0
        self.jitter = 0.0
        self.rng = random.Random(f"{server.config.seed}/{conn_id}/latency")
        self.first_delta_delay = 0.0
        self.delayed_responses: set[str] = set()
        self.stalled = False
        self.last_due = 0.0

    @property
    def history(self) -> History:
        return self.server.history

    def pump(self) -> None:
        """Move what the engine produced to the writer and re-arm the timer for its next deadline."""
        events = self.session.drain()
        if events:
            now = self.loop.time()
            for event in events:
                self.pending.append((self._due(event, now), event))
        if events or self.session.close_request is not None:
            self.wake.set()
        deadline = self.session.next_deadline()
        if self.timer is not None and (deadline is None or self.timer.when() != deadline):
            self.timer.cancel()
            self.timer = None
        if deadline is not None and self.timer is None:
            self.timer = self.loop.call_at(deadline, self._on_timer)

    def _due(self, event: dict[str, Any], now: float) -> float:
        if not (self.latency or self.jitter or self.first_delta_delay):
            return 0.0
        due = now + max(0.0, self.latency + self.rng.uniform(-self.jitter, self.jitter))
        if self.first_delta_delay and event["type"].endswith("audio.delta"):
            response_id = event["response_id"]
            if response_id not in self.delayed_responses:
                self.delayed_responses.add(response_id)
                due += self.first_delta_delay
                self.first_delta_delay = 0.0
        self.last_due = max(self.last_due, due)  # delayed, never reordered
        return self.last_due

    def _on_timer(self) -> None:
        self.timer = None
        self.session.advance(self.loop.time())
        self.pump()

    async def writer(self) -> None:
        ws, history, sid, pending = self.ws, self.history, self.session.id, self.pending
        while True:
            await self.wake.wait()
            self.wake.clear()
            while pending and not self.stalled and self.closed_by is None:
                due, event = pending[0]
                if due and (wait := due - self.loop.time()) > 0:
                    self.wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.wake.wait(), wait)
                    continue  # a stall, drop or close may have come meanwhile
                pending.popleft()
                history.event("out", sid, event)
                try:
                    await ws.send_str(encode(event))
                except (ConnectionError, RuntimeError):
                    return
                if self.triggers:
                    self._fire_triggers(event["type"])
            request = self.session.close_request
            if request is not None and not pending and not self.stalled:
                await self.close(*request, by="server")
                return

    def _fire_triggers(self, event_type: str) -> None:
        self.sent_counts[event_type] += 1
        count = self.sent_counts[event_type]
        due = [t for t in self.triggers if t[0] == event_type and t[1] == count]
        for trigger in due:
            self.triggers.remove(trigger)
            trigger[2]()

    async def close(self, code: int, reason: str, *, by: str) -> None:
        if self.closed_by is None:
            self.closed_by = by
            self.close_sent = (code, reason)
            with contextlib.suppress(ConnectionError, RuntimeError, asyncio.TimeoutError):
                await self.ws.close(code=code, message=reason.encode())

    # ---- wire faults ------------------------------------------------------------------------------

    def drop(self, *, mid_frame: bool = False) -> None:
        """Tear the TCP connection down with no close frame (optionally after a partial frame): 1006."""
        transport = self.request.transport
        if transport is None or self.closed_by is not None:
            return
        self.closed_by = "server"
        self.fault_ending = "drop-mid-frame" if mid_frame else "drop"
        if mid_frame:
            # A text frame header announcing 1000 bytes, then only the start of the payload.
            transport.write(b"\x81\x7e" + (1000).to_bytes(2, "big") + b'{"type":"response.output_au')
        transport.abort()

    def stall(self, seconds: float | None = None) -> None:
        """Half-open: stop sending and stop reading (so pings go unanswered); the socket stays open."""
        transport = self.request.transport
        self.stalled = True
        if transport is not None:
            transport.pause_reading()
            self.loop.call_later(STALL_WATCH_SECONDS, self._watch_stalled_peer)
        if seconds:
            self.loop.call_later(seconds, self.unstall)

    def _watch_stalled_peer(self) -> None:
        """With reads paused the server would never see a client that gave up; the kernel still knows."""
        transport = self.request.transport
        if not self.stalled or transport is None or transport.is_closing():
            return
        if peer_has_gone(transport):
            self.closed_by, self.fault_ending = "client", "abandoned-during-stall"
            transport.abort()
            return
        self.loop.call_later(STALL_WATCH_SECONDS, self._watch_stalled_peer)

    def unstall(self) -> None:
        self.stalled = False
        transport = self.request.transport
        if transport is not None and not transport.is_closing():
            transport.resume_reading()
        self.wake.set()

    def set_latency(self, latency: float, jitter: float = 0.0) -> None:
        self.latency, self.jitter = latency, jitter

    def close_now(self, code: int, reason: str, error: RealtimeError | None = None) -> None:
        """A close frame now, after an optional error event; what is still queued never goes out."""
        self.session.drain()
        self.pending.clear()
        if error is not None:
            self.session.error(error)
        self.session.close_request = (code, reason)
        self.pump()

    async def run(self) -> None:
        session, history = self.session, self.history
        session.start(self.loop.time())
        writer = asyncio.create_task(self.writer())
        self.pump()
        try:
            while True:
                msg = await self.ws.receive()
                now = self.loop.time()
                if msg.type == WSMsgType.CLOSE:  # the client's close frame: keep its code and reason
                    self.client_close = (msg.data, msg.extra or "")
                    break
                if msg.type in (WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                    break
                if msg.type == WSMsgType.TEXT:
                    self.handle_text(msg.data, now)
                elif msg.type == WSMsgType.BINARY:
                    history.record(
                        "event", dir="in", session=session.id, event={"binary_bytes": len(msg.data)}
                    )
                    session.error(
                        RealtimeError(
                            "Binary frames are not supported. Send each event as a JSON text frame.",
                            code="invalid_event",
                        )
                    )
                    session.advance(now)
                self.pump()
        finally:
            if self.timer is not None:
                self.timer.cancel()
            for callback in self.on_close:
                callback()
            await asyncio.sleep(0)  # let the writer send what is already queued (a close, an error)
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
            if self.fault_ending is not None:
                code, reason = 1006, ""
            elif self.close_sent is not None:
                code, reason = self.close_sent
            elif self.client_close is not None:
                code, reason = self.client_close
            else:
                code, reason = self.ws.close_code, ""
            by = self.closed_by or ("client" if code not in (None, 1006) else "network")
            history.record(
                "close",
                session=session.id,
                conn=self.conn_id,
                key_id=self.key_id,
                code=code if code is not None else 1006,
                reason=reason,
                by=by,
                fault=self.fault_ending,
            )
            history.flush()
            self.done.set()

    def handle_text(self, text: str, now: float) -> None:
        try:
            event = decode_client_frame(text)
        except RealtimeError as exc:
            self.history.record(
                "event", dir="in", session=self.session.id, event={"invalid_frame": text[:200]}
            )
            self.session.error(exc)
            return
        self.history.event("in", self.session.id, event)
        self.session.receive(event, now)


class RealtimeServer:
    def __init__(
        self,
        config: ServerConfig | None = None,
        *,
        history: History | None = None,
        tokens: TokenAuthority | None = None,
    ) -> None:
        self.config = config or ServerConfig()
        self.profile = self.config.profile_spec
        self.history = history or History(self.config.record_dir, limit=self.config.history_limit)
        self.tokens = tokens or TokenAuthority()
        self.script = Script.load(self.config.script) if self.config.script else None
        self.connections: dict[str, Connection] = {}
        self.connection_count = 0
        self.faults = FaultState()
        self.webrtc: WebRTCEndpoint | None = None  # set when the WebRTC extension installs itself
        self.audio_turns: dict[str, Iterator[int]] = {}  # per client identity: the script's next transcript
        self.control: control.ControlPlane | None = None  # set by control.install
        self.chaos = plan.parse(self.config.chaos) if self.config.chaos else None
        self.app = self._build_app()
        self.runner: web.AppRunner | None = None
        self.base_url = ""
        self.port = 0

    # ---- lifecycle --------------------------------------------------------------------------------

    def _build_app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_FRAME_BYTES, handler_args={"max_field_size": 65536})
        app.router.add_get("/v1/realtime", self.realtime_websocket)
        app.router.add_post("/v1/realtime/client_secrets", self.create_client_secret)
        app.router.add_post("/v1/realtime/sessions", self.create_beta_session)
        control.install(self, app)
        if self.profile.azure:
            app.router.add_get("/openai/realtime", self.realtime_websocket)
            app.router.add_get("/openai/v1/realtime", self.realtime_websocket)
        from . import webrtc  # noqa: F401  (registers the WebRTC extension: calls, hangup, sideband)

        for extend in self.extensions:
            extend(self, app)
        return app

    # Later subsystems (control API, WebRTC) add routes here without the server importing them.
    extensions: list[Callable[[RealtimeServer, web.Application], None]] = []
    # `/v1/realtime?call_id=...` joins a WebRTC call's session (the sideband); set by the WebRTC extension.
    sideband: Callable[[web.Request], Awaitable[web.StreamResponse]] | None = None

    async def start(self) -> str:
        self.runner = web.AppRunner(self.app, handle_signals=False, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, self.config.host, self.config.port, reuse_address=True)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        host = self.config.host if ":" not in self.config.host else f"[{self.config.host}]"
        self.base_url = f"http://{host}:{self.port}/v1"
        self.history.record(
            "server", event="start", base_url=self.base_url, config=_public_config(self.config)
        )
        if self.chaos is not None and self.control is not None:
            self.control.apply_server_plan(self.chaos)
        return self.base_url

    async def stop(self, code: int = 1001, reason: str = "server shutting down") -> None:
        """Close every live session with `code` (1001: going away), then stop serving."""
        live = list(self.connections.values())
        for conn in live:
            await conn.close(code, reason, by="server")
        if live:
            await asyncio.wait([asyncio.create_task(c.done.wait()) for c in live], timeout=5)
        if self.runner is not None:
            await self.runner.cleanup()
        self.history.record("server", event="stop")
        self.history.close()

    # ---- auth -------------------------------------------------------------------------------------

    def live_connections(self, key_id: str | None = None) -> list[LiveSession]:
        """Every live session's carrier — WebSocket connections and WebRTC calls — of a key, or all."""
        calls = list(self.webrtc.calls.values()) if self.webrtc is not None else []
        carriers: list[LiveSession] = [*self.connections.values(), *(c for c in calls if not c.ended)]
        return [c for c in carriers if key_id is None or c.key_id == key_id]

    def target_key_id(self, target: dict[str, Any]) -> str | None:
        if "key" in target:
            return key_id(target["key"])
        return target.get("key_id")

    def resolve_targets(self, target: dict[str, Any]) -> list[LiveSession]:
        """The live sessions a fault target names: one session, every session of a key, or all."""
        if "session" in target:
            conn = next((c for c in self.live_connections() if c.session.id == target["session"]), None)
            if conn is None:
                raise RealtimeError(
                    f"No live session '{target['session']}'.",
                    code="session_not_found",
                    param="target.session",
                )
            return [conn]
        return self.live_connections(self.target_key_id(target))

    def _age(self, conn: LiveSession) -> float:
        return conn.loop.time() - conn.session.started_at

    def key_is_valid(self, key: str) -> bool:
        if self.config.api_keys:
            return key in self.config.api_keys
        return key.startswith("sk-")

    def _new_conn_id(self) -> str:
        self.connection_count += 1
        return f"conn_{self.connection_count:06d}"

    # ---- WebSocket ----------------------------------------------------------------------------------

    async def realtime_websocket(self, request: web.Request) -> web.StreamResponse:
        if "call_id" in request.query and self.sideband is not None:
            return await self.sideband(request)
        conn_id = self._new_conn_id()
        credential = read_credential(request, azure=self.profile.azure)
        handshake = {
            "conn": conn_id,
            "path": request.path,
            "transport": "websocket",
            "query": dict(request.query),
            "credential": key_id(credential.value)[4:] if credential.value else None,
        }

        def refuse(
            status: int,
            reason: str,
            message: str,
            key: str | None = None,
            retry_after: float | None = None,
            **extra: Any,
        ) -> web.Response:
            header = retry_after_header(retry_after) if retry_after is not None else None
            self.history.record(
                "handshake",
                **handshake,
                key_id=key,
                accepted=False,
                status=status,
                reason=reason,
                retry_after=int(header) if header else None,
            )
            response = json_error(status, message, **extra)
            if header:
                response.headers["Retry-After"] = header
            return response

        if request.headers.get("Upgrade", "").lower() != "websocket":
            return refuse(426, "not_websocket", "This endpoint only accepts WebSocket connections.")
        if credential.value is None:
            return refuse(
                401,
                "missing_credential",
                "You didn't provide an API key. You need to provide your API key in an Authorization "
                "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
            )
        initial_config: dict[str, Any] | None = None
        token_id = None
        if credential.is_token:
            try:
                token = self.tokens.verify(credential.value)
            except TokenError as exc:
                return refuse(
                    401,
                    f"token_{exc.reason}",
                    "Your ephemeral token is invalid or has expired."
                    if exc.reason != "invalid"
                    else "Invalid ephemeral token provided.",
                    code="invalid_api_key",
                )
            identity, token_id = token.key_id, token.token_id
            initial_config = dict(token.session) or None
        else:
            identity = key_id(credential.value)
        rejection = self.faults.take_rejection(identity)
        if rejection is not None and rejection.status is not None:
            return refuse(
                rejection.status,
                "fault:reject-connects",
                rejection.reason or _STATUS_TEXT.get(rejection.status, "The server refused the connection."),
                identity,
                retry_after=rejection.retry_after,
                code="rate_limit_exceeded" if rejection.status == 429 else None,
            )
        key_is_known = credential.is_token or self.key_is_valid(credential.value)
        limit = self.config.max_sessions_per_key
        if limit is not None and key_is_known:
            open_sessions = self.live_connections(identity)
            if len(open_sessions) >= limit:
                listed = ", ".join(f"{c.session.id} (open {self._age(c):.0f} s)" for c in open_sessions)
                return refuse(
                    429,
                    "concurrent_session_limit",
                    f"Concurrent session limit reached: {len(open_sessions)} of {limit} sessions are "
                    f"still open for this key: {listed}. Close sessions you no longer use.",
                    identity,
                    code="concurrent_session_limit",
                )
        dialect = self._dialect_for(request)
        ws = web.WebSocketResponse(
            protocols=("realtime",), max_msg_size=MAX_FRAME_BYTES, compress=False, autoping=True
        )
        await ws.prepare(request)
        auth = "ephemeral" if credential.is_token else "api_key"
        if not key_is_known:
            # The real service accepts the upgrade, reports the bad key, then closes with 3000.
            self.history.record(
                "handshake",
                **handshake,
                key_id=identity,
                auth=auth,
                accepted=True,
                status=101,
                reason="invalid_api_key",
            )
            await self._reject_key(ws, conn_id, identity, credential.value)
            return ws
        if rejection is not None and rejection.close_code is not None:
            # Accepted, then closed at once: the loop one framework fell into with 1008.
            self.history.record(
                "handshake",
                **handshake,
                key_id=identity,
                auth=auth,
                token_id=token_id,
                accepted=True,
                status=101,
                reason="fault:reject-connects",
            )
            with contextlib.suppress(ConnectionError, RuntimeError):
                await ws.close(code=rejection.close_code, message=rejection.reason.encode())
            self.history.record(
                "close",
                session=None,
                conn=conn_id,
                key_id=identity,
                code=rejection.close_code,
                reason=rejection.reason,
                by="server",
                fault="reject-connects",
            )
            return ws
        self.history.record(
            "handshake",
            **handshake,
            key_id=identity,
            auth=auth,
            token_id=token_id,
            accepted=True,
            status=101,
            reason=None,
        )
        model_name = (
            request.query.get("model")
            or request.query.get("deployment")
            or ((initial_config or {}).get("model") or session_config.DEFAULT_MODEL)
        )
        if initial_config is not None:
            initial_config.pop("model", None)
        loop = asyncio.get_running_loop()
        session = Session(
            ids=IdFactory.seeded(self.config.seed, conn_id),
            model=ScriptedModel(self.script, seed=self.config.seed),
            now=loop.time(),
            wall=time.time(),
            limits=self.config.limits(),
            model_name=model_name,
            dialect=dialect,
            initial_config=initial_config,
            audio_seed=self.config.seed,
            audio_turns=self.audio_turns.setdefault(identity, itertools.count()),
        )
        self.history.record(
            "session",
            session=session.id,
            conn=conn_id,
            key_id=identity,
            model=model_name,
            profile=self.profile.name,
            dialect=dialect.name,
            expires_at=session.expires_at,
            deadline_wall=round(session.deadline_wall, 6),
            token_id=token_id,
        )
        conn = Connection(self, request, ws, session, conn_id, identity)
        self.connections[session.id] = conn
        self._apply_plans(request, conn)
        try:
            await conn.run()
        finally:
            del self.connections[session.id]
        return ws

    def _apply_plans(self, request: web.Request, conn: LiveSession) -> None:
        """The server's --chaos plan, then any plan the client attached (header or query parameter)."""
        assert self.control is not None
        if self.chaos is not None:
            self.control.apply_plan(self.chaos, conn, "plan:server")
        attached = request.headers.get("X-Rtsim-Chaos") or request.query.get("rtsim_chaos")
        if attached:
            self.control.attach_plan(attached, conn)

    def _dialect_for(self, request: web.Request) -> Dialect:
        beta_header = "realtime=v1" in request.headers.get("OpenAI-Beta", "")
        beta_proto = "openai-beta.realtime-v1" in request.headers.get("Sec-WebSocket-Protocol", "")
        azure_preview = self.profile.azure and request.query.get("api-version", "").endswith("-preview")
        if beta_header or beta_proto or azure_preview:
            return BETA
        return self.profile.dialect

    async def _reject_key(self, ws: web.WebSocketResponse, conn_id: str, identity: str, key: str) -> None:
        event = {
            "type": "error",
            "event_id": IdFactory.seeded(self.config.seed, conn_id).event(),
            "error": {
                "type": "invalid_request_error",
                "code": "invalid_api_key",
                "message": f"Incorrect API key provided: {masked(key)}. You can find your API key at "
                "https://platform.openai.com/account/api-keys.",
                "param": None,
                "event_id": None,
            },
        }
        self.history.event("out", None, event)
        with contextlib.suppress(ConnectionError, RuntimeError):
            await ws.send_str(encode(event))
            await ws.close(code=INVALID_KEY_CLOSE[0], message=INVALID_KEY_CLOSE[1].encode())
        self.history.record(
            "close",
            session=None,
            conn=conn_id,
            key_id=identity,
            code=INVALID_KEY_CLOSE[0],
            reason=INVALID_KEY_CLOSE[1],
            by="server",
        )

    # ---- REST ---------------------------------------------------------------------------------------

    def _rest_key(self, request: web.Request) -> tuple[str | None, web.Response | None]:
        """The API key of a REST call, or the real 401 response for a missing, ephemeral or unknown key."""
        credential = read_credential(request, azure=self.profile.azure)
        if credential.value is None:
            return None, json_error(
                401,
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer "
                "YOUR_KEY).",
            )
        if credential.is_token or not self.key_is_valid(credential.value):
            return None, json_error(
                401,
                f"Incorrect API key provided: {masked(credential.value)}. You can find "
                "your API key at https://platform.openai.com/account/api-keys.",
                code="invalid_api_key",
            )
        return credential.value, None

    async def _json_body(self, request: web.Request) -> dict[str, Any]:
        raw = await request.read()
        if not raw:
            return {}
        try:
            body = json.loads(raw)
        except ValueError:
            raise RealtimeError(
                "We could not parse the JSON body of your request. (HINT: This likely means you aren't "
                "using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was "
                "sent was not valid JSON.)"
            ) from None
        if not isinstance(body, dict):
            raise RealtimeError("Invalid body: expected a JSON object.", code="invalid_type")
        return body

    async def _rest(
        self, request: web.Request, handler: Callable[[str, dict[str, Any]], Awaitable[web.Response]]
    ) -> web.Response:
        key, refusal = self._rest_key(request)
        if refusal is not None:
            self.history.record(
                "http",
                method=request.method,
                path=request.path,
                status=refusal.status,
                key_id=None,
                reason="unauthorized",
            )
            return refusal
        assert key is not None
        limited = self.faults.rate_limited()
        if limited > 0:
            response = json_error(
                429,
                "Rate limit reached for requests. Please try again later.",
                type="requests",
                code="rate_limit_exceeded",
            )
            response.headers["Retry-After"] = retry_after = self.faults.rate_limit_retry_after()
            self.history.record(
                "http",
                method=request.method,
                path=request.path,
                status=429,
                key_id=key_id(key),
                reason="rate_limited",
                retry_after=int(retry_after),
            )
            return response
        try:
            response = await handler(key, await self._json_body(request))
        except RealtimeError as exc:
            response = json_error(400, exc.message, code=exc.code, param=exc.param)
        self.history.record(
            "http",
            method=request.method,
            path=request.path,
            status=response.status,
            key_id=key_id(key),
            reason=None,
        )
        return response

    def _mint(self, key: str, ttl: float, session: dict[str, Any], *, endpoint: str) -> tuple[str, Token]:
        """A token, recorded; under the `expire-tokens usable_for` fault its expires_at says more than it is
        worth."""
        if self.faults.token_usable_for is not None:
            value, token = self.tokens.mint(
                key=key,
                ttl=self.faults.token_advertised_ttl or ttl,
                session=session,
                usable_for=self.faults.token_usable_for,
            )
        else:
            value, token = self.tokens.mint(key=key, ttl=ttl, session=session)
        self.history.record(
            "token",
            token_id=token.token_id,
            key_id=token.key_id,
            expires_at=token.expires_at,
            usable_until=token.usable_until,
            endpoint=endpoint,
        )
        return value, token

    async def create_client_secret(self, request: web.Request) -> web.Response:
        return await self._rest(request, self._mint_ga)

    async def _mint_ga(self, key: str, body: dict[str, Any]) -> web.Response:
        check(
            Obj(
                {
                    "expires_after": Obj({"anchor": Enum(("created_at",)), "seconds": Int(10, 7200)}),
                    "session": Obj({}, open=True),
                }
            ),
            body,
        )
        default_ttl = self.config.token_ttl if self.config.token_ttl is not None else 600
        ttl = (body.get("expires_after") or {}).get("seconds", default_ttl)
        session_update = dict(body.get("session") or {"type": "realtime"})
        session_update.setdefault("type", "realtime")
        base = session_config.default_session(session_update.get("model", session_config.DEFAULT_MODEL))
        config = session_config.merge_ga(base, session_update)
        value, token = self._mint(key, ttl, session_update, endpoint="client_secrets")
        session = session_config.render_ga(
            config, session_id=IdFactory.seeded(value).new("sess"), expires_at=0
        )
        return web.json_response({"value": value, "expires_at": token.expires_at, "session": session})

    async def create_beta_session(self, request: web.Request) -> web.Response:
        return await self._rest(request, self._mint_beta)

    async def _mint_beta(self, key: str, body: dict[str, Any]) -> web.Response:
        base = session_config.default_session(body.get("model") or session_config.DEFAULT_MODEL)
        ga_update = session_config.from_beta(body)
        config = session_config.merge_ga(base, ga_update)
        ttl = self.config.token_ttl if self.config.token_ttl is not None else 60
        value, token = self._mint(key, ttl, ga_update, endpoint="sessions")
        session = session_config.to_beta(
            config, session_id=IdFactory.seeded(value).new("sess"), expires_at=token.expires_at
        )
        session["client_secret"] = {"value": value, "expires_at": token.expires_at}
        return web.json_response(session)


def _public_config(config: ServerConfig) -> dict[str, Any]:
    public = dict(config.__dict__)
    public["api_keys"] = [key_id(k) for k in config.api_keys]
    return public


async def serve_forever(config: ServerConfig, ready: Callable[[str], None] | None = None) -> None:
    """Run until SIGINT/SIGTERM, then close every live session with 1001."""
    import signal

    server = RealtimeServer(config)
    base_url = await server.start()
    if ready is not None:
        ready(base_url)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await server.stop()
