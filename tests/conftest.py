"""Shared fixtures: an in-process server on a real loopback port, engine factories, schema validators."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from rtsim.simulator.engine import Session
from rtsim.simulator.server import RealtimeServer, ServerConfig
from tests.support.engine import make_session

ROOT = Path(__file__).resolve().parent.parent

# The pytest plugin's own tests run small suites of their own.
pytest_plugins = ["pytester"]


@pytest.fixture
def engine() -> Callable[..., Session]:
    return make_session


@pytest.fixture
async def server_factory() -> AsyncIterator[Callable[..., Any]]:
    servers: list[RealtimeServer] = []

    async def start(**config: Any) -> RealtimeServer:
        server = RealtimeServer(ServerConfig(**config))
        await server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.stop()


@pytest.fixture
async def server(server_factory: Callable[..., Any]) -> RealtimeServer:
    return await server_factory(pacing=0.0)


@pytest.fixture
def serve_process() -> Iterator[Callable[..., tuple[subprocess.Popen[str], str]]]:
    """`rtsim serve` as a user runs it: a real process; returns it and the base URL it printed."""
    procs: list[subprocess.Popen[str]] = []

    def start(*args: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen[str], str]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "rtsim.simulator.cli", "serve", "--port", "0", *args],
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env={**os.environ, **(env or {})},
        )
        procs.append(proc)
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/v1"), url
        return proc, url

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
