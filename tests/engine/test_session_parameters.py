"""`session.update` as the real GA service takes it: the SDK's field set, its nulls and values, the checks the
service makes beyond the types, truncation, and GA items.

Sources (each also a row of docs/parity.md):
- the field set, the nulls and the allowed values are those of the installed SDK's
  `RealtimeSessionCreateRequestParam` and everything it nests (walked below, so an SDK upgrade fails here);
- both output modalities at once: refused (the SDK: "It is not possible to request both `text` and `audio`
  at the same time"), worded as the real check words it (litellm#14887 quotes "Invalid modalities: ...
  Supported combinations are: ...");
- `audio/pcm` without `rate`: "Missing required parameter: 'session.audio.output.format.rate'."
  (antoinedc/MantaUI#1196, probed live against gpt-realtime-2.1); only 24000 is a rate (the SDK);
- allowed values are listed "'a', 'b', and 'c'." (dongri/openai-api-rs#135 quotes the real message);
- truncation: the SDK's `RealtimeTruncationParam` docstrings (retention ratio, `token_limits`, disabled);
- GA items carry no `object` field (captured GA traffic); beta items did.
"""

from __future__ import annotations

import types
from collections.abc import Sequence
from typing import Any, Literal, NotRequired, Required, Union, get_args, get_origin, get_type_hints

import pytest
from openai.types.realtime.realtime_session_create_request_param import RealtimeSessionCreateRequestParam
from typing_extensions import is_typeddict

from rtsim.simulator import session_config
from rtsim.simulator.dialect import BETA
from rtsim.simulator.engine import Limits, Session
from rtsim.simulator.model import count_tokens
from rtsim.simulator.schema import Enum, Int, List, Nullable, Obj, OneOf, Spec, Tagged
from tests.support.engine import make_session, run_until_idle, user_text, validate_beta, validate_ga

# ---- the SDK's types against rtsim's specs ---------------------------------------------------------------


class Shape:
    """Every field path of a schema, which of them take null, and the allowed values of enumerated ones."""

    def __init__(self) -> None:
        self.fields: set[str] = set()
        self.nullable: set[str] = set()
        self.values: dict[str, set[Any]] = {}
        self.open_strings: set[str] = set()  # paths where any string goes (the SDK's `Union[str, Literal]`)


def _strip(hint: Any) -> Any:
    while get_origin(hint) in (Required, NotRequired):
        hint = get_args(hint)[0]
    return hint


def _tag(typed_dict: Any) -> str | None:
    hint = _strip(get_type_hints(typed_dict).get("type"))
    if get_origin(hint) is Literal and len(get_args(hint)) == 1:
        return str(get_args(hint)[0])
    return None


def sdk_shape(hint: Any, path: str, shape: Shape) -> None:
    hint = _strip(hint)
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        options = [a for a in get_args(hint) if a is not type(None)]
        if len(options) < len(get_args(hint)):
            shape.nullable.add(path)
        dicts = [a for a in options if is_typeddict(a)]
        tagged = len(dicts) > 1 and all(_tag(d) for d in dicts)
        for option in options:
            if option is str:
                shape.open_strings.add(path)
            elif is_typeddict(option):
                _sdk_typed_dict(option, f"{path}<{_tag(option)}>" if tagged else path, shape)
            else:
                sdk_shape(option, path, shape)
    elif origin is Literal:
        shape.values.setdefault(path, set()).update(get_args(hint))
    elif origin in (list, Sequence) or getattr(origin, "__name__", "") == "SequenceNotStr":
        sdk_shape(get_args(hint)[0], f"{path}[]", shape)
    elif is_typeddict(hint):
        _sdk_typed_dict(hint, path, shape)
    # str, int, float, bool, object, Dict[...]: a leaf


def _sdk_typed_dict(typed_dict: Any, path: str, shape: Shape) -> None:
    for key, hint in get_type_hints(typed_dict).items():
        sub = f"{path}.{key}"
        shape.fields.add(sub)
        sdk_shape(hint, sub, shape)


