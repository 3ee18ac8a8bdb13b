"""WebRTC calls are admitted as WebSocket sessions are: the per-key limit (counted across transports), token
checks, attached fault plans, and the identity's scripted transcripts carried from one session to the next."""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import InvalidStatus

from rtsim.clients.webrtc_call import CallRefused, ClientCall
from rtsim.simulator.server import RealtimeServer
from tests.support.webrtc import KEY
from tests.support.wire import open_session, recv

SILENCE_200MS = base64.b64encode(bytes(24000 * 2 // 5)).decode()  # pcm16 24 kHz
TOKEN_401 = "Your ephemeral token is invalid or has expired."


@pytest.fixture
async def calls() -> AsyncIterator[list[ClientCall]]:
    """Client calls a test opened; closed at the end whatever happened."""
    opened: list[ClientCall] = []
    yield opened
    for call in opened:
        with contextlib.suppress(Exception):
            await call.close()


async def call_with(
    server: RealtimeServer, opened: list[ClientCall], credential: str = KEY, **kwargs: Any
) -> ClientCall:
    call = ClientCall(server.base_url, credential, microphone=False, **kwargs)
    opened.append(call)
    await call.connect()
    await call.wait_for("session.created")
    return call


async def refused(server: RealtimeServer, opened: list[ClientCall], credential: str = KEY) -> CallRefused:
    with pytest.raises(CallRefused) as refusal:
        await call_with(server, opened, credential)
    return refusal.value


async def session_id(call: ClientCall) -> str:
    return str((await call.wait_for("session.created"))["session"]["id"])


def user_transcript(event: dict[str, Any]) -> str | None:
    """The transcript of a user audio item announced by `event`, if it announces one."""
    item = event.get("item") or {}
    if event.get("type") != "conversation.item.added" or item.get("role") != "user":
        return None
    return next((part.get("transcript") for part in item.get("content", [])), None)


COMMIT_AUDIO = [
    {"type": "input_audio_buffer.append", "audio": SILENCE_200MS},
    {"type": "input_audio_buffer.commit"},
]


# ---- --max-sessions-per-key -----------------------------------------------------------------------------


async def test_the_per_key_limit_refuses_the_call_beyond_it(
    server_factory: Callable[..., Any], calls: list[ClientCall]
) -> None:
    server = await server_factory(pacing=0.0, max_sessions_per_key=2)
    first = await call_with(server, calls)
    await call_with(server, calls)
    refusal = await refused(server, calls)
    assert refusal.status == 429
    assert refusal.body["error"]["code"] == "concurrent_session_limit"
    assert await session_id(first) in refusal.body["error"]["message"]  # it names what leaked
    assert len(server.calls) == 2
    handshake = server.history.select(kind="handshake")[-1]
    assert handshake["transport"] == "webrtc" and handshake["reason"] == "concurrent_session_limit"


async def test_websocket_sessions_and_calls_of_one_key_count_together(
    server_factory: Callable[..., Any], calls: list[ClientCall]
) -> None:
    server = await server_factory(pacing=0.0, max_sessions_per_key=2)
    ws = await open_session(server)
    try:
        await call_with(server, calls)
        assert (await refused(server, calls)).status == 429  # a WebSocket session and a call: the limit
        with pytest.raises(InvalidStatus) as refusal:
            await open_session(server)
        assert refusal.value.response.status_code == 429  # and the WebSocket side sees the call too
        await call_with(server, calls, "sk-another-key")  # another key has its own limit
    finally:
        await ws.close()


# ---- tokens ---------------------------------------------------------------------------------------------


async def test_an_expired_or_forged_token_is_refused_with_401(
    server: RealtimeServer, calls: list[ClientCall]
) -> None:
    expired, _ = server.tokens.mint(key=KEY, ttl=-1, session={})
    refusal = await refused(server, calls, expired)
    assert refusal.status == 401 and refusal.body["error"]["message"] == TOKEN_401
    assert refusal.body["error"]["code"] == "invalid_api_key"
    forged = await refused(server, calls, expired[:-4] + "AAAA")
    assert forged.status == 401 and forged.body["error"]["message"] == "Invalid ephemeral token provided."
    reasons = [h["reason"] for h in server.history.select(kind="handshake")]
    assert reasons == ["token_expired", "token_invalid"]
    assert not server.calls and not server.history.select(kind="session")


async def test_a_valid_token_opens_a_call_with_its_minted_session(
    server: RealtimeServer, calls: list[ClientCall]
) -> None:
    token, minted = server.tokens.mint(
        key=KEY, ttl=60, session={"type": "realtime", "instructions": "Speak like a pirate."}
    )
    call = await call_with(server, calls, token)
    assert (await call.wait_for("session.created"))["session"]["instructions"] == "Speak like a pirate."
    session = server.history.select(kind="session")[-1]
    assert session["token_id"] == minted.token_id and session["transport"] == "webrtc"


# ---- fault plans ----------------------------------------------------------------------------------------


async def test_a_plan_attached_to_a_call_fires_on_that_call(
    server: RealtimeServer, calls: list[ClientCall]
) -> None:
    planned = await call_with(server, calls, headers={"X-Rtsim-Chaos": "benign-error:code=item_not_found"})
    error = await planned.wait_for("error")
    assert error["error"]["code"] == "item_not_found"
    plain = await call_with(server, calls)
    faults = server.history.select(kind="fault")
    assert [(f["fault"], f["route"]) for f in faults] == [("benign-error", "plan:connection")]
    assert faults[0]["session"] == await session_id(planned)
    assert "error" not in plain.types()


# ---- scripted transcripts across sessions ---------------------------------------------------------------


async def test_scripted_transcripts_continue_from_a_websocket_session_to_a_call(
    server_factory: Callable[..., Any], calls: list[ClientCall], tmp_path: Path
) -> None:
    script = tmp_path / "script.yaml"
    script.write_text("transcripts:\n  - first thing said\n  - second thing said\n")
    server = await server_factory(pacing=0.0, script=str(script))
    ws: ClientConnection = await open_session(server)
    for event in COMMIT_AUDIO:
        await ws.send(json.dumps(event))
    said = None
    while said is None:
        said = user_transcript(await recv(ws))
    assert said == "first thing said"
    await ws.close()
    call = await call_with(server, calls)  # a new session of the same key, over WebRTC
    for event in COMMIT_AUDIO:
        call.send(event)
    announced = await call.wait_for(lambda e: user_transcript(e) is not None)
    assert user_transcript(announced) == "second thing said"
