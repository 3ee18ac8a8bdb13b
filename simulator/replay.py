"""`rtsim replay TRACE`: serve a recorded server side to a client, with the recorded timing and ending.

The trace (any format `rtsim.scenarios.trace.load` reads) is cut into one script per recorded WebSocket
connection; the Nth connection a client opens is served the Nth script. A script is the connection's
events in order: server events are sent after the recorded gap (divided by `--speed`, capped by
`--max-gap`); at each client event of the trace the replay waits for the client to send it, and the next
server burst is timed from the moment it did. Then the recorded ending: the server's close (code and
reason), a drop (no close frame), or waiting for the client's own close.

What the client sends is compared with the trace by event type and by the server-issued ids a client
echoes back (`item_id`, `response_id`, the item's `call_id`); audio appends are not compared (how a
client chunks audio is its own business). The first place the client did something else — another event,
nothing at all within `--client-timeout`, an extra event, a close too early — is the divergence: printed,
and recorded as a `divergence` record in the replay's own history. After it the replay goes on by the
recorded timing alone.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import itertools
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from .history import History
from .protocol import encode
from .record import BINARY_FRAME, UNPARSED_FRAME
from .signals import until_signalled

NOT_COMPARED = frozenset(("input_audio_buffer.append", UNPARSED_FRAME, BINARY_FRAME))
ECHOED_IDS = ("item_id", "response_id")
ITEM_FIELDS = ("type", "role", "call_id")
AUDIO_DELTAS = frozenset(("response.output_audio.delta", "response.audio.delta"))
DEFAULT_CLIENT_TIMEOUT = 30.0


@dataclass
class Step:
    """One event of a recorded connection: `out` (the server sent it) or `in` (the client did)."""

    direction: str
    t: float
    event: dict[str, Any]
    seq: int | None = None


@dataclass
class Script:
    conn: str
    handshake: dict[str, Any]
    steps: list[Step] = field(default_factory=list)
    close: dict[str, Any] | None = None

    @property
    def server_events(self) -> list[dict[str, Any]]:
        return [s.event for s in self.steps if s.direction == "out"]


def served_event(event: dict[str, Any]) -> dict[str, Any]:
    """The event as the replay sends it: audio recorded by its length only comes back as that much silence."""
    if event.get("type") in AUDIO_DELTAS and "delta" not in event and "audio_bytes" in event:
        restored = {k: v for k, v in event.items() if k != "audio_bytes"}
        restored["delta"] = base64.b64encode(bytes(int(event["audio_bytes"]))).decode()
        return restored
    return event


def scripts_of(records: list[dict[str, Any]]) -> list[Script]:
    """One script per recorded WebSocket connection, in the order the connections were made."""
    scripts: dict[str, Script] = {}
    conn_of_session: dict[str, str] = {}
    last_conn: str | None = None
    for record in records:
        kind = record.get("kind")
        if kind == "handshake" and record.get("transport", "websocket") == "websocket":
            last_conn = record["conn"]
            scripts[last_conn] = Script(last_conn, record)
        elif kind == "session" and record.get("conn") in scripts:
            conn_of_session[record["session"]] = record["conn"]
        elif kind == "event":
            conn = record.get("conn") or conn_of_session.get(record.get("session") or "") or last_conn
            event = record.get("event") or {}
            if conn in scripts and isinstance(event.get("type"), str):
                scripts[conn].steps.append(Step(record["dir"], float(record["t"]), event, record.get("seq")))
        elif kind == "close":
            conn = record.get("conn") or conn_of_session.get(record.get("session") or "")
            if conn in scripts and scripts[conn].close is None:
                scripts[conn].close = record
    return list(scripts.values())


def mismatch(expected: dict[str, Any], got: dict[str, Any]) -> str | None:
    """Why `got` is not what the trace's client sent at this point (None: it is)."""
    if got.get("type") != expected.get("type"):
        return f"expected {expected.get('type')}, got {got.get('type')}"
    for name in ECHOED_IDS:
        if name in expected and got.get(name) != expected[name]:
            return f"{expected['type']}: expected {name} {expected[name]!r}, got {got.get(name)!r}"
    want, have = expected.get("item"), got.get("item")
    if isinstance(want, dict):
        have = have if isinstance(have, dict) else {}
        for name in ITEM_FIELDS:
            if name in want and have.get(name) != want[name]:
                return f"{expected['type']}: expected item.{name} {want[name]!r}, got {have.get(name)!r}"
    return None


