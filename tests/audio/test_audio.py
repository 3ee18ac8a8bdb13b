"""Tests for simulator.audio: synthesis, G.711, resampling, the test-audio kit and the `rtsim audio` CLI."""

from __future__ import annotations

import asyncio
import json
import warnings
import wave
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtsim.simulator import audio
from rtsim.simulator.audio import (
    G711_RATE,
    MIN_SPEECH_MS,
    MS_PER_CHAR,
    SAMPLE_RATE,
    Resampler,
    alaw_decode,
    alaw_encode,
    build_utterance,
    chunks,
    dbfs,
    duration_ms_for_text,
    mix,
    noise,
    parse_segments,
    read_wav,
    resample,
    silence,
    speech_for_text,
    speech_like,
    stream,
    to_pcm,
    to_samples,
    ulaw_decode,
    ulaw_encode,
    write_wav,
)
from rtsim.simulator.cli import main as cli_main

ALL_INT16 = np.arange(-32768, 32768, dtype=np.int16)


def longest_zero_run(samples: np.ndarray) -> int:
    zero = np.concatenate(([0], (samples == 0).astype(np.int8), [0]))
    edges = np.diff(zero)
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    return int((ends - starts).max()) if starts.size else 0


# --- speech_like / speech_for_text --------------------------------------------------------------------------


def test_speech_like_is_deterministic_and_seed_dependent() -> None:
    first = speech_like(1500, seed=7)
    assert np.array_equal(first, speech_like(1500, seed=7))
    assert not np.array_equal(first, speech_like(1500, seed=8))
    assert first.dtype == np.int16 and first.size == 1500 * SAMPLE_RATE // 1000


def test_speech_like_result_is_a_private_copy() -> None:
    first = speech_like(400, seed=3)
    first[:] = 0  # must not corrupt the cache behind it
    assert np.any(speech_like(400, seed=3) != 0)


@pytest.mark.parametrize("level", [-30.0, -20.0, -12.0])
def test_speech_like_level(level: float) -> None:
    assert dbfs(speech_like(2000, seed=1, level_dbfs=level)) == pytest.approx(level, abs=0.3)


@settings(max_examples=25, deadline=None)
@given(
    duration_ms=st.integers(min_value=60, max_value=4000),
    seed=st.integers(min_value=-(2**40), max_value=2**40),
)
def test_speech_like_spans_its_whole_duration_with_short_gaps(duration_ms: int, seed: int) -> None:
    samples = speech_like(duration_ms, seed=seed)
    assert samples.size == duration_ms * 24
    # Sound within the first and last 10 ms: the true span is the whole array.
    assert np.any(samples[1:240] != 0) and np.any(samples[-240:-1] != 0)
    # No pause longer than 80 ms, so a VAD with silence_duration >= 200 ms hears one utterance.
    assert longest_zero_run(samples) <= 80 * 24


def test_speech_like_has_a_voice_pitch() -> None:
    for seed in range(5):
        samples = speech_like(3000, seed=seed).astype(np.float64)
        # The loudest 60 ms window is voiced; its autocorrelation peak is the pitch period.
        window = 60 * 24
        energy = np.convolve(samples * samples, np.ones(window), mode="valid")[::window]
        start = int(np.argmax(energy)) * window
        segment = samples[start : start + window]
        correlation = np.correlate(segment, segment, mode="full")[window - 1 :]
        shortest, longest = SAMPLE_RATE // 300, SAMPLE_RATE // 70
        period = shortest + int(np.argmax(correlation[shortest:longest]))
        assert 80 <= SAMPLE_RATE / period <= 270, (seed, SAMPLE_RATE / period)


def test_syllable_rate_is_speech_like() -> None:
    rates = []
    for seed in range(20):
        layout = audio._syllable_layout(10 * SAMPLE_RATE, SAMPLE_RATE, audio._rng(seed))
        rates.append(len(layout) / 10)
        assert all(gap <= 80 * 24 for _, _, gap in layout)
    assert 3.5 <= float(np.mean(rates)) <= 6.0


def test_speech_like_is_fast() -> None:
    import time

    audio._speech_like_cached.cache_clear()
    started = time.process_time()
    for seed in range(5):
        speech_like(5000, seed=1000 + seed)
    per_call_ms = (time.process_time() - started) / 5 * 1000
    assert per_call_ms < 25  # ~3 ms measured; generous for a shared 2-core machine


