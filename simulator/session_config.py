"""Session configuration: the real defaults, `session.update` validation and merge, two renderings.

The engine keeps one GA-shaped dict (`audio.input.turn_detection`, `output_modalities`, ...). The beta
dialect (flat `modalities`, `voice`, `input_audio_format`, ...) is translated at the edges: `from_beta`
on the way in, `to_beta` on the way out.
"""

from __future__ import annotations

import copy
from typing import Any

from .schema import (
    AnyValue,
    Bool,
    Enum,
    Int,
    List,
    Nullable,
    Num,
    Obj,
    OneOf,
    Spec,
    Str,
    Tagged,
    check,
)

DEFAULT_MODEL = "gpt-realtime"
DEFAULT_INSTRUCTIONS = (
    "You are a helpful, witty, and friendly AI. Act like a human, but remember that you aren't a human "
    "and that you can't do human things in the real world. Your voice and personality should be warm "
    "and engaging, with a lively and playful tone."
)
VOICES = ("alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar")
MAX_RESPONSE_TOKENS = 4096

PCM = {"type": "audio/pcm", "rate": 24000}
FORMAT_BY_BETA_NAME = {
    "pcm16": PCM,
    "g711_ulaw": {"type": "audio/pcmu"},
    "g711_alaw": {"type": "audio/pcma"},
}
BETA_NAME_BY_FORMAT = {"audio/pcm": "pcm16", "audio/pcmu": "g711_ulaw", "audio/pcma": "g711_alaw"}

SERVER_VAD_DEFAULTS = {
    "type": "server_vad",
    "threshold": 0.5,
    "prefix_padding_ms": 300,
    "silence_duration_ms": 500,
    "idle_timeout_ms": None,
    "create_response": True,
    "interrupt_response": True,
}
SEMANTIC_VAD_DEFAULTS = {
    "type": "semantic_vad",
    "eagerness": "auto",
    "create_response": True,
    "interrupt_response": True,
}

# ---- specs -----------------------------------------------------------------------------------

AUDIO_FORMAT = Tagged(
    "type",
    {
        "audio/pcm": Obj({"type": Str(), "rate": Enum((24000,))}),
        "audio/pcmu": Obj({"type": Str()}),
        "audio/pcma": Obj({"type": Str()}),
    },
)
_VAD_COMMON: dict[str, Spec] = {
    "type": Str(),
    "create_response": Bool(),
    "interrupt_response": Bool(),
}
SERVER_VAD = Obj(
    {
        **_VAD_COMMON,
        "threshold": Num(0.0, 1.0),
        "prefix_padding_ms": Int(0, 5000),
        "silence_duration_ms": Int(0, 10000),
        "idle_timeout_ms": Nullable(Int(5000, 30000)),
    }
)
SEMANTIC_VAD = Obj({**_VAD_COMMON, "eagerness": Enum(("low", "medium", "high", "auto"))})
TURN_DETECTION = Nullable(Tagged("type", {"server_vad": SERVER_VAD, "semantic_vad": SEMANTIC_VAD}))
TRANSCRIPTION = Nullable(Obj({"model": Str(), "language": Str(), "prompt": Str()}))
NOISE_REDUCTION = Nullable(Obj({"type": Enum(("near_field", "far_field"))}))
VOICE = Enum(VOICES)
FUNCTION_TOOL = Obj(
    {"type": Str(), "name": Str(max_length=64), "description": Str(), "parameters": AnyValue()},
    required=("name",),
)
# A remote MCP server as the SDK's `realtime_tools_config_union_param.Mcp` describes it (rtsim never calls
# it: its tools and results come from the script). Which of server_url / connector_id / tunnel_id is given
# is checked by the engine's MCP part.
_MCP_TOOL_FILTER = Obj({"read_only": Bool(), "tool_names": List(Str())})
MCP_TOOL = Obj(
    {
        "type": Str(),
        "server_label": Str(),
        "server_url": Str(),
        "connector_id": Str(),
        "tunnel_id": Str(),
        "authorization": Str(),
        "headers": Nullable(Obj({}, open=True)),
        "server_description": Str(),
        "allowed_tools": Nullable(OneOf((List(Str()), _MCP_TOOL_FILTER))),
        "allowed_callers": Nullable(List(Enum(("direct", "programmatic")))),
        "require_approval": Nullable(
            OneOf((Enum(("always", "never")), Obj({"always": _MCP_TOOL_FILTER, "never": _MCP_TOOL_FILTER})))
        ),
        "defer_loading": Bool(),
    },
    required=("server_label",),
)
TOOLS = List(Tagged("type", {"function": FUNCTION_TOOL, "mcp": MCP_TOOL}), max_items=128)
TOOL_CHOICE = OneOf(
    (
        Enum(("auto", "none", "required")),
        Obj({"type": Enum(("function", "mcp")), "name": Str(), "server_label": Str()}),
    )
)
MAX_OUTPUT_TOKENS = OneOf((Int(1, MAX_RESPONSE_TOKENS), Enum(("inf",))))
MODALITIES = List(Enum(("text", "audio")), max_items=2)

