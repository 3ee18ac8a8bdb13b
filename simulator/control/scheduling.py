"""Injection and scheduling: a fault now, after a delay or at a server event; cancelling; fault plans."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import faults, plan
from ..protocol import RealtimeError
from ..schema import Int, Obj, Str, check

if TYPE_CHECKING:
    from ..server import LiveSession, RealtimeServer

OPENED = ("session.created", 1)  # "at once" for a plan: right after the session is announced
WHEN = Obj({"after_ms": Int(0), "at_event": Obj({"type": Str(), "nth": Int(1)}, required=("type",))})


@dataclass
class Scheduled:
    id: str
    kind: str
    params: dict[str, Any]
    target: dict[str, Any]
    when: dict[str, Any]
    route: str
    cancel: Callable[[], None]


class ControlPlane:
    """Injection and scheduling for one server; fault plans use it too."""

    def __init__(self, server: RealtimeServer) -> None:
        self.server = server
        self.scheduled: dict[str, Scheduled] = {}
        self._ids = itertools.count(1)

    def inject(
        self,
        kind: str,
        params: dict[str, Any] | None,
        target: dict[str, Any] | None,
        when: dict[str, Any] | None,
        *,
        route: str,
    ) -> dict[str, Any]:
        """Apply now, or schedule; raises RealtimeError for a bad request."""
        spec, checked = faults.validate(kind, params)
        target = check(faults.TARGET, target or {}, "target")
        if when is None:
            return faults.inject(self.server, kind, checked, target, route=route)
        when = check(WHEN, when, "when")
        if len(when) != 1:
            raise RealtimeError(
                "when takes exactly one of after_ms or at_event.", code="invalid_value", param="when"
            )
        targets = self.server.resolve_targets(target)  # a session that is gone now never comes back: 404
        if "after_ms" in when:
            fault_id = f"fault_{next(self._ids)}"
            handle = asyncio.get_running_loop().call_later(
                when["after_ms"] / 1000, self._fire, fault_id, kind, checked, target, route
            )
            cancel = handle.cancel
            applies_to: list[str] = []
        else:
            if spec.scope != "session":
                raise RealtimeError(
                    "at_event applies to session faults only", code="invalid_value", param="when"
                )
            event = when["at_event"]
            faults.check_event_type(event["type"], "when.at_event.type")
            if not targets:
                raise RealtimeError("No live session matches the target.", code="no_target", param="target")
            fault_id = f"fault_{next(self._ids)}"
            cancel = self._arm_triggers(
                fault_id, targets, event["type"], event.get("nth", 1), kind, checked, route
            )
            applies_to = [c.session.id for c in targets]
        self.scheduled[fault_id] = Scheduled(fault_id, kind, checked, target, when, route, cancel)
        self.server.history.record(
            "fault_scheduled",
            fault_id=fault_id,
            fault=kind,
            params=checked,
            target=target,
            when=when,
            route=route,
        )
        return {"scheduled": fault_id, "kind": kind, "when": when, "applies_to": applies_to}

    def _fire(
        self,
        fault_id: str,
        kind: str,
        params: dict[str, Any],
        target: dict[str, Any],
        route: str,
        connections: list[LiveSession] | None = None,
    ) -> None:
        self.scheduled.pop(fault_id, None)
        self._apply(fault_id, kind, params, target, route, connections)

    def _apply(
        self,
        fault_id: str,
        kind: str,
        params: dict[str, Any],
        target: dict[str, Any],
        route: str,
        connections: list[LiveSession] | None = None,
    ) -> None:
        try:
            faults.inject(self.server, kind, params, target, route=route, connections=connections)
        except RealtimeError as exc:  # the target left before its moment came: record it, do not crash
            self.server.history.record("fault_skipped", fault_id=fault_id, fault=kind, reason=exc.message)

    def _arm_triggers(
        self,
        fault_id: str,
        targets: list[LiveSession],
        event_type: str,
        nth: int,
        kind: str,
        params: dict[str, Any],
        route: str,
    ) -> Callable[[], None]:
        """One trigger per session; the fault stays scheduled until each has fired or its session ended."""
        armed: dict[str, tuple[LiveSession, tuple[str, int, Callable[[], Any]]]] = {}

        def settle(conn: LiveSession) -> None:
            armed.pop(conn.session.id, None)
            if not armed:
                self.scheduled.pop(fault_id, None)

        def fire(conn: LiveSession) -> None:
            settle(conn)
            self._apply(fault_id, kind, params, {"session": conn.session.id}, route, [conn])

        def gone(conn: LiveSession) -> None:
            if conn.session.id in armed:
                settle(conn)
                self.server.history.record(
                    "fault_skipped",
                    fault_id=fault_id,
                    fault=kind,
                    session=conn.session.id,
                    reason=f"the session ended before its {event_type} #{nth}",
                )

        for conn in targets:
            trigger = (event_type, conn.sent_counts[event_type] + nth, lambda c=conn: fire(c))
            conn.triggers.append(trigger)
            conn.on_close.append(lambda c=conn: gone(c))
            armed[conn.session.id] = (conn, trigger)

        def cancel() -> None:
            for conn, trigger in armed.values():
                if trigger in conn.triggers:
                    conn.triggers.remove(trigger)
            armed.clear()

        return cancel

    def cancel(self, fault_id: str) -> bool:
        scheduled = self.scheduled.pop(fault_id, None)
        if scheduled is None:
            return False
        scheduled.cancel()
        self.server.history.record("fault_cancelled", fault_id=fault_id, fault=scheduled.kind)
        return True

    # ---- fault plans ---------------------------------------------------------------------------------

    def apply_plan(self, fault_plan: plan.FaultPlan, conn: LiveSession, route: str) -> None:
        """Deal a plan's session faults to a new session (reproducible from seed and session id).

        An entry with no timing (or at=0) fires as soon as the session is announced: right after
        `session.created`, so the client always sees the session it was dealt the fault in.
        """
        for decision in fault_plan.decisions(conn.session.id):
            entry, fault_id = decision.entry, f"fault_{next(self._ids)}"

            def fire(e: plan.PlanEntry = entry, f: str = fault_id) -> None:
                if conn.closed_by is None:
                    self._apply(f, e.kind, e.params, {"session": conn.session.id}, route, [conn])

            after_event = decision.after_event
            if after_event is None and not decision.delay:
                after_event = OPENED
            if after_event is not None:
                conn.triggers.append((*after_event, fire))
            else:
                assert decision.delay is not None
                handle = asyncio.get_running_loop().call_later(decision.delay, fire)
                conn.on_close.append(handle.cancel)

    def attach_plan(self, text: str, conn: LiveSession) -> None:
        """A plan a client attached to its connection; a bad one is an error event and the session goes on."""
        try:
            fault_plan = plan.parse(text)
            server_wide = [entry.kind for entry in fault_plan.server_entries()]
            if server_wide:
                raise RealtimeError(
                    f"'{server_wide[0]}' is server-wide and cannot be attached to a connection; use "
                    "rtsim serve --chaos or the control API.",
                    code="invalid_plan",
                    param="plan",
                )
        except RealtimeError as exc:
            error = exc

            def report() -> None:
                conn.session.error(error)
                conn.pump()

            conn.triggers.append((*OPENED, report))
            return
        self.apply_plan(fault_plan, conn, "plan:connection")

    def apply_server_plan(self, fault_plan: plan.FaultPlan) -> None:
        for entry in fault_plan.server_entries():
            if entry.at:
                asyncio.get_running_loop().call_later(
                    entry.at, self._fire, "plan", entry.kind, entry.params, {}, "plan:server"
                )
            else:
                faults.inject(self.server, entry.kind, entry.params, {}, route="plan:server")
