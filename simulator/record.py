"""`rtsim record`: a recording proxy in front of a Realtime service (the real API, or another rtsim).

The app points at the base URL the proxy prints; every WebSocket session on `/v1/realtime` and every REST
call under `/v1` is forwarded to the upstream with the app's own headers (its credential included) and
answered with what the upstream answered: the handshake (status and body of a refusal, the subprotocol
it chose), every frame both ways, the close code and reason, and a dropped connection as a drop.

The trace is rtsim's record format (`history.py`): JSON Lines with `handshake`, `session`, `event` (`dir`
`in` from the client, `out` to it; `conn` on every event), `close` (`code`, `reason`, `by`, `drop` when
no close frame came), `http`, `token` and `fault` records. Credentials never reach it: keys and tokens
are recorded as fingerprints (`tokens.key_id`), and every record is scrubbed of every credential and
minted token the proxy has seen. Audio is kept in full (replay serves it) unless `--no-audio` reduces it
to its length (`audio_bytes`).

Each proxied session is a carrier (`ProxyCarrier`) whose "engine" is the upstream, so the control API on
the proxy's port (`/_rtsim/faults`) injects the wire faults into proxied sessions exactly as into
simulated ones: the proxy is a fault point in front of the real service too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import WSMsgType, web
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from . import control
from .admission import read_credential
from .carrier import Carrier
from .faults import FaultState
from .history import History, summarize_event
from .protocol import RealtimeError, encode
from .signals import until_signalled
from .tokens import TokenAuthority, key_id
from .websocket import WebSocketCarrier

# What the control API offers on a proxied session: the wire faults and those acting on the outbound chain
# (the engine's own faults need an engine, and the proxy's is upstream).
PROXY_FAULTS = (
    "drop",
    "close",
    "stall",
    "latency",
    "slow-first-delta",
    "duplicate-event",
    "reorder-events",
    "benign-error",
)
# Headers that describe one hop (or the WebSocket handshake itself), never forwarded.
HOP_HEADERS = frozenset(
    h.lower()
    for h in (
        "Host",
        "Connection",
        "Keep-Alive",
        "Proxy-Connection",
        "Transfer-Encoding",
        "TE",
        "Trailer",
        "Upgrade",
        "Content-Length",
        "Content-Encoding",
        "Sec-WebSocket-Key",
        "Sec-WebSocket-Version",
        "Sec-WebSocket-Extensions",
        "Sec-WebSocket-Protocol",
        "Sec-WebSocket-Accept",
        "User-Agent",
    )
)
KEY_SUBPROTOCOL = "openai-insecure-api-key."
# Trace markers, not Realtime events: a frame that carried no JSON event is recorded (and replayed) as one.
UNPARSED_FRAME = "rtsim.unparsed_frame"  # a text frame that is not a JSON object with a type: `text`
BINARY_FRAME = "rtsim.binary_frame"  # a binary frame: `binary_bytes` (its payload is forwarded, not recorded)
SENDABLE_CLOSE_CODES = frozenset((1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014))
OPEN_TIMEOUT = 30.0


def fingerprint(secret: str) -> str:
    """What a trace keeps of a key or token."""
    return key_id(secret)[4:]


class TraceHistory(History):
    """A history that never writes a secret it was told about (every string of every record is scrubbed)."""

    def __init__(self, path: str | Path) -> None:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text("")  # a new trace, not appended to an old one
        super().__init__(target.parent, name=target.name)
        self.secrets: set[str] = set()

    def add_secret(self, secret: str | None) -> None:
        if secret and len(secret) >= 8:  # a shorter one would scrub ordinary words
            self.secrets.add(secret)

    def scrub(self, value: Any) -> Any:
        if not self.secrets:
            return value
        if isinstance(value, str):
            for secret in self.secrets:
                if secret in value:
                    value = value.replace(secret, f"<redacted:{fingerprint(secret)}>")
            return value
        if isinstance(value, dict):
            return {k: self.scrub(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.scrub(v) for v in value]
        return value

    def record(self, kind: str, **fields: Any) -> dict[str, Any]:
        return super().record(kind, **self.scrub(fields))


def forwarded_headers(headers: Any) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.lower() not in HOP_HEADERS}


def recorded_protocol(protocol: str) -> str:
    if protocol.startswith(KEY_SUBPROTOCOL):
        return KEY_SUBPROTOCOL + "<" + fingerprint(protocol[len(KEY_SUBPROTOCOL) :]) + ">"
    return protocol


def parse_frame(text: str) -> dict[str, Any]:
    """An upstream text frame as the event it carries (a frame that is not a JSON object is kept whole)."""
    try:
        event = json.loads(text)
    except ValueError:
        return {"type": UNPARSED_FRAME, "text": text}
    if not isinstance(event, dict) or not isinstance(event.get("type"), str):
        return {"type": UNPARSED_FRAME, "text": text}
    return event


class UpstreamSession:
    """The engine side of a proxied carrier: what the upstream sent, waiting for the outbound chain.

    It has the few parts of the engine's interface the carrier, the control API and the faults offered on a
    proxy use: `id` (the upstream's session id once `session.created` named it), `drain`, `error` (an
    injected error event), `close_request`, `next_deadline`.
    """

    def __init__(self, conn_id: str, model: str | None) -> None:
        self.id = conn_id
        self.config: dict[str, Any] = {"model": model}
        self.started_at = 0.0
        self.expires_at: int | None = None
        self.active_response = None
        self.close_request: tuple[int, str] | None = None
        self.pending: list[dict[str, Any]] = []
        self._errors = itertools.count(1)

    def start(self, now: float) -> None:
        self.started_at = now

    def drain(self) -> list[dict[str, Any]]:
        events, self.pending = self.pending, []
        return events

    def next_deadline(self) -> float | None:
        return None

    def advance(self, now: float) -> None:
        return None

    def error(self, exc: RealtimeError, client_event_id: str | None = None) -> None:
        self.pending.append(
            {
                "type": "error",
                "event_id": f"event_rtsim_{next(self._errors)}",
                "error": exc.body(client_event_id),
            }
        )


class ProxyCarrier(WebSocketCarrier):
    """One client WebSocket and its upstream WebSocket; server events pass through the carrier's chain."""

    session: UpstreamSession  # type: ignore[assignment]

    def __init__(
        self,
        request: web.Request,
        ws: web.WebSocketResponse,
        upstream: ClientConnection,
        *,
        session: UpstreamSession,
        conn_id: str,
        key_id: str,
        history: History,
        keep_audio: bool,
    ) -> None:
        super().__init__(
            request,
            ws,
            session=session,
            conn_id=conn_id,
            key_id=key_id,
            history=history,  # type: ignore[arg-type]
        )
        self.upstream = upstream
        self.keep_audio = keep_audio
        self.upstream_dropped = False
        self.upstream_closed: tuple[int, str] | None = None

    def _recorded(self, event: dict[str, Any]) -> dict[str, Any]:
        if event.get("type") == BINARY_FRAME:
            return {k: v for k, v in event.items() if k != "payload"}
        return event if self.keep_audio else summarize_event(event)

    def _record(self, direction: str, event: dict[str, Any]) -> None:
        self.history.record(
            "event", dir=direction, session=self.session.id, conn=self.conn_id, event=self._recorded(event)
        )

    async def _transmit(self, event: dict[str, Any]) -> bool:
        self._record("out", event)
        if event.get("type") == UNPARSED_FRAME:
            await self.ws.send_str(event["text"])
        elif event.get("type") == BINARY_FRAME:
            await self.ws.send_bytes(event["payload"])
        else:
            await self.ws.send_str(encode(event))
        return True

    async def _drained(self) -> bool:
        if self.upstream_dropped and not self.outbound and not self.stalled and self.closed_by is None:
            self.drop()  # what the upstream did, passed on: no close frame
            self.fault_ending = None
            return True
        return await super()._drained()

    async def _read_upstream(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for message in self.upstream:
                if isinstance(message, bytes):
                    event: dict[str, Any] = {
                        "type": BINARY_FRAME,
                        "binary_bytes": len(message),
                        "payload": message,
                    }
                else:
                    event = parse_frame(message)
                if event["type"] == "session.created" and isinstance(event.get("session"), dict):
                    self._announce(event["session"])
                self.session.pending.append(event)
                self.pump()
        if self.closed_by is not None or self.ended:
            return  # the client side ended first; the upstream's end is its echo
        received = self.upstream.protocol.close_rcvd
        if received is None:
            self.upstream_dropped = True
        else:
            self.upstream_closed = (received.code, received.reason)
            code = received.code if received.code in SENDABLE_CLOSE_CODES or received.code >= 3000 else 1000
            self.session.close_request = (code, received.reason)
        self.pump()
        self.wake.set()

    def _announce(self, session: dict[str, Any]) -> None:
        sid = session.get("id")
        if isinstance(sid, str):
            self.session.id = sid
        self.session.expires_at = session.get("expires_at")
        self.session.config["model"] = session.get("model") or self.session.config["model"]
        self.history.record(
            "session",
            session=self.session.id,
            conn=self.conn_id,
            key_id=self.key_id,
            model=self.session.config["model"],
            expires_at=self.session.expires_at,
        )

    async def run(self) -> None:
        self.session.start(self.loop.time())
        writer = asyncio.create_task(self.writer())
        reader = asyncio.create_task(self._read_upstream())
        try:
            while True:
                msg = await self.ws.receive()
                if msg.type == WSMsgType.CLOSE:
                    self.client_close = (msg.data, msg.extra or "")
                    break
                if msg.type in (WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                    break
                if msg.type == WSMsgType.TEXT:
                    self._record("in", parse_frame(msg.data))
                    with contextlib.suppress(ConnectionClosed):
                        await self.upstream.send(msg.data)
                elif msg.type == WSMsgType.BINARY:
                    self._record("in", {"type": BINARY_FRAME, "binary_bytes": len(msg.data)})
                    with contextlib.suppress(ConnectionClosed):
                        await self.upstream.send(msg.data)
        finally:
            self._finish()
            await asyncio.sleep(0)
            for task in (writer, reader):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            self._cancel_tasks()
            await self._end_upstream()
            self._record_end()
            self.done.set()

    async def _end_upstream(self) -> None:
        """The client side is over: the upstream learns it as the client ended it (close, or a drop)."""
        if self.upstream_closed is not None or self.upstream_dropped:
            return
        if self.client_close is not None:
            code, reason = self.client_close
            code = code if code in SENDABLE_CLOSE_CODES or 3000 <= code <= 4999 else 1000
        elif self.close_sent is not None:
            code, reason = 1000, "rtsim proxy: the client connection was ended by a fault"
        else:  # the client (or a drop fault) vanished without a close frame: so does the upstream
            self.upstream.transport.abort()
            return
        with contextlib.suppress(ConnectionClosed, OSError, TimeoutError):
            await asyncio.wait_for(self.upstream.close(code, reason), 5)

    def _record_end(self) -> None:
        extra: dict[str, Any] = {}
        if self.upstream_dropped:
            code, reason, by = 1006, "", "server"
            extra["drop"] = True
        elif self.fault_ending is not None:
            code, reason, by = 1006, "", "server"
            extra.update(drop=True, fault=self.fault_ending)
        elif self.close_sent is not None:
            code, reason = self.upstream_closed or self.close_sent
            by = "server"
        elif self.client_close is not None:
            code, reason = self.client_close
            by = "client"
        else:
            code, reason, by = 1006, "", "network"
            extra["drop"] = True
        self.record_close(code, reason, by, **extra)


@dataclass
class ProxyConfig:
    upstream: str  # the upstream's base URL, e.g. https://api.openai.com/v1
    out: str
    keep_audio: bool = True
    host: str = "127.0.0.1"
    port: int = 0
    admin_token: str | None = None


class RecordingProxy:
    """The proxy's aiohttp app; it also plays the part of the server for the control plane."""

    def __init__(self, config: ProxyConfig) -> None:
        self.config = config
        self.upstream = config.upstream.rstrip("/")
        self.history = TraceHistory(config.out)
        self.faults = FaultState()
        self.tokens = TokenAuthority()
        self.peers: list[tuple[int, str]] = []  # one process: the control API has no workers to fan out to
        self.carriers: dict[str, Carrier] = {}
        self.control: control.ControlPlane | None = None
        self._conns = itertools.count(1)
        self.client: aiohttp.ClientSession | None = None
        self.runner: web.AppRunner | None = None
        self.base_url = ""
        self.port = 0
        self.app = web.Application(client_max_size=64 * 1024 * 1024)
        control.install(self, self.app, kinds=PROXY_FAULTS)  # type: ignore[arg-type]
        self.app.router.add_get("/v1/realtime", self.realtime_websocket)
        self.app.router.add_route("*", "/v1/{tail:.*}", self.forward_rest)

    # ---- what the control plane asks of a server ------------------------------------------------------

    @property
    def webrtc(self) -> Any:
        raise RealtimeError("The recording proxy forwards WebRTC calls; it cannot inject faults into them.")

    def live_carriers(self, key_id: str | None = None) -> list[Carrier]:
        return [c for c in self.carriers.values() if not c.ended and (key_id is None or c.key_id == key_id)]

    def target_key_id(self, target: dict[str, Any]) -> str | None:
        return key_id(target["key"]) if "key" in target else target.get("key_id")

    def resolve_targets(self, target: dict[str, Any]) -> list[Carrier]:
        if "session" in target:
            wanted = target["session"]
            found = [c for c in self.live_carriers() if wanted in (c.session.id, c.conn_id)]
            if not found:
                raise RealtimeError(
                    f"No live session '{wanted}'.", code="session_not_found", param="target.session"
                )
            return found
        return self.live_carriers(self.target_key_id(target))

    # ---- lifecycle ------------------------------------------------------------------------------------

    async def start(self) -> str:
        self.client = aiohttp.ClientSession(auto_decompress=True)
        self.runner = web.AppRunner(self.app, handle_signals=False, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, self.config.host, self.config.port, reuse_address=True)
        await site.start()
        assert site._server is not None
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base_url = f"http://{self.config.host}:{self.port}/v1"
        self.history.record(
            "server",
            event="start",
            mode="record",
            base_url=self.base_url,
            upstream=self.upstream,
            audio=self.config.keep_audio,
        )
        self.history.flush()
        return self.base_url

    async def stop(self) -> None:
        live = list(self.carriers.values())
        for conn in live:
            await conn.shut_down(1001, "rtsim proxy shutting down")
        if live:
            await asyncio.wait([asyncio.create_task(c.done.wait()) for c in live], timeout=5)
        if self.runner is not None:
            await self.runner.cleanup()
        if self.client is not None:
            await self.client.close()
        self.history.record("server", event="stop")
        self.history.close()

    # ---- WebSocket --------------------------------------------------------------------------------------

    def _upstream_ws_url(self, request: web.Request) -> str:
        base = self.upstream.replace("https://", "wss://", 1).replace("http://", "ws://", 1)
        tail = request.path.removeprefix("/v1")
        return base + tail + (f"?{request.query_string}" if request.query_string else "")

    def _identity(self, request: web.Request) -> tuple[str | None, dict[str, Any]]:
        credential = read_credential(request, azure=True)
        self.history.add_secret(credential.value)
        if credential.value is None:
            return None, {"key_id": None, "auth": None, "credential": None}
        return key_id(credential.value), {
            "key_id": key_id(credential.value),
            "auth": "ephemeral" if credential.is_token else "api_key",
            "credential": fingerprint(credential.value),
        }

    async def realtime_websocket(self, request: web.Request) -> web.StreamResponse:
        conn_id = f"conn_{next(self._conns)}"
        identity, who = self._identity(request)
        protocols = [
            p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()
        ]
        handshake = {
            "conn": conn_id,
            "path": request.path,
            "transport": "websocket",
            "query": dict(request.query),
            **who,
            "protocols": [recorded_protocol(p) for p in protocols],
        }
        try:
            upstream = await ws_connect(
                self._upstream_ws_url(request),
                additional_headers=forwarded_headers(request.headers),
                user_agent_header=request.headers.get("User-Agent"),
                subprotocols=protocols or None,  # type: ignore[arg-type]
                max_size=None,
                compression=None,
                open_timeout=OPEN_TIMEOUT,
            )
        except InvalidStatus as exc:
            response = exc.response
            body = response.body or b""
            self.history.record(
                "handshake",
                **handshake,
                accepted=False,
                status=response.status_code,
                reason=_error_code(body),
                body=body.decode("utf-8", "replace"),
                retry_after=response.headers.get("Retry-After"),
            )
            headers = {
                k: v for k, v in response.headers.items() if k.lower() in ("content-type", "retry-after")
            }
            return web.Response(status=response.status_code, body=body, headers=headers)
        except (OSError, InvalidHandshake, TimeoutError) as exc:
            self.history.record(
                "handshake",
                **handshake,
                accepted=False,
                status=502,
                reason="upstream_unreachable",
                detail=str(exc),
            )
            return web.json_response(
                {
                    "error": {
                        "message": f"rtsim proxy: the upstream is unreachable ({exc}).",
                        "type": "server_error",
                        "param": None,
                        "code": "upstream_unreachable",
                    }
                },
                status=502,
            )
        chosen = upstream.subprotocol
        ws = web.WebSocketResponse(protocols=(chosen,) if chosen else (), max_msg_size=0, compress=False)
        await ws.prepare(request)
        self.history.record(
            "handshake",
            **handshake,
            accepted=True,
            status=101,
            reason=None,
            protocol=recorded_protocol(chosen) if chosen else None,
        )
        conn = ProxyCarrier(
            request,
            ws,
            upstream,
            session=UpstreamSession(conn_id, request.query.get("model")),
            conn_id=conn_id,
            key_id=identity or "anonymous",
            history=self.history,
            keep_audio=self.config.keep_audio,
        )
        self.carriers[conn_id] = conn
        try:
            await conn.run()
        finally:
            del self.carriers[conn_id]
        return ws

    # ---- REST -------------------------------------------------------------------------------------------

    async def forward_rest(self, request: web.Request) -> web.StreamResponse:
        assert self.client is not None
        identity, _ = self._identity(request)
        url = self.upstream + request.path.removeprefix("/v1")
        if request.query_string:
            url += "?" + request.query_string
        headers = forwarded_headers(request.headers)
        if "User-Agent" in request.headers:
            headers["User-Agent"] = request.headers["User-Agent"]
        try:
            async with self.client.request(
                request.method, url, headers=headers, data=await request.read(), allow_redirects=False
            ) as upstream:
                body = await upstream.read()
                status, upstream_headers = upstream.status, upstream.headers
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.history.record(
                "http",
                method=request.method,
                path=request.path,
                status=502,
                key_id=identity,
                reason="upstream_unreachable",
            )
            return web.json_response(
                {
                    "error": {
                        "message": f"rtsim proxy: the upstream is unreachable ({exc}).",
                        "type": "server_error",
                        "param": None,
                        "code": "upstream_unreachable",
                    }
                },
                status=502,
            )
        self._note_tokens(request.path, status, body, identity)
        self.history.record(
            "http",
            method=request.method,
            path=request.path,
            status=status,
            key_id=identity,
            reason=_error_code(body) if status >= 400 else None,
            retry_after=upstream_headers.get("Retry-After"),
        )
        return web.Response(status=status, body=body, headers=forwarded_headers(upstream_headers))

    def _note_tokens(self, path: str, status: int, body: bytes, identity: str | None) -> None:
        """A minted token is a secret too: scrubbed from the trace from now on, recorded by fingerprint."""
        if status != 200 or not path.endswith(("/client_secrets", "/sessions")):
            return
        try:
            payload = json.loads(body)
        except ValueError:
            return
        if not isinstance(payload, dict):
            return
        secret = payload.get("client_secret") if isinstance(payload.get("client_secret"), dict) else payload
        value = secret.get("value") if isinstance(secret, dict) else None
        if isinstance(value, str):
            self.history.add_secret(value)
            self.history.record(
                "token",
                token=fingerprint(value),
                key_id=identity,
                expires_at=secret.get("expires_at"),
                endpoint=path.rsplit("/", 1)[-1],
            )


def _error_code(body: bytes) -> str | None:
    try:
        error = json.loads(body).get("error") or {}
    except (ValueError, AttributeError):
        return None
    return (error.get("code") or error.get("type")) if isinstance(error, dict) else None


# ---- the command ------------------------------------------------------------------------------------------


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "record",
        help="a recording proxy in front of a Realtime service",
        description="Forward an app's Realtime sessions and REST calls to --upstream and write a trace. "
        "Prints the base URL to point the app at when ready.",
    )
    parser.add_argument(
        "--upstream", required=True, help="the upstream's base URL, e.g. https://api.openai.com/v1"
    )
    parser.add_argument("--out", required=True, metavar="TRACE", help="the trace file (JSON Lines) to write")
    parser.add_argument("--no-audio", action="store_true", help="record audio payloads by their length only")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--admin-token", help="required by the control API when bound beyond loopback")
    parser.set_defaults(func=run_record)


async def record_forever(config: ProxyConfig, ready: Callable[[str], None] | None = None) -> None:
    proxy = RecordingProxy(config)
    base_url = await proxy.start()
    if ready is not None:
        ready(base_url)
    try:
        await until_signalled()
    finally:
        await proxy.stop()


def run_record(args: argparse.Namespace) -> int:
    config = ProxyConfig(
        upstream=args.upstream,
        out=args.out,
        keep_audio=not args.no_audio,
        host=args.host,
        port=args.port,
        admin_token=args.admin_token,
    )
    try:
        asyncio.run(record_forever(config, lambda url: print(url, flush=True)))
    except OSError as exc:
        print(f"rtsim record: {exc}", file=sys.stderr)
        return 1
    return 0
