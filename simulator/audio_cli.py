"""`rtsim audio {make,say,vad,bench}`: synthesize test audio, run the VAD over a WAV file, benchmark both.

The command line sits above both `audio` and `vad` (the detector is built on the audio kit), so neither of
them imports the other's command-line code.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Literal

import numpy as np

from rtsim.simulator.audio import (
    G711_RATE,
    SAMPLE_RATE,
    alaw_encode,
    build_utterance,
    chunks,
    ms_for_samples,
    parse_segments,
    read_wav,
    speech_for_text,
    to_pcm,
    to_samples,
    ulaw_encode,
    write_wav,
)
from rtsim.simulator.vad import VoiceActivityDetector, bench

AudioFormat = Literal["wav", "pcm16", "ulaw", "alaw"]
_FORMAT_BY_SUFFIX: dict[str, AudioFormat] = {
    ".wav": "wav",
    ".pcm": "pcm16",
    ".raw": "pcm16",
    ".ulaw": "ulaw",
    ".ul": "ulaw",
    ".mulaw": "ulaw",
    ".alaw": "alaw",
    ".al": "alaw",
}


def _output_format(args: argparse.Namespace) -> AudioFormat:
    if args.format:
        return args.format
    return _FORMAT_BY_SUFFIX.get(Path(args.output).suffix.lower(), "wav")


def _write_audio(path: str, samples: np.ndarray, rate: int, audio_format: AudioFormat) -> None:
    """Write samples (already at G711_RATE for the G.711 formats) in the requested container/codec."""
    if audio_format == "wav":
        write_wav(path, samples, rate)
    elif audio_format == "pcm16":
        Path(path).write_bytes(to_pcm(samples))
    elif audio_format == "ulaw":
        Path(path).write_bytes(ulaw_encode(samples))
    else:
        Path(path).write_bytes(alaw_encode(samples))


def _rate_for(args: argparse.Namespace, audio_format: AudioFormat) -> int:
    return G711_RATE if audio_format in ("ulaw", "alaw") else args.rate


def _command_make(args: argparse.Namespace) -> int:
    audio_format = _output_format(args)
    rate = _rate_for(args, audio_format)
    try:
        segments = parse_segments(args.segments)
    except ValueError as exc:
        print(f"rtsim audio make: {exc}", file=sys.stderr)
        return 2
    audio = build_utterance(
        segments, seed=args.seed, noise_dbfs=args.noise_dbfs, rate=rate, speech_dbfs=args.speech_dbfs
    )
    _write_audio(args.output, audio.samples, rate, audio_format)
    print(
        json.dumps(
            {
                "path": args.output,
                "format": audio_format,
                "rate": rate,
                "duration_ms": audio.duration_ms,
                "speech_spans_ms": audio.speech_spans_ms,
            }
        )
    )
    return 0


def _command_say(args: argparse.Namespace) -> int:
    audio_format = _output_format(args)
    rate = _rate_for(args, audio_format)
    samples = to_samples(speech_for_text(args.text, seed=args.seed, rate=rate))
    _write_audio(args.output, samples, rate, audio_format)
    print(
        json.dumps(
            {
                "path": args.output,
                "format": audio_format,
                "rate": rate,
                "duration_ms": ms_for_samples(samples.size, rate),
            }
        )
    )
    return 0


def _command_vad(args: argparse.Namespace) -> int:
    pcm, rate = read_wav(args.input)
    detector = VoiceActivityDetector(
        threshold=args.threshold,
        prefix_padding_ms=args.prefix_padding_ms,
        silence_duration_ms=args.silence_duration_ms,
        rate=rate,
    )
    events = [event for chunk in chunks(pcm, 20, rate) for event in detector.feed(chunk)] + detector.flush()
    print(
        json.dumps(
            {
                "rate": rate,
                "duration_ms": detector.audio_ms,
                "events": [
                    {"type": event.kind, "audio_ms": event.audio_ms, "boundary_ms": event.boundary_ms}
                    for event in events
                ],
            }
        )
    )
    return 0


def _command_bench(args: argparse.Namespace) -> int:
    print(json.dumps(bench(args.seconds), indent=2))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `rtsim audio {make,say,vad,bench}`."""
    audio_parser = subparsers.add_parser("audio", help="synthesize test audio, run the VAD, benchmark")
    commands = audio_parser.add_subparsers(dest="audio_command", required=True)

    def add_output_options(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("-o", "--output", required=True, help="output file")
        parser.add_argument(
            "--format",
            choices=["wav", "pcm16", "ulaw", "alaw"],
            help="default: from the output suffix (.wav .pcm .raw .ulaw .alaw), else wav",
        )
        parser.add_argument(
            "--rate", type=int, default=SAMPLE_RATE, help="sample rate for wav/pcm16 (G.711: 8000)"
        )
        parser.add_argument("--seed", type=int, default=0)

    make = commands.add_parser(
        "make", help="build audio from segments; prints JSON with the true speech spans"
    )
    make.add_argument("--segments", required=True, help='e.g. "silence:500,speech:1200,silence:800"')
    make.add_argument("--noise-dbfs", type=float, default=None, help="background noise level, e.g. -40")
    make.add_argument("--speech-dbfs", type=float, default=-20.0, help="speech RMS level (default -20)")
    add_output_options(make)
    make.set_defaults(func=_command_make)

    say = commands.add_parser("say", help="speech-like audio whose duration follows the text")
    say.add_argument("text")
    add_output_options(say)
    say.set_defaults(func=_command_say)

    vad = commands.add_parser(
        "vad", help="run the server VAD over a 16-bit WAV file; prints the events as JSON"
    )
    vad.add_argument("input")
    vad.add_argument("--threshold", type=float, default=0.5)
    vad.add_argument("--prefix-padding-ms", type=int, default=300)
    vad.add_argument("--silence-duration-ms", type=int, default=500)
    vad.set_defaults(func=_command_vad)

    bench_parser = commands.add_parser("bench", help="CPU cost of the VAD and of reply synthesis")
    bench_parser.add_argument(
        "--seconds", type=float, default=60.0, help="seconds of audio to push through the VAD"
    )
    bench_parser.set_defaults(func=_command_bench)
