"""`reorder-events`: the next N server events are delivered in another order (never their own order).

A stage on the carrier's outbound chain holds the next N events and lets them go together, permuted; the
history records them in the order they were actually sent. The permutation is drawn from the server seed,
the session id and how many events the session had been sent, so a run with the same seed reorders alike.
"""

from __future__ import annotations

import random
from typing import Any

from ..schema import Int, Obj
from ..stages import Timed
from .kind import FaultKind, Target

MIN_COUNT, MAX_COUNT, DEFAULT_COUNT = 2, 20, 3  # fewer than 2 cannot be reordered


def shuffled(size: int, rng: random.Random) -> list[int]:
    """A permutation of range(size) that is not the identity (size >= 2)."""
    order = list(range(size))
    rng.shuffle(order)
    if order == sorted(order):
        order = order[1:] + order[:1]
    return order


class ReorderEvents:
    """Holds the next `count` events, then passes them on together in a shuffled order.

    Events held when the stage is removed go on in their own order (nothing is lost).
    """

    name = "reorder-events"

    def __init__(self, count: int, rng: random.Random) -> None:
        self.count = count
        self.rng = rng
        self.held: list[Timed] = []
        self.spent = False

    def admit(self, due: float, event: dict[str, Any], now: float) -> list[Timed]:
        if self.spent:
            return [(due, event)]
        self.held.append((due, event))
        if len(self.held) < self.count:
            return []
        self.spent = True
        held, self.held = self.held, []
        latest = max(d for d, _ in held)  # none goes out before the last of them was due
        return [(latest, held[i][1]) for i in shuffled(len(held), self.rng)]

    def release(self, now: float) -> list[Timed]:
        held, self.held = self.held, []
        return held


def reorder_events(target: Target, params: dict[str, Any]) -> str:
    carrier = target.carrier
    count = params.get("count", DEFAULT_COUNT)
    sent = sum(carrier.sent_counts.values())
    rng = random.Random(f"{carrier.seed}/{carrier.session.id}/reorder-events/{sent}")
    carrier.add_stage(ReorderEvents(count, rng))
    return f"the next {count} server events delivered out of order"


FAULTS = (
    FaultKind(
        "reorder-events",
        "session",
        Obj({"count": Int(MIN_COUNT, MAX_COUNT)}),
        reorder_events,
        f"the next `count` ({DEFAULT_COUNT}; {MIN_COUNT}-{MAX_COUNT}) server events held, then delivered "
        "together in another order (seeded from the session; never their own order). The history records "
        "the order sent. no_lost_turns and no_duplicate_responses still count the turn (they follow a user "
        "item and its response.done, which stay in order unless both fall in the window); what it tests "
        "is a client that assumes order, e.g. a delta before its output item was added",
    ),
)
