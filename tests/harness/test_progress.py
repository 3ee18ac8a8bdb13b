"""`rtsim run` progress: a live bar with an ETA on a terminal, the plain lines of old everywhere else."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rtsim.scenarios.progress import RUN_OVERHEAD_S, Schedule
from rtsim.scenarios.runner import ClientSpec
from rtsim.scenarios.spec import from_dict
from rtsim.simulator.cli import main as rtsim

ESCAPE = "\x1b["


def short_scenario(tmp_path: Path, name: str) -> Path:
    data = {
        "name": name,
        "description": "one turn, answered",
        "duration": 2,
        "user": [{"at": 0.2, "say": "My name is Alice."}],
        "checks": ["no_lost_turns", "no_leaked_sessions"],
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(json.dumps(data))  # JSON is YAML
    return path


def test_schedule_fills_free_slots_and_learns_the_pace() -> None:
    pairs = [(from_dict({"name": f"s{i}", "duration": 10}), ClientSpec("custom", ["x"])) for i in range(3)]
    schedule = Schedule(pairs, jobs=2)
    each = 10 + RUN_OVERHEAD_S
    assert schedule.remaining(now=0.0) == pytest.approx(2 * each)  # two at once, then the third
    schedule.started("s0 × custom", now=0.0)
    schedule.started("s1 × custom", now=0.0)
    assert schedule.remaining(now=5.0) == pytest.approx(each - 5 + each)
    schedule.finished("s0 × custom", seconds=2 * each)  # runs take twice what they state
    schedule.started("s2 × custom", now=2 * each)
    assert schedule.remaining(now=2 * each) == pytest.approx(2 * each)


def test_plain_lines_when_stdout_is_not_a_terminal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scenario = short_scenario(tmp_path, "short-plain")
    code = rtsim(["run", str(scenario), "--client", "reference", "--out", str(tmp_path / "runs")])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "  [1/1] short-plain × reference: PASS" in out.splitlines()[1]
    assert ESCAPE not in out and "ETA" not in out
    (report,) = (tmp_path / "runs").glob("*/report.html")
    assert f"HTML report: {report}" in out


def test_a_live_bar_with_eta_on_a_terminal(tmp_path: Path) -> None:
    scenarios = [str(short_scenario(tmp_path, name)) for name in ("short-a", "short-b")]
    command = [sys.executable, "-m", "rtsim.simulator.cli", "run", *scenarios, "--client", "reference"]
    command += ["--jobs", "1", "--out", str(tmp_path / "runs")]
    leader, follower = pty.openpty()
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "140"}
    for plain_forcing in ("FORCE_COLOR", "NO_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "CI"):
        env.pop(plain_forcing, None)
    process = subprocess.Popen(command, stdout=follower, stderr=follower, env=env)
    os.close(follower)
    output = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the process closed the terminal
                break
            if not chunk:
                break
            output += chunk
        elif process.poll() is not None:
            break
    os.close(leader)
    assert process.wait(timeout=10) == 0, output.decode(errors="replace")[-2000:]
    text = output.decode(errors="replace")
    assert ESCAPE in text  # drawn in place, not printed line after line
    etas = [int(m) * 60 + int(s) for m, s in re.findall(r"ETA (\d+):(\d\d)", text)]
    assert etas, text[-2000:]
    # both runs queued at first: the estimate starts near their stated 2 × (2 s + overhead) and counts down
    assert 4 <= etas[0] <= 8 and etas[-1] <= 2, etas
    assert "1/2" in text and "2/2" in text and "running short-a × reference" in text
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)
    assert "[1/2] short-a × reference: PASS" in plain and "2 passed, 0 failed" in plain
