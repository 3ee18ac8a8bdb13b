"""Audio for the simulator: a speech-like synthesizer, G.711 codecs, resampling and a test-audio kit.

Everything here is a pure function over mono int16 numpy arrays or pcm16 little-endian bytes, so the server's
hot path (synthesising every spoken reply) and the tests share one implementation.

- `speech_like` is not speech: it is a harmonic source with a moving pitch, shaped by vowel-like formant
  weights and a syllable-rate envelope, with short consonant-like noise bursts. It has what a voice activity
  detector and a player care about (level, syllable rhythm, gaps shorter than any sane `silence_duration_ms`)
  and costs a few ms for a 5 s reply because every sample comes from one wavetable gather.
- G.711 follows the ITU-T reference (the Sun `g711.c` implementation CPython's `audioop` used), through lookup
  tables built once, so encode/decode are one numpy gather each.
- `build_utterance` produces audio whose true speech boundaries are known exactly, for VAD accuracy tests.
"""

from __future__ import annotations

import asyncio
import math
import wave
import zlib
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path
from typing import Literal

import cachetools
import numpy as np
import numpy.random  # numpy loads it lazily: 30 ms on the event loop at the first reply

SAMPLE_RATE = 24000  # the Realtime API's `audio/pcm` (pcm16) rate
G711_RATE = 8000
MS_PER_CHAR = 65  # spoken duration per character of reply text: ~15 chars/s, an unhurried speaking rate
MIN_SPEECH_MS = 300  # even "ok" takes a moment to say

FULL_SCALE = 32768.0
_PINK_CORNER_HZ = 100.0
Pcm = np.ndarray | bytes | bytearray | memoryview


# ------------------------------------------------------------------------------------------------------------
# Basic conversions and building blocks


