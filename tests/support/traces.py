"""Trace helpers: rtsim processes printing a base URL, a recorded trace rewritten as a HAR or as plain JSON
Lines, and the official SDK driving one text turn."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from openai import AsyncOpenAI
from websockets.exceptions import ConnectionClosed

ROOT = Path(__file__).resolve().parent.parent.parent


def start_rtsim(*args: str) -> tuple[subprocess.Popen[str], str]:
    """`rtsim ARGS` as a process; it and the base URL it printed first."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "rtsim.simulator.cli", *args],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=dict(os.environ),
    )
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    assert url.startswith("http://127.0.0.1:") and url.endswith("/v1"), url
    return proc, url


def stop(proc: subprocess.Popen[str]) -> str:
    """SIGTERM, wait, and what it printed after its URL."""
    if proc.poll() is None:
        proc.terminate()
    try:
        out, _ = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return out or ""


def to_har(
    records: list[dict[str, Any]], url: str = "wss://api.openai.com/v1/realtime?model=gpt-realtime"
) -> dict:
    """The trace's WebSocket frames as Chrome's DevTools save them (one entry per connection)."""
    entries: dict[str, dict[str, Any]] = {}
    for record in records:
        if record["kind"] == "handshake" and record.get("accepted"):
            entries[record["conn"]] = {
                "request": {
                    "method": "GET",
                    "url": url,
                    "headers": [{"name": "Authorization", "value": "Bearer sk-x"}],
                },
                "response": {"status": 101, "headers": []},
                "_resourceType": "websocket",
                "_webSocketMessages": [],
            }
        elif record["kind"] == "event" and record.get("conn") in entries:
            entries[record["conn"]]["_webSocketMessages"].append(
                {
                    "type": "send" if record["dir"] == "in" else "receive",
                    "time": 1_700_000_000.0 + record["t"],
                    "opcode": 1,
                    "data": json.dumps(record["event"]),
                }
            )
    return {"log": {"version": "1.2", "creator": {"name": "WebInspector"}, "entries": list(entries.values())}}


def to_plain_jsonl(records: list[dict[str, Any]]) -> str:
    """The first connection's events as `{"t", "direction", "event"}` lines, then its close."""
    conn = next(r["conn"] for r in records if r["kind"] == "handshake" and r.get("accepted"))
    lines = [
        {"t": r["t"], "direction": r["dir"], "event": r["event"]}
        for r in records
        if r["kind"] == "event" and r.get("conn") == conn
    ]
    close = next(r for r in records if r["kind"] == "close" and r.get("conn") == conn)
    lines.append(
        {"t": close["t"], "close": {"code": close["code"], "reason": close["reason"], "by": close["by"]}}
    )
    return "".join(json.dumps(line) + "\n" for line in lines)


USER_TEXT = {
    "type": "message",
    "role": "user",
    "content": [{"type": "input_text", "text": "My name is Alice."}],
}


async def sdk_text_turn(
    base_url: str,
    key: str,
    *,
    send_item: bool = True,
    count: int | None = None,
    after_response: Callable[[], Awaitable[None]] | None = None,
) -> tuple[list[tuple[str, str]], ConnectionClosed | None]:
    """The SDK opens a session and sends one text turn after session.created (only `response.create` without
    `send_item`); it reads until the connection ends (or `count` events): the (type, event_id) of every server
    event it saw, and how the connection ended. `after_response` runs once the first response.done is in."""
    client = AsyncOpenAI(base_url=base_url, api_key=key)
    seen: list[tuple[str, str]] = []
    ended: ConnectionClosed | None = None
    async with client.realtime.connect(model="gpt-realtime") as conn:
        try:
            async with asyncio.timeout(20):
                async for event in conn:
                    seen.append((event.type, getattr(event, "event_id", "")))
                    if event.type == "session.created":
                        if send_item:
                            await conn.conversation.item.create(item=USER_TEXT)  # type: ignore[arg-type]
                        await conn.response.create()
                    if event.type == "response.done" and after_response is not None:
                        await after_response()
                    if count is not None and len(seen) >= count:
                        break
        except ConnectionClosed as exc:
            ended = exc
    return seen, ended
