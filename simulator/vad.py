"""Streaming voice activity detector behind the fake server's `server_vad` turn detection.

Sans-I/O and deterministic: `feed()` takes pcm16 bytes in chunks of any size and returns the events the
Realtime API would send; every offset is audio time (samples fed), never wall-clock time, so the same audio in
any chunking yields the same events.

Detector choice: an energy detector with an adaptive noise floor, written here, not `webrtcvad-wheels`.
Both were run on the same audio (speech-like turns at -20 dBFS with unaligned boundaries, clean and under
-45/-35 dBFS white or pink noise, 12 seeds; webrtcvad fed 16 kHz audio, 10 ms frames, the same 2-frame
confirmation and 500 ms silence rule on top):
- webrtcvad, every mode 0-3: a false turn at the very start of every noisy stream (its model adapts to the
  noise only after flagging it), false starts in 10 s of pure noise (mode 3: 2-31 per 5 streams at -35 dBFS),
  turns merged or missed in -35 dBFS noise (3-6 of 12 layouts wrong in modes 0-2), and speech ends reported
  80-150 ms late (its built-in hangover). It takes only 8/16/32/48 kHz, so the API's 24 kHz needs a streaming
  resampler in front (~0.7 ms CPU per audio second with `audio.Resampler`; webrtcvad itself: 165 us/s).
- this detector, on 40 random 3-turn layouts per condition: onset -9..+16 ms, end -40..+8 ms (early only in
  -35 dBFS noise, where the last syllable's tail sinks into it), no false event in 1,200 pure-noise streams
  (3 s each, -60..-25 dBFS, white and pink, thresholds 0..0.8). It runs at any sample rate (24 kHz pcm16,
  8 kHz G.711), takes a continuous `threshold` rather than four modes, costs ~0.3 ms CPU per second of audio
  per session (`python -m rtsim.simulator.vad`) and adds no dependency. On espeak-ng speech it finds the
  same turns to ~10 ms (40 ms for a breathy /h/ onset under -35 dBFS noise).
What it cannot do is tell speech from loud non-stationary noise (music, a door slam): a loud enough sound is a
turn. A real model could; for a simulator fed synthetic or recorded test speech this is the right trade.

How it works, per 10 ms frame (energies from one vectorised pass over each chunk, the state machine in a small
loop over frame energies):
- Noise floor: moves 30 % of the way to a quieter frame per frame, and rises by at most 30 dB/s between turns
  and 5 dB/s within one, so it sits at the background level even during speech (syllable gaps pull it back
  down) and a new steady background (a fan switched on) ends the false turn it caused within seconds. The
  first frame seeds it, half the onset margin below that frame's level; it never goes below -80 dBFS.
- Onset: two consecutive frames (20 ms) louder than max(floor + onset margin, absolute gate); a lone click is
  not a turn. The reported onset is then walked back over the frames just before that are above the (lower)
  hold threshold, and across gaps of up to 80 ms to earlier runs of such frames, at most 1 s back: a stream
  that opens mid-word, whose floor was seeded from speech, still gets its first syllable.
- End: hysteresis. Within a turn a frame is voice if above max(floor + hold margin, gate - (onset margin -
  hold margin)); `silence_duration_ms` of consecutive non-voice frames (rounded up to whole frames) ends it.
- `threshold` (the API's 0..1, default 0.5, higher = less sensitive) maps to the onset margin
  4 + 16*threshold dB (12 dB at 0.5), the hold margin at half of that, and the absolute gate
  -62 + 24*threshold dBFS (-50 dBFS at 0.5): at 0.5, -20 dBFS speech under -35 dBFS noise is heard, and so is
  quiet -45 dBFS speech in a silent room; at 0.9 speech must stand ~18 dB above the noise, at 1.0 ~20 dB.
- Known limit: a stream that opens on speech and stays loud (no pause for over a second) gets its onset late.

Event offsets, chosen to match the API reference:
- speech_started.audio_ms = `audio_start_ms` = max(buffer start, onset - prefix_padding_ms), "the beginning
  of audio sent to the model, and thus includes the prefix_padding_ms". The buffer start is the session start,
  the previous speech_stopped, or the last `reset()`: padding never reaches into audio already committed or
  cleared.
- speech_stopped.audio_ms = `audio_end_ms` = the audio position at which the silence run completed, i.e. the
  end of speech + silence_duration_ms (rounded up to the 10 ms frame): the reference says it "will
  correspond to the end of audio sent to the model, and thus includes the min_silence_duration_ms". The
  bare end of speech is `boundary_ms`, should a caller prefer it.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from rtsim.simulator.audio import (
    G711_RATE,
    SAMPLE_RATE,
    Resampler,
    build_utterance,
    chunks,
    ms_for_samples,
    samples_for_ms,
    speech_for_text,
    ulaw_decode,
    ulaw_encode,
)

FRAME_MS = 10
CONFIRM_FRAMES = 2  # frames above the onset threshold before a turn starts: ignores single-frame clicks
FLOOR_MIN_DBFS = -80.0
FLOOR_FALL = 0.3  # share of the distance to a quieter frame the floor moves per frame
FLOOR_RISE_IDLE_DB_PER_FRAME = 0.3  # 30 dB/s between turns: settles on the background within a second
FLOOR_RISE_SPEECH_DB_PER_FRAME = (
    0.05  # 5 dB/s in a turn: too slow to follow speech, fast enough for a new fan
)
ONSET_LOOKBACK_FRAMES = 100  # how far (1 s) the onset can be walked back from the confirming frames
ONSET_BRIDGE_FRAMES = 8  # the walk back crosses gaps up to 80 ms (a syllable gap) to earlier voice
_POWER_EPSILON = 1e-12  # keeps log10 finite on digital silence (-120 dBFS)


@dataclass(frozen=True)
class VadEvent:
    """A turn boundary. Equality compares `kind` and `audio_ms` only, the values the API puts on the wire.

    audio_ms: speech_started -> audio_start_ms (onset minus prefix padding, clamped to the buffer start);
              speech_stopped -> audio_end_ms (end of speech plus the silence that confirmed it).
    boundary_ms: the detected onset / end of speech itself, without padding or trailing silence.
    decided_ms: the audio position at which the detector decided (how much audio it had heard).
    """

    kind: Literal["speech_started", "speech_stopped"]
    audio_ms: int
    boundary_ms: int = field(default=-1, compare=False)
    decided_ms: int = field(default=-1, compare=False)


@dataclass(frozen=True)
class _Levels:
    onset_margin_db: float
    hold_margin_db: float
    gate_dbfs: float

    @classmethod
    def for_threshold(cls, threshold: float) -> _Levels:
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be within 0..1, got {threshold}")
        onset_margin = 4.0 + 16.0 * threshold
        return cls(
            onset_margin_db=onset_margin, hold_margin_db=onset_margin / 2, gate_dbfs=-62.0 + 24.0 * threshold
        )


class VoiceActivityDetector:
    """Streaming server-VAD: feed pcm16 LE mono audio, get speech_started / speech_stopped events."""

    def __init__(
        self,
        *,
        threshold: float = 0.5,
        prefix_padding_ms: int = 300,
        silence_duration_ms: int = 500,
        rate: int = SAMPLE_RATE,
        start_ms: int = 0,
    ) -> None:
        """`start_ms` starts the time base later, e.g. when server_vad is switched on mid-session."""
        self.rate = rate
        self._frame_samples = samples_for_ms(FRAME_MS, rate)
        if self._frame_samples < 1:
            raise ValueError(f"rate {rate} too low for {FRAME_MS} ms frames")
        self._power_scale = 1.0 / (self._frame_samples * 32768.0 * 32768.0)
        self.configure(
            threshold=threshold, prefix_padding_ms=prefix_padding_ms, silence_duration_ms=silence_duration_ms
        )
        self._fed_samples = samples_for_ms(start_ms, rate)  # complete samples fed, on the session time base
        self._floor_db: float | None = None
        self._start_state(buffer_start=self._fed_samples)

    # -- configuration and state -----------------------------------------------------------------------------

    def configure(
        self,
        *,
        threshold: float | None = None,
        prefix_padding_ms: int | None = None,
        silence_duration_ms: int | None = None,
    ) -> None:
        """Change turn-detection settings (a session.update) without losing the time base or noise floor."""
        if threshold is not None:
            self.threshold = threshold
            self._levels = _Levels.for_threshold(threshold)
        if prefix_padding_ms is not None:
            if prefix_padding_ms < 0:
                raise ValueError("prefix_padding_ms must be >= 0")
            self.prefix_padding_ms = prefix_padding_ms
        if silence_duration_ms is not None:
            if silence_duration_ms < 0:
                raise ValueError("silence_duration_ms must be >= 0")
            self.silence_duration_ms = silence_duration_ms
            self._silence_frames_to_stop = max(1, math.ceil(silence_duration_ms / FRAME_MS))

    def _start_state(self, *, buffer_start: int) -> None:
        self._odd_byte = b""  # half a sample left from the previous chunk
        self._carry = np.zeros(0, dtype=np.int16)  # samples short of a whole frame
        self._next_frame_start = self._fed_samples  # sample index where the next frame begins
        self._buffer_start = buffer_start
        self._in_speech = False
        self._loud_run = 0  # consecutive frames above the onset threshold while not in speech
        self._silent_run = 0  # consecutive non-voice frames while in speech
        self._speech_end = 0  # sample index just after the last voice frame
        self._history: deque[float] = deque(maxlen=ONSET_LOOKBACK_FRAMES + CONFIRM_FRAMES)

    def reset(self, *, keep_time: bool = True) -> None:
        """Forget the current turn and any partial frame (an input_audio_buffer.clear or a manual commit).

        keep_time=True (the API's behaviour: offsets count all audio of the session) keeps the time base and
        the noise floor, and makes now the buffer start that prefix padding cannot reach behind.
        keep_time=False starts over from 0 ms with no noise-floor estimate, as a new detector would.
        """
        if not keep_time:
            self._fed_samples = 0
            self._floor_db = None
        self._start_state(buffer_start=self._fed_samples)

    @property
    def audio_ms(self) -> int:
        """Milliseconds of audio fed so far, on the session time base."""
        return ms_for_samples(self._fed_samples, self.rate)

    @property
    def in_speech(self) -> bool:
        return self._in_speech

    @property
    def noise_floor_dbfs(self) -> float | None:
        """The current background-level estimate (None before the first whole frame)."""
        return self._floor_db

    # -- streaming -------------------------------------------------------------------------------------------

    def feed(self, pcm16: bytes | bytearray | memoryview) -> list[VadEvent]:
        """Consume a chunk of pcm16 LE audio of any length; return the events it completes, in order."""
        data = self._odd_byte + bytes(pcm16) if self._odd_byte else pcm16
        usable = len(data) - len(data) % 2
        self._odd_byte = bytes(data[usable:])
        if usable == 0:
            return []
        samples = np.frombuffer(data, dtype="<i2", count=usable // 2)
        self._fed_samples += samples.size
        if self._carry.size:
            samples = np.concatenate((self._carry, samples))
        frame_count = samples.size // self._frame_samples
        whole = frame_count * self._frame_samples
        self._carry = samples[whole:].copy()
        if frame_count == 0:
            return []
        frames = samples[:whole].reshape(frame_count, self._frame_samples).astype(np.float64)
        # Squares of int16 and their per-frame sums are integers below 2**53, so float64 holds them exactly in
        # any summation order: energies (and events) cannot depend on how the audio was chunked.
        sums = (frames * frames).sum(axis=1).tolist()
        scale = self._power_scale
        # math.log10 over a short list beats numpy's per-call overhead for the usual 1-4 frames per chunk.
        return self._process([10.0 * math.log10(total * scale + _POWER_EPSILON) for total in sums])

    def flush(self) -> list[VadEvent]:
        """End of input: close an open turn at the current audio position (less than a frame is not analysed).

        Returns [speech_stopped] if a turn was open, else []. The time base, the noise floor and any partial
        frame are kept, so feeding may continue.
        """
        self._loud_run = 0
        if not self._in_speech:
            return []
        self._in_speech = False
        self._silent_run = 0
        self._buffer_start = self._fed_samples
        return [
            VadEvent(
                "speech_stopped", self.audio_ms, ms_for_samples(self._speech_end, self.rate), self.audio_ms
            )
        ]

    # -- the per-frame state machine -------------------------------------------------------------------------

    def _process(self, energies: list[float]) -> list[VadEvent]:
        events: list[VadEvent] = []
        levels = self._levels
        floor = self._floor_db
        if floor is None:
            # Seed from the first frame: right if the stream opens on background noise (the floor then creeps
            # up the last few dB); a stream that opens mid-word gets a floor a little under its first frame,
            # usually low enough to hear the next louder frames at once.
            floor = max(energies[0] - levels.hold_margin_db, FLOOR_MIN_DBFS)
        history = self._history
        frame_samples = self._frame_samples
        frame_start = self._next_frame_start
        for energy in energies:
            frame_end = frame_start + frame_samples
            history.append(energy)
            onset_level = max(floor + levels.onset_margin_db, levels.gate_dbfs)
            if self._in_speech:
                hold_level = max(
                    floor + levels.hold_margin_db,
                    levels.gate_dbfs - (levels.onset_margin_db - levels.hold_margin_db),
                )
                if energy > hold_level:
                    self._silent_run = 0
                    self._speech_end = frame_end
                else:
                    self._silent_run += 1
                    if self._silent_run >= self._silence_frames_to_stop:
                        self._in_speech = False
                        self._silent_run = 0
                        self._buffer_start = frame_end  # the committed turn ends here
                        end_ms = ms_for_samples(frame_end, self.rate)
                        events.append(
                            VadEvent(
                                "speech_stopped", end_ms, ms_for_samples(self._speech_end, self.rate), end_ms
                            )
                        )
            elif energy > onset_level:
                self._loud_run += 1
                if self._loud_run >= CONFIRM_FRAMES:
                    self._loud_run = 0
                    self._in_speech = True
                    self._silent_run = 0
                    self._speech_end = frame_end
                    events.append(self._speech_started(frame_end, floor))
            else:
                self._loud_run = 0
            # Floor: fall fast towards quieter frames, creep up otherwise (never above the frame itself).
            if energy < floor:
                floor = max(floor + (energy - floor) * FLOOR_FALL, FLOOR_MIN_DBFS)
            else:
                rise = FLOOR_RISE_SPEECH_DB_PER_FRAME if self._in_speech else FLOOR_RISE_IDLE_DB_PER_FRAME
                floor = min(floor + rise, energy)
            frame_start = frame_end
        self._floor_db = floor
        self._next_frame_start = frame_start
        return events

    def _speech_started(self, confirmed_at: int, floor: float) -> VadEvent:
        """Locate the onset by walking back from the confirming frames, then apply the prefix padding."""
        levels = self._levels
        hold_level = max(
            floor + levels.hold_margin_db, levels.gate_dbfs - (levels.onset_margin_db - levels.hold_margin_db)
        )
        history = self._history  # newest last; the last CONFIRM_FRAMES are the confirming frames
        frame_samples = self._frame_samples
        earliest = len(history) - CONFIRM_FRAMES  # index of the first confirming frame
        oldest_allowed = max(0, len(history) - (confirmed_at - self._buffer_start) // frame_samples)
        gap = 0  # non-voice frames since the earliest accepted frame
        run = 0  # voice frames seen across a gap, not yet accepted
        for index in range(earliest - 1, oldest_allowed - 1, -1):
            if history[index] > hold_level:
                run += 1
                # Contiguous voice extends the onset; across a gap it takes a run of CONFIRM_FRAMES, so a lone
                # noise spike does not drag the onset back.
                if gap == 0 or run >= CONFIRM_FRAMES:
                    earliest, gap, run = index, 0, 0
            else:
                gap += run + 1
                run = 0
                if gap > ONSET_BRIDGE_FRAMES:
                    break
        onset = confirmed_at - (len(history) - earliest) * frame_samples
        onset_ms = ms_for_samples(onset, self.rate)
        start_ms = max(ms_for_samples(self._buffer_start, self.rate), onset_ms - self.prefix_padding_ms)
        return VadEvent("speech_started", start_ms, onset_ms, ms_for_samples(confirmed_at, self.rate))


# ------------------------------------------------------------------------------------------------------------
# Benchmark


def bench(seconds_of_audio: float = 60) -> dict[str, float | int]:
    """CPU cost of the VAD per second of audio per session, and of synthesising a 5 s reply.

    The VAD is fed conversational audio (speech turns, pauses, -45 dBFS background noise) in 20 ms chunks,
    as a client streams it; CPU time is process time, so the figure holds on a machine shared with other work.
    """
    turn_pattern = [("silence", 700), ("speech", 2300), ("silence", 1500), ("speech", 3500)]  # 8 s per cycle
    cycles = max(1, math.ceil(seconds_of_audio / 8))
    audio = build_utterance(turn_pattern * cycles, seed=1, noise_dbfs=-45.0)
    pcm = audio.pcm[: samples_for_ms(seconds_of_audio * 1000) * 2]
    chunk_list = list(chunks(pcm, 20))
    detector = VoiceActivityDetector()
    events = 0
    cpu_started, wall_started = time.process_time(), time.perf_counter()
    for chunk in chunk_list:
        events += len(detector.feed(chunk))
    vad_cpu = time.process_time() - cpu_started
    vad_wall = time.perf_counter() - wall_started
    audio_seconds = len(pcm) / 2 / SAMPLE_RATE

    reply = "x" * 77  # 77 characters * 65 ms = 5.0 s of speech
    repeats = 20
    # Seeds never used before in this process, so every call synthesises instead of hitting the cache.
    fresh_seeds = [time.perf_counter_ns() * 64 + index for index in range(repeats)]
    started = time.process_time()
    for seed in fresh_seeds:
        speech_for_text(reply, seed=seed)
    synth_ms = (time.process_time() - started) / repeats * 1000
    started = time.process_time()
    for _ in range(repeats):
        speech_for_text(reply, seed=fresh_seeds[-1])
    cached_ms = (time.process_time() - started) / repeats * 1000
    started = time.process_time()
    for seed in fresh_seeds:
        narrowband_reply = speech_for_text(reply, seed=seed, rate=G711_RATE)  # synthesise at 8 kHz directly
        ulaw_encode(np.frombuffer(narrowband_reply, dtype="<i2"))
    ulaw_reply_ms = (time.process_time() - started) / repeats * 1000

    # A G.711 caller: every 20 ms chunk decoded and resampled 8 -> 24 kHz, as an engine would before the VAD.
    narrowband = ulaw_encode(np.frombuffer(pcm, dtype="<i2")[::3])
    resampler = Resampler(G711_RATE, SAMPLE_RATE)
    started = time.process_time()
    for offset in range(0, len(narrowband), 160):
        resampler.process(ulaw_decode(narrowband[offset : offset + 160]))
    g711_in_cpu = time.process_time() - started

    us_per_audio_second = vad_cpu / audio_seconds * 1e6
    return {
        "vad_audio_seconds": round(audio_seconds, 3),
        "vad_events": events,
        "vad_cpu_us_per_audio_second": round(us_per_audio_second, 1),
        "vad_wall_us_per_audio_second": round(vad_wall / audio_seconds * 1e6, 1),
        "vad_cpu_us_per_20ms_chunk": round(vad_cpu / len(chunk_list) * 1e6, 2),
        "vad_sessions_per_core_realtime": int(1e6 / us_per_audio_second) if us_per_audio_second else 0,
        "speech_for_text_5s_ms": round(synth_ms, 3),
        "speech_for_text_5s_cached_ms": round(cached_ms, 3),
        "speech_for_text_5s_ulaw_8k_ms": round(ulaw_reply_ms, 3),
        "g711_decode_resample_us_per_audio_second": round(g711_in_cpu / audio_seconds * 1e6, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m rtsim.simulator.vad", description="VAD and synthesis benchmark"
    )
    parser.add_argument(
        "--seconds", type=float, default=60.0, help="seconds of audio to push through the VAD"
    )
    args = parser.parse_args(argv)
    print(json.dumps(bench(args.seconds), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