GA_SESSION = Obj(
    {
        "type": Enum(("realtime",)),
        "model": Str(),
        "instructions": Str(),
        "output_modalities": MODALITIES,
        "audio": Obj(
            {
                "input": Obj(
                    {
                        "format": AUDIO_FORMAT,
                        "transcription": TRANSCRIPTION,
                        "noise_reduction": NOISE_REDUCTION,
                        "turn_detection": TURN_DETECTION,
                    }
                ),
                "output": Obj({"format": AUDIO_FORMAT, "voice": VOICE, "speed": Num(0.25, 1.5)}),
            }
        ),
        "tools": TOOLS,
        "tool_choice": TOOL_CHOICE,
        "max_output_tokens": MAX_OUTPUT_TOKENS,
        "tracing": AnyValue(),
        "prompt": AnyValue(),
        "include": Nullable(List(Enum(("item.input_audio_transcription.logprobs",)))),
        "truncation": AnyValue(),
    },
    required=("type",),
)

BETA_FORMAT = Enum(tuple(FORMAT_BY_BETA_NAME))
BETA_SESSION = Obj(
    {
        "model": Str(),
        "instructions": Str(),
        "modalities": MODALITIES,
        "voice": VOICE,
        "input_audio_format": BETA_FORMAT,
        "output_audio_format": BETA_FORMAT,
        "input_audio_transcription": TRANSCRIPTION,
        "input_audio_noise_reduction": NOISE_REDUCTION,
        "turn_detection": TURN_DETECTION,
        "tools": TOOLS,
        "tool_choice": OneOf((Enum(("auto", "none", "required")), Str())),
        "temperature": Num(0.6, 1.2),
        "max_response_output_tokens": MAX_OUTPUT_TOKENS,
        "speed": Num(0.25, 1.5),
        "tracing": AnyValue(),
    }
)


def default_session(model: str = DEFAULT_MODEL) -> dict[str, Any]:
    return {
        "type": "realtime",
        "model": model,
        "output_modalities": ["audio"],
        "instructions": DEFAULT_INSTRUCTIONS,
        "tools": [],
        "tool_choice": "auto",
        "max_output_tokens": "inf",
        "tracing": None,
        "prompt": None,
        "truncation": "auto",
        "include": None,
        "audio": {
            "input": {
                "format": dict(PCM),
                "transcription": None,
                "noise_reduction": None,
                "turn_detection": dict(SERVER_VAD_DEFAULTS),
            },
            "output": {"format": dict(PCM), "voice": "marin", "speed": 1.0},
        },
        "temperature": 0.8,
    }


def _fill_turn_detection(value: dict[str, Any] | None) -> dict[str, Any] | None:
    if value is None:
        return None
    defaults = (
        SERVER_VAD_DEFAULTS if value.get("type", "server_vad") == "server_vad" else SEMANTIC_VAD_DEFAULTS
    )
    return {**defaults, **value}


def _fill_format(value: dict[str, Any]) -> dict[str, Any]:
    return dict(PCM) if value.get("type") == "audio/pcm" else {"type": value["type"]}


