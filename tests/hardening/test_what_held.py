"""What held under attack, kept so: bad tokens all 401, the per-key session cap under a burst of
simultaneous handshakes, an oversized frame answered with `event_too_large`, invalid UTF-8 closed 1007."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import aiohttp
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from rtsim.simulator.tokens import TokenAuthority
from tests.support.faults import http
from tests.support.wire import KEY, open_session, recv, text_turn, ws_url

AUTH = {"Authorization": f"Bearer {KEY}"}


async def handshake_status(server: Any, token: str) -> int:
    try:
        ws = await connect(ws_url(server), additional_headers={"Authorization": f"Bearer {token}"})
    except InvalidStatus as refused:
        return refused.response.status_code
    await ws.close()
    return 101


async def test_forged_altered_foreign_and_replayed_tokens_are_all_401(
    server_factory: Callable[..., Any],
) -> None:
    server = await server_factory(pacing=0.0)
    status, minted, _ = await http(
        server, "POST", "/v1/realtime/client_secrets", {"session": {"type": "realtime"}}, headers=AUTH
    )
    assert status == 200
    good = minted["value"]
    payload, _, signature = good[3:].rpartition(".")
    foreign, _ = TokenAuthority().mint(key=KEY, ttl=600, session={})
    altered = f"ek_{payload[:-2]}{'AA' if not payload.endswith('AA') else 'BB'}.{signature}"
    for token in ("ek_forged.AAAA", altered, foreign, good[:-2] + "xx"):
        assert await handshake_status(server, token) == 401, token
    assert await handshake_status(server, good) == 101
    status, _, _ = await http(
        server, "POST", "/_rtsim/faults", {"kind": "expire-tokens", "target": {"key": KEY}}
    )
    assert status == 200
    assert await handshake_status(server, good) == 401  # replayed after it was expired


async def test_one_session_per_key_under_twenty_simultaneous_handshakes(
    server_factory: Callable[..., Any],
) -> None:
    server = await server_factory(pacing=0.0, max_sessions_per_key=1)
    outcomes = await asyncio.gather(
        *(connect(ws_url(server), additional_headers=AUTH) for _ in range(20)), return_exceptions=True
    )
    opened = [o for o in outcomes if not isinstance(o, BaseException)]
    refused = [o for o in outcomes if isinstance(o, InvalidStatus)]
    assert len(opened) == 1 and len(refused) == 19
    assert {r.response.status_code for r in refused} == {429}
    await opened[0].close()


async def test_a_20_mb_frame_is_event_too_large_and_the_session_goes_on(server: Any) -> None:
    ws = await open_session(server, max_size=None)
    await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": "A" * (20 * 1024 * 1024)}))
    error = await recv(ws, timeout=20)
    assert error["type"] == "error" and error["error"]["code"] == "event_too_large"
    assert await text_turn(ws, "still here")
    await ws.close()


async def test_invalid_utf8_in_a_text_frame_closes_1007(server: Any) -> None:
    async with aiohttp.ClientSession() as client:
        async with client.ws_connect(
            f"ws://127.0.0.1:{server.port}/v1/realtime?model=gpt-realtime", headers=AUTH
        ) as ws:
            assert json.loads((await ws.receive()).data)["type"] == "session.created"
            await ws.send_frame(b'{"type":"\xff"}', aiohttp.WSMsgType.TEXT)
            while (await ws.receive(timeout=5)).type not in (
                aiohttp.WSMsgType.CLOSE,
                aiohttp.WSMsgType.CLOSED,
            ):
                pass
            assert ws.close_code == 1007
