"""Audio on the wire: the model's voice as an outbound track, and the caller's track turned into pcm16 24 kHz.

`ModelAudioTrack` is the server's output audio buffer. The engine hands it the model's audio as it generates
it (pcm16 24 kHz, paced in real time by the engine); the track resamples to 48 kHz and gives aiortc's sender a
20 ms Opus packet every 20 ms of its own clock. Between responses it sends silence, as a real WebRTC sender
does, so the stream of RTP packets never stops while the call is up (clients can use it as a heartbeat).

The track encodes the Opus itself (`OpusStream`) rather than handing aiortc raw frames: aiortc would compute
an RFC 6465 audio level in pure Python for every frame (~140 µs here) and hop to a thread to encode; encoding
here, and sending one cached silence packet between responses instead of encoding silence, roughly halves a
call's server CPU (see `bench.py`).

The track knows what was actually played, which the call needs for the `output_audio_buffer.*` events and
for truncating an interrupted item to what the caller heard.
"""

from __future__ import annotations

import asyncio
import fractions
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

import av
import numpy as np
from aiortc.mediastreams import MediaStreamTrack

from .. import audio

OUT_RATE = 48000  # Opus's clock; aiortc's encoder would resample anything else to it anyway
FRAME_MS = 20
FRAME_SAMPLES = OUT_RATE * FRAME_MS // 1000
TIME_BASE = fractions.Fraction(1, OUT_RATE)
# Audio of a response starts playing this long after its first chunk arrived: a small jitter buffer, so the
# engine's timer firing a few ms late between its 100 ms chunks never underruns the 20 ms frames.
PLAYOUT_DELAY = 0.04
# A sender more than this far behind its schedule (the loop was blocked) moves its schedule instead of sending
# the backlog in a burst: a real-time source never sends stale frames faster than real time.
RESYNC_AFTER = 0.1


@dataclass
class ResponseAudio:
    """The not-yet-played audio of one response, and how much of it went out."""

    response_id: str
    item_id: str
    ready_at: float
    resampler: audio.Resampler
    chunks: deque[np.ndarray] = field(default_factory=deque)
    offset: int = 0  # samples of chunks[0] already played
    played_samples: int = 0
    finished: bool = False  # the response is done: no more audio will come
    started: bool = False

    @property
    def played_ms(self) -> int:
        return self.played_samples * 1000 // OUT_RATE

    @property
    def buffered(self) -> bool:
        return bool(self.chunks)


@dataclass
class ClearedAudio:
    response_id: str
    item_id: str
    played_ms: int


@dataclass
class PlayoutStats:
    frames: int = 0
    speech_frames: int = 0
    underrun_frames: int = 0  # a response was playing but its next audio had not arrived in time
    max_lateness: float = 0.0  # how far behind its 20 ms schedule the track produced a frame
    lateness_sum: float = 0.0
    late_frames: int = 0  # produced more than one frame period behind schedule
    resyncs: int = 0  # times the schedule was moved because the track fell RESYNC_AFTER behind


def _opus_encoder() -> av.AudioCodecContext:
    codec = av.CodecContext.create("libopus", "w")
    codec.bit_rate = 32000  # mono voice
    codec.format = "s16"
    codec.layout = "mono"
    codec.sample_rate = OUT_RATE
    codec.time_base = TIME_BASE
    # Lowest complexity: this CPU's libopus takes ~170 µs a frame at 10, ~100 µs at 0; a simulator's synthetic
    # voice loses nothing that matters.
    codec.options = {"application": "voip", "compression_level": "0"}
    return codec  # type: ignore[return-value]


def _frame(samples: np.ndarray, pts: int) -> av.AudioFrame:
    frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = OUT_RATE
    frame.pts = pts
    frame.time_base = TIME_BASE
    return frame


class OpusStream:
    """20 ms mono Opus packets: speech is encoded, idle time is one cached silence packet sent over and over.

    After speech the encoder is fed a few real silence frames first, so its state settles where the
    decoder's is before the cached packet takes over (no click when the next response starts).
    """

    SETTLE_FRAMES = 5

    def __init__(self) -> None:
        self._codec = _opus_encoder()
        silence_encoder = _opus_encoder()
        zeros = np.zeros(FRAME_SAMPLES, dtype=np.int16)
        packets = [p for k in range(3) for p in silence_encoder.encode(_frame(zeros, k * FRAME_SAMPLES))]
        self._silence = bytes(packets[-1])
        self._zeros = zeros
        self._silent_run = self.SETTLE_FRAMES

    def packet(self, samples: np.ndarray | None, pts: int) -> av.Packet:
        if samples is not None:
            self._silent_run = 0
            data = self._encode(samples, pts)
        elif self._silent_run < self.SETTLE_FRAMES:
            self._silent_run += 1
            data = self._encode(self._zeros, pts)
        else:
            data = self._silence
        packet = av.Packet(data)
        packet.pts = pts
        packet.time_base = TIME_BASE
        return packet

    def _encode(self, samples: np.ndarray, pts: int) -> bytes:
        packets = self._codec.encode(_frame(samples, pts))
        return bytes(packets[0]) if packets else self._silence


