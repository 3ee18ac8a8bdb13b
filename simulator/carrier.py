"""The carrier: the one piece of code between a transport (WebSocket, WebRTC) and a session engine.

Frames in → decoded → `session.receive`; engine deadlines → a loop timer → `advance`; what the engine
produced → the outbound chain of stages (see `stages.py`) → one writer task → the transport. The carrier
also keeps the event triggers and close callbacks the fault control plane hangs on a session, records
every event in and out, and writes the close record. A transport adapter supplies only the wire: how an
event is transmitted, how the end of the session is carried out, and how reading pauses for a stall.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter, deque
from collections.abc import Callable, Coroutine
from typing import Any

from .engine import Session
from .history import History, summarize_event
from .protocol import RealtimeError, decode_client_frame
from .stages import Stage, Timed

INTERNAL_ERROR_REASON = "internal server error"
# The slow-reader policy: once this much output is queued unsent because the client is not reading (not
# during a stall fault, which holds output on purpose), the session is closed with 1008 and a reason that
# says so. Per-session memory is then bounded by this, whatever the client does.
MAX_UNSENT_BYTES = 16 * 1024 * 1024
SLOW_READER_REASON = "client not reading: more than 16 MiB of events unsent"


def event_size(event: dict[str, Any]) -> int:
    """Roughly what an event weighs encoded: its top-level strings plus a constant for the rest."""
    return 256 + sum(len(value) for value in event.values() if isinstance(value, str))


def binary_frame_error(unit: str = "frame") -> RealtimeError:
    """What a client gets for a binary frame (or data-channel message): events are JSON text."""
    return RealtimeError(
        f"Binary {unit}s are not supported. Send each event as a JSON text {unit}.", code="invalid_event"
    )


class Carrier:
    """One live session on one transport, as the fault control plane sees it.

    Public: `transport`, `session`, `key_id`, `conn_id`, `loop`, `closed_by` (None while live),
    `sent_counts`, `triggers` ((event type, nth total, callback)), `on_close` (callbacks), and the methods
    below. Adapters override the `_transmit`, `_on_close_request`, `_pause_reading`/`_resume_reading` hooks.
    """

    transport: str = ""
    binary_unit = "frame"  # how the binary-frame error names what the client sent

    def __init__(
        self, *, session: Session, conn_id: str, key_id: str, history: History, seed: int = 0
    ) -> None:
        self.session = session
        self.conn_id = conn_id
        self.key_id = key_id
        self.history = history
        self.seed = seed
        self.loop = asyncio.get_running_loop()
        self.closed_by: str | None = None
        self.ended = False  # the carrier is done: no more events, callbacks ran
        self.sent_counts: Counter[str] = Counter()
        # (event type, nth, callback): fire the callback right after the nth event of that type is sent
        self.triggers: list[tuple[str, int, Callable[[], Any]]] = []
        self.on_close: list[Callable[[], Any]] = []  # e.g. cancel a fault plan's pending timers
        self.stages: list[Stage] = []
        self.outbound: deque[Timed] = deque()  # what left the chain, in send order (due 0.0: at once)
        self.outbound_bytes = 0  # approximate weight of `outbound` (the slow-reader policy counts it)
        self.wake = asyncio.Event()
        self.stalled = False
        self.done = asyncio.Event()
        self._timer: asyncio.TimerHandle | None = None
        self._later: set[asyncio.TimerHandle] = set()
        self._tasks: set[asyncio.Task[Any]] = set()

    # ---- the engine ---------------------------------------------------------------------------------

    def pump(self) -> None:
        """Move what the engine produced into the outbound chain; re-arm the timer for its next deadline."""
        if self.ended:
            return
        while events := self.session.drain():
            self._produced(events)
            if self.stages:
                self._through_chain([(0.0, e) for e in events], 0)
            else:
                self.outbound.extend((0.0, e) for e in events)
                self.outbound_bytes += sum(event_size(e) for e in events)
            self.wake.set()
            self._after_batch()
        if self.outbound_bytes > MAX_UNSENT_BYTES and not self.stalled and self.closed_by is None:
            self._on_slow_reader()
            return
        deadline = self.session.next_deadline()
        if self._timer is not None and (deadline is None or self._timer.when() != deadline):
            self._timer.cancel()
            self._timer = None
        if deadline is not None and self._timer is None:
            self._timer = self.loop.call_at(deadline, self._on_timer)
        if self.session.close_request is not None:
            self._on_close_request()

    def _on_timer(self) -> None:
        self._timer = None
        self.session.advance(self.loop.time())
        self.pump()

    def _produced(self, events: list[dict[str, Any]]) -> None:
        """Adapter hook: the engine produced these (before the chain); e.g. react to response.done."""

    def _after_batch(self) -> None:
        """Adapter hook: after a batch went into the chain; may make the engine produce more."""

    def _on_slow_reader(self) -> None:
        """Adapter hook: too much output unsent (see MAX_UNSENT_BYTES); end the session, saying why."""
        self.close_now(1008, SLOW_READER_REASON)

    def _on_close_request(self) -> None:
        """Adapter hook: the engine asked to end the session (`session.close_request`)."""
        self.wake.set()

    # ---- the outbound chain -------------------------------------------------------------------------

    def add_stage(self, stage: Stage) -> None:
        """Append a stage to the chain, or replace the stage of the same name where it stands."""
        for index, present in enumerate(self.stages):
            if present.name == stage.name:
                self.stages[index] = stage
                self._pass_on(present.release(self.loop.time()), index + 1)
                return
        self.stages.append(stage)

    def remove_stage(self, name: str) -> bool:
        """Take a stage out; what it still held goes on through the stages after it."""
        for index, stage in enumerate(self.stages):
            if stage.name == name:
                del self.stages[index]
                self._pass_on(stage.release(self.loop.time()), index)
                return True
        return False

    def _pass_on(self, items: list[Timed], start: int) -> None:
        if items:
            self._through_chain(items, start)
            self.wake.set()

    def _through_chain(self, items: list[Timed], start: int) -> None:
        now = self.loop.time()
        items = [(due or now, event) for due, event in items]
        for stage in self.stages[start:]:
            items = [out for due, event in items for out in stage.admit(due, event, now)]
        self.outbound.extend(items)
        self.outbound_bytes += sum(event_size(event) for _, event in items)

    async def writer(self) -> None:
        """Send what left the chain in order, each no earlier than due (so never before the one ahead).

        Whatever fails on the way (an event that cannot be encoded, a fault's callback) ends the session
        visibly: a `server_error` record, then a 1011 close — never a session that is listed but silent."""
        try:
            await self._write_loop()
        except Exception as exc:
            self.history.record(
                "server_error",
                session=self.session.id,
                conn=self.conn_id,
                key_id=self.key_id,
                where="send",
                error=f"{type(exc).__name__}: {exc}"[:500],
            )
            self.outbound.clear()
            self.outbound_bytes = 0
            self.session.close_request = (1011, INTERNAL_ERROR_REASON)
            await self._fail_closed()

    async def _fail_closed(self) -> None:
        """Adapter hook: the send path failed; end the session with 1011 (`session.close_request`)."""
        self._on_close_request()

    async def _write_loop(self) -> None:
        outbound, loop = self.outbound, self.loop
        while True:
            await self.wake.wait()
            self.wake.clear()
            while outbound and not self.stalled and self.closed_by is None:
                due, event = outbound[0]
                if due and (wait := due - loop.time()) > 0:
                    self.wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.wake.wait(), wait)
                    continue  # a stall, drop or close may have come meanwhile
                outbound.popleft()
                self.outbound_bytes -= event_size(event)
                try:
                    sent = await self._transmit(event)
                except (ConnectionError, RuntimeError):
                    return
                if sent:
                    self._count_sent(event["type"])
            if await self._drained():
                return

    async def _transmit(self, event: dict[str, Any]) -> bool:
        """Adapter hook: put one event on the wire (recording it); False if it could not go out now."""
        raise NotImplementedError

    async def _drained(self) -> bool:
        """Adapter hook: the outbound queue is empty (or paused); True ends the writer."""
        return False

    def _count_sent(self, event_type: str) -> None:
        self.sent_counts[event_type] += 1
        if self.triggers:
            count = self.sent_counts[event_type]
            for trigger in [t for t in self.triggers if t[0] == event_type and t[1] == count]:
                self.triggers.remove(trigger)
                trigger[2]()

    def after_event(self, event_type: str, nth: int, callback: Callable[[], Any]) -> Callable[[], None]:
        """Call `callback` right after the nth `event_type` sent from now on; returns a cancel function."""
        trigger = (event_type, self.sent_counts[event_type] + nth, callback)
        self.triggers.append(trigger)

        def cancel() -> None:
            if trigger in self.triggers:
                self.triggers.remove(trigger)

        return cancel

    # ---- client frames ------------------------------------------------------------------------------

    def receive_text(self, text: str, now: float, *, via: str | None = None) -> None:
        """A client text frame: decoded, recorded, to the engine; an invalid frame is an error event."""
        try:
            event = decode_client_frame(text)
        except RealtimeError as exc:
            self._record_in({"invalid_frame": text[:200]}, via)
            self.session.error(exc)
            return
        self._record_in(event, via)
        self._receive(event, now)

    def _receive(self, event: dict[str, Any], now: float) -> None:
        """Adapter hook: a decoded client event (an adapter may handle transport-only events itself)."""
        self.session.receive(event, now)

    def receive_binary(
        self, size: int, now: float, *, via: str | None = None, unit: str | None = None
    ) -> None:
        """A binary frame: recorded by size and answered with an error event."""
        self._record_in({"binary_bytes": size}, via)
        self.session.error(binary_frame_error(unit or self.binary_unit))
        self.session.advance(now)

    def _record_in(self, event: dict[str, Any], via: str | None) -> None:
        if via is None:
            self.history.event("in", self.session.id, event)
        else:
            self.history.record(
                "event", dir="in", session=self.session.id, event=summarize_event(event), via=via
            )

    # ---- faults' primitives -------------------------------------------------------------------------

    def close_now(self, code: int, reason: str, error: RealtimeError | None = None) -> None:
        """End the session now, after an optional error event; what is still queued never goes out."""
        self.session.drain()
        self.outbound.clear()
        self.outbound_bytes = 0
        if error is not None:
            self.session.error(error)
        self.session.close_request = (code, reason)
        self.pump()

    def stall(self, seconds: float | None = None) -> None:
        """Half-open: stop sending and stop reading; the transport stays open (optionally for `seconds`)."""
        self.stalled = True
        self._pause_reading()
        if seconds:
            self.call_later(seconds, self.unstall)

    def unstall(self) -> None:
        self.stalled = False
        self._resume_reading()
        self.wake.set()

    def _pause_reading(self) -> None:
        """Adapter hook: stop reading from the client."""

    def _resume_reading(self) -> None:
        """Adapter hook: read from the client again."""

    def call_later(self, delay: float, callback: Callable[[], Any]) -> Callable[[], None]:
        """`callback` after `delay` seconds unless the carrier closed first; returns a cancel function."""

        def fire() -> None:
            self._later.discard(handle)
            callback()

        handle = self.loop.call_later(delay, fire)
        self._later.add(handle)

        def cancel() -> None:
            handle.cancel()
            self._later.discard(handle)

        return cancel

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """A task owned by the carrier: cancelled when it closes."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ---- the end ------------------------------------------------------------------------------------

    def _finish(self) -> None:
        """The session is over: stop the timer and owned timers, run the close callbacks (once)."""
        if self.ended:
            return
        self.ended = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for handle in list(self._later):
            handle.cancel()
        self._later.clear()
        for callback in self.on_close:
            callback()

    def _cancel_tasks(self) -> None:
        for task in list(self._tasks):
            if task is not asyncio.current_task():
                task.cancel()

    async def shut_down(self, code: int, reason: str) -> None:
        """Adapter hook: the server is stopping; end the session with `code` (`done` is set when over)."""
        raise NotImplementedError

    def record_close(self, code: int | None, reason: str, by: str, **extra: Any) -> None:
        """The close record of this session (flushed, so a recording survives what happens next)."""
        self.history.record(
            "close",
            session=self.session.id,
            conn=self.conn_id,
            key_id=self.key_id,
            code=code,
            reason=reason,
            by=by,
            **extra,
        )
        self.history.flush()
