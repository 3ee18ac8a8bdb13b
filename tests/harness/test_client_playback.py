"""The reference client tracks playback itself: the server sends audio faster than real time (docs/parity.md),
so what the user heard is the playback clock's position, not what arrived."""

from __future__ import annotations

from pathlib import Path

from rtsim.clients import common, reference
from rtsim.clients.link import Playback
from rtsim.scenarios.checkers import RunView, truncated_on_barge_in
from tests.support.clients import (
    FAST,
    ServerFactory,
    client_env,
    log_events,
    received,
    run_client,
    sent,
    write_scenario,
)


def test_the_playback_clock_lags_arrival_and_pauses_when_audio_runs_out() -> None:
    playback = Playback("item", "resp", started_at=10.0)
    for k in range(10):  # 1 s of audio arriving within 0.25 s
        playback.queue(100, 10.0 + k * 0.025)
    assert playback.received_ms == 1000
    assert playback.played_ms(10.3) == 300  # heard: 0.3 s, though all of it has arrived
    assert playback.playing(10.9) and not playback.playing(11.0)
    assert playback.played_ms(11.5) == 1000
    playback.queue(200, 12.0)  # more after a gap: it plays from when it arrived, not as if it had kept on
    assert playback.played_ms(12.1) == 1100
    assert playback.played_ms(13.0) == 1200


def test_a_queued_reply_starts_once_the_previous_has_played() -> None:
    first = Playback("a", "r1", started_at=0.0)
    first.queue(2000, 0.0)
    second = Playback("b", "r2", started_at=max(0.5, first.ends_at))
    second.queue(500, 0.5)
    assert second.started_at == 2.0 and second.played_ms(1.0) == 0
    assert second.played_ms(2.25) == 250


async def test_reference_truncates_at_what_was_heard_when_audio_arrived_ahead(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    """At the default delivery (4x real time) the whole ~4.7 s reply has arrived, and its response is done,
    about 1.3 s in; a typed turn at 1.4 s must truncate at what was heard (~1.3 s), not at what arrived."""
    server = await server_factory()  # the default pacing: faster than real time
    turns = [
        {"at": 0.1, "say": "Please tell me a long story about the weather in the mountains."},
        {"at": 1.4, "say": "Stop. My name is Alice."},
    ]
    code, log = await run_client(
        reference, client_env(server, write_scenario(tmp_path, turns, end_at=3.0), **FAST)
    )

    assert code == 0
    (truncate,) = received(server, "conversation.item.truncate")
    item_id, end_ms = truncate["event"]["item_id"], truncate["event"]["audio_end_ms"]
    deltas = [r for r in sent(server, "response.output_audio.delta") if r["event"]["item_id"] == item_id]
    delivered_ms = sum(r["event"]["audio_bytes"] for r in deltas) // common.BYTES_PER_MS
    done = next(r for r in sent(server, "response.done") if r["event"]["response"]["output"])
    assert done["t"] < truncate["t"]  # the response was over; its audio was still playing
    assert delivered_ms > 4000  # all of it had arrived
    heard_ms = (truncate["t"] - deltas[0]["t"]) * 1000
    assert abs(end_ms - heard_ms) < 300 and end_ms < delivered_ms / 2
    assert sent(server, "conversation.item.truncated")[0]["event"]["audio_end_ms"] == end_ms
    assert not sent(server, "error")
    assert log_events(log, "barge_in")[-1]["received_ms"] == delivered_ms


async def test_reference_spoken_barge_in_passes_the_playback_checker(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    """A spoken turn over the reply's buffered tail: server VAD's speech_started finds the response done, the
    client truncates at its playback position, and the checker (playback, not arrival) agrees."""
    server = await server_factory()
    turns = [
        {"at": 0.1, "say": "Please tell me a very long story about a dragon, a knight and the castle."},
        {"at": 1.2, "say": "Stop, stop. What time is it?", "mode": "audio"},
    ]
    code, _log = await run_client(
        reference, client_env(server, write_scenario(tmp_path, turns, end_at=5.0), **FAST)
    )
    assert code == 0
    view = RunView(server.history.records)
    verdict = truncated_on_barge_in(view)
    assert verdict.ok, verdict.reason
    (truncate,) = received(server, "conversation.item.truncate")
    delivered_ms = (
        sum(
            r["event"]["audio_bytes"]
            for r in sent(server, "response.output_audio.delta")
            if r["event"]["item_id"] == truncate["event"]["item_id"]
        )
        // common.BYTES_PER_MS
    )
    assert truncate["event"]["audio_end_ms"] < delivered_ms - 1000  # heard, not received


def test_a_text_only_client_starts_without_the_audio_kit() -> None:
    """A client start is most of a run's CPU; numpy (the test-audio kit) loads only for a spoken turn."""
    import subprocess
    import sys

    from rtsim.simulator import audio

    assert common.BYTES_PER_MS == audio.SAMPLE_RATE * 2 // 1000
    probe = "import sys, rtsim.clients.reference; print('numpy' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
