"""Timing, usage and truncation as the real GA service behaves (issue 11 items 8, 10, 11; docs/parity.md).

Sources are named per test. The engine runs on a fake clock: every time below is engine time, not wall time.
"""

from __future__ import annotations

import base64
import itertools
from typing import Any

import pytest

from rtsim.simulator import audio
from rtsim.simulator.engine import Limits, Session
from rtsim.simulator.engine.state import FASTER_THAN_REAL_TIME
from rtsim.simulator.model import Script, ScriptedModel
from rtsim.simulator.protocol import IdFactory
from tests.support.engine import WALL, make_session, run_until_idle, user_text, validate_ga

LONG_REPLY = (
    "Once upon a time a dragon and a knight met at a castle on a hill, and they talked for a very long "
    "time about the weather, the harvest, the roads and the price of bread in the valley below."
)


def timed(session: Session, start: float = 0.0, horizon: float = 60.0) -> list[tuple[float, dict[str, Any]]]:
    """Advance deadline by deadline, keeping the engine time each event came out at."""
    out = [(start, e) for e in session.drain()]
    now = start
    while (deadline := session.next_deadline()) is not None and deadline < min(horizon, session.deadline):
        now = max(now, deadline)
        session.advance(now)
        out += [(now, e) for e in session.drain()]
    return out


def long_session(limits: Limits) -> Session:
    model = ScriptedModel(Script.from_dict({"default": LONG_REPLY}))
    return make_session(limits=limits, model=model)


def audio_delta_times(events: list[tuple[float, dict[str, Any]]]) -> list[float]:
    return [t for t, e in events if e["type"] == "response.output_audio.delta"]


# ---- item 8: audio faster than real time ---------------------------------------------------------------


def test_audio_is_delivered_faster_than_real_time_by_default() -> None:
    """The real service streams audio faster than it plays; clients buffer it and track playback themselves
    (community.openai.com "Realtime API is extremely fast": the whole reply is delivered before its audio
    has played; twilio/twilio-agent-connect-python#118: "OpenAI can generate much faster than real time ...
    seconds of buffered audio"). The default delivers 100 ms chunks every 25 ms: 4x real time."""
    assert Limits().pacing == FASTER_THAN_REAL_TIME == 0.25
    session = long_session(Limits())
    session.receive(user_text("Tell me a story."), 0.0)
    session.receive({"type": "response.create"}, 0.0)
    events = timed(session)
    times = audio_delta_times(events)
    audio_ms = sum(
        len(base64.b64decode(e["delta"])) // 48
        for _, e in events
        if e["type"] == "response.output_audio.delta"
    )
    delivered_in = times[-1] - times[0]
    assert audio_ms > 5000
    assert delivered_in == pytest.approx((len(times) - 1) * 0.025)
    assert delivered_in < audio_ms / 1000 / 3  # well ahead of playback
    done_at = next(t for t, e in events if e["type"] == "response.done")
    assert done_at < audio_ms / 1000 / 2  # the response is over long before its audio has played


def test_pacing_one_is_real_time_delivery() -> None:
    session = long_session(Limits(pacing=1.0))
    session.receive(user_text("Tell me a story."), 0.0)
    session.receive({"type": "response.create"}, 0.0)
    times = audio_delta_times(timed(session))
    gaps = {round(b - a, 6) for a, b in itertools.pairwise(times)}
    assert gaps == {0.1}


# ---- item 11: the gap before the first audio, and truncating into it ---------------------------------------


def test_first_audio_comes_a_moment_after_the_audio_part_is_declared() -> None:
    """livekit/agents#6157 shows the sequence output_item.added, content_part.added, then (later) the first
    audio delta: a barge-in can land in between."""
    session = long_session(Limits(audio_start_delay=0.1))
    session.receive(user_text("Tell me a story."), 0.0)
    session.receive({"type": "response.create"}, 0.0)
    events = timed(session)
    part_at = next(t for t, e in events if e["type"] == "response.content_part.added")
    first_audio_at = audio_delta_times(events)[0]
    assert first_audio_at - part_at == pytest.approx(0.1)


def truncate(item_id: str, ms: int) -> dict[str, Any]:
    return {"type": "conversation.item.truncate", "item_id": item_id, "content_index": 0, "audio_end_ms": ms}


