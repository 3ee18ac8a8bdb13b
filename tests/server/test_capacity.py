"""`rtsim bench capacity`: the search for a session count, and the bare server it compares rtsim with."""

from __future__ import annotations

import asyncio
import json

import pytest
from websockets.asyncio.client import connect

from rtsim.simulator.bench import FIRST_DELTA_DUE
from rtsim.simulator.capacity import Bracket, reply_frames, start_bare_server
from tests.support.engine import validate_ga


def run_search(bracket: Bracket, capacity: int) -> list[int]:
    tried = []
    while (n := bracket.next()) is not None:
        tried.append(n)
        bracket.record(n, n <= capacity)
    return tried


@pytest.mark.parametrize("capacity", [0, 1, 37, 150, 199, 200, 1000, 5000])
def test_the_search_finds_the_largest_passing_count_within_its_precision(capacity: int) -> None:
    bracket = Bracket(start=200, limit=4000, precision=0.05)
    tried = run_search(bracket, capacity)
    expected = min(capacity, 4000)
    assert bracket.found <= expected  # never a count that failed
    assert expected - bracket.found <= max(1, int(bracket.found * 0.05))
    assert len(tried) <= 20


def test_the_bare_server_pushes_the_engines_own_frames() -> None:
    created, deltas, done = reply_frames()
    validate_ga(json.loads(created))
    validate_ga(json.loads(done))
    for frame in (deltas[0], deltas[-1]):
        event = validate_ga(json.loads(frame))
        assert event.type == "response.output_audio.delta"
    assert len(deltas) == 108  # the bench reply: 10.8 s of audio in 100 ms chunks


def test_the_bench_timeline_is_the_engines_own() -> None:
    # The default session at real-time pacing: when does the engine produce its first audio delta?
    from rtsim.simulator.bench import REPLY_TEXT
    from rtsim.simulator.engine import Limits, Session
    from rtsim.simulator.model import ScriptedModel
    from rtsim.simulator.protocol import IdFactory

    session = Session(
        ids=IdFactory.seeded(0, "timeline"), model=ScriptedModel(), now=0.0, wall=0.0, limits=Limits(pacing=1)
    )
    session.start(0.0)
    item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": REPLY_TEXT}]}
    session.receive({"type": "conversation.item.create", "item": item}, 0.0)
    session.receive({"type": "response.create"}, 0.0)
    now, first_delta_at = 0.0, None
    events = session.drain()
    while first_delta_at is None and (deadline := session.next_deadline()) is not None:
        assert all(e["type"] != "response.output_audio.delta" for e in events)
        now = deadline
        session.advance(now)
        events = session.drain()
        if any(e["type"] == "response.output_audio.delta" for e in events):
            first_delta_at = now
    assert first_delta_at == pytest.approx(FIRST_DELTA_DUE)


async def test_the_bare_server_paces_a_reply_at_real_time_on_the_engines_timeline() -> None:
    proc, url = start_bare_server()
    try:
        async with connect(url.replace("http://", "ws://") + "/realtime", compression=None) as ws:
            assert json.loads(await ws.recv())["type"] == "session.created"
            await ws.send('{"type":"response.create"}')
            loop_time = asyncio.get_running_loop().time
            asked, arrivals = loop_time(), []
            async for message in ws:
                assert isinstance(message, str)
                if message.startswith('{"type":"response.done"'):
                    break
                arrivals.append(loop_time() - asked)
        assert len(arrivals) == 108
        assert arrivals[0] >= FIRST_DELTA_DUE - 0.005  # the engine's audio start delay, as rtsim has it
        assert arrivals[-1] >= FIRST_DELTA_DUE + 10.6  # real time: delta k no earlier than k x 100 ms
        assert arrivals[-1] < 30  # generous: a shared machine
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.mark.slow
def test_the_command_searches_both_servers_and_prints_the_ratio(capsys: pytest.CaptureFixture[str]) -> None:
    from rtsim.simulator.cli import main

    assert (
        main(["bench", "capacity", "--start", "2", "--limit", "4", "--precision", "0.5", "--p99-ms", "5000"])
        == 0
    )
    lines = capsys.readouterr().out.splitlines()
    rows = [json.loads(line) for line in lines if line.startswith('{"round"')]
    assert {(row["server"], row["sessions"]) for row in rows} == {
        ("rtsim", 2),
        ("rtsim", 4),
        ("bare", 2),
        ("bare", 4),
    }
    assert all(row["completed"] == row["sessions"] and row["deltas"] == 108 * row["sessions"] for row in rows)
    result = json.loads(lines[-1])
    assert result["rtsim_median"] == result["bare_median"] == 4
    assert result["ratio"] == 1.0
