"""Scenarios as data: what the simulator is, what the user says, which faults happen when, what must hold.

A scenario file (YAML) looks like::

    name: drop-mid-response
    description: The connection drops (1006) while the model is speaking.
    profile: openai                 # openai | openai-beta | azure
    transport: websocket            # or webrtc (the default client: reference, or reference-webrtc)
    time_scale: 1                   # divide every time below by this (see "Time compression")
    server: {max_session: 3600, token_ttl: 600, expiry_ending: both, idle_timeout: null,
             max_sessions_per_key: null, response_latency: 0, mcp_latency: 0, pacing: 1}
    duration: 12                    # seconds the client runs (its `end_at`)
    instructions: "Be brief."       # optional session instructions, tools: [...] optional
    user:                           # the user's side, handed to the client (clients/README.md)
      - {at: 0.5, say: "My name is Alice."}
      - {at: 6, say: "What is my name?", mode: audio}
    faults:                         # the timeline
      - {at: 2.0, kind: drop}                                        # seconds after the client first calls
      - {after: {event: response.created, nth: 2, delay: 0.3}, kind: close, params: {code: 1011}}
      - {at: 5, kind: toxic, params: {type: latency, attributes: {latency: 300, jitter: 50}, duration: 4}}

A `page-reload` step is the user reloading the page of a browser client (`client: browser`): the harness
sends the client process SIGUSR1 (the built-in `browser` client and `--client-cmd` programs; the other
built-in clients have no page, and the step is skipped for them, saying so). `client:` names the client a
scenario runs against when `rtsim run` is given none (default: the reference client of its transport).

A `toxic` step puts a Toxiproxy proxy between client and simulator for the whole run (embedded, or the
real one at TOXIPROXY_URL) and adds that toxic at its moment — `type`, `attributes`, `stream` (downstream
= simulator to client, the default), `toxicity` — removing it after `duration` seconds (else it stays).
    checks:                         # invariants over the recorded history
      - reconnected_within: {seconds: 5}
      - context_restored
      - answer: {turn: 1, contains: "Alice"}

Time compression: a scenario may be written in real-world time and run compressed. With `time_scale: 600`
a `max_session: 3600` cap becomes 6 s, and every `at`, `delay`, `duration`, token TTL and idle timeout
shrinks by the same factor, so the timeline keeps its shape. Check thresholds (a reconnect gap, a backoff)
are about the client's own wall-clock behaviour and are not scaled.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rtsim.simulator.faults import CATALOGUE
from rtsim.simulator.server import PROFILES
from rtsim.simulator.toxiproxy import TOXIC_TYPES

LIBRARY = Path(__file__).parent / "library"
SCALED_SERVER_KEYS = ("max_session", "token_ttl", "idle_timeout")
CLIENT_STEPS = ("page-reload",)  # faults the client process acts out, not the simulator
SERVER_KEYS = (
    *SCALED_SERVER_KEYS,
    "expiry_ending",
    "max_sessions_per_key",
    "response_latency",
    "mcp_latency",
    "pacing",
    "transcription_delay",
    "audio_start_delay",
    "ping_interval",
    "context_window",
    "models",
    "seed",
)


class ScenarioError(ValueError):
    """A scenario file that cannot run, with where the problem is."""


@dataclass(frozen=True)
class UserTurn:
    """One entry of the scenario's `user:` list; the runner hands these to the client (clients/README.md)."""

    at: float
    say: str
    mode: str = "text"


@dataclass(frozen=True)
class FaultStep:
    """One fault of the timeline: at `at` seconds, or `delay` after the nth server event of a type."""

    kind: str
    params: Mapping[str, Any] = field(default_factory=dict)
    at: float | None = None
    after_event: str | None = None
    nth: int = 1
    delay: float = 0.0

    def describe(self) -> str:
        when = (
            f"t={self.at:g}s"
            if self.at is not None
            else f"{self.delay:g}s after {self.after_event} #{self.nth}"
        )
        params = ",".join(f"{k}={v}" for k, v in self.params.items())
        return f"{self.kind}({params}) at {when}"


@dataclass(frozen=True)
class Check:
    name: str
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str = ""
    profile: str = "openai"
    transport: str = "websocket"
    server: Mapping[str, Any] = field(default_factory=dict)
    duration: float = 10.0
    user: tuple[UserTurn, ...] = ()
    faults: tuple[FaultStep, ...] = ()
    checks: tuple[Check, ...] = ()
    instructions: str | None = None
    tools: tuple[Mapping[str, Any], ...] = ()
    script: Mapping[str, Any] | None = None
    client: str | None = None  # the client run when none is named (None: the transport's reference)
    source: str = ""

    @property
    def needs_proxy(self) -> bool:
        return any(step.kind == "toxic" for step in self.faults)

    def client_document(self) -> dict[str, Any]:
        """The user's side, as the client interface (clients/README.md) reads it from RTSIM_SCENARIO."""
        document: dict[str, Any] = {
            "name": self.name,
            "model": "gpt-realtime",
            "turns": [{"at": t.at, "say": t.say, "mode": t.mode} for t in self.user],
            "end_at": self.duration,
        }
        if self.instructions is not None:
            document["instructions"] = self.instructions
        if self.tools:
            document["tools"] = [dict(tool) for tool in self.tools]
        if self.server.get("idle_timeout"):
            document["idle_timeout"] = self.server["idle_timeout"]  # the app knows its own configuration
        return document

    def model_script(self) -> dict[str, Any]:
        """The scripted model for this run: audio turns' transcripts are what the user says in them."""
        script = copy.deepcopy(dict(self.script or {}))
        spoken = [t.say for t in self.user if t.mode == "audio"]
        if spoken and "transcripts" not in script:
            script["transcripts"] = spoken
        return script


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ScenarioError(f"{where}: expected a non-negative number, got {value!r}")
    return float(value)


