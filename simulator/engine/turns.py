"""Input turns: the input audio buffer, server VAD, commits and their transcription, the idle nudge.

Audio time is counted in milliseconds of audio from the session's first sample, never wall time.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator
from typing import Any

from .. import audio
from ..model import count_tokens
from ..protocol import RealtimeError
from ..vad import VoiceActivityDetector
from . import transcription
from .conversation import Conversation, Item, audio_tokens
from .responses import Responder
from .state import BYTES_PER_MS, SessionState, word_pieces

# semantic_vad has no silence setting; its eagerness maps to one (low waits longest for the user to go on).
SEMANTIC_SILENCE_MS = {"low": 1500, "medium": 800, "auto": 800, "high": 400}
# Transcript of a user audio turn that no script describes (stated, so tests and users can recognise it).
UNSCRIPTED_TRANSCRIPT = "[unscripted audio: {ms} ms]"

# The real API takes at most 15 MiB of audio per `input_audio_buffer.append` (the event's documentation in
# the openai SDK). The uncommitted buffer is held to the same amount (about 5.5 min of pcm16 at 24 kHz).
MAX_APPEND_BYTES = 15 * 1024 * 1024
MAX_BUFFER_BYTES = 15 * 1024 * 1024


class InputTurns:
    """The caller's side: audio in, turns detected or committed, each one a user item with a transcript."""

    def __init__(
        self,
        state: SessionState,
        conversation: Conversation,
        responder: Responder,
        *,
        audio_turns: Iterator[int],
    ) -> None:
        self.state = state
        self.conversation = conversation
        self.responder = responder  # a turn starts a response; speech interrupts one
        # Which scripted transcript the next user audio turn gets (a counter the caller may share).
        self.audio_turns = audio_turns
        self.buffer = bytearray()
        self.samples = 0
        self.g711_resampler: audio.Resampler | None = None
        self.vad: VoiceActivityDetector | None = None
        self.turn_item_id: str | None = None
        self.turn_start_ms = 0
        self.idle_from_ms = 0  # input audio time from which `idle_timeout_ms` of silence is counted
        self.fail_next_transcription = False
        self.configure_vad()

    @property
    def audio_ms(self) -> int:
        """Input audio received so far, in milliseconds."""
        return self.samples * 1000 // audio.SAMPLE_RATE

    @property
    def _turn_detection(self) -> dict[str, Any]:
        return self.state.config["audio"]["input"]["turn_detection"] or {}

    def model_turn_ended(self) -> None:
        """The idle timeout counts from the end of the model's turn."""
        self.idle_from_ms = self.audio_ms

    # ---- client events -----------------------------------------------------------------------------

    def on_append(self, event: dict[str, Any], now: float) -> None:
        try:
            raw = base64.b64decode(event["audio"], validate=True)
        except (binascii.Error, ValueError):
            raise RealtimeError(
                "Invalid 'audio'. Expected base64-encoded audio bytes.", code="invalid_value", param="audio"
            ) from None
        if len(raw) > MAX_APPEND_BYTES:
            raise RealtimeError(
                f"Invalid 'audio': {len(raw)} bytes of audio in one event; the maximum is 15 MiB.",
                code="invalid_value",
                param="audio",
            )
        self.append_audio(self._to_pcm16(raw), now)

    def on_commit(self, event: dict[str, Any], now: float) -> None:
        ms = len(self.buffer) / BYTES_PER_MS
        if ms < 100:
            raise RealtimeError(
                "Error committing input audio buffer: buffer too small. Expected at least 100ms of audio, "
                f"but buffer only has {ms:.2f}ms of audio.",
                code="input_audio_buffer_commit_empty",
            )
        self._commit(now, item_id=self.state.ids.new("item"), audio_ms=int(ms))
        if self.vad is not None:
            self.vad.reset()

    def on_clear(self, event: dict[str, Any], now: float) -> None:
        self.buffer.clear()
        if self.vad is not None:
            self.vad.reset()
        self.turn_item_id = None
        self.state.emit({"type": "input_audio_buffer.cleared"})

    # ---- audio in ----------------------------------------------------------------------------------

    def append_audio(self, pcm16: bytes, now: float) -> None:
        """Caller audio (pcm16 24 kHz) from any transport: the WebSocket's append events or a WebRTC track."""
        self.state.last_activity = now
        if self.vad is None and len(self.buffer) + len(pcm16) > MAX_BUFFER_BYTES:
            raise RealtimeError(
                "The input audio buffer is full (15 MiB of audio uncommitted). "
                "Commit or clear it before appending more.",
                code="input_audio_buffer_full",
            )
        self.buffer += pcm16
        if len(self.buffer) > MAX_BUFFER_BYTES:
            # With server VAD the oldest audio is long past any turn; trimming to three quarters at a time
            # keeps the cost of moving megabytes off the per-append path.
            drop = len(self.buffer) - MAX_BUFFER_BYTES * 3 // 4
            del self.buffer[: drop - drop % 2]
        self.samples += len(pcm16) // 2
        if self.vad is None:
            return
        for vad_event in self.vad.feed(pcm16):
            if vad_event.kind == "speech_started":
                self._speech_started(vad_event.audio_ms, now)
            else:
                self._speech_stopped(vad_event.audio_ms, now)
        self._check_idle(now)

    def _to_pcm16(self, raw: bytes) -> bytes:
        fmt = self.state.config["audio"]["input"]["format"]["type"]
        if fmt == "audio/pcm":
            return raw[: len(raw) - len(raw) % 2]
        if self.g711_resampler is None:  # one streaming resampler: chunk edges join seamlessly
            self.g711_resampler = audio.Resampler(audio.G711_RATE, audio.SAMPLE_RATE)
        decoded = audio.ulaw_decode(raw) if fmt == "audio/pcmu" else audio.alaw_decode(raw)
        return audio.to_pcm(self.g711_resampler.process(decoded))

    def configure_vad(self) -> None:
        """Server VAD as `turn_detection` says: off (manual commits), server_vad, or semantic_vad."""
        settings = self.state.config["audio"]["input"]["turn_detection"]
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
            self.vad = VoiceActivityDetector(start_ms=self.audio_ms, **params)
        else:
            self.vad.configure(**params)

    # ---- turns -------------------------------------------------------------------------------------

    def _speech_started(self, audio_start_ms: int, now: float) -> None:
        self.turn_item_id = self.state.ids.new("item")
        self.turn_start_ms = audio_start_ms
        self.state.emit(
            {
                "type": "input_audio_buffer.speech_started",
                "audio_start_ms": audio_start_ms,
                "item_id": self.turn_item_id,
            }
        )
        if self._turn_detection.get("interrupt_response", True) and self.responder.active is not None:
            self.responder.cancel("turn_detected", now)  # barge-in: the response ends, its audio stops

    def _speech_stopped(self, audio_end_ms: int, now: float) -> None:
        item_id = self.turn_item_id or self.state.ids.new("item")
        self.state.emit(
            {"type": "input_audio_buffer.speech_stopped", "audio_end_ms": audio_end_ms, "item_id": item_id}
        )
        self._commit(now, item_id=item_id, audio_ms=max(0, audio_end_ms - self.turn_start_ms))
        self.turn_item_id = None
        self.idle_from_ms = audio_end_ms
        if (
            self._turn_detection.get("create_response", True)
            and self.responder.active is None
            and not transcription.is_transcription(self.state.config)
        ):
            self.responder.create({}, now)

    def _check_idle(self, now: float) -> None:
        """`idle_timeout_ms` of silence after the model finished: timeout_triggered, then a nudge response."""
        idle_ms = self._turn_detection.get("idle_timeout_ms")
        if transcription.is_transcription(self.state.config):
            return  # no model turn to nudge
        if not idle_ms or self.vad is None or self.vad.in_speech or self.responder.runs:
            return
        now_ms = self.audio_ms
        if now_ms - self.idle_from_ms < idle_ms:
            return
        item_id = self.state.ids.new("item")
        self.state.emit(
            {
                "type": "input_audio_buffer.timeout_triggered",
                "audio_start_ms": self.idle_from_ms,
                "audio_end_ms": now_ms,
                "item_id": item_id,
            }
        )
        self._commit(now, item_id=item_id, audio_ms=now_ms - self.idle_from_ms)
        self.idle_from_ms = now_ms
        self.responder.create({}, now)

    def _commit(self, now: float, *, item_id: str, audio_ms: int) -> Item:
        """The buffer becomes a user audio item (committed, added, done), then its transcription events."""
        self.buffer.clear()
        previous = self.conversation.last_id
        self.state.emit(
            {"type": "input_audio_buffer.committed", "item_id": item_id, "previous_item_id": previous}
        )
        transcript = self.state.model.transcribe(next(self.audio_turns))
        data = {
            "id": item_id,
            "type": "message",
            "status": "completed",
            "role": "user",
            "content": [{"type": "input_audio", "transcript": transcript}],
        }
        item = self.conversation.insert(Item(data, audio_tokens(audio_ms), audio_ms=audio_ms), previous)
        transcription = self.state.config["audio"]["input"]["transcription"]
        if transcription is not None:
            # The transcription model runs beside the response: its events come a while after the commit.
            fails, self.fail_next_transcription = self.fail_next_transcription, False
            model = str(transcription.get("model") or "")
            low, high = self.state.limits.transcription_delay
            delay = self.state.rng.uniform(low, high) if high > 0 else 0.0
            if delay <= 0:
                self._transcribe(item_id, transcript, audio_ms, model, fails)
            else:
                self.state.later(
                    now + delay, lambda: self._transcribe(item_id, transcript, audio_ms, model, fails)
                )
        return item

    def _transcribe(
        self, item_id: str, transcript: str | None, audio_ms: int, model: str, fails: bool
    ) -> None:
        """The transcription model's events for a user audio item (scripted text, or a stated placeholder)."""
        emit = self.state.emit
        if fails:
            emit(
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
        pieces = word_pieces(text, max(1, len(text.split()) // 3))
        if model == transcription.DIARIZE_MODEL:  # speaker segments in place of deltas
            self._segments(item_id, text, audio_ms)
            text, pieces = transcription.transcript_text(text, model), []
        for piece in pieces:
            emit(
                {
                    "type": "conversation.item.input_audio_transcription.delta",
                    "item_id": item_id,
                    "content_index": 0,
                    "delta": piece,
                    **transcription.logprobs(self.state.config, piece),
                }
            )
        emit(
            {
                "type": "conversation.item.input_audio_transcription.completed",
                "item_id": item_id,
                "content_index": 0,
                **transcription.logprobs(self.state.config, text),
                "transcript": text,
                "usage": transcription_usage(model, text, audio_ms),
            }
        )

    def _segments(self, item_id: str, text: str, audio_ms: int) -> None:
        for segment in transcription.diarize(text, audio_ms):
            self.state.emit(
                {
                    "type": "conversation.item.input_audio_transcription.segment",
                    "id": self.state.ids.new("seg"),
                    "item_id": item_id,
                    "content_index": 0,
                    "text": segment.text,
                    "speaker": segment.speaker,
                    "start": segment.start,
                    "end": segment.end,
                }
            )

def transcription_usage(model: str, text: str, audio_ms: int) -> dict[str, Any]:
    """What a transcription is billed: tokens for the gpt-4o*-transcribe models, audio seconds for whisper-1
    (the SDK's two `Usage` variants of `input_audio_transcription.completed`)."""
    if model.startswith("gpt-4o") and "transcribe" in model:
        audio_in, text_out = audio_tokens(audio_ms), count_tokens(text)
        return {
            "type": "tokens",
            "input_tokens": audio_in,
            "output_tokens": text_out,
            "total_tokens": audio_in + text_out,
            "input_token_details": {"text_tokens": 0, "audio_tokens": audio_in},
        }
    return {"type": "duration", "seconds": round(audio_ms / 1000, 3)}
