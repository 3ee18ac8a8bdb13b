"""Audio in over a real WebSocket: server VAD offsets, barge-in and truncation, transcription, G.711, idle.

Tolerances (VAD against the true boundaries of generated speech): speech_started.audio_start_ms within
40 ms of (true onset - prefix_padding_ms); speech_stopped.audio_end_ms within 60 ms of (true end +
silence_duration_ms), the API's documented meaning of audio_end_ms. The detector measured better
(onset -9..+16 ms, end -40..+8 ms over 40 random layouts per condition; see tests/test_vad.py).
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from websockets.asyncio.client import ClientConnection

from rtsim.simulator import audio
from rtsim.simulator.engine import UNSCRIPTED_TRANSCRIPT
from rtsim.simulator.server import RealtimeServer
from tests.support.engine import validate_ga
from tests.support.wire import open_session, recv, recv_until

ONSET_TOLERANCE_MS = 40
END_TOLERANCE_MS = 60
# The real server-VAD defaults (captured gpt-realtime `session.created`: prefix 300 ms, silence 200 ms).
PREFIX_MS, SILENCE_MS = 300, 200


async def update(ws: ClientConnection, session: dict[str, Any]) -> dict[str, Any]:
    await ws.send(json.dumps({"type": "session.update", "session": {"type": "realtime", **session}}))
    return (await recv_until(ws, "session.updated"))[-1]


async def send_audio(
    ws: ClientConnection, pcm: bytes, chunk_ms: int = 100, rate: int = audio.SAMPLE_RATE
) -> None:
    for chunk in audio.chunks(pcm, chunk_ms, rate):
        await ws.send(
            json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(chunk).decode()})
        )


async def collect(ws: ClientConnection, quiet_for: float = 0.5) -> list[dict[str, Any]]:
    """Every event until the server has been quiet for `quiet_for` seconds."""
    events = []
    while True:
        try:
            events.append(await recv(ws, timeout=quiet_for))
        except TimeoutError:
            return events


def vad_offsets(events: list[dict[str, Any]]) -> list[tuple[int, int]]:
    starts = [e["audio_start_ms"] for e in events if e["type"] == "input_audio_buffer.speech_started"]
    ends = [e["audio_end_ms"] for e in events if e["type"] == "input_audio_buffer.speech_stopped"]
    return list(zip(starts, ends, strict=True))


@pytest.mark.parametrize(
    ("case", "segments", "noise_dbfs"),
    [
        ("clean", [("silence", 700), ("speech", 1400), ("silence", 1200)], None),
        (
            "noisy",
            [("silence", 900), ("speech", 1100), ("silence", 1000), ("speech", 900), ("silence", 1200)],
            -35,
        ),
        (
            "long pause",
            [("silence", 500), ("speech", 800), ("silence", 4000), ("speech", 1200), ("silence", 1200)],
            None,
        ),
    ],
)
async def test_vad_offsets_match_the_true_boundaries(
    server: RealtimeServer, case: str, segments: list[tuple[str, int]], noise_dbfs: float | None
) -> None:
    ws = await open_session(server)
    await update(
        ws, {"audio": {"input": {"turn_detection": {"type": "server_vad", "create_response": False}}}}
    )
    utterance = audio.build_utterance(segments, seed=11, noise_dbfs=noise_dbfs)
    await send_audio(ws, utterance.pcm)
    events = await collect(ws)
    for event in events:
        validate_ga(event)
    offsets = vad_offsets(events)
    assert len(offsets) == len(utterance.speech_spans_ms), (case, offsets, utterance.speech_spans_ms)
    for (start, end), (true_start, true_end) in zip(offsets, utterance.speech_spans_ms, strict=True):
        assert abs(start - (true_start - PREFIX_MS)) <= ONSET_TOLERANCE_MS, (case, start, true_start)
        assert abs(end - (true_end + SILENCE_MS)) <= END_TOLERANCE_MS, (case, end, true_end)
    committed = [e for e in events if e["type"] == "input_audio_buffer.committed"]
    started = [e for e in events if e["type"] == "input_audio_buffer.speech_started"]
    assert [c["item_id"] for c in committed] == [s["item_id"] for s in started]
    items = [e["item"] for e in events if e["type"] == "conversation.item.done"]
    assert [i["content"][0]["type"] for i in items] == ["input_audio"] * len(offsets)
    assert not [e for e in events if e["type"] == "response.created"]  # create_response off
    await ws.close()


async def test_a_spoken_turn_gets_a_response_and_transcription(
    server_factory: Callable[..., Any], tmp_path: Path
) -> None:
    script = tmp_path / "script.yaml"
    script.write_text(yaml.safe_dump({"transcripts": ["My name is Alice.", "What is my name?", None]}))
    server = await server_factory(script=str(script), pacing=0.0)
    ws = await open_session(server)
    await update(ws, {"audio": {"input": {"transcription": {"model": "gpt-4o-transcribe"}}}})
    turns = []
    for _ in range(3):
        spoken = audio.build_utterance([("silence", 300), ("speech", 1000), ("silence", 900)], seed=2)
        await send_audio(ws, spoken.pcm)
        events = await recv_until(ws, "response.done")
        # Transcription runs beside the response and comes 0.5-1.4 s after the commit (docs/parity.md):
        # here, after this unpaced response is done.
        if not any(e["type"].endswith("transcription.completed") for e in events):
            events += await recv_until(ws, "conversation.item.input_audio_transcription.completed")
        turns.append(events)
    for events in turns:
        for event in events:
            validate_ga(event)
    completed = [next(e for e in t if e["type"].endswith("transcription.completed")) for t in turns]
    assert [c["transcript"] for c in completed] == [
        "My name is Alice.",
        "What is my name?",
        UNSCRIPTED_TRANSCRIPT.format(ms=1500),
    ]
    # the committed audio runs from audio_start_ms to audio_end_ms: padding 300 + speech 1000 + silence 200
    deltas = "".join(e["delta"] for e in turns[0] if e["type"].endswith("transcription.delta"))
    assert deltas == "My name is Alice."
    done = [next(e for e in t if e["type"] == "response.done")["response"] for t in turns]
    answer = done[1]["output"][0]["content"][0]["transcript"]
    assert answer == "Your name is Alice."  # the model heard the scripted transcript
    assert done[2]["output"][0]["content"][0]["transcript"] == "Sorry, I didn't catch that."
    await ws.close()


async def test_barge_in_cancels_the_paced_response_and_truncate_cuts_what_was_heard(
    server_factory: Callable[..., Any],
) -> None:
    server = await server_factory(pacing=1.0)
    ws = await open_session(server)
    await ws.send(
        json.dumps(
            {
                "type": "conversation.item.create",
                "item": {
                    "type": "message",
                    "role": "user",
                    "content": [
                        {
                            "type": "input_text",
                            "text": "Tell me a long story about the sea and the ships on it.",
                        }
                    ],
                },
            }
        )
    )
    await ws.send(json.dumps({"type": "response.create"}))
    received_ms = 0
    item_id = ""
    while received_ms < 600:  # let ~0.6 s of the answer arrive (and "play")
        event = await recv(ws)
        if event["type"] == "response.output_audio.delta":
            received_ms += len(base64.b64decode(event["delta"])) // 48
            item_id = event["item_id"]
    speech = audio.build_utterance([("speech", 800), ("silence", 700)], seed=4)
    await send_audio(ws, speech.pcm)
    events = await collect(ws, quiet_for=0.6)
    names = [e["type"] for e in events]
    started = names.index("input_audio_buffer.speech_started")
    done = next(e for e in events if e["type"] == "response.done")
    assert names.index("response.done") > started
    assert done["response"]["status"] == "cancelled"
    assert done["response"]["status_details"] == {"type": "cancelled", "reason": "turn_detected"}
    pending_dones = names[started + 1 : names.index("response.done")]
    assert pending_dones == [
        "response.output_audio.done",
        "response.output_audio_transcript.done",
        "response.content_part.done",
        "conversation.item.done",
        "response.output_item.done",
    ]
    after_cancel = names[names.index("response.done") :]
    assert "response.output_audio.delta" not in after_cancel[: after_cancel.index("response.created")]
    full = done["response"]["output"][0]["content"][0]["transcript"]
    played_ms = 500  # the client played this much before the user spoke over it
    await ws.send(
        json.dumps(
            {
                "type": "conversation.item.truncate",
                "item_id": item_id,
                "content_index": 0,
                "audio_end_ms": played_ms,
            }
        )
    )
    truncated = (await recv_until(ws, "conversation.item.truncated"))[-1]
    validate_ga(truncated)
    await ws.send(json.dumps({"type": "conversation.item.retrieve", "item_id": item_id}))
    item = (await recv_until(ws, "conversation.item.retrieved"))[-1]["item"]
    heard = item["content"][0]["transcript"]
    assert full.startswith(heard) and len(heard) < len(full)
    await ws.send(
        json.dumps(
            {
                "type": "conversation.item.truncate",
                "item_id": item_id,
                "content_index": 0,
                "audio_end_ms": 60_000,
            }
        )
    )
    error = (await recv_until(ws, "error"))[-1]["error"]
    assert error["message"] == f"Audio content of {played_ms}ms is already shorter than 60000ms"
    await ws.close()


@pytest.mark.parametrize("fmt", ["audio/pcmu", "audio/pcma"])
async def test_g711_input_at_8khz_is_heard(server: RealtimeServer, fmt: str) -> None:
    ws = await open_session(server)
    await update(
        ws,
        {
            "audio": {
                "input": {
                    "format": {"type": fmt},
                    "turn_detection": {"type": "server_vad", "create_response": False},
                }
            }
        },
    )
    utterance = audio.build_utterance([("silence", 600), ("speech", 1200), ("silence", 900)], seed=8)
    narrow = audio.resample(utterance.samples, audio.SAMPLE_RATE, audio.G711_RATE)
    encoded = audio.ulaw_encode(narrow) if fmt == "audio/pcmu" else audio.alaw_encode(narrow)
    for i in range(0, len(encoded), 800):  # 100 ms of 8 kHz G.711
        await ws.send(
            json.dumps(
                {
                    "type": "input_audio_buffer.append",
                    "audio": base64.b64encode(encoded[i : i + 800]).decode(),
                }
            )
        )
    (offset,) = vad_offsets(await collect(ws))
    (true_start, true_end) = utterance.speech_spans_ms[0]
    assert abs(offset[0] - (true_start - PREFIX_MS)) <= ONSET_TOLERANCE_MS
    assert abs(offset[1] - (true_end + SILENCE_MS)) <= END_TOLERANCE_MS
    await ws.close()


async def test_semantic_vad_and_manual_turns(server: RealtimeServer) -> None:
    ws = await open_session(server)
    updated = await update(
        ws,
        {
            "audio": {
                "input": {
                    "turn_detection": {"type": "semantic_vad", "eagerness": "high", "create_response": False}
                }
            }
        },
    )
    assert updated["session"]["audio"]["input"]["turn_detection"]["eagerness"] == "high"
    utterance = audio.build_utterance([("silence", 400), ("speech", 900), ("silence", 900)], seed=3)
    await send_audio(ws, utterance.pcm)
    ((_, end),) = vad_offsets(await collect(ws))
    assert abs(end - (utterance.speech_spans_ms[0][1] + 400)) <= END_TOLERANCE_MS  # eagerness high: 400 ms
    await update(ws, {"audio": {"input": {"turn_detection": None}}})
    await send_audio(ws, utterance.pcm)
    assert vad_offsets(await collect(ws, 0.3)) == []  # no VAD: the client commits
    await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
    committed = await recv_until(ws, "conversation.item.done")
    assert committed[0]["type"] == "input_audio_buffer.committed"
    await ws.close()


async def test_idle_timeout_triggers_a_nudge_after_silence(server: RealtimeServer) -> None:
    ws = await open_session(server)
    await update(
        ws, {"audio": {"input": {"turn_detection": {"type": "server_vad", "idle_timeout_ms": 6000}}}}
    )
    await send_audio(ws, audio.to_pcm(audio.silence(5000)))
    assert not [e for e in await collect(ws, 0.3) if e["type"] == "input_audio_buffer.timeout_triggered"]
    await send_audio(ws, audio.to_pcm(audio.silence(1500)))
    events = await collect(ws)
    timeout = next(e for e in events if e["type"] == "input_audio_buffer.timeout_triggered")
    validate_ga(timeout)
    assert timeout["audio_start_ms"] == 0 and 6000 <= timeout["audio_end_ms"] <= 6100
    assert "response.created" in [e["type"] for e in events]  # the model is nudged to speak
    await ws.close()


async def test_speech_while_streaming_is_counted_in_audio_time_not_wall_time(server: RealtimeServer) -> None:
    ws = await open_session(server)
    await update(
        ws, {"audio": {"input": {"turn_detection": {"type": "server_vad", "create_response": False}}}}
    )
    utterance = audio.build_utterance([("silence", 2000), ("speech", 800), ("silence", 900)], seed=9)
    sent = asyncio.get_running_loop().time()
    await send_audio(ws, utterance.pcm)  # far faster than real time
    ((start, _),) = vad_offsets(await collect(ws))
    assert asyncio.get_running_loop().time() - sent < 3.7
    assert abs(start - (2000 - PREFIX_MS)) <= ONSET_TOLERANCE_MS
    await ws.close()


async def test_scripted_transcripts_continue_across_a_clients_sessions(
    server_factory: Callable[..., Any], tmp_path: Path
) -> None:
    script = tmp_path / "script.yaml"
    script.write_text(yaml.safe_dump({"transcripts": ["My name is Alice.", "What is my name?"]}))
    server = await server_factory(script=str(script), pacing=0.0)
    spoken = audio.build_utterance([("silence", 300), ("speech", 900), ("silence", 900)], seed=2)
    heard = []
    for _ in range(2):  # the same key reconnects: the second session hears the script's second line
        ws = await open_session(server)
        await update(ws, {"audio": {"input": {"transcription": {"model": "gpt-4o-transcribe"}}}})
        await send_audio(ws, spoken.pcm)
        events = await recv_until(ws, "conversation.item.input_audio_transcription.completed")
        heard.append(events[-1]["transcript"])
        if not any(e["type"] == "rate_limits.updated" for e in events):  # the transcript may come after
            await recv_until(ws, "rate_limits.updated")  # read the answer out: the close handshake is prompt
        await ws.close()
    assert heard == ["My name is Alice.", "What is my name?"]


async def test_the_transcription_failed_fault_fails_the_next_transcription(server: RealtimeServer) -> None:
    ws = await open_session(server)
    await update(
        ws,
        {
            "audio": {
                "input": {
                    "transcription": {"model": "gpt-4o-transcribe"},
                    "turn_detection": {"type": "server_vad", "create_response": False},
                }
            }
        },
    )
    assert server.control is not None
    server.control.inject("transcription-failed", {}, {}, None, route="test")
    spoken = audio.build_utterance([("silence", 300), ("speech", 900), ("silence", 900)], seed=2)
    await send_audio(ws, spoken.pcm)
    failed = (await recv_until(ws, "conversation.item.input_audio_transcription.failed"))[-1]
    validate_ga(failed)
    assert failed["error"]["code"] == "audio_unintelligible"
    await send_audio(ws, spoken.pcm)  # only the next one fails
    completed = (await recv_until(ws, "conversation.item.input_audio_transcription.completed"))[-1]
    assert completed["transcript"].startswith("[unscripted audio")
    await ws.close()
