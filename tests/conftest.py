"""Shared fixtures: an in-process server on a real loopback port, engine factories, schema validators."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import TypeAdapter

from simulator.engine import Limits, Session
from simulator.model import ScriptedModel
from simulator.protocol import IdFactory
from simulator.server import RealtimeServer, ServerConfig

WALL = 1_750_000_000.0
ROOT = Path(__file__).resolve().parent.parent


@functools.cache
def ga_adapter() -> TypeAdapter[Any]:
    from openai.types.realtime import RealtimeServerEvent

    return TypeAdapter(RealtimeServerEvent)


@functools.cache
def beta_adapter() -> TypeAdapter[Any]:
    from openai.types.beta.realtime import RealtimeServerEvent

    return TypeAdapter(RealtimeServerEvent)


def validate_ga(event: dict[str, Any]) -> Any:
    return ga_adapter().validate_python(event)


def validate_beta(event: dict[str, Any]) -> Any:
    return beta_adapter().validate_python(event)


def make_session(
    *, limits: Limits | None = None, model: ScriptedModel | None = None, **kwargs: Any
) -> Session:
    session = Session(
        ids=IdFactory.seeded(0, "test"),
        model=model or ScriptedModel(),
        now=0.0,
        wall=WALL,
        limits=limits or Limits(pacing=0.0),
        **kwargs,
    )
    session.start(0.0)
    return session


def run_until_idle(session: Session, start: float = 0.0, horizon: float = 60.0) -> float:
    """Advance engine time deadline by deadline (not past the session cap); returns the time reached."""
    now = start
    while True:
        deadline = session.next_deadline()
        if deadline is None or deadline > horizon or deadline >= session.deadline:
            return now
        now = max(now, deadline)
        session.advance(now)


def user_text(text: str) -> dict[str, Any]:
    return {
        "type": "conversation.item.create",
        "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]},
    }


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
            [sys.executable, "-m", "simulator.cli", "serve", "--port", "0", *args],
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
