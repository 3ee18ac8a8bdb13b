"""Engine and schema helpers: a session on a fake clock, run to idle, the SDK's event validators."""

from __future__ import annotations

import functools
from typing import Any

from pydantic import TypeAdapter

from rtsim.simulator.engine import Limits, Session
from rtsim.simulator.model import ScriptedModel
from rtsim.simulator.protocol import IdFactory

WALL = 1_750_000_000.0


@functools.cache
def ga_adapter() -> TypeAdapter[Any]:
    from openai.types.realtime import RealtimeServerEvent

    return TypeAdapter(RealtimeServerEvent)


@functools.cache
def beta_adapter() -> TypeAdapter[Any]:
    from openai.types.beta.realtime import RealtimeServerEvent

    return TypeAdapter(RealtimeServerEvent)


def validate_ga(event: dict[str, Any]) -> Any:
    return ga_adapter().validate_python(event)


def validate_beta(event: dict[str, Any]) -> Any:
    return beta_adapter().validate_python(event)


def make_session(
    *, limits: Limits | None = None, model: ScriptedModel | None = None, **kwargs: Any
) -> Session:
    session = Session(
        ids=IdFactory.seeded(0, "test"),
        model=model or ScriptedModel(),
        now=0.0,
        wall=WALL,
        limits=limits or Limits(pacing=0.0),
        **kwargs,
    )
    session.start(0.0)
    return session


def run_until_idle(session: Session, start: float = 0.0, horizon: float = 60.0) -> float:
    """Advance engine time deadline by deadline (not past the session cap); returns the time reached."""
    now = start
    while True:
        deadline = session.next_deadline()
        if deadline is None or deadline > horizon or deadline >= session.deadline:
            return now
        now = max(now, deadline)
        session.advance(now)


def user_text(text: str) -> dict[str, Any]:
    return {
        "type": "conversation.item.create",
        "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]},
    }
