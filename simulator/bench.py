"""`rtsim bench`: figures, not pass/fail. How many sessions one `rtsim serve` process holds.

`rtsim bench sessions` starts `rtsim serve` as its own process, opens N WebSocket sessions from this
process, has each ask for a long spoken reply, and measures how late each realtime-paced audio delta
arrives against its schedule (the request + the first delta's due time + k × 100 ms), plus the server's
CPU use. Client and server share this machine's cores, as they would on a CI runner.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import os
import statistics
import time
from typing import Any

from .demo import start_server
from .engine.state import Limits

REPLY_TEXT = "Please repeat after me: " + "the quick brown fox jumps over the lazy dog " * 3
# When the first audio delta is due after the request, on the default session's timeline: the model's
# latency, then the gap between the audio part's announcement and its first audio.
FIRST_DELTA_DUE = Limits().response_latency + Limits().audio_start_delay
DELTA_PREFIX = '{"type":"response.output_audio.delta"'


def _cpu_seconds(pid: int) -> float:
    """CPU seconds of a process and its children (the workers of `rtsim serve --workers N`)."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as handle:
            children = [int(child) for child in handle.read().split()]
    except OSError:
        children = []
    return own + sum(_cpu_seconds(child) for child in children if os.path.exists(f"/proc/{child}"))


async def _one_session(
    url: str, start_at: float, lateness: list[float], counts: list[int], jitter: list[float]
) -> None:
    """One session's reply: each delta's lateness against the request (+ k x 100 ms) into `lateness`,
    and against the session's own first delta into `jitter` (pacing alone, without the start latency)."""
    from websockets.asyncio.client import connect

    async with connect(
        url, additional_headers={"Authorization": "Bearer sk-bench"}, max_size=None, compression=None
    ) as ws:
        await ws.recv()  # session.created
        await asyncio.sleep(max(0.0, start_at - time.monotonic()))
        await ws.send(
            json.dumps(
                {
                    "type": "conversation.item.create",
                    "item": {
                        "type": "message",
                        "role": "user",
                        "content": [{"type": "input_text", "text": REPLY_TEXT}],
                    },
                }
            )
        )
        await ws.send('{"type":"response.create"}')
        first_due = time.monotonic() + FIRST_DELTA_DUE  # delta k is due k × 100 ms after this
        k, first = 0, 0.0
        async for message in ws:
            assert isinstance(message, str)
            if message.startswith(DELTA_PREFIX):
                now = time.monotonic()
                lateness.append(now - (first_due + k * 0.1))
                first = first or now
                jitter.append(now - (first + k * 0.1))
                k += 1
            elif message.startswith('{"type":"response.done"'):
                break
        counts.append(k)


Share = tuple[list[float], int, int, list[float]]


async def _client_share(base_url: str, sessions: int, start_at: float) -> Share:
    url = base_url.replace("http://", "ws://") + "/realtime?model=gpt-realtime"
    lateness: list[float] = []
    counts: list[int] = []
    jitter: list[float] = []
    starts = [start_at + i * 0.1 / sessions for i in range(sessions)]  # the requests spread over 100 ms
    results = await asyncio.gather(
        *(_one_session(url, start, lateness, counts, jitter) for start in starts), return_exceptions=True
    )
    return lateness, len(counts), sum(isinstance(r, BaseException) for r in results), jitter


def _client_process(base_url: str, sessions: int, start_at: float) -> tuple[Share, float]:
    """One load-generator process's share, and the CPU seconds it used (is the generator saturating?)."""
    before = time.process_time()
    share = asyncio.run(_client_share(base_url, sessions, start_at))
    return share, time.process_time() - before


