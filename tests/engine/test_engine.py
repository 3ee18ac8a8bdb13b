"""The session engine driven directly: no sockets, time as a parameter."""

from __future__ import annotations

import base64
import itertools
from typing import Any

import pytest

from rtsim.simulator import audio
from rtsim.simulator.dialect import BETA
from rtsim.simulator.engine import Limits, Session, heard_transcript
from rtsim.simulator.model import Script, ScriptedModel
from tests.support.engine import WALL, make_session, run_until_idle, user_text, validate_beta, validate_ga


def types(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]


def say(session: Session, text: str, now: float = 0.0) -> list[dict[str, Any]]:
    """A user text turn and a response, run to completion; returns every event produced."""
    session.receive(user_text(text), now)
    session.receive({"type": "response.create"}, now)
    run_until_idle(session, now)
    return session.drain()


def reply_of(events: list[dict[str, Any]]) -> str:
    done = [e for e in events if e["type"] == "response.done"][-1]
    parts = [p for item in done["response"]["output"] for p in item.get("content", [])]
    return "".join(p.get("transcript") or p.get("text") or "" for p in parts)


def errors(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e["error"] for e in events if e["type"] == "error"]


def test_session_created_carries_the_real_defaults() -> None:
    """gpt-realtime's `session.created` in captured GA traffic: voice `alloy`, server VAD 0.5 / 300 ms /
    200 ms of silence (the SDK's docstring says 500; the service uses 200), the server's default
    instructions (jurgob/nextjs-openai-webrtc's captured `session.created`)."""
    session = make_session(limits=Limits(max_session=3600))
    (created,) = session.drain()
    validate_ga(created)
    s = created["session"]
    assert created["type"] == "session.created"
    assert s["id"].startswith("sess_") and s["object"] == "realtime.session" and s["type"] == "realtime"
    assert s["model"] == "gpt-realtime"
    assert s["expires_at"] == int(WALL + 3600)
    assert s["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert s["audio"]["output"]["voice"] == "alloy"
    vad = s["audio"]["input"]["turn_detection"]
    assert (vad["type"], vad["threshold"], vad["prefix_padding_ms"], vad["silence_duration_ms"]) == (
        "server_vad",
        0.5,
        300,
        200,
    )
    assert vad["create_response"] is True and vad["interrupt_response"] is True
    assert vad["idle_timeout_ms"] is None
    assert s["instructions"].startswith("Your knowledge cutoff is 2023-10. You are a helpful, witty")
    assert (s["max_output_tokens"], s["truncation"], s["tracing"]) == ("inf", "auto", None)
    assert s["audio"]["input"]["noise_reduction"] is None


def test_session_update_merges_and_echoes_the_whole_session() -> None:
    session = make_session()
    session.drain()
    session.receive(
        {
            "type": "session.update",
            "session": {
                "type": "realtime",
                "instructions": "Be terse.",
                "audio": {
                    "output": {"voice": "cedar"},
                    "input": {"turn_detection": {"type": "server_vad", "threshold": 0.7}},
                },
            },
        },
        0.0,
    )
    (updated,) = session.drain()
    validate_ga(updated)
    s = updated["session"]
    assert s["instructions"] == "Be terse."
    assert s["audio"]["output"]["voice"] == "cedar"
    assert s["audio"]["output"]["format"] == {"type": "audio/pcm", "rate": 24000}  # untouched sibling kept
    vad = s["audio"]["input"]["turn_detection"]
    assert vad["threshold"] == 0.7 and vad["silence_duration_ms"] == 200  # the rest takes the defaults


@pytest.mark.parametrize(
    ("update", "code", "param", "in_message"),
    [
        (
            {"type": "realtime", "audio": {"output": {"voice": "robot"}}},
            "invalid_value",
            "session.audio.output.voice",
            "'robot'",
        ),
        ({"type": "realtime", "voice": "alloy"}, "unknown_parameter", "session.voice", "'session.voice'"),
        ({"type": "realtime", "instructions": 42}, "invalid_type", "session.instructions", "a string"),
        ({"instructions": "hi"}, "missing_required_parameter", "session.type", "'session.type'"),
        (
            {
                "type": "realtime",
                "audio": {"input": {"turn_detection": {"type": "server_vad", "threshold": 2}}},
            },
            "decimal_above_max_value",
            "session.audio.input.turn_detection.threshold",
            "<= 1",
        ),
        (
            {
                "type": "realtime",
                "audio": {"input": {"turn_detection": {"type": "server_vad", "create_response": None}}},
            },
            "invalid_type",
            "session.audio.input.turn_detection.create_response",
            "null",
        ),
        (
            {"type": "realtime", "output_modalities": ["video"]},
            "invalid_value",
            "session.output_modalities[0]",
            "'video'",
        ),
    ],
)
def test_invalid_session_update_gets_the_real_error_shape(
    update: dict[str, Any], code: str, param: str, in_message: str
) -> None:
    session = make_session()
    session.drain()
    before = session.config
    session.receive({"type": "session.update", "event_id": "evt_client_1", "session": update}, 0.0)
    (event,) = session.drain()
    validate_ga(event)
    assert event["type"] == "error"
    err = event["error"]
    assert (err["type"], err["code"], err["param"], err["event_id"]) == (
        "invalid_request_error",
        code,
        param,
        "evt_client_1",
    )
    assert in_message in err["message"]
    assert session.config == before  # nothing half-applied


def test_text_turn_gives_the_full_ga_audio_sequence_in_order() -> None:
    session = make_session()
    session.drain()
    events = say(session, "Hello there, how are you today?")
    for event in events:
        validate_ga(event)
    names = types(events)
    assert names[:2] == ["conversation.item.added", "conversation.item.done"]
    response_part = [
        n
        for n in names[2:]
        if n not in ("response.output_audio.delta", "response.output_audio_transcript.delta")
    ]
    assert response_part == [
        "response.created",
        "response.output_item.added",
        "conversation.item.added",
        "response.content_part.added",
        "response.output_audio.done",
        "response.output_audio_transcript.done",
        "response.content_part.done",
        "conversation.item.done",
        "response.output_item.done",
        "response.done",
        "rate_limits.updated",
    ]
    deltas = [e for e in events if e["type"] == "response.output_audio.delta"]
    pcm = b"".join(base64.b64decode(e["delta"]) for e in deltas)
    transcript = next(e for e in events if e["type"] == "response.output_audio_transcript.done")["transcript"]
    assert abs(len(pcm) // 48 - audio.duration_ms_for_text(transcript)) <= 1  # length follows the transcript
    assert all(len(base64.b64decode(e["delta"])) <= 4800 for e in deltas)  # ~100 ms each
    joined = "".join(e["delta"] for e in events if e["type"] == "response.output_audio_transcript.delta")
    assert joined == transcript
    done = events[-2]
    assert done["response"]["status"] == "completed"
    usage = done["response"]["usage"]
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"] > 0


def test_audio_is_paced_in_real_time() -> None:
    session = make_session(limits=Limits(pacing=1.0, response_latency=0.25, audio_start_delay=0.0))
    session.drain()
    session.receive(user_text("Tell me something long enough to need many chunks of audio."), 0.0)
    session.receive({"type": "response.create"}, 0.0)
    times: list[float] = []
    now = 0.0
    while (deadline := session.next_deadline()) is not None and deadline < 30:
        now = deadline
        session.advance(now)
        times += [now for e in session.drain() if e["type"] == "response.output_audio.delta"]
    assert times[0] == pytest.approx(0.25)  # the configured response latency
    gaps = {round(b - a, 6) for a, b in itertools.pairwise(times)}
    assert gaps == {0.1}


def test_text_modality_uses_output_text_events() -> None:
    session = make_session()
    session.receive(
        {"type": "session.update", "session": {"type": "realtime", "output_modalities": ["text"]}}, 0
    )
    session.drain()
    events = say(session, "Hello")
    assert "response.output_audio.delta" not in types(events)
    text_done = next(e for e in events if e["type"] == "response.output_text.done")
    assert (
        "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta") == text_done["text"]
    )
    for event in events:
        validate_ga(event)


def test_recall_within_a_session_and_not_across_sessions() -> None:
    session = make_session()
    say(session, "My name is Alice.")
    assert "Alice" in reply_of(say(session, "What is my name?"))
    fresh = make_session()
    answer = reply_of(say(fresh, "What is my name?"))
    assert "Alice" not in answer and "don't know" in answer


def test_a_system_summary_at_root_restores_context() -> None:
    session = make_session()
    session.receive(
        {
            "type": "conversation.item.create",
            "previous_item_id": "root",
            "item": {
                "type": "message",
                "role": "system",
                "content": [{"type": "input_text", "text": "Summary so far: the user's name is Alice."}],
            },
        },
        0,
    )
    assert "Alice" in reply_of(say(session, "What is my name?"))


def test_the_context_window_forgets_the_oldest_turns() -> None:
    session = make_session(limits=Limits(pacing=0.0, context_window=4096 + 400))
    session.receive({"type": "session.update", "session": {"type": "realtime", "instructions": "x"}}, 0)
    say(session, "My name is Alice.")
    for _ in range(12):
        say(session, "Here is a fairly long sentence to fill up the context window with many tokens.")
    assert "Alice" not in reply_of(say(session, "What is my name?"))


def test_response_cancel_and_its_errors() -> None:
    session = make_session(limits=Limits(pacing=1.0))
    session.drain()
    session.receive({"type": "response.cancel", "event_id": "c1"}, 0.0)
    (err,) = errors(session.drain())
    assert err["code"] == "response_cancel_not_active" and err["event_id"] == "c1"
    session.receive(user_text("Please say a long sentence so that I can interrupt you in the middle."), 0.0)
    session.receive({"type": "response.create"}, 0.0)
    session.advance(0.35)
    session.receive({"type": "response.create", "event_id": "c2"}, 0.35)
    (busy,) = errors(session.drain())
    assert busy["code"] == "conversation_already_has_active_response" and busy["event_id"] == "c2"
    session.receive({"type": "response.cancel"}, 0.4)
    events = session.drain()
    for event in events:
        validate_ga(event)
    assert types(events)[:6] == [
        "response.output_audio.done",
        "response.output_audio_transcript.done",
        "response.content_part.done",
        "conversation.item.done",
        "response.output_item.done",
        "response.done",
    ]
    done = events[5]["response"]
    assert done["status"] == "cancelled"
    assert done["status_details"] == {"type": "cancelled", "reason": "client_cancelled"}
    assert done["output"][0]["status"] == "incomplete"
    assert session.next_deadline() == session.deadline  # no audio keeps flowing
    say(session, "still alive?")  # the session goes on


def test_out_of_band_response_stays_out_of_the_conversation() -> None:
    session = make_session(limits=Limits(pacing=1.0))
    session.receive(user_text("My name is Bob."), 0)
    session.receive({"type": "response.create"}, 0)
    session.receive(
        {
            "type": "response.create",
            "response": {
                "conversation": "none",
                "output_modalities": ["text"],
                "metadata": {"purpose": "summary"},
                "input": [
                    {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}
                ],
            },
        },
        0,
    )
    items_before = len(session.items)
    run_until_idle(session)
    events = session.drain()
    oob = [e for e in events if e["type"] == "response.done" and e["response"]["conversation_id"] is None]
    assert len(oob) == 1 and oob[0]["response"]["metadata"] == {"purpose": "summary"}
    assert len(session.items) == items_before
    assert not errors(events)


def test_items_create_insert_retrieve_delete_and_their_errors() -> None:
    session = make_session()
    session.receive(user_text("first"), 0)
    first = session.items[0].id
    session.receive(
        {
            "type": "conversation.item.create",
            "previous_item_id": "root",
            "item": {
                "id": "item_sys",
                "type": "message",
                "role": "system",
                "content": [{"type": "input_text", "text": "summary"}],
            },
        },
        0,
    )
    assert [i.id for i in session.items] == ["item_sys", first]
    session.receive(
        {
            "type": "conversation.item.create",
            "previous_item_id": "item_nope",
            "event_id": "e1",
            "item": {"type": "message", "role": "user", "content": []},
        },
        0,
    )
    session.receive({"type": "conversation.item.retrieve", "item_id": first}, 0)
    session.receive({"type": "conversation.item.delete", "item_id": "item_sys"}, 0)
    session.receive({"type": "conversation.item.delete", "item_id": "item_sys", "event_id": "e2"}, 0)
    session.receive(
        {
            "type": "conversation.item.create",
            "item": {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "text", "text": "old beta part"}],
            },
        },
        0,
    )
    events = session.drain()
    for event in events:
        validate_ga(event)
    errs = errors(events)
    assert [e["code"] for e in errs] == ["item_not_found", "item_not_found", "invalid_value"]
    assert errs[0]["param"] == "previous_item_id" and errs[0]["event_id"] == "e1"
    assert "'text'" in errs[2]["message"] and "'output_text'" in errs[2]["message"]  # the GA part-type trap
    retrieved = next(e for e in events if e["type"] == "conversation.item.retrieved")
    assert retrieved["item"]["id"] == first
    assert [i.id for i in session.items] == [first]


