"""The built-in MCP scenario: the reference client gets the answer of a turn whose MCP call a drop cut off;
the official SDK client (one session.update, no context restore) is caught by the checkers."""

from __future__ import annotations

import asyncio
from pathlib import Path

from rtsim.scenarios.runner import ClientSpec, run_matrix
from rtsim.scenarios.spec import LIBRARY, load


def test_the_reference_client_survives_a_drop_mid_mcp_call_and_asks_for_the_answer(tmp_path: Path) -> None:
    scenario = load(LIBRARY / "mcp-call-interrupted-by-drop.yaml")
    clients = [ClientSpec.named("reference"), ClientSpec.named("openai-sdk")]
    runs = {r.client.name: r for r in asyncio.run(run_matrix([scenario], clients, jobs=2, out_dir=tmp_path))}
    reference = runs["reference"]
    assert reference.passed, [f"{v.name}: {v.reason}" for v in reference.verdicts if not v.ok]
    answers = [str((v.figures or {}).get("answer")) for v in reference.verdicts if v.name == "answer"]
    assert "I found a table at 8 pm for two." in answers  # the follow-up reply, from the MCP call's output
    sdk_failed = {v.name for v in runs["openai-sdk"].verdicts if not v.ok}
    assert "answer" in sdk_failed or "context_restored" in sdk_failed
