"""`duplicate-event`: the next server event of a type is sent twice, identical (same `event_id`), as a
relay that redelivers would. A stage on the carrier's outbound chain, so both copies are recorded as sent."""

from __future__ import annotations

import copy
from typing import Any

from ..schema import Int, Obj
from ..stages import Timed
from .kind import FaultKind, Target
from .timing import EventType


class DuplicateEvent:
    """Each of the next `count` events of `event_type` passes twice; everything else passes as is."""

    name = "duplicate-event"

    def __init__(self, event_type: str, count: int = 1) -> None:
        self.event_type = event_type
        self.remaining = count

    def admit(self, due: float, event: dict[str, Any], now: float) -> list[Timed]:
        if self.remaining and event.get("type") == self.event_type:
            self.remaining -= 1
            return [(due, event), (due, copy.deepcopy(event))]
        return [(due, event)]

    def release(self, now: float) -> list[Timed]:
        return []  # it never holds


def duplicate_event(target: Target, params: dict[str, Any]) -> str:
    event_type, count = params["type"], params.get("count", 1)
    target.carrier.add_stage(DuplicateEvent(event_type, count))
    return f"the next {count} {event_type} event(s) each sent twice (same event_id)"


FAULTS = (
    FaultKind(
        "duplicate-event",
        "session",
        Obj({"type": EventType(), "count": Int(1, 1000)}, required=("type",)),
        duplicate_event,
        "the next `count` (1) server events of `type` each sent twice, identical (same event_id), as a "
        "redelivering relay would. Both copies are in the history; the checkers count a response id once, so "
        "what breaks is a client that does not dedupe by event_id (it plays or acts on a reply twice)",
    ),
)