def test_function_call_output_resumes_a_scripted_tool_call() -> None:
    script = Script.from_dict(
        {
            "replies": [
                {
                    "match": "weather",
                    "tool_call": {"name": "get_weather", "arguments": {"city": "Paris"}},
                    "after_tool": "It is {output} in Paris.",
                }
            ]
        }
    )
    session = make_session(model=ScriptedModel(script))
    session.receive(
        {
            "type": "session.update",
            "session": {
                "type": "realtime",
                "tools": [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}],
            },
        },
        0,
    )
    events = say(session, "What's the weather?")
    for event in events:
        validate_ga(event)
    done = next(e for e in events if e["type"] == "response.function_call_arguments.done")
    assert done["name"] == "get_weather" and '"Paris"' in done["arguments"]
    deltas = "".join(e["delta"] for e in events if e["type"] == "response.function_call_arguments.delta")
    assert deltas == done["arguments"]
    session.receive(
        {
            "type": "conversation.item.create",
            "item": {"type": "function_call_output", "call_id": done["call_id"], "output": "sunny"},
        },
        0,
    )
    session.receive({"type": "response.create"}, 0)
    run_until_idle(session)
    assert "sunny" in reply_of(session.drain())


def test_truncate_cuts_the_transcript_to_what_was_heard_and_rejects_bad_requests() -> None:
    session = make_session()
    events = say(session, "Tell me a long story about a dragon and a knight please.")
    item_id = next(e for e in events if e["type"] == "response.output_item.done")["item"]["id"]
    item = session.by_id[item_id]
    full = item.data["content"][0]["transcript"]
    total = item.audio_ms
    session.receive(
        {
            "type": "conversation.item.truncate",
            "item_id": item_id,
            "content_index": 0,
            "audio_end_ms": total + 500,
        },
        0,
    )
    session.receive(
        {
            "type": "conversation.item.truncate",
            "item_id": "item_missing",
            "content_index": 0,
            "audio_end_ms": 10,
        },
        0,
    )
    user_item = session.items[0].id
    session.receive(
        {"type": "conversation.item.truncate", "item_id": user_item, "content_index": 0, "audio_end_ms": 10},
        0,
    )
    session.receive(
        {
            "type": "conversation.item.truncate",
            "item_id": item_id,
            "content_index": 0,
            "audio_end_ms": total // 2,
        },
        0,
    )
    events = session.drain()
    errs = errors(events)
    assert errs[0]["message"] == f"Audio content of {total}ms is already shorter than {total + 500}ms"
    assert errs[1]["code"] == "item_not_found"
    assert errs[2]["message"] == "Only model output audio messages can be truncated"
    truncated = next(e for e in events if e["type"] == "conversation.item.truncated")
    validate_ga(truncated)
    assert truncated["audio_end_ms"] == total // 2
    heard = item.data["content"][0]["transcript"]
    assert full.startswith(heard) and 0 < len(heard) < len(full)