def _measure(base_url: str, sessions: int, ramp: float, procs: int) -> dict[str, Any]:
    """Spread the sessions over `procs` client processes so the clients are not what saturates."""
    start_at = time.monotonic() + ramp + 0.5 * procs  # CLOCK_MONOTONIC is shared by the processes
    shares = [sessions // procs + (1 if i < sessions % procs else 0) for i in range(procs)]
    with concurrent.futures.ProcessPoolExecutor(procs) as pool:
        answers = list(pool.map(_client_process, [base_url] * procs, shares, [start_at] * procs))
    parts = [share for share, _ in answers]
    lateness = sorted(x for part in parts for x in part[0]) or [0.0]
    jitter = sorted(x for part in parts for x in part[3]) or [0.0]
    wall = time.monotonic() - start_at
    return {
        "sessions": sessions,
        "client_procs": procs,
        "completed": sum(p[1] for p in parts),
        "failed": sum(p[2] for p in parts),
        "deltas": len(lateness),
        "p50_ms": round(statistics.median(lateness) * 1000, 1),
        "p99_ms": round(lateness[int(len(lateness) * 0.99) - 1] * 1000, 1),
        "max_ms": round(lateness[-1] * 1000, 1),
        # the same deltas against each session's own first delta: pacing alone, without start latency
        "paced_p99_ms": round(jitter[int(len(jitter) * 0.99) - 1] * 1000, 1),
        "client_cpu_pct": round(100 * sum(cpu for _, cpu in answers) / wall, 1) if wall > 0 else None,
    }


def _max_loop_lag_ms(base_url: str) -> float | None:
    """The server's longest event-loop stall so far, from its control API's summary."""
    import urllib.request

    root = base_url.removesuffix("/v1")
    try:
        with urllib.request.urlopen(f"{root}/_rtsim/summary", timeout=10) as response:
            return json.loads(response.read()).get("max_loop_lag_ms")
    except OSError:
        return None


def measure_with_cpu(
    base_url: str, sessions: int, server_pid: int, *, ramp: float = 2.0, procs: int = 2
) -> dict[str, Any]:
    """One load level against the server at `base_url` (process `server_pid`), with its CPU use."""
    cpu_before, wall_before = _cpu_seconds(server_pid), time.monotonic()
    row = _measure(base_url, sessions, ramp, procs)
    cpu = _cpu_seconds(server_pid) - cpu_before
    row["server_cpu_pct"] = round(100 * cpu / (time.monotonic() - wall_before), 1)
    audio_s = row["deltas"] * 0.1
    row["server_cpu_us_per_audio_s"] = round(cpu / audio_s * 1e6) if audio_s else None
    return row


def run_sessions(levels: list[int], *, ramp: float = 2.0, procs: int = 2) -> list[dict[str, Any]]:
    proc, base_url = start_server()
    rows = []
    try:
        for level in levels:
            row = measure_with_cpu(base_url, level, proc.pid, ramp=ramp, procs=procs)
            row["server_max_loop_lag_ms"] = _max_loop_lag_ms(base_url)  # since the server started
            rows.append(row)
            print(json.dumps(row), flush=True)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    return rows


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("bench", help="print performance figures (not a test)")
    targets = parser.add_subparsers(dest="target", required=True)
    sessions = targets.add_parser("sessions", help="concurrent sessions receiving realtime-paced audio")
    sessions.add_argument(
        "--levels",
        default="50,200,500,1000",
        help="comma-separated session counts to try (default 50,200,500,1000)",
    )
    sessions.add_argument("--client-procs", type=int, default=2, help="client processes (default 2)")
    sessions.set_defaults(func=lambda args: _print_sessions(args))
    sip = targets.add_parser("sip", help="SIP ring-to-accepted time and idle CPU per accepted call")
    sip.add_argument("--levels", default="1,10,50", help="comma-separated call counts (default 1,10,50)")
    sip.set_defaults(func=_print_sip)
    webrtc = targets.add_parser("webrtc", help="WebRTC call setup time and concurrent calls per process")
    webrtc.add_argument("--levels", default="10,20,30,40", help="comma-separated call counts")
    webrtc.set_defaults(func=_print_webrtc)
    from .capacity import register as register_capacity

    register_capacity(targets)


def _print_webrtc(args: argparse.Namespace) -> int:
    from .webrtc.bench import bench_webrtc

    bench_webrtc([int(x) for x in args.levels.split(",") if x.strip()])
    return 0


def _print_sessions(args: argparse.Namespace) -> int:
    levels = [int(x) for x in args.levels.split(",") if x.strip()]
    print(f"reply: {len(REPLY_TEXT)} chars of transcript per session; "
          f"lateness = arrival - (request sent + {FIRST_DELTA_DUE * 1000:g} ms + k*100 ms)")
    run_sessions(levels, procs=args.client_procs)
    return 0


def _print_sip(args: argparse.Namespace) -> int:
    from .sip_bench import bench_sip

    bench_sip([int(x) for x in args.levels.split(",") if x.strip()])
    return 0
