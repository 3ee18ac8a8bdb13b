"""Fault helpers: inject through the control API, wait for closes, mint tokens."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from rtsim.simulator.server import RealtimeServer
from tests.support.wire import KEY, post, recv, ws_url

OTHER_KEY = "sk-other-key"


# ---- helpers (the other fault test modules use them too) ------------------------------------------------


async def http(
    server: RealtimeServer,
    method: str,
    path: str,
    body: Any = None,
    *,
    raw: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any, dict[str, str]]:
    """One HTTP call to the simulator: (status, parsed JSON or text, headers); `headers` add to (or replace)
    the JSON content type."""
    async with (
        aiohttp.ClientSession() as client,
        client.request(
            method,
            f"http://127.0.0.1:{server.port}{path}",
            data=raw if raw is not None else (json.dumps(body) if body is not None else None),
            headers={"Content-Type": "application/json", **(headers or {})},
        ) as response,
    ):
        text = await response.text()
        parsed: Any = json.loads(text) if response.content_type == "application/json" else (text or None)
        return response.status, parsed, dict(response.headers)


async def inject(
    server: RealtimeServer,
    kind: str,
    params: dict[str, Any] | None = None,
    target: dict[str, Any] | None = None,
    when: dict[str, Any] | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"kind": kind, "params": params or {}, "target": target or {}}
    if when is not None:
        body["when"] = when
    status, out, _ = await http(server, "POST", "/_rtsim/faults", body)
    assert status in (200, 201), out
    return out


async def session_id_of(ws: ClientConnection, server: RealtimeServer) -> str:
    """The id of the session `ws` carries (the newest one the server opened)."""
    return server.history.select(kind="session")[-1]["session"]


async def server_close(
    server: RealtimeServer, session: str | None = None, timeout: float = 3.0
) -> dict[str, Any]:
    """The history's close record for `session` (or the latest), once the server has written it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        closes = [
            c for c in server.history.select(kind="close") if session is None or c["session"] == session
        ]
        if closes:
            return closes[-1]
        await asyncio.sleep(0.02)
    raise AssertionError(f"no close recorded for {session}")


async def drain_until_closed(ws: ClientConnection, timeout: float = 5.0) -> list[dict[str, Any]]:
    """Every event received until the connection ends (the ending itself is on `ws`)."""
    received = []
    with pytest.raises(ConnectionClosed):
        while True:
            received.append(await recv(ws, timeout))
    return received


async def connect_with(server: RealtimeServer, credential: str, **kwargs: Any) -> ClientConnection:
    return await connect(
        ws_url(server), additional_headers={"Authorization": f"Bearer {credential}"}, **kwargs
    )


async def mint(
    server: RealtimeServer, key: str = KEY, path: str = "/v1/realtime/client_secrets"
) -> dict[str, Any]:
    status, body = await post(server, path, {}, key=key)
    assert status == 200, body
    return body


async def silent_for(ws: ClientConnection, seconds: float) -> bool:
    try:
        await asyncio.wait_for(ws.recv(), seconds)
    except TimeoutError:
        return True
    return False


def audio_response() -> str:
    return json.dumps({"type": "response.create"})


# ---- drop -----------------------------------------------------------------------------------------------