def test_speech_for_text_duration_and_determinism() -> None:
    text = "Sure, I can help with that."
    pcm = speech_for_text(text, seed=1)
    assert duration_ms_for_text(text) == len(text) * MS_PER_CHAR
    assert len(pcm) == duration_ms_for_text(text) * SAMPLE_RATE // 1000 * 2
    assert pcm == speech_for_text(text, seed=1)
    assert pcm != speech_for_text(text, seed=2)
    assert speech_for_text("Sure, I can help with that!", seed=1) != pcm  # the text seeds the voice too


def test_speech_for_text_minimum_and_rate() -> None:
    assert duration_ms_for_text("") == MIN_SPEECH_MS
    assert duration_ms_for_text("  ok  ") == MIN_SPEECH_MS
    assert len(speech_for_text("ok", seed=0, rate=G711_RATE)) == MIN_SPEECH_MS * 8 * 2


# --- silence / noise / mix ----------------------------------------------------------------------------------


def test_silence_and_noise_levels() -> None:
    assert not np.any(silence(250)) and silence(250).size == 6000
    for color in ("white", "pink"):
        generated = noise(2000, level_dbfs=-40, seed=5, color=color)
        assert dbfs(generated) == pytest.approx(-40, abs=0.2)
        assert np.array_equal(generated, noise(2000, level_dbfs=-40, seed=5, color=color))


def test_pink_noise_tilts_towards_low_frequencies() -> None:
    def low_to_high_ratio(samples: np.ndarray) -> float:
        power = np.abs(np.fft.rfft(samples.astype(np.float64))) ** 2
        frequencies = np.fft.rfftfreq(samples.size, 1 / SAMPLE_RATE)
        low = power[(frequencies > 200) & (frequencies < 800)].mean()
        high = power[(frequencies > 4000) & (frequencies < 8000)].mean()
        return float(low / high)

    assert low_to_high_ratio(noise(2000, level_dbfs=-30, seed=1, color="pink")) > 5
    assert low_to_high_ratio(noise(2000, level_dbfs=-30, seed=1, color="white")) < 1.5


def test_mix_pads_and_saturates() -> None:
    mixed = mix(np.array([30000, -30000, 5], dtype=np.int16), np.array([10000, -10000], dtype=np.int16))
    assert mixed.tolist() == [32767, -32768, 5]
    assert mix(b"\x01\x00", np.array([1, 2, 3], dtype=np.int16)).tolist() == [2, 2, 3]


# --- G.711 --------------------------------------------------------------------------------------------------


def test_g711_known_values() -> None:
    assert ulaw_encode(np.array([0, -1, 32767, -32768], dtype=np.int16)) == bytes([0xFF, 0x7E, 0x80, 0x00])
    assert ulaw_decode(bytes([0xFF, 0x7F, 0x80, 0x00])).tolist() == [0, 0, 32124, -32124]
    assert alaw_encode(np.array([0, -1, 32767, -32768], dtype=np.int16)) == bytes([0xD5, 0x55, 0xAA, 0x2A])
    assert alaw_decode(bytes([0xD5, 0x55, 0xAA, 0x2A])).tolist() == [8, -8, 32256, -32256]


def test_g711_matches_audioop_exhaustively() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        audioop = pytest.importorskip("audioop")  # the reference implementation; gone in Python 3.13
    pcm = ALL_INT16.tobytes()
    codes = bytes(range(256))
    assert ulaw_encode(ALL_INT16) == audioop.lin2ulaw(pcm, 2)
    assert alaw_encode(ALL_INT16) == audioop.lin2alaw(pcm, 2)
    assert ulaw_decode(codes).tobytes() == audioop.ulaw2lin(codes, 2)
    assert alaw_decode(codes).tobytes() == audioop.alaw2lin(codes, 2)


@pytest.mark.parametrize(("encode", "decode"), [(ulaw_encode, ulaw_decode), (alaw_encode, alaw_decode)])
def test_g711_round_trip_error_is_bounded(encode, decode) -> None:  # type: ignore[no-untyped-def]
    original = ALL_INT16.astype(np.int64)
    error = np.abs(decode(encode(ALL_INT16)).astype(np.int64) - original)
    # Logarithmic quantisation: ~3-4 % of the magnitude, a few LSBs near zero.
    assert np.all(error <= np.maximum(20, 0.04 * np.abs(original)))
    assert decode(encode(ALL_INT16)).dtype == np.int16


