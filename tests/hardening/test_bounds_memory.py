"""Finding 6: bounded memory per session: slow readers, out-of-band responses, the input audio buffer."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable
from typing import Any

from rtsim.simulator.carrier import SLOW_READER_REASON
from rtsim.simulator.engine import Limits
from rtsim.simulator.engine.responses import MAX_OUT_OF_BAND_RESPONSES
from rtsim.simulator.engine.turns import MAX_APPEND_BYTES, MAX_BUFFER_BYTES
from tests.support.engine import make_session
from tests.support.wire import open_session

LONG_TEXT = ("hello there this is a long message " * 200)[:6000]


async def test_a_client_that_never_reads_is_closed_with_a_reason(server_factory: Callable[..., Any]) -> None:
    server = await server_factory(pacing=0.0)
    ws = await open_session(server, max_size=None, max_queue=1, close_timeout=0.5)
    item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": LONG_TEXT}]}
    await ws.send(json.dumps({"type": "conversation.item.create", "item": item}))
    for _ in range(MAX_OUT_OF_BAND_RESPONSES):
        await ws.send(json.dumps({"type": "response.create", "response": {"conversation": "none"}}))
    # The client reads nothing more: today its queue grew without bound (and stayed after it left).
    for _ in range(150):
        closes = server.history.select(kind="close")
        if closes:
            break
        await asyncio.sleep(0.1)
    assert closes and closes[0]["code"] == 1008 and closes[0]["reason"] == SLOW_READER_REASON
    assert not server.carriers
    await ws.close()


def _errors(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e["error"] for e in events if e["type"] == "error"]


def test_out_of_band_responses_are_capped() -> None:
    session = make_session(limits=Limits(pacing=0.0, response_latency=5.0))  # all still in progress
    session.drain()
    for _ in range(MAX_OUT_OF_BAND_RESPONSES + 1):
        session.receive({"type": "response.create", "response": {"conversation": "none"}}, 0.0)
    events = session.drain()
    assert sum(e["type"] == "response.created" for e in events) == MAX_OUT_OF_BAND_RESPONSES
    assert [e["code"] for e in _errors(events)] == ["too_many_active_responses"]


def test_the_input_audio_buffer_has_the_real_limits() -> None:
    session = make_session()
    session.receive(
        {
            "type": "session.update",
            "session": {"type": "realtime", "audio": {"input": {"turn_detection": None}}},
        },
        0.0,
    )
    session.drain()
    too_big = base64.b64encode(bytes(MAX_APPEND_BYTES + 2)).decode()
    session.receive({"type": "input_audio_buffer.append", "audio": too_big}, 0.0)
    assert [(e["code"], e["param"]) for e in _errors(session.drain())] == [("invalid_value", "audio")]
    full = base64.b64encode(bytes(MAX_BUFFER_BYTES)).decode()
    session.receive({"type": "input_audio_buffer.append", "audio": full}, 0.0)
    assert _errors(session.drain()) == []
    session.receive(
        {"type": "input_audio_buffer.append", "audio": base64.b64encode(bytes(4800)).decode()}, 0.0
    )
    assert [e["code"] for e in _errors(session.drain())] == ["input_audio_buffer_full"]
    session.receive({"type": "input_audio_buffer.commit"}, 0.0)
    committed = [e for e in session.drain() if e["type"] == "input_audio_buffer.committed"]
    assert len(committed) == 1  # what was within the limit is still there to commit


def test_with_server_vad_the_input_buffer_keeps_only_the_newest_audio() -> None:
    session = make_session()
    session.drain()
    silence = base64.b64encode(bytes(4 * 1024 * 1024)).decode()
    for _ in range(6):  # 24 MiB of silence, never a turn: today all of it was kept
        session.receive({"type": "input_audio_buffer.append", "audio": silence}, 0.0)
    assert _errors(session.drain()) == []
    assert 0 < len(session._turns.buffer) <= MAX_BUFFER_BYTES
