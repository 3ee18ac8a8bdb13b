"""The outbound chain: every server event passes through a carrier's ordered stages on its way to the wire.

Toxiproxy-style: each stage sees an event with the earliest loop time it may be sent and says what to pass
on — nothing (held), the event itself (perhaps later), or several (duplicated, or held events released).
The carrier sends what leaves the chain in order and never before the previous event's due time, so a delay
alone never reorders. An empty chain costs nothing per event.
"""

from __future__ import annotations

import random
from typing import Any, Protocol

Timed = tuple[float, dict[str, Any]]  # (earliest loop time it may be sent, the event)


class Stage(Protocol):
    name: str  # one stage per name on a carrier; adding a stage whose name is present replaces it

    def admit(self, due: float, event: dict[str, Any], now: float) -> list[tuple[float, dict[str, Any]]]:
        """An event on its way out with the earliest loop time it may be sent: what to pass on —
        nothing (held), itself (maybe later), several (duplicated, or held events released)."""

    def release(self, now: float) -> list[tuple[float, dict[str, Any]]]:
        """The stage is being removed: everything it still holds, in order (nothing is lost)."""


class Latency:
    """Every event `latency` seconds later, ± a uniform `jitter` (never earlier than it was due)."""

    name = "latency"

    def __init__(self, latency: float, jitter: float = 0.0, *, rng: random.Random | None = None) -> None:
        self.latency = latency
        self.jitter = jitter
        self.rng = rng or random.Random()

    @classmethod
    def seeded(cls, seed: int, conn_id: str, latency: float, jitter: float = 0.0) -> Latency:
        """Reproducible jitter: the same seed and connection draw the same delays."""
        return cls(latency, jitter, rng=random.Random(f"{seed}/{conn_id}/latency"))

    def admit(self, due: float, event: dict[str, Any], now: float) -> list[Timed]:
        return [(due + max(0.0, self.latency + self.rng.uniform(-self.jitter, self.jitter)), event)]

    def release(self, now: float) -> list[Timed]:
        return []  # it delays, it never holds


class HoldFirstDelta:
    """The next response's first audio delta held back `delay` s; the carrier's order holds what follows.

    It acts once: the first audio delta it sees is delayed, everything else (before and after) passes as is.
    """

    name = "hold-first-delta"

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.spent = False

    def admit(self, due: float, event: dict[str, Any], now: float) -> list[Timed]:
        if not self.spent and event["type"].endswith("audio.delta"):
            self.spent = True
            return [(due + self.delay, event)]
        return [(due, event)]

    def release(self, now: float) -> list[Timed]:
        return []
