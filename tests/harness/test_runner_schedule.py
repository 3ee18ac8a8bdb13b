"""How `rtsim run` schedules runs (longest first, WebRTC runs capped) and when a fixed-time fault fires."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from rtsim.scenarios import runner
from rtsim.scenarios.runner import ClientSpec, EmbeddedSimulator, Nemesis, RunResult, run_matrix
from rtsim.scenarios.spec import FaultStep, Scenario, from_dict


async def test_runs_start_longest_first_with_webrtc_runs_capped(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    started: list[str] = []
    live: dict[str, int] = {"all": 0, "webrtc": 0}
    peak: dict[str, int] = {"all": 0, "webrtc": 0}

    async def fake_run_one(scenario: Scenario, client: ClientSpec, **_: Any) -> RunResult:
        started.append(scenario.name)
        kinds = ("all", "webrtc") if scenario.transport == "webrtc" else ("all",)
        for kind in kinds:
            live[kind] += 1
            peak[kind] = max(peak[kind], live[kind])
        await asyncio.sleep(scenario.duration / 100)
        for kind in kinds:
            live[kind] -= 1
        return RunResult(scenario, client, [], 0, scenario.duration)

    monkeypatch.setattr(runner, "run_one", fake_run_one)
    durations = {"a": 3, "b": 9, "c": 5, "d": 12, "e": 7, "f": 4}
    transports = {"d": "webrtc", "b": "webrtc", "e": "webrtc"}
    scenarios = [
        from_dict({"name": name, "duration": d, "transport": transports.get(name, "websocket")})
        for name, d in durations.items()
    ]
    client = ClientSpec("fake", ["true"])
    results = await run_matrix(scenarios, [client], jobs=4, webrtc_jobs=1, out_dir=tmp_path)

    assert [r.scenario.name for r in results] == list(durations)  # reported in the order given
    assert started[:2] == ["d", "c"]  # the longest first; the next WebRTC runs wait for its slot
    assert started.index("b") < started.index("e")  # among WebRTC runs, longest first too
    assert peak == {"all": 4, "webrtc": 1}


async def test_a_fixed_time_fault_counts_from_the_clients_first_request(tmp_path: Path) -> None:
    """Turn times are on the client's own clock; a fault `at` is too, so a client slow to start (imports on a
    loaded machine) meets its faults where the scenario put them."""
    scenario = from_dict({"name": "slow-start", "duration": 2, "faults": [{"at": 0.2, "kind": "drop"}]})
    script = tmp_path / "script.yaml"
    script.write_text("{}\n")
    simulator = EmbeddedSimulator(scenario, 0, script)
    await simulator.start()
    loop = asyncio.get_running_loop()
    fired: list[float] = []
    nemesis = Nemesis(simulator, "sk-test", scenario.faults)
    nemesis.fire = lambda step: fired.append(loop.time())  # type: ignore[method-assign]
    try:
        nemesis.start(loop)
        await asyncio.sleep(0.5)
        assert not fired  # the client has not called yet
        contact = loop.time()
        simulator.server.history.record("http", method="POST", path="/v1/realtime/client_secrets", status=200)
        await asyncio.sleep(0.5)
        assert len(fired) == 1 and 0.15 <= fired[0] - contact <= 0.4
    finally:
        nemesis.stop()
        await simulator.stop()


async def test_a_fault_at_zero_fires_before_the_client_calls(tmp_path: Path) -> None:
    scenario = from_dict({"name": "at-zero", "duration": 2})
    script = tmp_path / "script.yaml"
    script.write_text("{}\n")
    simulator = EmbeddedSimulator(scenario, 0, script)
    await simulator.start()
    fired: list[FaultStep] = []
    nemesis = Nemesis(simulator, "sk-test", (FaultStep("reject-connects", {"count": 1}, at=0.0),))
    nemesis.fire = fired.append  # type: ignore[method-assign]
    try:
        nemesis.start(asyncio.get_running_loop())
        await asyncio.sleep(0.1)
        assert len(fired) == 1
    finally:
        nemesis.stop()
        await simulator.stop()
