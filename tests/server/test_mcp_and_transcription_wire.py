"""MCP tools and transcription sessions through real loopback sockets, driven by the official `openai` SDK
(`client.realtime.connect`), which parses every event into its typed models.

Sources: see tests/engine/test_mcp.py and tests/engine/test_transcription_session.py, and docs/parity.md.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from openai import AsyncOpenAI
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from rtsim.simulator import audio
from rtsim.simulator.server import RealtimeServer
from tests.support.engine import user_text, validate_ga
from tests.support.wire import KEY, post, recv, recv_until, ws_url

SCRIPT = {
    "transcripts": ["Book a table for two."],
    "mcp_servers": {
        "calendar": {"tools": [{"name": "find_slot", "input_schema": {"type": "object"}}]},
    },
    "replies": [
        {
            "match": "table for (\\w+)",
            "mcp_call": {"name": "find_slot", "arguments": {"people": "{1}"}, "output": "8 pm"},
            "after_tool": "You have a table at {output}.",
        }
    ],
}


async def start(server_factory: Callable[..., Any], tmp_path: Path, **config: Any) -> RealtimeServer:
    script = tmp_path / "script.yaml"
    script.write_text(yaml.safe_dump(SCRIPT))
    server: RealtimeServer = await server_factory(pacing=0.0, script=str(script), **config)
    return server


async def until(conn: Any, event_type: str) -> list[Any]:
    seen = []
    async for event in conn:
        seen.append(event)
        if event.type == event_type:
            return seen
    raise AssertionError(f"the connection ended before {event_type}")


async def test_the_sdk_lists_mcp_tools_approves_a_call_and_gets_the_answer(
    server_factory: Callable[..., Any], tmp_path: Path
) -> None:
    server = await start(server_factory, tmp_path)
    client = AsyncOpenAI(base_url=server.base_url, api_key=KEY)
    tool = {"type": "mcp", "server_label": "calendar", "server_url": "https://mcp.example.invalid"}
    async with client.realtime.connect(model="gpt-realtime") as conn:
        assert (await conn.recv()).type == "session.created"
        update = {"type": "realtime", "output_modalities": ["text"], "tools": [tool]}
        await conn.session.update(session=update)  # type: ignore[arg-type]
        listed = await until(conn, "conversation.item.done")
        assert [e.type for e in listed] == [
            "session.updated",
            "conversation.item.added",
            "mcp_list_tools.in_progress",
            "mcp_list_tools.completed",
            "conversation.item.done",
        ]
        assert [t.name for t in listed[-1].item.tools] == ["find_slot"]

        content = [{"type": "input_text", "text": "A table for two"}]
        await conn.conversation.item.create(item={"type": "message", "role": "user", "content": content})
        await conn.response.create()
        first = await until(conn, "response.done")
        request = next(e.item for e in first if e.type == "response.output_item.done")
        assert request.type == "mcp_approval_request" and request.name == "find_slot"

        await conn.conversation.item.create(
            item={"type": "mcp_approval_response", "approval_request_id": request.id, "approve": True}
        )
        await conn.response.create()
        second = await until(conn, "response.done")
        call = next(e.item for e in second if e.type == "response.output_item.done")
        assert call.type == "mcp_call" and call.output == "8 pm" and call.approval_request_id == request.id
        assert "response.mcp_call.completed" in [e.type for e in second]

        await conn.response.create()  # as openai-agents-js does after each completed MCP call
        third = await until(conn, "response.done")
        text = next(e.text for e in third if e.type == "response.output_text.done")
        assert text == "You have a table at 8 pm."


async def test_the_mcp_faults_fail_the_next_listing_and_call(
    server_factory: Callable[..., Any], tmp_path: Path
) -> None:
    server = await start(server_factory, tmp_path)
    tool = {"type": "mcp", "server_label": "calendar", "server_url": "https://mcp.example.invalid",
            "require_approval": "never"}
    async with connect(ws_url(server), additional_headers={"Authorization": f"Bearer {KEY}"}) as ws:
        created = await recv(ws)
        target = {"session": created["session"]["id"]}
        for kind, params in (("mcp-list-failed", {}), ("mcp-call-failed", {"failure": "protocol_error"})):
            fault = {"kind": kind, "params": params, "target": target}
            status, body = await post(server, "/_rtsim/faults", fault)
            assert status == 200, body
        update = {"type": "realtime", "output_modalities": ["text"], "tools": [tool]}
        await ws.send(json.dumps({"type": "session.update", "session": update}))
        events = [await recv(ws) for _ in range(5)]
        assert [e["type"] for e in events][-2:] == ["mcp_list_tools.failed", "conversation.item.done"]
        # a second server lists fine; its call meets the armed failure
        tool = {**tool, "server_label": "calendar2"}
        server.script.mcp_servers["calendar2"] = server.script.mcp_servers["calendar"]
        update["tools"] = [tool]
        await ws.send(json.dumps({"type": "session.update", "session": update}))
        events += await recv_until(ws, "conversation.item.done")
        await ws.send(json.dumps(user_text("A table for four")))
        await ws.send(json.dumps({"type": "response.create"}))
        events += await recv_until(ws, "response.done")
        call = [e["item"] for e in events if e["type"] == "response.output_item.done"][-1]
        assert call["type"] == "mcp_call" and call["error"]["type"] == "protocol_error"
        assert "response.mcp_call.failed" in [e["type"] for e in events]
        for event in events:
            validate_ga(event)


def speech() -> str:
    pcm = audio.build_utterance([("silence", 300), ("speech", 1000), ("silence", 1200)], seed=2).pcm
    return base64.b64encode(pcm).decode()


async def test_the_sdk_opens_a_transcription_session_and_gets_transcripts_but_no_responses(
    server_factory: Callable[..., Any], tmp_path: Path
) -> None:
    """The flow of openai-agents-python's OpenAISTTTranscriptionSession: `?intent=transcription` with no
    model, `session.created`, a `session.update` of type transcription, audio, `.completed`."""
    server = await start(server_factory, tmp_path)
    client = AsyncOpenAI(base_url=server.base_url, api_key=KEY)
    async with client.realtime.connect(extra_query={"intent": "transcription"}) as conn:
        created = await conn.recv()
        assert created.type == "session.created" and created.session.type == "transcription"
        await conn.session.update(
            session={
                "type": "transcription",
                "audio": {
                    "input": {
                        "format": {"type": "audio/pcm", "rate": 24000},
                        "transcription": {"model": "gpt-4o-transcribe"},
                        "turn_detection": {"type": "semantic_vad"},
                    }
                },
            }
        )
        assert (await conn.recv()).type == "session.updated"
        await conn.input_audio_buffer.append(audio=speech())
        events = await until(conn, "conversation.item.input_audio_transcription.completed")
        assert events[-1].transcript == "Book a table for two."
        await conn.response.create()
        refused = await conn.recv()
        assert refused.type == "error" and refused.error.code == "unsupported_event"
    assert not any(e.type.startswith("response.") for e in events)


async def test_a_model_on_a_transcription_url_is_refused(server: RealtimeServer) -> None:
    url = ws_url(server, "/v1/realtime?intent=transcription&model=gpt-realtime")
    async with connect(url, additional_headers={"Authorization": f"Bearer {KEY}"}) as ws:
        error = await recv(ws)
        validate_ga(error)
        message = "You must not provide a model parameter for transcription sessions."
        assert error["error"]["message"] == message
        with pytest.raises(ConnectionClosed):
            await recv(ws)
    assert ws.close_code == 4000
    assert not server.carriers


async def test_a_token_minted_for_a_transcription_session_opens_one(server: RealtimeServer) -> None:
    """`client_secrets` takes a transcription session (the SDK's RealtimeTranscriptionSessionCreateRequest);
    the token opens a transcription session configured as minted."""
    from openai.types.realtime.client_secret_create_response import ClientSecretCreateResponse

    audio_input = {"transcription": {"model": "whisper-1"}}
    minted = {"session": {"type": "transcription", "audio": {"input": audio_input}}}
    status, body = await post(server, "/v1/realtime/client_secrets", minted)
    assert status == 200, body
    assert ClientSecretCreateResponse.model_validate(body).session.type == "transcription"
    async with connect(
        ws_url(server, "/v1/realtime?intent=transcription"),
        additional_headers={"Authorization": f"Bearer {body['value']}"},
    ) as ws:
        created = await recv(ws)
        validate_ga(created)
        assert created["session"]["type"] == "transcription"
        assert created["session"]["audio"]["input"]["transcription"]["model"] == "whisper-1"


async def test_a_webrtc_call_with_a_transcription_token_is_a_transcription_session(
    server: RealtimeServer,
) -> None:
    """A browser opens a transcription session over WebRTC with an ephemeral token minted for one (the SDK's
    `call_create_params` types a `session` part as a realtime session only, so the token carries it)."""
    from rtsim.clients.webrtc_call import ClientCall

    audio_input = {"transcription": {"model": "whisper-1"}}
    minted = {"session": {"type": "transcription", "audio": {"input": audio_input}}}
    status, body = await post(server, "/v1/realtime/client_secrets", minted)
    assert status == 200, body
    call = ClientCall(server.base_url, body["value"])
    await call.connect()
    try:
        created = await call.wait_for("session.created")
        validate_ga(created)
        assert created["session"]["type"] == "transcription"
        assert created["session"]["audio"]["input"]["transcription"]["model"] == "whisper-1"
    finally:
        await call.close()
