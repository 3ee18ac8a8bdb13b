"""Every number from outside is finite and in range: NaN, Infinity and overflow are refused where they enter
(fault plans, session.update, client_secrets, the control API), with the real error shape, and nothing
non-finite ever reaches the event loop or a session."""

from __future__ import annotations

import asyncio
import json
import math

import aiohttp
import pytest
from websockets.asyncio.client import connect
from websockets.protocol import State

from rtsim.simulator import plan
from rtsim.simulator.protocol import RealtimeError, loads_strict
from rtsim.simulator.schema import Int, Num, check
from rtsim.simulator.server import RealtimeServer
from tests.support.faults import http
from tests.support.wire import KEY, open_session, recv, recv_until, text_turn, ws_url

AUTH = {"Authorization": f"Bearer {KEY}"}
NAN_VAD = (
    '{"type":"session.update","session":{"type":"realtime","audio":{"input":'
    '{"turn_detection":{"type":"server_vad","threshold":NaN}}}}}'
)


def scheduled_whens() -> list[float]:
    return [handle.when() for handle in asyncio.get_running_loop()._scheduled]  # type: ignore[attr-defined]


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, 10**400])
def test_num_refuses_what_is_not_a_finite_number(value: float) -> None:
    with pytest.raises(RealtimeError) as refused:
        check(Num(0.0, 1.0), value, "threshold")
    assert refused.value.param == "threshold" and refused.value.code == "invalid_value"
    with pytest.raises(RealtimeError):
        check(Int(0), value, "count")  # not an integer either


@pytest.mark.parametrize(
    "text",
    ["drop:at=nan", "drop:within=inf", "drop:at=1e999", "stall:seconds=nan", "drop:at=90000"],
)
def test_a_plan_with_a_non_finite_or_huge_delay_is_refused(text: str) -> None:
    with pytest.raises(RealtimeError) as refused:
        plan.parse(text)
    assert refused.value.code == "invalid_plan"


@pytest.mark.parametrize("text", ["NaN", "[Infinity]", '{"a": -Infinity}', "1e400", '"\\ud800"'])
def test_strict_json_refuses_what_rfc_8259_does(text: str) -> None:
    with pytest.raises(ValueError):
        loads_strict(text)


async def test_a_nan_plan_is_an_error_event_and_no_nan_timer_reaches_the_loop(server: RealtimeServer) -> None:
    url = ws_url(server, "/v1/realtime?model=gpt-realtime&rtsim_chaos=drop:at%3Dnan")
    sockets = [await connect(url, additional_headers=AUTH) for _ in range(5)]
    for ws in sockets:
        events = [await recv(ws), await recv(ws)]
        assert events[0]["type"] == "session.created"
        assert events[1]["type"] == "error" and events[1]["error"]["code"] == "invalid_plan"
    assert not [when for when in scheduled_whens() if not math.isfinite(when)]
    assert await text_turn(sockets[0], "still served?")  # the session goes on, and so does the loop
    for ws in sockets:
        await ws.close()


async def test_a_nan_vad_threshold_is_an_error_event_not_a_dead_session(server: RealtimeServer) -> None:
    ws = await open_session(server)
    await ws.send(NAN_VAD)
    error = await recv(ws)
    assert error["type"] == "error" and error["error"]["code"] == "invalid_json"
    await ws.send(
        json.dumps({"type": "session.update", "session": {"type": "realtime", "instructions": "hi"}})
    )
    assert (await recv_until(ws, "session.updated"))[-1]["session"]["instructions"] == "hi"
    assert ws.state is State.OPEN
    await ws.close()


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "1e999"])
async def test_no_token_can_be_minted_with_a_non_finite_config(server: RealtimeServer, literal: str) -> None:
    vad = {"type": "server_vad", "threshold": "THRESHOLD"}
    body = {"session": {"type": "realtime", "audio": {"input": {"turn_detection": vad}}}}
    raw = json.dumps(body).replace('"THRESHOLD"', literal).encode()
    status, reply, _ = await http(server, "POST", "/v1/realtime/client_secrets", raw=raw, headers=AUTH)
    assert status == 400 and "parse the JSON body" in reply["error"]["message"]
    assert not server.history.select(kind="token")


async def test_deeply_nested_tool_parameters_are_a_400_not_a_500(server: RealtimeServer) -> None:
    deep = '{"type":"object","properties":{"x":' * 900 + '{"type":"string"}' + "}}" * 900
    tool = '{"type":"function","name":"f","parameters":' + deep + "}"
    raw = '{"session":{"type":"realtime","tools":[' + tool + "]}}"
    status, reply, _ = await http(
        server, "POST", "/v1/realtime/client_secrets", raw=raw.encode(), headers=AUTH
    )
    assert status == 400 and reply["error"]["type"] == "invalid_request_error"


async def test_a_non_ascii_token_signature_is_a_401(server: RealtimeServer) -> None:
    status, minted, _ = await http(
        server, "POST", "/v1/realtime/client_secrets", {"session": {"type": "realtime"}}, headers=AUTH
    )
    assert status == 200
    bad = minted["value"][:-1] + "é"
    async with aiohttp.ClientSession() as client:
        async with client.post(
            f"http://127.0.0.1:{server.port}/v1/realtime/calls",
            data=b"v=0\r\n",
            headers={
                "Authorization": f"Bearer {bad}".encode().decode("latin-1"),
                "Content-Type": "application/sdp",
            },
        ) as response:
            assert response.status == 401
            assert (await response.json())["error"]["code"] == "invalid_api_key"


async def test_a_non_utf8_sdp_offer_is_a_400(server: RealtimeServer) -> None:
    async with aiohttp.ClientSession() as client:
        async with client.post(
            f"http://127.0.0.1:{server.port}/v1/realtime/calls",
            data=b"v=0\r\n\xff\xfe\xfd broken",
            headers={**AUTH, "Content-Type": "application/sdp"},
        ) as response:
            assert response.status == 400
            assert (await response.json())["error"]["code"] == "invalid_offer"


@pytest.mark.parametrize(
    "raw",
    [
        b'{"kind": "reject-connects", "params": {"status": 429, "retry_after": NaN}}',
        b'{"kind": "rate-limit", "params": {"seconds": Infinity}}',
        b'{"kind": "rate-limit", "params": {"seconds": 1e999}}',
        b'{"kind": "rate-limit", "params": {"seconds": 1e12}}',
        b'{"kind": "stall", "params": {}, "when": {"after_ms": 1e300}}',
        b'{"kind": "close", "params": {"code": 1000, "reason": "\\ud800"}}',
        b'{"kind": "close", "target": {"key": "sk-\\udc00"}}',
    ],
)
async def test_the_control_api_refuses_non_finite_numbers_and_lone_surrogates(
    server: RealtimeServer, raw: bytes
) -> None:
    status, body, _ = await http(server, "POST", "/_rtsim/faults", raw=raw)
    assert status == 400 and body["error"]["message"]
    # and the server is unharmed: minting and handshakes still work
    status, minted, _ = await http(
        server, "POST", "/v1/realtime/client_secrets", {"session": {"type": "realtime"}}, headers=AUTH
    )
    assert status == 200 and minted["value"].startswith("ek_")
    ws = await open_session(server)
    await ws.close()
