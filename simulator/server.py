"""The fake Realtime origin: one aiohttp app serving REST and WebSocket under `/v1`, as the real one does.

aiohttp (not the `websockets` server) because one port must take POST bodies (client secrets, WebRTC
calls, the control API) next to the WebSocket upgrade, and because it exposes the transport: faults need
exact control of the wire (close frames, aborts, half-open stalls, handshake statuses).

Every live session is a carrier (`simulator/carrier.py`) in one registry, `carriers` (session id →
carrier): a `WebSocketCarrier` here, a WebRTC `Call` from `/v1/realtime/calls`. Every handshake goes through
`simulator/admission.py`. The WebRTC package (and aiortc with it) is imported on the first call.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from . import control, cors, plan, session_config, tls
from .admission import (
    MISSING_CREDENTIAL,
    MISSING_CREDENTIAL_REFUSAL,
    MODEL_CLOSE,
    Admission,
    Admitted,
    Refusal,
    incorrect_key_message,
    json_error,
)
from .carrier import Carrier
from .dialect import BETA, GA, Dialect
from .engine import Limits, transcription
from .engine.state import AUDIO_START_DELAY, FASTER_THAN_REAL_TIME, TRANSCRIPTION_DELAY
from .faults import FaultState
from .gcpolicy import QuietCollector
from .history import History
from .looplag import LoopLagMonitor
from .model import Script
from .protocol import IdFactory, RealtimeError, encode, loads_strict
from .schema import Enum, Int, Obj, check
from .sip import SipEndpoint
from .tokens import Token, TokenAuthority, key_id
from .websocket import WebSocketCarrier

if TYPE_CHECKING:
    from .webrtc.call import Call
    from .webrtc.endpoint import WebRTCEndpoint

MAX_FRAME_BYTES = (
    64 * 1024 * 1024
)  # beyond this aiohttp closes with 1009; below it we answer with an error event
INVALID_KEY_CLOSE = (3000, "invalid_request_error.invalid_api_key")
# The GA endpoint no longer serves the beta shape (switched off in May 2026): a beta header or subprotocol
# is answered after the 101 with this error, then close 4000 (captured live GA traffic).
BETA_SHAPE_DISABLED = (
    "beta_api_shape_disabled",
    "The Realtime API beta shape is no longer available. Remove the 'OpenAI-Beta: realtime=v1' header "
    "(or the 'openai-beta.realtime-v1' subprotocol) and use the GA interface.",
)
BETA_SHAPE_CLOSE = (4000, "invalid_request_error.beta_api_shape_disabled")
# base64 of "rtsim-simulated-webhook-secret"; real deployments set their own with --webhook-secret
DEFAULT_WEBHOOK_SECRET = "whsec_cnRzaW0tc2ltdWxhdGVkLXdlYmhvb2stc2VjcmV0"
# `?intent=transcription` with a model (openai/openai-python#2253 quotes the error; the close is assumed).
TRANSCRIPTION_MODEL_GIVEN = (None, "You must not provide a model parameter for transcription sessions.")
TRANSCRIPTION_MODEL_CLOSE = (4000, "invalid_request_error")


@dataclass(frozen=True)
class Profile:
    name: str
    dialect: Dialect
    max_session: float
    azure: bool = False
    expiry_ending: str = "both"  # how the cap ends a session unless --expiry-ending says otherwise


PROFILES = {
    "openai": Profile("openai", GA, 3600.0),
    "openai-beta": Profile("openai-beta", BETA, 1800.0),
    # Azure surfaces its 30-minute cap as a `server_error` (livekit/agents#2341).
    "azure": Profile("azure", GA, 1800.0, azure=True, expiry_ending="server_error"),
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
    mcp_latency: float = 0.0  # how long a (scripted) remote MCP server takes to list its tools or run a call
    record_dir: str | None = None
    expiry_ending: str | None = None  # None: the profile's (Azure: server_error; otherwise both)
    context_window: int = 32768
    pacing: float = FASTER_THAN_REAL_TIME  # 1.0: audio delivered in real time (WebRTC's RTP always is)
    transcription_delay: tuple[float, float] = TRANSCRIPTION_DELAY  # seconds after a commit, seeded
    audio_start_delay: float = AUDIO_START_DELAY  # content_part.added to the first audio delta
    # The real service pings each WebSocket about every 20 s; None: no pings. A client that does not answer
    # is not dropped for it (nothing shows the real service does that).
    ping_interval: float | None = 20.0
    script: str | None = None
    idle_timeout: float | None = None  # streaming-session rule: close after this long without activity
    max_sessions_per_key: int | None = None  # concurrent-session limit; the refusal names the leaked sessions
    admin_token: str | None = None  # guards the control API when bound beyond loopback
    chaos: str | None = None  # a fault plan applied to every session (see simulator/plan.py)
    history_limit: int | None = None  # records kept in memory (None: all); --record DIR keeps all on disk
    # A connection without a whole request head by then is closed; also the idle keep-alive limit, so it stays
    # above the pools of common clients (aiohttp 15 s, httpx 5 s), which then always close first.
    header_timeout: float = 20.0
    # Model names a WebSocket session may ask for: "known" (today's real names,
    # session_config.REALTIME_MODELS; any other is refused with `invalid_model`), "any", or "name,name".
    models: str = "known"
    # Mixed into session and event ids with the seed: set (rtsim serve without --seed does), ids cannot be
    # predicted from the seed; empty, they are reproducible from the seed alone.
    id_secret: str = ""
    # One of several processes behind one port (`rtsim serve --workers N`): its number (in connection and
    # fault ids, so they are unique across workers), SO_REUSEPORT on the public port, and a private control
    # port on loopback through which its peers reach it.
    worker: int | None = None
    # HTTPS/WSS on the one port (simulator/tls.py): a local CA made at start, its certificate written to
    # tls_ca_file (None: a temporary file); or the user's own tls_cert/tls_key (tls_ca_file: its issuer).
    tls: bool = False
    tls_ca_file: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    # "quiet": a server process defers full garbage collections to quiet moments (simulator/gcpolicy.py);
    # "python": CPython's own schedule. Applied by `serve_forever` (a process), never to an embedding one.
    gc_policy: str = "python"

    def ids(self, conn_id: str) -> IdFactory:
        """The id factory of one connection's session."""
        if self.id_secret:
            return IdFactory.seeded(self.seed, self.id_secret, conn_id)
        return IdFactory.seeded(self.seed, conn_id)

    webrtc_setup_timeout: float | None = 10.0  # answered calls whose ICE/DTLS never connect end after this
    # SIP: the secret `realtime.call.incoming` webhooks are signed with (Standard Webhooks; `whsec_` + base64,
    # as the platform issues them), how long one delivery may take, and how long a call rings unanswered.
    webhook_secret: str = DEFAULT_WEBHOOK_SECRET
    webhook_timeout: float = 10.0
    sip_ring_timeout: float | None = 60.0

    # Origins a browser page may call the REST endpoints from (CORS); "*", the real service's, allows all.
    cors_origins: list[str] = field(default_factory=lambda: list(cors.DEFAULT_ORIGINS))

    def allowed_models(self) -> frozenset[str] | None:
        """The model names sessions may use, or None for any."""
        if self.models == "any":
            return None
        if self.models == "known":
            return frozenset(session_config.REALTIME_MODELS)
        return frozenset(name.strip() for name in self.models.split(",") if name.strip())

    @property
    def profile_spec(self) -> Profile:
        return PROFILES[self.profile]

    def limits(self) -> Limits:
        return Limits(
            max_session=self.max_session if self.max_session is not None else self.profile_spec.max_session,
            context_window=self.context_window,
            response_latency=self.response_latency,
            mcp_latency=self.mcp_latency,
            expiry_ending=self.expiry_ending or self.profile_spec.expiry_ending,  # type: ignore[arg-type]
            pacing=self.pacing,
            transcription_delay=self.transcription_delay,
            audio_start_delay=self.audio_start_delay,
            idle_timeout=self.idle_timeout,
        )


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
        self.carriers: dict[str, Carrier] = {}  # session id → its carrier, over either transport
        self.faults = FaultState()
        self._webrtc: WebRTCEndpoint | None = None  # made on first use: aiortc loads only for WebRTC
        self.sip = SipEndpoint(self)
        self.admission = Admission(self)
        self.control: control.ControlPlane | None = None  # set by control.install
        self.chaos = plan.parse(self.config.chaos) if self.config.chaos else None
        self.app = self._build_app()
        self.runner: web.AppRunner | None = None
        self.base_url = ""
        self.port = 0
        self.private_url = ""  # a worker's own control address (loopback), for its peers
        self.peers: list[tuple[int, str]] = []  # the other workers: (number, private base URL)
        self.loop_lag = LoopLagMonitor()  # the longest event-loop stall goes in the stop record
        self.tls: tls.ServerTLS | None = None  # set by start() when the config asks for TLS

    # ---- lifecycle --------------------------------------------------------------------------------

    def _build_app(self) -> web.Application:
        # aiohttp's keep-alive timer also runs from the moment a connection opens until its first request
        # head is complete: the header-read timeout (slow or silent clients cannot hold sockets).
        app = web.Application(
            client_max_size=MAX_FRAME_BYTES,
            handler_args={"max_field_size": 65536, "keepalive_timeout": self.config.header_timeout},
        )
        app.router.add_get("/v1/realtime", self.realtime_websocket)
        app.router.add_post("/v1/realtime/client_secrets", self.create_client_secret)
        app.router.add_post("/v1/realtime/sessions", self.create_beta_session)
        control.install(self, app)
        if self.profile.azure:
            app.router.add_get("/openai/realtime", self.realtime_websocket)
            app.router.add_get("/openai/v1/realtime", self.realtime_websocket)
        app.router.add_post("/v1/realtime/calls", self.create_call)
        app.router.add_post("/v1/realtime/calls/{call_id}/hangup", self.hangup_call)
        app.router.add_post("/v1/realtime/calls/{call_id}/accept", self.sip.accept)
        app.router.add_post("/v1/realtime/calls/{call_id}/reject", self.sip.reject)
        app.router.add_post("/v1/realtime/calls/{call_id}/refer", self.sip.refer)
        # The call's own resource (its `Location`) takes no request: the real calls API has no PATCH for a
        # WHIP-style ICE restart, nor a DELETE; both are unknown URLs there (see docs/parity.md).
        for method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
            app.router.add_route(method, "/v1/realtime/calls/{call_id}", unknown_url)
        cors.Cors(self.config.cors_origins).install(app)
        return app

    @property
    def webrtc(self) -> WebRTCEndpoint:
        """The WebRTC side (calls, hangup, sideband, `on_new_call` hooks), imported on first use."""
        if self._webrtc is None:
            from .webrtc.endpoint import WebRTCEndpoint

            self._webrtc = WebRTCEndpoint(self)
        return self._webrtc

    @property
    def calls(self) -> dict[str, Call]:
        """The live WebRTC calls by call id (they are carriers in `carriers` too)."""
        if self._webrtc is None:
            return {}  # no call was ever made, and aiortc stays unloaded
        from .webrtc.call import Call

        return {c.id: c for c in self.carriers.values() if isinstance(c, Call)}

    async def create_call(self, request: web.Request) -> web.StreamResponse:
        return await self.webrtc.create_call(request)

    async def hangup_call(self, request: web.Request) -> web.StreamResponse:
        if self.sip.owns(request.match_info["call_id"]):
            return await self.sip.hangup(request)
        return await self.webrtc.hangup(request)

    async def _listen(
        self, host: str, port: int, *, reuse_port: bool = False, ssl_context: ssl.SSLContext | None = None
    ) -> int:
        """Serve the app on one more socket (every listening socket is made here); returns its port."""
        assert self.runner is not None
        site = web.TCPSite(
            self.runner,
            host,
            port,
            reuse_address=True,
            reuse_port=reuse_port or None,
            ssl_context=ssl_context,
        )
        await site.start()
        server = site._server
        assert server is not None
        return int(server.sockets[0].getsockname()[1])  # type: ignore[union-attr]

    async def start(self) -> str:
        config = self.config
        if config.tls or config.tls_cert is not None:
            # Key generation is CPU work: off the event loop.
            self.tls = await asyncio.to_thread(
                tls.server_tls, cert_file=config.tls_cert, key_file=config.tls_key, ca_file=config.tls_ca_file
            )
        self.runner = web.AppRunner(self.app, handle_signals=False, access_log=None)
        await self.runner.setup()
        worker = config.worker is not None
        ssl_context = self.tls.context if self.tls is not None else None
        self.port = await self._listen(config.host, config.port, reuse_port=worker, ssl_context=ssl_context)
        host = config.host if ":" not in config.host else f"[{config.host}]"
        scheme = "https" if self.tls is not None else "http"
        self.base_url = f"{scheme}://{host}:{self.port}/v1"
        if worker:
            # The private control port stays plain HTTP: only this machine's peers reach it, on loopback.
            self.private_url = f"http://127.0.0.1:{await self._listen('127.0.0.1', 0)}/v1"
        self.loop_lag.start()
        self.history.record(
            "server", event="start", base_url=self.base_url, config=_public_config(self.config)
        )
        if self.chaos is not None and self.control is not None:
            self.control.apply_server_plan(self.chaos)
        return self.base_url

    async def stop(self, code: int = 1001, reason: str = "server shutting down") -> None:
        """Close every live session with `code` (1001: going away), then stop serving."""
        live = list(self.carriers.values())
        for conn in live:
            await conn.shut_down(code, reason)
        if live:
            await asyncio.wait([asyncio.create_task(c.done.wait()) for c in live], timeout=5)
        await self.sip.stop()
        if self.runner is not None:
            await self.runner.cleanup()
        if self.tls is not None:
            self.tls.remove_temporary()
        await self.loop_lag.stop()
        self.history.record("server", event="stop", max_loop_lag_ms=self.loop_lag.max_lag_ms)
        self.history.close()

    # ---- auth -------------------------------------------------------------------------------------

    def live_carriers(self, key_id: str | None = None) -> list[Carrier]:
        """Every live session's carrier — WebSocket connections and WebRTC calls — of a key, or all."""
        return [c for c in self.carriers.values() if not c.ended and (key_id is None or c.key_id == key_id)]

    def target_key_id(self, target: dict[str, Any]) -> str | None:
        if "key" in target:
            return key_id(target["key"])
        return target.get("key_id")

    def resolve_targets(self, target: dict[str, Any]) -> list[Carrier]:
        """The live sessions a fault target names: one session, every session of a key, or all."""
        if "session" in target:
            conn = next((c for c in self.live_carriers() if c.session.id == target["session"]), None)
            if conn is None:
                raise RealtimeError(
                    f"No live session '{target['session']}'.",
                    code="session_not_found",
                    param="target.session",
                )
            return [conn]
        return self.live_carriers(self.target_key_id(target))

    # ---- WebSocket ----------------------------------------------------------------------------------

    async def realtime_websocket(self, request: web.Request) -> web.StreamResponse:
        if "call_id" in request.query:
            if self.sip.owns(request.query["call_id"]):
                return await self.sip.sideband(request)
            return await self.webrtc.sideband(request)
        admission = self.admission
        conn_id = admission.new_conn_id()
        handshake = admission.handshake(request, conn_id, "websocket")
        try:
            if request.headers.get("Upgrade", "").lower() != "websocket":
                raise Refusal(426, "not_websocket", "This endpoint only accepts WebSocket connections.")
            # No credential, or an unknown API key, is not refused: the real service accepts, reports it,
            # and closes (3000).
            credential_given = admission.credential(request).value is not None
            admitted = admission.admit(request, unknown_key_refused=False) if credential_given else None
        except Refusal as refusal:
            admission.record_refusal(handshake, refusal)
            return refusal.response()
        ws = web.WebSocketResponse(
            protocols=("realtime",), max_msg_size=MAX_FRAME_BYTES, compress=False, autoping=True
        )
        await ws.prepare(request)
        if admitted is None:
            admission.record_accepted(handshake, None, 101, "missing_credential")
            await self._reject_after_upgrade(ws, conn_id, None, *MISSING_CREDENTIAL_REFUSAL)
            return ws
        identity = admitted.key_id
        if not admitted.key_is_known:
            admission.record_accepted(handshake, admitted, 101, "invalid_api_key")
            key = admission.credential(request).value or ""
            await self._reject_after_upgrade(
                ws, conn_id, identity, ("invalid_api_key", incorrect_key_message(key)), INVALID_KEY_CLOSE
            )
            return ws
        if admission.asks_for_disabled_beta(request):
            admission.record_accepted(handshake, admitted, 101, "beta_api_shape_disabled")
            await self._reject_after_upgrade(ws, conn_id, identity, BETA_SHAPE_DISABLED, BETA_SHAPE_CLOSE)
            return ws
        model_refusal = admission.model_refusal(request, admitted)
        if model_refusal is not None:
            code = model_refusal[0]
            admission.record_accepted(handshake, admitted, 101, code)
            close = (MODEL_CLOSE, f"invalid_request_error.{code}")
            await self._reject_after_upgrade(ws, conn_id, identity, model_refusal, close)
            return ws
        if admitted.close_code is not None:
            # Accepted, then closed at once: the loop one framework fell into with 1008.
            admission.record_accepted(handshake, admitted, 101, "fault:reject-connects")
            with contextlib.suppress(ConnectionError, RuntimeError):
                await ws.close(code=admitted.close_code, message=admitted.close_reason.encode())
            self.history.record(
                "close",
                session=None,
                conn=conn_id,
                key_id=identity,
                code=admitted.close_code,
                reason=admitted.close_reason,
                by="server",
                fault="reject-connects",
            )
            return ws
        model = request.query.get("model") or request.query.get("deployment")
        wants_transcription = request.query.get("intent") == "transcription"
        if wants_transcription and model:
            admission.record_accepted(handshake, admitted, 101, "transcription_model_given")
            await self._reject_after_upgrade(
                ws, conn_id, identity, TRANSCRIPTION_MODEL_GIVEN, TRANSCRIPTION_MODEL_CLOSE
            )
            return ws
        admission.record_accepted(handshake, admitted, 101, None)
        session = admission.new_session(
            request,
            admitted,
            self.config.ids(conn_id),
            model=model,
            session_type="transcription" if wants_transcription else "realtime",
        )
        admission.record_session(session, conn_id, admitted)
        conn = WebSocketCarrier(
            request,
            ws,
            session=session,
            conn_id=conn_id,
            key_id=identity,
            history=self.history,
            seed=self.config.seed,
            ping_interval=self.config.ping_interval,
        )
        self.carriers[session.id] = conn
        admission.attach_plans(request, conn)
        try:
            await conn.run()
        finally:
            del self.carriers[session.id]
        return ws

    async def _reject_after_upgrade(
        self,
        ws: web.WebSocketResponse,
        conn_id: str,
        identity: str | None,
        error: tuple[str | None, str],
        close: tuple[int, str],
    ) -> None:
        """Accepted, then refused as the real service does: one `error` event, then a close frame."""
        code, message = error
        event = {
            "type": "error",
            "event_id": self.config.ids(conn_id).event(),
            "error": {
                "type": "invalid_request_error",
                "code": code,
                "message": message,
                "param": None,
                "event_id": None,
            },
        }
        self.history.event("out", None, event)
        with contextlib.suppress(ConnectionError, RuntimeError):
            await ws.send_str(encode(event))
            await ws.close(code=close[0], message=close[1].encode())
        self.history.record(
            "close", session=None, conn=conn_id, key_id=identity, code=close[0], reason=close[1], by="server"
        )

    # ---- REST ---------------------------------------------------------------------------------------

    def _rest_key(self, request: web.Request) -> tuple[str | None, web.Response | None]:
        """The API key of a REST call, or the real 401 response for a missing, ephemeral or unknown key."""
        credential = self.admission.credential(request)
        if credential.value is None:
            return None, json_error(401, MISSING_CREDENTIAL)
        if credential.is_token or not self.admission.key_is_valid(credential.value):
            return None, json_error(401, incorrect_key_message(credential.value), code="invalid_api_key")
        return credential.value, None

    async def _json_body(self, request: web.Request) -> dict[str, Any]:
        raw = await request.read()
        if not raw:
            return {}
        try:
            body = loads_strict(raw)
        except ValueError:
            raise RealtimeError(
                "We could not parse the JSON body of your request. (HINT: This likely means you aren't "
                "using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was "
                "sent was not valid JSON.)"
            ) from None
        if not isinstance(body, dict):
            raise RealtimeError("Invalid body: expected a JSON object.", code="invalid_type")
        return body

    async def call_route(
        self, request: web.Request, act: Callable[[Admitted], Awaitable[None]]
    ) -> web.Response:
        """A `/v1/realtime/calls/{id}/...` route (WebRTC hangup; SIP accept, reject, refer, hangup):
        authenticate, act, answer 200 with no body or the refusal's JSON error; record the request."""
        status, admitted = 200, None
        try:
            admitted = self.admission.authenticate(request)
            await act(admitted)
            response = web.Response(status=200)
        except Refusal as refusal:
            status, response = refusal.status, refusal.response()
        self.history.record(
            "http",
            method=request.method,
            path=request.path,
            status=status,
            key_id=admitted.key_id if admitted else None,
            reason=None if status == 200 else "refused",
        )
        return response

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
        if transcription.is_transcription(session_update):  # a token for a transcription session
            config = transcription.merge(transcription.default_session(), session_update)
        else:
            base = session_config.default_session(session_update.get("model", session_config.DEFAULT_MODEL))
            config = session_config.merge_ga(base, session_update)
        value, token = self._mint(key, ttl, session_update, endpoint="client_secrets")
        session_id = IdFactory.seeded(value).new("sess")
        if transcription.is_transcription(config):
            session = transcription.render(config, session_id=session_id, expires_at=0)
        else:
            session = session_config.render_ga(config, session_id=session_id, expires_at=0)
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


