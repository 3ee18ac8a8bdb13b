"""Injection and scheduling: a fault now, after a delay or at a server event; cancelling; fault plans.

Every moment here is one of `timing`'s: the control API's `when`, a plan entry's timing and a server plan's
`at=` are armed the same way — on a carrier for session faults (its timers and triggers die with it), on
the event loop for a delay that resolves its target when it fires.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import faults, plan
from ..faults import timing
from ..protocol import RealtimeError
from ..schema import check

if TYPE_CHECKING:
    from ..carrier import Carrier
    from ..server import RealtimeServer


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

    def _new_id(self) -> str:
        worker = self.server.config.worker
        return f"fault_{next(self._ids)}" if worker is None else f"fault_w{worker}_{next(self._ids)}"

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
        when = check(timing.REQUEST, when, "when")
        moment = timing.from_request(when)
        targets = self.server.resolve_targets(target)  # a session that is gone now never comes back: 404
        if moment.event is None:
            fault_id = self._new_id()
            cancel = timing.arm(
                moment,
                timing.LoopClock(asyncio.get_running_loop()),
                lambda: self._fire(fault_id, kind, checked, target, route),
            )
            applies_to: list[str] = []
        else:
            if spec.scope != "session":
                raise RealtimeError(
                    "at_event applies to session faults only", code="invalid_value", param="when"
                )
            if not targets:
                raise RealtimeError("No live session matches the target.", code="no_target", param="target")
            fault_id = self._new_id()
            cancel = self._arm_on_sessions(fault_id, moment, targets, kind, checked, route)
            applies_to = [c.session.id for c in targets]
        shown = faults.public_target(target)
        self.scheduled[fault_id] = Scheduled(fault_id, kind, checked, shown, when, route, cancel)
        self.server.history.record(
            "fault_scheduled",
            fault_id=fault_id,
            fault=kind,
            params=checked,
            target=shown,
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
        connections: list[Carrier] | None = None,
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
        connections: list[Carrier] | None = None,
    ) -> None:
        try:
            faults.inject(self.server, kind, params, target, route=route, connections=connections)
        except RealtimeError as exc:  # the target left before its moment came: record it, do not crash
            self.server.history.record("fault_skipped", fault_id=fault_id, fault=kind, reason=exc.message)

    def _arm_on_sessions(
        self,
        fault_id: str,
        moment: timing.When,
        targets: list[Carrier],
        kind: str,
        params: dict[str, Any],
        route: str,
    ) -> Callable[[], None]:
        """Armed on each session; the fault stays scheduled until each has fired or its session ended."""
        armed: dict[str, Callable[[], None]] = {}

        def settle(conn: Carrier) -> None:
            armed.pop(conn.session.id, None)
            if not armed:
                self.scheduled.pop(fault_id, None)

        def fire(conn: Carrier) -> None:
            settle(conn)
            self._apply(fault_id, kind, params, {"session": conn.session.id}, route, [conn])

        def gone(conn: Carrier) -> None:
            if conn.session.id in armed:
                settle(conn)
                self.server.history.record(
                    "fault_skipped",
                    fault_id=fault_id,
                    fault=kind,
                    session=conn.session.id,
                    reason=f"the session ended before its {moment.event} #{moment.nth}",
                )

        for conn in targets:
            armed[conn.session.id] = timing.arm(moment, conn, lambda c=conn: fire(c))
            conn.on_close.append(lambda c=conn: gone(c))

        def cancel() -> None:
            for cancel_one in armed.values():
                cancel_one()
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

    def apply_plan(self, fault_plan: plan.FaultPlan, conn: Carrier, route: str) -> None:
        """Deal a plan's session faults to a new session (reproducible from seed and session id).

        An entry with no timing (or at=0) fires as soon as the session is announced: right after
        `session.created`, so the client always sees the session it was dealt the fault in.
        """
        for decision in fault_plan.decisions(conn.session.id):
            entry, fault_id = decision.entry, f"fault_{next(self._ids)}"

            def fire(e: plan.PlanEntry = entry, f: str = fault_id) -> None:
                if conn.closed_by is None:
                    self._apply(f, e.kind, e.params, {"session": conn.session.id}, route, [conn])

            timing.arm(decision.when, conn, fire)

    def attach_plan(self, text: str, conn: Carrier) -> None:
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

            timing.arm(plan.OPENED, conn, report)
            return
        self.apply_plan(fault_plan, conn, "plan:connection")

    def apply_server_plan(self, fault_plan: plan.FaultPlan) -> None:
        """A server plan's server-wide entries: at once, or `at=` seconds after the server started."""
        clock = timing.LoopClock(asyncio.get_running_loop())
        for entry in fault_plan.server_entries():
            if entry.at:
                timing.arm(
                    timing.after(entry.at),
                    clock,
                    lambda e=entry: self._fire("plan", e.kind, e.params, {}, "plan:server"),
                )
            else:  # a bad entry stops the server from starting, as it should
                faults.inject(self.server, entry.kind, entry.params, {}, route="plan:server")
