"""The fault catalogue, each fault observed from a real `websockets` client on loopback, as specified.

Faults are injected through the control API (`POST /_rtsim/faults`), as a user would; what is asserted is what
the client sees on the wire, then what the history recorded.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, ConnectionClosedError, InvalidStatus
from websockets.protocol import State

from rtsim.simulator.server import RealtimeServer
from rtsim.simulator.tokens import key_id
from tests.support.engine import validate_ga
from tests.support.faults import (
    OTHER_KEY,
    audio_response,
    connect_with,
    drain_until_closed,
    http,
    inject,
    mint,
    server_close,
    session_id_of,
    silent_for,
)
from tests.support.wire import KEY, open_session, recv, recv_until, text_turn

KEY_AUTH = {"Authorization": f"Bearer {KEY}"}


async def test_drop_is_an_abnormal_closure_with_no_close_frame(server: RealtimeServer) -> None:
    ws = await open_session(server)
    sid = await session_id_of(ws, server)
    outcome = await inject(server, "drop", target={"session": sid})
    assert outcome["applied_to"] == [sid]
    with pytest.raises(ConnectionClosedError):
        await recv(ws)
    assert ws.close_code == 1006
    assert ws.protocol.close_rcvd is None  # no close frame came
    assert str(ws.protocol.parser_exc) == "unexpected end of stream"  # the TCP stream ended between frames
    close = await server_close(server, sid)
    assert (close["code"], close["by"], close["fault"]) == (1006, "server", "drop")


async def test_drop_mid_frame_leaves_a_partial_frame_then_the_teardown(server: RealtimeServer) -> None:
    ws = await open_session(server)
    sid = await session_id_of(ws, server)
    await inject(server, "drop", {"mid_frame": True}, {"session": sid})
    with pytest.raises(ConnectionClosedError):
        await recv(ws)
    assert ws.close_code == 1006 and ws.protocol.close_rcvd is None
    # The frame header announced more payload than ever came.
    assert "expected 1000 bytes" in str(ws.protocol.parser_exc)
    assert (await server_close(server, sid))["fault"] == "drop-mid-frame"


# ---- close ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("code", [1000, 1001, 1008, 1011, 1012, 1013, 3000])
async def test_close_sends_a_close_frame_with_the_code_and_reason(server: RealtimeServer, code: int) -> None:
    ws = await open_session(server)
    sid = await session_id_of(ws, server)
    await inject(server, "close", {"code": code, "reason": f"closing with {code}"}, {"session": sid})
    assert await drain_until_closed(ws) == []
    assert ws.protocol.close_rcvd is not None
    assert (ws.protocol.close_rcvd.code, ws.protocol.close_rcvd.reason) == (code, f"closing with {code}")
    close = await server_close(server, sid)
    assert (close["code"], close["reason"], close["by"]) == (code, f"closing with {code}", "server")


async def test_close_3000_after_an_error_event(server: RealtimeServer) -> None:
    ws = await open_session(server)
    params = {
        "code": 3000,
        "reason": "invalid_request_error.invalid_api_key",
        "error": True,
        "error_type": "invalid_request_error",
        "error_code": "invalid_api_key",
        "error_message": "Incorrect API key provided.",
    }
    await inject(server, "close", params)
    received = await drain_until_closed(ws)
    assert [e["type"] for e in received] == ["error"]
    validate_ga(received[0])
    assert received[0]["error"]["code"] == "invalid_api_key"
    assert received[0]["error"]["type"] == "invalid_request_error"
    assert ws.close_code == 3000 and ws.close_reason == "invalid_request_error.invalid_api_key"


async def test_close_comes_before_what_was_still_queued(server_factory: Callable[..., Any]) -> None:
    """A close fault ends the connection now: events still queued (here, held by latency) never go out."""
    server = await server_factory(pacing=0.0)
    ws = await open_session(server)
    await inject(server, "latency", {"ms": 1500})
    await ws.send(audio_response())
    await asyncio.sleep(0.1)
    await inject(server, "close", {"code": 1011, "reason": "internal"})
    started = time.monotonic()
    assert await drain_until_closed(ws) == []
    assert time.monotonic() - started < 1.2
    assert ws.close_code == 1011


# ---- expire-session -------------------------------------------------------------------------------------


@pytest.mark.parametrize("ending", ["both", "error", "close"])
async def test_expire_session_endings(server: RealtimeServer, ending: str) -> None:
    ws = await open_session(server)
    await inject(server, "expire-session", {"ending": ending})
    received = await drain_until_closed(ws)
    sentence = "Your session hit the maximum duration of 60 minutes."
    if ending in ("both", "error"):
        assert [e["type"] for e in received] == ["error"]
        validate_ga(received[0])
        assert (received[0]["error"]["code"], received[0]["error"]["message"]) == (
            "session_expired",
            sentence,
        )
    else:
        assert received == []
    if ending in ("both", "close"):
        assert (ws.close_code, ws.close_reason) == (1001, sentence)
    else:
        assert ws.protocol.close_rcvd is not None and ws.close_code != 1001


# ---- expire-tokens --------------------------------------------------------------------------------------


async def test_expire_tokens_of_a_key(server: RealtimeServer) -> None:
    first, second = (await mint(server))["value"], (await mint(server))["value"]
    others = (await mint(server, OTHER_KEY))["value"]
    live = await connect_with(server, first)
    assert (await recv(live))["type"] == "session.created"
    outcome = await inject(server, "expire-tokens", target={"key": KEY})
    assert key_id(KEY) in outcome["result"]
    for token in (first, second):
        with pytest.raises(InvalidStatus) as info:
            await connect_with(server, token)
        assert info.value.response.status_code == 401
        assert json.loads(info.value.response.body)["error"]["code"] == "invalid_api_key"
    async with await connect_with(server, others) as ws:  # another key's tokens still work
        assert (await recv(ws))["type"] == "session.created"
    async with await connect_with(server, (await mint(server))["value"]) as ws:  # so do new ones
        assert (await recv(ws))["type"] == "session.created"
    assert "Echo this" in await text_turn(live, "Echo this.")  # a session outlives its token
    await live.close()


async def test_expire_one_token(server: RealtimeServer) -> None:
    doomed, spared = (await mint(server))["value"], (await mint(server))["value"]
    token_id = server.history.select(kind="token")[0]["token_id"]
    await inject(server, "expire-tokens", {"token_id": token_id})
    with pytest.raises(InvalidStatus) as info:
        await connect_with(server, doomed)
    assert info.value.response.status_code == 401
    refused = server.history.select(kind="handshake")[-1]
    assert (refused["accepted"], refused["reason"]) == (False, "token_revoked")
    async with await connect_with(server, spared) as ws:
        assert (await recv(ws))["type"] == "session.created"


async def test_tokens_that_say_hours_but_stop_working_early(server: RealtimeServer) -> None:
    await inject(server, "expire-tokens", {"usable_for": 0.6})
    ga = await mint(server)
    beta = await mint(server, path="/v1/realtime/sessions")
    now = time.time()
    assert ga["expires_at"] - now > 7000  # it says two hours
    assert beta["client_secret"]["expires_at"] - now > 7000
    async with await connect_with(server, ga["value"]) as ws:  # and works at first
        assert (await recv(ws))["type"] == "session.created"
    await asyncio.sleep(0.7)
    for token in (ga["value"], beta["client_secret"]["value"]):
        with pytest.raises(InvalidStatus) as info:
            await connect_with(server, token)
        assert info.value.response.status_code == 401
    assert server.history.select(kind="handshake")[-1]["reason"] == "token_expired"


# ---- reject-connects ------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [401, 403, 429, 500, 503])
async def test_reject_connects_with_an_http_status(server: RealtimeServer, status: int) -> None:
    await inject(server, "reject-connects", {"status": status, "count": 2})
    for _ in range(2):
        with pytest.raises(InvalidStatus) as info:
            await connect_with(server, KEY)
        response = info.value.response
        assert response.status_code == status
        assert json.loads(response.body)["error"]["message"]
        if status == 429:
            assert float(response.headers["Retry-After"]) > 0  # a 429 always says when to come back
    refused = server.history.select(kind="handshake")[-1]
    assert (refused["accepted"], refused["status"], refused["reason"]) == (
        False,
        status,
        "fault:reject-connects",
    )
    ws = await open_session(server)  # the third is accepted
    await ws.close()


async def test_reject_connects_429_with_a_given_retry_after(server: RealtimeServer) -> None:
    await inject(server, "reject-connects", {"status": 429, "retry_after": 7})
    with pytest.raises(InvalidStatus) as info:
        await connect_with(server, KEY)
    assert info.value.response.headers["Retry-After"] == "7"
    assert json.loads(info.value.response.body)["error"]["code"] == "rate_limit_exceeded"


async def test_reject_connects_for_one_key_only(server: RealtimeServer) -> None:
    await inject(server, "reject-connects", {"status": 403}, {"key": OTHER_KEY})
    ws = await open_session(server, KEY)  # not this key
    with pytest.raises(InvalidStatus) as info:
        await connect_with(server, OTHER_KEY)
    assert info.value.response.status_code == 403
    await ws.close()


async def test_accept_then_close_1008_loop(server: RealtimeServer) -> None:
    await inject(server, "reject-connects", {"close_code": 1008, "reason": "policy violation", "count": 2})
    for _ in range(2):
        ws = await connect_with(server, KEY)  # the upgrade succeeds...
        assert await drain_until_closed(ws) == []  # ...then a close, before any session.created
        assert ws.protocol.close_rcvd is not None
        assert (ws.close_code, ws.close_reason) == (1008, "policy violation")
    ws = await open_session(server)
    await ws.close()
    handshakes = server.history.select(kind="handshake")
    assert [h["reason"] for h in handshakes] == ["fault:reject-connects", "fault:reject-connects", None]
    assert all(h["accepted"] for h in handshakes)


# ---- stall ----------------------------------------------------------------------------------------------


async def test_stall_is_half_open(server: RealtimeServer) -> None:
    ws = await open_session(server, ping_interval=None)
    sid = await session_id_of(ws, server)
    await inject(server, "stall", target={"session": sid})
    sent_before = len(list(server.history.events(sid, "out")))
    pong = await ws.ping()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(pong, 1.0)  # no pong: only a client's own liveness check can tell
    await ws.send(audio_response())
    assert await silent_for(ws, 0.5)  # nothing is sent
    assert ws.state is State.OPEN and sid in server.carriers  # and the socket stays open
    assert len(list(server.history.events(sid, "out"))) == sent_before
    _, sessions, _ = await http(server, "GET", "/_rtsim/sessions")
    assert [s["stalled"] for s in sessions["sessions"]] == [True]
    await inject(server, "drop", target={"session": sid})


async def test_stall_for_a_while_then_the_queue_flows(server: RealtimeServer) -> None:
    ws = await open_session(server, ping_interval=None)
    await inject(server, "stall", {"seconds": 0.4})
    started = time.monotonic()
    pong = await ws.ping()
    await ws.send(audio_response())
    await asyncio.wait_for(pong, 3.0)
    assert time.monotonic() - started >= 0.35
    assert (await recv_until(ws, "response.done"))[-1]["response"]["status"] == "completed"
    await ws.close()


async def test_a_stalled_session_does_not_hold_up_shutdown(server_factory: Callable[..., Any]) -> None:
    server = await server_factory(pacing=0.0)
    ws = await open_session(server, ping_interval=None)
    await inject(server, "stall")
    started = time.monotonic()
    await server.stop()
    assert time.monotonic() - started < 2.0
    with pytest.raises(ConnectionClosed):
        await recv(ws)


# ---- latency, jitter, slow first delta ------------------------------------------------------------------


def item_create(text: str) -> str:
    return json.dumps(
        {
            "type": "conversation.item.create",
            "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]},
        }
    )


async def round_trips(ws: ClientConnection, n: int) -> list[float]:
    """Seconds from sending an item to receiving its conversation.item.added, n times in turn."""
    delays = []
    for i in range(n):
        started = time.monotonic()
        await ws.send(item_create(f"item {i}"))
        await recv_until(ws, "conversation.item.done", timeout=5)
        delays.append(time.monotonic() - started)
    return delays


async def test_latency_and_jitter_on_server_events(server: RealtimeServer) -> None:
    ws = await open_session(server)
    baseline = await round_trips(ws, 2)
    assert max(baseline) < 0.15
    await inject(server, "latency", {"ms": 300, "jitter_ms": 100})
    delays = await round_trips(ws, 5)
    assert all(0.19 <= d < 1.0 for d in delays), delays
    assert max(delays) - min(delays) > 0.01, delays  # jitter: not all alike
    await inject(server, "latency", {"ms": 0})
    assert max(await round_trips(ws, 2)) < 0.15
    await ws.close()


async def test_slow_first_delta(server: RealtimeServer) -> None:
    ws = await open_session(server)

    async def first_delta_wait() -> float:
        await ws.send(audio_response())
        await recv_until(ws, "response.created")
        started = time.monotonic()
        events = await recv_until(ws, "response.output_audio.delta")
        waited = time.monotonic() - started
        await recv_until(ws, "response.done")
        assert events[-1]["type"] == "response.output_audio.delta"
        return waited

    await inject(server, "slow-first-delta", {"ms": 600})
    assert await first_delta_wait() >= 0.55
    assert await first_delta_wait() < 0.3  # only the next response's first delta
    await ws.close()


# ---- server-error and benign errors ---------------------------------------------------------------------


async def test_server_error_mid_response(server_factory: Callable[..., Any]) -> None:
    server = await server_factory(pacing=1.0)  # real-time audio: the response is still going when it hits
    ws = await open_session(server)
    await ws.send(item_create("Please tell me a fairly long story about the sea and the ships on it."))
    await ws.send(audio_response())
    await recv_until(ws, "response.output_audio.delta")
    await inject(server, "server-error")
    events = await recv_until(ws, "response.done")
    errors = [e for e in events if e["type"] == "error"]
    assert len(errors) == 1
    validate_ga(errors[0])
    assert errors[0]["error"]["type"] == "server_error"
    done = events[-1]
    validate_ga(done)
    assert done["response"]["status"] == "failed"
    assert done["response"]["status_details"]["error"]["type"] == "server_error"
    assert events.index(errors[0]) < len(events) - 1  # the error comes first, then response.done
    assert ws.state is State.OPEN
    await ws.close()


async def server_error_armed_before_a_response(server: RealtimeServer) -> None:
    ws = await open_session(server)
    await inject(server, "server-error")
    await ws.send(item_create("Tell me about the weather at sea today."))
    await ws.send(audio_response())
    events = await recv_until(ws, "response.done")
    types = [e["type"] for e in events]
    assert "response.output_audio.delta" in types  # it had begun
    error = next(e for e in events if e["type"] == "error")
    assert error["error"]["type"] == "server_error"
    assert types.index("error") > types.index("response.output_audio.delta")
    assert events[-1]["response"]["status"] == "failed"
    await ws.send(audio_response())
    assert (await recv_until(ws, "response.done"))[-1]["response"]["status"] == "completed"  # once only
    await ws.close()


async def test_server_error_armed_before_a_response_hits_the_next_one(
    server_factory: Callable[..., Any],
) -> None:
    await server_error_armed_before_a_response(await server_factory(pacing=0.1))


async def test_server_error_armed_at_pacing_zero(server: RealtimeServer) -> None:
    await server_error_armed_before_a_response(server)


async def test_server_error_armed_hits_a_text_response(server: RealtimeServer) -> None:
    ws = await open_session(server)
    await inject(server, "server-error")
    await ws.send(json.dumps({"type": "response.create", "response": {"output_modalities": ["text"]}}))
    events = await recv_until(ws, "response.done")
    assert "response.output_text.delta" in [e["type"] for e in events]
    assert [e["error"]["type"] for e in events if e["type"] == "error"] == ["server_error"]
    assert events[-1]["response"]["status"] == "failed"
    await ws.close()


@pytest.mark.parametrize(
    "code",
    [
        "response_cancel_not_active",
        "conversation_already_has_active_response",
        "input_audio_buffer_commit_empty",
        "item_not_found",
    ],
)
async def test_benign_error_keeps_the_session_usable(server: RealtimeServer, code: str) -> None:
    ws = await open_session(server)
    await inject(server, "benign-error", {"code": code})
    error = await recv(ws)
    validate_ga(error)
    assert error["type"] == "error" and error["error"]["code"] == code
    assert error["error"]["type"] == "invalid_request_error"
    assert "My name is Ann" in await text_turn(ws, "My name is Ann.")
    assert ws.state is State.OPEN
    await ws.close()


# ---- rate limit -----------------------------------------------------------------------------------------


async def test_rate_limit(server: RealtimeServer) -> None:
    ws = await open_session(server)
    await inject(server, "rate-limit", {"seconds": 30, "retry_after": 12})
    event = await recv(ws)
    validate_ga(event)
    assert event["type"] == "rate_limits.updated"
    assert event["rate_limits"] and all(limit["remaining"] == 0 for limit in event["rate_limits"])
    for path in ("/v1/realtime/client_secrets", "/v1/realtime/sessions"):
        status, body, headers = await http_with_key(server, path)
        assert status == 429
        assert body["error"]["code"] == "rate_limit_exceeded"
        assert headers["Retry-After"] == "12"  # as asked


async def test_rate_limit_retry_after_defaults_to_what_is_left(server: RealtimeServer) -> None:
    await inject(server, "rate-limit", {"seconds": 20})
    status, _, headers = await http_with_key(server, "/v1/realtime/client_secrets")
    assert status == 429 and 19 <= int(headers["Retry-After"]) <= 20


async def test_rate_limit_ends(server: RealtimeServer) -> None:
    await inject(server, "rate-limit", {"seconds": 0.3})
    assert (await http_with_key(server, "/v1/realtime/client_secrets"))[0] == 429
    await asyncio.sleep(0.35)
    assert (await http_with_key(server, "/v1/realtime/client_secrets"))[0] == 200


async def http_with_key(server: RealtimeServer, path: str) -> tuple[int, Any, dict[str, str]]:
    async with (
        aiohttp.ClientSession() as client,
        client.post(
            f"http://127.0.0.1:{server.port}{path}", json={}, headers={"Authorization": f"Bearer {KEY}"}
        ) as response,
    ):
        return response.status, await response.json(), dict(response.headers)


# ---- idle timeout, keep-alive, concurrent sessions -----------------------------------------------------


async def wait_for_idle_close(ws: ClientConnection) -> tuple[float, list[dict[str, Any]]]:
    started = time.monotonic()
    received = await drain_until_closed(ws)
    return time.monotonic() - started, received


async def test_idle_timeout_fires_after_inactivity(server_factory: Callable[..., Any]) -> None:
    server = await server_factory(pacing=0.0, idle_timeout=0.4)
    ws = await open_session(server)
    waited, received = await wait_for_idle_close(ws)
    assert 0.3 <= waited < 2.0
    assert [e["error"]["code"] for e in received] == ["session_idle_timeout"]
    validate_ga(received[0])
    assert ws.close_code == 1000


async def test_activity_resets_the_idle_timeout(server_factory: Callable[..., Any]) -> None:
    server = await server_factory(pacing=0.0, idle_timeout=0.6)
    ws = await open_session(server)
    for i in range(4):  # 0.8 s of life, never 0.6 s idle
        await asyncio.sleep(0.2)
        await ws.send(item_create(f"still here {i}"))
    await recv_until(ws, "conversation.item.done")
    assert ws.state is State.OPEN
    waited, received = await wait_for_idle_close(ws)
    assert waited < 2.0 and received[-1]["error"]["code"] == "session_idle_timeout"


async def test_keep_alive_resets_the_idle_timeout(server_factory: Callable[..., Any]) -> None:
    server = await server_factory(pacing=0.0, idle_timeout=0.6)
    ws = await open_session(server)
    sid = await session_id_of(ws, server)
    for _ in range(4):  # 0.8 s of life, never 0.6 s idle
        await asyncio.sleep(0.2)
        status, body, _ = await http(
            server, "POST", "/v1/streaming.keep_alive", {"session_id": sid}, headers=KEY_AUTH
        )
        assert (status, body) == (200, {"session_id": sid, "status": "ok"})
    assert ws.state is State.OPEN and await silent_for(ws, 0.1)
    waited, _ = await wait_for_idle_close(ws)
    assert waited < 2.0
    assert len(server.history.select(kind="keep_alive", session=sid)) == 4
    status, body, _ = await http(
        server, "POST", "/v1/streaming.keep_alive", {"session_id": sid}, headers=KEY_AUTH
    )
    assert status == 404 and sid in body["error"]["message"]  # closed now


async def test_keep_alive_bad_requests(server: RealtimeServer) -> None:
    for raw, status in ((b"{nope", 400), (b"{}", 400), (b'{"session_id": 5}', 400), (b"[]", 400)):
        got, body, _ = await http(server, "POST", "/v1/streaming.keep_alive", raw=raw, headers=KEY_AUTH)
        assert got == status and body["error"]["message"], (raw, body)


async def test_idle_timeout_fault(server: RealtimeServer) -> None:
    ws = await open_session(server)
    await inject(server, "idle-timeout", {"seconds": 0.3})
    waited, received = await wait_for_idle_close(ws)
    assert waited < 2.0 and received[-1]["error"]["code"] == "session_idle_timeout"
    now = await open_session(server)
    await inject(server, "idle-timeout", {"seconds": 0})  # 0: it fires now
    waited, received = await wait_for_idle_close(now)
    assert waited < 0.5 and received[-1]["error"]["code"] == "session_idle_timeout"


async def test_concurrent_session_limit_names_the_open_sessions(server_factory: Callable[..., Any]) -> None:
    server = await server_factory(pacing=0.0, max_sessions_per_key=2)
    first, second = await open_session(server), await open_session(server)
    open_ids = [s["session"] for s in server.history.select(kind="session")]
    with pytest.raises(InvalidStatus) as info:
        await connect_with(server, KEY)
    assert info.value.response.status_code == 429
    error = json.loads(info.value.response.body)["error"]
    assert error["code"] == "concurrent_session_limit"
    assert all(sid in error["message"] for sid in open_ids)
    other = await open_session(server, OTHER_KEY)  # per key
    await first.close()
    await server_close(server, open_ids[0])
    third = await open_session(server)  # room again
    for ws in (second, other, third):
        await ws.close()


async def test_a_client_that_abandons_a_stalled_socket_ends_its_session(server: RealtimeServer) -> None:
    ws = await open_session(server)
    await inject(server, "stall")
    ws.transport.abort()  # the client gives up on the silent socket (its FIN/RST reaches the kernel only)
    for _ in range(40):
        if not server.carriers:
            break
        await asyncio.sleep(0.1)
    assert not server.carriers  # noticed although reading was paused
    close = server.history.select(kind="close")[-1]
    assert (close["by"], close["fault"]) == ("client", "abandoned-during-stall")
