"""Plumbing every client shares: the environment, the scenario, the turn schedule, the JSON log, events.

The interface a client implements is described in `clients/README.md`; this module is its Python side.
Nothing here decides *how* a client behaves under failure — that is what the clients differ in.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import os
import ssl
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TextIO

from rtsim.clients import tls

EXIT_OK = 0  # end_at reached and the conversation closed gracefully
EXIT_FATAL = 1  # an outcome the client gave up on (refused credentials, retries exhausted, ...)
EXIT_USAGE = 2  # the environment or the scenario file is unusable

TurnMode = Literal["text", "audio"]
AUDIO_CHUNK_MS = 20  # a microphone callback's worth of audio per input_audio_buffer.append
# Silence streamed after each spoken turn, longer than server VAD's default silence_duration_ms (500 ms),
# so the server hears the end of the turn without the client ever committing by hand.
TRAILING_SILENCE_MS = 800
BYTES_PER_MS = 48  # pcm16 mono at the Realtime API's 24 kHz (rtsim.simulator.audio.SAMPLE_RATE)


class UsageError(Exception):
    """The environment or scenario is unusable: the client exits EXIT_USAGE without connecting."""


# ---- the scenario ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScheduledTurn:
    """One user turn as the client schedules it: its place in time order, when it is due, what and how."""

    index: int
    at: float  # seconds since the client started
    say: str
    mode: TurnMode = "text"


@dataclass(frozen=True)
class ClientScenario:
    """The scenario as a client reads it from RTSIM_SCENARIO: the user's turns and the app's session setup.

    Not the harness's `rtsim.scenarios.spec.Scenario` (faults, checks, server settings): a client only ever
    sees this JSON side of it (clients/README.md).
    """

    name: str
    model: str
    turns: tuple[ScheduledTurn, ...]
    end_at: float
    instructions: str | None = None
    tools: tuple[dict[str, Any], ...] = ()
    # The service's activity idle timeout, as the app configured it (streaming-session rules); None: none.
    idle_timeout: float | None = None

    def session_config(self) -> dict[str, Any]:
        """The GA session fields the scenario fixes (for session.update or a client secret's `session`)."""
        config: dict[str, Any] = {"type": "realtime"}
        if self.instructions is not None:
            config["instructions"] = self.instructions
        if self.tools:
            config["tools"] = [dict(tool) for tool in self.tools]
        return config


def parse_scenario(data: Any) -> ClientScenario:
    """Validate a scenario document (see clients/README.md); turns are ordered by time."""
    if not isinstance(data, dict):
        raise UsageError("the scenario must be a JSON object")
    name, model, end_at = data.get("name"), data.get("model"), data.get("end_at")
    if not isinstance(name, str) or not isinstance(model, str) or not model:
        raise UsageError("the scenario needs a string 'name' and a non-empty string 'model'")
    if not _is_time(end_at):
        raise UsageError("'end_at' must be a non-negative number of seconds")
    raw_turns = data.get("turns")
    if not isinstance(raw_turns, list):
        raise UsageError("'turns' must be a list")
    turns: list[ScheduledTurn] = []
    for position, raw in enumerate(raw_turns):
        if not isinstance(raw, dict) or not _is_time(raw.get("at")) or not isinstance(raw.get("say"), str):
            raise UsageError(f"turns[{position}] needs a numeric 'at' >= 0 and a string 'say'")
        mode = raw.get("mode", "text")
        if mode not in ("text", "audio"):
            raise UsageError(f"turns[{position}].mode must be 'text' or 'audio', not {mode!r}")
        turns.append(ScheduledTurn(index=0, at=float(raw["at"]), say=raw["say"], mode=mode))
    turns.sort(key=lambda turn: turn.at)  # stable: equal times keep the file's order
    indexed = tuple(
        ScheduledTurn(index=i, at=turn.at, say=turn.say, mode=turn.mode) for i, turn in enumerate(turns)
    )
    instructions = data.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise UsageError("'instructions' must be a string")
    tools = data.get("tools") or []
    if not isinstance(tools, list) or not all(isinstance(tool, dict) for tool in tools):
        raise UsageError("'tools' must be a list of objects")
    return ClientScenario(
        name=name,
        model=model,
        turns=indexed,
        end_at=float(end_at),
        instructions=instructions,
        tools=tuple(tools),
        idle_timeout=float(data["idle_timeout"]) if _is_time(data.get("idle_timeout")) else None,
    )


def _is_time(value: Any) -> bool:
    return (
        isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value >= 0
    )


def load_scenario(path: str) -> ClientScenario:
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except OSError as exc:
        raise UsageError(f"cannot read the scenario {path!r}: {exc.strerror}") from None
    except ValueError as exc:
        raise UsageError(f"the scenario {path!r} is not valid JSON: {exc}") from None
    return parse_scenario(data)


# ---- the environment -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClientEnv:
    """What the harness hands a client: where the simulator is, the run's key, the scenario, the knobs."""

    base_url: str
    api_key: str
    scenario: ClientScenario
    seed: int | None
    raw: Mapping[str, str] = field(repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ClientEnv:
        missing = [
            name for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "RTSIM_SCENARIO") if not env.get(name)
        ]
        if missing:
            raise UsageError(f"missing environment: {', '.join(missing)}")
        seed_text = env.get("RTSIM_SEED")
        try:
            seed = int(seed_text) if seed_text else None
        except ValueError:
            raise UsageError(f"RTSIM_SEED must be an integer, not {seed_text!r}") from None
        return cls(
            base_url=env["OPENAI_BASE_URL"].rstrip("/"),
            api_key=env["OPENAI_API_KEY"],
            scenario=load_scenario(env["RTSIM_SCENARIO"]),
            seed=seed,
            raw=env,
        )

    def knob(self, name: str, default: float) -> float:
        """A numeric tuning knob from the environment (documented in clients/README.md)."""
        text = self.raw.get(name)
        if not text:
            return default
        try:
            value = float(text)
        except ValueError:
            raise UsageError(f"{name} must be a number, not {text!r}") from None
        if not math.isfinite(value) or value < 0:
            raise UsageError(f"{name} must be a finite number >= 0, not {text!r}")
        return value

    @property
    def tls_context(self) -> ssl.SSLContext | None:
        """The TLS context for the simulator (its CA from SSL_CERT_FILE); None when it speaks plain HTTP."""
        return tls.context_for(self.base_url, self.raw)

    def realtime_url(self) -> str:
        """The WebSocket URL the official SDK would build: http→ws, https→wss, + /realtime?model=."""
        base = self.base_url
        if base.startswith("https://"):
            base = "wss://" + base[len("https://") :]
        elif base.startswith("http://"):
            base = "ws://" + base[len("http://") :]
        return f"{base}/realtime?model={self.scenario.model}"


# ---- the JSON log ----------------------------------------------------------------------------------------


class JsonLog:
    """One JSON object per line on stdout: `t` (seconds since the client started), `client`, `event`, fields.

    For humans reading a run; the checkers judge the simulator's own history, never this log.
    """

    def __init__(self, client: str, out: TextIO | None = None) -> None:
        self.client = client
        self.out = out
        self.started = time.monotonic()

    def __call__(self, event: str, **fields: Any) -> None:
        entry = {
            "t": round(time.monotonic() - self.started, 3),
            "client": self.client,
            "event": event,
            **fields,
        }
        out = self.out if self.out is not None else sys.stdout
        out.write(json.dumps(entry, separators=(",", ":"), default=str) + "\n")
        out.flush()


# ---- the turn schedule -----------------------------------------------------------------------------------


class TurnSchedule:
    """The scenario's turns, released at their times relative to the client's start (event-loop time)."""

    def __init__(self, turns: tuple[ScheduledTurn, ...], started_at: float) -> None:
        self.turns = turns
        self.started_at = started_at

    @classmethod
    def for_scenario(cls, scenario: ClientScenario, started_at: float) -> TurnSchedule:
        """The turns the user gets to say: a turn due after end_at never is."""
        return cls(tuple(turn for turn in scenario.turns if turn.at <= scenario.end_at), started_at)

    async def play(self) -> AsyncIterator[ScheduledTurn]:
        """Yield each turn when it is due; a consumer that falls behind gets overdue turns at once."""
        loop = asyncio.get_running_loop()
        for turn in self.turns:
            delay = self.started_at + turn.at - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            yield turn


# ---- events ----------------------------------------------------------------------------------------------


def message_item(role: str, text: str, item_id: str | None = None) -> dict[str, Any]:
    """A GA message item: user/system parts are `input_text`, assistant parts `output_text` (never 'text')."""
    part_type = "output_text" if role == "assistant" else "input_text"
    item: dict[str, Any] = {"type": "message", "role": role, "content": [{"type": part_type, "text": text}]}
    if item_id is not None:
        item["id"] = item_id
    return item


def create_item(item: dict[str, Any], previous_item_id: str | None = None) -> dict[str, Any]:
    event: dict[str, Any] = {"type": "conversation.item.create", "item": item}
    if previous_item_id is not None:
        event["previous_item_id"] = previous_item_id
    return event


def response_text(response: Mapping[str, Any]) -> str:
    """What the assistant said in a response: its message parts' transcripts (audio) or text."""
    pieces: list[str] = []
    for item in response.get("output") or ():
        if item.get("type") != "message":
            continue
        for part in item.get("content") or ():
            text = part.get("transcript") if part.get("transcript") is not None else part.get("text")
            if text:
                pieces.append(text)
    return " ".join(pieces)


def decoded_length(b64: str) -> int:
    """Bytes a base64 payload decodes to, without decoding it."""
    return len(b64) * 3 // 4 - b64.count("=", -2)


def utterance(text: str, seed: int | None) -> bytes:
    """The user saying `text`: speech-like pcm16 24 kHz audio, then enough silence for server VAD."""
    # Imported here: the test-audio kit (numpy) is a third of a text-only client's start-up.
    from rtsim.simulator import audio

    return audio.speech_for_text(text, seed=seed or 0) + audio.to_pcm(audio.silence(TRAILING_SILENCE_MS))


async def stream_utterance(pcm: bytes, send: Callable[[bytes], Awaitable[None]]) -> None:
    """Send audio like a microphone: AUDIO_CHUNK_MS chunks paced in real time."""
    from rtsim.simulator import audio

    await audio.stream(pcm, send, chunk_ms=AUDIO_CHUNK_MS)


def append_event(chunk: bytes) -> dict[str, Any]:
    return {"type": "input_audio_buffer.append", "audio": base64.b64encode(chunk).decode()}


def run_cli(main: Callable[[Mapping[str, str]], Awaitable[int]]) -> None:
    """`python -m rtsim.clients.<name>`: run `main(os.environ)` and exit with its code."""
    try:
        code = asyncio.run(main(os.environ))
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)