def test_truncate_before_any_audio_is_refused_as_the_real_service_does() -> None:
    """The real service answers a truncate of an assistant item with no audio yet (declared, no delta) with
    `invalid_request_error` `unsupported_content_type` "Only model output audio messages can be truncated"
    (livekit/agents#6157, and its fixes livekit/agents#6158 and #6249, which stop sending it)."""
    session = long_session(Limits(audio_start_delay=0.2, pacing=1.0))
    session.receive(user_text("Tell me a story."), 0.0)
    session.receive({"type": "response.create"}, 0.0)
    session.advance(0.0)
    events = session.drain()
    item_id = next(e for e in events if e["type"] == "response.content_part.added")["item_id"]
    assert not any(e["type"] == "response.output_audio.delta" for e in events)
    session.receive(truncate(item_id, 0), 0.1)
    error = next(e for e in session.drain() if e["type"] == "error")
    validate_ga(error)
    assert error["error"]["type"] == "invalid_request_error"
    assert error["error"]["code"] == "unsupported_content_type"
    assert error["error"]["message"] == "Only model output audio messages can be truncated"
    # Once audio has come, the same item can be truncated (within what was generated).
    session.advance(0.5)
    generated = sum(
        len(base64.b64decode(e["delta"])) // 48
        for e in session.drain()
        if e["type"] == "response.output_audio.delta"
    )
    assert generated >= 200
    session.receive(truncate(item_id, 200), 0.5)
    kinds = [e["type"] for e in session.drain()]
    assert "conversation.item.truncated" in kinds and "error" not in kinds


def test_a_cancelled_reply_that_never_spoke_cannot_be_truncated() -> None:
    """Barge-in before the first audio: the response is cancelled with no audio, and a truncate of its item
    at 0 ms is refused (livekit/agents#6158's review: "interrupted/cancelled before any audio generated")."""
    session = long_session(Limits(audio_start_delay=0.2))
    session.receive(user_text("Tell me a story."), 0.0)
    session.receive({"type": "response.create"}, 0.0)
    session.advance(0.0)
    item_id = next(e for e in session.drain() if e["type"] == "response.content_part.added")["item_id"]
    session.receive({"type": "response.cancel"}, 0.05)
    done = next(e for e in session.drain() if e["type"] == "response.done")
    assert done["response"]["status"] == "cancelled"
    session.receive(truncate(item_id, 0), 0.1)
    error = next(e for e in session.drain() if e["type"] == "error")
    assert error["error"]["code"] == "unsupported_content_type"


# ---- item 8: input transcription timing and usage ----------------------------------------------------------


