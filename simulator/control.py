"""The control plane: an HTTP API under `/_rtsim` on the simulator's own port, and the commands that use it.

    GET    /_rtsim/sessions               live sessions
    GET    /_rtsim/catalogue              fault kinds, their scope and documentation
    POST   /_rtsim/faults                 {kind, params?, target?, when?} → applied or scheduled
    GET    /_rtsim/faults                 scheduled faults not yet fired
    DELETE /_rtsim/faults/{id}            cancel a scheduled fault
    GET    /_rtsim/history                ?session=&key_id=&kind=&since= (JSON Lines)
    GET    /_rtsim/summary                per client identity: its connections and the gaps between them
    POST   /v1/streaming.keep_alive       {session_id}: the streaming-session keep-alive (resets idle timers)

`target` is `{"session": ID}`, `{"key": API_KEY}` / `{"key_id": ID}` (every live session of that key), or
`{}` (every live session). `when` is `{"after_ms": N}` or `{"at_event": {"type": T, "nth": N}}` (right after
the Nth server event of type T on each targeted session). Bound to loopback the API is open; bound
elsewhere it needs `X-Rtsim-Admin-Token` (`--admin-token`), and without one configured it is off.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import itertools
import json
import sys
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web

from . import faults, plan
from .protocol import RealtimeError
from .schema import Int, Obj, Str, check

if TYPE_CHECKING:
    from .server import LiveSession, RealtimeServer

PREFIX = "/_rtsim"
OPENED = ("session.created", 1)  # "at once" for a plan: right after the session is announced
WHEN = Obj({"after_ms": Int(0), "at_event": Obj({"type": Str(), "nth": Int(1)}, required=("type",))})
FAULT_REQUEST = Obj(
    {"kind": Str(), "params": Obj({}, open=True), "target": Obj({}, open=True), "when": Obj({}, open=True)},
    required=("kind",),
)


def bad_request(status: int, message: str, param: str | None = None) -> web.Response:
    return web.json_response(
        {"error": {"message": message, "type": "invalid_request_error", "param": param}}, status=status
    )


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


# ---- HTTP routes -----------------------------------------------------------------------------------------


def install(server: RealtimeServer, app: web.Application) -> None:
    control = ControlPlane(server)
    server.control = control

    def guarded(
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def wrapper(request: web.Request) -> web.StreamResponse:
            if not _is_loopback(server.config.host):
                token = server.config.admin_token
                if not token:
                    return bad_request(
                        403,
                        "The control API is off when the simulator is bound beyond loopback "
                        "without --admin-token.",
                    )
                if request.headers.get("X-Rtsim-Admin-Token") != token:
                    return bad_request(401, "Missing or wrong X-Rtsim-Admin-Token.")
            return await handler(request)

        return wrapper

    async def sessions(request: web.Request) -> web.Response:
        return web.json_response({"sessions": [_describe(server, c) for c in server.live_connections()]})

    async def catalogue(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "faults": [
                    {"kind": k.name, "scope": k.scope, "params": sorted(k.params.fields), "doc": k.doc}
                    for k in faults.CATALOGUE.values()
                ]
            }
        )

    async def post_fault(request: web.Request) -> web.Response:
        try:
            body = json.loads(await request.read() or b"null")
        except ValueError:
            return bad_request(400, "The request body is not valid JSON.")
        if not isinstance(body, dict):
            return bad_request(400, 'The request body must be a JSON object: {"kind": ..., "params": ...}.')
        try:
            body = check(FAULT_REQUEST, body, "")
            outcome = control.inject(
                body["kind"], body.get("params"), body.get("target"), body.get("when"), route="control-api"
            )
        except RealtimeError as exc:
            status = 404 if exc.code in ("session_not_found", "no_target") else 400
            return bad_request(status, exc.message, exc.param)
        return web.json_response(outcome, status=201 if "scheduled" in outcome else 200)

    async def list_faults(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "scheduled": [
                    {"id": s.id, "kind": s.kind, "params": s.params, "target": s.target, "when": s.when}
                    for s in control.scheduled.values()
                ]
            }
        )

    async def delete_fault(request: web.Request) -> web.Response:
        if not control.cancel(request.match_info["fault_id"]):
            return bad_request(404, f"No scheduled fault '{request.match_info['fault_id']}'.")
        return web.Response(status=204)

    async def history(request: web.Request) -> web.Response:
        query = request.query
        try:
            since = int(query.get("since", "0"))
            if since < 0:
                raise ValueError(since)
        except ValueError:
            return bad_request(400, "since must be a record seq (an integer >= 0)", "since")
        records = server.history.select(
            kind=query.get("kind"), session=query.get("session"), key_id=query.get("key_id"), since_seq=since
        )
        return web.Response(text=server.history.to_jsonl(records), content_type="application/x-ndjson")

    async def summary(request: web.Request) -> web.Response:
        return web.json_response(server.history.summary())

    async def keep_alive(request: web.Request) -> web.Response:
        try:
            body = json.loads(await request.read() or b"{}")
            session_id = check(Obj({"session_id": Str()}, required=("session_id",)), body, "")["session_id"]
        except (ValueError, RealtimeError) as exc:
            return bad_request(400, getattr(exc, "message", "The request body is not valid JSON."))
        conn = next((c for c in server.live_connections() if c.session.id == session_id), None)
        if conn is None:
            return bad_request(404, f"Session '{session_id}' is not open.", "session_id")
        conn.session.keep_alive(conn.loop.time())
        conn.pump()
        server.history.record("keep_alive", session=session_id, key_id=conn.key_id)
        return web.json_response({"session_id": session_id, "status": "ok"})

    app.router.add_get(f"{PREFIX}/sessions", guarded(sessions))
    app.router.add_get(f"{PREFIX}/catalogue", guarded(catalogue))
    app.router.add_post(f"{PREFIX}/faults", guarded(post_fault))
    app.router.add_get(f"{PREFIX}/faults", guarded(list_faults))
    app.router.add_delete(f"{PREFIX}/faults/{{fault_id}}", guarded(delete_fault))
    app.router.add_get(f"{PREFIX}/history", guarded(history))
    app.router.add_get(f"{PREFIX}/summary", guarded(summary))
    app.router.add_post("/v1/streaming.keep_alive", keep_alive)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _describe(server: RealtimeServer, conn: LiveSession) -> dict[str, Any]:
    session = conn.session
    return {
        "session": session.id,
        "conn": conn.conn_id,
        "key_id": conn.key_id,
        "model": session.config["model"],
        "transport": conn.transport,
        "age_s": round(conn.loop.time() - session.started_at, 3),
        "expires_at": session.expires_at,
        "active_response": session.active_response.id if session.active_response else None,
        "stalled": getattr(conn, "stalled", False),
    }


# ---- commands ----------------------------------------------------------------------------------------------


def control_root(base_url: str) -> str:
    root = base_url.rstrip("/")
    return root[: -len("/v1")] if root.endswith("/v1") else root


def call(
    base_url: str,
    method: str,
    path: str,
    body: Any = None,
    admin_token: str | None = None,
    *,
    raw: bool = False,
) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        control_root(base_url) + path, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    if admin_token:
        request.add_header("X-Rtsim-Admin-Token", admin_token)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            text = response.read().decode()
            status = response.status
    except urllib.error.HTTPError as exc:
        text, status = exc.read().decode(), exc.code
    if not text or raw:
        return status, text
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


FLAG_PARAMS = (
    "code",
    "reason",
    "status",
    "count",
    "seconds",
    "ms",
    "jitter_ms",
    "retry_after",
    "close_code",
    "usable_for",
    "advertise",
    "token_id",
    "ending",
    "error_code",
    "error_type",
    "error_message",
)


def register(subparsers: argparse._SubParsersAction) -> None:
    fault = subparsers.add_parser(
        "fault",
        help="inject a fault into a running simulator",
        description="Inject a fault through the control API. With no --session/--key it hits every live "
        "session (session faults) or applies server-wide (server faults).",
    )
    fault.add_argument("kind", choices=sorted(faults.CATALOGUE))
    fault.add_argument("--server", required=True, metavar="URL", help="the base URL rtsim serve printed")
    fault.add_argument("--session", metavar="ID")
    fault.add_argument("--key", metavar="API_KEY", help="every session of this API key")
    fault.add_argument("--key-id", metavar="ID", help="every session of this key id (as in the history)")
    when = fault.add_mutually_exclusive_group()
    when.add_argument("--after-ms", type=int, metavar="N", help="schedule N ms from now")
    when.add_argument("--at-event", metavar="TYPE[#N]", help="right after the Nth server event of TYPE")
    fault.add_argument("--mid-frame", action="store_true", help="drop: send half a frame first")
    fault.add_argument("--error", action="store_true", help="close: send an error event first")
    for name in FLAG_PARAMS:
        fault.add_argument("--" + name.replace("_", "-"), dest=name, metavar="VALUE")
    fault.add_argument(
        "--param", action="append", default=[], metavar="KEY=VALUE", help="any fault parameter"
    )
    fault.add_argument("--admin-token")
    fault.set_defaults(func=run_fault)

    sessions = subparsers.add_parser("sessions", help="list the live sessions of a running simulator")
    sessions.add_argument("--server", required=True, metavar="URL")
    sessions.add_argument("--admin-token")
    sessions.set_defaults(func=run_sessions)

    history = subparsers.add_parser("history", help="print a running simulator's history as JSON Lines")
    history.add_argument("--server", required=True, metavar="URL")
    history.add_argument("--session")
    history.add_argument("--key-id")
    history.add_argument("--kind")
    history.add_argument("--summary", action="store_true", help="per client identity: connections and gaps")
    history.add_argument("--admin-token")
    history.set_defaults(func=run_history)


def fault_request(args: argparse.Namespace) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for name in FLAG_PARAMS:
        value = getattr(args, name)
        if value is not None:
            params[name] = plan.coerce(value)
    if args.mid_frame:
        params["mid_frame"] = True
    if args.error:
        params["error"] = True
    for pair in args.param:
        key, _, value = pair.partition("=")
        params[key.replace("-", "_")] = plan.coerce(value)
    target: dict[str, Any] = {}
    if args.session:
        target["session"] = args.session
    if args.key:
        target["key"] = args.key
    if args.key_id:
        target["key_id"] = args.key_id
    body: dict[str, Any] = {"kind": args.kind, "params": params, "target": target}
    if args.after_ms is not None:
        body["when"] = {"after_ms": args.after_ms}
    elif args.at_event:
        event_type, _, nth = args.at_event.partition("#")
        body["when"] = {"at_event": {"type": event_type, "nth": plan.coerce(nth) if nth else 1}}
    return body


def run_fault(args: argparse.Namespace) -> int:
    status, body = call(args.server, "POST", f"{PREFIX}/faults", fault_request(args), args.admin_token)
    if status >= 400:
        error = body.get("error", {}) if isinstance(body, dict) else {}
        where = f" ({error['param']})" if error.get("param") else ""
        print(f"rtsim fault: {status}: {error.get('message', body)}{where}", file=sys.stderr)
        return 1
    if "scheduled" in body:
        print(
            f"scheduled {body['kind']} as {body['scheduled']} ({json.dumps(body['when'])})"
            + (f" on {', '.join(body['applies_to'])}" if body["applies_to"] else "")
        )
    elif body["scope"] == "server":
        print(f"{body['kind']}: {body['result']}")
    else:
        for session_id in body["applied_to"]:
            print(f"{body['kind']} → {session_id}: {body['result']}")
    return 0


def run_sessions(args: argparse.Namespace) -> int:
    status, body = call(args.server, "GET", f"{PREFIX}/sessions", admin_token=args.admin_token)
    if status >= 400:
        print(f"rtsim sessions: {status}: {body}", file=sys.stderr)
        return 1
    for s in body["sessions"]:
        print(
            f"{s['session']}  key={s['key_id']}  age={s['age_s']:.1f}s  model={s['model']}"
            + ("  STALLED" if s["stalled"] else "")
        )
    if not body["sessions"]:
        print("no live sessions")
    return 0


def run_history(args: argparse.Namespace) -> int:
    if args.summary:
        status, body = call(args.server, "GET", f"{PREFIX}/summary", admin_token=args.admin_token)
        print(json.dumps(body, indent=2))
        return 0 if status < 400 else 1
    query = "&".join(
        f"{k}={v}" for k, v in (("session", args.session), ("key_id", args.key_id), ("kind", args.kind)) if v
    )
    status, body = call(
        args.server,
        "GET",
        f"{PREFIX}/history" + (f"?{query}" if query else ""),
        admin_token=args.admin_token,
        raw=True,
    )
    if status >= 400:
        print(f"rtsim history: {status}: {body}", file=sys.stderr)
        return 1
    sys.stdout.write(body)
    return 0
