"""The compatibility matrix: real clients, each pinned, against the built-in fault scenarios over `--tls`.

    .venv/bin/python compat/matrix.py [--only NAME ...] [--jobs N] [--readme]

Every framework runs through a small adapter (compat/node/*.mjs, compat/python/*_adapter.py,
compat/browser/agents_realtime_adapter.py) that plays the scenario's turns with the framework's own API and
nothing else — whatever the framework does after a fault is what the checkers judge. Each cell is one
`rtsim run SCENARIO --tls --client-cmd CMD` (printed under its table). There is a table per transport, since
WebSocket and WebRTC have fault families of their own; the tables go to build/compat/matrix.md, and into
README.md between their markers with --readme (only the tables of the transports that ran).
Installed by `make compat` (compat/install.sh, and `make npm-browser` for the browser row): the frameworks'
venvs under build/compat/, npm under compat/node/ and build/npm-browser/.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from rtsim.scenarios.runner import ClientSpec, RunResult, run_matrix
from rtsim.scenarios.spec import LIBRARY, Scenario, load

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build" / "compat"
README = ROOT / "README.md"
BEGIN, END = "<!-- compat-matrix:begin -->", "<!-- compat-matrix:end -->"


@dataclass(frozen=True)
class Framework:
    name: str
    label: str  # the package and its pin, as the table shows it
    command: tuple[str, ...]  # relative to the repository root
    needs: str | None = None  # a file that exists once `make compat` installed it
    note: str = ""  # a row not run here, and why
    transport: str = "websocket"  # which faults apply: the WebSocket family, or the WebRTC one
    # The adapter creates RTSIM_READY_FILE once loaded and the fault timeline waits for it; rtsim's built-in
    # clients never create it (waited for, their faults would start only once they had exited).
    ready_file: bool = True

    @property
    def installed(self) -> bool:
        return self.needs is None or (ROOT / self.needs).exists()


def _python(venv: str, adapter: str) -> tuple[str, ...]:
    return (f"build/compat/{venv}/bin/python", f"compat/python/{adapter}")


FRAMEWORKS = (
    Framework(
        "openai-python",
        "openai (Python) 3.57.0, `realtime.connect(on_reconnecting=...)`",
        ("build/compat/openai-python/bin/python", "-m", "rtsim.clients.openai_sdk"),
        needs="build/compat/openai-python/bin/python",
        ready_file=False,
    ),
    Framework(
        "openai-node",
        "openai (Node) 7.59.0, `OpenAIRealtimeWS({reconnect: true})`",
        ("node", "compat/node/openai-sdk.mjs"),
        needs="compat/node/node_modules/openai",
    ),
    Framework(
        "agents-realtime-node",
        "@openai/agents-realtime 0.20.0, WebSocket (Node)",
        ("node", "compat/node/agents-realtime.mjs"),
        needs="compat/node/node_modules/@openai/agents-realtime",
    ),
    Framework(
        "agents-realtime-browser",
        "@openai/agents-realtime 0.20.0, WebRTC (headless Chromium)",
        (".venv/bin/python", "compat/browser/agents_realtime_adapter.py"),
        needs="build/npm-browser/node_modules/@openai/agents-realtime/dist/bundle/openai-realtime-agents.mjs",
        transport="webrtc",
    ),
    Framework(
        "openai-agents",
        "openai-agents (Python) 0.24.0, `agents.realtime`",
        _python("openai-agents", "openai_agents_adapter.py"),
        needs="build/compat/openai-agents/bin/python",
    ),
    Framework(
        "pipecat",
        "pipecat-ai[openai] 1.14.0, `OpenAIRealtimeLLMService`",
        _python("pipecat", "pipecat_adapter.py"),
        needs="build/compat/pipecat/bin/python",
    ),
    Framework(
        "livekit",
        "livekit-agents + livekit-plugins-openai 1.8.9, `RealtimeModel`",
        _python("livekit", "livekit_adapter.py"),
        needs="build/compat/livekit/bin/python",
    ),
)

PLAIN = ROOT / "compat" / "scenarios" / "text-and-voice.yaml"
# The columns: a plain text + voice turn, then what each fault family does to the framework. A WebSocket
# fault (a close frame, a dropped TCP connection) never touches a WebRTC call, so a WebRTC client meets the
# WebRTC family instead: the same question (does it notice, call again, and restore the conversation?).
COLUMNS = {
    "websocket": (
        ("text + voice turn", PLAIN),
        ("1006 drop", LIBRARY / "drop-mid-response.yaml"),
        ("close 1011", LIBRARY / "close-1011.yaml"),
        ("session cap", LIBRARY / "cap-60min-rotation.yaml"),
        ("token expiry", LIBRARY / "token-expiry-before-reconnect.yaml"),
    ),
    "webrtc": (
        ("text + voice turn", PLAIN),
        ("data channel closed", LIBRARY / "webrtc" / "webrtc-datachannel-close.yaml"),
        ("DTLS close_notify", LIBRARY / "webrtc" / "webrtc-dtls-close.yaml"),
        ("SCTP abort", LIBRARY / "webrtc" / "webrtc-sctp-abort.yaml"),
        ("ICE black hole", LIBRARY / "webrtc" / "webrtc-ice-blackhole.yaml"),
        ("session cap", LIBRARY / "webrtc" / "webrtc-cap-rotation.yaml"),
    ),
}
TITLES = {"websocket": "WebSocket clients", "webrtc": "WebRTC clients"}
TURN_CHECKS = ("answer", "no_lost_turns")  # the plain column's checks a working client must pass
CONTEXT_COLUMN = "context after reconnect"  # the context_restored check of the run named here
CONTEXT_FROM = {"websocket": "close-1011", "webrtc": "webrtc-datachannel-close"}


def cell_command(scenario_path: Path, framework: Framework) -> str:
    relative = scenario_path.relative_to(ROOT) if scenario_path.is_relative_to(ROOT) else scenario_path
    # `rtsim run NAME` finds a built-in scenario anywhere under the library.
    target = scenario_path.stem if scenario_path.is_relative_to(LIBRARY) else str(relative)
    command = shlex.quote(shlex.join(framework.command))
    ready = " --client-ready-file" if framework.ready_file else ""
    return f".venv/bin/rtsim run {target} --tls{ready} --client-cmd {command}"


def brief(reason: str, limit: int = 160) -> str:
    """A checker's reason fit for a table cell: no session ids, no pipes or newlines, at most `limit`."""
    text = re.sub(r"\bsess_\w+", "the session", reason).replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def verdict_text(result: RunResult) -> str:
    if result.passed:
        return "PASS"
    failing = [v for v in result.verdicts if not v.ok]
    if not failing:
        return "FAIL — the client was killed"
    first = failing[0]
    others = sorted({v.name for v in failing[1:]} - {first.name})
    also = f" (also: {', '.join(others)})" if others else ""
    return f"FAIL — {first.name}: {brief(first.reason)}{also}"


