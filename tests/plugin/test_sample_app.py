"""The sample voice agent's own suite (examples/voice_agent/tests), run as its user would: `pytest` in that
folder, in a process of its own. Without reconnect it must fail for the right reason — the checker saying
the client never came back — and with `VOICE_AGENT_RECONNECT=1` it must pass."""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

SAMPLE = Path(__file__).resolve().parents[2] / "examples" / "voice_agent"
SUITE_TIMEOUT_S = 120


def start_suite(junit: Path, *, reconnect: bool) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "VOICE_AGENT_"))}
    if reconnect:
        env["VOICE_AGENT_RECONNECT"] = "1"
    return subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", f"--junitxml={junit}"],
        cwd=SAMPLE,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def failures(junit: Path) -> dict[str, str]:
    """Each test case's name → its failure text ("" for a pass)."""
    cases = ET.parse(junit).getroot().iter("testcase")
    return {case.get("name", ""): "".join(f.text or "" for f in case.iter("failure")) for case in cases}


def test_sample_suite_fails_without_reconnect_and_passes_with_it(tmp_path: Path) -> None:
    # Both runs at once: each is mostly a client waiting on its scenario's clock.
    without, with_reconnect = tmp_path / "without.xml", tmp_path / "with.xml"
    runs = {
        "without": start_suite(without, reconnect=False),
        "with": start_suite(with_reconnect, reconnect=True),
    }
    outputs = {name: run.communicate(timeout=SUITE_TIMEOUT_S)[0] for name, run in runs.items()}

    assert runs["without"].returncode == 1, outputs["without"]
    failed = failures(without)
    assert set(failed) == {
        "test_agent_survives_the_scenario[close-1011]",
        "test_agent_remembers_the_user_across_a_dropped_connection",
    }, outputs["without"]
    for name, text in failed.items():
        # The checker's reason, naming the session the server ended and the missing reconnect.
        assert "reconnected_within: sess_" in text, (name, text)
        assert "the client never opened another session" in text, (name, text)
    assert "ended (1011 by server)" in failed["test_agent_survives_the_scenario[close-1011]"]
    assert "ended (1006 by server)" in failed["test_agent_remembers_the_user_across_a_dropped_connection"]
    assert "- rtsim -" in outputs["without"]  # the plugin's report section with the records

    assert runs["with"].returncode == 0, outputs["with"]
    assert set(failures(with_reconnect).values()) == {""}, outputs["with"]
    assert "2 passed" in outputs["with"]