def _brief(event: dict[str, Any] | None) -> dict[str, Any] | None:
    if event is None:
        return None
    brief = {"type": event.get("type")}
    brief.update({k: event[k] for k in ECHOED_IDS if k in event})
    if isinstance(event.get("item"), dict):
        brief["item"] = {k: event["item"][k] for k in ITEM_FIELDS if k in event["item"]}
    return brief


class Playback:
    """One client connection served one script."""

    def __init__(
        self,
        replay: ReplayServer,
        script: Script,
        request: web.Request,
        ws: web.WebSocketResponse,
    ) -> None:
        self.replay = replay
        self.script = script
        self.request = request
        self.ws = ws
        self.loop = asyncio.get_running_loop()
        self.incoming: asyncio.Queue[tuple[float, dict[str, Any]] | None] = asyncio.Queue()
        self.client_gone = asyncio.Event()
        self.client_close: tuple[int | None, str] | None = None
        self.diverged = False
        self.sent = 0
        self.ended_by = "client"  # who ended the connection, for the replay's close record

    @property
    def history(self) -> History:
        return self.replay.history

    def diverge(self, step: Step | None, index: int | None, reason: str, got: dict[str, Any] | None) -> None:
        if self.diverged:
            return
        self.diverged = True
        record = self.history.record(
            "divergence",
            conn=self.script.conn,
            step=index,
            trace_seq=step.seq if step else None,
            trace_t=step.t if step else None,
            expected=({"dir": step.direction, **(_brief(step.event) or {})} if step else None),
            got=_brief(got),
            reason=reason,
        )
        self.history.flush()
        self.replay.divergences.append(record)
        where = f"step {index} (trace seq {step.seq}, t={step.t:.3f} s)" if step else "after the trace's end"
        self.replay.say(f"divergence: {self.script.conn} {where}: {reason}")

    async def read_client(self) -> None:
        try:
            while True:
                msg = await self.ws.receive()
                if msg.type == WSMsgType.CLOSE:
                    self.client_close = (msg.data, msg.extra or "")
                    break
                if msg.type in (WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                    break
                if msg.type == WSMsgType.BINARY:
                    self.history.record(
                        "event",
                        dir="in",
                        conn=self.script.conn,
                        event={"type": BINARY_FRAME, "binary_bytes": len(msg.data)},
                    )
                    continue
                if msg.type != WSMsgType.TEXT:
                    continue
                try:
                    event = json.loads(msg.data)
                except ValueError:
                    event = None
                if not isinstance(event, dict):
                    event = {"type": UNPARSED_FRAME, "text": str(msg.data)[:200]}
                self.history.event("in", self.script.conn, event)
                if event.get("type") not in NOT_COMPARED:
                    self.incoming.put_nowait((self.loop.time(), event))
        finally:
            self.client_gone.set()
            self.incoming.put_nowait(None)

    async def _sleep_until(self, due: float) -> bool:
        """Wait until loop time `due`; False if the client left meanwhile."""
        wait = due - self.loop.time()
        if wait > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.client_gone.wait(), wait)
        return not self.client_gone.is_set()

    def _gap(self, later: float, earlier: float) -> float:
        gap = max(0.0, later - earlier) / self.replay.speed
        return min(gap, self.replay.max_gap) if self.replay.max_gap is not None else gap

    async def play(self) -> None:
        reader = asyncio.create_task(self.read_client())
        mark_t, mark_loop = float(self.script.handshake.get("t", 0.0)), self.loop.time()
        try:
            for index, step in enumerate(self.script.steps):
                if step.direction == "out":
                    if not await self._sleep_until(mark_loop + self._gap(step.t, mark_t)):
                        self.diverge(
                            step, index, f"the client closed where the trace has {step.event['type']}", None
                        )
                        return
                    event = served_event(step.event)
                    self.history.event("out", self.script.conn, event)
                    if event["type"] == BINARY_FRAME:  # its length is all a trace keeps of it
                        await self.ws.send_bytes(bytes(int(event.get("binary_bytes", 0))))
                    elif event["type"] == UNPARSED_FRAME:
                        await self.ws.send_str(str(event.get("text", "")))
                    else:
                        await self.ws.send_str(encode(event))
                    self.sent += 1
                    mark_t, mark_loop = step.t, self.loop.time()
                    continue
                if step.event.get("type") in NOT_COMPARED or self.diverged:
                    continue
                arrived = await self._next_from_client()
                if arrived is None:
                    gone = "closed" if self.client_gone.is_set() else "sent nothing"
                    self.diverge(step, index, f"expected {step.event['type']}, the client {gone}", None)
                    if self.client_gone.is_set():
                        return
                    continue
                at, got = arrived
                reason = mismatch(step.event, got)
                if reason is not None:
                    self.diverge(step, index, reason, got)
                mark_t, mark_loop = step.t, at
            await self._end(mark_t, mark_loop)
        except (ConnectionError, RuntimeError):
            pass  # the client's socket went away under a send: its reader records how
        finally:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(reader), 5)
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            self._leftovers()
            code, reason = self.client_close or (self.ws.close_code, "")
            self.history.record(
                "close", conn=self.script.conn, code=code, reason=reason, by=self.ended_by, sent=self.sent
            )
            self.history.flush()

    async def _next_from_client(self) -> tuple[float, dict[str, Any]] | None:
        try:
            return await asyncio.wait_for(self.incoming.get(), self.replay.client_timeout)
        except TimeoutError:
            return None

    async def _end(self, mark_t: float, mark_loop: float) -> None:
        """The recorded ending: the server's close, a drop, or the client's own close (waited for)."""
        close = self.script.close
        if close is None or close.get("by") != "server":
            await self.client_gone.wait()
            return
        if not await self._sleep_until(mark_loop + self._gap(float(close["t"]), mark_t)):
            self.diverge(None, None, "the client closed before the trace's server close", None)
            return
        self.ended_by = "server"
        if close.get("drop") or close.get("code") in (None, 1006):
            transport = self.request.transport
            if transport is not None:
                transport.abort()
            return
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self.ws.close(code=int(close["code"]), message=str(close.get("reason") or "").encode())

    def _leftovers(self) -> None:
        while not self.incoming.empty():
            item = self.incoming.get_nowait()
            if item is not None:
                self.diverge(
                    None, None, f"the client sent {item[1].get('type')} after the trace's end", item[1]
                )
                return


