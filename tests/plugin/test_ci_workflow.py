"""examples/github-actions.yml: it parses as a workflow, and every rtsim command (and plugin option) it runs
exists, with the flags it passes, as `--help` tells."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from rtsim.scenarios.spec import discover

WORKFLOW = Path(__file__).resolve().parents[2] / "examples" / "github-actions.yml"
RTSIM = [sys.executable, "-m", "rtsim.simulator.cli"]


def workflow() -> dict[str, Any]:
    return yaml.safe_load(WORKFLOW.read_text())


def run_scripts(job: dict[str, Any]) -> list[str]:
    return [step["run"] for step in job["steps"] if "run" in step]


def commands(script: str, program: str) -> list[list[str]]:
    """Each command line of a `run:` script that starts with `program` (folded lines joined)."""
    found = []
    for line in script.replace("\\\n", " ").splitlines():
        words = shlex.split(line)
        if words and words[0] == program:
            found.append(words)
    return found


def help_text(*args: str) -> str:
    done = subprocess.run([*RTSIM, *args, "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_workflow_parses_with_both_jobs() -> None:
    document = workflow()
    triggers = document.get("on", document.get(True))  # YAML 1.1 reads a bare `on` as true
    assert {"push", "pull_request"} <= set(triggers)
    jobs = document["jobs"]
    assert set(jobs) == {"scenarios", "network-chaos"}
    for job in jobs.values():
        assert job["runs-on"] == "ubuntu-latest" and job["steps"]
        uploads = [s for s in job["steps"] if str(s.get("uses", "")).startswith("actions/upload-artifact")]
        assert uploads and "runs/" in uploads[0]["with"]["path"]  # histories, logs and the HTML report
        assert uploads[0].get("if") == "always()"
    network = jobs["network-chaos"]
    assert network["env"]["TOXIPROXY_URL"].startswith("http://127.0.0.1:")
    assert any("ghcr.io/shopify/toxiproxy" in script for script in run_scripts(network))


def test_every_rtsim_command_and_flag_it_runs_exists() -> None:
    subcommands = re.search(r"\{([a-z,]+)\}", help_text()).group(1).split(",")
    library = {scenario.name for scenario in discover([])}
    seen = 0
    for job in workflow()["jobs"].values():
        for script in run_scripts(job):
            for words in commands(script, "rtsim"):
                seen += 1
                subcommand, rest = words[1], words[2:]
                assert subcommand in subcommands, words
                flags = {w.split("=")[0] for w in rest if w.startswith("--")}
                usage = help_text(subcommand)
                assert all(flag in usage for flag in flags), (flags, usage)
                assert "--junit" in flags
                # `rtsim run`'s positional words here are built-in scenario names
                values_of = {"--client-cmd", "--jobs", "--junit", "--out"}
                names = [
                    w for i, w in enumerate(rest) if not w.startswith("--") and rest[i - 1] not in values_of
                ]
                assert names and set(names) <= library, names
    assert seen == 2


def test_the_plugin_options_it_passes_exist() -> None:
    (script,) = [s for s in run_scripts(workflow()["jobs"]["scenarios"]) if s.startswith("pytest")]
    (words,) = commands(script, "pytest")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--help"], capture_output=True, text=True, timeout=60
    )
    options = {w for w in words if w.startswith("--rtsim")}
    assert options == {"--rtsim-record", "--rtsim-seed"}
    assert all(option in done.stdout for option in options)
