"""Transcription sessions (`?intent=transcription`, `session.type: "transcription"`), in the engine.

Sources (also in docs/parity.md):
- the session shape and events: the installed SDK (`RealtimeTranscriptionSessionCreateRequest` in
  `session.created`/`session.updated`; `conversation.item.input_audio_transcription.segment`); every event
  validated below;
- the client flow (intent URL, `session.created`, `session.update` with `type: "transcription"`, audio,
  `...input_audio_transcription.completed`): openai-agents-python `src/agents/voice/models/openai_stt.py`;
- `session.type` cannot be switched: "Passing a transcription session update event to a realtime session is
  not allowed." (crmitchelmore/justspeaktoit#427, probed against the live API, May 2026);
- realtime-only fields such as `tools` are unknown parameters in transcription mode (openai/codex#14635).
"""

from __future__ import annotations

import base64
from typing import Any

import pytest
from openai.types.realtime.session_created_event import SessionCreatedEvent

from rtsim.simulator import audio
from rtsim.simulator.engine import Limits, Session
from rtsim.simulator.engine.transcription import LOGPROBS
from rtsim.simulator.model import Script, ScriptedModel
from tests.support.engine import make_session, run_until_idle, user_text, validate_ga

TRANSCRIPTS = ["My name is Alice.", "A: Hello there. B: Hi! A: How are you?", "A: Hello there.\nB: Hi!"]


def utterance(seed: int = 5) -> str:
    pcm = audio.build_utterance([("silence", 300), ("speech", 900), ("silence", 1200)], seed=seed).pcm
    return base64.b64encode(pcm).decode()