class ReplayServer:
    """Serves the scripts of one trace, one per client connection, in order."""

    def __init__(
        self,
        records: list[dict[str, Any]],
        *,
        speed: float = 1.0,
        max_gap: float | None = None,
        client_timeout: float = DEFAULT_CLIENT_TIMEOUT,
        host: str = "127.0.0.1",
        port: int = 0,
        record_dir: str | None = None,
        say: Callable[[str], None] | None = None,
    ) -> None:
        if speed <= 0:
            raise ValueError("speed must be > 0")
        self.scripts = scripts_of(records)
        self.speed = speed
        self.max_gap = max_gap
        self.client_timeout = client_timeout
        self.host, self.port = host, port
        self.history = History(record_dir, name="replay.jsonl" if record_dir else None)
        self.divergences: list[dict[str, Any]] = []
        self.say = say or (lambda line: None)
        self._next = itertools.count()
        self.finished = asyncio.Event()  # every script was served and its connection ended
        self.app = web.Application(client_max_size=64 * 1024 * 1024)
        self.app.router.add_get("/v1/realtime", self.realtime_websocket)
        self.runner: web.AppRunner | None = None
        self.base_url = ""
        self.done = 0

    async def start(self) -> str:
        self.runner = web.AppRunner(self.app, handle_signals=False, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, self.host, self.port, reuse_address=True)
        await site.start()
        assert site._server is not None
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base_url = f"http://{self.host}:{self.port}/v1"
        self.history.record(
            "server", event="start", mode="replay", base_url=self.base_url, connections=len(self.scripts)
        )
        if not self.scripts:
            self.finished.set()
        return self.base_url

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
        self.history.record("server", event="stop")
        self.history.close()

    async def realtime_websocket(self, request: web.Request) -> web.StreamResponse:
        index = next(self._next)
        if index >= len(self.scripts):
            self.history.record("handshake", conn=f"extra_{index + 1}", accepted=False, status=503)
            return web.json_response(
                {
                    "error": {
                        "message": f"The trace has {len(self.scripts)} connection(s); all were replayed.",
                        "type": "server_error",
                        "param": None,
                        "code": "trace_exhausted",
                    }
                },
                status=503,
            )
        script = self.scripts[index]
        recorded = script.handshake
        try:
            if not recorded.get("accepted", True):
                status = int(recorded.get("status") or 400)
                self.history.record("handshake", conn=script.conn, accepted=False, status=status)
                body = recorded.get("body") or json.dumps(
                    {
                        "error": {
                            "message": "Refused, as recorded.",
                            "type": "invalid_request_error",
                            "param": None,
                            "code": recorded.get("reason"),
                        }
                    }
                )
                return web.Response(status=status, text=body, content_type="application/json")
            ws = web.WebSocketResponse(protocols=("realtime",), max_msg_size=0, compress=False)
            await ws.prepare(request)
            self.history.record("handshake", conn=script.conn, accepted=True, status=101, path=request.path)
            await Playback(self, script, request, ws).play()
            return ws
        finally:
            self.done += 1
            if self.done >= len(self.scripts):
                self.finished.set()


