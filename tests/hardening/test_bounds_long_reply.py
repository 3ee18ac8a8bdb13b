"""Finding 2: a long reply must not freeze the event loop or pin memory; it is cut at max_output_tokens."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from websockets.asyncio.client import connect

from rtsim.simulator import audio
from rtsim.simulator.engine.responses import WHOLE_SPEECH_MAX_MS
from rtsim.simulator.server import ServerConfig
from rtsim.simulator.soak import ServerThread
from tests.support.wire import open_session, recv, recv_until

LONG_TEXT = ("hello there this is a long message " * 1000)[:31000]


async def test_a_31kb_reply_neither_stalls_the_loop_nor_grows_the_cache() -> None:
    # The server on its own loop and thread, so the lag measured is the server's, not this client's.
    thread = ServerThread(ServerConfig(port=0, pacing=0.0))
    server = thread.server
    thread.call(server.start())
    try:
        ws = await connect(
            f"ws://127.0.0.1:{server.port}/v1/realtime?model=gpt-realtime",
            additional_headers={"Authorization": "Bearer sk-test"},
            max_size=None,
        )
        assert (await recv(ws))["type"] == "session.created"
        item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": LONG_TEXT}]}
        server.loop_lag.reset()
        await ws.send(json.dumps({"type": "conversation.item.create", "item": item}))
        await ws.send(json.dumps({"type": "response.create"}))
        events = await recv_until(ws, "response.done", timeout=30)
        lag = server.loop_lag.max_lag
        await ws.close()
    finally:
        thread.stop()
    done = events[-1]["response"]
    # Today the whole 34 minutes of audio were synthesised in one step: an 8 s stall and 3 GB.
    assert lag < 0.25, lag
    assert audio.speech_cache_bytes() <= audio.SPEECH_CACHE_BYTES
    assert done["status"] == "incomplete"
    assert done["status_details"] == {"type": "incomplete", "reason": "max_output_tokens"}
    assert done["usage"]["output_tokens"] <= 4096
    deltas = [e for e in events if e["type"] == "response.output_audio.delta"]
    transcript = "".join(e["delta"] for e in events if e["type"] == "response.output_audio_transcript.delta")
    assert transcript.startswith("You said: hello there") and 1000 < len(transcript) < len(LONG_TEXT)
    assert len(deltas) > WHOLE_SPEECH_MAX_MS // 100  # spoken in many segments, all delivered


async def test_max_output_tokens_bounds_a_text_reply(server_factory: Callable[..., Any]) -> None:
    server = await server_factory(pacing=0.0)
    ws = await open_session(server, max_size=None)
    item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": LONG_TEXT[:4000]}]}
    await ws.send(json.dumps({"type": "conversation.item.create", "item": item}))
    await ws.send(
        json.dumps(
            {"type": "response.create", "response": {"output_modalities": ["text"], "max_output_tokens": 50}}
        )
    )
    done = (await recv_until(ws, "response.done", timeout=30))[-1]["response"]
    assert done["status"] == "incomplete"
    assert done["usage"]["output_tokens"] <= 50
    await ws.close()


async def test_the_stop_record_carries_the_longest_loop_stall(server_factory: Callable[..., Any]) -> None:
    server = await server_factory(pacing=0.0)
    await server.stop()
    stop = server.history.select(kind="server")[-1]
    assert stop["event"] == "stop"
    assert isinstance(stop["max_loop_lag_ms"], float) and 0 <= stop["max_loop_lag_ms"] < 1000