def merge_ga(current: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Validate a GA `session.update` payload (raises RealtimeError) and return the merged session.

    Plain objects merge key by key; tagged objects (formats, turn detection) replace the old value and
    take the real defaults for the keys they leave out.
    """
    checked = check(GA_SESSION, update, "session")
    merged = copy.deepcopy(current)
    for key, value in checked.items():
        if key != "audio":
            merged[key] = value
    for direction, settings in (checked.get("audio") or {}).items():
        target = merged["audio"][direction]
        for key, value in settings.items():
            if key == "turn_detection":
                value = _fill_turn_detection(value)
            elif key == "format":
                value = _fill_format(value)
            target[key] = value
    return merged


def from_beta(update: dict[str, Any]) -> dict[str, Any]:
    """Validate a flat beta `session.update` payload and translate it to a GA-shaped update."""
    checked = check(BETA_SESSION, update, "session")
    ga: dict[str, Any] = {"type": "realtime"}
    audio_in: dict[str, Any] = {}
    audio_out: dict[str, Any] = {}
    for key, value in checked.items():
        if key == "modalities":
            # Beta sessions asked for ["text", "audio"]; GA answers in one modality, audio when asked.
            ga["output_modalities"] = ["audio"] if "audio" in value else ["text"]
        elif key == "voice":
            audio_out["voice"] = value
        elif key == "speed":
            audio_out["speed"] = value
        elif key == "input_audio_format":
            audio_in["format"] = FORMAT_BY_BETA_NAME[value]
        elif key == "output_audio_format":
            audio_out["format"] = FORMAT_BY_BETA_NAME[value]
        elif key == "input_audio_transcription":
            audio_in["transcription"] = value
        elif key == "input_audio_noise_reduction":
            audio_in["noise_reduction"] = value
        elif key == "turn_detection":
            audio_in["turn_detection"] = value
        elif key == "max_response_output_tokens":
            ga["max_output_tokens"] = value
        elif key == "temperature":
            continue  # kept by merge below: GA has no such field, but beta sessions echo it back
        else:
            ga[key] = value
    audio = {k: v for k, v in (("input", audio_in), ("output", audio_out)) if v}
    if audio:
        ga["audio"] = audio
    return ga


def merge_beta(current: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = merge_ga(current, from_beta(update))
    if "temperature" in update:
        merged["temperature"] = update["temperature"]
    return merged


def render_ga(config: dict[str, Any], *, session_id: str, expires_at: int) -> dict[str, Any]:
    session = {k: v for k, v in config.items() if k != "temperature"}
    return {
        "object": "realtime.session",
        "id": session_id,
        "expires_at": expires_at,
        **copy.deepcopy(session),
    }


def to_beta(config: dict[str, Any], *, session_id: str, expires_at: int) -> dict[str, Any]:
    audio_in, audio_out = config["audio"]["input"], config["audio"]["output"]
    modalities = ["text", "audio"] if "audio" in config["output_modalities"] else ["text"]
    return {
        "id": session_id,
        "object": "realtime.session",
        "model": config["model"],
        "expires_at": expires_at,
        "modalities": modalities,
        "instructions": config["instructions"],
        "voice": audio_out["voice"],
        "speed": audio_out.get("speed", 1.0),
        "input_audio_format": BETA_NAME_BY_FORMAT[audio_in["format"]["type"]],
        "output_audio_format": BETA_NAME_BY_FORMAT[audio_out["format"]["type"]],
        "input_audio_transcription": copy.deepcopy(audio_in["transcription"]),
        "input_audio_noise_reduction": copy.deepcopy(audio_in["noise_reduction"]),
        "turn_detection": copy.deepcopy(audio_in["turn_detection"]),
        "tools": copy.deepcopy(config["tools"]),
        "tool_choice": config["tool_choice"] if isinstance(config["tool_choice"], str) else "auto",
        "temperature": config.get("temperature", 0.8),
        "max_response_output_tokens": config["max_output_tokens"],
        "tracing": config.get("tracing"),
    }


def output_modality(config: dict[str, Any]) -> str:
    return "audio" if "audio" in config["output_modalities"] else "text"
