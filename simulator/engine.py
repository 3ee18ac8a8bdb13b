"""The session engine: one Realtime session as a pure state machine, with no sockets and no clock of its own.

A transport feeds it client events (`receive`) and the time (`advance`), asks when it next needs the
time (`next_deadline`), and sends what it produced (`drain`) until it asks to be closed (`close_request`).
The same engine serves WebSocket and WebRTC, and tests drive it directly.

Responses are generators: each yields the monotonic time at which it wants to continue, emitting events
between yields. Pacing, cancellation (client or barge-in) and session expiry are then plain state.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import math
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from . import audio, session_config
from .dialect import GA, Dialect
from .model import Reply, ScriptedModel, count_tokens, item_text
from .protocol import (
    IdFactory,
    RealtimeError,
    check_event_type,
    client_event_id,
    invalid_type,
    invalid_value,
    missing_parameter,
)
from .schema import AnyValue, Enum, Int, List, Obj, OneOf, Str, Tagged, check
from .vad import VoiceActivityDetector

ExpiryEnding = Literal["error", "close", "both"]
AUDIO_EVENT_TYPES = frozenset({"response.output_audio.delta", "input_audio_buffer.append"})
BYTES_PER_MS = audio.SAMPLE_RATE * 2 // 1000  # pcm16 mono at 24 kHz
AUDIO_TOKENS_PER_SECOND = 10  # the real service bills roughly ten audio tokens per second
# semantic_vad has no silence setting; its eagerness maps to one (low waits longest for the user to go on).
SEMANTIC_SILENCE_MS = {"low": 1500, "medium": 800, "auto": 800, "high": 400}
# Transcript of a user audio turn that no script describes (stated, so tests and users can recognise it).
UNSCRIPTED_TRANSCRIPT = "[unscripted audio: {ms} ms]"


@dataclass
class Limits:
    """Every limit a session obeys. Times are seconds; scale them down to compress an hour into seconds."""

    max_session: float = 3600.0
    context_window: int = 32768
    response_latency: float = 0.0
    expiry_ending: ExpiryEnding = "both"
    chunk_ms: int = 100
    pacing: float = 1.0  # 1.0 = audio delivered in real time; 0 = as fast as possible
    # Streaming-session rule (seed 003): close after this long without activity; None = no idle timeout.
    idle_timeout: float | None = None


@dataclass
class Item:
    data: dict[str, Any]
    tokens: int
    audio_ms: int = 0  # assistant audio generated (truncation bound) or user audio received

    @property
    def id(self) -> str:
        return self.data["id"]


@dataclass
class Output:
    """One output item of a response, with how far its delivery got (what a cancel must close)."""

    item: dict[str, Any]
    kind: Literal["audio", "text", "function_call"]
    sent_text: str = ""
    audio_ms: int = 0
    part_open: bool = False


@dataclass
class ResponseRun:
    id: str
    in_conversation: bool
    modality: str
    config: dict[str, Any]
    reply: Reply
    input_tokens: int
    created_at: float
    metadata: dict[str, Any] | None = None
    outputs: list[Output] = field(default_factory=list)
    steps: Generator[float, None, None] | None = None
    next_due: float = 0.0

    @property
    def current(self) -> Output | None:
        return self.outputs[-1] if self.outputs else None


# ---- client event specs (top level; nested payloads are checked with the session schema) --------

_CONTENT_PART = Obj(
    {
        "type": Str(),
        "text": Str(),
        "audio": Str(),
        "transcript": OneOf((Str(), Enum((None,)))),
        "image_url": Str(),
        "detail": Str(),
    }
)
_MESSAGE = Obj(
    {
        "id": Str(max_length=32),
        "type": Str(),
        "object": Str(),
        "status": Str(),
        "role": Enum(("user", "assistant", "system")),
        "content": List(_CONTENT_PART),
    },
    required=("role", "content"),
)
_FUNCTION_CALL = Obj(
    {
        "id": Str(max_length=32),
        "type": Str(),
        "object": Str(),
        "status": Str(),
        "name": Str(),
        "call_id": Str(),
        "arguments": Str(),
    },
    required=("name", "arguments"),
)
_FUNCTION_OUTPUT = Obj(
    {
        "id": Str(max_length=32),
        "type": Str(),
        "object": Str(),
        "status": Str(),
        "call_id": Str(),
        "output": Str(),
    },
    required=("call_id", "output"),
)
ITEM = Tagged(
    "type",
    {"message": _MESSAGE, "function_call": _FUNCTION_CALL, "function_call_output": _FUNCTION_OUTPUT},
)
PARTS_BY_ROLE = {
    "user": ("input_text", "input_audio", "input_image"),
    "system": ("input_text",),
    "assistant": ("output_text", "output_audio"),
}
RESPONSE_PARAMS = Obj(
    {
        "conversation": OneOf((Enum(("auto", "none")), Str())),
        "output_modalities": session_config.MODALITIES,
        "instructions": Str(),
        "audio": Obj({"output": Obj({"format": session_config.AUDIO_FORMAT, "voice": session_config.VOICE})}),
        "tools": session_config.TOOLS,
        "tool_choice": session_config.TOOL_CHOICE,
        "max_output_tokens": session_config.MAX_OUTPUT_TOKENS,
        "metadata": AnyValue(),
        "prompt": AnyValue(),
        "input": List(AnyValue()),
        # beta names, accepted from beta sessions
        "modalities": session_config.MODALITIES,
        "voice": session_config.VOICE,
        "output_audio_format": session_config.BETA_FORMAT,
        "temperature": AnyValue(),
        "max_response_output_tokens": session_config.MAX_OUTPUT_TOKENS,
    }
)
EVENT_FIELDS: dict[str, Obj] = {
    "session.update": Obj({"type": Str(), "event_id": Str(), "session": AnyValue()}, required=("session",)),
    "input_audio_buffer.append": Obj({"type": Str(), "event_id": Str(), "audio": Str()}, required=("audio",)),
    "input_audio_buffer.commit": Obj({"type": Str(), "event_id": Str()}),
    "input_audio_buffer.clear": Obj({"type": Str(), "event_id": Str()}),
    "output_audio_buffer.clear": Obj({"type": Str(), "event_id": Str()}),
    "conversation.item.create": Obj(
        {
            "type": Str(),
            "event_id": Str(),
            "previous_item_id": OneOf((Str(), Enum((None,)))),
            "item": AnyValue(),
        },
        required=("item",),
    ),
    "conversation.item.retrieve": Obj(
        {"type": Str(), "event_id": Str(), "item_id": Str()}, required=("item_id",)
    ),
    "conversation.item.delete": Obj(
        {"type": Str(), "event_id": Str(), "item_id": Str()}, required=("item_id",)
    ),
    "conversation.item.truncate": Obj(
        {"type": Str(), "event_id": Str(), "item_id": Str(), "content_index": Int(0), "audio_end_ms": Int(0)},
        required=("item_id", "content_index", "audio_end_ms"),
    ),
    "response.create": Obj({"type": Str(), "event_id": Str(), "response": RESPONSE_PARAMS}),
    "response.cancel": Obj({"type": Str(), "event_id": Str(), "response_id": Str()}),
}


def audio_tokens(ms: int) -> int:
    return math.ceil(ms * AUDIO_TOKENS_PER_SECOND / 1000)


class Session:
    """One Realtime session. Construct it, call `start(now)`, then feed it events and time."""

    def __init__(
        self,
        *,
        ids: IdFactory,
        model: ScriptedModel,
        now: float,
        wall: float,
        limits: Limits | None = None,
        model_name: str = session_config.DEFAULT_MODEL,
        dialect: Dialect = GA,
        initial_config: dict[str, Any] | None = None,
        audio_seed: int = 0,
        audio_turns: Iterator[int] | None = None,
    ) -> None:
        self.ids = ids
        self.audio_seed = audio_seed
        self.model = model
        self.limits = limits or Limits()
        self.dialect = dialect
        self.id = ids.new("sess")
        self.conversation_id = ids.new("conv")
        self.config = session_config.default_session(model_name)
        if initial_config:
            self.config = session_config.merge_ga(self.config, initial_config)
        self.started_at = now
        self.deadline = now + self.limits.max_session
        self.expires_at = int(wall + self.limits.max_session)
        self.deadline_wall = wall + self.limits.max_session  # expires_at is whole seconds; this is exact
        minutes = self.limits.max_session / 60
        self.expiry_message = f"Your session hit the maximum duration of {minutes:g} minutes."
        self.items: list[Item] = []
        self.by_id: dict[str, Item] = {}
        self.responses: list[ResponseRun] = []
        self.outbox: list[dict[str, Any]] = []
        self.close_request: tuple[int, str] | None = None
        self.assistant_audio_present = False
        self.input_buffer = bytearray()
        self.response_count = 0
        # A transport that carries audio out of band (WebRTC's track) takes the model's pcm16 here instead
        # of `response.output_audio.delta` events: sink(response_id, item_id, pcm16_chunk).
        self.audio_sink: Callable[[str, str, bytes], None] | None = None
        self.last_activity = now
        self.idle_timeout = self.limits.idle_timeout
        self.pending_server_error: RealtimeError | None = None
        self.fail_next_transcription = False
        self.input_samples = 0
        # Which scripted transcript the next user audio turn gets. The server shares one counter across a
        # client's sessions, so a reconnect does not replay the script from the start.
        self.audio_turns = audio_turns if audio_turns is not None else itertools.count()
        self.g711_resampler: audio.Resampler | None = None
        self.vad: VoiceActivityDetector | None = None
        self.turn_item_id: str | None = None
        self.turn_start_ms = 0
        self.idle_from_ms = 0  # input audio time from which `idle_timeout_ms` of silence is counted
        self._configure_vad()

    # ---- transport-facing API -------------------------------------------------------------------

    def start(self, now: float) -> None:
        self._emit({"type": "session.created", "session": self._session_object()})

    def receive(self, event: dict[str, Any], now: float) -> None:
        """Handle one decoded client event. Client mistakes become `error` events; the session goes on."""
        if self.close_request is not None:
            return
        self.last_activity = now
        try:
            event_type = check_event_type(event)
            check(EVENT_FIELDS[event_type], event)
            handler = getattr(self, "_on_" + event_type.replace(".", "_"))
            handler(event, now)
        except RealtimeError as exc:
            self.error(exc, client_event_id(event))
        self.advance(now)

    def advance(self, now: float) -> None:
        """Run everything due by `now`: paced response steps, then the session cap."""
        for run in list(self.responses):
            while run.steps is not None and run.next_due <= now and self.close_request is None:
                try:
                    run.next_due = next(run.steps)
                except StopIteration:
                    run.steps = None
                    self.last_activity = now
                    if self.pending_server_error is None or run.current is None:
                        self._finish(run, "completed", None)
                        continue
                if self.pending_server_error is not None and run.current is not None:
                    error, self.pending_server_error = self.pending_server_error, None
                    self.fail_response(run, error)
        if now >= self.deadline and self.close_request is None:
            self.expire()
        elif self._idle_deadline() <= now and self.close_request is None:
            self.idle_expire()

    def next_deadline(self) -> float | None:
        if self.close_request is not None:
            return None
        due = [run.next_due for run in self.responses if run.steps is not None]
        due.append(self.deadline)
        due.append(self._idle_deadline())
        return min(due)

    def _idle_deadline(self) -> float:
        if self.idle_timeout is None or self.responses:
            return math.inf  # a response in progress is activity
        return self.last_activity + self.idle_timeout

    def keep_alive(self, now: float) -> None:
        """The explicit keep-alive call: resets the idle timer as activity does."""
        self.last_activity = now

    def idle_expire(self) -> None:
        timeout = self.idle_timeout or 0
        message = f"Session closed after {timeout:g} seconds of inactivity."
        self.error(RealtimeError(message, code="session_idle_timeout"))
        self.close_request = (1000, "session idle timeout")

    def inject_server_error(self, now: float) -> None:
        """`server_error` mid-response: the active response fails now, or the next one once it has output."""
        error = RealtimeError(
            "The server had an error while processing your request. Sorry about that!", type="server_error"
        )
        run = self.active_response or (self.responses[0] if self.responses else None)
        if run is not None and run.current is not None:
            self.fail_response(run, error)
        else:
            self.pending_server_error = error

    def drain(self) -> list[dict[str, Any]]:
        out, self.outbox = self.outbox, []
        return out

    def error(self, exc: RealtimeError, client_event_id: str | None = None) -> None:
        self._emit({"type": "error", "error": exc.body(client_event_id)})

    def expire(self) -> None:
        """The session cap: the `session_expired` error event, a 1001 close, or both (as configured)."""
        for run in self.responses:  # the real server just ends: no response.done for what was cut off
            if run.steps is not None:
                run.steps.close()
                run.steps = None
        self.responses.clear()
        ending = self.limits.expiry_ending
        if ending in ("error", "both"):
            self.error(RealtimeError(self.expiry_message, code="session_expired"))
        if ending == "error":
            self.close_request = (1000, "")
        else:
            self.close_request = (1001, self.expiry_message)

    def cancel_response(self, reason: str, now: float) -> bool:
        """End the active in-conversation response as cancelled (client cancel or barge-in)."""
        for run in self.responses:
            if run.in_conversation:
                self._finish(run, "cancelled", {"type": "cancelled", "reason": reason})
                return True
        return False

    @property
    def active_response(self) -> ResponseRun | None:
        return next((run for run in self.responses if run.in_conversation), None)

    # ---- emission ----------------------------------------------------------------------------------

    def emit(self, event: dict[str, Any]) -> None:
        """Queue a server event (transports use it for their own events, e.g. WebRTC's output buffer)."""
        self._emit(event)

    def _emit(self, event: dict[str, Any]) -> None:
        if "item" in event:  # items keep changing after they are announced; the event shows them as they were
            event["item"] = snapshot(event["item"])
        event["event_id"] = self.ids.event()
        out = self.dialect.outgoing(event)
        if out is not None:
            self.outbox.append(out)

    def _session_object(self) -> dict[str, Any]:
        return self.dialect.render_session(self.config, session_id=self.id, expires_at=self.expires_at)

    # ---- session -----------------------------------------------------------------------------------

    def _on_session_update(self, event: dict[str, Any], now: float) -> None:
        update = event["session"]
        if not isinstance(update, dict):
            raise invalid_type("session", "an object", update)
        merged = self.dialect.session_update(self.config, update)
        new_voice = merged["audio"]["output"]["voice"]
        if self.assistant_audio_present and new_voice != self.config["audio"]["output"]["voice"]:
            raise RealtimeError(
                "Cannot update a conversation's voice if assistant audio is present.",
                code="cannot_update_voice",
                param="session.audio.output.voice",
            )
        self.config = merged
        self._configure_vad()
        self._emit({"type": "session.updated", "session": self._session_object()})

    # ---- input audio buffer -----------------------------------------------------------------------

    def _on_input_audio_buffer_append(self, event: dict[str, Any], now: float) -> None:
        try:
            raw = base64.b64decode(event["audio"], validate=True)
        except (binascii.Error, ValueError):
            raise RealtimeError(
                "Invalid 'audio'. Expected base64-encoded audio bytes.", code="invalid_value", param="audio"
            ) from None
        self.append_audio(self._to_pcm16(raw), now)

    def append_audio(self, pcm16: bytes, now: float) -> None:
        """Caller audio (pcm16 24 kHz) from any transport: the WebSocket's append events or a WebRTC track.

        Audio time is counted in milliseconds of audio from the session's first sample, never wall time.
        """
        self.last_activity = now
        self.input_buffer += pcm16
        self.input_samples += len(pcm16) // 2
        if self.vad is None:
            return
        for vad_event in self.vad.feed(pcm16):
            if vad_event.kind == "speech_started":
                self._on_speech_started(vad_event.audio_ms, now)
            else:
                self._on_speech_stopped(vad_event.audio_ms, now)
        self._check_input_idle(now)

    @property
    def input_audio_ms(self) -> int:
        return self.input_samples * 1000 // audio.SAMPLE_RATE

    def _to_pcm16(self, raw: bytes) -> bytes:
        fmt = self.config["audio"]["input"]["format"]["type"]
        if fmt == "audio/pcm":
            return raw[: len(raw) - len(raw) % 2]
        if self.g711_resampler is None:  # one streaming resampler: chunk edges join seamlessly
            self.g711_resampler = audio.Resampler(audio.G711_RATE, audio.SAMPLE_RATE)
        decoded = audio.ulaw_decode(raw) if fmt == "audio/pcmu" else audio.alaw_decode(raw)
        return audio.to_pcm(self.g711_resampler.process(decoded))

    def _configure_vad(self) -> None:
        """Server VAD as `turn_detection` says: off (manual commits), server_vad, or semantic_vad."""
        settings = self.config["audio"]["input"]["turn_detection"]
        if settings is None:
            self.vad = None
            return
        if settings["type"] == "semantic_vad":
            params = {
                "threshold": 0.5,
                "prefix_padding_ms": 300,
                "silence_duration_ms": SEMANTIC_SILENCE_MS[settings.get("eagerness", "auto")],
            }
        else:
            params = {
                "threshold": settings["threshold"],
                "prefix_padding_ms": settings["prefix_padding_ms"],
                "silence_duration_ms": settings["silence_duration_ms"],
            }
        if self.vad is None:
            self.vad = VoiceActivityDetector(start_ms=self.input_audio_ms, **params)
        else:
            self.vad.configure(**params)

    def _on_speech_started(self, audio_start_ms: int, now: float) -> None:
        self.turn_item_id = self.ids.new("item")
        self.turn_start_ms = audio_start_ms
        self._emit(
            {
                "type": "input_audio_buffer.speech_started",
                "audio_start_ms": audio_start_ms,
                "item_id": self.turn_item_id,
            }
        )
        settings = self.config["audio"]["input"]["turn_detection"] or {}
        if settings.get("interrupt_response", True) and self.active_response is not None:
            self.cancel_response("turn_detected", now)  # barge-in: the response ends, its audio stops

    def _on_speech_stopped(self, audio_end_ms: int, now: float) -> None:
        item_id = self.turn_item_id or self.ids.new("item")
        self._emit(
            {"type": "input_audio_buffer.speech_stopped", "audio_end_ms": audio_end_ms, "item_id": item_id}
        )
        self._commit_input(now, item_id=item_id, audio_ms=max(0, audio_end_ms - self.turn_start_ms))
        self.turn_item_id = None
        self.idle_from_ms = audio_end_ms
        settings = self.config["audio"]["input"]["turn_detection"] or {}
        if settings.get("create_response", True) and self.active_response is None:
            self.create_response({}, now)

    def _check_input_idle(self, now: float) -> None:
        """`idle_timeout_ms` of silence after the model finished: timeout_triggered, then a nudge response."""
        settings = self.config["audio"]["input"]["turn_detection"] or {}
        idle_ms = settings.get("idle_timeout_ms")
        if not idle_ms or self.vad is None or self.vad.in_speech or self.responses:
            return
        now_ms = self.input_audio_ms
        if now_ms - self.idle_from_ms < idle_ms:
            return
        item_id = self.ids.new("item")
        self._emit(
            {
                "type": "input_audio_buffer.timeout_triggered",
                "audio_start_ms": self.idle_from_ms,
                "audio_end_ms": now_ms,
                "item_id": item_id,
            }
        )
        self._commit_input(now, item_id=item_id, audio_ms=now_ms - self.idle_from_ms)
        self.idle_from_ms = now_ms
        self.create_response({}, now)

    def _on_input_audio_buffer_commit(self, event: dict[str, Any], now: float) -> None:
        ms = len(self.input_buffer) / BYTES_PER_MS
        if ms < 100:
            raise RealtimeError(
                "Error committing input audio buffer: buffer too small. Expected at least 100ms of audio, "
                f"but buffer only has {ms:.2f}ms of audio.",
                code="input_audio_buffer_commit_empty",
            )
        self._commit_input(now, item_id=self.ids.new("item"), audio_ms=int(ms))
        if self.vad is not None:
            self.vad.reset()

    def _commit_input(self, now: float, *, item_id: str, audio_ms: int) -> Item:
        self.input_buffer.clear()
        previous = self.items[-1].id if self.items else None
        self._emit({"type": "input_audio_buffer.committed", "item_id": item_id, "previous_item_id": previous})
        transcript = self.model.transcribe(next(self.audio_turns))
        data = {
            "id": item_id,
            "type": "message",
            "object": "realtime.item",
            "status": "completed",
            "role": "user",
            "content": [{"type": "input_audio", "transcript": transcript}],
        }
        item = self._insert(Item(data, audio_tokens(audio_ms), audio_ms=audio_ms), previous)
        if self.config["audio"]["input"]["transcription"] is not None:
            self._transcribe(item_id, transcript, audio_ms)
        return item

    def _transcribe(self, item_id: str, transcript: str | None, audio_ms: int) -> None:
        """The transcription model's events for a user audio item (scripted text, or a stated placeholder)."""
        if self.fail_next_transcription:
            self.fail_next_transcription = False
            self._emit(
                {
                    "type": "conversation.item.input_audio_transcription.failed",
                    "item_id": item_id,
                    "content_index": 0,
                    "error": {
                        "type": "transcription_error",
                        "code": "audio_unintelligible",
                        "message": "Audio could not be transcribed.",
                        "param": None,
                    },
                }
            )
            return
        text = transcript if transcript is not None else UNSCRIPTED_TRANSCRIPT.format(ms=audio_ms)
        for piece in _word_pieces(text, max(1, len(text.split()) // 3)):
            self._emit(
                {
                    "type": "conversation.item.input_audio_transcription.delta",
                    "item_id": item_id,
                    "content_index": 0,
                    "delta": piece,
                }
            )
        self._emit(
            {
                "type": "conversation.item.input_audio_transcription.completed",
                "item_id": item_id,
                "content_index": 0,
                "transcript": text,
                "usage": {"type": "duration", "seconds": round(audio_ms / 1000, 3)},
            }
        )

    def _on_input_audio_buffer_clear(self, event: dict[str, Any], now: float) -> None:
        self.input_buffer.clear()
        if self.vad is not None:
            self.vad.reset()
        self.turn_item_id = None
        self._emit({"type": "input_audio_buffer.cleared"})

    def _on_output_audio_buffer_clear(self, event: dict[str, Any], now: float) -> None:
        # Over WebSocket there is no server-side output buffer to clear; the real service rejects it.
        raise RealtimeError(
            "output_audio_buffer.clear is only supported for WebRTC sessions.",
            code="unsupported_event",
            param="type",
        )

    # ---- conversation ------------------------------------------------------------------------------

    def _on_conversation_item_create(self, event: dict[str, Any], now: float) -> None:
        item = self._checked_item(self.dialect.incoming_item(event["item"]))
        previous = event.get("previous_item_id")
        if previous is not None and previous != "root" and previous not in self.by_id:
            raise RealtimeError(
                f"Previous item with id '{previous}' not found.",
                code="item_not_found",
                param="previous_item_id",
            )
        if previous is None:
            previous = self.items[-1].id if self.items else None
        self._insert(item, previous)

    def _checked_item(self, raw: Any) -> Item:
        data = check(ITEM, raw, "item")
        data.setdefault("type", "message")
        item_id = data.get("id") or self.ids.new("item")
        if item_id in self.by_id:
            raise RealtimeError(
                f"Item with id '{item_id}' already exists.", code="item_already_exists", param="item.id"
            )
        data["id"] = item_id
        data["object"] = "realtime.item"
        data["status"] = "completed"
        audio_ms = 0
        if data["type"] == "message":
            allowed = PARTS_BY_ROLE[data["role"]]
            for index, part in enumerate(data["content"]):
                kind = part.get("type")
                if kind is None:
                    raise missing_parameter(f"item.content[{index}].type")
                if kind not in allowed:
                    raise invalid_value(f"item.content[{index}].type", kind, allowed)
                if kind in ("input_audio", "output_audio") and "audio" in part:
                    try:
                        audio_ms += len(base64.b64decode(part.pop("audio"), validate=True)) // BYTES_PER_MS
                    except (binascii.Error, ValueError):
                        raise RealtimeError(
                            "Invalid 'item.content.audio'. Expected base64-encoded audio bytes.",
                            code="invalid_value",
                            param=f"item.content[{index}].audio",
                        ) from None
                    part.setdefault("transcript", None)
        elif data["type"] == "function_call":
            data.setdefault("call_id", self.ids.new("call"))
        return Item(data, count_tokens(item_text(data)) + audio_tokens(audio_ms) + 4, audio_ms=audio_ms)

    def _insert(self, item: Item, previous_id: str | None) -> Item:
        if previous_id is None or previous_id == "root":
            index = 0
        else:
            index = next(i for i, it in enumerate(self.items) if it.id == previous_id) + 1
        previous_id = self.items[index - 1].id if index > 0 else None
        self.items.insert(index, item)
        self.by_id[item.id] = item
        self._emit({"type": "conversation.item.added", "previous_item_id": previous_id, "item": item.data})
        self._emit({"type": "conversation.item.done", "previous_item_id": previous_id, "item": item.data})
        return item

    def _find(self, item_id: str, param: str = "item_id") -> Item:
        item = self.by_id.get(item_id)
        if item is None:
            raise RealtimeError(
                f"Item with item_id '{item_id}' not found.", code="item_not_found", param=param
            )
        return item

    def _on_conversation_item_retrieve(self, event: dict[str, Any], now: float) -> None:
        item = self._find(event["item_id"])
        self._emit({"type": "conversation.item.retrieved", "item": item.data})

    def _on_conversation_item_delete(self, event: dict[str, Any], now: float) -> None:
        item = self._find(event["item_id"])
        self.items.remove(item)
        del self.by_id[item.id]
        self._emit({"type": "conversation.item.deleted", "item_id": item.id})

    def _on_conversation_item_truncate(self, event: dict[str, Any], now: float) -> None:
        item = self._find(event["item_id"])
        content_index, end_ms = event["content_index"], event["audio_end_ms"]
        content = item.data.get("content") or []
        if item.data.get("role") != "assistant" or not any(p.get("type") == "output_audio" for p in content):
            raise RealtimeError(
                "Only model output audio messages can be truncated",
                code="unsupported_content_type",
                param="item_id",
            )
        if content_index >= len(content) or content[content_index].get("type") != "output_audio":
            raise invalid_value("content_index", content_index)
        if end_ms > item.audio_ms:
            raise RealtimeError(
                f"Audio content of {item.audio_ms}ms is already shorter than {end_ms}ms",
                code="invalid_value",
                param="audio_end_ms",
            )
        part = content[content_index]
        transcript = part.get("transcript") or ""
        part["transcript"] = heard_transcript(transcript, end_ms, item.audio_ms)
        item.audio_ms = end_ms
        item.tokens = count_tokens(part["transcript"]) + audio_tokens(end_ms) + 4
        self._emit(
            {
                "type": "conversation.item.truncated",
                "item_id": item.id,
                "content_index": content_index,
                "audio_end_ms": end_ms,
            }
        )

    # ---- responses -----------------------------------------------------------------------------------

    def _on_response_cancel(self, event: dict[str, Any], now: float) -> None:
        wanted = event.get("response_id")
        run = next((r for r in self.responses if r.id == wanted), None) if wanted else self.active_response
        if run is None:
            raise RealtimeError(
                "Cancellation failed: no active response found.", code="response_cancel_not_active"
            )
        self._finish(run, "cancelled", {"type": "cancelled", "reason": "client_cancelled"})

    def _on_response_create(self, event: dict[str, Any], now: float) -> None:
        self.create_response(event.get("response") or {}, now)

    def create_response(self, params: dict[str, Any], now: float) -> ResponseRun:
        in_conversation = params.get("conversation", "auto") != "none"
        active = self.active_response
        if in_conversation and active is not None:
            raise RealtimeError(
                f"Conversation already has an active response in progress: {active.id}. "
                "Wait until the response is finished before creating a new one.",
                code="conversation_already_has_active_response",
            )
        config = self._response_config(params)
        instructions = config["instructions"]
        tools = config["tools"]
        if "input" in params:
            visible = [self._input_item(raw, i) for i, raw in enumerate(params["input"])]
        else:
            visible = self._context_window(instructions)
        context = [item.data for item in visible]
        reply = self.model.reply(
            context, instructions=instructions, tools=tools, response_index=self.response_count
        )
        self.response_count += 1
        input_tokens = count_tokens(instructions) + sum(item.tokens for item in visible)
        run = ResponseRun(
            id=self.ids.new("resp"),
            in_conversation=in_conversation,
            modality=session_config.output_modality(config),
            config=config,
            reply=reply,
            input_tokens=input_tokens,
            created_at=now,
            metadata=params.get("metadata"),
        )
        self.responses.append(run)
        self._emit({"type": "response.created", "response": self._response_object(run, "in_progress")})
        run.steps = self._deliver(run)
        run.next_due = now + self.limits.response_latency
        return run

    def _response_config(self, params: dict[str, Any]) -> dict[str, Any]:
        output = self.config["audio"]["output"]
        modalities = (
            params.get("output_modalities") or params.get("modalities") or self.config["output_modalities"]
        )
        voice = (
            (params.get("audio") or {}).get("output", {}).get("voice")
            or params.get("voice")
            or output["voice"]
        )
        out_format = (params.get("audio") or {}).get("output", {}).get("format") or output["format"]
        return {
            "output_modalities": ["audio"] if "audio" in modalities else ["text"],
            "instructions": params.get("instructions", self.config["instructions"]),
            "tools": params.get("tools", self.config["tools"]),
            "voice": voice,
            "format": out_format,
            "max_output_tokens": params.get(
                "max_output_tokens",
                params.get("max_response_output_tokens", self.config["max_output_tokens"]),
            ),
        }

    def _input_item(self, raw: Any, index: int) -> Item:
        if isinstance(raw, dict) and raw.get("type") == "item_reference":
            return self._find(str(raw.get("id")), param=f"response.input[{index}].id")
        item = self._checked_item(raw)
        return item

    def _context_window(self, instructions: str) -> list[Item]:
        """The latest items that fit the context window (the real `truncation: auto` drops the oldest)."""
        max_out = self.config["max_output_tokens"]
        budget = self.limits.context_window - (
            session_config.MAX_RESPONSE_TOKENS if max_out == "inf" else max_out
        )
        budget -= count_tokens(instructions)
        visible: list[Item] = []
        for item in reversed(self.items):
            budget -= item.tokens
            if budget < 0:
                break
            visible.append(item)
        visible.reverse()
        return visible

    def _response_object(self, run: ResponseRun, status: str, details: Any = None) -> dict[str, Any]:
        response: dict[str, Any] = {
            "id": run.id,
            "object": "realtime.response",
            "status": status,
            "status_details": details,
            "output": [snapshot(o.item) for o in run.outputs] if status != "in_progress" else [],
            "conversation_id": self.conversation_id if run.in_conversation else None,
            "output_modalities": run.config["output_modalities"],
            "max_output_tokens": run.config["max_output_tokens"],
            "audio": {"output": {"format": run.config["format"], "voice": run.config["voice"]}},
            "usage": None,
            "metadata": run.metadata,
        }
        if status != "in_progress":
            response["usage"] = self._usage(run)
        return response

    def _usage(self, run: ResponseRun) -> dict[str, Any]:
        text_out = sum(count_tokens(o.sent_text) for o in run.outputs)
        audio_out = sum(audio_tokens(o.audio_ms) for o in run.outputs)
        input_audio = sum(audio_tokens(it.audio_ms) for it in self.items if it.data.get("role") == "user")
        input_audio = min(input_audio, run.input_tokens)
        return {
            "total_tokens": run.input_tokens + text_out + audio_out,
            "input_tokens": run.input_tokens,
            "output_tokens": text_out + audio_out,
            "input_token_details": {
                "cached_tokens": 0,
                "text_tokens": run.input_tokens - input_audio,
                "audio_tokens": input_audio,
                "image_tokens": 0,
                "cached_tokens_details": {"text_tokens": 0, "audio_tokens": 0, "image_tokens": 0},
            },
            "output_token_details": {"text_tokens": text_out, "audio_tokens": audio_out},
        }

    def _deliver(self, run: ResponseRun) -> Generator[float, None, None]:
        """The GA event sequence of one response; yields the time each paced step is due."""
        due = run.created_at + self.limits.response_latency
        yield due
        if run.reply.text or not run.reply.tool_calls:
            yield from self._deliver_message(run, due)
        for call in run.reply.tool_calls:
            self._deliver_function_call(run, call.name, call.arguments, call.call_id)

    def _open_output(self, run: ResponseRun, output: Output) -> None:
        run.outputs.append(output)
        index = len(run.outputs) - 1
        self._emit(
            {
                "type": "response.output_item.added",
                "response_id": run.id,
                "output_index": index,
                "item": output.item,
            }
        )
        if run.in_conversation:
            previous = self.items[-1].id if self.items else None
            item = Item(output.item, 0)
            self.items.append(item)
            self.by_id[item.id] = item
            self._emit({"type": "conversation.item.added", "previous_item_id": previous, "item": output.item})

    def _deliver_message(self, run: ResponseRun, due: float) -> Generator[float, None, None]:
        audio_out = run.modality == "audio"
        text = run.reply.text or ""
        output = Output(
            item={
                "id": self.ids.new("item"),
                "type": "message",
                "object": "realtime.item",
                "status": "in_progress",
                "role": "assistant",
                "content": [],
            },
            kind="audio" if audio_out else "text",
        )
        self._open_output(run, output)
        ids = self._part_ids(run, output)
        part = {"type": "audio", "transcript": ""} if audio_out else {"type": "text", "text": ""}
        self._emit({"type": "response.content_part.added", **ids, "part": part})
        output.part_open = True
        output.item["content"] = [
            {"type": "output_audio", "transcript": ""} if audio_out else {"type": "output_text", "text": ""}
        ]
        if not audio_out:
            for piece in _word_pieces(text, max(1, len(text) // 40 + 1)):
                output.sent_text += piece
                self._emit({"type": "response.output_text.delta", **ids, "delta": piece})
            return
        self.assistant_audio_present = True
        pcm, bytes_per_ms = self._speech(text, run.config["format"]["type"])
        chunk = self.limits.chunk_ms * bytes_per_ms
        total_ms = len(pcm) // bytes_per_ms
        n_chunks = max(1, math.ceil(len(pcm) / chunk))
        pieces = _word_pieces(text, n_chunks)
        pace = self.limits.chunk_ms / 1000 * self.limits.pacing
        for k in range(n_chunks):
            data = pcm[k * chunk : (k + 1) * chunk]
            output.audio_ms = min(total_ms, (k + 1) * self.limits.chunk_ms)
            if self.audio_sink is not None:
                self.audio_sink(run.id, output.item["id"], data)
            else:
                self._emit(
                    {"type": "response.output_audio.delta", **ids, "delta": base64.b64encode(data).decode()}
                )
            if pieces[k]:
                output.sent_text += pieces[k]
                self._emit({"type": "response.output_audio_transcript.delta", **ids, "delta": pieces[k]})
            if k < n_chunks - 1:
                # Yield even when unpaced (due unchanged): between chunks is where faults such as an armed
                # server error get their chance.
                due += pace
                yield due

    def _speech(self, text: str, fmt: str) -> tuple[bytes, int]:
        """The reply's audio in the output format, and its bytes per millisecond.

        Seeded by the session's audio seed and the text (not the response), so a load test's repeated
        replies come from the synthesis cache; G.711 is synthesised at 8 kHz rather than resampled.
        """
        if fmt == "audio/pcm":
            return audio.speech_for_text(text, seed=self.audio_seed), BYTES_PER_MS
        narrowband = audio.speech_for_text(text, seed=self.audio_seed, rate=audio.G711_RATE)
        samples = np.frombuffer(narrowband, "<i2")
        encoded = audio.ulaw_encode(samples) if fmt == "audio/pcmu" else audio.alaw_encode(samples)
        return encoded, audio.G711_RATE // 1000

    def _part_ids(self, run: ResponseRun, output: Output) -> dict[str, Any]:
        return {
            "response_id": run.id,
            "item_id": output.item["id"],
            "output_index": run.outputs.index(output),
            "content_index": 0,
        }

    def _close_output(self, run: ResponseRun, output: Output, status: str) -> None:
        """The pending `*.done` events of an output, with what was actually delivered."""
        ids = self._part_ids(run, output)
        if output.part_open:
            output.part_open = False
            if output.kind == "audio":
                self._emit({"type": "response.output_audio.done", **ids})
                self._emit(
                    {"type": "response.output_audio_transcript.done", **ids, "transcript": output.sent_text}
                )
                part = {"type": "audio", "transcript": output.sent_text}
                output.item["content"] = [{"type": "output_audio", "transcript": output.sent_text}]
            else:
                self._emit({"type": "response.output_text.done", **ids, "text": output.sent_text})
                part = {"type": "text", "text": output.sent_text}
                output.item["content"] = [{"type": "output_text", "text": output.sent_text}]
            self._emit({"type": "response.content_part.done", **ids, "part": part})
        output.item["status"] = status
        self._emit(
            {
                "type": "response.output_item.done",
                "response_id": run.id,
                "output_index": ids["output_index"],
                "item": output.item,
            }
        )
        if run.in_conversation:
            item = self.by_id.get(output.item["id"])
            if item is not None:
                item.audio_ms = output.audio_ms
                item.tokens = count_tokens(item_text(output.item)) + audio_tokens(output.audio_ms) + 4
                self._emit({"type": "conversation.item.done", "item": output.item})

    def _deliver_function_call(self, run: ResponseRun, name: str, arguments: str, call_id: str) -> None:
        output = Output(
            item={
                "id": self.ids.new("item"),
                "type": "function_call",
                "object": "realtime.item",
                "status": "in_progress",
                "name": name,
                "call_id": call_id,
                "arguments": "",
            },
            kind="function_call",
        )
        self._open_output(run, output)
        base = {"response_id": run.id, "item_id": output.item["id"], "output_index": len(run.outputs) - 1}
        for piece in _chunks(arguments, 16):
            output.sent_text += piece
            self._emit(
                {"type": "response.function_call_arguments.delta", **base, "call_id": call_id, "delta": piece}
            )
        output.item["arguments"] = arguments
        self._emit(
            {
                "type": "response.function_call_arguments.done",
                **base,
                "call_id": call_id,
                "name": name,
                "arguments": arguments,
            }
        )
        self._close_output(run, output, "completed")

    def _finish(self, run: ResponseRun, status: str, details: dict[str, Any] | None) -> None:
        if run not in self.responses:
            return
        if run.steps is not None:
            steps, run.steps = run.steps, None
            steps.close()
        current = run.current
        if current is not None and current.item["status"] == "in_progress":
            self._close_output(run, current, "completed" if status == "completed" else "incomplete")
        self.responses.remove(run)
        self.idle_from_ms = self.input_audio_ms  # the idle timeout counts from the end of the model's turn
        self._emit({"type": "response.done", "response": self._response_object(run, status, details)})
        if status != "failed":
            self._emit({"type": "rate_limits.updated", "rate_limits": self._rate_limits(run)})

    def fail_response(self, run: ResponseRun, error: RealtimeError) -> None:
        """End a response `failed`, as a mid-response server error does."""
        self.error(error)
        self._finish(run, "failed", {"type": "failed", "error": {"type": error.type, "code": error.code}})

    def _rate_limits(self, run: ResponseRun) -> list[dict[str, Any]]:
        used = self._usage(run)["total_tokens"]
        return [
            {"name": "requests", "limit": 5000, "remaining": 4999, "reset_seconds": 0.012},
            {"name": "tokens", "limit": 40000, "remaining": max(0, 40000 - used), "reset_seconds": 0.5},
        ]


def snapshot(item: dict[str, Any]) -> dict[str, Any]:
    content = item.get("content")
    if content is None:
        return dict(item)
    return {**item, "content": [dict(part) for part in content]}


def heard_transcript(transcript: str, heard_ms: int, total_ms: int) -> str:
    """The words a listener heard by `heard_ms`, assuming speech spread evenly over the audio."""
    if total_ms <= 0 or heard_ms >= total_ms:
        return transcript
    cut = int(len(transcript) * heard_ms / total_ms)
    head = transcript[:cut]
    if cut < len(transcript) and not transcript[cut].isspace() and " " in head:
        head = head[: head.rfind(" ")]  # a word counts as heard only when all of it was
    elif cut < len(transcript) and not transcript[cut].isspace():
        head = ""
    return head.rstrip()


def _word_pieces(text: str, n: int) -> list[str]:
    """Split text into n consecutive pieces on word boundaries, in step with n audio chunks."""
    if n <= 1:
        return [text]
    pieces: list[str] = []
    start = 0
    for k in range(1, n + 1):
        end = len(text) if k == n else int(len(text) * k / n)
        while 0 < end < len(text) and not text[end - 1].isspace() and end > start:
            end = text.find(" ", end)
            end = len(text) if end < 0 else end + 1
        end = max(end, start)
        pieces.append(text[start:end])
        start = end
    return pieces


def _chunks(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]