def test_g711_codes_round_trip() -> None:
    codes = bytes(range(256))
    assert alaw_encode(alaw_decode(codes)) == codes
    # mu-law has two zeros (0x7F = -0, 0xFF = +0); 0 encodes as +0.
    expected = bytes(0xFF if code == 0x7F else code for code in codes)
    assert ulaw_encode(ulaw_decode(codes)) == expected


def test_g711_accepts_pcm_bytes() -> None:
    samples = speech_like(100, seed=1)
    assert ulaw_encode(to_pcm(samples)) == ulaw_encode(samples)
    assert len(alaw_encode(samples)) == samples.size


# --- resampling ---------------------------------------------------------------------------------------------


def tone(frequency: float, rate: int, seconds: float = 1.0, amplitude: float = 10000.0) -> np.ndarray:
    return amplitude * np.sin(2 * np.pi * frequency * np.arange(int(rate * seconds)) / rate)


def snr_db(actual: np.ndarray, ideal: np.ndarray) -> float:
    error = actual.astype(np.float64) - ideal
    return float(10 * np.log10(np.mean(ideal * ideal) / np.mean(error * error)))


@pytest.mark.parametrize(
    ("from_rate", "to_rate"), [(8000, 24000), (24000, 8000), (24000, 16000), (44100, 24000)]
)
def test_resample_preserves_an_in_band_tone(from_rate: int, to_rate: int) -> None:
    source = tone(1000, from_rate).astype(np.int16)
    result = resample(source, from_rate, to_rate)
    assert result.size == source.size * to_rate // from_rate
    edge = to_rate // 40  # the ends see the zero padding
    expected = tone(1000, to_rate)[: result.size]
    assert snr_db(result[edge:-edge], expected[edge:-edge]) > 50


def test_resample_rejects_what_the_lower_rate_cannot_hold() -> None:
    high = tone(6000, SAMPLE_RATE).astype(np.int16)  # above 8 kHz's 4 kHz Nyquist
    assert dbfs(resample(high, SAMPLE_RATE, G711_RATE)[100:-100]) - dbfs(high) < -40


def test_resample_identity_and_empty() -> None:
    samples = speech_like(200, seed=2)
    same = resample(samples, SAMPLE_RATE, SAMPLE_RATE)
    assert np.array_equal(same, samples) and same is not samples
    assert resample(np.zeros(0, np.int16), 8000, 24000).size == 0


def test_resample_g711_path_keeps_speech() -> None:
    speech = speech_like(1000, seed=4)
    narrowband = resample(
        ulaw_decode(ulaw_encode(resample(speech, SAMPLE_RATE, G711_RATE))), G711_RATE, SAMPLE_RATE
    )
    assert narrowband.size == speech.size
    assert dbfs(narrowband) == pytest.approx(dbfs(speech), abs=1.5)  # speech energy is mostly below 4 kHz


RATE_PAIRS = [(8000, 24000), (24000, 8000), (24000, 16000), (16000, 24000), (44100, 24000)]


@settings(max_examples=40, deadline=None)
@given(
    rates=st.sampled_from(RATE_PAIRS),
    sizes=st.lists(st.integers(min_value=1, max_value=900), min_size=1, max_size=6),
    seed=st.integers(min_value=0, max_value=50),
)
def test_streaming_resampler_equals_whole_signal_resampling(
    rates: tuple[int, int], sizes: list[int], seed: int
) -> None:
    from_rate, to_rate = rates
    source = speech_like(300, seed=seed, rate=from_rate)
    resampler = Resampler(from_rate, to_rate)
    pieces, offset, index = [], 0, 0
    while offset < source.size:
        size = sizes[index % len(sizes)]
        pieces.append(resampler.process(source[offset : offset + size]))
        offset, index = offset + size, index + 1
    pieces.append(resampler.flush())
    assert np.array_equal(np.concatenate(pieces), resample(source, from_rate, to_rate))


