"""Fault plans: a seeded, stateless description of chaos, e.g. "drop 2% of sessions at a random moment".

Grammar: entries separated by `;`, each `KIND[@PROBABILITY][:key=value,...]`, plus an optional `seed=N`.

    drop@2%:within=60              2% of sessions dropped at a random moment in their first 60 s
    close@10%:code=1011,at=5       10% closed with 1011 five seconds in
    stall@1%:within=30,seconds=10  1% stall for 10 s at a random moment in their first 30 s
    server-error:after_event=response.output_audio.delta#3
    expire-tokens:usable_for=300   (server-wide) tokens stop working 300 s after minting
    seed=42

Timing keys: `at=SECONDS` (fixed), `within=SECONDS` (uniform in [0, within)), `after_event=TYPE#N` (right
after the Nth server event of TYPE); none = at once. Every other key is a fault parameter.

Whether and when a session is hit depends only on (plan seed, entry, session id): no shared state, so one
plan gives the same decisions in every process, under load, and on a re-run with the same seed.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

from .faults import CATALOGUE, timing, validate
from .faults.kind import MAX_FAULT_SECONDS
from .protocol import RealtimeError

TIMING_KEYS = ("at", "within", "after_event")
# "At once" for a session: right after the session is announced, so the client always sees the session
# it was dealt the fault in.
OPENED = timing.at_event("session.created", 1)


@dataclass(frozen=True)
class PlanEntry:
    kind: str
    probability: float
    params: dict[str, Any]
    at: float | None = None
    within: float | None = None
    after_event: tuple[str, int] | None = None

    @property
    def scope(self) -> str:
        return CATALOGUE[self.kind].scope


@dataclass(frozen=True)
class Decision:
    """What a plan does to one session: a fault, and when (`delay` seconds, or after an event)."""

    entry: PlanEntry
    delay: float | None
    after_event: tuple[str, int] | None

    @property
    def when(self) -> timing.When:
        """An event wins over a delay; no timing (or at=0) is as soon as the session is announced."""
        if self.after_event is not None:
            return timing.at_event(*self.after_event)
        if not self.delay:
            return OPENED
        return timing.after(self.delay)


@dataclass(frozen=True)
class FaultPlan:
    entries: tuple[PlanEntry, ...]
    seed: int = 0
    text: str = field(default="", compare=False)

    def decisions(self, session_id: str) -> list[Decision]:
        """The session-scoped faults this plan deals to `session_id` (reproducible from seed and id)."""
        out = []
        for index, entry in enumerate(self.entries):
            if entry.scope != "session":
                continue
            rng = random.Random(f"{self.seed}/{index}/{session_id}")
            if rng.random() >= entry.probability:
                continue
            delay = entry.at
            if entry.within is not None:
                delay = (entry.at or 0.0) + rng.uniform(0.0, entry.within)
            out.append(Decision(entry, delay, entry.after_event))
        return out

    def server_entries(self) -> list[PlanEntry]:
        return [e for e in self.entries if e.scope == "server"]


def coerce(value: str) -> Any:
    lowered = value.lower()
    if lowered in ("true", "yes", "on"):
        return True
    if lowered in ("false", "no", "off"):
        return False
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def parse(text: str) -> FaultPlan:
    """Parse a plan, or raise RealtimeError naming the bad entry."""
    entries: list[PlanEntry] = []
    seed = 0
    for raw in (part.strip() for part in text.split(";")):
        if not raw:
            continue
        if raw.startswith("seed="):
            value = coerce(raw[5:])
            if not isinstance(value, int) or isinstance(value, bool):
                _bad(raw, "seed must be an integer")
            seed = value
            continue
        head, _, tail = raw.partition(":")
        kind, _, probability_text = head.partition("@")
        probability = 1.0
        if probability_text:
            try:
                probability = float(probability_text.rstrip("%")) / (
                    100 if probability_text.endswith("%") else 1
                )
            except ValueError:
                _bad(raw, f"bad probability '{probability_text}'")
            if not 0 <= probability <= 1:
                _bad(raw, "probability must be between 0 and 1 (or 0% and 100%)")
        params: dict[str, Any] = {}
        timing_values: dict[str, Any] = {}
        for pair in filter(None, (p.strip() for p in tail.split(","))):
            key, eq, value = pair.partition("=")
            if not eq:
                _bad(raw, f"expected key=value, got '{pair}'")
            (timing_values if key in TIMING_KEYS else params)[key.replace("-", "_")] = coerce(value)
        try:
            spec, checked = validate(kind.strip(), params)
            after_event = (
                timing.parse_event_spec(timing_values["after_event"], "after_event")
                if "after_event" in timing_values
                else None
            )
        except RealtimeError as exc:
            _bad(raw, exc.message)
        for key in ("at", "within"):
            value = timing_values.get(key)
            if value is not None and not _is_seconds(value):
                _bad(raw, f"{key} must be a number of seconds from 0 to {MAX_FAULT_SECONDS:g}, got '{value}'")
        if spec.scope == "server" and (probability != 1 or "within" in timing_values or after_event):
            _bad(raw, f"'{spec.name}' is server-wide: it takes at=SECONDS only (no @, within or after_event)")
        entries.append(
            PlanEntry(
                spec.name,
                probability,
                checked,
                timing_values.get("at"),
                timing_values.get("within"),
                after_event,
            )
        )
    return FaultPlan(tuple(entries), seed, text)


def _is_seconds(value: Any) -> bool:
    """A finite delay in range: NaN or an infinity would become a timer the event loop cannot order."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return (isinstance(value, int) or math.isfinite(value)) and 0 <= value <= MAX_FAULT_SECONDS


def _bad(entry: str, why: str) -> Any:
    raise RealtimeError(f"Invalid fault plan entry '{entry}': {why}", code="invalid_plan", param="plan")
