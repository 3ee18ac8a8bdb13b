"""`rtsim run`: the scenario matrix against clients, with a progress display, a table, JUnit and histories."""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from .progress import LiveProgress, live_wanted
from .report import write_report
from .runner import CLIENTS, READY_TIMEOUT, ClientSpec, RunResult, matrix_pairs, run_matrix
from .spec import ScenarioError, discover

# A WebSocket run uses about a second of CPU over its ~10 s (its client starting, then waiting on its
# timeline), so eight at a time keep a 2-core machine under half busy.
DEFAULT_JOBS = 8
FIGURES = ("sessions", "reconnects", "max_reconnect_gap_s", "rotations", "attempts", "answered")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "run",
        help="run scenarios against clients and check the recorded history",
        description="Run scenario files (or directories of them; the built-in library by default) against "
        "clients, each on its own embedded simulator, and check invariants over the history.",
    )
    parser.add_argument(
        "scenarios",
        nargs="*",
        metavar="SCENARIO|DIR",
        help="scenario files, directories, or built-in names (default: the built-in library)",
    )
    parser.add_argument(
        "--client",
        action="append",
        choices=sorted(CLIENTS),
        metavar="NAME",
        help="built-in client (repeatable; default: each scenario's `client:`, else its transport's "
        f"reference client): {', '.join(CLIENTS)}",
    )
    parser.add_argument(
        "--client-cmd",
        action="append",
        default=[],
        metavar="CMD",
        help="any program: run with OPENAI_BASE_URL, OPENAI_API_KEY and RTSIM_SCENARIO set",
    )
    parser.add_argument(
        "--client-ready-file",
        action="store_true",
        help="the --client-cmd programs create RTSIM_READY_FILE once loaded: the fault timeline waits for it "
        f"(at most {READY_TIMEOUT:.0f} s), so a slow-starting framework meets each fault at its moment",
    )
    parser.add_argument("--server", metavar="URL", help="use a running rtsim serve instead of embedded ones")
    parser.add_argument(
        "--tls",
        action="store_true",
        help="embedded simulators serve HTTPS/WSS from a local CA; clients get SSL_CERT_FILE and "
        "NODE_EXTRA_CA_CERTS naming it",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--jobs",
        type=int,
        default=DEFAULT_JOBS,
        help=f"runs at once (each has its own simulator; default {DEFAULT_JOBS}: a run mostly waits on its "
        "timeline)",
    )
    parser.add_argument(
        "--webrtc-jobs",
        type=int,
        metavar="N",
        help="WebRTC runs at once among them (default: two per core; media costs CPU the whole call)",
    )
    parser.add_argument("--junit", metavar="FILE", help="write a JUnit XML report")
    parser.add_argument("--out", default="runs", metavar="DIR", help="where histories and client logs go")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    parser.set_defaults(func=run_command)


def run_command(args: argparse.Namespace) -> int:
    try:
        scenarios = discover(args.scenarios)
    except ScenarioError as exc:
        print(f"rtsim run: {exc}", file=sys.stderr)
        return 2
    if args.list:
        for scenario in scenarios:
            print(f"{scenario.name:32} {scenario.description}")
        return 0
    clients = [ClientSpec.named(name) for name in (args.client or [])]
    clients += [ClientSpec.from_command(cmd, ready_file=args.client_ready_file) for cmd in args.client_cmd]
    # no client named: each scenario meets the reference client of its transport
    out_dir = Path(args.out) / time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    print(
        f"rtsim run: {len(scenarios)} scenario(s) × {len(clients) or 'their reference'} client(s), "
        f"{args.jobs} at a time; "
        f"histories in {out_dir}/",
        flush=True,
    )
    started = time.monotonic()
    matrix = functools.partial(
        run_matrix,
        scenarios,
        clients,
        seed=args.seed,
        jobs=args.jobs,
        webrtc_jobs=args.webrtc_jobs,
        out_dir=out_dir,
        server_url=args.server,
        tls=args.tls,
    )
    if live_wanted():
        with LiveProgress(matrix_pairs(scenarios, clients), args.jobs) as display:
            results = asyncio.run(matrix(on_start=display.started, on_done=display.finished))
    else:
        results = asyncio.run(matrix(progress=lambda line: print("  " + line, flush=True)))
    elapsed = time.monotonic() - started
    report = format_report(results, elapsed)
    print(report)
    (out_dir / "report.txt").write_text(report)
    html_path = write_report(results, out_dir / "report.html")
    print(f"HTML report: {html_path}")
    if args.junit:
        Path(args.junit).write_text(junit_xml(results, elapsed))
    return 0 if all(r.passed for r in results) else 1


def _figure_text(result: RunResult) -> str:
    figures = result.figures
    parts = [f"{name}={figures[name]}" for name in FIGURES if name in figures]
    return " ".join(parts)


def format_report(results: Sequence[RunResult], elapsed: float) -> str:
    """The table (scenario × client, pass/fail, key figures), then why each failure failed."""
    name_width = max((len(r.scenario.name) for r in results), default=8) + 2
    client_width = max((len(r.client.name) for r in results), default=6) + 2
    lines = [f"{'scenario':{name_width}}{'client':{client_width}}{'result':8}{'time':>7}  figures", ""]
    for result in sorted(results, key=lambda r: (r.client.name, r.scenario.name)):
        status = "PASS" if result.passed else "FAIL"
        lines.append(
            f"{result.scenario.name:{name_width}}{result.client.name:{client_width}}{status:8}"
            f"{result.seconds:6.1f}s  {_figure_text(result)}"
        )
    failed = [r for r in results if not r.passed]
    for result in failed:
        lines += ["", f"✗ {result.scenario.name} × {result.client.name}  (history: {result.history_path})"]
        for verdict in result.verdicts:
            if verdict.ok:
                continue
            lines.append(f"    {verdict.name}: {verdict.reason}")
            for record in verdict.evidence[:4]:
                lines.append(f"        {json.dumps(record, default=str)}")
        if result.faults:
            lines.append("    faults: " + "; ".join(result.faults))
    passed = len(results) - len(failed)
    lines += ["", f"{passed} passed, {len(failed)} failed in {elapsed:.1f}s"]
    return "\n".join(lines)


def junit_xml(results: Sequence[RunResult], elapsed: float) -> str:
    cases = []
    for result in results:
        name = quoteattr(result.scenario.name)
        classname = quoteattr(f"rtsim.{result.client.name}")
        body = ""
        if not result.passed:
            reasons = "\n".join(f"{v.name}: {v.reason}" for v in result.verdicts if not v.ok)
            body = (
                f"<failure message={quoteattr(reasons.splitlines()[0] if reasons else 'failed')}>"
                f"{escape(reasons)}</failure>"
            )
        cases.append(
            f'<testcase classname={classname} name={name} time="{result.seconds:.3f}">{body}</testcase>'
        )
    failures = sum(not r.passed for r in results)
    return (
        f'<?xml version="1.0" encoding="utf-8"?>\n<testsuite name="rtsim" tests="{len(results)}" '
        f'failures="{failures}" time="{elapsed:.3f}">\n' + "\n".join(cases) + "\n</testsuite>\n"
    )