def test_streaming_resampler_latency_flush_and_reuse() -> None:
    source = speech_like(100, seed=1, rate=G711_RATE)
    resampler = Resampler(G711_RATE, SAMPLE_RATE)
    first = resampler.process(source[:160])
    assert 160 * 3 - 3 * 24 <= first.size < 160 * 3  # held back: about half the filter
    rest = np.concatenate([resampler.process(source[160:]), resampler.flush()])
    assert first.size + rest.size == 2400
    assert resampler.flush().size == 0  # flushed: a fresh stream
    assert np.array_equal(
        np.concatenate([resampler.process(source), resampler.flush()]),
        resample(source, G711_RATE, SAMPLE_RATE),
    )
    same = Resampler(SAMPLE_RATE, SAMPLE_RATE)
    assert np.array_equal(same.process(source), source) and same.flush().size == 0
    with pytest.raises(ValueError):
        Resampler(0, SAMPLE_RATE)


# --- test-audio kit -----------------------------------------------------------------------------------------


def test_build_utterance_spans_are_exact() -> None:
    built = build_utterance(
        [("silence", 500), ("speech", 1200), ("silence", 800), ("speech", 600), ("silence", 1000)]
    )
    assert built.speech_spans_ms == [(500, 1700), (2500, 3100)]
    assert built.duration_ms == 4100 and built.rate == SAMPLE_RATE
    samples = built.samples
    assert not np.any(samples[: 500 * 24]) and not np.any(samples[1700 * 24 : 2500 * 24])
    assert np.any(samples[500 * 24 : 501 * 24 + 24]) and np.any(samples[1699 * 24 - 24 : 1700 * 24])


def test_build_utterance_merges_adjacent_speech_and_adds_noise() -> None:
    built = build_utterance([("speech", 300), ("speech", 400), ("silence", 1000)], seed=3, noise_dbfs=-45)
    assert built.speech_spans_ms == [(0, 700)]
    assert dbfs(built.samples[800 * 24 :]) == pytest.approx(-45, abs=0.5)
    assert built == build_utterance(
        [("speech", 300), ("speech", 400), ("silence", 1000)], seed=3, noise_dbfs=-45
    )


def test_build_utterance_at_8khz_and_bad_kind() -> None:
    built = build_utterance([("silence", 100), ("speech", 250)], rate=G711_RATE)
    assert len(built.pcm) == 350 * 8 * 2 and built.speech_spans_ms == [(100, 350)]
    with pytest.raises(ValueError, match="unknown segment kind"):
        build_utterance([("music", 100)])


def test_parse_segments() -> None:
    assert parse_segments("silence:500, speech:1200") == [("silence", 500), ("speech", 1200)]
    for bad in ("silence", "speech:-5", "noise:100", "speech:abc"):
        with pytest.raises(ValueError):
            parse_segments(bad)


