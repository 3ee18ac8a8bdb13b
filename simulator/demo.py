"""`rtsim demo`: start `rtsim serve` as a process and hold a short conversation with the official SDK.

It shows the three things an app gets from rtsim out of the box: the real event sequence, realtime-paced
audio, and a model that remembers (or visibly forgets) what it was told.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from typing import Any


def start_server(*extra: str) -> tuple[subprocess.Popen[str], str]:
    """`rtsim serve` in a child process; returns it with the base URL it printed."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "rtsim.simulator.cli", "serve", "--port", "0", *extra],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line.startswith("http://"):
        proc.kill()
        raise RuntimeError(f"rtsim serve did not print its URL (got {line!r})")
    return proc, line


async def converse(base_url: str, turns: list[str]) -> list[dict[str, Any]]:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=base_url, api_key=os.environ.get("OPENAI_API_KEY", "sk-demo"))
    results: list[dict[str, Any]] = []
    async with client.realtime.connect(model="gpt-realtime") as conn:
        created = await conn.recv()
        print(f"  <- {created.type}  id={created.session.id}  expires_at={created.session.expires_at}")
        await conn.session.update(
            session={"type": "realtime", "instructions": "Be brief.", "output_modalities": ["audio"]}
        )
        updated = await conn.recv()
        print(f"  <- {updated.type}")
        for text in turns:
            print(f"  -> user: {text!r}")
            await conn.conversation.item.create(
                item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
            )
            await conn.response.create()
            counts: Counter[str] = Counter()
            audio_bytes = 0
            started = time.monotonic()
            async for event in conn:
                counts[event.type] += 1
                if event.type == "response.output_audio.delta":
                    audio_bytes += len(event.delta) * 3 // 4
                if event.type == "response.done":
                    transcript = "".join(
                        part.transcript or ""
                        for item in event.response.output or []
                        for part in getattr(item, "content", None) or []
                    )
                    elapsed = time.monotonic() - started
                    audio_ms = audio_bytes // 48
                    print(f"  <- assistant: {transcript!r}")
                    print(
                        f"     {counts['response.output_audio.delta']} audio deltas, {audio_ms} ms of audio "
                        f"in {elapsed:.2f} s, status={event.response.status}, "
                        f"tokens={event.response.usage.total_tokens if event.response.usage else '?'}"
                    )
                    results.append(
                        {
                            "transcript": transcript,
                            "audio_ms": audio_ms,
                            "elapsed": elapsed,
                            "events": dict(counts),
                        }
                    )
                    break
    return results


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="start a simulator and hold a short SDK conversation with it")
    parser.set_defaults(func=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    proc, base_url = start_server()
    print(f"rtsim serve is up at {base_url}")
    print(f"  (point an app at it: OPENAI_BASE_URL={base_url} OPENAI_API_KEY=sk-test python my_agent.py)")
    try:
        print("\nsession 1")
        first = asyncio.run(converse(base_url, ["My name is Alice.", "What is my name?"]))
        print("\nsession 2 (a new session: nothing restored, so the model cannot know)")
        second = asyncio.run(converse(base_url, ["What is my name?"]))
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=10)
    print(f"\nrtsim serve exited with {code} after SIGTERM")
    ok = "Alice" in first[1]["transcript"] and "Alice" not in second[0]["transcript"] and code == 0
    print(
        "demo: "
        + (
            "OK — recall within a session, context lost across sessions, as expected"
            if ok
            else "UNEXPECTED RESULT"
        )
    )
    return 0 if ok else 1
