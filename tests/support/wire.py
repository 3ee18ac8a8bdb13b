"""WebSocket helpers: open a session on a server, read events, a text turn, REST calls."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
from websockets.asyncio.client import ClientConnection, connect

from rtsim.simulator.server import RealtimeServer

KEY = "sk-test-key"


def ws_url(server: RealtimeServer, path: str = "/v1/realtime?model=gpt-realtime") -> str:
    return f"ws://127.0.0.1:{server.port}{path}"


async def recv(ws: ClientConnection, timeout: float = 5.0) -> dict[str, Any]:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def recv_until(ws: ClientConnection, event_type: str, timeout: float = 10.0) -> list[dict[str, Any]]:
    events = []
    while True:
        event = await recv(ws, timeout)
        events.append(event)
        if event["type"] == event_type:
            return events


async def open_session(server: RealtimeServer, key: str = KEY, **kwargs: Any) -> ClientConnection:
    ws = await connect(ws_url(server), additional_headers={"Authorization": f"Bearer {key}"}, **kwargs)
    created = await recv(ws)
    assert created["type"] == "session.created"
    return ws


async def ask(ws: ClientConnection, text: str) -> None:
    """A typed user turn and a response.create, without waiting for the answer."""
    await ws.send(
        json.dumps(
            {
                "type": "conversation.item.create",
                "item": {
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": text}],
                },
            }
        )
    )
    await ws.send(json.dumps({"type": "response.create"}))


async def receive_for(ws: ClientConnection, seconds: float) -> list[dict[str, Any]]:
    """Everything the client receives until the socket has been quiet for `seconds`."""
    received = []
    while True:
        try:
            received.append(await recv(ws, seconds))
        except TimeoutError:
            return received


async def text_turn(ws: ClientConnection, text: str) -> str:
    await ask(ws, text)
    events = await recv_until(ws, "response.done")
    done = events[-1]
    return "".join(
        p.get("transcript") or p.get("text") or ""
        for item in done["response"]["output"]
        for p in item.get("content", [])
    )


async def post(
    server: RealtimeServer, path: str, body: Any, key: str | None = KEY, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    all_headers = dict(headers or {})
    if key is not None:
        all_headers["Authorization"] = f"Bearer {key}"
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"http://127.0.0.1:{server.port}{path}", json=body, headers=all_headers) as response,
    ):
        return response.status, await response.json()


# ---- auth and tokens ------------------------------------------------------------------------------


