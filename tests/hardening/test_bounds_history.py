"""Finding 7: the history is bounded in bytes, and huge payloads are recorded as their sizes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from rtsim.simulator.history import MAX_RECORDED_STRING, History
from tests.support.wire import open_session, recv


async def test_huge_unknown_frames_are_recorded_by_size(server_factory: Callable[..., Any]) -> None:
    server = await server_factory(pacing=0.0)
    ws = await open_session(server, max_size=None)
    before = server.history.bytes
    for _ in range(5):
        await ws.send(json.dumps({"type": "made.up", "blob": "x" * 2_000_000}))
        assert (await recv(ws))["type"] == "error"
    await ws.close()
    await asyncio.sleep(0.1)
    recorded = [
        r["event"] for r in server.history.select(kind="event") if r["event"].get("type") == "made.up"
    ]
    assert len(recorded) == 5
    assert all(event["blob"] == {"omitted_chars": 2_000_000} for event in recorded)
    assert server.history.bytes - before < 100_000  # today: 10 MB held after the client left


def test_the_history_keeps_about_max_bytes_and_counts_on() -> None:
    history = History(max_bytes=200_000)
    for index in range(2000):
        history.record("event", dir="in", session="s", event={"type": "x", "text": "y" * 1000, "n": index})
    assert history.bytes <= 200_000
    assert 100 < len(history.records) < 200
    assert [r["seq"] for r in history.records] == list(range(history.first_seq, 2000))
    assert history.records[-1]["event"]["n"] == 1999


def test_ordinary_text_is_recorded_whole() -> None:
    history = History()
    text = "z" * MAX_RECORDED_STRING
    history.event("out", "s", {"type": "response.output_text.done", "text": text})
    assert history.records[-1]["event"]["text"] == text