def spec_shape(spec: Spec, path: str, shape: Shape) -> None:
    if isinstance(spec, Nullable):
        shape.nullable.add(path)
        spec_shape(spec.inner, path, shape)
    elif isinstance(spec, OneOf):
        for option in spec.options:
            spec_shape(option, path, shape)
    elif isinstance(spec, Tagged):
        for tag, variant in spec.variants.items():
            sub = f"{path}<{tag}>" if len(spec.variants) > 1 else path
            shape.values.setdefault(f"{sub}.{spec.key}", set()).add(tag)  # the tag Tagged itself checks
            spec_shape(variant, sub, shape)
    elif isinstance(spec, Obj):
        for key, field in spec.fields.items():
            sub = f"{path}.{key}"
            shape.fields.add(sub)
            spec_shape(field, sub, shape)
    elif isinstance(spec, List):
        spec_shape(spec.inner, f"{path}[]", shape)
    elif isinstance(spec, Enum):
        shape.values.setdefault(path, set()).update(spec.values)
    elif isinstance(spec, Int) and spec.low is not None and spec.low == spec.high:
        shape.values.setdefault(path, set()).add(spec.low)  # one allowed number: the SDK's Literal
    elif isinstance(spec, session_config.OutputModalities):
        shape.values.setdefault(f"{path}[]", set()).update(("text", "audio"))


# MCP tools' own fields belong to the MCP work (rtsim keeps an MCP tool's object as given).
OUT_OF_SCOPE = ("session.tools[]<mcp>.",)
# Null where the SDK's param types say nothing of it: the API reference says null turns transcription and
# noise reduction off, and `session.created` shows `include: null`.
DOCUMENTED_NULLS = {
    "session.audio.input.transcription",
    "session.audio.input.noise_reduction",
    "session.include",
}


@pytest.fixture(scope="module")
def shapes() -> tuple[Shape, Shape]:
    sdk, ours = Shape(), Shape()
    _sdk_typed_dict(RealtimeSessionCreateRequestParam, "session", sdk)
    spec_shape(session_config.GA_SESSION, "session", ours)
    for shape in (sdk, ours):
        shape.fields = {f for f in shape.fields if not f.startswith(OUT_OF_SCOPE)}
        shape.nullable = {f for f in shape.nullable if not f.startswith(OUT_OF_SCOPE)}
    return sdk, ours


def test_the_accepted_session_fields_are_the_sdks(shapes: tuple[Shape, Shape]) -> None:
    """Every field path the SDK's session param types name, and no other (an SDK upgrade fails here)."""
    sdk, ours = shapes
    assert sorted(ours.fields - sdk.fields) == []
    assert sorted(sdk.fields - ours.fields) == []


def test_null_is_taken_wherever_the_sdk_allows_none(shapes: tuple[Shape, Shape]) -> None:
    sdk, ours = shapes
    assert sorted(sdk.nullable - ours.nullable) == []
    assert ours.nullable - sdk.nullable == DOCUMENTED_NULLS


def test_enumerated_values_are_the_sdks(shapes: tuple[Shape, Shape]) -> None:
    """Where the SDK enumerates a field's values (and does not also take any string), rtsim takes those."""
    sdk, ours = shapes
    for path, values in sdk.values.items():
        if path in sdk.open_strings or path.startswith(OUT_OF_SCOPE):
            continue
        assert ours.values.get(path) == values, path


# ---- what the SDK allows is accepted ------------------------------------------------------------------


def update(session: Session, payload: dict[str, Any]) -> dict[str, Any]:
    session.receive(
        {"type": "session.update", "event_id": "evt_u", "session": {"type": "realtime", **payload}}, 0
    )
    (event,) = session.drain()
    validate_ga(event)
    return event


def fresh() -> Session:
    session = make_session()
    session.drain()
    return session