def test_heard_transcript_only_counts_whole_words() -> None:
    assert heard_transcript("one two three four", 500, 1000) == "one two"
    assert heard_transcript("one two", 0, 1000) == ""
    assert heard_transcript("one two", 1000, 1000) == "one two"


@pytest.mark.parametrize("ending", ["both", "error", "close"])
def test_session_cap_endings(ending: str) -> None:
    session = make_session(limits=Limits(max_session=3.0, expiry_ending=ending, pacing=1.0))
    session.drain()
    session.receive(user_text("Talk for a while please, a long sentence."), 2.9)
    session.receive({"type": "response.create"}, 2.9)
    assert session.next_deadline() is not None
    session.advance(3.0)
    events = session.drain()
    expired = [e for e in events if e["type"] == "error"]
    sentence = "Your session hit the maximum duration of 0.05 minutes."
    if ending in ("both", "error"):
        assert expired[0]["error"]["code"] == "session_expired"
        assert expired[0]["error"]["message"] == sentence
    else:
        assert not expired
    assert session.close_request == ((1000, "") if ending == "error" else (1001, sentence))
    assert session.next_deadline() is None
    session.receive(user_text("too late"), 3.1)
    assert session.drain() == []


def test_an_hour_cap_names_sixty_minutes() -> None:
    session = make_session(limits=Limits(max_session=3600))
    session.advance(3600)
    assert session.drain()[-1]["error"]["message"] == "Your session hit the maximum duration of 60 minutes."


