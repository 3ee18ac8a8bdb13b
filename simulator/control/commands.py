"""`rtsim fault`, `rtsim sessions` and `rtsim history`: the control API from the command line.

`rtsim fault`'s parameter flags come from the catalogue: every parameter any fault kind takes is a flag
named after it (`_` → `-`), booleans as switches; `--param KEY=VALUE` reaches any parameter too.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from .. import faults, plan
from ..schema import Bool, Spec, Str
from . import fanout
from .routes import PREFIX

# `rtsim fault`'s own options; a fault parameter of the same name is reached through --param only.
RESERVED_FLAGS = frozenset(
    {"kind", "server", "session", "key", "key_id", "after_ms", "at_event", "param", "admin_token", "help"}
)


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
    """One blocking HTTP call to a simulator's control API: (status, parsed JSON or text)."""
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


@dataclass(frozen=True)
class ParamFlag:
    """One fault parameter as an `rtsim fault` flag, from the schemas of the kinds that take it."""

    name: str
    specs: tuple[Spec, ...]
    kinds: tuple[str, ...]

    @property
    def option(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def is_switch(self) -> bool:
        return all(isinstance(spec, Bool) for spec in self.specs)

    def value(self, text: str) -> Any:
        """A flag's text as the parameter's value: strings stay strings, the rest is read as plan values."""
        if all(isinstance(spec, Str) for spec in self.specs):
            return text
        return plan.coerce(text)


def param_flags() -> list[ParamFlag]:
    """Every parameter of the catalogue's kinds, in the order the catalogue first names it."""
    specs: dict[str, list[Spec]] = {}
    kinds: dict[str, list[str]] = {}
    for kind in faults.CATALOGUE.values():
        for name, spec in kind.params.fields.items():
            if name in RESERVED_FLAGS:
                continue
            specs.setdefault(name, []).append(spec)
            kinds.setdefault(name, []).append(kind.name)
    return [ParamFlag(name, tuple(specs[name]), tuple(kinds[name])) for name in specs]


def register(subparsers: argparse._SubParsersAction) -> None:
    fault = subparsers.add_parser(
        "fault",
        help="inject a fault into a running simulator",
        description="Inject a fault through the control API. With no --session/--key it hits every live "
        "session (session faults) or applies server-wide (server faults).",
    )
    fault.add_argument("kind", choices=sorted(faults.CATALOGUE))
    fault.add_argument(
        "--server",
        action="append",
        required=True,
        metavar="URL",
        help="the base URL rtsim serve printed; repeat it for several simulators (hosts behind a load "
        "balancer): the fault goes to each, as the control API of `--workers` does",
    )
    fault.add_argument("--session", metavar="ID")
    fault.add_argument("--key", metavar="API_KEY", help="every session of this API key")
    fault.add_argument("--key-id", metavar="ID", help="every session of this key id (as in the history)")
    when = fault.add_mutually_exclusive_group()
    when.add_argument("--after-ms", type=int, metavar="N", help="schedule N ms from now")
    when.add_argument("--at-event", metavar="TYPE[#N]", help="right after the Nth server event of TYPE")
    params = fault.add_argument_group("fault parameters (each kind's own; see GET /_rtsim/catalogue)")
    for flag in param_flags():
        used_by = f"parameter of {', '.join(flag.kinds)}"
        if flag.is_switch:
            params.add_argument(flag.option, dest=flag.name, action="store_true", default=None, help=used_by)
        else:
            params.add_argument(flag.option, dest=flag.name, metavar="VALUE", help=used_by)
    fault.add_argument(
        "--param", action="append", default=[], metavar="KEY=VALUE", help="any fault parameter"
    )
    fault.add_argument("--admin-token")
    fault.set_defaults(func=run_fault)

    register_sip(subparsers)

    sessions = subparsers.add_parser("sessions", help="list the live sessions of a running simulator")
    sessions.add_argument("--server", action="append", required=True, metavar="URL", help="repeatable")
    sessions.add_argument("--admin-token")
    sessions.set_defaults(func=run_sessions)

    history = subparsers.add_parser("history", help="print a running simulator's history as JSON Lines")
    history.add_argument("--server", action="append", required=True, metavar="URL", help="repeatable")
    history.add_argument("--session")
    history.add_argument("--key-id")
    history.add_argument("--kind")
    history.add_argument("--summary", action="store_true", help="per client identity: connections and gaps")
    history.add_argument("--admin-token")
    history.set_defaults(func=run_history)


def fault_request(args: argparse.Namespace) -> dict[str, Any]:
    """The `POST /_rtsim/faults` body an `rtsim fault` command line asks for."""
    params: dict[str, Any] = {}
    for flag in param_flags():
        value = getattr(args, flag.name, None)
        if value is None:
            continue
        params[flag.name] = True if flag.is_switch else flag.value(value)
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


def call_all(
    servers: list[str], method: str, path: str, body: Any = None, admin_token: str | None = None, **kw: Any
) -> list[tuple[int, Any]]:
    """The same control call to every simulator given (one `--server` each)."""
    return [call(server, method, path, body, admin_token, **kw) for server in servers]


def run_fault(args: argparse.Namespace) -> int:
    answers = call_all(args.server, "POST", f"{PREFIX}/faults", fault_request(args), args.admin_token)
    status, body = answers[0] if len(answers) == 1 else fanout.merge_fault(answers)
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
    answers = call_all(args.server, "GET", f"{PREFIX}/sessions", admin_token=args.admin_token)
    status, body = answers[0] if len(answers) == 1 else fanout.merge_sessions(answers)
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
    servers: list[str] = args.server
    if args.summary:
        summaries = call_all(servers, "GET", f"{PREFIX}/summary", admin_token=args.admin_token)
        status, body = summaries[0]
        if len(servers) > 1 and all(s < 400 for s, _ in summaries):
            histories = call_all(servers, "GET", f"{PREFIX}/history", admin_token=args.admin_token, raw=True)
            if all(s < 400 for s, _ in histories):
                texts = [(number, text) for number, (_, text) in enumerate(histories, 1)]
                body = fanout.merge_summary(texts, [b.get("max_loop_lag_ms") for _, b in summaries])
            else:
                status, body = next(answer for answer in histories if answer[0] >= 400)
        print(json.dumps(body, indent=2))
        return 0 if status < 400 else 1
    query = "&".join(
        f"{k}={v}" for k, v in (("session", args.session), ("key_id", args.key_id), ("kind", args.kind)) if v
    )
    path = f"{PREFIX}/history" + (f"?{query}" if query else "")
    answers = call_all(servers, "GET", path, admin_token=args.admin_token, raw=True)
    for status, body in answers:
        if status >= 400:
            print(f"rtsim history: {status}: {body}", file=sys.stderr)
            return 1
    if len(answers) == 1:
        sys.stdout.write(answers[0][1])
    else:  # several simulators: every record, by wall-clock time, with `worker` = the --server's place
        sys.stdout.write(fanout.merge_history([(n, text) for n, (_, text) in enumerate(answers, 1)]))
    return 0


# ---- rtsim sip: ring a SIP call and play its caller -------------------------------------------------------


def register_sip(subparsers: argparse._SubParsersAction) -> None:
    sip = subparsers.add_parser(
        "sip",
        help="ring a SIP call into a running simulator and play its caller",
        description="A SIP call rings and its signed realtime.call.incoming webhook goes to --webhook-url; "
        "your application answers it with the calls API. Then the caller speaks, presses keys, hangs up.",
    )
    actions = sip.add_subparsers(dest="action", required=True)
    ring = actions.add_parser("ring", help="a call rings; prints its id and the webhook's outcome")
    ring.add_argument("--webhook-url", required=True, metavar="URL")
    ring.add_argument(
        "--header", action="append", default=[], metavar="NAME=VALUE", help="a SIP INVITE header (repeatable)"
    )
    ring.add_argument("--key", metavar="API_KEY", help="the project: only this key may answer")
    ring.add_argument("--webhook-secret", metavar="SECRET", help="sign this call's webhook with SECRET")
    ring.add_argument(
        "--deliveries", type=int, default=1, metavar="N", help="deliver the webhook N times (duplicates)"
    )
    ring.set_defaults(func=run_sip_ring)
    listing = actions.add_parser("list", help="every SIP call and its state")
    listing.set_defaults(func=run_sip_list)
    for name, what, value in (
        ("say", "the caller says TEXT (speech down the line)", "text"),
        ("dtmf", "the caller presses KEYS (0-9, *, #, A-D)", "keys"),
    ):
        action = actions.add_parser(name, help=what)
        action.add_argument("call_id")
        action.add_argument(value)
        action.set_defaults(func=run_sip_caller, body_field=value)
    hangup = actions.add_parser("hangup", help="the caller hangs up")
    hangup.add_argument("call_id")
    hangup.set_defaults(func=run_sip_caller, body_field=None)
    for action in (ring, listing, *actions.choices.values()):
        if not any(a.dest == "server" for a in action._actions):
            action.add_argument(
                "--server", required=True, metavar="URL", help="the base URL rtsim serve printed"
            )
            action.add_argument("--admin-token")


def run_sip_ring(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"webhook_url": args.webhook_url}
    if args.header:
        pairs = [h.partition("=") for h in args.header]
        if any(not sep or not name for name, sep, _ in pairs):
            print("rtsim sip ring: --header takes NAME=VALUE", file=sys.stderr)
            return 2
        body["sip_headers"] = [{"name": name, "value": value} for name, _, value in pairs]
    if args.key:
        body["key"] = args.key
    if args.webhook_secret:
        body["webhook_secret"] = args.webhook_secret
    if args.deliveries != 1:
        body["deliveries"] = args.deliveries
    status, answer = call(args.server, "POST", f"{PREFIX}/sip/calls", body, args.admin_token)
    if status >= 400:
        print(f"rtsim sip ring: {status}: {answer}", file=sys.stderr)
        return 1
    webhook = answer["webhook"]
    outcome = webhook["status"] if webhook["status"] is not None else webhook.get("error")
    print(f"{answer['call_id']}  {answer['state']}  webhook {webhook['id']} → {outcome}")
    return 0


def run_sip_list(args: argparse.Namespace) -> int:
    status, answer = call(args.server, "GET", f"{PREFIX}/sip/calls", admin_token=args.admin_token)
    if status >= 400:
        print(f"rtsim sip list: {status}: {answer}", file=sys.stderr)
        return 1
    for c in answer["calls"]:
        print(f"{c['call_id']}  {c['state']}  session={c['session']}  webhook={c['webhook'].get('status')}")
    if not answer["calls"]:
        print("no SIP calls")
    return 0


def run_sip_caller(args: argparse.Namespace) -> int:
    body = {args.body_field: getattr(args, args.body_field)} if args.body_field else {}
    status, answer = call(
        args.server, "POST", f"{PREFIX}/sip/calls/{args.call_id}/{args.action}", body, args.admin_token
    )
    if status >= 400:
        print(f"rtsim sip {args.action}: {status}: {answer}", file=sys.stderr)
        return 1
    print(f"{args.call_id}: {args.action} done")
    return 0
