"""The server over real loopback sockets: auth, tokens, REST, profiles, the cap, bad frames, shutdown."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from rtsim.simulator.history import History
from rtsim.simulator.server import RealtimeServer
from rtsim.simulator.tokens import TokenAuthority
from tests.support.engine import validate_beta, validate_ga
from tests.support.wire import KEY, open_session, post, recv, recv_until, text_turn, ws_url


async def test_api_key_session_and_a_text_turn(server: RealtimeServer) -> None:
    ws = await open_session(server)
    assert "My name is Alice" in await text_turn(ws, "My name is Alice.")  # the echo
    assert "Alice" in await text_turn(ws, "What is my name?")
    await ws.close()


async def test_browser_subprotocol_auth_selects_realtime(server: RealtimeServer) -> None:
    async with connect(ws_url(server), subprotocols=["realtime", f"openai-insecure-api-key.{KEY}"]) as ws:
        assert ws.subprotocol == "realtime"
        assert (await recv(ws))["type"] == "session.created"


async def test_unknown_api_key_is_accepted_then_closed_3000(server_factory: Callable[..., Any]) -> None:
    server = await server_factory(api_keys=["sk-the-only-key"])
    async with connect(ws_url(server), additional_headers={"Authorization": "Bearer sk-wrong-key-123"}) as ws:
        event = await recv(ws)
        validate_ga(event)
        assert event["error"]["code"] == "invalid_api_key"
        assert "sk-" in event["error"]["message"] and "wrong-key" not in event["error"]["message"]
        with pytest.raises(ConnectionClosed):
            await recv(ws)
    assert ws.close_code == 3000 and ws.close_reason == "invalid_request_error.invalid_api_key"
    handshake = server.history.select(kind="handshake")[-1]
    assert handshake["reason"] == "invalid_api_key"
    ok = await open_session(server, "sk-the-only-key")
    await ok.close()


async def test_minted_token_opens_sessions_until_it_expires(server_factory: Callable[..., Any]) -> None:
    from openai.types.realtime import ClientSecretCreateResponse  # imported before the clock starts

    server = await server_factory(token_ttl=2.0, pacing=0.0)
    status, body = await post(
        server,
        "/v1/realtime/client_secrets",
        {"session": {"type": "realtime", "instructions": "From the token."}},
    )
    assert status == 200
    ClientSecretCreateResponse.model_validate(body)
    token = body["value"]
    assert token.startswith("ek_") and body["expires_at"] >= int(server.history.started_wall)
    ws = await connect(ws_url(server), additional_headers={"Authorization": f"Bearer {token}"})
    created = await recv(ws)
    assert created["session"]["instructions"] == "From the token."  # the minted config applies
    await ws.close()
    await asyncio.sleep(max(0.0, body["expires_at"] - time.time()) + 1.1)
    with pytest.raises(InvalidStatus) as info:
        await connect(ws_url(server), additional_headers={"Authorization": f"Bearer {token}"})
    assert info.value.response.status_code == 401
    assert json.loads(info.value.response.body)["error"]["code"] == "invalid_api_key"
    refused = server.history.select(kind="handshake")[-1]
    assert refused["accepted"] is False and refused["reason"] == "token_expired"
    assert refused["key_id"] is None


async def test_a_forged_token_is_refused(server: RealtimeServer) -> None:
    _, body = await post(server, "/v1/realtime/client_secrets", {})
    forged = body["value"][:-3] + ("aaa" if not body["value"].endswith("aaa") else "bbb")
    with pytest.raises(InvalidStatus) as info:
        await connect(ws_url(server), additional_headers={"Authorization": f"Bearer {forged}"})
    assert info.value.response.status_code == 401


async def test_tokens_verify_across_servers_sharing_a_secret(server_factory: Callable[..., Any]) -> None:
    a = RealtimeServer(tokens=TokenAuthority(b"shared"))
    b = RealtimeServer(tokens=TokenAuthority(b"shared"))
    c = RealtimeServer(tokens=TokenAuthority(b"other"))
    for s in (a, b, c):
        await s.start()
    try:
        _, body = await post(
            a, "/v1/realtime/client_secrets", {"expires_after": {"anchor": "created_at", "seconds": 60}}
        )
        async with connect(ws_url(b), additional_headers={"Authorization": f"Bearer {body['value']}"}) as ws:
            assert (await recv(ws))["type"] == "session.created"
        with pytest.raises(InvalidStatus):
            await connect(ws_url(c), additional_headers={"Authorization": f"Bearer {body['value']}"})
    finally:
        for s in (a, b, c):
            await s.stop()


@pytest.mark.parametrize(
    ("body", "status", "code", "param"),
    [
        (
            {"expires_after": {"anchor": "created_at", "seconds": 5}},
            400,
            "integer_below_min_value",
            "expires_after.seconds",
        ),
        (
            {"expires_after": {"anchor": "created_at", "seconds": 7201}},
            400,
            "integer_above_max_value",
            "expires_after.seconds",
        ),
        (
            {"session": {"type": "realtime", "audio": {"output": {"voice": "nope"}}}},
            400,
            "invalid_value",
            "session.audio.output.voice",
        ),
        ({"bogus": 1}, 400, "unknown_parameter", "bogus"),
    ],
)
async def test_client_secret_validation(
    server: RealtimeServer, body: dict[str, Any], status: int, code: str, param: str
) -> None:
    got_status, got = await post(server, "/v1/realtime/client_secrets", body)
    assert (got_status, got["error"]["code"], got["error"]["param"]) == (status, code, param)


async def test_rest_refuses_unknown_keys_and_tokens(server_factory: Callable[..., Any]) -> None:
    server = await server_factory(api_keys=[KEY])
    status, body = await post(server, "/v1/realtime/client_secrets", {}, key="sk-unknown-key-9")
    assert status == 401 and body["error"]["code"] == "invalid_api_key"
    status, body = await post(server, "/v1/realtime/client_secrets", {}, key=None)
    assert status == 401
    _, minted = await post(server, "/v1/realtime/client_secrets", {})
    status, _ = await post(server, "/v1/realtime/client_secrets", {}, key=minted["value"])
    assert status == 401  # an ephemeral token cannot mint more tokens


async def test_beta_sessions_endpoint_and_beta_dialect(server_factory: Callable[..., Any]) -> None:
    server = await server_factory(pacing=0.0, profile="openai-beta")
    status, body = await post(
        server,
        "/v1/realtime/sessions",
        {"model": "gpt-4o-realtime-preview", "voice": "alloy", "modalities": ["text", "audio"]},
    )
    assert status == 200
    from openai.types.beta.realtime import SessionCreateResponse

    SessionCreateResponse.model_validate(body)
    assert body["client_secret"]["value"].startswith("ek_") and body["voice"] == "alloy"
    assert (
        body["client_secret"]["expires_at"] - server.history.started_wall <= 61
    )  # beta's one-minute default
    headers = {"Authorization": f"Bearer {body['client_secret']['value']}", "OpenAI-Beta": "realtime=v1"}
    async with connect(ws_url(server), additional_headers=headers) as ws:
        created = await recv(ws)
        validate_beta(created)
        assert created["session"]["voice"] == "alloy"
        await ws.send(
            json.dumps(
                {
                    "type": "conversation.item.create",
                    "item": {
                        "type": "message",
                        "role": "user",
                        "content": [{"type": "input_text", "text": "hi"}],
                    },
                }
            )
        )
        await ws.send(json.dumps({"type": "response.create"}))
        events = await recv_until(ws, "response.done")
        for event in events:
            validate_beta(event)
        assert {"conversation.item.created", "response.audio.delta", "response.audio_transcript.done"} <= {
            e["type"] for e in events
        }


@pytest.mark.parametrize(
    "headers,subprotocols",
    [({"OpenAI-Beta": "realtime=v1"}, None), ({}, ["realtime", "openai-beta.realtime-v1"])],
)
async def test_the_ga_profile_refuses_the_beta_shape_after_the_upgrade(
    server: RealtimeServer, headers: dict[str, str], subprotocols: list[str] | None
) -> None:
    """The real GA endpoint switched the beta shape off in May 2026: a beta header or subprotocol gets an
    `error` with code `beta_api_shape_disabled`, then close 4000 (captures of live GA traffic)."""
    async with connect(
        ws_url(server),
        additional_headers={"Authorization": f"Bearer {KEY}", **headers},
        subprotocols=subprotocols,  # type: ignore[arg-type]
    ) as ws:
        error = await recv(ws)
        validate_ga(error)
        assert error["type"] == "error"
        assert error["error"]["type"] == "invalid_request_error"
        assert error["error"]["code"] == "beta_api_shape_disabled"
        with pytest.raises(ConnectionClosed):
            await recv(ws)
    assert ws.close_code == 4000
    assert not server.carriers  # no session was made


async def test_azure_profile_paths_and_thirty_minute_cap(server_factory: Callable[..., Any]) -> None:
    server = await server_factory(profile="azure")
    path = "/openai/realtime?api-version=2025-08-28&deployment=my-deployment"
    async with connect(ws_url(server, path), additional_headers={"api-key": "sk-azure"}) as ws:
        created = await recv(ws)
        validate_ga(created)
        assert created["session"]["model"] == "my-deployment"
        remaining = created["session"]["expires_at"] - server.history.started_wall
        assert 1795 <= remaining <= 1805
    preview = "/openai/realtime?api-version=2024-10-01-preview&deployment=gpt-4o-realtime-preview"
    async with connect(ws_url(server, preview), additional_headers={"api-key": "sk-azure"}) as ws:
        created = await recv(ws)
        assert "modalities" in created["session"]  # preview api-versions speak the beta dialect
        validate_beta(created)


# ---- session cap over the wire ----------------------------------------------------------------------


@pytest.mark.parametrize("ending", ["both", "close"])
async def test_session_cap_over_the_wire(server_factory: Callable[..., Any], ending: str) -> None:
    server = await server_factory(max_session=0.6, expiry_ending=ending)
    ws = await open_session(server)
    received = []
    with pytest.raises(ConnectionClosed):
        while True:
            received.append(await recv(ws, timeout=5))
    sentence = "Your session hit the maximum duration of 0.01 minutes."
    if ending == "both":
        assert received[-1]["error"]["code"] == "session_expired"
        assert received[-1]["error"]["message"] == sentence
    else:
        assert received == []
    assert ws.close_code == 1001 and ws.close_reason == sentence
    close = server.history.select(kind="close")[-1]
    assert (close["code"], close["by"], close["reason"]) == (1001, "server", sentence)


# ---- bad input over the wire ----------------------------------------------------------------------


async def test_bad_frames_get_error_events_and_the_session_survives(server: RealtimeServer) -> None:
    ws = await open_session(server, max_size=None)
    await text_turn(ws, "My name is Alice.")
    bad_frames: list[str | bytes] = [
        "{not json",
        "[1, 2, 3]",
        '"just a string"',
        json.dumps(
            {
                "type": "conversation.item.create",
                "event_id": "evt_1",
                "item": {"type": "message", "role": "robot"},
            }
        ),
        b"\x00\x01binary",
        json.dumps({"type": "input_audio_buffer.append", "audio": "x" * (17 * 1024 * 1024)}),
    ]
    for frame in bad_frames:
        await ws.send(frame)
        error = (await recv_until(ws, "error"))[-1]
        validate_ga(error)
        assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"
    assert "Alice" in await text_turn(ws, "What is my name?")  # nothing accepted was lost
    await ws.close()


async def test_a_frame_beyond_the_transport_limit_closes_1009(server: RealtimeServer) -> None:
    ws = await open_session(server, max_size=None)
    with pytest.raises(ConnectionClosed):
        await ws.send("x" * (65 * 1024 * 1024))  # the server may close while the frame is still going out
        await recv(ws, timeout=10)
    assert ws.close_code == 1009
    assert (await open_session(server)).state.name == "OPEN"  # the server itself is fine


# ---- history ----------------------------------------------------------------------------------------


async def test_history_records_handshakes_events_and_closes(
    tmp_path: Path, server_factory: Callable[..., Any]
) -> None:
    server = await server_factory(record_dir=str(tmp_path), pacing=0.0)
    ws = await open_session(server)
    await text_turn(ws, "hello")
    await ws.close(1000, "bye")
    await asyncio.sleep(0.1)
    history = server.history
    session_id = history.select(kind="session")[0]["session"]
    kinds = [r["kind"] for r in history.select(session=session_id)]
    assert kinds[0] == "session" and kinds[-1] == "close"
    inbound = [r["event"]["type"] for r in history.events(session_id, "in")]
    assert inbound == ["conversation.item.create", "response.create"]
    outbound = [r for r in history.events(session_id, "out")]
    assert outbound[0]["event"]["type"] == "session.created"
    delta = next(r["event"] for r in outbound if r["event"]["type"] == "response.output_audio.delta")
    assert "delta" not in delta and delta["audio_bytes"] > 0  # audio is elided to its size
    close = history.select(kind="close")[-1]
    assert (close["code"], close["by"]) == (1000, "client")
    assert history.select(key_id=close["key_id"])  # joinable by client identity
    times = [r["t"] for r in history.records]
    assert times == sorted(times)
    history.flush()
    assert history.path is not None
    on_disk = History.load(history.path)
    assert [r["seq"] for r in on_disk] == [r["seq"] for r in history.records]


# ---- the process, as a user runs it ------------------------------------------------------------------


async def test_official_sdk_against_rtsim_serve(serve_process: Callable[..., Any]) -> None:
    from openai import AsyncOpenAI

    _, url = serve_process()
    client = AsyncOpenAI(base_url=url, api_key="sk-test")
    async with client.realtime.connect(model="gpt-realtime") as conn:
        created = await conn.recv()
        assert created.type == "session.created"
        await conn.session.update(
            session={"type": "realtime", "instructions": "Be brief.", "output_modalities": ["audio"]}
        )
        assert (await conn.recv()).type == "session.updated"
        await conn.conversation.item.create(
            item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Say hi."}]}
        )
        await conn.response.create()
        seen: list[str] = []
        audio_bytes = 0
        async for event in conn:
            seen.append(event.type)
            if event.type == "response.output_audio.delta":
                audio_bytes += len(event.delta) * 3 // 4
            if event.type == "response.done":
                assert event.response.status == "completed"
                break
    assert "response.output_audio_transcript.done" in seen and audio_bytes > 4800


async def test_serve_process_closes_live_sessions_1001_on_sigterm(serve_process: Callable[..., Any]) -> None:
    proc, url = serve_process("--api-key", KEY, "--max-session", "600")
    ws_base = url.replace("http://", "ws://")
    async with connect(
        f"{ws_base}/realtime?model=gpt-realtime", additional_headers={"Authorization": f"Bearer {KEY}"}
    ) as ws:
        assert (await recv(ws))["session"]["expires_at"] > 0
        proc.send_signal(signal.SIGTERM)
        with pytest.raises(ConnectionClosed):
            await recv(ws, timeout=10)
    assert ws.close_code == 1001
    assert proc.wait(timeout=10) == 0


async def test_serve_processes_sharing_rtsim_secret_accept_each_others_tokens(
    serve_process: Callable[..., Any],
) -> None:
    env = {"RTSIM_SECRET": "a-shared-secret"}
    _, url_a = serve_process(env=env)
    _, url_b = serve_process(env=env)
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{url_a}/realtime/client_secrets", json={}, headers={"Authorization": f"Bearer {KEY}"}
        ) as response,
    ):
        token = (await response.json())["value"]
    async with connect(
        url_b.replace("http://", "ws://") + "/realtime?model=gpt-realtime",
        additional_headers={"Authorization": f"Bearer {token}"},
    ) as ws:
        assert (await recv(ws))["type"] == "session.created"


@pytest.fixture
async def many_clients() -> AsyncIterator[list[ClientConnection]]:
    clients: list[ClientConnection] = []
    yield clients
    for ws in clients:
        await ws.close()


async def test_concurrent_sessions_are_independent(
    server: RealtimeServer, many_clients: list[ClientConnection]
) -> None:
    names = ["Alice", "Bob", "Carol", "Dave", "Erin"]
    for _ in names:
        many_clients.append(await open_session(server))
    await asyncio.gather(
        *(text_turn(ws, f"My name is {n}.") for ws, n in zip(many_clients, names, strict=True))
    )
    answers = await asyncio.gather(*(text_turn(ws, "What is my name?") for ws in many_clients))
    assert [a.split()[-1].rstrip(".") for a in answers] == names
    assert len(server.carriers) == len(names)


async def test_the_clients_close_code_and_reason_are_recorded(server: RealtimeServer) -> None:
    ws = await open_session(server)
    await ws.close(1000, "rotated to a new session")
    await asyncio.sleep(0.2)
    close = server.history.select(kind="close")[-1]
    assert (close["code"], close["reason"], close["by"]) == (1000, "rotated to a new session", "client")


def test_the_in_memory_history_is_bounded_while_the_file_keeps_everything(tmp_path: Path) -> None:
    history = History(tmp_path, limit=100)
    for i in range(1000):
        history.record("event", dir="out", session="s", event={"type": "x", "n": i})
    assert 100 <= len(history.records) <= 125
    assert history.records[-1]["seq"] == 999 and history.records[-1]["event"]["n"] == 999
    assert [r["seq"] for r in history.select(since_seq=990)] == list(range(990, 1000))
    history.close()
    assert history.path is not None
    assert [r["seq"] for r in History.load(history.path)] == list(range(1000))