def test_current_sdk_fields_are_accepted_and_echoed() -> None:
    session = fresh()
    event = update(
        session,
        {
            "reasoning": {"effort": "low"},
            "parallel_tool_calls": False,
            "audio": {
                "input": {
                    "noise_reduction": {"type": "far_field", "strength": 0.4},
                    "transcription": {
                        "model": "gpt-realtime-whisper",
                        "delay": "low",
                        "keywords": ["rtsim"],
                        "languages": ["en", "fr"],
                    },
                },
                "output": {"voice": {"id": "voice_1234"}},
            },
            "tracing": {"workflow_name": "support", "group_id": "g1", "metadata": {"k": "v"}},
            "truncation": {
                "type": "retention_ratio",
                "retention_ratio": 0.8,
                "token_limits": {"post_instructions": 900},
            },
            "prompt": {"id": "pmpt_1", "version": None, "variables": None},
        },
    )
    assert event["type"] == "session.updated"
    s = event["session"]
    assert s["audio"]["input"]["noise_reduction"] == {"type": "far_field", "strength": 0.4}
    assert s["audio"]["input"]["transcription"]["languages"] == ["en", "fr"]
    assert s["audio"]["output"]["voice"] == {"id": "voice_1234"}
    assert s["truncation"]["retention_ratio"] == 0.8 and s["tracing"]["workflow_name"] == "support"


def test_noise_reduction_starts_at_strength_1_and_keeps_what_an_update_leaves_out() -> None:
    """The SDK: "Defaults to 1 when noise reduction is first enabled. Omitting strength from a session
    update preserves the current strength."""
    session = fresh()
    first = update(session, {"audio": {"input": {"noise_reduction": {"type": "near_field"}}}})
    assert first["session"]["audio"]["input"]["noise_reduction"] == {"type": "near_field", "strength": 1.0}
    update(session, {"audio": {"input": {"noise_reduction": {"type": "near_field", "strength": 0.3}}}})
    kept = update(session, {"audio": {"input": {"noise_reduction": {"type": "far_field"}}}})
    assert kept["session"]["audio"]["input"]["noise_reduction"] == {"type": "far_field", "strength": 0.3}
    off = update(session, {"audio": {"input": {"noise_reduction": None}}})
    assert off["session"]["audio"]["input"]["noise_reduction"] is None


@pytest.mark.parametrize(
    "payload",
    [
        {"tracing": None},
        {"prompt": None},
        {"audio": {"input": {"turn_detection": None}}},
        {"audio": {"input": {"turn_detection": {"type": "server_vad", "idle_timeout_ms": None}}}},
        {"tool_choice": {"type": "mcp", "server_label": "docs", "name": None}},
    ],
)
def test_null_is_accepted_where_the_sdk_allows_none(payload: dict[str, Any]) -> None:
    assert update(fresh(), payload)["type"] == "session.updated"


def test_a_custom_voice_is_named_by_its_id_in_responses() -> None:
    """The SDK's `RealtimeResponse.audio.output.voice` is a string: a custom voice appears as its id."""
    session = fresh()
    update(session, {"audio": {"output": {"voice": {"id": "voice_1234"}}}})
    session.receive(user_text("Hello"), 0)
    session.receive({"type": "response.create"}, 0)
    run_until_idle(session)
    events = session.drain()
    for event in events:
        validate_ga(event)
    done = next(e for e in events if e["type"] == "response.done")
    assert done["response"]["audio"]["output"]["voice"] == "voice_1234"


# ---- what the real service refuses ---------------------------------------------------------------------


def refused(session: Session, payload: dict[str, Any]) -> dict[str, Any]:
    event = update(session, payload)
    assert event["type"] == "error", event
    assert event["error"]["type"] == "invalid_request_error" and event["error"]["event_id"] == "evt_u"
    return event["error"]


def test_both_output_modalities_at_once_are_refused() -> None:
    error = refused(fresh(), {"output_modalities": ["text", "audio"]})
    assert error["code"] == "invalid_value" and error["param"] == "session.output_modalities"
    assert error["message"] == (
        "Invalid modalities: ['text', 'audio']. Supported combinations are: ['text'] and ['audio']."
    )
    assert refused(fresh(), {"output_modalities": []})["param"] == "session.output_modalities"
    for one in (["text"], ["audio"]):
        assert update(fresh(), {"output_modalities": one})["session"]["output_modalities"] == one


