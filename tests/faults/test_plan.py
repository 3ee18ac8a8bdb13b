"""Fault plans: the grammar and its errors, seeded stateless decisions, and plans hitting real sessions when
attached to a connection (header or query parameter) or to the server (`--chaos`)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from rtsim.simulator import plan
from rtsim.simulator.protocol import RealtimeError
from rtsim.simulator.server import RealtimeServer
from tests.support.faults import drain_until_closed, server_close
from tests.support.wire import KEY, open_session, recv, recv_until, ws_url

DELTA = "response.output_audio.delta"

# ---- grammar --------------------------------------------------------------------------------------------


def test_parse_entries_probabilities_timing_and_seed() -> None:
    parsed = plan.parse(
        "drop@2%:within=60; close@0.1:code=1011,reason=bye,at=5 ;"
        f"server-error:after_event={DELTA}#3; expire-tokens:usable_for=300; seed=42"
    )
    assert parsed.seed == 42
    drop, close, error, tokens = parsed.entries
    assert (drop.kind, drop.probability, drop.within, drop.at, drop.params) == ("drop", 0.02, 60, None, {})
    assert (close.probability, close.at, close.params) == (0.1, 5, {"code": 1011, "reason": "bye"})
    assert (error.probability, error.after_event) == (1.0, (DELTA, 3))
    assert (tokens.scope, tokens.params) == ("server", {"usable_for": 300})
    assert [e.kind for e in parsed.server_entries()] == ["expire-tokens"]
    assert plan.parse("").entries == () and plan.parse(" ; ").entries == ()


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("explode", "Unknown fault kind 'explode'"),
        ("drop@lots", "bad probability 'lots'"),
        ("drop@150%", "between 0 and 1"),
        ("drop@-0.5", "between 0 and 1"),
        ("close:code=999", "999"),
        ("close:volume=11", "volume"),
        ("drop:within", "expected key=value"),
        ("seed=abc", "seed must be an integer"),
        ("drop:at=soon", "at must be a number of seconds"),
        ("drop:within=-3", "within must be a number of seconds"),
        ("drop:after_event=response.output_audio.delta#x", "after_event must be TYPE#N"),
        ("drop:after_event=response.output_audio.delta#0", "after_event must be TYPE#N"),
        ("drop:after_event=response.audio.dleta#2", "Unknown server event type 'response.audio.dleta'"),
        ("rate-limit:within=10", "server-wide"),
        ("reject-connects@50%:status=503", "server-wide"),
    ],
)
def test_parse_errors_name_the_entry(text: str, fragment: str) -> None:
    with pytest.raises(RealtimeError) as info:
        plan.parse(f"latency:ms=5; {text}")
    assert fragment in info.value.message
    assert f"'{text}'" in info.value.message and info.value.code == "invalid_plan"


# ---- decisions ------------------------------------------------------------------------------------------


def test_decisions_are_reproducible_from_seed_and_session_id() -> None:
    text = "drop@50%:within=30; close@50%:code=1011,at=2; stall@50%:after_event=response.done#1"
    one, two = plan.parse(text + "; seed=7"), plan.parse(text + "; seed=7")
    ids = [f"sess_{i:04d}" for i in range(50)]
    assert [one.decisions(s) for s in ids] == [two.decisions(s) for s in ids]
    other_seed = plan.parse(text + "; seed=8")
    assert [one.decisions(s) for s in ids] != [other_seed.decisions(s) for s in ids]
    assert [one.decisions(s) for s in ids] == [one.decisions(s) for s in ids]  # stateless


def test_probability_and_within_are_honoured_over_many_sessions() -> None:
    parsed = plan.parse("drop@10%:within=60; close@100%:code=1012; stall@0%")
    hits = drops = 0
    delays = []
    for i in range(4000):
        decisions = parsed.decisions(f"sess_{i}")
        kinds = [d.entry.kind for d in decisions]
        assert "close" in kinds and "stall" not in kinds
        hits += 1
        for d in decisions:
            if d.entry.kind == "drop":
                drops += 1
                assert d.delay is not None
                delays.append(d.delay)
    assert hits == 4000
    assert 320 <= drops <= 480  # 10% of 4000, well within sampling noise
    assert all(0 <= d < 60 for d in delays) and 20 < sum(delays) / len(delays) < 40  # uniform in [0, 60)


# ---- plans on real sessions -----------------------------------------------------------------------------


async def test_plan_attached_by_header_hits_the_session(server: RealtimeServer) -> None:
    ws = await connect(
        ws_url(server),
        additional_headers={"Authorization": f"Bearer {KEY}", "X-Rtsim-Chaos": "close:code=1013,reason=plan"},
    )
    received = await drain_until_closed(ws)
    assert [e["type"] for e in received] == ["session.created"]  # the session opens, then the fault
    assert (ws.close_code, ws.close_reason) == (1013, "plan")
    (fault,) = server.history.select(kind="fault")
    assert (fault["route"], fault["session"]) == ("plan:connection", received[0]["session"]["id"])


async def test_plan_attached_by_query_parameter_hits_the_session(server: RealtimeServer) -> None:
    chaos = f"drop:after_event={DELTA}%232"  # '#' escaped in the URL
    ws = await connect(
        ws_url(server, f"/v1/realtime?model=gpt-realtime&rtsim_chaos={chaos}"),
        additional_headers={"Authorization": f"Bearer {KEY}"},
    )
    assert (await recv(ws))["type"] == "session.created"
    await ws.send(json.dumps({"type": "response.create"}))
    received = await drain_until_closed(ws)
    assert [e["type"] for e in received].count(DELTA) == 2
    assert ws.close_code == 1006 and ws.protocol.close_rcvd is None
    assert server.history.select(kind="fault")[0]["route"] == "plan:connection"


async def test_a_timed_plan_entry_fires_on_time(server: RealtimeServer) -> None:
    started = time.monotonic()
    ws = await connect(
        ws_url(server), additional_headers={"Authorization": f"Bearer {KEY}", "X-Rtsim-Chaos": "drop:at=0.3"}
    )
    assert (await recv(ws))["type"] == "session.created"
    with pytest.raises(ConnectionClosed):
        await recv(ws, timeout=3)
    assert 0.25 <= time.monotonic() - started < 2.0 and ws.close_code == 1006


async def test_a_timed_entry_does_not_fire_after_the_session_ended(server: RealtimeServer) -> None:
    ws = await connect(
        ws_url(server), additional_headers={"Authorization": f"Bearer {KEY}", "X-Rtsim-Chaos": "drop:at=0.2"}
    )
    await recv(ws)
    await ws.close()
    await asyncio.sleep(0.3)
    assert server.history.select(kind="fault") == []


@pytest.mark.parametrize(
    ("chaos", "fragment"),
    [("drop@nope", "bad probability"), ("rate-limit", "cannot be attached to a connection")],
)
async def test_a_bad_attached_plan_is_an_error_event_and_the_session_goes_on(
    server: RealtimeServer, chaos: str, fragment: str
) -> None:
    async with connect(
        ws_url(server), additional_headers={"Authorization": f"Bearer {KEY}", "X-Rtsim-Chaos": chaos}
    ) as ws:
        assert (await recv(ws))["type"] == "session.created"
        error = await recv(ws)
        assert error["type"] == "error" and error["error"]["code"] == "invalid_plan"
        assert fragment in error["error"]["message"]
        await ws.send(json.dumps({"type": "response.create"}))
        assert (await recv_until(ws, "response.done"))[-1]["response"]["status"] == "completed"
    assert server.history.select(kind="fault") == []


async def test_server_chaos_plan_hits_every_session(server_factory: Callable[..., Any]) -> None:
    server = await server_factory(pacing=0.0, chaos="close:code=1012,reason=restart")
    for _ in range(2):
        ws = await open_session(server)
        await drain_until_closed(ws)
        assert (ws.close_code, ws.close_reason) == (1012, "restart")
    faults = server.history.select(kind="fault")
    assert len(faults) == 2 and {f["route"] for f in faults} == {"plan:server"}


async def test_server_chaos_plan_with_server_faults(server_factory: Callable[..., Any]) -> None:
    server = await server_factory(pacing=0.0, chaos="reject-connects:status=503,count=1; rate-limit:at=0.2")
    with pytest.raises(InvalidStatus) as info:
        await open_session(server)
    assert info.value.response.status_code == 503
    ws = await open_session(server)
    event = await recv(ws, timeout=3)  # 0.2 s after the start: the rate limit
    assert event["type"] == "rate_limits.updated" and event["rate_limits"][0]["remaining"] == 0
    routes = [(f["fault"], f["route"]) for f in server.history.select(kind="fault")]
    assert routes == [("reject-connects", "plan:server"), ("rate-limit", "plan:server")]
    await ws.close()


async def test_a_server_plan_decides_the_same_on_every_server_with_the_seed(
    server_factory: Callable[..., Any],
) -> None:
    chaos = "close@50%:code=1013; seed=11"
    outcomes = []
    for _ in range(2):
        server = await server_factory(pacing=0.0, chaos=chaos, seed=3)
        clients = [await open_session(server) for _ in range(8)]
        await asyncio.sleep(0.3)
        closed = [ws.close_code == 1013 for ws in clients]
        outcomes.append(closed)
        assert len(server.history.select(kind="fault")) == sum(closed)
        for ws in clients:
            await ws.close()
    assert outcomes[0] == outcomes[1]
    assert 0 < sum(outcomes[0]) < 8


async def test_a_plan_with_latency_for_every_session(server_factory: Callable[..., Any]) -> None:
    server = await server_factory(pacing=0.0, chaos="latency:ms=250")
    ws = await open_session(server)
    sid = server.history.select(kind="session")[-1]["session"]
    started = time.monotonic()
    await ws.send(json.dumps({"type": "response.create"}))
    await recv(ws, timeout=3)
    assert time.monotonic() - started >= 0.2
    await recv_until(ws, "response.done")
    await ws.close()
    await server_close(server, sid)
