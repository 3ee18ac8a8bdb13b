"""Finding 5: answered WebRTC calls whose client never connects end at the setup timeout, leaving nothing."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Any

import aiohttp
from aiortc import RTCPeerConnection

from tests.support.webrtc import KEY


async def _abandoned_offer(base_url: str) -> str:
    """Post an offer, take the answer, and never connect (the client's peer connection is just closed)."""
    pc = RTCPeerConnection()
    pc.createDataChannel("oai-events")
    pc.addTransceiver("audio", direction="sendrecv")
    await pc.setLocalDescription(await pc.createOffer())
    async with (
        aiohttp.ClientSession() as client,
        client.post(
            f"{base_url}/realtime/calls",
            data=pc.localDescription.sdp,
            headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/sdp"},
        ) as response,
    ):
        assert response.status == 201, await response.text()
        location = response.headers["Location"]
    await pc.close()
    return location.rsplit("/", 1)[-1]


async def test_abandoned_calls_end_at_the_setup_timeout(server_factory: Callable[..., Any]) -> None:
    server = await server_factory(pacing=0.0, webrtc_setup_timeout=1.0)
    fds_before = len(os.listdir("/proc/self/fd"))
    call_ids = [await _abandoned_offer(server.base_url) for _ in range(3)]
    assert set(call_ids) <= set(server.calls)
    for _ in range(60):  # today they lasted until the session cap
        if not server.carriers:
            break
        await asyncio.sleep(0.1)
    assert not server.carriers and not server.calls
    closes = {r["call_id"]: r for r in server.history.select(kind="close")}
    assert {closes[c]["reason"] for c in call_ids} == {"setup_timeout"}
    assert {closes[c]["by"] for c in call_ids} == {"network"}
    await asyncio.sleep(0.2)
    assert len(os.listdir("/proc/self/fd")) <= fds_before + 1
