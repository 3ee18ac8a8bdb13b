"""The server pings each WebSocket, as the real service does (captures: about every 20 s; docs/parity.md).

A client that does not answer is not dropped for it; a stalled (half-open) server sends no pings either.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from rtsim.simulator.serve import add_server_options, config_from_args
from rtsim.simulator.server import ServerConfig
from tests.support.wire import KEY, ws_url


async def messages_for(ws: aiohttp.ClientWebSocketResponse, seconds: float) -> list[aiohttp.WSMessage]:
    received = []
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while (left := end - loop.time()) > 0:
        try:
            received.append(await ws.receive(timeout=left))
        except TimeoutError:
            break
    return received


async def test_the_server_pings_and_a_client_that_never_answers_stays_connected(
    server_factory: Callable[..., Any],
) -> None:
    server = await server_factory(pacing=0.0, ping_interval=0.2)
    async with aiohttp.ClientSession() as http:
        # autoping off: the client sees the pings and never answers them.
        async with http.ws_connect(
            ws_url(server), headers={"Authorization": f"Bearer {KEY}"}, autoping=False
        ) as ws:
            received = await messages_for(ws, 1.3)
            pings = [m for m in received if m.type == aiohttp.WSMsgType.PING]
            assert 4 <= len(pings) <= 7
            assert not ws.closed
            await ws.send_str(
                json.dumps({"type": "response.create", "response": {"output_modalities": ["text"]}})
            )
            kinds = [
                json.loads(m.data)["type"]
                for m in await messages_for(ws, 1.0)
                if m.type == aiohttp.WSMsgType.TEXT
            ]
            assert "response.done" in kinds  # the unanswering client is still served


async def test_pings_are_every_20_seconds_by_default_and_can_be_switched_off(
    server_factory: Callable[..., Any],
) -> None:
    assert ServerConfig().ping_interval == 20.0
    server = await server_factory(pacing=0.0, ping_interval=None)
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(
            ws_url(server), headers={"Authorization": f"Bearer {KEY}"}, autoping=False
        ) as ws:
            received = await messages_for(ws, 0.6)
            assert not [m for m in received if m.type == aiohttp.WSMsgType.PING]


async def test_a_stalled_server_sends_no_pings(server_factory: Callable[..., Any]) -> None:
    server = await server_factory(pacing=0.0, ping_interval=0.2)
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(
            ws_url(server), headers={"Authorization": f"Bearer {KEY}"}, autoping=False
        ) as ws:
            await messages_for(ws, 0.3)
            (carrier,) = server.carriers.values()
            carrier.stall(0)
            received = await messages_for(ws, 0.8)
            assert not [m for m in received if m.type == aiohttp.WSMsgType.PING]
            carrier.unstall()
            received = await messages_for(ws, 0.5)
            assert [m for m in received if m.type == aiohttp.WSMsgType.PING]  # pings again once it recovers


def test_the_timing_options_of_rtsim_serve() -> None:
    parser = argparse.ArgumentParser()
    add_server_options(parser)
    defaults = config_from_args(parser.parse_args([]))
    assert (defaults.pacing, defaults.transcription_delay, defaults.ping_interval) == (0.25, (0.5, 1.4), 20.0)
    given = config_from_args(
        parser.parse_args(["--pacing", "1", "--transcription-delay", "0,0", "--ping-interval", "0"])
    )
    assert (given.pacing, given.transcription_delay, given.ping_interval) == (1.0, (0.0, 0.0), None)
    assert given.limits().transcription_delay == (0.0, 0.0)
    with pytest.raises(SystemExit):
        parser.parse_args(["--transcription-delay", "2,1"])
