"""WebRTC figures: how long a call takes to set up, and how many calls one server process holds.

`bench_webrtc(levels)` runs a `RealtimeServer` in this process and aiortc clients
in separate processes, so the server's CPU is this process's CPU (`time.process_time`, all threads: aiortc
encodes Opus in a thread pool and decodes each caller's track in a thread of its own).

- setup: `setup_calls` calls one after another: offer made → data channel open (client clock), no load.
- each level: N concurrent calls, each with a microphone track sending 20 ms frames (silence), ask at the
  same moment for a spoken reply of ~`seconds_of_audio` and receive it as Opus. Server side: how late the
  model tracks produced their 20 ms frames against their own schedule (p99 over calls of each call's worst),
  frames that went out more than one period late, and underruns (audio of a playing response not there in
  time); client side: the longest gap between two received frames (p99 over calls) and whether the speech
  received spans the reply's duration (±200 ms).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import multiprocessing
import statistics
import time
from typing import Any

from .media import PlayoutStats

SPAN_TOLERANCE_MS = 200


def reply_prompt(seconds_of_audio: float) -> str:
    """User text whose echo ("You said: <text>.") speaks for about `seconds_of_audio`."""
    from rtsim.simulator import audio

    words = "the quick brown fox jumps over the lazy dog and runs back home again".split()
    target_chars = int(seconds_of_audio * 1000 / audio.MS_PER_CHAR) - len("You said: .")
    text: list[str] = []
    while len(" ".join(text)) < target_chars:
        text.append(words[len(text) % len(words)])
    return " ".join(text)


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))]


# ---- the client processes ----------------------------------------------------------------------------------


def _client_process(job: dict[str, Any]) -> dict[str, Any]:
    return asyncio.run(_client_job(job))


async def _client_job(job: dict[str, Any]) -> dict[str, Any]:
    if job["mode"] == "setup":
        return await _sequential_setups(job["base_url"], job["calls"])
    return await _load(job)


async def _sequential_setups(base_url: str, calls: int) -> dict[str, Any]:
    from rtsim.clients.webrtc_call import ClientCall

    setups = []
    for _ in range(calls):
        call = ClientCall(base_url, "sk-bench", microphone=True)
        await call.connect(open_timeout=20)
        opened = call.when("datachannel", "open")
        assert opened is not None
        setups.append(opened)
        await call.close()
    return {"setups": setups}


async def _load(job: dict[str, Any]) -> dict[str, Any]:
    from rtsim.clients.webrtc_call import ClientCall, reply_text
    from rtsim.simulator import audio

    base_url, count, seconds = job["base_url"], job["calls"], job["seconds"]
    gate = asyncio.Semaphore(16)  # setups in flight at once, like a burst of users rather than a stampede
    cpu_before = time.process_time()

    async def one() -> dict[str, Any]:
        call = ClientCall(base_url, "sk-bench", microphone=True)
        try:
            async with gate:
                await call.connect(open_timeout=30)
            await call.wait_for("session.created", timeout=30)
            setup = call.when("datachannel", "open")
            await asyncio.sleep(max(0.0, job["ask_at"] - time.monotonic()))
            mark = len(call.received)
            call.send(
                {
                    "type": "conversation.item.create",
                    "item": {
                        "type": "message",
                        "role": "user",
                        "content": [{"type": "input_text", "text": job["prompt"]}],
                    },
                }
            )
            call.send({"type": "response.create"})
            await call.wait_for("output_audio_buffer.started", since=mark, timeout=seconds + 30)
            call.reset_gap()
            frames_before = call.audio_frames
            loud: list[int] = []
            call.record_audio = True
            call.audio.clear()
            done = await call.wait_for("response.done", since=mark, timeout=seconds + 30)
            await call.wait_for("output_audio_buffer.stopped", since=mark, timeout=seconds + 30)
            from rtsim.clients.webrtc_call import SPEECH_FRAME_DBFS, frame_dbfs

            loud = [i for i, frame in enumerate(call.audio) if frame_dbfs(frame) > SPEECH_FRAME_DBFS]
            span_ms = (loud[-1] - loud[0] + 1) * 20 if loud else 0
            expected_ms = audio.duration_ms_for_text(reply_text(done))
            return {
                "ok": True,
                "setup": setup,
                "gap": call.max_frame_gap,
                "span_ok": abs(span_ms - expected_ms) <= SPAN_TOLERANCE_MS,
                "frames": call.audio_frames - frames_before,
            }
        except Exception as exc:  # a call that failed under load is a figure, not a crash
            return {"ok": False, "error": repr(exc)}
        finally:
            await call.close()

    results = await asyncio.gather(*(one() for _ in range(count)))
    return {"results": results, "cpu": time.process_time() - cpu_before}


# ---- the server side ---------------------------------------------------------------------------------------


async def _bench(
    levels: list[int], seconds_of_audio: float, setup_calls: int, client_procs: int, echo: bool
) -> list[dict[str, Any]]:
    from rtsim.simulator.server import RealtimeServer, ServerConfig

    server = RealtimeServer(ServerConfig(pacing=1.0, max_session=3600))
    base_url = await server.start()
    calls: list[Any] = []
    server.webrtc.on_new_call.append(calls.append)
    loop = asyncio.get_running_loop()
    rows: list[dict[str, Any]] = []
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: nothing of this loop is inherited
    try:
        with concurrent.futures.ProcessPoolExecutor(client_procs, mp_context=context) as pool:
            if setup_calls:
                setup = await loop.run_in_executor(
                    pool, _client_process, {"mode": "setup", "base_url": base_url, "calls": setup_calls}
                )
                times = setup["setups"]
                rows.append(
                    {
                        "measure": "setup",
                        "calls": len(times),
                        "setup_ms_p50": round(statistics.median(times) * 1000, 1),
                        "setup_ms_max": round(max(times) * 1000, 1),
                    }
                )
                if echo:
                    print(json.dumps(rows[-1]), flush=True)
            for level in levels:
                calls.clear()
                rows.append(await _level(loop, pool, base_url, level, seconds_of_audio, client_procs, calls))
                if echo:
                    print(json.dumps(rows[-1]), flush=True)
                await asyncio.sleep(1.0)  # let the level's calls finish closing
    finally:
        await server.stop()
    return rows


async def _level(
    loop: asyncio.AbstractEventLoop,
    pool: concurrent.futures.Executor,
    base_url: str,
    level: int,
    seconds: float,
    procs: int,
    calls: list[Any],
) -> dict[str, Any]:
    shares = [level // procs + (1 if i < level % procs else 0) for i in range(procs)]
    ask_at = time.monotonic() + 3.0 + level * 0.04  # every call set up before anyone asks (shared clock)
    prompt = reply_prompt(seconds)
    cpu_before, wall_before = time.process_time(), time.monotonic()

    def audio_phase_starts() -> None:  # setups stall the loop; judge the tracks from the moment all ask
        for call in calls:
            call.track.stats = PlayoutStats()

    loop.call_at(ask_at, audio_phase_starts)  # loop.time() is time.monotonic(), shared with the clients
    parts = await asyncio.gather(
        *(
            loop.run_in_executor(
                pool,
                _client_process,
                {
                    "mode": "load",
                    "base_url": base_url,
                    "calls": share,
                    "seconds": seconds,
                    "ask_at": ask_at,
                    "prompt": prompt,
                },
            )
            for share in shares
            if share
        )
    )
    cpu = time.process_time() - cpu_before
    wall = time.monotonic() - wall_before
    results = [r for part in parts for r in part["results"]]
    ok = [r for r in results if r["ok"]]
    tracks = [call.track.stats for call in calls]
    worst_lateness = [stats.max_lateness for stats in tracks]
    errors = sorted({r["error"] for r in results if not r["ok"]})
    return {
        "sessions": level,
        "completed": len(ok),
        "failed": len(results) - len(ok),
        "setup_ms_p50": round(statistics.median([r["setup"] for r in ok]) * 1000, 1) if ok else None,
        "span_ok": sum(r["span_ok"] for r in ok),
        "recv_gap_ms_p99": round(_percentile([r["gap"] for r in ok], 0.99) * 1000, 1),
        "frame_lateness_ms_p99": round(_percentile(worst_lateness, 0.99) * 1000, 1),
        "late_frames": sum(stats.late_frames for stats in tracks),
        "resyncs": sum(stats.resyncs for stats in tracks),
        "underrun_frames": sum(stats.underrun_frames for stats in tracks),
        "server_cpu_pct": round(100 * cpu / wall, 1),
        "client_cpu_pct": round(100 * sum(part["cpu"] for part in parts) / wall, 1),
        **({"errors": errors[:3]} if errors else {}),
    }


def bench_webrtc(
    levels: list[int],
    *,
    seconds_of_audio: float = 8.0,
    setup_calls: int = 20,
    client_procs: int = 1,
    echo: bool = True,
) -> list[dict[str, Any]]:
    """Setup time over `setup_calls` sequential calls, then one row per level of concurrent calls.

    Each row is also printed as a JSON line as soon as it is measured (`echo`).
    """
    return asyncio.run(_bench(levels, seconds_of_audio, setup_calls, client_procs, echo))


if __name__ == "__main__":
    import sys

    chosen = [int(x) for x in (sys.argv[1] if len(sys.argv) > 1 else "10,25,50").split(",")]
    bench_webrtc(chosen)