def samples_for_ms(duration_ms: float, rate: int = SAMPLE_RATE) -> int:
    """Whole samples in `duration_ms` at `rate` (exact for 8/16/24/48 kHz and whole milliseconds)."""
    return int(duration_ms * rate // 1000)


def ms_for_samples(samples: int, rate: int = SAMPLE_RATE) -> int:
    """Whole milliseconds covered by `samples` (floored, like the Realtime API's *_ms offsets)."""
    return samples * 1000 // rate


def to_samples(pcm: Pcm) -> np.ndarray:
    """int16 samples from pcm16 LE bytes (an odd trailing byte is ignored) or an array (returned as int16)."""
    if isinstance(pcm, np.ndarray):
        return pcm.astype(np.int16, copy=False)
    view = memoryview(pcm).cast("B")
    return np.frombuffer(view[: len(view) - len(view) % 2], dtype="<i2").astype(np.int16, copy=False)


def to_pcm(samples: Pcm) -> bytes:
    """pcm16 little-endian bytes from int16 samples (bytes pass through)."""
    if isinstance(samples, np.ndarray):
        return np.asarray(samples, dtype="<i2").tobytes()
    return bytes(samples)


def dbfs(samples: Pcm) -> float:
    """RMS level relative to full scale; -inf for silence or nothing."""
    values = to_samples(samples).astype(np.float64)
    if values.size == 0:
        return float("-inf")
    rms = math.sqrt(float(np.mean(values * values)))
    return 20 * math.log10(rms / FULL_SCALE) if rms > 0 else float("-inf")


def _to_int16(signal: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(signal), -32768, 32767).astype(np.int16)


def _scale_to_dbfs(signal: np.ndarray, level_dbfs: float) -> np.ndarray:
    rms = math.sqrt(float(np.mean(signal * signal))) if signal.size else 0.0
    if rms == 0.0:
        return np.zeros(signal.shape, dtype=np.int16)
    return _to_int16(signal * (FULL_SCALE * 10 ** (level_dbfs / 20) / rms))


def _rng(seed: int) -> np.random.Generator:
    # SeedSequence rejects negative seeds; folding keeps every int usable and deterministic.
    return np.random.default_rng(seed % (1 << 64))


def silence(duration_ms: int, rate: int = SAMPLE_RATE) -> np.ndarray:
    """Digital silence (int16 zeros)."""
    return np.zeros(samples_for_ms(duration_ms, rate), dtype=np.int16)


def noise(
    duration_ms: int,
    *,
    level_dbfs: float,
    seed: int,
    rate: int = SAMPLE_RATE,
    color: Literal["white", "pink"] = "white",
) -> np.ndarray:
    """Gaussian noise at an RMS of `level_dbfs`; "pink" has a 1/f power spectrum above 100 Hz (room rumble).

    Pink stays flat below 100 Hz, as a microphone's high-pass leaves it, instead of drifting like 1/f to DC.
    """
    count = samples_for_ms(duration_ms, rate)
    white = _rng(seed).standard_normal(count)
    if color == "pink" and count > 1:
        spectrum = np.fft.rfft(white)
        frequencies = np.fft.rfftfreq(count, d=1.0 / rate)
        spectrum /= np.sqrt(np.maximum(frequencies, _PINK_CORNER_HZ))
        spectrum[0] = 0.0
        white = np.fft.irfft(spectrum, n=count)
    return _scale_to_dbfs(white, level_dbfs)


def mix(a: Pcm, b: Pcm) -> np.ndarray:
    """Sample-wise sum with saturation; the shorter input is zero-extended to the longer one's length."""
    first, second = to_samples(a), to_samples(b)
    length = max(first.size, second.size)
    total = np.zeros(length, dtype=np.int32)
    total[: first.size] += first
    total[: second.size] += second
    return np.clip(total, -32768, 32767).astype(np.int16)


# ------------------------------------------------------------------------------------------------------------
# Speech-like synthesis

_TABLE_SIZE = 4096  # one pitch period; a power of two so phase -> index is a mask
# (F1, F2, F3) in Hz for a, e, i, o, u: enough spectral variety between syllables to look like speech.
_VOWEL_FORMANTS = (
    (730, 1090, 2440),
    (530, 1840, 2480),
    (270, 2290, 3010),
    (570, 840, 2410),
    (300, 870, 2240),
)
_FORMANT_BANDWIDTH_HZ = 120.0
_PITCH_MIN_HZ, _PITCH_MAX_HZ = 80.0, 260.0
_SYLLABLE_MS = (110, 260)  # ~4-5 syllables per second with the gaps below
# A gap never exceeds 80 ms, so any VAD with silence_duration >= 200 ms hears one utterance.
_GAP_MS = (20, 80)
_GAPLESS_SHARE = 0.4  # share of syllable joins that are co-articulated (an envelope dip, not a gap)
_BURST_SHARE = 0.4  # share of syllables opening with a consonant-like noise burst


@lru_cache(maxsize=32)
def _vowel_tables(nominal_pitch_hz: int, rate: int) -> np.ndarray:
    """One period per vowel: harmonics weighted by formant resonances at the nominal pitch, RMS 1."""
    # Band-limit to the highest pitch the utterance reaches so no harmonic aliases, even at 8 kHz.
    top_hz = min(0.45 * rate, 5000.0)
    harmonic_count = max(1, int(top_hz // min(nominal_pitch_hz * 1.3, _PITCH_MAX_HZ)))
    harmonics = np.arange(1, harmonic_count + 1, dtype=np.float64)
    frequencies = harmonics * nominal_pitch_hz
    # Fixed quadratic phases (Schroeder-like) keep the crest factor low, hence less clipping at high levels.
    phases = np.pi * harmonics * harmonics / harmonic_count
    angle = 2 * np.pi * np.arange(_TABLE_SIZE, dtype=np.float64) / _TABLE_SIZE
    basis = np.sin(np.outer(harmonics, angle) + phases[:, None])
    tables = np.empty((len(_VOWEL_FORMANTS), _TABLE_SIZE), dtype=np.float32)
    for index, formants in enumerate(_VOWEL_FORMANTS):
        resonance = sum(
            gain / (1.0 + ((frequencies - formant) / _FORMANT_BANDWIDTH_HZ) ** 2)
            for gain, formant in zip((1.0, 0.6, 0.25), formants, strict=True)
        )
        weights = (resonance + 0.03) / harmonics**0.6  # glottal source tilt plus a little broadband floor
        period = weights @ basis
        tables[index] = period / math.sqrt(float(np.mean(period * period)))
    tables.setflags(write=False)
    return tables


def _syllable_layout(total: int, rate: int, rng: np.random.Generator) -> list[tuple[int, int, int]]:
    """(start, end, gap_after) sample spans covering [0, total): from sample 0 to the very last sample."""
    layout: list[tuple[int, int, int]] = []
    shortest = samples_for_ms(_SYLLABLE_MS[0], rate)
    start = 0
    while start < total:
        length = samples_for_ms(int(rng.integers(*_SYLLABLE_MS)), rate)
        gap = 0 if rng.random() < _GAPLESS_SHARE else samples_for_ms(int(rng.integers(*_GAP_MS)), rate)
        if total - (start + length + gap) < shortest:
            layout.append((start, total, 0))  # stretch the last syllable so speech runs to the very end
            break
        layout.append((start, start + length, gap))
        start += length + gap
    return layout


# The synthesis cache is bounded in bytes, not entries: a load test's repeated replies hit it, while one long
# reply can neither pin gigabytes nor evict everything else (an entry above the per-entry cap is not kept).
SPEECH_CACHE_BYTES = 64 * 1024 * 1024
SPEECH_CACHE_ENTRY_BYTES = 8 * 1024 * 1024


class _SpeechCache(cachetools.LRUCache[tuple[int, int, int, float], np.ndarray]):
    def __setitem__(self, key: tuple[int, int, int, float], value: np.ndarray) -> None:
        if value.nbytes <= SPEECH_CACHE_ENTRY_BYTES:
            super().__setitem__(key, value)


_speech_cache = _SpeechCache(maxsize=SPEECH_CACHE_BYTES, getsizeof=lambda samples: max(1, samples.nbytes))


def speech_cache_bytes() -> int:
    """Bytes the synthesis cache holds now (at most SPEECH_CACHE_BYTES)."""
    return int(_speech_cache.currsize)


@cachetools.cached(_speech_cache, info=True)
def _speech_like_cached(duration_ms: int, seed: int, rate: int, level_dbfs: float) -> np.ndarray:
    total = samples_for_ms(duration_ms, rate)
    if total == 0:
        return np.zeros(0, dtype=np.int16)
    rng = _rng(seed)
    base_pitch = float(rng.uniform(100.0, 220.0))
    layout = _syllable_layout(total, rate, rng)
    last = len(layout) - 1

    envelope_x: list[float] = []
    envelope_y: list[float] = []
    pitch_x: list[float] = []
    pitch_y: list[float] = []
    vowel_runs: list[int] = []
    vowel_run_lengths: list[int] = []
    bursts: list[tuple[int, int, float]] = []
    dip = 0.3  # envelope level at a co-articulated (gapless) join
    for index, (start, end, gap) in enumerate(layout):
        length = end - start
        attack = min(samples_for_ms(int(rng.integers(15, 30)), rate), length // 3)
        release = min(samples_for_ms(int(rng.integers(25, 50)), rate), length // 3)
        peak = 10 ** (float(rng.uniform(-6.0, 0.0)) / 20)  # stressed and unstressed syllables
        opens_on_dip = index > 0 and layout[index - 1][2] == 0
        closes_on_dip = index < last and gap == 0
        envelope_x += [start, start + attack, end - release, end]
        envelope_y += [dip if opens_on_dip else 0.0, peak, peak * 0.8, dip if closes_on_dip else 0.0]
        # Pitch: accent per syllable around a declining baseline, as in a declarative sentence.
        declination = 1.0 - 0.15 * start / total
        pitch_x.append(start + length / 2)
        pitch_y.append(base_pitch * declination * (1.0 + float(rng.uniform(-0.12, 0.18))))
        vowel_runs.append(int(rng.integers(len(_VOWEL_FORMANTS))))
        vowel_run_lengths.append(length + gap)
        if rng.random() < _BURST_SHARE:
            burst_length = min(samples_for_ms(int(rng.integers(15, 35)), rate), length // 2)
            bursts.append((start, burst_length, 0.35 * peak))

    positions = np.arange(total, dtype=np.float64)
    envelope = np.interp(positions, envelope_x, envelope_y).astype(np.float32)
    pitch_hz = np.clip(np.interp(positions, pitch_x, pitch_y), _PITCH_MIN_HZ, _PITCH_MAX_HZ)
    phase = np.cumsum(pitch_hz * (_TABLE_SIZE / rate))
    table_index = phase.astype(np.int64) & (_TABLE_SIZE - 1)
    vowel_index = np.repeat(np.asarray(vowel_runs), vowel_run_lengths)
    tables = _vowel_tables(round(base_pitch / 10.0) * 10, rate)
    signal = tables[vowel_index, table_index] * envelope

    for start, length, level in bursts:
        if length < 2:
            continue
        # Differenced white noise is high-pass (fricative-like); a decaying ramp blends it into the vowel.
        hiss = np.diff(rng.standard_normal(length + 1)).astype(np.float32)
        signal[start : start + length] += hiss * np.linspace(level, 0.0, length, dtype=np.float32)

    speech = _scale_to_dbfs(signal, level_dbfs)
    speech.setflags(write=False)
    return speech


def speech_like(
    duration_ms: int, *, seed: int, rate: int = SAMPLE_RATE, level_dbfs: float = -20.0
) -> np.ndarray:
    """Deterministic speech-like int16 audio of exactly `duration_ms`, RMS `level_dbfs` over its whole length.

    Syllables of 110-260 ms, pitch 80-260 Hz, gaps between syllables of at most 80 ms; the signal starts at
    its first sample and ends at its last, so the true speech span is the whole array. Results are cached.
    """
    return _speech_like_cached(int(duration_ms), int(seed), int(rate), float(level_dbfs)).copy()


def duration_ms_for_text(text: str) -> int:
    """How long `speech_for_text(text)` speaks: MS_PER_CHAR per character, at least MIN_SPEECH_MS."""
    return max(MIN_SPEECH_MS, len(text.strip()) * MS_PER_CHAR)


def speech_for_text(text: str, *, seed: int, rate: int = SAMPLE_RATE, level_dbfs: float = -20.0) -> bytes:
    """pcm16 LE speech-like audio for `text`; the text also seeds the voice, so replies sound different."""
    text_seed = zlib.crc32(text.encode("utf-8"))  # stable across processes, unlike hash()
    samples = _speech_like_cached(
        duration_ms_for_text(text), (seed << 32) ^ text_seed, rate, float(level_dbfs)
    )
    return to_pcm(samples)


# ------------------------------------------------------------------------------------------------------------
# G.711 (ITU-T), vectorised through lookup tables

_ULAW_SEGMENT_ENDS = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF])
_ALAW_SEGMENT_ENDS = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF])
_ALL_INT16 = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.int16)  # index = the uint16 view


@cache
def _ulaw_encode_table() -> np.ndarray:
    value = _ALL_INT16.astype(np.int32) >> 2  # 14-bit linear input, as the standard defines it
    negative = value < 0
    magnitude = np.minimum(np.where(negative, -value, value), 8159) + 33  # clip, then add the bias
    segment = np.searchsorted(_ULAW_SEGMENT_ENDS, magnitude)
    code = (segment << 4) | ((magnitude >> (segment + 1)) & 0x0F)
    code = np.where(segment >= 8, 0x7F, code)
    return (code ^ np.where(negative, 0x7F, 0xFF)).astype(np.uint8)


@cache
def _ulaw_decode_table() -> np.ndarray:
    code = ~np.arange(256, dtype=np.int32) & 0xFF
    magnitude = (((code & 0x0F) << 3) + 0x84) << ((code & 0x70) >> 4)
    return np.where(code & 0x80, 0x84 - magnitude, magnitude - 0x84).astype(np.int16)


@cache
def _alaw_encode_table() -> np.ndarray:
    value = _ALL_INT16.astype(np.int32) >> 3  # 13-bit linear input
    positive = value >= 0
    magnitude = np.where(positive, value, -value - 1)
    segment = np.searchsorted(_ALAW_SEGMENT_ENDS, magnitude)
    mantissa = np.where(segment < 2, magnitude >> 1, magnitude >> np.maximum(segment, 1)) & 0x0F
    code = np.where(segment >= 8, 0x7F, (segment << 4) | mantissa)
    return (code ^ np.where(positive, 0xD5, 0x55)).astype(np.uint8)


@cache
def _alaw_decode_table() -> np.ndarray:
    code = np.arange(256, dtype=np.int32) ^ 0x55
    mantissa = (code & 0x0F) << 4
    segment = (code & 0x70) >> 4
    magnitude = np.where(segment == 0, mantissa + 8, (mantissa + 0x108) << np.maximum(segment - 1, 0))
    return np.where(code & 0x80, magnitude, -magnitude).astype(np.int16)


def ulaw_encode(pcm16: Pcm) -> bytes:
    """G.711 mu-law bytes, one per sample."""
    return _ulaw_encode_table()[to_samples(pcm16).view(np.uint16)].tobytes()


def ulaw_decode(data: bytes | bytearray | memoryview) -> np.ndarray:
    """int16 samples from G.711 mu-law bytes."""
    return _ulaw_decode_table()[np.frombuffer(data, dtype=np.uint8)]


def alaw_encode(pcm16: Pcm) -> bytes:
    """G.711 A-law bytes, one per sample."""
    return _alaw_encode_table()[to_samples(pcm16).view(np.uint16)].tobytes()


def alaw_decode(data: bytes | bytearray | memoryview) -> np.ndarray:
    """int16 samples from G.711 A-law bytes."""
    return _alaw_decode_table()[np.frombuffer(data, dtype=np.uint8)]


# ------------------------------------------------------------------------------------------------------------
# Resampling: rational polyphase FIR (Kaiser-windowed sinc)

_RESAMPLE_TAPS_PER_PHASE = 24  # 12 input samples either side: ~60 dB stopband, cheap enough for whole files
_RESAMPLE_KAISER_BETA = 7.0
_RESAMPLE_DENSE_DOWN = 4  # up to this decimation factor, convolve densely and drop samples (see below)
_RESAMPLE_PASSBAND = 0.9  # cutoff as a share of the lower Nyquist: a transition band instead of aliasing


@lru_cache(maxsize=16)
def _polyphase_filter(up: int, down: int) -> np.ndarray:
    """Taps as an (up, taps_per_phase) matrix: row p serves outputs whose upsampled index is p mod up."""
    # Odd length so the centre tap sits on a sample (no half-sample skew); a zero tap pads it to the grid.
    length = _RESAMPLE_TAPS_PER_PHASE * up - 1
    cutoff = _RESAMPLE_PASSBAND * 0.5 / max(up, down)  # cycles per upsampled sample
    offsets = np.arange(length) - (length - 1) // 2
    taps = 2 * cutoff * np.sinc(2 * cutoff * offsets) * np.kaiser(length, _RESAMPLE_KAISER_BETA) * up
    taps = np.append(taps, 0.0)
    # taps[p + k*up] is phase p's k-th tap
    return taps.reshape(_RESAMPLE_TAPS_PER_PHASE, up).T.copy()


def _polyphase_outputs(
    padded: np.ndarray, padded_origin: int, first: int, count: int, up: int, down: int, phases: np.ndarray
) -> np.ndarray:
    """Outputs first..first+count-1; padded[i] holds input i + padded_origin (zeros where there was none).

    Outputs `up` apart share a filter phase and sit `down` inputs apart, so each phase is one strided sliding
    window times its taps: a handful of numpy calls per chunk, whatever its length.
    """
    taps = phases.shape[1]
    delay = (taps * up - 2) // 2  # group delay in upsampled samples: the centre tap
    output = np.empty(count, dtype=np.float64)
    for offset in range(min(up, count)):
        first_position = (first + offset) * down + delay
        newest = first_position // up - padded_origin  # padded index of the newest input under the filter
        outputs = len(range(offset, count, up))
        segment = padded[newest - (taps - 1) : newest + (outputs - 1) * down + 1]
        phase = phases[first_position % up]
        if down <= _RESAMPLE_DENSE_DOWN:
            # Convolving every input position and keeping 1 in `down` is cheapest while the waste is small.
            output[offset::up] = np.convolve(segment, phase, mode="valid")[::down]
        else:
            windows = np.lib.stride_tricks.as_strided(
                segment,
                shape=(outputs, taps),
                strides=(down * segment.strides[0], segment.strides[0]),
                writeable=False,
            )
            output[offset::up] = windows @ phase[::-1]  # windows run oldest-first, the taps newest-first
    return output


def _ratio(from_rate: int, to_rate: int) -> tuple[int, int]:
    if from_rate <= 0 or to_rate <= 0:
        raise ValueError(f"sample rates must be positive, got {from_rate} -> {to_rate}")
    divisor = math.gcd(from_rate, to_rate)
    return to_rate // divisor, from_rate // divisor


def resample(samples: Pcm, from_rate: int, to_rate: int) -> np.ndarray:
    """Resample int16 audio between any two integer rates; output length is len * to_rate // from_rate.

    Whole-signal: the audio outside `samples` counts as silence, so calling this per 20 ms chunk of a stream
    dents every chunk edge; use `Resampler` for streams. The output is time-aligned with the input.
    """
    source = to_samples(samples)
    if from_rate == to_rate:
        return source.copy()
    up, down = _ratio(from_rate, to_rate)
    output_count = source.size * to_rate // from_rate
    if output_count == 0:
        return np.zeros(0, dtype=np.int16)
    phases = _polyphase_filter(up, down)
    taps = phases.shape[1]
    padded = np.concatenate([np.zeros(taps), source.astype(np.float64), np.zeros(taps)])
    return _to_int16(_polyphase_outputs(padded, -taps, 0, output_count, up, down, phases))


class Resampler:
    """Streaming `resample`: feed chunks of any size, get the same samples as resampling the whole stream.

    Each `process()` returns every output whose filter window the input so far covers, so output lags input by
    half the filter (~1.5 ms at 8 kHz); `flush()` returns the rest, treating what follows as silence. The
    concatenated outputs equal `resample(whole_input, from_rate, to_rate)`.
    """

    def __init__(self, from_rate: int, to_rate: int) -> None:
        self.from_rate, self.to_rate = from_rate, to_rate
        self._up, self._down = _ratio(from_rate, to_rate)
        self._phases = _polyphase_filter(self._up, self._down)
        self._taps = self._phases.shape[1]
        self._delay = (self._taps * self._up - 2) // 2
        self._start_stream()

    def _start_stream(self) -> None:
        self._history = np.zeros(self._taps)  # inputs still under some future output's filter
        self._history_origin = -self._taps  # input index of _history[0]; before input 0 is silence
        self._inputs = 0
        self._outputs = 0

    def process(self, samples: Pcm) -> np.ndarray:
        """The next outputs (int16) that the input so far fully determines."""
        source = to_samples(samples)
        if self.from_rate == self.to_rate:
            return source.copy()
        self._inputs += source.size
        buffer = np.concatenate([self._history, source.astype(np.float64)])
        # Output m is ready when its newest input sample, (m*down + delay) // up, has arrived.
        ready = (self._inputs * self._up - 1 - self._delay) // self._down + 1
        return self._emit(buffer, max(ready, self._outputs))

    def flush(self) -> np.ndarray:
        """End of stream: the outputs still owed (len * to_rate // from_rate in all); then start afresh."""
        if self.from_rate == self.to_rate:
            return np.zeros(0, dtype=np.int16)
        buffer = np.concatenate([self._history, np.zeros(self._taps)])
        tail = self._emit(buffer, max(self._inputs * self.to_rate // self.from_rate, self._outputs))
        self._start_stream()
        return tail

    def _emit(self, buffer: np.ndarray, until: int) -> np.ndarray:
        count = until - self._outputs
        output = _polyphase_outputs(
            buffer, self._history_origin, self._outputs, count, self._up, self._down, self._phases
        )
        self._outputs = until
        # Keep the inputs the next output's window can still reach (its newest minus taps - 1), but at least
        # the last `taps` samples so the history stays contiguous with the next chunk.
        keep_from = (self._outputs * self._down + self._delay) // self._up - (self._taps - 1)
        keep_from = min(keep_from, self._history_origin + buffer.size - self._taps)
        self._history = buffer[keep_from - self._history_origin :].copy()
        self._history_origin = keep_from
        return _to_int16(output)


# ------------------------------------------------------------------------------------------------------------
# Test-audio kit


@dataclass
class TestAudio:
    """Audio with its exact speech boundaries, for checking a VAD against the truth."""

    __test__ = False  # not a pytest test class despite the name

    pcm: bytes
    rate: int
    speech_spans_ms: list[tuple[int, int]]

    @property
    def duration_ms(self) -> int:
        return ms_for_samples(len(self.pcm) // 2, self.rate)

    @property
    def samples(self) -> np.ndarray:
        return to_samples(self.pcm)


def parse_segments(spec: str) -> list[tuple[str, int]]:
    """ "silence:500,speech:1200" -> [("silence", 500), ("speech", 1200)]."""
    segments: list[tuple[str, int]] = []
    for part in spec.split(","):
        kind, separator, duration = part.strip().partition(":")
        if not separator or kind not in ("silence", "speech") or not duration.strip().isdigit():
            raise ValueError(f"bad segment {part!r}: expected silence:MS or speech:MS")
        segments.append((kind, int(duration)))
    return segments


def build_utterance(
    segments: Sequence[tuple[str, int]],
    *,
    seed: int = 0,
    noise_dbfs: float | None = None,
    rate: int = SAMPLE_RATE,
    speech_dbfs: float = -20.0,
    noise_color: Literal["white", "pink"] = "white",
) -> TestAudio:
    """Concatenate ("silence"|"speech", ms) segments, optionally under continuous background noise.

    Each speech segment is an independent `speech_like` voice (seeded from `seed` and its position); adjacent
    speech segments form one span. Spans are in ms from the first sample, exact to the sample.
    """
    pieces: list[np.ndarray] = []
    spans: list[tuple[int, int]] = []
    position = 0  # samples
    for index, (kind, duration_ms) in enumerate(segments):
        if kind == "silence":
            piece = silence(duration_ms, rate)
        elif kind == "speech":
            piece = speech_like(duration_ms, seed=seed * 1009 + index, rate=rate, level_dbfs=speech_dbfs)
            start_ms, end_ms = ms_for_samples(position, rate), ms_for_samples(position + piece.size, rate)
            if spans and spans[-1][1] == start_ms:
                spans[-1] = (spans[-1][0], end_ms)
            elif piece.size:
                spans.append((start_ms, end_ms))
        else:
            raise ValueError(f"unknown segment kind {kind!r}: expected 'silence' or 'speech'")
        pieces.append(piece)
        position += piece.size
    audio = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int16)
    if noise_dbfs is not None:
        audio = mix(
            audio,
            noise(
                ms_for_samples(audio.size, rate) + 1,
                level_dbfs=noise_dbfs,
                seed=seed + 7919,
                rate=rate,
                color=noise_color,
            )[: audio.size],
        )
    return TestAudio(pcm=to_pcm(audio), rate=rate, speech_spans_ms=spans)


def chunks(pcm: bytes, chunk_ms: int = 20, rate: int = SAMPLE_RATE) -> Iterator[bytes]:
    """Consecutive chunk_ms slices of pcm16 bytes; the last one may be shorter."""
    size = max(2, samples_for_ms(chunk_ms, rate) * 2)
    for offset in range(0, len(pcm), size):
        yield pcm[offset : offset + size]


async def stream(
    pcm: bytes,
    send: Callable[[bytes], Awaitable[None]],
    *,
    chunk_ms: int = 20,
    speed: float = 1.0,
    rate: int = SAMPLE_RATE,
) -> None:
    """Send pcm in chunk_ms chunks, paced like a microphone at real time x speed (speed <= 0: no pacing).

    Chunk i is sent once i chunks' worth of audio time has elapsed since the start; deadlines are absolute, so
    a slow `send` does not make the stream drift.
    """
    loop = asyncio.get_running_loop()
    started = loop.time()
    for index, chunk in enumerate(chunks(pcm, chunk_ms, rate)):
        if speed > 0:
            delay = started + index * chunk_ms / 1000 / speed - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
        await send(chunk)


def write_wav(path: str | Path, pcm: Pcm, rate: int = SAMPLE_RATE) -> None:
    """Write mono 16-bit PCM as a WAV file."""
    with wave.open(str(path), "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(rate)
        writer.writeframes(to_pcm(pcm))


def read_wav(path: str | Path) -> tuple[bytes, int]:
    """(mono pcm16 LE bytes, rate) from a 16-bit WAV; multi-channel audio is averaged to mono."""
    with wave.open(str(path), "rb") as reader:
        if reader.getsampwidth() != 2:
            raise ValueError(f"{path}: only 16-bit PCM WAV is supported, got {8 * reader.getsampwidth()}-bit")
        channels, rate = reader.getnchannels(), reader.getframerate()
        frames = reader.readframes(reader.getnframes())
    if channels == 1:
        return frames, rate
    interleaved = np.frombuffer(frames, dtype="<i2").reshape(-1, channels)
    return to_pcm(_to_int16(interleaved.mean(axis=1))), rate
