"""Transcription sessions: `?intent=transcription` on the WebSocket URL, configured with a `session.update`
of `session.type: "transcription"`. Audio in, VAD and commits, the transcription events; no model, no
responses. Sources in docs/parity.md.

- A transcription session takes `type`, `audio.input` (`format`, `transcription`, `noise_reduction`,
  `turn_detection`) and `include` (the SDK's `RealtimeTranscriptionSessionCreateRequest`); anything else
  is an unknown parameter (openai/codex#14635: `tools` in transcription mode failed as unknown).
- `session.type` cannot change: `invalid_parameter` "Passing a transcription session update event to a
  realtime session is not allowed." (crmitchelmore/justspeaktoit#427, against the live API; the error body
  in a community.latenode.com thread), and the converse.
- `gpt-4o-transcribe-diarize` sends `conversation.item.input_audio_transcription.segment` events (speaker,
  start, end) before `.completed`, in place of deltas.
"""

from __future__ import annotations

import copy
import hashlib
import re
from dataclasses import dataclass
from typing import Any

from .. import session_config
from ..protocol import RealtimeError
from ..schema import Enum, List, Nullable, Obj, check

SESSION_TYPE = "transcription"
DIARIZE_MODEL = "gpt-4o-transcribe-diarize"
# A new transcription session's defaults, as the OpenAI spec's transcription session example shows them.
DEFAULT_TRANSCRIPTION = {"model": "gpt-4o-transcribe", "language": None, "prompt": ""}
DEFAULT_SILENCE_MS = 200
# The client events a transcription session takes; the others (responses, items) are refused.
CLIENT_EVENTS = frozenset(
    {
        "session.update",
        "input_audio_buffer.append",
        "input_audio_buffer.commit",
        "input_audio_buffer.clear",
        "conversation.item.retrieve",
        "conversation.item.delete",
    }
)

TRANSCRIPTION_SESSION = Obj(
    {
        "type": Enum((SESSION_TYPE,)),
        "audio": Obj(
            {
                "input": Obj(
                    {
                        "format": session_config.AUDIO_FORMAT,
                        "transcription": session_config.TRANSCRIPTION,
                        "noise_reduction": session_config.NOISE_REDUCTION,
                        "turn_detection": session_config.TURN_DETECTION,
                    }
                )
            }
        ),
        "include": Nullable(List(Enum(("item.input_audio_transcription.logprobs",)))),
    },
    required=("type",),
)

VAD_DEFAULTS = {
    "server_vad": session_config.SERVER_VAD_DEFAULTS,
    "semantic_vad": session_config.SEMANTIC_VAD_DEFAULTS,
}


def is_transcription(config: dict[str, Any]) -> bool:
    return config.get("type") == SESSION_TYPE


def default_session() -> dict[str, Any]:
    """A new transcription session's configuration: the input side of a realtime session's, transcribed."""
    return {
        "type": SESSION_TYPE,
        "audio": {
            "input": {
                "format": dict(session_config.PCM),
                "transcription": dict(DEFAULT_TRANSCRIPTION),
                "noise_reduction": None,
                "turn_detection": {
                    **session_config.SERVER_VAD_DEFAULTS,
                    "silence_duration_ms": DEFAULT_SILENCE_MS,
                },
            }
        },
        "include": None,
    }


def check_type(current: dict[str, Any], update: dict[str, Any]) -> None:
    """A session.update may not change the session's type (either way)."""
    wanted = update.get("type")
    have = current.get("type")
    if wanted in (SESSION_TYPE, "realtime") and wanted != have:
        raise RealtimeError(
            f"Passing a {wanted} session update event to a {have} session is not allowed.",
            code="invalid_parameter",
            param="session.type",
        )


