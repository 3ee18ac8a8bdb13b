"""When a fault happens: one model for the control API's `when`, fault plans' timing and the scenario nemesis.

A moment is one of three: *now*; *after* a delay from now; or right *at the nth server event* of a type,
counted from now (optionally a delay after that event). A moment is armed on a clock — a carrier (its
`call_later` / `after_event`), the event loop alone (no events to count), or an `EventCounter` fed from a
history — and returns a cancel function.

The three spellings of the same model:

    control API   when: absent | {"after_ms": N} | {"at_event": {"type": T, "nth": N}}
    fault plan    (none) | at=SECONDS | within=SECONDS (a seeded draw) | after_event=TYPE#N
    scenario      at: SECONDS | after: {event: T, nth: N, delay: SECONDS}
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from ..dialect import BETA_EVENT_NAMES
from ..protocol import SERVER_EVENT_TYPES, RealtimeError
from ..schema import Int, Obj, Spec, Str, check
from .kind import MAX_FAULT_SECONDS

Cancel = Callable[[], None]
Callback = Callable[[], Any]

# What `at_event` / `after_event` may name: every server event type, in either dialect.
EVENT_TYPES = SERVER_EVENT_TYPES | frozenset(BETA_EVENT_NAMES.values())
MAX_NTH = 1_000_000
REQUEST = Obj(
    {
        "after_ms": Int(0, int(MAX_FAULT_SECONDS * 1000)),
        "at_event": Obj({"type": Str(), "nth": Int(1, MAX_NTH)}, required=("type",)),
    }
)


def check_event_type(event_type: str, param: str) -> str:
    if event_type not in EVENT_TYPES:
        raise RealtimeError(
            f"Unknown server event type '{event_type}'. Faults can follow any event the server sends, "
            f"e.g. response.output_audio.delta.",
            code="invalid_value",
            param=param,
        )
    return event_type


@dataclass(frozen=True)
class EventType(Spec):
    """A fault parameter naming a server event type, checked as `at_event`'s type is."""

    def check(self, value: Any, path: str) -> Any:
        return check_event_type(Str().check(value, path), path)


@dataclass(frozen=True)
class When:
    """Now (no delay, no event); `delay` seconds from now; or right after the nth `event` from now (then
    `delay` seconds more, when given)."""

    delay: float | None = None
    event: str | None = None
    nth: int = 1

    @property
    def is_now(self) -> bool:
        return self.delay is None and self.event is None


NOW = When()


def after(seconds: float) -> When:
    """`seconds` from now (0 too: on the loop's next turn, not synchronously)."""
    return When(delay=seconds)


def at_event(event_type: str, nth: int = 1, delay: float | None = None) -> When:
    return When(delay=delay, event=event_type, nth=nth)


def from_request(when: dict[str, Any] | None) -> When:
    """The control API's `when`, checked; raises RealtimeError naming the bad part."""
    if when is None:
        return NOW
    when = check(REQUEST, when, "when")
    if len(when) != 1:
        raise RealtimeError(
            "when takes exactly one of after_ms or at_event.", code="invalid_value", param="when"
        )
    if "after_ms" in when:
        return after(when["after_ms"] / 1000)
    event = when["at_event"]
    return at_event(check_event_type(event["type"], "when.at_event.type"), event.get("nth", 1))


def parse_event_spec(value: Any, param: str) -> tuple[str, int]:
    """`TYPE#N` (or `TYPE`, N = 1): the nth server event of a type."""
    event_type, _, nth_text = str(value).partition("#")
    try:
        nth = int(nth_text) if nth_text else 1
    except ValueError:
        nth = 0
    if not 1 <= nth <= MAX_NTH:
        raise RealtimeError(
            f"{param} must be TYPE#N with N a whole number from 1 to {MAX_NTH}, got '{value}'",
            code="invalid_value",
            param=param,
        )
    return check_event_type(event_type, param), nth


class Clock(Protocol):
    """What a moment is armed on. A carrier is one: its callbacks are cancelled when it closes."""

    def call_later(self, delay: float, callback: Callback) -> Cancel: ...

    def after_event(self, event_type: str, nth: int, callback: Callback) -> Cancel: ...


def arm(when: When, clock: Clock, fire: Callback) -> Cancel:
    """Call `fire` at the moment `when` (now: before returning); the result cancels what is still pending."""
    if when.event is None:
        if when.delay is None:
            fire()
            return _nothing
        return clock.call_later(when.delay, fire)
    pending: list[Cancel] = []

    def reached() -> None:
        if when.delay is None:
            fire()
        else:
            pending.append(clock.call_later(when.delay, fire))

    pending.append(clock.after_event(when.event, when.nth, reached))

    def cancel() -> None:
        for each in pending:
            each()

    return cancel


def _nothing() -> None:
    return None


class LoopClock:
    """The event loop alone: delays only (server-wide there is no one stream of events to count)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    def call_later(self, delay: float, callback: Callback) -> Cancel:
        return self.loop.call_later(delay, callback).cancel

    def after_event(self, event_type: str, nth: int, callback: Callback) -> Cancel:
        raise RealtimeError("at_event applies to session faults only", code="invalid_value", param="when")


class EventCounter(LoopClock):
    """A clock over an event stream its owner feeds with `saw(type)`, e.g. every server event in a history.

    `after_event(type, nth)` fires right after the nth event of that type counted from the moment it is asked.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self.counts: Counter[str] = Counter()
        self._armed: list[tuple[str, int, Callback]] = []

    def saw(self, event_type: str) -> None:
        self.counts[event_type] += 1
        count = self.counts[event_type]
        for armed in [a for a in self._armed if a[0] == event_type and a[1] == count]:
            self._armed.remove(armed)
            armed[2]()

    def after_event(self, event_type: str, nth: int, callback: Callback) -> Cancel:
        armed = (event_type, self.counts[event_type] + nth, callback)
        self._armed.append(armed)

        def cancel() -> None:
            if armed in self._armed:
                self._armed.remove(armed)

        return cancel
