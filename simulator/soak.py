"""`rtsim soak`: many sessions under random session faults for a while, then what was left behind.

A server runs in this process on its own thread and event loop (so its loop-lag figure is its own); N client
slots each open WebSocket sessions back to back for M minutes. Every session asks for a spoken reply and,
after a random delay, gets one random session fault from the catalogue through the control API (seeded, so
a run can be repeated). At the end: leaked sessions, server tasks and fds against the baseline, RSS growth,
server exceptions and the longest event-loop stall.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import random
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from .faults import CATALOGUE
from .server import RealtimeServer, ServerConfig

# Parameters each WebSocket session fault is given (chosen at random); kinds not listed take none.
FAULT_PARAMS: dict[str, list[dict[str, Any]]] = {
    "drop": [{}, {"mid_frame": True}],
    "close": [{}, {"code": 1011, "reason": "soak"}],
    "stall": [{"seconds": 0.5}, {"seconds": 2}],
    "latency": [{"ms": 50, "jitter_ms": 20}],
    "slow-first-delta": [{"ms": 200}],
    "duplicate-event": [{"type": "response.output_audio.delta", "count": 2}, {"type": "response.done"}],
    "reorder-events": [{"count": 3}],
    "expire-session": [{}, {"ending": "close"}],
    "idle-timeout": [{"seconds": 0.5}],
    "benign-error": [{"code": "item_not_found"}],
}
SESSION_TIMEOUT = 20.0


def websocket_faults() -> list[str]:
    return sorted(
        name for name, kind in CATALOGUE.items() if kind.scope == "session" and "websocket" in kind.transports
    )


def rss_mb() -> tuple[float, float]:
    """(current, peak) resident memory of this process in MB."""
    status = open("/proc/self/status").read()
    current = int(re.search(r"VmRSS:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
    peak = int(re.search(r"VmHWM:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
    return current / 1024, peak / 1024


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


class _ErrorCounter(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage()[:200])


@dataclass
class SoakReport:
    sessions: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    client_errors: Counter[str] = field(default_factory=Counter)
    leaked_sessions: int = 0
    leaked_tasks: int = 0
    leaked_fds: int = 0
    rss_start_mb: float = 0.0
    rss_end_mb: float = 0.0
    rss_peak_mb: float = 0.0
    server_exceptions: list[str] = field(default_factory=list)
    max_loop_lag_ms: float = 0.0

    def lines(self) -> list[str]:
        return [
            f"sessions          {self.sessions}",
            f"faults            {sum(self.faults.values())} ({len(self.faults)} kinds)",
            f"leaked sessions   {self.leaked_sessions}",
            f"leaked tasks      {self.leaked_tasks}",
            f"leaked fds        {self.leaked_fds}",
            f"rss MB            {self.rss_start_mb:.0f} -> {self.rss_end_mb:.0f} "
            f"(growth {self.rss_end_mb - self.rss_start_mb:+.0f}, peak {self.rss_peak_mb:.0f})",
            f"server exceptions {len(self.server_exceptions)}",
            f"max loop stall ms {self.max_loop_lag_ms}",
        ] + [f"  exception: {message}" for message in self.server_exceptions[:5]]

    @property
    def clean(self) -> bool:
        return not (self.leaked_sessions or self.leaked_tasks > 0 or self.server_exceptions)


class ServerThread:
    """A RealtimeServer on its own event loop in a daemon thread (its loop lag is then its own)."""

    def __init__(self, config: ServerConfig) -> None:
        self.loop = asyncio.new_event_loop()
        self.exceptions: list[str] = []
        self.loop.set_exception_handler(lambda _loop, context: self.exceptions.append(str(context)[:200]))
        self.thread = threading.Thread(target=self.loop.run_forever, name="rtsim-soak-server", daemon=True)
        self.thread.start()
        self.server = RealtimeServer(config)

    def call(self, coro: Any, timeout: float = 30.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def task_count(self) -> int:
        async def count() -> int:
            return len(asyncio.all_tasks())

        return int(self.call(count()))

    def stop(self) -> None:
        self.call(self.server.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


async def _one_session(
    port: int, slot: int, rng: random.Random, report: SoakReport, kinds: list[str]
) -> None:
    url = f"ws://127.0.0.1:{port}/v1/realtime?model=gpt-realtime"
    headers = {"Authorization": f"Bearer sk-soak-{slot % 16}"}
    kind = rng.choice(kinds)
    params = rng.choice(FAULT_PARAMS.get(kind, [{}]))
    delay = rng.uniform(0.0, 1.5)
    try:
        async with connect(url, additional_headers=headers, max_size=None, open_timeout=10) as ws:
            created = json.loads(await asyncio.wait_for(ws.recv(), 10))
            session_id = created["session"]["id"]
            item = {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "Tell me more."}],
            }
            await ws.send(json.dumps({"type": "conversation.item.create", "item": item}))
            await ws.send(json.dumps({"type": "response.create"}))

            async def fault() -> None:
                await asyncio.sleep(delay)
                body = {"kind": kind, "params": params, "target": {"session": session_id}}
                async with (
                    aiohttp.ClientSession() as client,
                    client.post(f"http://127.0.0.1:{port}/_rtsim/faults", json=body) as response,
                ):
                    if response.status in (200, 201):
                        report.faults[kind] += 1
                    elif response.status != 404:  # 404: the session had already ended
                        report.client_errors[f"fault {kind} {response.status}"] += 1

            injector = asyncio.create_task(fault())
            deadline = time.monotonic() + SESSION_TIMEOUT
            with contextlib.suppress(ConnectionClosed, TimeoutError):
                while (left := deadline - time.monotonic()) > 0:
                    event = json.loads(await asyncio.wait_for(ws.recv(), left))
                    if event.get("type") == "response.done":
                        break
            with contextlib.suppress(Exception):
                await asyncio.wait_for(injector, 5)
    except (OSError, InvalidStatus, ConnectionClosed, TimeoutError) as exc:
        report.client_errors[type(exc).__name__] += 1
    report.sessions += 1


async def _slot(port: int, slot: int, seed: int, until: float, report: SoakReport, kinds: list[str]) -> None:
    rng = random.Random(seed * 100_003 + slot)
    while time.monotonic() < until:
        await _one_session(port, slot, rng, report, kinds)


def soak(sessions: int, minutes: float, *, seed: int = 0, pacing: float = 1.0) -> SoakReport:
    """Run the soak and measure what it left behind (see the module docstring)."""
    errors = _ErrorCounter()
    logging.getLogger().addHandler(errors)
    report = SoakReport()
    server = ServerThread(ServerConfig(port=0, seed=seed, pacing=pacing, history_limit=100_000))
    try:
        server.call(server.server.start())
        port = server.server.port
        tasks_before, fds_before = server.task_count(), open_fds()
        report.rss_start_mb = rss_mb()[0]
        kinds = websocket_faults()

        async def clients() -> None:
            until = time.monotonic() + minutes * 60
            await asyncio.gather(*(_slot(port, slot, seed, until, report, kinds) for slot in range(sessions)))

        asyncio.run(clients())
        settle = time.monotonic() + 15
        while server.server.carriers and time.monotonic() < settle:
            time.sleep(0.2)
        time.sleep(0.5)  # let teardowns finish
        report.leaked_sessions = len(server.server.carriers)
        report.leaked_tasks = max(0, server.task_count() - tasks_before)
        report.leaked_fds = max(0, open_fds() - fds_before)
        report.rss_end_mb, report.rss_peak_mb = rss_mb()
        report.max_loop_lag_ms = server.server.loop_lag.max_lag_ms
    finally:
        server.stop()
        logging.getLogger().removeHandler(errors)
    report.server_exceptions = server.exceptions + errors.messages
    return report


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "soak",
        help="N sessions x random session faults x M minutes: leaks, RSS growth, exceptions, loop stall",
        description=__doc__.splitlines()[0] if __doc__ else None,
    )
    parser.add_argument(
        "--sessions", type=int, default=50, metavar="N", help="concurrent client slots (default 50)"
    )
    parser.add_argument("--minutes", type=float, default=0.5, metavar="M", help="how long (default 0.5)")
    parser.add_argument("--seed", type=int, default=0, help="seed for the fault choices and the server")
    parser.add_argument("--pacing", type=float, default=1.0, help="server audio pacing (1 = real time)")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    report = soak(args.sessions, args.minutes, seed=args.seed, pacing=args.pacing)
    for line in report.lines():
        print(line)
    return 0 if report.clean else 1
