"""`rtsim toxiproxy`: run the embedded Toxiproxy server, or benchmark it with `--bench`."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from pathlib import Path

from .bench import run_benchmark
from .errors import ApiError
from .server import ToxiproxyServer


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "toxiproxy",
        help="run the embedded Toxiproxy-compatible server (or benchmark it)",
        description="Serve the Toxiproxy HTTP API until SIGINT/SIGTERM; prints the API URL once ready.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="API host (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8474, help="API port, 0 for any free port (default 8474)")
    parser.add_argument("--seed", type=int, default=None, help="seed toxicity draws, jitter and slicing")
    parser.add_argument("--config", type=Path, default=None, help="JSON file of proxies to populate at start")
    parser.add_argument("--bench", action="store_true", help="measure proxy overhead and throughput; exit")
    parser.add_argument(
        "--bench-round-trips", type=int, default=3000, help="round trips measured (default 3000)"
    )
    parser.add_argument(
        "--bench-megabytes", type=int, default=100, help="MB sent to measure throughput (default 100)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.bench:
        result = run_benchmark(round_trips=args.bench_round_trips, megabytes=args.bench_megabytes)
        print(result.report(), flush=True)
        return 0
    proxies = None
    if args.config is not None:
        try:
            proxies = json.loads(args.config.read_text())
        except (OSError, ValueError) as exc:
            print(f"rtsim toxiproxy: cannot read {args.config}: {exc}", file=sys.stderr)
            return 1
    return asyncio.run(_serve(args.host, args.port, args.seed, proxies))


async def _serve(host: str, port: int, seed: int | None, proxies: object) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    server = ToxiproxyServer(seed=seed)
    try:
        if proxies is not None:
            try:
                if not isinstance(proxies, list):
                    raise ValueError("the config must be a JSON array of proxies")
                await server.populate(proxies)
            except (ValueError, ApiError) as exc:
                print(f"rtsim toxiproxy: cannot populate the config: {exc}", file=sys.stderr)
                return 1
        try:
            url = await server.start(host, port)
        except OSError as exc:
            print(f"rtsim toxiproxy: cannot listen on {host}:{port}: {exc}", file=sys.stderr)
            return 1
        print(url, flush=True)
        await stop.wait()
    finally:
        await server.stop()
    return 0
