"""What every Python adapter of the compatibility matrix shares, without rtsim itself (each framework runs in
a venv of its own pins): the client interface of clients/README.md read from the environment, the turn
schedule, the JSON log on stdout, and a voice turn (the pcm16 24 kHz file rtsim rendered) as microphone audio.
"""

from __future__ import annotations

import asyncio
import faulthandler
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CHUNK_BYTES = 960  # 20 ms of pcm16 mono at 24 kHz: one microphone callback
SAMPLE_RATE = 24_000
EXIT_OK, EXIT_FATAL, EXIT_USAGE = 0, 1, 2
STACKS_AFTER_END = 4.0  # seconds past end_at: a client still running then dumps its threads' stacks


@dataclass(frozen=True)
class Turn:
    index: int
    at: float
    say: str
    mode: str
    audio_file: str | None

    def audio(self) -> bytes:
        if self.audio_file is None:
            raise ValueError(f"audio turn {self.say!r} has no audio_file")
        return Path(self.audio_file).read_bytes()


@dataclass(frozen=True)
class Scenario:
    name: str
    model: str
    turns: list[Turn]
    end_at: float
    instructions: str | None
    base_url: str
    api_key: str

    @property
    def realtime_url(self) -> str:
        """The GA WebSocket URL the official SDKs build: http→ws, https→wss, + /realtime?model=."""
        base = self.base_url.rstrip("/")
        base = "wss://" + base[len("https://") :] if base.startswith("https://") else base
        base = "ws://" + base[len("http://") :] if base.startswith("http://") else base
        return f"{base}/realtime?model={self.model}"


def load() -> Scenario:
    env = os.environ
    missing = [n for n in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "RTSIM_SCENARIO") if not env.get(n)]
    if missing:
        print(f"missing environment: {', '.join(missing)}", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    data = json.loads(Path(env["RTSIM_SCENARIO"]).read_text())
    # A framework that stops making progress is killed by the harness; the stacks in the client log say where.
    faulthandler.dump_traceback_later(float(data["end_at"]) + STACKS_AFTER_END, exit=False)
    raw = sorted(data["turns"], key=lambda t: t["at"])
    turns = [
        Turn(i, float(t["at"]), t["say"], t.get("mode", "text"), t.get("audio_file"))
        for i, t in enumerate(raw)
        if t["at"] <= data["end_at"]
    ]
    return Scenario(
        data["name"],
        data["model"],
        turns,
        float(data["end_at"]),
        data.get("instructions"),
        env["OPENAI_BASE_URL"],
        env["OPENAI_API_KEY"],
    )


class Log:
    """One JSON object per line: `t` (seconds since start), `client`, `event`, fields."""

    def __init__(self, client: str) -> None:
        self.client = client
        # The client's clock starts once the framework is loaded (some take seconds to import), so the turns
        # keep their spacing; the checkers judge what was answered, not when. A harness that waits for
        # RTSIM_READY_FILE starts its fault timeline at the same moment.
        self.started = time.monotonic()
        ready = os.environ.get("RTSIM_READY_FILE")
        if ready:
            Path(ready).touch()

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def __call__(self, event: str, **fields: Any) -> None:
        entry = {"t": round(self.elapsed(), 3), "client": self.client, "event": event, **fields}
        sys.stdout.write(json.dumps(entry, default=str) + "\n")
        sys.stdout.flush()


async def stream_audio(pcm: bytes, send: Callable[[bytes], Awaitable[None]]) -> None:
    """Play `pcm` like a microphone: 20 ms chunks in real time."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    for n, offset in enumerate(range(0, len(pcm), CHUNK_BYTES)):
        await send(pcm[offset : offset + CHUNK_BYTES])
        await asyncio.sleep(max(0.0, started + (n + 1) * 0.02 - loop.time()))


async def play_turns(
    scenario: Scenario, log: Log, say: Callable[[Turn], Awaitable[None]], grace: float = 1.5
) -> None:
    """Say every turn at its time, then wait for end_at and a short grace for the last reply."""
    for turn in scenario.turns:
        await asyncio.sleep(max(0.0, turn.at - log.elapsed()))
        log("turn_sent", turn=turn.index, mode=turn.mode, text=turn.say)
        await say(turn)
    await asyncio.sleep(max(0.0, scenario.end_at - log.elapsed()) + grace)


def reply_text(response: dict[str, Any]) -> str:
    parts = [p for item in response.get("output") or () for p in item.get("content") or ()]
    return " ".join(str(p.get("transcript") or p.get("text") or "") for p in parts).strip()


def run(main: Callable[[], Awaitable[int]]) -> None:
    """Run the adapter and end the process with its code, even when the framework leaves threads behind
    (livekit-agents' do, so the interpreter would wait on them after `main` returned)."""
    code = asyncio.run(main())
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
