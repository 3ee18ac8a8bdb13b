"""Scenario keys for clients: `client:` (who runs a scenario by default), the `page-reload` step, and the
RTSIM_READY_FILE handshake that starts the fault timeline when a slow client is ready."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import pytest

from rtsim.scenarios.runner import ClientSpec, matrix_pairs, wait_ready
from rtsim.scenarios.spec import ScenarioError, discover, from_dict


def test_a_scenario_names_its_default_client() -> None:
    browser_only = from_dict({"name": "b", "transport": "webrtc", "client": "browser"})
    plain = from_dict({"name": "p", "transport": "webrtc"})
    pairs = matrix_pairs([browser_only, plain], [])
    assert [(s.name, c.name) for s, c in pairs] == [("b", "browser"), ("p", "reference-webrtc")]
    # Named clients win: the scenario's own is only the default.
    assert {c.name for _, c in matrix_pairs([browser_only], [ClientSpec.named("naive-webrtc")])} == {
        "naive-webrtc"
    }
    with pytest.raises(ScenarioError):
        from_dict({"name": "x", "client": ["browser"]})


def test_page_reload_is_a_step_and_the_library_has_it() -> None:
    scenario = from_dict({"name": "r", "transport": "webrtc", "faults": [{"at": 2, "kind": "page-reload"}]})
    assert scenario.faults[0].kind == "page-reload"
    with pytest.raises(ScenarioError):
        from_dict({"name": "r", "faults": [{"at": 2, "kind": "page-reboot"}]})
    (reload,) = discover(["webrtc-page-reload"])
    assert reload.client == "browser" and any(f.kind == "page-reload" for f in reload.faults)
    assert ClientSpec.named("browser").has_page and ClientSpec.from_command("node x.js").has_page
    assert not ClientSpec.named("reference-webrtc").has_page


async def test_the_timeline_waits_for_the_ready_file(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", f"import time, pathlib; time.sleep(0.6); pathlib.Path({str(ready)!r}).touch()"
    )
    started = time.monotonic()
    await wait_ready(ready, process)
    assert 0.5 < time.monotonic() - started < 5
    await process.wait()


async def test_a_client_that_exits_or_never_says_ready_does_not_hold_the_run(tmp_path: Path) -> None:
    process = await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")
    await process.wait()
    started = time.monotonic()
    await wait_ready(tmp_path / "never", process)
    assert time.monotonic() - started < 1
    sleeper = await asyncio.create_subprocess_exec(sys.executable, "-c", "import time; time.sleep(5)")
    started = time.monotonic()
    await wait_ready(tmp_path / "never", sleeper, timeout=0.5)
    assert time.monotonic() - started < 2
    sleeper.kill()
    await sleeper.wait()