@settings(max_examples=40, deadline=None)
@given(length=st.integers(min_value=0, max_value=5000), chunk_ms=st.integers(min_value=1, max_value=60))
def test_chunks_partition_the_audio(length: int, chunk_ms: int) -> None:
    pcm = bytes(range(256)) * (length // 256) + bytes(length % 256)
    pieces = list(chunks(pcm, chunk_ms))
    assert b"".join(pieces) == pcm
    assert all(len(piece) == chunk_ms * 48 for piece in pieces[:-1])
    assert len(pieces) == -(-length // (chunk_ms * 48))


async def test_stream_unpaced_sends_everything_in_order() -> None:
    pcm = speech_for_text("hello", seed=0)
    received: list[bytes] = []

    async def send(chunk: bytes) -> None:
        received.append(chunk)

    await stream(pcm, send, chunk_ms=20, speed=0)
    assert b"".join(received) == pcm and len(received[0]) == 960


async def test_stream_is_paced_at_real_time_times_speed() -> None:
    pcm = bytes(960 * 11)  # 11 chunks of 20 ms: the last is sent 200 ms (of audio time) after the first
    loop = asyncio.get_running_loop()
    times: list[float] = []

    async def send(chunk: bytes) -> None:
        times.append(loop.time())

    await stream(pcm, send, chunk_ms=20, speed=1.0)
    assert 0.19 <= times[-1] - times[0] < 0.45
    times.clear()
    await stream(pcm, send, chunk_ms=20, speed=4.0)
    assert 0.045 <= times[-1] - times[0] < 0.2


def test_wav_round_trip_and_downmix(tmp_path: Path) -> None:
    samples = speech_like(300, seed=1)
    write_wav(tmp_path / "mono.wav", samples, SAMPLE_RATE)
    assert read_wav(tmp_path / "mono.wav") == (to_pcm(samples), SAMPLE_RATE)

    stereo = np.stack([samples, np.zeros_like(samples)], axis=1)
    with wave.open(str(tmp_path / "stereo.wav"), "wb") as writer:
        writer.setnchannels(2)
        writer.setsampwidth(2)
        writer.setframerate(16000)
        writer.writeframes(stereo.astype("<i2").tobytes())
    pcm, rate = read_wav(tmp_path / "stereo.wav")
    assert rate == 16000
    assert np.abs(to_samples(pcm).astype(int) - samples.astype(int) / 2).max() <= 1

    with wave.open(str(tmp_path / "u8.wav"), "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(1)
        writer.setframerate(8000)
        writer.writeframes(bytes(100))
    with pytest.raises(ValueError, match="16-bit"):
        read_wav(tmp_path / "u8.wav")


def test_to_samples_ignores_an_odd_trailing_byte() -> None:
    assert to_samples(b"\x01\x00\x02").tolist() == [1]
    assert to_pcm(np.array([1, -2], dtype=np.int16)) == b"\x01\x00\xfe\xff"


# --- CLI ----------------------------------------------------------------------------------------------------


def last_json(capsys: pytest.CaptureFixture[str]) -> dict:  # type: ignore[type-arg]
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_cli_make_wav(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    output = tmp_path / "turns.wav"
    status = cli_main(
        [
            "audio",
            "make",
            "--segments",
            "silence:500,speech:1200,silence:800",
            "--noise-dbfs",
            "-40",
            "--seed",
            "1",
            "-o",
            str(output),
        ]
    )
    assert status == 0
    report = last_json(capsys)
    assert report["speech_spans_ms"] == [[500, 1700]] and report["duration_ms"] == 2500
    pcm, rate = read_wav(output)
    assert rate == SAMPLE_RATE and len(pcm) == 2500 * 48
    assert dbfs(to_samples(pcm)[: 400 * 24]) == pytest.approx(-40, abs=0.5)


@pytest.mark.parametrize(("suffix", "decode"), [(".ulaw", ulaw_decode), (".alaw", alaw_decode)])
def test_cli_make_g711(tmp_path: Path, capsys: pytest.CaptureFixture[str], suffix: str, decode) -> None:  # type: ignore[no-untyped-def]
    output = tmp_path / f"turn{suffix}"
    assert cli_main(["audio", "make", "--segments", "silence:200,speech:600", "-o", str(output)]) == 0
    report = last_json(capsys)
    assert report["rate"] == G711_RATE and report["format"] == suffix[1:]
    data = output.read_bytes()
    assert len(data) == 800 * 8
    decoded = decode(data)
    assert np.abs(decoded[: 200 * 8].astype(int)).max() <= 8 and dbfs(decoded[200 * 8 :]) > -30


def test_cli_say_and_vad(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spoken = tmp_path / "say.pcm"
    assert cli_main(["audio", "say", "hello there", "-o", str(spoken), "--seed", "3"]) == 0
    assert last_json(capsys)["duration_ms"] == len("hello there") * MS_PER_CHAR
    assert spoken.read_bytes() == speech_for_text("hello there", seed=3)

    turns = tmp_path / "turns.wav"
    cli_main(["audio", "make", "--segments", "silence:600,speech:900,silence:900", "-o", str(turns)])
    capsys.readouterr()
    assert cli_main(["audio", "vad", str(turns), "--prefix-padding-ms", "0"]) == 0
    events = last_json(capsys)["events"]
    assert [event["type"] for event in events] == ["speech_started", "speech_stopped"]
    assert abs(events[0]["boundary_ms"] - 600) <= 30 and abs(events[1]["boundary_ms"] - 1500) <= 40


def test_cli_rejects_bad_segments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["audio", "make", "--segments", "speech:x", "-o", str(tmp_path / "x.wav")]) == 2
    assert "bad segment" in capsys.readouterr().err
    assert not (tmp_path / "x.wav").exists()
