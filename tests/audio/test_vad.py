"""Tests for simulator.vad: accuracy against known speech boundaries, streaming invariants and API semantics.

Accuracy tolerances (asserted on `boundary_ms`, the detected onset / end of speech without padding or trailing
silence): ONSET_TOLERANCE_MS and END_TOLERANCE_MS below. Measured over 40 random 3-turn layouts per condition
(-20 dBFS speech; clean, white/pink noise at -45 and -35 dBFS): onset -9..+16 ms, end -40..+8 ms; the end
comes early in -35 dBFS noise, where the decaying tail of the last syllable sinks into the noise.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtsim.simulator.audio import (
    G711_RATE,
    SAMPLE_RATE,
    TestAudio,
    build_utterance,
    chunks,
    noise,
    silence,
    speech_like,
    to_pcm,
    ulaw_decode,
    ulaw_encode,
)
from rtsim.simulator.vad import FRAME_MS, VadEvent, VoiceActivityDetector, bench
from rtsim.simulator.vad import main as vad_main

ONSET_TOLERANCE_MS = 20
END_TOLERANCE_MS = 50


def run(
    pcm: bytes, detector: VoiceActivityDetector, chunk_sizes: Iterable[int] | None = None
) -> list[VadEvent]:
    """Feed pcm in 20 ms chunks (or in the given byte sizes, cycled), then flush."""
    events: list[VadEvent] = []
    if chunk_sizes is None:
        for chunk in chunks(pcm, 20, detector.rate):
            events += detector.feed(chunk)
    else:
        sizes = list(chunk_sizes)
        offset, index = 0, 0
        while offset < len(pcm):
            size = sizes[index % len(sizes)]
            events += detector.feed(pcm[offset : offset + size])
            offset, index = offset + size, index + 1
    return events + detector.flush()


def full(events: Sequence[VadEvent]) -> list[tuple[str, int, int, int]]:
    return [(event.kind, event.audio_ms, event.boundary_ms, event.decided_ms) for event in events]


def assert_matches_truth(events: Sequence[VadEvent], truth: TestAudio) -> None:
    kinds = [event.kind for event in events]
    assert kinds == ["speech_started", "speech_stopped"] * len(truth.speech_spans_ms), full(events)
    for (start, end), started, stopped in zip(truth.speech_spans_ms, events[::2], events[1::2], strict=True):
        assert abs(started.boundary_ms - start) <= ONSET_TOLERANCE_MS, (start, full(events))
        assert abs(stopped.boundary_ms - end) <= END_TOLERANCE_MS, (end, full(events))


TURNS = [("silence", 517), ("speech", 1233), ("silence", 777), ("speech", 641), ("silence", 1003)]
LONG_PAUSE = [("silence", 300), ("speech", 2000), ("silence", 4000), ("speech", 1500), ("silence", 900)]
SEVERAL = [
    ("silence", 400),
    ("speech", 900),
    ("silence", 700),
    ("speech", 2600),
    ("silence", 1200),
    ("speech", 350),
    ("silence", 650),
    ("speech", 1800),
    ("silence", 800),
]
STARTS_MID_SPEECH = [("speech", 1500), ("silence", 1000), ("speech", 800), ("silence", 700)]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(
    ("layout", "noise_dbfs", "noise_color"),
    [
        pytest.param(TURNS, None, "white", id="clean"),
        pytest.param(TURNS, -45, "white", id="noise-45"),
        pytest.param(TURNS, -35, "white", id="noise-35"),
        pytest.param(TURNS, -35, "pink", id="pink-noise-35"),
        pytest.param(LONG_PAUSE, None, "white", id="long-pause-clean"),
        pytest.param(LONG_PAUSE, -35, "pink", id="long-pause-noise-35"),
        pytest.param(SEVERAL, -45, "white", id="several-utterances"),
        pytest.param(STARTS_MID_SPEECH, -35, "white", id="starts-mid-speech"),
    ],
)
def test_boundaries_match_the_truth(
    layout: list[tuple[str, int]], noise_dbfs: float | None, noise_color: str, seed: int
) -> None:
    truth = build_utterance(layout, seed=seed, noise_dbfs=noise_dbfs, noise_color=noise_color)  # type: ignore[arg-type]
    assert_matches_truth(run(truth.pcm, VoiceActivityDetector()), truth)


@pytest.mark.parametrize("chunk_sizes", [[960], [2], [333], [7 * 48 + 1, 1, 4001, 5]], ids=str)
def test_boundaries_with_odd_chunkings(chunk_sizes: list[int]) -> None:
    truth = build_utterance(TURNS, seed=4, noise_dbfs=-40)
    assert_matches_truth(run(truth.pcm, VoiceActivityDetector(), chunk_sizes), truth)


def test_g711_narrowband_audio_at_8khz() -> None:
    truth = build_utterance(TURNS, seed=5, noise_dbfs=-45, rate=G711_RATE)
    narrowband = to_pcm(ulaw_decode(ulaw_encode(truth.samples)))
    assert_matches_truth(run(narrowband, VoiceActivityDetector(rate=G711_RATE)), truth)


@settings(max_examples=30, deadline=None)
@given(sizes=st.lists(st.integers(min_value=1, max_value=3000), min_size=1, max_size=8))
def test_chunking_never_changes_the_events(sizes: list[int]) -> None:
    truth = build_utterance(
        [("silence", 300), ("speech", 700), ("silence", 600), ("speech", 400), ("silence", 550)],
        seed=6,
        noise_dbfs=-38,
        noise_color="pink",
    )
    reference = run(truth.pcm, VoiceActivityDetector(silence_duration_ms=300))
    assert len(reference) == 4
    assert full(run(truth.pcm, VoiceActivityDetector(silence_duration_ms=300), sizes)) == full(reference)


@pytest.mark.parametrize("level", [-60, -45, -35, -25])
@pytest.mark.parametrize("color", ["white", "pink"])
def test_no_events_in_pure_noise(level: float, color: str) -> None:
    for seed in range(3):
        background = noise(8000, level_dbfs=level, seed=seed, color=color)  # type: ignore[arg-type]
        assert run(to_pcm(background), VoiceActivityDetector()) == []


def test_no_events_in_digital_silence() -> None:
    detector = VoiceActivityDetector()
    assert run(to_pcm(silence(5000)), detector) == []
    assert detector.audio_ms == 5000


def test_a_click_is_not_a_turn() -> None:
    audio = silence(1500)
    audio[12_050:12_150] = 20000  # a 4 ms pop inside one 10 ms frame
    assert run(to_pcm(audio), VoiceActivityDetector()) == []


def test_pauses_shorter_than_silence_duration_do_not_split_a_turn() -> None:
    truth = build_utterance(
        [("silence", 500), ("speech", 800), ("silence", 300), ("speech", 800), ("silence", 900)],
        seed=7,
        noise_dbfs=-45,
    )
    assert len(run(truth.pcm, VoiceActivityDetector(silence_duration_ms=500))) == 2
    assert len(run(truth.pcm, VoiceActivityDetector(silence_duration_ms=200))) == 4


def test_long_continuous_speech_is_one_turn() -> None:
    truth = build_utterance([("silence", 500), ("speech", 15000), ("silence", 700)], seed=8, noise_dbfs=-35)
    events = run(truth.pcm, VoiceActivityDetector(silence_duration_ms=200))
    assert [event.kind for event in events] == ["speech_started", "speech_stopped"]


# --- the offsets the API reports ----------------------------------------------------------------------------


def test_audio_start_includes_prefix_padding_and_audio_end_includes_silence_duration() -> None:
    truth = build_utterance([("silence", 1000), ("speech", 1000), ("silence", 1200)], seed=9)
    started, stopped = run(truth.pcm, VoiceActivityDetector(prefix_padding_ms=300, silence_duration_ms=500))
    assert started.kind == "speech_started" and stopped.kind == "speech_stopped"
    assert started.audio_ms == started.boundary_ms - 300
    assert abs(started.audio_ms - 700) <= ONSET_TOLERANCE_MS
    assert stopped.audio_ms == stopped.decided_ms == stopped.boundary_ms + 500
    assert abs(stopped.audio_ms - 2500) <= END_TOLERANCE_MS
    # The event fires as soon as the onset is confirmed, not at the end of the audio.
    assert started.boundary_ms < started.decided_ms <= started.boundary_ms + 3 * FRAME_MS


def test_silence_duration_is_rounded_up_to_whole_frames() -> None:
    truth = build_utterance([("silence", 400), ("speech", 600), ("silence", 900)], seed=10)
    events = run(truth.pcm, VoiceActivityDetector(silence_duration_ms=205))
    assert events[1].audio_ms - events[1].boundary_ms == 210


def test_prefix_padding_is_clamped_to_the_start_of_audio() -> None:
    truth = build_utterance([("silence", 100), ("speech", 600), ("silence", 700)], seed=11)
    started = run(truth.pcm, VoiceActivityDetector(prefix_padding_ms=300))[0]
    assert started.audio_ms == 0 and abs(started.boundary_ms - 100) <= ONSET_TOLERANCE_MS


def test_prefix_padding_does_not_reach_into_the_previous_turn() -> None:
    # The second turn starts 150 ms after the first was committed (end + 500 ms silence).
    truth = build_utterance(
        [("silence", 400), ("speech", 700), ("silence", 650), ("speech", 600), ("silence", 700)], seed=12
    )
    _, first_stop, second_start, _ = run(truth.pcm, VoiceActivityDetector(prefix_padding_ms=300))
    assert second_start.audio_ms == first_stop.audio_ms
    assert second_start.boundary_ms - 300 < first_stop.audio_ms


def test_event_equality_is_on_the_wire_fields() -> None:
    assert VadEvent("speech_started", 700, boundary_ms=1000, decided_ms=1020) == VadEvent(
        "speech_started", 700
    )
    assert VadEvent("speech_started", 700) != VadEvent("speech_stopped", 700)


# --- streaming state ----------------------------------------------------------------------------------------


def test_audio_ms_counts_whole_samples_across_odd_byte_chunks() -> None:
    detector = VoiceActivityDetector()
    detector.feed(b"\x00" * 47)  # 23 samples and half of one
    assert detector.audio_ms == 0
    detector.feed(b"\x00")
    assert detector.audio_ms == 1
    detector.feed(bytes(24 * 2 * 999))
    assert detector.audio_ms == 1000
    assert detector.feed(b"") == []


def test_in_speech_follows_the_turn() -> None:
    detector = VoiceActivityDetector(silence_duration_ms=300)
    detector.feed(to_pcm(silence(500)))
    assert not detector.in_speech
    assert [event.kind for event in detector.feed(to_pcm(speech_like(600, seed=1)))] == ["speech_started"]
    assert detector.in_speech
    assert [event.kind for event in detector.feed(to_pcm(silence(400)))] == ["speech_stopped"]
    assert not detector.in_speech


def test_flush_closes_an_open_turn_at_the_end_of_audio() -> None:
    detector = VoiceActivityDetector()
    detector.feed(to_pcm(silence(300)))
    events = detector.feed(to_pcm(speech_like(700, seed=2)))
    assert [event.kind for event in events] == ["speech_started"]
    detector.feed(b"\x00" * 101)  # a partial frame and an odd byte: counted in audio_ms, not analysed
    (stopped,) = detector.flush()
    assert stopped.kind == "speech_stopped" and stopped.audio_ms == detector.audio_ms == 1002
    assert abs(stopped.boundary_ms - 1000) <= END_TOLERANCE_MS
    assert detector.flush() == [] and not detector.in_speech


def test_reset_keeps_the_time_base_and_starts_a_new_buffer() -> None:
    detector = VoiceActivityDetector(prefix_padding_ms=300)
    detector.feed(to_pcm(silence(1000)))
    detector.feed(to_pcm(speech_like(400, seed=3)))
    assert detector.in_speech
    detector.reset()  # input_audio_buffer.clear mid-turn
    assert not detector.in_speech and detector.audio_ms == 1400
    events = run(to_pcm(np.concatenate([silence(100), speech_like(500, seed=4), silence(600)])), detector)
    assert [event.kind for event in events] == ["speech_started", "speech_stopped"]
    assert abs(events[0].boundary_ms - 1500) <= ONSET_TOLERANCE_MS
    assert events[0].audio_ms == 1400  # the padding stops at the cleared buffer's start


def test_reset_without_keep_time_starts_over() -> None:
    detector = VoiceActivityDetector()
    detector.feed(to_pcm(noise(1000, level_dbfs=-35, seed=1)))
    detector.reset(keep_time=False)
    assert detector.audio_ms == 0 and detector.noise_floor_dbfs is None


def test_start_ms_offsets_every_event() -> None:
    truth = build_utterance([("silence", 500), ("speech", 700), ("silence", 700)], seed=13)
    plain = run(truth.pcm, VoiceActivityDetector())
    shifted = run(truth.pcm, VoiceActivityDetector(start_ms=60_000))
    assert [(e.audio_ms + 60_000, e.boundary_ms + 60_000) for e in plain] == [
        (e.audio_ms, e.boundary_ms) for e in shifted
    ]


def test_noise_floor_tracks_the_background() -> None:
    detector = VoiceActivityDetector()
    detector.feed(to_pcm(noise(3000, level_dbfs=-42, seed=2)))
    assert detector.noise_floor_dbfs is not None and -45 <= detector.noise_floor_dbfs <= -41


# --- threshold and configuration ----------------------------------------------------------------------------


def count_turns(truth: TestAudio, threshold: float) -> int:
    return sum(
        event.kind == "speech_started" for event in run(truth.pcm, VoiceActivityDetector(threshold=threshold))
    )


def test_higher_threshold_is_less_sensitive() -> None:
    quiet = build_utterance([("silence", 600), ("speech", 1200), ("silence", 800)], seed=14, speech_dbfs=-45)
    assert count_turns(quiet, 0.5) == 1
    assert count_turns(quiet, 0.95) == 0
    noisy = build_utterance([("silence", 600), ("speech", 1200), ("silence", 800)], seed=14, noise_dbfs=-35)
    assert count_turns(noisy, 0.5) == 1
    assert count_turns(noisy, 1.0) == 0
    whisper = build_utterance(
        [("silence", 600), ("speech", 1200), ("silence", 800)], seed=14, speech_dbfs=-57
    )
    assert count_turns(whisper, 0.5) == 0
    assert count_turns(whisper, 0.1) == 1


def test_configure_changes_settings_midstream_and_validates() -> None:
    detector = VoiceActivityDetector(silence_duration_ms=500)
    detector.feed(to_pcm(np.concatenate([silence(400), speech_like(500, seed=5)])))
    detector.configure(silence_duration_ms=200)
    (stopped,) = detector.feed(to_pcm(silence(300)))
    assert stopped.audio_ms - stopped.boundary_ms == 200
    with pytest.raises(ValueError):
        detector.configure(threshold=1.5)
    with pytest.raises(ValueError):
        VoiceActivityDetector(prefix_padding_ms=-1)


# --- benchmark ----------------------------------------------------------------------------------------------


def test_bench_reports_costs(capsys: pytest.CaptureFixture[str]) -> None:
    figures = bench(4)
    assert figures["vad_audio_seconds"] == 4.0 and figures["vad_events"] >= 1
    assert 0 < figures["vad_cpu_us_per_audio_second"] < 20_000  # ~300 us measured; 2% of a core is the alarm
    assert 0 < figures["speech_for_text_5s_ms"] < 100
    assert vad_main(["--seconds", "1"]) == 0
    assert '"vad_cpu_us_per_audio_second"' in capsys.readouterr().out


def test_rate_constant_is_the_realtime_pcm16_rate() -> None:
    assert SAMPLE_RATE == 24000 and VoiceActivityDetector().rate == SAMPLE_RATE
