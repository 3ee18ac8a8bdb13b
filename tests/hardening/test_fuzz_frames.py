"""A frame fuzzer: arbitrary text and binary frames over a real WebSocket never kill the server or another
session, and every event the server answers with is one of the SDK's `RealtimeServerEvent`s."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from rtsim.simulator.api import SyncSimulator
from rtsim.simulator.protocol import CLIENT_EVENT_TYPES, loads_strict
from tests.support.engine import validate_ga

KEY = "sk-fuzz"
# Answered with an error that echoes this event_id: a marker no fuzzed frame can produce.
SENTINEL = json.dumps(
    {"type": "conversation.item.retrieve", "item_id": "no_such_item", "event_id": "fuzz-end"}
)
TEXT = st.characters(exclude_categories=("Cs",))  # what a WebSocket text frame can carry (valid UTF-8)

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)  # dumped as NaN / Infinity: not JSON
    | st.text(max_size=20)  # may hold lone surrogates: dumped as \ud800 escapes
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
# Events that look like the real ones, with fields of any shape (and no response.create: replies are slow).
event_types = st.sampled_from([t for t in CLIENT_EVENT_TYPES if t != "response.create"]) | st.text(
    max_size=12
)
events = st.fixed_dictionaries(
    {"type": event_types},
    optional={
        "event_id": json_values,
        "session": json_values,
        "item": json_values,
        "audio": json_values,
        "item_id": json_values,
        "content_index": json_values,
        "audio_end_ms": json_values,
    },
).map(json.dumps)
deep = st.integers(min_value=50, max_value=3000).map(lambda n: "[" * n + "]" * n)
frames = st.lists(
    events | st.text(TEXT, max_size=200) | deep | st.binary(max_size=64),
    min_size=1,
    max_size=4,
)


@pytest.fixture(scope="module")
def simulator() -> Iterator[SyncSimulator]:
    with SyncSimulator(pacing=0.0) as sim:
        yield sim


def is_json_object(frame: str | bytes) -> bool:
    if isinstance(frame, bytes):
        return False
    try:
        return isinstance(loads_strict(frame), dict)
    except ValueError:
        return False


def open_ws(sim: SyncSimulator) -> ClientConnection:
    ws = connect(
        sim.base_url.replace("http", "ws", 1) + "/realtime?model=gpt-realtime",
        additional_headers={"Authorization": f"Bearer {KEY}"},
        max_size=None,
        open_timeout=10,
    )
    assert json.loads(ws.recv(timeout=10))["type"] == "session.created"
    return ws


def answered(ws: ClientConnection) -> list[dict[str, Any]]:
    """Everything the server sends until the sentinel's answer (events are handled in order), without it."""
    ws.send(SENTINEL)
    received = []
    while True:
        event = json.loads(ws.recv(timeout=10))
        if event["type"] == "error" and event["error"].get("event_id") == "fuzz-end":
            return received
        received.append(event)


@pytest.fixture(scope="module")
def bystander(simulator: SyncSimulator) -> Iterator[ClientConnection]:
    ws = open_ws(simulator)
    yield ws
    ws.close()


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(frames=frames)
def test_arbitrary_frames_never_hurt_the_server_or_another_session(
    simulator: SyncSimulator, bystander: ClientConnection, frames: list[str | bytes]
) -> None:
    ws = open_ws(simulator)
    try:
        for frame in frames:
            ws.send(frame)
        received = answered(ws)
    except ConnectionClosed as closed:  # the server may close a session, but only with a stated reason
        assert closed.rcvd is not None and closed.rcvd.code in (1000, 1007, 1009, 1011), closed
        received = []
    finally:
        ws.close()
    for event in received:
        validate_ga(event)
    if received:  # every frame that is not a JSON object got its own error event
        errors = [e for e in received if e["type"] == "error"]
        assert len(errors) >= sum(1 for frame in frames if not is_json_object(frame)), (frames, errors)
    assert answered(bystander) == []  # answered its marker at once, with nothing of anyone else's
    assert simulator.server.live_carriers()  # the bystander's session is still listed, and live
    assert not simulator.server.history.select(kind="server_error")
