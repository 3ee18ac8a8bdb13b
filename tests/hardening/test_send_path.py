"""Output is always encodable and the send path cannot die silently.

Strict JSON parsers refuse a lone surrogate escape ("lone leading surrogate in hex escape"; OpenAI's
backend among them), so a client frame carrying one is an `invalid_json` error event, as any invalid JSON
is. Whatever still fails while sending ends the session with 1011, a `server_error` record, and frees it.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from rtsim.simulator.protocol import encode
from rtsim.simulator.server import RealtimeServer
from tests.support.faults import http, session_id_of
from tests.support.wire import open_session, recv, text_turn


@pytest.mark.parametrize(
    "frame",
    [
        '{"type":"\\ud800"}',
        '{"type":"response.create","event_id":"\\udfff"}',
        '{"type":"conversation.item.create","item":{"type":"message","role":"user",'
        '"content":[{"type":"input_text","text":"half \\ud83d a pair"}]}}',
        '{"\\ud800":1,"type":"response.cancel"}',
    ],
)
async def test_a_lone_surrogate_is_invalid_json_and_the_session_goes_on(
    server: RealtimeServer, frame: str
) -> None:
    ws = await open_session(server)
    await ws.send(frame)
    error = await recv(ws)
    assert error["type"] == "error" and error["error"]["code"] == "invalid_json"
    assert "surrogate" in error["error"]["message"]
    assert await text_turn(ws, "and still answered")
    status, _, _ = await http(server, "POST", "/_rtsim/faults", {"kind": "close", "params": {"code": 1000}})
    assert status == 200
    with pytest.raises(ConnectionClosed):
        while True:
            await recv(ws)
    assert ws.close_code == 1000  # the close fault reaches it: not a zombie


def test_encode_always_gives_utf8_encodable_text() -> None:
    text = encode({"type": "error", "error": {"message": "bad \ud800 here", "event_id": "\udfff"}})
    text.encode("utf-8")  # no UnicodeEncodeError
    assert json.loads(text)["error"]["message"] == "bad \ufffd here"
    assert encode({"type": "x", "text": "ok 😀"}) == '{"type":"x","text":"ok 😀"}'


async def test_a_failing_send_closes_1011_records_it_and_frees_the_session(server: RealtimeServer) -> None:
    ws = await open_session(server)
    sid = await session_id_of(ws, server)
    other = await open_session(server)
    carrier = server.carriers[sid]

    async def broken(event: dict[str, Any]) -> bool:
        raise ValueError("cannot encode this event")

    carrier._transmit = broken  # type: ignore[method-assign]
    await ws.send(json.dumps({"type": "input_audio_buffer.clear"}))
    with pytest.raises(ConnectionClosed):
        while True:
            await recv(ws)
    assert ws.close_code == 1011
    for _ in range(100):
        if sid not in server.carriers:
            break
        await asyncio.sleep(0.02)
    assert sid not in server.carriers and sid not in [c.session.id for c in server.live_carriers()]
    (failure,) = server.history.select(kind="server_error", session=sid)
    assert "ValueError" in failure["error"]
    (close,) = server.history.select(kind="close", session=sid)
    assert close["code"] == 1011
    assert other.state is State.OPEN and await text_turn(other, "unaffected")
