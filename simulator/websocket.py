"""The WebSocket adapter: one aiohttp WebSocket carrying one session, over the shared `Carrier`.

It owns what only the socket can do: send a text frame, close with any code, `drop` (no close frame: the
client sees 1006, optionally after half a frame), and the reading side of a stall (half-open: nothing sent,
pings unanswered, while the kernel is watched for a client that gave up).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Any

from aiohttp import WSMsgType, web

from .carrier import SLOW_READER_REASON, Carrier
from .engine import Session
from .history import History
from .protocol import encode_bytes

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


NO_STATUS_RECEIVED = 1005


class WebSocketCarrier(Carrier):
    """A session over one WebSocket connection."""

    transport = "websocket"

    def __init__(
        self,
        request: web.Request,
        ws: web.WebSocketResponse,
        *,
        session: Session,
        conn_id: str,
        key_id: str,
        history: History,
        seed: int = 0,
        ping_interval: float | None = None,
    ) -> None:
        super().__init__(session=session, conn_id=conn_id, key_id=key_id, history=history, seed=seed)
        self.request = request
        self.ws = ws
        self.ping_interval = ping_interval
        self.close_sent: tuple[int, str] | None = None
        self.client_close: tuple[int, str] | None = None
        self.fault_ending: str | None = None

    async def _transmit(self, event: dict[str, Any]) -> bool:
        data = encode_bytes(event)
        self.history.event("out", self.session.id, event, encoded_size=len(data))
        await self.ws.send_frame(data, WSMsgType.TEXT)  # already UTF-8: no str round trip
        return True

    async def _drained(self) -> bool:
        request = self.session.close_request
        if request is not None and not self.outbound and not self.stalled:
            await self.close(*request, by="server")
            return True
        return False

    async def _fail_closed(self) -> None:
        assert self.session.close_request is not None
        await self.close(*self.session.close_request, by="server")

    async def close(self, code: int, reason: str, *, by: str) -> None:
        if self.closed_by is None:
            self.closed_by = by
            self.close_sent = (code, reason)
            with contextlib.suppress(ConnectionError, RuntimeError, asyncio.TimeoutError):
                await self.ws.close(code=code, message=reason.encode())

    async def shut_down(self, code: int, reason: str) -> None:
        await self.close(code, reason, by="server")

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

    def _on_slow_reader(self) -> None:
        """A close frame cannot reach a client that does not read: record 1008 and its reason, then abort."""
        transport = self.request.transport
        self.outbound.clear()
        self.outbound_bytes = 0
        if self.closed_by is not None or transport is None:
            return
        self.closed_by = "server"
        self.close_sent = (1008, SLOW_READER_REASON)
        transport.abort()

    def _pause_reading(self) -> None:
        transport = self.request.transport
        if transport is not None:
            transport.pause_reading()
            self.loop.call_later(STALL_WATCH_SECONDS, self._watch_stalled_peer)

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

    def _resume_reading(self) -> None:
        transport = self.request.transport
        if transport is not None and not transport.is_closing():
            transport.resume_reading()

    async def _ping_every(self, interval: float) -> None:
        """Ping as the real service does. A missing pong is not acted on: the real service is not known to
        drop a client for it, and aiohttp's `heartbeat` would (and would end every half-open stall fault)."""
        while True:
            await asyncio.sleep(interval)
            if self.closed_by is not None or self.ws.closed:
                return
            if self.stalled:
                continue  # a stalled server sends nothing at all
            try:
                await self.ws.ping()
            except (ConnectionError, RuntimeError):
                return

    # ---- the connection's life --------------------------------------------------------------------

    async def run(self) -> None:
        session = self.session
        session.start(self.loop.time())
        writer = asyncio.create_task(self.writer())
        if self.ping_interval:
            self.spawn(self._ping_every(self.ping_interval))
        self.pump()
        try:
            while True:
                msg = await self.ws.receive()
                now = self.loop.time()
                if msg.type == WSMsgType.CLOSE:  # the client's close frame: keep its code and reason
                    # A close frame without a status code is 1005, "no status received" (RFC 6455 7.1.5);
                    # aiohttp reports it as 0. (@openai/agents-realtime's close() sends one.)
                    self.client_close = (msg.data or NO_STATUS_RECEIVED, msg.extra or "")
                    break
                if msg.type in (WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                    break
                if msg.type == WSMsgType.TEXT:
                    self.receive_text(msg.data, now)
                elif msg.type == WSMsgType.BINARY:
                    self.receive_binary(len(msg.data), now)
                self.pump()
        finally:
            self._finish()
            await asyncio.sleep(0)  # let the writer send what is already queued (a close, an error)
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
            self._cancel_tasks()
            if self.fault_ending is not None:
                code, reason = 1006, ""
            elif self.close_sent is not None:
                code, reason = self.close_sent
            elif self.client_close is not None:
                code, reason = self.client_close
            else:
                code, reason = self.ws.close_code, ""
            by = self.closed_by or ("client" if code not in (None, 1006) else "network")
            self.record_close(code if code is not None else 1006, reason, by, fault=self.fault_ending)
            self.done.set()