# ---- the command ------------------------------------------------------------------------------------------


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "replay",
        help="serve a recorded trace's server side to a client",
        description="Serve the server side of TRACE (rtsim record JSON Lines, a Chrome HAR, or plain "
        "{t, direction, event} JSON Lines) with its timing and ending; report where the client diverges. "
        "Prints the base URL when ready; exits when every recorded connection was replayed "
        "(status 1 if the client diverged).",
    )
    parser.add_argument("trace", metavar="TRACE")
    parser.add_argument("--speed", type=float, default=1.0, help="timing divided by X (2 = twice as fast)")
    parser.add_argument(
        "--max-gap", type=float, metavar="S", help="no wait between events longer than S seconds"
    )
    parser.add_argument(
        "--client-timeout",
        type=float,
        default=DEFAULT_CLIENT_TIMEOUT,
        metavar="S",
        help="how long to wait for the client's next recorded event before calling it a divergence",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument(
        "--record", metavar="DIR", help="write the replay's own history (replay.jsonl) into DIR"
    )
    parser.set_defaults(func=run_replay)


async def replay_until_done(server: ReplayServer, ready: Callable[[str], None]) -> None:
    ready(await server.start())
    try:
        await until_signalled(server.finished)
    finally:
        await server.stop()


def run_replay(args: argparse.Namespace) -> int:
    from ..scenarios import trace

    try:
        records = trace.load(args.trace)
    except (OSError, ValueError) as exc:
        print(f"rtsim replay: {args.trace}: {exc}", file=sys.stderr)
        return 2

    def say(line: str) -> None:
        print(line, flush=True)

    async def main() -> int:
        server = ReplayServer(
            records,
            speed=args.speed,
            max_gap=args.max_gap,
            client_timeout=args.client_timeout,
            host=args.host,
            port=args.port,
            record_dir=args.record,
            say=say,
        )
        await replay_until_done(server, say)
        count = len(server.divergences)
        say(f"replayed {server.done} of {len(server.scripts)} connection(s); divergences: {count}")
        return 1 if server.divergences else 0

    try:
        return asyncio.run(main())
    except OSError as exc:
        print(f"rtsim replay: {exc}", file=sys.stderr)
        return 2