class ModelAudioTrack(MediaStreamTrack):
    """The model's audio track: a real-time paced output buffer, one response after another.

    `recv()` gives Opus packets (`encode_opus`, when Opus was negotiated) or raw frames for aiortc to encode.
    """

    kind = "audio"

    def __init__(
        self,
        *,
        on_started: Callable[[str], None],
        on_stopped: Callable[[str], None],
    ) -> None:
        super().__init__()
        self.encode_opus = True
        self._opus: OpusStream | None = None
        self._on_started = on_started
        self._on_stopped = on_stopped
        self._responses: OrderedDict[str, ResponseAudio] = OrderedDict()
        self._muted: set[str] = set()  # responses whose audio was cleared: later chunks are dropped
        self._clock_start: float | None = None
        self._frame_index = 0
        self._silence = np.zeros(FRAME_SAMPLES, dtype=np.int16)
        self.stats = PlayoutStats()
        self.last_audio_response: str | None = None

    # ---- the engine's side -------------------------------------------------------------------------

    def push(self, response_id: str, item_id: str, pcm16: np.ndarray, rate: int) -> None:
        if response_id in self._muted:
            return
        entry = self._responses.get(response_id)
        if entry is None:
            entry = ResponseAudio(
                response_id,
                item_id,
                ready_at=asyncio.get_running_loop().time() + PLAYOUT_DELAY,
                resampler=audio.Resampler(rate, OUT_RATE),
            )
            self._responses[response_id] = entry
        samples = entry.resampler.process(pcm16)
        if samples.size:
            entry.chunks.append(samples)

    def finish(self, response_id: str) -> None:
        """The response is done: play out its resampler tail, then report the buffer drained."""
        entry = self._responses.get(response_id)
        if entry is None or entry.finished:
            return
        entry.finished = True
        tail = entry.resampler.flush()
        if tail.size:
            entry.chunks.append(tail)

    def clear(self) -> list[ClearedAudio]:
        """Drop everything not yet played (client `output_audio_buffer.clear` or a barge-in).

        Returns what each affected response had played; their remaining audio is muted from now on.
        """
        cleared = [
            ClearedAudio(entry.response_id, entry.item_id, entry.played_ms)
            for entry in self._responses.values()
        ]
        for entry in self._responses.values():
            if not entry.finished:
                self._muted.add(entry.response_id)
        self._responses.clear()
        return cleared

    @property
    def playing(self) -> bool:
        return bool(self._responses)

    def played_ms(self, response_id: str) -> int | None:
        entry = self._responses.get(response_id)
        return entry.played_ms if entry is not None else None

    # ---- aiortc's side -----------------------------------------------------------------------------

    async def recv(self) -> av.AudioFrame | av.Packet:  # type: ignore[override]
        loop = asyncio.get_running_loop()
        if self._clock_start is None:
            self._clock_start = loop.time()
        due = self._clock_start + self._frame_index * FRAME_MS / 1000
        wait = due - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        lateness = max(0.0, loop.time() - due)
        self.stats.max_lateness = max(self.stats.max_lateness, lateness)
        self.stats.lateness_sum += lateness
        if lateness > FRAME_MS / 1000:
            self.stats.late_frames += 1
        if lateness > RESYNC_AFTER:
            self._clock_start += lateness
            due += lateness
            self.stats.resyncs += 1
        samples = self._next_samples(due)
        pts = self._frame_index * FRAME_SAMPLES
        self._frame_index += 1
        self.stats.frames += 1
        if not self.encode_opus:
            return _frame(samples if samples is not None else self._silence, pts)
        if self._opus is None:
            self._opus = OpusStream()
        return self._opus.packet(samples, pts)

    def _next_samples(self, now: float) -> np.ndarray | None:
        """The next 20 ms of the playing response, or None for silence."""
        if not self._responses:
            return None
        entry = next(iter(self._responses.values()))
        if now < entry.ready_at:
            return None
        out = np.zeros(FRAME_SAMPLES, dtype=np.int16)
        filled = 0
        while filled < FRAME_SAMPLES and entry.chunks:
            chunk = entry.chunks[0]
            take = min(FRAME_SAMPLES - filled, chunk.size - entry.offset)
            out[filled : filled + take] = chunk[entry.offset : entry.offset + take]
            filled += take
            entry.offset += take
            if entry.offset == chunk.size:
                entry.chunks.popleft()
                entry.offset = 0
        if filled:
            entry.played_samples += filled
            self.stats.speech_frames += 1
            self.last_audio_response = entry.response_id
            if not entry.started:
                entry.started = True
                self._on_started(entry.response_id)
        if not entry.chunks:
            if entry.finished:
                del self._responses[entry.response_id]
                if entry.started:
                    self._on_stopped(entry.response_id)
            elif filled < FRAME_SAMPLES:
                self.stats.underrun_frames += 1
        return out if filled else None


def mono_samples(frame: av.AudioFrame) -> np.ndarray:
    """The first channel of a decoded frame as int16 (aiortc's Opus decoder gives packed stereo s16)."""
    data = frame.to_ndarray()
    channels = len(frame.layout.channels)
    if frame.format.is_planar:
        samples = data[0]
    else:
        samples = data.reshape(-1)[::channels] if channels > 1 else data.reshape(-1)
    if samples.dtype != np.int16:
        if np.issubdtype(samples.dtype, np.floating):
            samples = np.clip(samples * 32768.0, -32768, 32767)
        samples = samples.astype(np.int16)
    return np.ascontiguousarray(samples)


class CallerAudio:
    """The caller's track as pcm16 mono 24 kHz, by libswresample (50 frames a second a call: C, not numpy)."""

    def __init__(self) -> None:
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=audio.SAMPLE_RATE)

    def convert(self, frame: av.AudioFrame) -> bytes:
        return b"".join(out.to_ndarray().tobytes() for out in self._resampler.resample(frame))
