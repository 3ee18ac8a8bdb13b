"""The carrier's outbound chain and hooks, over a recording transport: order, delays, holds, triggers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from rtsim.simulator.carrier import Carrier
from rtsim.simulator.engine import Limits, Session
from rtsim.simulator.history import History
from rtsim.simulator.model import ScriptedModel
from rtsim.simulator.protocol import IdFactory
from rtsim.simulator.server import RealtimeServer
from rtsim.simulator.stages import HoldFirstDelta, Latency
from tests.support.wire import open_session

DELTA = "response.output_audio.delta"


class RecordingCarrier(Carrier):
    """A carrier whose wire is a list: (loop time sent, event type)."""

    transport = "test"

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        session = Session(
            ids=IdFactory.seeded(0, "carrier"),
            model=ScriptedModel(),
            now=loop.time(),
            wall=time.time(),
            limits=Limits(pacing=0.0),
        )
        super().__init__(session=session, conn_id="conn_test", key_id="key_test", history=History())
        self.sent: list[tuple[float, str]] = []

    async def _transmit(self, event: dict[str, Any]) -> bool:
        self.sent.append((self.loop.time(), event["type"]))
        return True

    def emit(self, *types: str) -> float:
        for event_type in types:
            self.session.emit({"type": event_type, "response_id": "resp_1"})
        self.pump()
        return self.loop.time()

    def sent_types(self) -> list[str]:
        return [t for _, t in self.sent if t != "session.created"]


class HoldAll:
    """Holds every event until it is removed."""

    name = "hold-all"

    def __init__(self) -> None:
        self.held: list[tuple[float, dict[str, Any]]] = []

    def admit(self, due: float, event: dict[str, Any], now: float) -> list[tuple[float, dict[str, Any]]]:
        self.held.append((due, event))
        return []

    def release(self, now: float) -> list[tuple[float, dict[str, Any]]]:
        held, self.held = self.held, []
        return held


@pytest.fixture
async def carrier() -> AsyncIterator[RecordingCarrier]:
    carrier = RecordingCarrier()
    carrier.session.start(carrier.loop.time())
    writer = asyncio.create_task(carrier.writer())
    yield carrier
    writer.cancel()


async def settle(seconds: float = 0.05) -> None:
    await asyncio.sleep(seconds)


async def test_an_empty_chain_sends_at_once_in_order(carrier: RecordingCarrier) -> None:
    carrier.emit("a.one", "a.two", "a.three")
    await settle()
    assert carrier.sent_types() == ["a.one", "a.two", "a.three"]
    assert carrier.sent_counts["a.two"] == 1


async def test_latency_delays_without_reordering(carrier: RecordingCarrier) -> None:
    carrier.add_stage(Latency.seeded(7, carrier.conn_id, 0.05, 0.05))  # 0 to 100 ms each
    types = [f"e.{i}" for i in range(20)]
    emitted = carrier.emit(*types)
    await settle(0.3)
    assert carrier.sent_types() == types
    times = [t for t, kind in carrier.sent if kind in types]
    assert times == sorted(times)
    assert times[-1] - emitted >= 0.05  # of 20 draws in [0, 100 ms] the largest is well above 50 ms


async def test_a_held_event_and_what_follows_wait_for_it(carrier: RecordingCarrier) -> None:
    carrier.add_stage(HoldFirstDelta(0.3))
    emitted = carrier.emit("before", DELTA, "after")
    await settle()
    assert carrier.sent_types() == ["before"]  # the delta is held, and the event behind it waits
    await settle(0.4)
    assert carrier.sent_types() == ["before", DELTA, "after"]
    assert carrier.sent[-1][0] - emitted >= 0.3
    carrier.emit(DELTA)  # it holds the first delta only
    await settle()
    assert carrier.sent_types()[-1] == DELTA


async def test_removing_a_stage_releases_what_it_held_in_order(carrier: RecordingCarrier) -> None:
    carrier.add_stage(HoldAll())
    carrier.emit("x.1", "x.2", "x.3")
    await settle()
    assert carrier.sent_types() == []
    assert carrier.remove_stage("hold-all") is True
    await settle()
    assert carrier.sent_types() == ["x.1", "x.2", "x.3"]
    assert carrier.remove_stage("hold-all") is False


async def test_a_stage_of_the_same_name_replaces_the_present_one(carrier: RecordingCarrier) -> None:
    carrier.add_stage(HoldFirstDelta(30.0))
    carrier.add_stage(HoldFirstDelta(0.0))
    assert len(carrier.stages) == 1
    carrier.emit(DELTA)
    await settle()
    assert carrier.sent_types() == [DELTA]


async def test_after_event_fires_after_the_nth_from_now_and_can_be_cancelled(
    carrier: RecordingCarrier,
) -> None:
    carrier.emit("t.tick")
    await settle()
    fired: list[int] = []
    carrier.after_event("t.tick", 2, lambda: fired.append(len(carrier.sent_types())))
    cancel = carrier.after_event("t.tick", 1, lambda: fired.append(-1))
    cancel()
    carrier.emit("t.tick", "t.tick", "t.tick")
    await settle()
    assert fired == [3]  # right after the second tick sent since it was armed (the third in all)


async def test_call_later_and_spawned_tasks_end_with_the_session(server: RealtimeServer) -> None:
    ws = await open_session(server)
    (carrier,) = server.carriers.values()
    fired: list[str] = []
    carrier.call_later(0.05, lambda: fired.append("early"))
    carrier.call_later(0.5, lambda: fired.append("late"))
    task = carrier.spawn(asyncio.sleep(30))
    await settle(0.15)
    await ws.close()
    await asyncio.wait_for(carrier.done.wait(), 5)
    await settle(0.5)
    assert fired == ["early"] and task.cancelled()
