"""Properties over generated input: bad input never crashes the engine, scenarios are data."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rtsim.scenarios.spec import from_dict
from rtsim.simulator.faults import CATALOGUE
from rtsim.simulator.protocol import CLIENT_EVENT_TYPES, RealtimeError, decode_client_frame
from tests.support.engine import make_session, run_until_idle, user_text, validate_ga

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
FIELD_NAMES = st.sampled_from(
    [
        "session",
        "item",
        "item_id",
        "audio",
        "response",
        "previous_item_id",
        "content_index",
        "audio_end_ms",
        "event_id",
        "response_id",
        "type",
        "role",
    ]
)
CLIENT_EVENT = st.fixed_dictionaries(
    {"type": st.sampled_from(CLIENT_EVENT_TYPES) | st.text(max_size=12)},
    optional={"event_id": JSON},
).flatmap(lambda base: st.dictionaries(FIELD_NAMES, JSON, max_size=4).map(lambda extra: {**extra, **base}))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(CLIENT_EVENT | JSON, min_size=1, max_size=8))
def test_any_client_input_gives_valid_events_and_the_session_goes_on(events: list[Any]) -> None:
    session = make_session()
    session.receive(user_text("My name is Alice."), 0.0)
    for event in events:
        if isinstance(event, dict):
            session.receive(event, 0.0)
        else:  # not an object: the frame decoder's business, which must refuse it the real way
            try:
                decode_client_frame(json.dumps(event))
            except RealtimeError as exc:
                session.error(exc)
        run_until_idle(session, 0.0, horizon=5.0)
    for emitted in session.drain():
        validate_ga(emitted)
    if session.close_request is None:  # nothing here asks to close, but a cancelled state must still answer
        session.receive({"type": "response.cancel"}, 1.0)
        session.receive(user_text("What is my name?"), 1.0)
        session.receive({"type": "response.create"}, 1.0)
        run_until_idle(session, 1.0, horizon=30.0)
        done = [e for e in session.drain() if e["type"] == "response.done"]
        assert done and done[-1]["response"]["status"] == "completed"


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_frame_decoding_only_ever_raises_the_real_error_shape(text: str) -> None:
    try:
        event = decode_client_frame(text)
    except RealtimeError as exc:
        assert exc.type == "invalid_request_error" and exc.message
    else:
        assert isinstance(event, dict)


TURN = st.fixed_dictionaries(
    {
        "at": st.floats(0, 3600),
        "say": st.text(min_size=1, max_size=30),
        "mode": st.sampled_from(["text", "audio"]),
    }
)
FAULT = st.fixed_dictionaries({"at": st.floats(0, 3600), "kind": st.sampled_from(sorted(CATALOGUE))})


@settings(max_examples=100, deadline=None)
@given(st.floats(1, 1000), st.lists(TURN, max_size=5), st.lists(FAULT, max_size=5), st.floats(1, 7200))
def test_scenarios_built_as_data_keep_their_timeline_shape(
    scale: float, turns: list[dict[str, Any]], faults: list[dict[str, Any]], cap: float
) -> None:
    scenario = from_dict(
        {
            "name": "generated",
            "time_scale": scale,
            "server": {"max_session": cap},
            "duration": 7200,
            "user": turns,
            "faults": faults,
            "checks": ["no_lost_turns"],
        }
    )
    assert scenario.duration == 7200 / scale
    assert scenario.server["max_session"] == cap / scale
    assert [t.at for t in scenario.user] == [t["at"] / scale for t in turns]
    assert [f.at for f in scenario.faults] == [f["at"] / scale for f in faults]
    document = scenario.client_document()
    assert [t["say"] for t in document["turns"]] == [t["say"] for t in turns]
    assert json.loads(json.dumps(document)) == document  # what a client in any language reads