async def unknown_url(request: web.Request) -> web.Response:
    """A route the real API does not have: its 404 JSON body (`unknown_url`, as public error reports show)."""
    return json_error(
        404,
        f"Unknown request URL: {request.method} {request.path}. Please check the URL for typos, or see the "
        "docs at https://platform.openai.com/docs/api-reference/.",
        code="unknown_url",
    )


def _public_config(config: ServerConfig) -> dict[str, Any]:
    public = dict(config.__dict__)
    public["api_keys"] = [key_id(k) for k in config.api_keys]
    public["admin_token"] = "<set>" if config.admin_token else None  # a secret: never in a record
    public["id_secret"] = "<set>" if config.id_secret else None
    public["webhook_secret"] = "<set>"
    return public


async def serve_forever(config: ServerConfig, ready: Callable[[str], None] | None = None) -> None:
    """Run until SIGINT/SIGTERM, then close every live session with 1001."""
    from .signals import until_signalled

    server = RealtimeServer(config)
    base_url = await server.start()
    collector = quiet_collector(server) if config.gc_policy == "quiet" else None
    if ready is not None:
        ready(base_url)
    try:
        await until_signalled()
    finally:
        await server.stop()
        if collector is not None:
            await collector.stop()


def quiet_collector(server: RealtimeServer) -> QuietCollector:
    """Full collections when no session is being answered (see gcpolicy.py), started now."""

    def is_quiet() -> bool:
        return not any(c.session.active_response is not None for c in server.live_carriers())

    def activity() -> int:
        return server.history.first_seq + len(server.history.records)

    collector = QuietCollector(is_quiet, activity)
    collector.start()
    return collector
