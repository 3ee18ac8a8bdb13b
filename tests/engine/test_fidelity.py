"""Every server event kind the simulator emits validates against the official SDK's unions (GA and beta).

`SERVER_EVENT_TYPES` declares what the simulator can emit; a static check keeps it in step with the source,
and the flows below must produce every declared type, each one validated.
"""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

import pytest

from rtsim.simulator import audio
from rtsim.simulator.dialect import BETA, BETA_EVENT_NAMES, GA_ONLY_EVENTS, Dialect
from rtsim.simulator.engine import Limits
from rtsim.simulator.model import Script, ScriptedModel
from rtsim.simulator.protocol import (
    CLIENT_EVENT_TYPES,
    SERVER_EVENT_TYPES,
    TRANSPORT_EVENT_TYPES,
    RealtimeError,
)
from tests.engine.test_mcp import mcp_flow
from tests.engine.test_transcription_session import transcription_flow
from tests.support.engine import make_session, run_until_idle, user_text, validate_beta, validate_ga

SIMULATOR = Path(__file__).resolve().parents[2] / "simulator"


def every_kind_of_event(dialect: Dialect) -> list[dict[str, Any]]:
    """Flows that together make the simulator emit each event type it can."""
    script = Script.from_dict(
        {
            "replies": [
                {"match": "weather", "tool_call": {"name": "get_weather", "arguments": {"city": "Oslo"}}}
            ]
        }
    )
    session = make_session(
        model=ScriptedModel(script), dialect=dialect, limits=Limits(pacing=0.0, max_session=50)
    )
    events = session.drain()

    def step(event: dict[str, Any]) -> None:
        session.receive(event, 1.0)
        run_until_idle(session, 1.0)
        events.extend(session.drain())

    tools = [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}]
    update: dict[str, Any] = {"instructions": "hi", "tools": tools}
    if not dialect.beta:
        update["type"] = "realtime"
    step({"type": "session.update", "session": update})
    step(user_text("Tell me a story."))
    step({"type": "response.create"})
    assistant = next(e for e in events if e["type"].endswith("output_item.done"))["item"]["id"]
    step(
        {"type": "conversation.item.truncate", "item_id": assistant, "content_index": 0, "audio_end_ms": 200}
    )
    step({"type": "conversation.item.retrieve", "item_id": assistant})
    step({"type": "conversation.item.delete", "item_id": assistant})
    step(
        {
            "type": "response.create",
            "response": {"output_modalities" if not dialect.beta else "modalities": ["text"]},
        }
    )
    step(user_text("What's the weather?"))
    step({"type": "response.create"})
    pcm = audio.speech_for_text("hello", seed=3)
    step({"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm).decode()})
    step({"type": "input_audio_buffer.commit"})
    step({"type": "input_audio_buffer.clear"})
    step({"type": "response.cancel"})  # an error: nothing active
    vad_update: dict[str, Any] = {
        "input_audio_transcription": {"model": "whisper-1"},
        "turn_detection": {"type": "server_vad", "idle_timeout_ms": 5000},
    }
    if not dialect.beta:
        vad_update = {
            "type": "realtime",
            "audio": {
                "input": {
                    "transcription": {"model": "whisper-1"},
                    "turn_detection": {"type": "server_vad", "idle_timeout_ms": 5000},
                }
            },
        }
    step({"type": "session.update", "session": vad_update})
    spoken = audio.build_utterance([("silence", 400), ("speech", 900), ("silence", 1500)], seed=5).pcm
    step({"type": "input_audio_buffer.append", "audio": base64.b64encode(spoken).decode()})
    session.fail_next_transcription = True
    step({"type": "input_audio_buffer.append", "audio": base64.b64encode(spoken).decode()})
    quiet = audio.to_pcm(audio.silence(6000))
    step({"type": "input_audio_buffer.append", "audio": base64.b64encode(quiet).decode()})
    run = session.create_response({}, 1.0)
    session.fail_response(run, RealtimeError("The server had an error.", type="server_error"))
    events.extend(session.drain())
    session.advance(50.0)  # the session cap
    events.extend(session.drain())
    if not dialect.beta:  # remote MCP tools and transcription sessions: GA only
        events.extend(mcp_flow())
        events.extend(transcription_flow())
    return events


def test_every_ga_event_kind_is_emitted_and_validates() -> None:
    events = every_kind_of_event(Dialect())
    for event in events:
        validate_ga(event)
    assert {e["type"] for e in events} == SERVER_EVENT_TYPES


def test_every_beta_event_kind_validates_against_the_beta_union() -> None:
    events = every_kind_of_event(BETA)
    for event in events:
        validate_beta(event)
    expected = {BETA_EVENT_NAMES.get(t, t) for t in SERVER_EVENT_TYPES - GA_ONLY_EVENTS}
    assert {e["type"] for e in events} == expected


def test_the_declared_event_types_match_what_the_source_emits() -> None:
    """Any `{"type": "x.y"...` literal the simulator builds as a server event must be declared."""
    emitted: set[str] = set()
    for path in SIMULATOR.rglob("*.py"):
        if "toxiproxy" in path.parts:
            continue
        for match in re.finditer(r'\{\s*"type":\s*"([a-z_]+(?:\.[a-z_]+)+)"', path.read_text()):
            emitted.add(match.group(1))
    assert emitted - set(CLIENT_EVENT_TYPES) <= SERVER_EVENT_TYPES | TRANSPORT_EVENT_TYPES
    assert SERVER_EVENT_TYPES <= emitted | {"error"}


@pytest.mark.parametrize(
    "bad",
    [{"type": "response.output_audio.delta"}, {"type": "response.audio.delta", "event_id": "e", "delta": ""}],
)
def test_the_oracle_rejects_incomplete_and_beta_named_events(bad: dict[str, Any]) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        validate_ga(bad)
