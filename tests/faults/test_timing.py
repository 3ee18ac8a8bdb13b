"""The one timing model: now, after a delay, at the nth event of a type from now — and its spellings."""

from __future__ import annotations

import asyncio

import pytest

from rtsim.simulator.faults import timing
from rtsim.simulator.protocol import RealtimeError


async def test_now_fires_before_arm_returns_and_a_delay_never_does() -> None:
    clock = timing.EventCounter(asyncio.get_running_loop())
    fired: list[str] = []
    timing.arm(timing.NOW, clock, lambda: fired.append("now"))
    timing.arm(timing.after(0), clock, lambda: fired.append("after 0"))
    assert fired == ["now"]
    await asyncio.sleep(0.01)
    assert fired == ["now", "after 0"]


async def test_the_nth_event_counts_from_the_moment_it_is_armed() -> None:
    clock = timing.EventCounter(asyncio.get_running_loop())
    fired: list[int] = []
    clock.saw("response.done")
    timing.arm(
        timing.at_event("response.done", 2), clock, lambda: fired.append(clock.counts["response.done"])
    )
    clock.saw("response.created")
    clock.saw("response.done")
    assert fired == []
    clock.saw("response.done")
    assert fired == [3]  # the second one after arming, right after it
    clock.saw("response.done")
    assert fired == [3]  # once


async def test_a_delay_after_the_event_and_cancelling_either_part() -> None:
    clock = timing.EventCounter(asyncio.get_running_loop())
    fired: list[str] = []
    timing.arm(timing.at_event("response.done", 1, delay=0.05), clock, lambda: fired.append("late"))
    cancel_waiting = timing.arm(timing.at_event("response.done", 1), clock, lambda: fired.append("never"))
    cancel_waiting()
    clock.saw("response.done")
    assert fired == []
    await asyncio.sleep(0.15)
    assert fired == ["late"]
    cancel_delayed = timing.arm(timing.at_event("error", 1, delay=0.05), clock, lambda: fired.append("no"))
    clock.saw("error")
    cancel_delayed()
    await asyncio.sleep(0.15)
    assert fired == ["late"]


def test_the_control_api_spelling() -> None:
    assert timing.from_request(None).is_now
    assert timing.from_request({"after_ms": 1500}) == timing.after(1.5)
    assert timing.from_request({"at_event": {"type": "response.done"}}) == timing.at_event("response.done", 1)
    for bad, param in (
        ({"after_ms": 1, "at_event": {"type": "response.done"}}, "when"),
        ({"at_event": {"type": "response.nope"}}, "when.at_event.type"),
        ({"at_event": {"type": "response.done", "nth": 0}}, "when.at_event.nth"),
    ):
        with pytest.raises(RealtimeError) as caught:
            timing.from_request(bad)
        assert caught.value.param == param


def test_the_plan_spelling_of_an_event() -> None:
    assert timing.parse_event_spec("response.output_audio.delta#3", "after_event") == (
        "response.output_audio.delta",
        3,
    )
    assert timing.parse_event_spec("response.done", "after_event") == ("response.done", 1)
    for bad in ("response.done#0", "response.done#x", "nope#1"):
        with pytest.raises(RealtimeError):
            timing.parse_event_spec(bad, "after_event")


async def test_server_wide_there_are_no_events_to_count() -> None:
    with pytest.raises(RealtimeError, match="session faults only"):
        timing.arm(
            timing.at_event("response.done"), timing.LoopClock(asyncio.get_running_loop()), lambda: None
        )