class Flow:
    def __init__(self, transcripts: list[str] | None = None) -> None:
        model = ScriptedModel(Script.from_dict({"transcripts": transcripts or TRANSCRIPTS}))
        self.session: Session = make_session(
            model=model, limits=Limits(pacing=0.0), session_type="transcription"
        )
        self.events = self.session.drain()

    def step(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        self.session.receive(event, 1.0)
        run_until_idle(self.session, 1.0)
        out = self.session.drain()
        self.events.extend(out)
        return out

    def configure(self, model: str = "gpt-4o-transcribe", **audio_input: Any) -> list[dict[str, Any]]:
        audio_input = {"transcription": {"model": model}, **audio_input}
        return self.step(
            {"type": "session.update", "session": {"type": "transcription", "audio": {"input": audio_input}}}
        )

    def speak(self) -> list[dict[str, Any]]:
        return self.step({"type": "input_audio_buffer.append", "audio": utterance()})


def types(events: list[dict[str, Any]]) -> list[str]:
    return [event["type"] for event in events]


def transcription_flow() -> list[dict[str, Any]]:
    """Every event kind a transcription session adds (the diarizing model's segments); for test_fidelity."""
    flow = Flow()
    flow.configure()
    flow.speak()
    flow.configure(model="gpt-4o-transcribe-diarize")
    flow.speak()
    return flow.events


def test_a_transcription_session_is_created_with_the_transcription_session_shape() -> None:
    flow = Flow()
    (created,) = flow.events
    assert created["type"] == "session.created"
    session = created["session"]
    assert session["type"] == "transcription" and session["object"] == "realtime.transcription_session"
    assert set(session) == {"object", "id", "type", "expires_at", "audio", "include"}
    # the defaults of the OpenAI spec's transcription session example
    audio_input = session["audio"]["input"]
    detection = audio_input["turn_detection"]
    assert (detection["type"], detection["threshold"], detection["silence_duration_ms"]) == (
        "server_vad",
        0.5,
        200,
    )
    assert audio_input["transcription"] == {"model": "gpt-4o-transcribe", "language": None, "prompt": ""}
    parsed = SessionCreatedEvent.model_validate(created)
    assert parsed.session.type == "transcription"


def test_speech_is_committed_and_transcribed_and_no_response_is_made() -> None:
    flow = Flow()
    updated = flow.configure()
    assert types(updated) == ["session.updated"]
    assert updated[0]["session"]["audio"]["input"]["transcription"]["model"] == "gpt-4o-transcribe"
    out = flow.speak()
    kinds = types(out)
    assert kinds[:3] == [
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
    ]
    assert "conversation.item.input_audio_transcription.delta" in kinds
    completed = next(e for e in out if e["type"] == "conversation.item.input_audio_transcription.completed")
    assert completed["transcript"] == "My name is Alice."
    assert completed["item_id"] == out[2]["item_id"]
    assert not any(kind.startswith("response.") for kind in kinds)
    for event in flow.events:
        validate_ga(event)


def test_a_manual_commit_is_transcribed_without_vad() -> None:
    flow = Flow()
    flow.configure(turn_detection=None)
    assert types(flow.speak()) == []
    out = flow.step({"type": "input_audio_buffer.commit"})
    assert types(out)[0] == "input_audio_buffer.committed"
    assert out[-1]["type"] == "conversation.item.input_audio_transcription.completed"


@pytest.mark.parametrize(
    "event",
    [
        {"type": "response.create"},
        {"type": "response.cancel"},
        user_text("hello"),
    ],
)
def test_responses_and_conversation_items_are_refused(event: dict[str, Any]) -> None:
    flow = Flow()
    (error,) = flow.step(event)
    assert error["type"] == "error"
    assert error["error"]["code"] == "unsupported_event"
    assert error["error"]["type"] == "invalid_request_error"
    assert event["type"] in error["error"]["message"]
    validate_ga(error)


def test_realtime_fields_are_unknown_parameters_in_a_transcription_session() -> None:
    flow = Flow()
    (error,) = flow.step(
        {"type": "session.update", "session": {"type": "transcription", "tools": []}}
    )
    assert error["error"]["code"] == "unknown_parameter"
    assert error["error"]["param"] == "session.tools"


def test_the_session_type_cannot_be_switched_either_way() -> None:
    flow = Flow()
    (error,) = flow.step({"type": "session.update", "session": {"type": "realtime"}})
    assert (error["error"]["code"], error["error"]["param"]) == ("invalid_parameter", "session.type")
    assert "realtime session update event to a transcription session" in error["error"]["message"]

    realtime = make_session()
    realtime.drain()
    realtime.receive({"type": "session.update", "session": {"type": "transcription"}}, 1.0)
    (error,) = realtime.drain()
    assert error["error"]["message"] == (
        "Passing a transcription session update event to a realtime session is not allowed."
    )


def test_the_diarizing_model_sends_speaker_segments_then_the_transcript() -> None:
    flow = Flow(transcripts=["A: Hello there.\nB: Hi, how are you?"])
    flow.configure(model="gpt-4o-transcribe-diarize")
    out = flow.speak()
    segments = [e for e in out if e["type"] == "conversation.item.input_audio_transcription.segment"]
    assert [(s["speaker"], s["text"]) for s in segments] == [("A", "Hello there."), ("B", "Hi, how are you?")]
    assert segments[0]["start"] == 0 and segments[0]["end"] == segments[1]["start"] < segments[1]["end"]
    assert len({s["id"] for s in segments}) == 2
    assert "conversation.item.input_audio_transcription.delta" not in types(out)
    completed = out[-1]
    assert completed["type"] == "conversation.item.input_audio_transcription.completed"
    assert completed["transcript"] == "Hello there. Hi, how are you?"
    for event in out:
        validate_ga(event)


def test_an_unlabelled_transcript_is_one_speaker_a_segment_per_sentence() -> None:
    flow = Flow(transcripts=["Hello there. How are you?"])
    flow.configure(model="gpt-4o-transcribe-diarize")
    segments = [e for e in flow.speak() if e["type"].endswith(".segment")]
    assert [(s["speaker"], s["text"]) for s in segments] == [("A", "Hello there."), ("A", "How are you?")]


def test_every_transcription_session_event_validates() -> None:
    events = transcription_flow()
    for event in events:
        validate_ga(event)
    assert "conversation.item.input_audio_transcription.segment" in types(events)


def test_the_transcription_session_fields_are_the_sdks() -> None:
    """A transcription session.update takes the SDK's transcription session request, level by level."""
    from openai.types.realtime.realtime_transcription_session_audio_input import (
        RealtimeTranscriptionSessionAudioInput,
    )
    from openai.types.realtime.realtime_transcription_session_create_request import (
        RealtimeTranscriptionSessionCreateRequest,
    )

    from rtsim.simulator.engine.transcription import TRANSCRIPTION_SESSION

    assert set(TRANSCRIPTION_SESSION.fields) == set(RealtimeTranscriptionSessionCreateRequest.model_fields)
    audio = TRANSCRIPTION_SESSION.fields["audio"]
    audio_input = audio.fields["input"]  # type: ignore[attr-defined]
    assert set(audio_input.fields) == set(RealtimeTranscriptionSessionAudioInput.model_fields)


def test_the_removed_beta_event_transcription_session_update_is_an_invalid_value() -> None:
    """The beta `transcription_session.update` is gone: "Invalid value: 'transcription_session.update'"
    (crmitchelmore/justspeaktoit#427, against the live API)."""
    flow = Flow()
    (error,) = flow.step({"type": "transcription_session.update", "session": {}})
    assert (error["error"]["code"], error["error"]["param"]) == ("invalid_value", "type")
    assert error["error"]["message"].startswith("Invalid value: 'transcription_session.update'.")


@pytest.mark.parametrize("session_type", ["transcription", "realtime"])
def test_include_logprobs_adds_log_probabilities_to_deltas_and_the_transcript(session_type: str) -> None:
    """`include: ["item.input_audio_transcription.logprobs"]` (both session types take it, in the SDK)."""
    said = "My name is Alice and I live in Paris, near the river."
    model = ScriptedModel(Script.from_dict({"transcripts": [said]}))
    session = make_session(model=model, limits=Limits(pacing=0.0), session_type=session_type)
    session.drain()
    audio_input: dict[str, Any] = {"transcription": {"model": "gpt-4o-transcribe"}}
    if session_type == "realtime":
        audio_input["turn_detection"] = {"type": "server_vad", "create_response": False}
    update = {"type": session_type, "audio": {"input": audio_input}, "include": [LOGPROBS]}
    session.receive({"type": "session.update", "session": update}, 1.0)
    session.receive({"type": "input_audio_buffer.append", "audio": utterance()}, 1.0)
    run_until_idle(session, 1.0)
    events = session.drain()
    assert events[0]["type"] == "session.updated" and events[0]["session"]["include"] == [LOGPROBS]
    deltas = [e for e in events if e["type"] == "conversation.item.input_audio_transcription.delta"]
    (completed,) = [e for e in events if e["type"].endswith("input_audio_transcription.completed")]
    tokens = completed["logprobs"]
    assert len(deltas) > 1 and "".join(p["token"] for p in tokens) == said
    assert [p["token"] for d in deltas for p in d["logprobs"]] == [p["token"] for p in tokens]
    assert all(-0.06 < p["logprob"] <= 0 and bytes(p["bytes"]).decode() == p["token"] for p in tokens)
    for event in events:
        validate_ga(event)


def test_without_include_there_are_no_logprobs() -> None:
    flow = Flow()
    flow.configure()
    assert not any("logprobs" in e for e in flow.speak())