def context_text(result: RunResult) -> str:
    """Whether the conversation survived into the new session; a client that never opened one has nothing
    to restore, which is no pass."""
    verdict = next((v for v in result.verdicts if v.name == "context_restored"), None)
    if verdict is None:
        return "—"
    if (result.figures.get("sessions") or 0) < 2:
        return "— (no new session)"
    return "PASS" if verdict.ok else "FAIL — " + brief(verdict.reason)


def table(
    results: dict[tuple[str, str], RunResult], frameworks: list[Framework], seconds: float, transport: str
) -> str:
    """The table of the frameworks of one transport, with the command of each cell under it."""
    columns = COLUMNS[transport]
    frameworks = [f for f in frameworks if f.transport == transport]
    header = ["client", *(name for name, _ in columns), CONTEXT_COLUMN]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for framework in frameworks:
        cells = [framework.label]
        if framework.note or not framework.installed:
            reason = framework.note or "not installed (`make compat`)"
            lines.append("| " + " | ".join([*cells, *([reason] + ["—"] * len(columns))]) + " |")
            continue
        for _, path in columns:
            result = results.get((framework.name, path.stem))
            cells.append(verdict_text(result) if result is not None else "not run")
        context = results.get((framework.name, CONTEXT_FROM[transport]))
        cells.append(context_text(context) if context is not None else "not run")
        lines.append("| " + " | ".join(cells) + " |")
    run_here = [f for f in frameworks if not f.note and f.installed]
    cells_run = sum(1 for (name, _) in results if name in {f.name for f in run_here})
    stamp = time.strftime("%Y-%m-%d", time.gmtime())
    lines += [
        "",
        f"Run {stamp} over `--tls`: {cells_run} cells in {seconds:.0f} s (installs excluded).",
        "Each cell is one command (from the repository root, after `make compat`):",
        "",
    ]
    for framework in run_here:
        for column, path in columns:
            lines.append(f"- {framework.name} × {column}: `{cell_command(path, framework)}`")
    return "\n".join(lines) + "\n"


