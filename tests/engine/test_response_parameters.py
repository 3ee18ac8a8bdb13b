"""`response.create` parameters as the real GA service takes them, and the order at the end of a response.

Sources:
- the beta names are refused on the GA endpoint with "Unknown parameter: 'response.modalities'."
  (recorded by the client fixes that moved to `output_modalities`);
- livekit-agents' OpenAI plugin sends `"instructions": null` (``instructions=instructions or None``) on
  every reply without instructions and works in production, so null means "not given";
- `parallel_tool_calls` and `reasoning` are fields of the installed SDK's `RealtimeResponseCreateParamsParam`;
- the end-of-response order is that of captured live GA traffic (`conversation.item.done` before
  `response.output_item.done`).
"""

from __future__ import annotations

from typing import Any, get_type_hints

import pytest
from openai.types.realtime.realtime_response_create_params_param import RealtimeResponseCreateParamsParam

from rtsim.simulator.dialect import BETA
from rtsim.simulator.engine.responses import GA_RESPONSE_FIELDS
from tests.support.engine import make_session, run_until_idle, user_text, validate_ga


def create(session: Any, response: dict[str, Any]) -> list[dict[str, Any]]:
    session.receive(user_text("Hello there"), 0.0)
    session.drain()
    session.receive({"type": "response.create", "event_id": "evt_1", "response": response}, 0.0)
    run_until_idle(session)
    return session.drain()


@pytest.mark.parametrize(
    "beta_name,value",
    [
        ("modalities", ["text"]),
        ("voice", "ash"),
        ("output_audio_format", "pcm16"),
        ("temperature", 0.7),
        ("max_response_output_tokens", 100),
    ],
)
def test_beta_parameters_are_unknown_on_a_ga_session(beta_name: str, value: Any) -> None:
    events = create(make_session(), {beta_name: value})
    assert [e["type"] for e in events] == ["error"]
    error = events[0]["error"]
    assert error["type"] == "invalid_request_error"
    assert error["code"] == "unknown_parameter"
    assert error["message"] == f"Unknown parameter: 'response.{beta_name}'."
    assert error["param"] == f"response.{beta_name}"
    assert error["event_id"] == "evt_1"
    validate_ga(events[0])


def test_beta_parameters_still_work_on_a_beta_session() -> None:
    events = create(make_session(dialect=BETA), {"modalities": ["text"], "temperature": 0.7})
    names = [e["type"] for e in events]
    assert "error" not in names
    assert "response.text.delta" in names
    assert "response.audio.delta" not in names


def test_null_instructions_mean_not_given() -> None:
    events = create(make_session(), {"instructions": None, "metadata": None, "tools": None})
    names = [e["type"] for e in events]
    assert "error" not in names
    done = next(e for e in events if e["type"] == "response.done")
    assert done["response"]["status"] == "completed"


def test_current_sdk_fields_are_accepted() -> None:
    events = create(make_session(), {"parallel_tool_calls": False, "reasoning": {"effort": "low"}})
    assert "error" not in [e["type"] for e in events]
    assert next(e for e in events if e["type"] == "response.done")["response"]["status"] == "completed"


def test_a_bad_reasoning_effort_is_refused_with_the_allowed_values() -> None:
    events = create(make_session(), {"reasoning": {"effort": "extreme"}})
    assert [e["type"] for e in events] == ["error"]
    assert events[0]["error"]["param"] == "response.reasoning.effort"
    assert events[0]["error"]["code"] == "invalid_value"


def test_the_accepted_ga_fields_are_the_sdks() -> None:
    """An SDK upgrade that adds or drops a `response.create` field fails here rather than drifting."""
    sdk_fields = set(get_type_hints(RealtimeResponseCreateParamsParam))
    assert set(GA_RESPONSE_FIELDS) == sdk_fields


def test_the_end_of_a_response_closes_the_item_before_the_output_item() -> None:
    events = create(make_session(), {})
    for event in events:
        validate_ga(event)
    tail = [
        e["type"]
        for e in events
        if e["type"]
        in (
            "response.content_part.done",
            "conversation.item.done",
            "response.output_item.done",
            "response.done",
            "rate_limits.updated",
        )
    ]
    assert tail == [
        "response.content_part.done",
        "conversation.item.done",
        "response.output_item.done",
        "response.done",
        "rate_limits.updated",
    ]



def test_rate_limits_updated_carries_one_tokens_entry() -> None:
    events = create(make_session(), {})
    limits = next(e for e in events if e["type"] == "rate_limits.updated")
    validate_ga(limits)
    assert [entry["name"] for entry in limits["rate_limits"]] == ["tokens"]
    assert 0 < limits["rate_limits"][0]["remaining"] < limits["rate_limits"][0]["limit"]
