"""The built-in MCP scenarios: the reference client answers approval requests, asks for the reply after an
MCP call and waits for a new session's tool listings; clients that do not are caught by the checkers."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from rtsim.scenarios.runner import ClientSpec, RunResult, run_matrix
from rtsim.scenarios.spec import LIBRARY, load

SCENARIOS = ("mcp-call-interrupted-by-drop", "mcp-approval-then-failed-call")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], RunResult]:
    scenarios = [load(LIBRARY / f"{name}.yaml") for name in SCENARIOS]
    clients = [ClientSpec.named("reference"), ClientSpec.named("naive")]
    out = Path(tmp_path_factory.mktemp("mcp"))
    results = asyncio.run(run_matrix(scenarios, clients, jobs=4, out_dir=out))
    return {(r.scenario.name, r.client.name): r for r in results}


def answers(run: RunResult) -> list[str]:
    return [str((v.figures or {}).get("answer")) for v in run.verdicts if v.name == "answer" and v.ok]


def test_a_drop_mid_mcp_call_is_survived_and_the_answer_asked_for(
    runs: dict[tuple[str, str], RunResult],
) -> None:
    reference = runs[("mcp-call-interrupted-by-drop", "reference")]
    assert reference.passed, [f"{v.name}: {v.reason}" for v in reference.verdicts if not v.ok]
    assert "I found a table at 8 pm for two." in answers(reference)  # the follow-up reply, from the output
    naive = {v.name for v in runs[("mcp-call-interrupted-by-drop", "naive")].verdicts if not v.ok}
    assert "answer" in naive


def test_an_approval_request_is_answered_and_a_failed_call_still_gets_a_reply(
    runs: dict[tuple[str, str], RunResult],
) -> None:
    reference = runs[("mcp-approval-then-failed-call", "reference")]
    assert reference.passed, [f"{v.name}: {v.reason}" for v in reference.verdicts if not v.ok]
    assert any("Error calling tool 'find_table'" in text for text in answers(reference))
    naive = runs[("mcp-approval-then-failed-call", "naive")]
    failed = {v.name: v for v in naive.verdicts if not v.ok}
    # it left the approval request unanswered: the turn's only answer is the request itself
    assert "answer" in failed and "was answered ''" in failed["answer"].reason
