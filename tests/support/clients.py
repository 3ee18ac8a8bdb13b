"""Client-process helpers: run a client against a server, read its log."""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from rtsim.clients import common
from rtsim.simulator.server import RealtimeServer
from rtsim.simulator.tokens import key_id

KEY = "sk-clients-test-key"
KEY_ID = key_id(KEY)
# Compressed timing for the reference client: small backoff, fast keepalive and response watchdog.
FAST = {
    "RTSIM_BACKOFF_BASE": "0.05",
    "RTSIM_BACKOFF_CAP": "0.4",
    "RTSIM_PING_INTERVAL": "0.5",
    "RTSIM_PING_TIMEOUT": "1",
    "RTSIM_RESPONSE_TIMEOUT": "1.5",
    "RTSIM_OPEN_TIMEOUT": "3",
    "RTSIM_SHUTDOWN_GRACE": "1",
}
NAME_TURNS = [{"at": 0.1, "say": "My name is Alice."}, {"at": 1.4, "say": "What is my name?"}]

ServerFactory = Callable[..., Awaitable[RealtimeServer]]


# ---- helpers -----------------------------------------------------------------------------------------------


def write_scenario(tmp_path: Path, turns: list[dict[str, Any]], end_at: float, **extra: Any) -> str:
    path = tmp_path / "scenario.json"
    path.write_text(
        json.dumps({"name": "test", "model": "gpt-realtime", "turns": turns, "end_at": end_at, **extra})
    )
    return str(path)


def client_env(server: RealtimeServer, scenario: str, key: str = KEY, **knobs: str) -> dict[str, str]:
    return {
        "OPENAI_BASE_URL": server.base_url,
        "OPENAI_API_KEY": key,
        "RTSIM_SCENARIO": scenario,
        "RTSIM_SEED": "7",
        **knobs,
    }


async def run_client(module: ModuleType, env: Mapping[str, str]) -> tuple[int, list[dict[str, Any]]]:
    """Run a client's `main(env)` in-process; its exit code and its JSON log."""
    out = io.StringIO()
    code = await module.main(env, out=out)
    return code, [json.loads(line) for line in out.getvalue().splitlines()]


async def until(predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Poll until predicate() is truthy; returns its value."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, "timed out waiting for the condition"
        await asyncio.sleep(0.02)
    return value


def replies(server: RealtimeServer) -> list[tuple[str, str, str]]:
    """(session, status, text) of every response.done the server sent, in order."""
    return [
        (
            record["session"],
            record["event"]["response"]["status"],
            common.response_text(record["event"]["response"]),
        )
        for record in server.history.select(kind="event")
        if record["dir"] == "out" and record["event"].get("type") == "response.done"
    ]


def received(server: RealtimeServer, event_type: str, session: str | None = None) -> list[dict[str, Any]]:
    """Records of client events of one type the server received (optionally in one session)."""
    return [
        record
        for record in server.history.select(kind="event", session=session)
        if record["dir"] == "in" and record["event"].get("type") == event_type
    ]


def sent(server: RealtimeServer, event_type: str, session: str | None = None) -> list[dict[str, Any]]:
    return [
        record
        for record in server.history.select(kind="event", session=session)
        if record["dir"] == "out" and record["event"].get("type") == event_type
    ]


def sessions(server: RealtimeServer) -> list[dict[str, Any]]:
    return server.history.select(kind="session", key_id=KEY_ID)


def closes(server: RealtimeServer) -> dict[str, dict[str, Any]]:
    return {record["session"]: record for record in server.history.select(kind="close") if record["session"]}


def log_events(log: list[dict[str, Any]], event: str) -> list[dict[str, Any]]:
    return [entry for entry in log if entry["event"] == event]


def answered_with_context(server: RealtimeServer, session: str) -> bool:
    return (session, "completed", "Your name is Alice.") in replies(server)


# ---- reconnect with context restore ----------------------------------------------------------------------