@pytest.mark.parametrize(
    ("event", "code", "param"),
    [
        ({"event_id": "x1"}, "missing_required_parameter", "type"),
        ({"type": 5, "event_id": "x1"}, "invalid_type", "type"),
        ({"type": "response.explode", "event_id": "x1"}, "invalid_value", "type"),
        ({"type": "conversation.item.delete", "item_id": 12, "event_id": "x1"}, "invalid_type", "item_id"),
        ({"type": "conversation.item.delete", "event_id": "x1"}, "missing_required_parameter", "item_id"),
        (
            {"type": "input_audio_buffer.append", "audio": "***not base64***", "event_id": "x1"},
            "invalid_value",
            "audio",
        ),
        ({"type": "conversation.item.create", "item": "nope", "event_id": "x1"}, "invalid_type", "item"),
        (
            {"type": "response.create", "response": {"instructions": 3}, "event_id": "x1"},
            "invalid_type",
            "response.instructions",
        ),
        ({"type": "session.update", "session": [], "event_id": "x1"}, "invalid_type", "session"),
    ],
)
def test_bad_events_get_error_events_and_the_session_goes_on(
    event: dict[str, Any], code: str, param: str
) -> None:
    session = make_session()
    say(session, "My name is Alice.")
    session.receive(event, 0)
    (error,) = session.drain()
    validate_ga(error)
    assert (error["error"]["code"], error["error"]["param"], error["error"]["event_id"]) == (
        code,
        param,
        "x1",
    )
    assert "Alice" in reply_of(say(session, "What is my name?"))  # nothing accepted was lost


