"""`duplicate-event`: the next server event of a type sent twice, identical, over a real WebSocket — reached
through the control API, the generated `rtsim fault` flags and a fault plan."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from websockets.asyncio.client import connect

from rtsim.scenarios.checkers import RunView, no_duplicate_responses
from rtsim.scenarios.spec import UserTurn
from rtsim.simulator import cli
from rtsim.simulator.server import RealtimeServer
from tests.support.faults import http, inject, session_id_of
from tests.support.wire import KEY, ask, open_session, receive_for, recv, ws_url

QUESTION = "What is the capital of France?"


def of_type(events: list[dict[str, Any]], event_type: str) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == event_type]


def sent_in_history(server: RealtimeServer, session: str, event_type: str) -> list[dict[str, Any]]:
    return [r["event"] for r in server.history.events(session, "out") if r["event"]["type"] == event_type]


async def test_the_client_receives_the_next_event_of_the_type_twice_and_the_history_shows_it(
    server: RealtimeServer,
) -> None:
    ws = await open_session(server)
    sid = await session_id_of(ws, server)
    outcome = await inject(server, "duplicate-event", {"type": "response.done"}, {"session": sid})
    assert outcome["applied_to"] == [sid] and "twice" in outcome["result"]

    await ask(ws, QUESTION)
    first = await receive_for(ws, 0.5)
    done = of_type(first, "response.done")
    assert len(done) == 2 and done[0] == done[1]  # identical, the same event_id included
    at = first.index(done[0])
    assert first[at + 1] == done[0]  # back to back, where the original was
    assert len({e["event_id"] for e in first}) == len(first) - 1  # nothing else repeated
    recorded = sent_in_history(server, sid, "response.done")
    assert [e["event_id"] for e in recorded] == [done[0]["event_id"]] * 2  # recorded as actually sent
    (fault,) = server.history.select(kind="fault")
    assert (fault["fault"], fault["params"], fault["session"]) == (
        "duplicate-event",
        {"type": "response.done"},
        sid,
    )

    await ask(ws, "And of Spain?")
    assert len(of_type(await receive_for(ws, 0.5), "response.done")) == 1  # once only
    await ws.close()


async def test_count_duplicates_that_many_of_the_next_events(server: RealtimeServer) -> None:
    ws = await open_session(server)
    sid = await session_id_of(ws, server)
    await inject(server, "duplicate-event", {"type": "response.created", "count": 2}, {"session": sid})
    for expected in (2, 2, 1):
        await ask(ws, QUESTION)
        assert len(of_type(await receive_for(ws, 0.5), "response.created")) == expected
    await ws.close()


async def test_the_checker_counts_a_redelivered_response_done_once(
    server: RealtimeServer,
) -> None:
    ws = await open_session(server)
    sid = await session_id_of(ws, server)
    await inject(server, "duplicate-event", {"type": "response.done"}, {"session": sid})
    await ask(ws, QUESTION)
    await receive_for(ws, 0.5)
    await ws.close()
    await asyncio.sleep(0.2)
    records = server.history.records
    done = [r for r in records if r["kind"] == "event" and r["event"].get("type") == "response.done"]
    assert len(done) == 2 and done[0]["event"] == done[1]["event"]  # the record shows the redelivery
    # The checkers judge the client: one response redelivered is still one answer (a client that asked
    # twice would produce two response ids and fail).
    verdict = no_duplicate_responses(RunView(records, user_turns=(UserTurn(0.0, QUESTION),)))
    assert verdict.ok, verdict.reason


@pytest.mark.parametrize(
    ("params", "param", "message"),
    [
        ({}, "params.type", "Missing required parameter"),
        ({"type": "response.nope"}, "params.type", "Unknown server event type"),
        ({"type": "response.done", "count": 0}, "params.count", ""),
    ],
)
async def test_a_bad_type_or_count_is_refused(
    server: RealtimeServer, params: dict[str, Any], param: str, message: str
) -> None:
    ws = await open_session(server)
    status, body, _ = await http(
        server, "POST", "/_rtsim/faults", {"kind": "duplicate-event", "params": params}
    )
    assert status == 400 and body["error"]["param"] == param and message in body["error"]["message"]
    await ws.close()


async def test_the_catalogue_lists_it_with_its_parameters(server: RealtimeServer) -> None:
    _, body, _ = await http(server, "GET", "/_rtsim/catalogue")
    (kind,) = [k for k in body["faults"] if k["kind"] == "duplicate-event"]
    assert (kind["scope"], kind["params"]) == ("session", ["count", "type"])
    assert "event_id" in kind["doc"] and "response id once" in kind["doc"]


async def test_rtsim_fault_reaches_it_through_generated_flags(
    server: RealtimeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    ws = await open_session(server)
    sid = await session_id_of(ws, server)
    argv = ["fault", "duplicate-event", "--server", server.base_url, "--session", sid, "--type"]
    code = await asyncio.to_thread(cli.main, [*argv, "response.done", "--count", "1"])
    assert code == 0 and capsys.readouterr().out.startswith(f"duplicate-event → {sid}: ")
    await ask(ws, QUESTION)
    assert len(of_type(await receive_for(ws, 0.5), "response.done")) == 2

    code = await asyncio.to_thread(cli.main, [*argv, "response.nope"])
    captured = capsys.readouterr()
    assert code == 1 and "Unknown server event type 'response.nope'" in captured.err
    assert "(params.type)" in captured.err
    await ws.close()


async def test_a_fault_plan_deals_it(server: RealtimeServer) -> None:
    ws = await connect(
        ws_url(server),
        additional_headers={
            "Authorization": f"Bearer {KEY}",
            "X-Rtsim-Chaos": "duplicate-event:type=response.done",
        },
    )
    assert (await recv(ws))["type"] == "session.created"
    await ask(ws, QUESTION)
    assert len(of_type(await receive_for(ws, 0.5), "response.done")) == 2
    (fault,) = server.history.select(kind="fault")
    assert (fault["fault"], fault["route"]) == ("duplicate-event", "plan:connection")
    await ws.close()