def from_dict(data: Mapping[str, Any], *, source: str = "") -> Scenario:
    """Build a scenario from plain data (what the YAML holds), applying time compression."""
    from .checkers import CHECKERS  # the checker registry names what a scenario may ask for

    where = source or data.get("name", "scenario")
    if not isinstance(data, Mapping) or not isinstance(data.get("name"), str):
        raise ScenarioError(f"{where}: a scenario needs a string `name`")
    known = {
        "name",
        "description",
        "profile",
        "transport",
        "time_scale",
        "server",
        "duration",
        "user",
        "faults",
        "checks",
        "instructions",
        "tools",
        "script",
        "client",
    }
    unknown = set(data) - known
    if unknown:
        raise ScenarioError(f"{where}: unknown keys {sorted(unknown)}")
    scale = _number(data.get("time_scale", 1), f"{where}: time_scale") or 1.0
    profile = data.get("profile", "openai")
    if profile not in PROFILES:
        raise ScenarioError(f"{where}: profile must be one of {sorted(PROFILES)}")
    transport = data.get("transport", "websocket")
    if transport not in ("websocket", "webrtc"):
        raise ScenarioError(f"{where}: transport must be websocket or webrtc")
    server = dict(data.get("server") or {})
    for key in server:
        if key not in SERVER_KEYS:
            raise ScenarioError(f"{where}: unknown server setting `{key}` (known: {', '.join(SERVER_KEYS)})")
    for key in SCALED_SERVER_KEYS:
        if server.get(key) is not None:
            server[key] = _number(server[key], f"{where}: server.{key}") / scale
    user = tuple(
        UserTurn(
            at=_number(t.get("at", 0), f"{where}: user[{i}].at") / scale,
            say=str(t["say"]),
            mode=t.get("mode", "text"),
        )
        for i, t in enumerate(data.get("user") or [])
    )
    faults = tuple(_fault(raw, i, scale, where) for i, raw in enumerate(data.get("faults") or []))
    checks = tuple(_check(raw, i, where, CHECKERS) for i, raw in enumerate(data.get("checks") or []))
    return Scenario(
        name=data["name"],
        description=str(data.get("description", "")),
        profile=profile,
        transport=transport,
        server=server,
        duration=_number(data.get("duration", 10), f"{where}: duration") / scale,
        user=user,
        faults=faults,
        checks=checks,
        instructions=data.get("instructions"),
        tools=tuple(data.get("tools") or ()),
        script=data.get("script"),
        client=_client_name(data.get("client"), where),
        source=source,
    )


def _client_name(value: Any, where: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise ScenarioError(f"{where}: client must be the name of a built-in client")
    return value


def _fault(raw: Any, index: int, scale: float, where: str) -> FaultStep:
    if not isinstance(raw, Mapping) or raw.get("kind") not in (*CATALOGUE, "toxic", *CLIENT_STEPS):
        raise ScenarioError(
            f"{where}: faults[{index}] needs a `kind` from the catalogue ({', '.join(CATALOGUE)}), `toxic` "
            f"or a client step ({', '.join(CLIENT_STEPS)})"
        )
    params = dict(raw.get("params") or {})
    if raw["kind"] == "toxic":
        if params.get("type") not in TOXIC_TYPES:
            raise ScenarioError(
                f"{where}: faults[{index}].params.type must be a toxic ({', '.join(TOXIC_TYPES)})"
            )
        if "duration" in params:
            params["duration"] = (
                _number(params["duration"], f"{where}: faults[{index}].params.duration") / scale
            )
    if "at" in raw:
        return FaultStep(raw["kind"], params, at=_number(raw["at"], f"{where}: faults[{index}].at") / scale)
    after = raw.get("after")
    if not isinstance(after, Mapping) or not isinstance(after.get("event"), str):
        raise ScenarioError(
            f"{where}: faults[{index}] needs `at: SECONDS` or `after: {{event: TYPE, nth: N}}`"
        )
    return FaultStep(
        raw["kind"],
        params,
        after_event=after["event"],
        nth=int(after.get("nth", 1)),
        delay=_number(after.get("delay", 0), f"{where}: faults[{index}].after.delay") / scale,
    )


def _check(raw: Any, index: int, where: str, known: Mapping[str, Any]) -> Check:
    name: Any = None
    params: Any = {}
    if isinstance(raw, str):
        name = raw
    elif isinstance(raw, Mapping) and len(raw) == 1:
        name, params = next(iter(raw.items()))
    if name not in known:
        raise ScenarioError(f"{where}: checks[{index}] must name a checker ({', '.join(known)})")
    return Check(name, dict(params or {}))


def load(path: str | Path) -> Scenario:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ScenarioError(f"{path}: {exc}") from None
    return from_dict(data, source=str(path))


def discover(paths: list[str]) -> list[Scenario]:
    """Scenario files named, or every *.yaml in the directories named (the built-in library by default)."""
    files: list[Path] = []
    for raw in paths or [str(LIBRARY)]:
        path = Path(raw)
        if path.is_dir():
            files.extend(sorted(path.rglob("*.yaml")))
        elif path.exists():
            files.append(path)
        elif named := sorted(LIBRARY.rglob(f"{raw}.yaml")):
            files.extend(named)
        else:
            raise ScenarioError(f"no scenario file or directory {raw!r}")
    return [load(f) for f in files]