def test_input_buffer_commit_clear_and_empty_commit() -> None:
    session = make_session()
    session.receive({"type": "session.update", "session": {"type": "realtime", "audio": {"input": {
        "turn_detection": None}}}}, 0)  # manual commits only
    session.drain()
    session.receive({"type": "input_audio_buffer.commit", "event_id": "c"}, 0)
    (empty,) = session.drain()
    assert empty["error"]["code"] == "input_audio_buffer_commit_empty"
    assert "0.00ms" in empty["error"]["message"]
    pcm = audio.speech_for_text("hello there", seed=1)
    session.receive({"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm).decode()}, 0)
    session.receive({"type": "input_audio_buffer.commit"}, 0)
    session.receive({"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm).decode()}, 0)
    session.receive({"type": "input_audio_buffer.clear"}, 0)
    events = session.drain()
    for event in events:
        validate_ga(event)
    assert types(events) == [
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.done",
        "input_audio_buffer.cleared",
    ]
    assert events[1]["item"]["content"][0]["type"] == "input_audio"
    assert events[0]["item_id"] == events[1]["item"]["id"]


def test_voice_cannot_change_once_assistant_audio_exists() -> None:
    session = make_session()
    say(session, "hello")
    session.receive(
        {"type": "session.update", "session": {"type": "realtime", "audio": {"output": {"voice": "cedar"}}}},
        0,
    )
    (err,) = errors(session.drain())
    assert err["code"] == "cannot_update_voice"


def test_same_seed_same_session() -> None:
    first = [say(make_session(), "My name is Alice.") for _ in range(2)]
    assert first[0] == first[1]


def test_beta_dialect_renames_events_and_flattens_the_session() -> None:
    session = make_session(dialect=BETA)
    (created,) = session.drain()
    validate_beta(created)
    assert created["session"]["input_audio_format"] == "pcm16"
    assert created["session"]["turn_detection"]["type"] == "server_vad"
    session.receive(
        {
            "type": "session.update",
            "session": {"voice": "alloy", "modalities": ["text", "audio"], "input_audio_format": "g711_ulaw"},
        },
        0,
    )
    (updated,) = session.drain()
    validate_beta(updated)
    assert updated["session"]["voice"] == "alloy" and updated["session"]["input_audio_format"] == "g711_ulaw"
    session.receive({"type": "session.update", "session": {"type": "realtime"}, "event_id": "b1"}, 0)
    (err,) = errors(session.drain())
    assert err["code"] == "unknown_parameter" and err["param"] == "session.type"
    session.receive(
        {
            "type": "conversation.item.create",
            "item": {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "text", "text": "beta assistant text"}],
            },
        },
        0,
    )
    events = say(session, "My name is Alice.")
    for event in events:
        validate_beta(event)
    names = set(types(events))
    assert {"conversation.item.created", "response.audio.delta", "response.audio_transcript.done"} <= names
    assert not names & {"conversation.item.added", "conversation.item.done", "response.output_audio.delta"}