def audio_turn_session(limits: Limits, transcription_model: str, seed: int = 0) -> Session:
    session = Session(
        ids=IdFactory.seeded(seed, "test"),
        model=ScriptedModel(Script.from_dict({"transcripts": ["Hello."]})),
        now=0.0,
        wall=WALL,
        limits=limits,
    )
    session.start(0.0)
    session.receive(
        {
            "type": "session.update",
            "session": {
                "type": "realtime",
                "audio": {"input": {"turn_detection": None, "transcription": {"model": transcription_model}}},
            },
        },
        0.0,
    )
    pcm = audio.speech_for_text("Hello.", seed=1)
    session.receive({"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm).decode()}, 0.0)
    session.drain()
    session.receive({"type": "input_audio_buffer.commit"}, 1.0)
    session.receive({"type": "response.create"}, 1.0)
    return session


def test_input_transcription_arrives_half_a_second_or_more_after_the_commit() -> None:
    """Captures: input transcription events come 0.5-1.4 s after the commit, often after `response.created`
    (the SDK's docstring: "Transcription runs asynchronously with Response creation, so this event may come
    before or after the Response events")."""
    arrivals = []
    for seed in range(8):
        session = audio_turn_session(Limits(pacing=0.0), "gpt-4o-transcribe", seed)
        events = timed(session, 1.0)
        kinds = [e["type"] for _, e in events]
        completed_at = next(
            t for t, e in events if e["type"] == "conversation.item.input_audio_transcription.completed"
        )
        assert kinds.index("response.created") < kinds.index(
            "conversation.item.input_audio_transcription.delta"
        )
        arrivals.append(completed_at - 1.0)
    assert all(0.5 <= delay <= 1.4 for delay in arrivals)
    assert len(set(arrivals)) > 1  # drawn, not fixed


def test_transcription_timing_is_seeded_and_can_be_immediate() -> None:
    def completed_at(limits: Limits) -> float:
        events = timed(audio_turn_session(limits, "whisper-1"), 1.0)
        return next(t for t, e in events if e["type"].endswith("input_audio_transcription.completed"))

    assert completed_at(Limits(pacing=0.0)) == completed_at(Limits(pacing=0.0))
    assert completed_at(Limits(pacing=0.0, transcription_delay=(0.0, 0.0))) == 1.0


@pytest.mark.parametrize(
    ("model", "usage_type"),
    [("gpt-4o-transcribe", "tokens"), ("gpt-4o-mini-transcribe", "tokens"), ("whisper-1", "duration")],
)
def test_transcription_usage_is_tokens_for_the_gpt_4o_transcribe_models(model: str, usage_type: str) -> None:
    """The SDK's `ConversationItemInputAudioTranscriptionCompletedEvent.usage` is
    `UsageTranscriptTextUsageTokens` (type "tokens": models billed by token usage, the gpt-4o*-transcribe) or
    `UsageTranscriptTextUsageDuration` (type "duration": whisper-1, billed by audio seconds)."""
    events = timed(audio_turn_session(Limits(pacing=0.0), model), 1.0)
    completed = next(e for _, e in events if e["type"].endswith("input_audio_transcription.completed"))
    parsed = validate_ga(completed)
    usage = completed["usage"]
    assert usage["type"] == usage_type
    assert type(parsed.usage).__name__.endswith("Tokens" if usage_type == "tokens" else "Duration")
    if usage_type == "tokens":
        assert usage["input_tokens"] > 0 and usage["output_tokens"] > 0
        assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
        assert usage["input_token_details"]["audio_tokens"] == usage["input_tokens"]


# ---- item 10: cached tokens and max_output_tokens -------------------------------------------------------


def usage_of_turns(session: Session, texts: list[str]) -> list[dict[str, Any]]:
    usages = []
    now = 0.0
    for text in texts:
        session.receive(user_text(text), now)
        session.receive({"type": "response.create"}, now)
        now = run_until_idle(session, now) + 1.0
        done = [e for e in session.drain() if e["type"] == "response.done"]
        validate_ga(done[-1])
        usages.append(done[-1]["response"]["usage"])
    return usages


def test_cached_tokens_are_the_prefix_already_seen_from_the_second_turn() -> None:
    """Captures: `cached_tokens` is 0 on the first turn and non-zero from the second (the conversation so
    far is a prefix the service has seen); the SDK's `RealtimeResponseUsageInputTokenDetails` counts cached
    tokens as a subset of the input tokens, split per modality in `cached_tokens_details`."""
    session = make_session(limits=Limits(pacing=0.0))
    update = {"type": "session.update", "session": {"type": "realtime", "instructions": "Be brief."}}
    session.receive(update, 0.0)
    first, second, third = usage_of_turns(session, ["My name is Alice.", "What is my name?", "Thanks."])
    assert first["input_token_details"]["cached_tokens"] == 0
    for earlier, later in ((first, second), (second, third)):
        details = later["input_token_details"]
        assert 0 < details["cached_tokens"] < later["input_tokens"]
        assert details["cached_tokens"] >= earlier["input_tokens"] - 8  # the whole earlier prompt, or near
        cached = details["cached_tokens_details"]
        split = cached["text_tokens"] + cached["audio_tokens"] + cached["image_tokens"]
        assert split == details["cached_tokens"]
    assert third["input_token_details"]["cached_tokens"] > second["input_token_details"]["cached_tokens"]


def test_changed_instructions_mean_nothing_is_cached() -> None:
    """The instructions open the prompt: change them and no prefix matches."""
    session = make_session(limits=Limits(pacing=0.0))
    usage_of_turns(session, ["My name is Alice."])
    session.receive({"type": "session.update", "session": {"type": "realtime", "instructions": "New."}}, 5.0)
    (after,) = usage_of_turns(session, ["What is my name?"])
    assert after["input_token_details"]["cached_tokens"] == 0


def test_a_long_reply_is_cut_at_max_output_tokens() -> None:
    """`max_output_tokens` ends the response `incomplete` with reason `max_output_tokens` (the SDK's
    `RealtimeResponseStatus`), and the reply delivered stops at the budget."""
    session = long_session(Limits(pacing=0.0))
    session.receive(user_text("Tell me a story."), 0.0)
    session.receive({"type": "response.create", "response": {"max_output_tokens": 40}}, 0.0)
    run_until_idle(session)
    events = session.drain()
    done = next(e for e in events if e["type"] == "response.done")
    validate_ga(done)
    response = done["response"]
    assert response["status"] == "incomplete"
    assert response["status_details"] == {"type": "incomplete", "reason": "max_output_tokens"}
    transcript = next(e for e in events if e["type"] == "response.output_audio_transcript.done")["transcript"]
    assert transcript and LONG_REPLY.startswith(transcript.rstrip())
    assert len(transcript) < len(LONG_REPLY) / 2
    assert response["usage"]["output_tokens"] <= 40
    assert response["output"][0]["status"] == "incomplete"
