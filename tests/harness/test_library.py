"""The built-in library: every scenario loads; reference passes and naive fails rotation, context, backoff."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from rtsim.scenarios.checkers import CHECKERS
from rtsim.scenarios.runner import ClientSpec, RunResult, run_matrix
from rtsim.scenarios.spec import LIBRARY, discover, load

DECISIVE = {  # scenario -> the check naive must fail in it
    "cap-60min-rotation": "rotation_before_expiry",
    "drop-mid-response": "context_restored",
    "accept-then-1008-loop": "backoff",
}


def test_every_library_scenario_loads_and_every_checker_is_used() -> None:
    scenarios = discover([str(LIBRARY)])
    assert len(scenarios) >= 22
    used = {check.name for scenario in scenarios for check in scenario.checks}
    assert used >= set(CHECKERS) - {"client_exit"}
    assert {s.name for s in scenarios} >= set(DECISIVE)


@pytest.fixture(scope="module")
def decisive_runs(tmp_path_factory: pytest.TempPathFactory) -> list[RunResult]:
    scenarios = [load(LIBRARY / f"{name}.yaml") for name in DECISIVE]
    clients = [ClientSpec.named("reference"), ClientSpec.named("naive")]
    out = Path(tmp_path_factory.mktemp("library"))
    return asyncio.run(run_matrix(scenarios, clients, jobs=6, out_dir=out))


@pytest.mark.parametrize("scenario", sorted(DECISIVE))
def test_reference_passes_where_naive_fails_with_a_clear_reason(
    decisive_runs: list[RunResult], scenario: str
) -> None:
    runs = {(r.scenario.name, r.client.name): r for r in decisive_runs}
    reference, naive = runs[(scenario, "reference")], runs[(scenario, "naive")]
    assert reference.passed, [f"{v.name}: {v.reason}" for v in reference.verdicts if not v.ok]
    failed = {v.name: v for v in naive.verdicts if not v.ok}
    assert DECISIVE[scenario] in failed
    verdict = failed[DECISIVE[scenario]]
    assert verdict.reason and verdict.evidence  # says why, with the records that show it
