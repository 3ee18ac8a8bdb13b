"""Calls a WebSocket can join by id (`GET /v1/realtime?call_id=`): a WebRTC call, or an accepted SIP call.

The joined socket — the sideband — gets the session's server events and may send client events, as the
real service lets a backend observe and steer a call whose audio travels elsewhere (WebRTC media, the
SIP leg's RTP).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from aiohttp import WSMsgType, web

from .admission import Refusal
from .carrier import Carrier
from .engine import Session
from .history import History
from .protocol import encode


def call_not_found() -> Refusal:
    """What every calls route (hangup, accept, reject, refer, the sideband) answers for a call the key cannot
    act on: gone, never there, or another key's — which is not even named."""
    return Refusal(
        404,
        "call_id_not_found",
        "No session found for the provided call_id",
        code="call_id_not_found",
        param="",
    )


class JoinableCall(Carrier):
    """A carrier with a call id and the sideband WebSockets joined to its session."""

    def __init__(
        self, *, call_id: str, session: Session, conn_id: str, key_id: str, history: History, seed: int = 0
    ) -> None:
        super().__init__(session=session, conn_id=conn_id, key_id=key_id, history=history, seed=seed)
        self.id = call_id
        self.sidebands: set[Sideband] = set()

    def join(self, sideband: Sideband) -> None:
        """A sideband joined; it gets every event from now on."""
        self.sidebands.add(sideband)

    def leave(self, sideband: Sideband) -> None:
        self.sidebands.discard(sideband)


class Sideband:
    """A WebSocket joined to a call's session: the same events out, client events in."""

    def __init__(self, call: JoinableCall, ws: web.WebSocketResponse, conn_id: str, key_id: str) -> None:
        self.call = call
        self.ws = ws
        self.conn_id = conn_id
        self.key_id = key_id
        self.queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self.closed_by: str | None = None

    def deliver(self, event: dict[str, Any]) -> None:
        self.queue.put_nowait(event)

    async def _writer(self) -> None:
        while True:
            event = await self.queue.get()
            if event is None:
                return
            try:
                await self.ws.send_str(encode(event))
            except (ConnectionError, RuntimeError):
                return

    async def run(self) -> None:
        call = self.call
        writer = asyncio.ensure_future(self._writer())
        call.join(self)
        try:
            async for msg in self.ws:
                now = call.loop.time()
                if msg.type == WSMsgType.TEXT:
                    call.receive_text(msg.data, now, via="sideband")
                elif msg.type == WSMsgType.BINARY:
                    call.receive_binary(len(msg.data), now, via="sideband", unit="frame")
                else:
                    break
                call.pump()
        finally:
            call.leave(self)
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
            code = self.ws.close_code
            call.history.record(
                "close",
                session=call.session.id,
                conn=self.conn_id,
                key_id=self.key_id,
                code=code if code is not None else 1006,
                reason="",
                by=self.closed_by or "client",
                transport="sideband",
                call_id=call.id,
            )

    async def close(self) -> None:
        """The call ended: its sidebands close normally."""
        self.closed_by = "server"
        self.call.leave(self)
        with contextlib.suppress(ConnectionError, RuntimeError, asyncio.TimeoutError):
            await self.ws.close(code=1000, message=b"call ended")
