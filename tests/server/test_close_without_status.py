"""A client close frame without a status code is recorded as 1005 ("no status received", RFC 6455 §7.1.5),
as `@openai/agents-realtime`'s `close()` sends it — not as aiohttp's placeholder 0."""

from __future__ import annotations

import asyncio
from typing import Any

from websockets.asyncio.client import connect

from rtsim.simulator.server import RealtimeServer


async def test_a_close_frame_without_a_code_is_1005(server_factory: Any) -> None:
    server: RealtimeServer = await server_factory()
    url = server.base_url.replace("http://", "ws://") + "/realtime?model=gpt-realtime"
    async with connect(url, additional_headers={"Authorization": "Bearer sk-close-test"}) as ws:
        await ws.recv()  # session.created
        ws.protocol.send_close()  # no code, no reason: an empty close frame
        ws.send_data()
        await asyncio.wait_for(ws.wait_closed(), 5)
    for _ in range(50):
        closes = [r for r in server.history.records if r["kind"] == "close"]
        if closes:
            break
        await asyncio.sleep(0.05)
    assert [(c["code"], c["by"]) for c in closes] == [(1005, "client")]