def merge(current: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Validate a transcription `session.update` payload and return the merged configuration (as a realtime
    session's: tagged objects replace the old value and take the defaults for what they leave out)."""
    checked = check(TRANSCRIPTION_SESSION, update, "session")
    merged = copy.deepcopy(current)
    if "include" in checked:
        merged["include"] = checked["include"]
    target = merged["audio"]["input"]
    for key, value in ((checked.get("audio") or {}).get("input") or {}).items():
        if key == "turn_detection" and value is not None:
            value = {**VAD_DEFAULTS[value.get("type", "server_vad")], **value}
        elif key == "format":
            value = dict(session_config.PCM) if value.get("type") == "audio/pcm" else {"type": value["type"]}
        target[key] = value
    return merged


def render(config: dict[str, Any], *, session_id: str, expires_at: int) -> dict[str, Any]:
    """The session object of `session.created` / `session.updated` (the SDK's transcription session)."""
    audio_in = copy.deepcopy(config["audio"]["input"])
    detection = audio_in.get("turn_detection")
    if detection is not None:  # response creation and barge-in mean nothing without responses
        for key in ("create_response", "interrupt_response"):
            detection.pop(key, None)
    return {
        "object": "realtime.transcription_session",
        "id": session_id,
        "type": SESSION_TYPE,
        "expires_at": expires_at,
        "audio": {"input": audio_in},
        "include": config.get("include"),
    }


def refuse(event_type: str) -> RealtimeError:
    return RealtimeError(
        f"The event '{event_type}' is not supported in transcription sessions.",
        code="unsupported_event",
        param="type",
    )


# ---- log probabilities ------------------------------------------------------------------------------

LOGPROBS = "item.input_audio_transcription.logprobs"
_TOKEN = re.compile(r"\s*\S+\s*")  # a word and the spaces after it: a transcript's tokens join to it


def logprobs(config: dict[str, Any], text: str) -> dict[str, Any]:
    """`{"logprobs": [...]}` for a transcript (or a delta of one) when the session's `include` asks for them,
    else nothing. One entry per word (the SDK's LogProbProperties: token, bytes, logprob); a scripted
    transcript is near-certain, so each logprob is a small negative number drawn from the word itself."""
    if LOGPROBS not in (config.get("include") or ()):
        return {}
    entries = []
    for token in _TOKEN.findall(text):
        digest = hashlib.sha256(token.encode()).digest()
        entries.append({"token": token, "bytes": list(token.encode()), "logprob": -digest[0] / 5000})
    return {"logprobs": entries}


# ---- diarization ------------------------------------------------------------------------------------

_SPEAKER_LINE = re.compile(r"^\s*(?P<speaker>[A-Za-z0-9 _-]{1,32}):\s*(?P<text>.+?)\s*$")
_SENTENCE = re.compile(r"[^.!?]+[.!?]*\s*")


@dataclass(frozen=True)
class Segment:
    speaker: str
    text: str
    start: float  # seconds from the start of the item's audio
    end: float


def diarize(transcript: str, audio_ms: int) -> list[Segment]:
    """A scripted transcript as speaker segments: lines "A: ..." name their speaker; otherwise one speaker,
    "A", a segment per sentence. Times share out the item's audio by length of text."""
    lines = [line for line in transcript.splitlines() if line.strip()]
    spoken: list[tuple[str, str]] = []
    if lines and all(_SPEAKER_LINE.match(line) for line in lines):
        for line in lines:
            match = _SPEAKER_LINE.match(line)
            assert match is not None
            spoken.append((match.group("speaker").strip(), match.group("text")))
    else:
        spoken = [("A", part.strip()) for part in _SENTENCE.findall(transcript) if part.strip()]
    total = sum(len(text) for _, text in spoken) or 1
    seconds = audio_ms / 1000
    segments, at = [], 0
    for speaker, text in spoken:
        start = seconds * at / total
        at += len(text)
        segments.append(Segment(speaker, text, round(start, 3), round(seconds * at / total, 3)))
    return segments


def transcript_text(transcript: str, model: str | None) -> str:
    """What `.completed` carries: for the diarizing model, the segments' text without speaker labels."""
    if model != DIARIZE_MODEL:
        return transcript
    return " ".join(segment.text for segment in diarize(transcript, 0))
