"""`rtsim explore`: the strategies build valid scenarios; against the naive client a bounded search finds a
failure, shrinks it to one fault and writes it; a rerun replays it first from the example database."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings

from rtsim.scenarios import explore
from rtsim.scenarios.runner import ClientSpec
from rtsim.scenarios.spec import from_dict, load
from rtsim.simulator.faults import CATALOGUE


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)
@given(data=explore.scenarios(max_faults=3, max_turns=3))
def test_generated_scenarios_are_valid_and_leave_room_for_the_answers(data: dict[str, Any]) -> None:
    scenario = from_dict(data)
    assert 1 <= len(scenario.faults) <= 3
    assert {step.kind for step in scenario.faults} <= set(explore.fault_kinds("websocket"))
    assert all("websocket" in CATALOGUE[step.kind].transports for step in scenario.faults)
    times = [turn.at for turn in scenario.user]
    assert times == sorted(times) and len(set(t.say for t in scenario.user)) == len(scenario.user)
    assert scenario.user[0].say == explore.FIRST_TURN
    assert scenario.duration >= times[-1] + explore.ANSWER_ROOM["text"]
    for step in scenario.faults:
        assert step.at is None or step.at < scenario.duration
        assert step.at is not None or step.after_event in (
            "response.created",
            "response.output_audio.delta",
            "response.done",
        )
    assert {check.name for check in scenario.checks} == set(explore.CHECKS)


@settings(max_examples=40, deadline=None, database=None)
@given(data=explore.scenarios(transport="webrtc", kinds=("sctp-abort", "server-error")))
def test_a_transport_and_a_choice_of_kinds_limit_what_is_generated(data: dict[str, Any]) -> None:
    assert {step["kind"] for step in data["faults"]} <= {"sctp-abort", "server-error"}
    assert from_dict(data).transport == "webrtc"


def test_kinds_foreign_to_the_transport_are_refused() -> None:
    assert "ice-blackhole" not in explore.fault_kinds("webrtc")  # tens of seconds to notice: not generated
    assert {"webrtc-loss", "webrtc-latency"} <= set(explore.fault_kinds("webrtc"))
    assert "webrtc-loss" not in explore.fault_kinds("websocket")
    assert "sctp-abort" not in explore.fault_kinds("websocket")
    try:
        explore.fault_kinds("websocket", ["sctp-abort"])
    except ValueError as exc:
        assert "sctp-abort" in str(exc)
    else:
        raise AssertionError("a WebRTC-only kind was accepted for WebSocket")


def test_explore_finds_shrinks_and_writes_a_naive_failure_then_replays_it_first(tmp_path: Path) -> None:
    database = tmp_path / "hypothesis"
    naive = ClientSpec.named("naive")
    # A small budget. Harmless kinds first: the simplest schedule (what hypothesis tries first, and what the
    # shrinker heads for) passes, so finding the drop takes a search and replaying it takes the database.
    search = {
        "kinds": ("latency", "duplicate-event", "drop"),
        "max_faults": 2,
        "max_turns": 1,
        "database": database,
    }
    found = explore.explore(
        naive, budget=4, shrink_budget=8, seed_value=2, out_dir=tmp_path / "out", **search
    )

    assert found.minimal is not None and found.outcome is not None and found.written is not None
    assert found.runs <= 12
    assert len(found.minimal["faults"]) == 1
    assert found.outcome.reasons
    written = load(found.written)
    assert len(written.faults) == 1
    assert written.faults == from_dict(found.minimal).faults
    text = found.written.read_text()
    assert found.outcome.reasons[0] in text  # the checker's reason goes with the scenario

    assert found.minimal["faults"][0]["kind"] == "drop"

    # next time the saved failure comes first: the first run fails, on the same schedule, and it fails the
    # naive client again (a fresh run: outcomes are not kept between searches). Without the database the
    # first run would be the simplest schedule, which passes.
    again = explore.explore(
        naive, budget=1, shrink_budget=0, seed_value=99, out_dir=tmp_path / "again", **search
    )
    assert again.first_failure_run == 1 and again.runs == 1
    assert again.minimal == found.minimal