def test_response_create_refuses_both_output_modalities_too() -> None:
    session = fresh()
    session.receive(user_text("Hi"), 0)
    session.drain()
    session.receive({"type": "response.create", "response": {"output_modalities": ["audio", "text"]}}, 0)
    (error,) = session.drain()
    validate_ga(error)
    assert error["error"]["param"] == "response.output_modalities"
    assert error["error"]["message"].startswith("Invalid modalities: ['audio', 'text'].")


@pytest.mark.parametrize("direction", ["input", "output"])
def test_pcm_without_a_rate_is_a_missing_parameter(direction: str) -> None:
    error = refused(fresh(), {"audio": {direction: {"format": {"type": "audio/pcm"}}}})
    assert error["code"] == "missing_required_parameter"
    assert error["message"] == f"Missing required parameter: 'session.audio.{direction}.format.rate'."
    assert error["param"] == f"session.audio.{direction}.format.rate"


@pytest.mark.parametrize(
    ("rate", "code", "message"),
    [
        (
            16000,
            "integer_below_min_value",
            "Invalid 'session.audio.output.format.rate': integer below minimum value. "
            "Expected a value >= 24000, but got 16000 instead.",
        ),
        (
            48000,
            "integer_above_max_value",
            "Invalid 'session.audio.output.format.rate': integer above maximum value. "
            "Expected a value <= 24000, but got 48000 instead.",
        ),
    ],
)
def test_a_rate_other_than_24000_is_out_of_range(rate: int, code: str, message: str) -> None:
    error = refused(fresh(), {"audio": {"output": {"format": {"type": "audio/pcm", "rate": rate}}}})
    assert (error["code"], error["param"]) == (code, "session.audio.output.format.rate")
    assert error["message"] == message


def test_allowed_values_are_listed_as_the_real_service_lists_them() -> None:
    error = refused(fresh(), {"audio": {"input": {"noise_reduction": {"type": "studio"}}}})
    assert error["message"] == "Invalid value: 'studio'. Supported values are: 'near_field' and 'far_field'."
    error = refused(fresh(), {"reasoning": {"effort": "max"}})
    assert error["message"] == (
        "Invalid value: 'max'. Supported values are: 'minimal', 'low', 'medium', 'high', and 'xhigh'."
    )


@pytest.mark.parametrize(
    ("payload", "param", "code"),
    [
        ({"tracing": "on"}, "session.tracing", "invalid_value"),
        ({"tracing": {"workflow": "x"}}, "session.tracing.workflow", "unknown_parameter"),
        ({"truncation": "sometimes"}, "session.truncation", "invalid_value"),
        (
            {"truncation": {"type": "retention_ratio"}},
            "session.truncation.retention_ratio",
            "missing_required_parameter",
        ),
        (
            {"truncation": {"type": "retention_ratio", "retention_ratio": 1.5}},
            "session.truncation.retention_ratio",
            "decimal_above_max_value",
        ),
        ({"truncation": {"type": "oldest_first"}}, "session.truncation.type", "invalid_value"),
        (
            {"audio": {"output": {"voice": {"name": "x"}}}},
            "session.audio.output.voice.name",
            "unknown_parameter",
        ),
        (
            {"audio": {"input": {"transcription": {"delay": "never"}}}},
            "session.audio.input.transcription.delay",
            "invalid_value",
        ),
        (
            {"audio": {"input": {"noise_reduction": {"strength": 0.5}}}},
            "session.audio.input.noise_reduction.type",
            "missing_required_parameter",
        ),
        ({"tool_choice": {"type": "function"}}, "session.tool_choice.name", "missing_required_parameter"),
    ],
)
def test_tracing_truncation_and_the_new_fields_are_validated(
    payload: dict[str, Any], param: str, code: str
) -> None:
    error = refused(fresh(), payload)
    assert (error["param"], error["code"]) == (param, code)


