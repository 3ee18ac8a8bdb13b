"""`rtsim bench capacity`: how many sessions one `rtsim serve` process holds next to a bare server.

Two servers, each its own process, take turns under the same load generator (`bench.measure`: client
processes of their own, so the generator is not what saturates):

- `rtsim serve --pacing 1.0`: the full protocol, history in memory and server VAD (the default session);
- a bare `websockets` server that answers `response.create` by pushing, on the engine's timeline (the
  first delta 100 ms after the request, as the engine's audio start delay has it, then one per 100 ms), the
  very `response.output_audio.delta` frames rtsim's engine produces for the bench's reply — taken from an
  engine session run once at start-up and encoded once — and then a `response.done`.

For each server a search finds the largest session count whose p99 lateness (each delta against its own
audio timeline: the request + the engine's first-delta time + k x 100 ms) stays under the bound, with no
session failing; the command prints the counts and the ratio. The machine may be shared, so the searches
advance in lockstep (a probe of each server in turn) and `--rounds` repeats them; the ratio is of the
medians. Each row also has `paced_p99_ms` (each delta against its session's own first delta: pacing
without the start latency) and the CPU of the server (with its children) and of the load generator.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
from collections.abc import Callable
from typing import Any

from . import bench
from .demo import start_server

CHUNK_SECONDS = 0.1


def reply_frames() -> tuple[str, list[str], str]:
    """(session.created, the audio deltas, response.done) of the bench's reply, as rtsim's engine encodes
    them: one engine session, run once as fast as possible."""
    from .engine import Limits, Session
    from .model import ScriptedModel
    from .protocol import IdFactory, encode

    session = Session(
        ids=IdFactory.seeded(0, "capacity"), model=ScriptedModel(), now=0.0, wall=0.0, limits=Limits(pacing=0)
    )
    session.start(0.0)
    item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": bench.REPLY_TEXT}]}
    session.receive({"type": "conversation.item.create", "item": item}, 0.0)
    session.receive({"type": "response.create"}, 0.0)
    events = session.drain()
    now = 0.0
    while (deadline := session.next_deadline()) is not None and deadline < 60.0:
        now = max(now, deadline)
        session.advance(now)
        events += session.drain()
    by_type = {e["type"]: e for e in events}
    deltas = [encode(e) for e in events if e["type"] == "response.output_audio.delta"]
    return encode(by_type["session.created"]), deltas, encode(by_type["response.done"])


async def serve_bare(ready: Callable[[str], None]) -> None:
    """The bare server: pre-encoded frames, one `asyncio.sleep` per chunk, nothing else."""
    from websockets.asyncio.server import ServerConnection, serve

    from .signals import until_signalled

    created, deltas, done = reply_frames()

    async def handler(ws: ServerConnection) -> None:
        await ws.send(created)
        async for message in ws:
            if isinstance(message, str) and message.startswith('{"type":"response.create"'):
                break
        else:
            return
        loop = asyncio.get_running_loop()
        first_due = loop.time() + bench.FIRST_DELTA_DUE  # the engine's timeline: its first audio comes then
        for k, frame in enumerate(deltas):
            wait = first_due + k * CHUNK_SECONDS - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            await ws.send(frame)
        await ws.send(done)
        async for _ in ws:  # until the client closes, as a session does
            pass

    async with serve(handler, "127.0.0.1", 0, compression=None, max_size=None) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        ready(f"http://127.0.0.1:{port}/v1")
        await until_signalled()


def start_bare_server() -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "rtsim.simulator.capacity"], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line.startswith("http://"):
        proc.kill()
        raise RuntimeError(f"the bare server did not print its URL (got {line!r})")
    return proc, line


def passes(row: dict[str, Any], bound_ms: float) -> bool:
    return row["failed"] == 0 and row["completed"] == row["sessions"] and row["p99_ms"] < bound_ms


class Bracket:
    """The search for one server's largest passing session count: doubling from `start` (halving while
    even that fails), then bisection until the bracket is within `precision` (a fraction) of the count
    that passed. `found` is that count (0 if none passed)."""

    def __init__(self, *, start: int, limit: int, precision: float) -> None:
        self.start, self.limit, self.precision = start, limit, precision
        self.found = 0  # the largest count that passed
        self.failed: int | None = None  # the smallest count that failed

    def next(self) -> int | None:
        """The next count to try, or None when the search is over."""
        low, high = self.found, self.failed
        if high is None:
            if low >= self.limit:
                return None
            return self.start if low == 0 else min(self.limit, low * 2)
        if low == 0:
            return high // 2 if high > 1 else None
        if high - low <= max(1, int(low * self.precision)):
            return None
        return (low + high) // 2

    def record(self, sessions: int, passed: bool) -> None:
        if passed:
            self.found = max(self.found, sessions)
        elif self.failed is None or sessions < self.failed:
            self.failed = sessions


def run_capacity(
    *,
    start: int,
    limit: int,
    bound_ms: float,
    precision: float,
    rounds: int,
    procs: int,
    serve_args: list[str],
    workers: list[int] | None = None,
) -> dict[str, Any]:
    """The searches advance in lockstep (one probe of each server in turn), so a change in what else the
    machine runs meanwhile weighs on all alike. `workers`: also one `rtsim serve --workers N` per N (e.g.
    [1, 2] measures what a second worker brings), each against the same bare server."""
    servers: dict[str, tuple[subprocess.Popen[str], str]] = {}
    try:
        for count in workers or [1]:
            name = "rtsim" if count == 1 else f"rtsim-{count}w"
            extra = [f"--workers={count}"] if count != 1 else []
            servers[name] = start_server("--pacing", "1.0", *serve_args, *extra)
        servers["bare"] = start_bare_server()
        found: dict[str, list[int]] = {name: [] for name in servers}
        for round_index in range(1, rounds + 1):
            brackets = {name: Bracket(start=start, limit=limit, precision=precision) for name in servers}
            while any(b.next() is not None for b in brackets.values()):
                for name, (proc, url) in servers.items():
                    sessions = brackets[name].next()
                    if sessions is None:
                        continue
                    row = bench.measure_with_cpu(url, sessions, proc.pid, procs=procs)
                    brackets[name].record(sessions, passes(row, bound_ms))
                    print(json.dumps({"round": round_index, "server": name, **row}), flush=True)
            for name, bracket in brackets.items():
                found[name].append(bracket.found)
            held = ", ".join(f"{name} {bracket.found}" for name, bracket in brackets.items())
            print(f"round {round_index}: sessions held at p99 < {bound_ms:g} ms: {held}", flush=True)
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(timeout=20)
    medians = {name: statistics.median(counts) for name, counts in found.items()}
    bare = medians["bare"]
    result: dict[str, Any] = {
        **{f"{name}_sessions": counts for name, counts in found.items()},
        **{f"{name}_median": median for name, median in medians.items()},
        "ratio": round(medians["rtsim"] / bare, 3) if bare and "rtsim" in medians else None,
    }
    for name in medians:
        if name.startswith("rtsim-"):
            result[f"{name}_ratio"] = round(medians[name] / bare, 3) if bare else None
    print(json.dumps(result), flush=True)
    return result


def register(targets: argparse._SubParsersAction) -> None:
    parser = targets.add_parser(
        "capacity",
        help="sessions at p99 lateness under a bound: rtsim serve against a bare websockets server",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--start", type=int, default=200, help="first session count tried (default 200)")
    parser.add_argument("--limit", type=int, default=4000, help="largest session count tried (default 4000)")
    parser.add_argument("--p99-ms", type=float, default=100.0, help="lateness bound (default 100 ms)")
    parser.add_argument(
        "--precision", type=float, default=0.05, help="stop bisecting within this fraction (default 0.05)"
    )
    parser.add_argument("--rounds", type=int, default=1, help="repeat the searches (default 1)")
    parser.add_argument("--client-procs", type=int, default=2, help="load-generator processes (default 2)")
    parser.add_argument(
        "--serve-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument for rtsim serve (repeatable), e.g. --serve-arg=--loop=uvloop",
    )
    parser.add_argument(
        "--workers",
        default="1",
        metavar="N[,N...]",
        help="rtsim serve --workers counts to search, each against the bare server (default 1; e.g. 1,2)",
    )
    parser.set_defaults(func=_print_capacity)


def _print_capacity(args: argparse.Namespace) -> int:
    print(
        f"reply: {len(bench.REPLY_TEXT)} chars of transcript per session, pacing 1.0; "
        f"lateness = arrival - (request sent + {bench.FIRST_DELTA_DUE * 1000:g} ms + k*100 ms)",
        flush=True,
    )
    run_capacity(
        start=args.start,
        limit=args.limit,
        bound_ms=args.p99_ms,
        precision=args.precision,
        rounds=args.rounds,
        procs=args.client_procs,
        serve_args=list(args.serve_arg),
        workers=[int(n) for n in args.workers.split(",") if n.strip()],
    )
    return 0


if __name__ == "__main__":
    asyncio.run(serve_bare(lambda url: print(url, flush=True)))
