"""The voice agent under rtsim's pytest plugin: a scenario from the built-in library, and a fault of the
test's own at an exact moment. Without reconnect (the agent's default) both fail, and say why."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

AGENT = [sys.executable, str(Path(__file__).resolve().parents[1] / "agent.py")]


@pytest.mark.rtsim_scenarios("close-1011")
def test_agent_survives_the_scenario(rtsim_scenario) -> None:
    outcome = rtsim_scenario(client=AGENT)
    outcome.assert_passed()


def test_agent_remembers_the_user_across_a_dropped_connection(rtsim, tmp_path: Path) -> None:
    plan = tmp_path / "plan.json"
    plan.write_text(
        json.dumps(
            {
                # The question comes after the reconnect has had time: audio arrives faster than real
                # time, so the drop (at the first response.done) comes early in the conversation.
                "turns": [{"at": 0.3, "say": "My name is Alice."}, {"at": 4.0, "say": "What is my name?"}],
                "end_at": 5.0,
            }
        )
    )
    agent = subprocess.Popen(
        AGENT, env={**rtsim.env, "RTSIM_SCENARIO": str(plan)}, stdout=subprocess.PIPE, text=True
    )
    try:
        rtsim.wait_for("response.done", timeout=10)  # the agent has heard the name
        rtsim.inject("drop")  # the connection goes, with no close frame
        output, _ = agent.communicate(timeout=30)
    finally:
        agent.kill()
    rtsim.assert_checks(("reconnected_within", {"seconds": 5}), "context_restored")
    answers = [json.loads(line) for line in output.splitlines() if '"assistant"' in line]
    assert answers and "Alice" in answers[-1]["text"], output