# ---- truncation changes what the model sees ----------------------------------------------------------------


def visible_tokens(truncation: Any, turns: int = 14) -> list[int]:
    """The conversation tokens the model saw (usage's input less the instructions), reply by reply."""
    session = make_session(limits=Limits(pacing=0.0, context_window=4096 + 600))
    session.drain()
    update(session, {"truncation": truncation, "instructions": "Be brief."})
    seen = []
    for turn in range(turns):
        session.receive(user_text(f"Turn {turn}: tell me something about the number {turn}, please."), 0)
        session.receive({"type": "response.create"}, 0)
        run_until_idle(session)
        done = next(e for e in session.drain() if e["type"] == "response.done")
        seen.append(done["response"]["usage"]["input_tokens"] - count_tokens("Be brief."))
    return seen


def test_auto_truncation_keeps_the_context_full() -> None:
    seen = visible_tokens("auto")
    assert max(seen) <= 600
    full = [n for n in seen if n > 450]
    assert full and seen.index(full[0]) < len(seen) - 2
    assert all(n > 450 for n in seen[seen.index(full[0]) :])  # once full, it stays near the limit


def test_a_retention_ratio_drops_to_that_fraction_and_then_grows_again() -> None:
    seen = visible_tokens({"type": "retention_ratio", "retention_ratio": 0.5}, turns=20)
    assert max(seen) <= 600
    drops = [i for i in range(1, len(seen)) if seen[i] < seen[i - 1]]
    assert drops, seen
    first = drops[0]
    assert seen[first] <= 300  # cut to half the budget, not just under it
    assert seen[first + 1] > seen[first]  # and the kept prefix grows again until the next overflow


def test_a_token_limit_caps_the_context_below_the_window() -> None:
    seen = visible_tokens(
        {"type": "retention_ratio", "retention_ratio": 1.0, "token_limits": {"post_instructions": 200}}
    )
    assert max(seen) <= 200 < max(visible_tokens("auto"))


def test_disabled_truncation_refuses_a_context_that_overflows() -> None:
    session = make_session(limits=Limits(pacing=0.0, context_window=4096 + 300))
    session.drain()
    update(session, {"truncation": "disabled"})
    codes = []
    for turn in range(12):
        session.receive(user_text(f"Turn {turn}: tell me something about the number {turn}, please."), 0)
        session.receive({"type": "response.create"}, 0)
        run_until_idle(session)
        codes += [e["error"]["code"] for e in session.drain() if e["type"] == "error"]
    assert codes and set(codes) == {"context_length_exceeded"}


# ---- items ------------------------------------------------------------------------------------------


def test_ga_items_have_no_object_field_and_beta_items_do() -> None:
    for dialect, validate, has_object in ((None, validate_ga, False), (BETA, validate_beta, True)):
        session = make_session(**({"dialect": dialect} if dialect else {}))
        session.drain()
        session.receive(user_text("Hello"), 0)
        session.receive({"type": "response.create"}, 0)
        run_until_idle(session)
        items = []
        for event in session.drain():
            validate(event)
            if "item" in event:
                items.append(event["item"])
            if event["type"] == "response.done":
                items += event["response"]["output"]
        assert items
        assert all(("object" in item) is has_object for item in items), items


def test_the_beta_shape_keeps_its_own_narrower_fields() -> None:
    """`--profile openai-beta` serves the beta session, which had no noise-reduction strength."""
    session = make_session(dialect=BETA)
    session.drain()
    session.receive(
        {"type": "session.update", "session": {"input_audio_noise_reduction": {"type": "near_field"}}}, 0
    )
    (updated,) = session.drain()
    validate_beta(updated)
    assert updated["session"]["input_audio_noise_reduction"] == {"type": "near_field"}
    session.receive(
        {
            "type": "session.update",
            "session": {"input_audio_noise_reduction": {"type": "near_field", "strength": 1}},
        },
        0,
    )
    (error,) = session.drain()
    assert error["error"]["param"] == "session.input_audio_noise_reduction.strength"
