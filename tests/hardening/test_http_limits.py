"""Connections that never finish their request head are closed (slowloris), and the served API stays up."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from tests.support.wire import open_session

SLOW_CLIENTS = 50


async def test_connections_that_never_finish_headers_are_closed(server_factory: Callable[..., Any]) -> None:
    server = await server_factory(pacing=0.0, header_timeout=1.0)
    streams = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(SLOW_CLIENTS)]
    started = time.monotonic()
    for index, (_, writer) in enumerate(streams):
        writer.write(
            b"GET /v1/realtime HTTP/1.1\r\nHost: x\r\n" if index % 2 else b""
        )  # half a head, or nothing

    async def trickle_until_closed(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> float:
        while True:  # a header line every 0.2 s, never the blank line that ends the head
            try:
                writer.write(b"X-Slow: 1\r\n")
                await writer.drain()
                if await asyncio.wait_for(reader.read(1024), 0.2) == b"":
                    return time.monotonic() - started
            except TimeoutError:
                continue
            except ConnectionError:
                return time.monotonic() - started

    closed_after = await asyncio.wait_for(
        asyncio.gather(*(trickle_until_closed(r, w) for r, w in streams)), timeout=10
    )
    assert max(closed_after) < 4.0, max(closed_after)
    for _, writer in streams:
        writer.close()
    ws = await open_session(server)  # an ordinary client is served meanwhile and after
    await ws.close()


async def test_a_websocket_session_outlives_the_header_timeout(server_factory: Callable[..., Any]) -> None:
    server = await server_factory(pacing=0.0, header_timeout=0.3)
    ws = await open_session(server)
    await asyncio.sleep(0.8)
    await ws.send('{"type":"input_audio_buffer.clear"}')
    assert '"input_audio_buffer.cleared"' in str(await asyncio.wait_for(ws.recv(), 3))
    await ws.close()