def markers(transport: str) -> tuple[str, str]:
    """The README's markers around one transport's table (the WebSocket one keeps the original names)."""
    if transport == "websocket":
        return BEGIN, END
    return f"<!-- compat-matrix-{transport}:begin -->", f"<!-- compat-matrix-{transport}:end -->"


def write_readme(text: str, transport: str = "websocket") -> None:
    begin, end = markers(transport)
    readme = README.read_text()
    if begin not in readme or end not in readme:
        raise SystemExit(f"README.md has no {begin} … {end} markers")
    head, rest = readme.split(begin, 1)
    _, tail = rest.split(end, 1)
    README.write_text(f"{head}{begin}\n{text}{end}{tail}")


def absolute(command: tuple[str, ...]) -> list[str]:
    """The command with its program made absolute when it is a path in the repository (a venv's python)."""
    program = str(ROOT / command[0]) if "/" in command[0] else command[0]
    return [program, *(str(ROOT / arg) if arg.startswith("compat/") else arg for arg in command[1:])]


async def run(
    frameworks: list[Framework], jobs: int, out_dir: Path, transport: str
) -> dict[tuple[str, str], RunResult]:
    """Every cell of one transport's table: its frameworks (those installed) × its columns."""
    scenarios: list[Scenario] = [load(path) for _, path in COLUMNS[transport]]
    # The adapters create RTSIM_READY_FILE once their framework has loaded (imports take up to ~17 s).
    clients = [
        ClientSpec(f.name, absolute(f.command), ready_file=f.ready_file)
        for f in frameworks
        if f.transport == transport and f.installed and not f.note
    ]
    if not clients:
        return {}
    results = await run_matrix(
        scenarios,
        clients,
        jobs=jobs,
        out_dir=out_dir,
        tls=True,
        progress=lambda line: print("  " + line, flush=True),
    )
    return {(r.client.name, r.scenario.name): r for r in results}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", action="append", metavar="NAME", help="only these frameworks (repeatable)")
    parser.add_argument("--jobs", type=int, default=3, help="runs at once (default 3)")
    parser.add_argument(
        "--readme",
        action="store_true",
        help="write the tables into README.md (only those of the transports whose frameworks ran)",
    )
    args = parser.parse_args(argv)
    frameworks = [f for f in FRAMEWORKS if not args.only or f.name in args.only]
    out_dir = BUILD / "runs" / time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    results: dict[tuple[str, str], RunResult] = {}
    tables: dict[str, str] = {}
    seconds: dict[str, float] = {}
    for transport in COLUMNS:
        if not any(f.transport == transport for f in frameworks):
            continue
        started = time.monotonic()
        results |= asyncio.run(run(frameworks, args.jobs, out_dir, transport))
        seconds[transport] = time.monotonic() - started
        tables[transport] = table(results, frameworks, seconds[transport], transport)
    text = "\n".join(f"### {TITLES[transport]}\n\n{body}" for transport, body in tables.items())
    BUILD.mkdir(parents=True, exist_ok=True)
    (BUILD / "matrix.md").write_text(text)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = {f"{c}×{s}": r.passed for (c, s), r in results.items()}
    (out_dir / "matrix.json").write_text(json.dumps({"seconds": seconds, "cells": summary}, indent=2))
    print(text)
    print(f"histories and client logs: {out_dir}")
    if args.readme:
        for transport, body in tables.items():
            write_readme(body, transport)
    # The matrix records findings; it fails only when a client cannot even get its plain turns answered.
    broken = [
        client
        for (client, scenario), result in results.items()
        if scenario == PLAIN.stem and any(v.name in TURN_CHECKS and not v.ok for v in result.verdicts)
    ]
    if broken:
        print(f"no answer to the plain turns: {', '.join(broken)}", file=sys.stderr)
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
