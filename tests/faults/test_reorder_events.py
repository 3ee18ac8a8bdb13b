"""`reorder-events`: the next N server events delivered in another order, over a real WebSocket — reached
through the control API, the generated `rtsim fault` flags and a fault plan; reproducible from the seed."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
from websockets.asyncio.client import connect

from rtsim.scenarios.checkers import RunView, no_duplicate_responses, no_lost_turns
from rtsim.scenarios.spec import UserTurn
from rtsim.simulator import cli
from rtsim.simulator.faults.reorder_events import shuffled
from rtsim.simulator.server import RealtimeServer
from tests.support.faults import http, inject, session_id_of
from tests.support.wire import KEY, ask, open_session, receive_for, recv, ws_url

STORY = "Tell me a story."


def produced_order(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The order the engine produced them in: a session's event ids count up in fixed-width hex."""
    return sorted(events, key=lambda e: e["event_id"])


async def reordered_turn(
    server: RealtimeServer, count: int | None = None
) -> tuple[str, list[dict[str, Any]]]:
    ws = await open_session(server)
    sid = await session_id_of(ws, server)
    await inject(server, "reorder-events", {} if count is None else {"count": count}, {"session": sid})
    await ask(ws, STORY)
    received = await receive_for(ws, 0.5)
    await ws.close()
    return sid, received


async def test_the_next_n_events_arrive_in_another_order_and_the_history_shows_it(
    server: RealtimeServer,
) -> None:
    sid, received = await reordered_turn(server)
    expected = produced_order(received)
    assert received != expected  # something came out of order
    assert received[:3] != expected[:3] and sorted(e["event_id"] for e in received[:3]) == [
        e["event_id"] for e in expected[:3]
    ]  # the first three (the default count) permuted among themselves
    assert received[3:] == expected[3:]  # and the rest in order
    sent = [r["event"]["event_id"] for r in server.history.events(sid, "out")][1:]  # after session.created
    assert sent == [e["event_id"] for e in received]  # recorded as actually sent
    (fault,) = server.history.select(kind="fault")
    assert (fault["fault"], fault["session"]) == ("reorder-events", sid)


async def test_the_turn_checkers_still_count_the_turn_answered_once(server: RealtimeServer) -> None:
    _, received = await reordered_turn(server, count=20)
    assert received != produced_order(received)
    await asyncio.sleep(0.2)  # the close is recorded
    view = RunView(server.history.records, user_turns=(UserTurn(0.0, STORY),))
    assert no_lost_turns(view).ok and no_duplicate_responses(view).ok


async def test_count_sets_how_many_are_permuted(server: RealtimeServer) -> None:
    _, received = await reordered_turn(server, count=6)
    expected = produced_order(received)
    assert received[:6] != expected[:6] and received[6:] == expected[6:]
    assert {e["event_id"] for e in received[:6]} == {e["event_id"] for e in expected[:6]}


async def test_the_order_is_reproducible_from_the_seed(server_factory: Any) -> None:
    orders = []
    for seed in (7, 7):
        server = await server_factory(pacing=0.0, seed=seed)
        _, received = await reordered_turn(server, count=8)
        orders.append([e["type"] for e in received[:8]])
    assert orders[0] == orders[1]


def test_a_permutation_is_never_the_identity() -> None:
    for size in (2, 3, 5, 20):
        rng = random.Random(size)
        for _ in range(200):
            order = shuffled(size, rng)
            assert sorted(order) == list(range(size)) and order != list(range(size))


@pytest.mark.parametrize("count", [1, 21, "three"])
async def test_a_count_out_of_bounds_is_refused(server: RealtimeServer, count: Any) -> None:
    ws = await open_session(server)
    status, body, _ = await http(
        server, "POST", "/_rtsim/faults", {"kind": "reorder-events", "params": {"count": count}}
    )
    assert status == 400 and body["error"]["param"] == "params.count"
    await ws.close()


async def test_rtsim_fault_reaches_it_through_generated_flags(
    server: RealtimeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    ws = await open_session(server)
    sid = await session_id_of(ws, server)
    code = await asyncio.to_thread(
        cli.main, ["fault", "reorder-events", "--server", server.base_url, "--session", sid, "--count", "4"]
    )
    assert code == 0 and capsys.readouterr().out.startswith(f"reorder-events → {sid}: the next 4")
    await ask(ws, STORY)
    received = await receive_for(ws, 0.5)
    expected = produced_order(received)
    assert received[:4] != expected[:4] and received[4:] == expected[4:]
    await ws.close()


async def test_a_fault_plan_deals_it(server: RealtimeServer) -> None:
    ws = await connect(
        ws_url(server),
        additional_headers={"Authorization": f"Bearer {KEY}", "X-Rtsim-Chaos": "reorder-events:count=5"},
    )
    assert (await recv(ws))["type"] == "session.created"  # dealt right after the session is announced
    await ask(ws, STORY)
    received = await receive_for(ws, 0.5)
    expected = produced_order(received)
    assert received[:5] != expected[:5] and received[5:] == expected[5:]
    (fault,) = server.history.select(kind="fault")
    assert (fault["fault"], fault["params"], fault["route"]) == (
        "reorder-events",
        {"count": 5},
        "plan:connection",
    )
    await ws.close()
