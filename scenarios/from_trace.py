"""`rtsim scenario from-trace`: a recorded session becomes a scenario that reproduces how it ended.

From the records of a trace (rtsim's record shapes, simulator/history.py) it takes:

- the user's turns: text from `conversation.item.create` with `input_text`, audio from the input audio the
  client streamed (its time is the first append of the turn; its words the transcript the server produced),
  each at its time since the client first connected; a turn sent again after a reconnect (a client restoring
  or re-asking) is the same turn and is not repeated;
- the fault that ended each session the client did not close itself: a close without a close frame (1006) is
  a `drop`, a close code is a `close` with that code and reason, the session cap is the `max_session` server
  setting (with its `expiry_ending`), an idle close is `idle_timeout`, a token refused at the handshake is
  `expire-tokens`, refusals by status are `reject-connects`. A fault comes shortly after a server event in the
  trace is placed relative to that event (`after: {event, nth, delay}`: robust to a slower or faster client),
  otherwise at its time;
- checks that would have caught it: `reconnected_within`, `context_restored`, `no_lost_turns`, ... chosen by
  what happened.

The result is plain scenario data (what `spec.from_dict` reads and the YAML holds).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from rtsim.simulator.server import ServerConfig

from . import trace
from .spec import ScenarioError, from_dict

# A fault this soon after a server event is placed relative to it; later than this, at its time.
RELATIVE_WITHIN = 2.0
# Between a client's start and its first handshake: the scenario's clock starts with the client, the trace's
# with the server.
CONNECT_LEAD = 0.2
# The run goes on this long after the last thing in the trace, so the client's reaction is seen; after a trace
# that ends with a disruption, long enough to see whether the client comes back (the reconnect check's bound).
TAIL = 1.0
RECONNECT_WINDOW = 5.0
CAP_REASONS = ("session_expired", "expired", "maximum duration", "max_session")
AUDIO_DELTAS = ("response.output_audio.delta", "response.audio.delta")


def _round(value: float) -> float:
    return round(max(0.0, value), 2)


def _user_text(item: Mapping[str, Any]) -> str:
    return " ".join(
        str(part.get("text") or "")
        for part in item.get("content") or []
        if part.get("type") in ("input_text", "text")
    ).strip()


class _Trace:
    """The records of one client identity; server events counted as the scenario runner counts them."""

    def __init__(self, records: Sequence[Mapping[str, Any]]) -> None:
        self.records = sorted(records, key=lambda r: (r.get("t", 0.0), r.get("seq", 0)))
        self.handshakes = [r for r in self.records if r.get("kind") == "handshake"]
        if not self.handshakes:
            raise ScenarioError("the trace has no handshake: nothing connected")
        self.origin = self.handshakes[0]["t"] - CONNECT_LEAD
        self.config: dict[str, Any] = next(
            (
                dict(r.get("config") or {})
                for r in self.records
                if r.get("kind") == "server" and r.get("config")
            ),
            {},
        )

    def at(self, t: float) -> float:
        return _round(t - self.origin)

    def server_events(self) -> list[Mapping[str, Any]]:
        return [r for r in self.records if r.get("kind") == "event" and r.get("dir") == "out"]

    def moment(self, t: float) -> dict[str, Any]:
        """`after: {event, nth, delay}` for the server event shortly before t, else `at: t`."""
        before = [r for r in self.server_events() if r["t"] <= t]
        if before and t - before[-1]["t"] <= RELATIVE_WITHIN:
            last = before[-1]
            kind = last["event"].get("type")
            nth = sum(1 for r in before if r["event"].get("type") == kind)
            return {"after": {"event": kind, "nth": nth, "delay": _round(t - last["t"])}}
        return {"at": self.at(t)}


def user_turns(trace: _Trace) -> list[dict[str, Any]]:
    turns: list[dict[str, Any]] = []
    said: set[str] = set()
    audio_start: float | None = None
    pending_audio: list[float] = []  # start times of committed audio turns awaiting their transcript
    transcripts: list[tuple[float, str]] = []
    for record in trace.records:
        if record.get("kind") != "event":
            continue
        event = record["event"]
        kind = event.get("type")
        if record["dir"] == "in" and kind == "conversation.item.create":
            item = event.get("item") or {}
            text = _user_text(item)
            if item.get("role") == "user" and text and text not in said:
                said.add(text)
                turns.append({"at": trace.at(record["t"]), "say": text})
        elif record["dir"] == "in" and kind == "input_audio_buffer.append" and audio_start is None:
            audio_start = record["t"]
        elif (
            kind in ("input_audio_buffer.committed", "input_audio_buffer.commit") and audio_start is not None
        ):
            pending_audio.append(audio_start)
            audio_start = None
        elif kind == "conversation.item.input_audio_transcription.completed":
            transcripts.append((record["t"], str(event.get("transcript") or "").strip()))
    for index, start in enumerate(pending_audio):
        words = (
            transcripts[index][1] if index < len(transcripts) and transcripts[index][1] else "(audio turn)"
        )
        if words not in said:
            said.add(words)
            turns.append({"at": trace.at(start), "say": words, "mode": "audio"})
    return sorted(turns, key=lambda turn: turn["at"])


def _is_cap(close: Mapping[str, Any], errors_before: Sequence[Mapping[str, Any]]) -> bool:
    reason = str(close.get("reason") or "").lower()
    if any((e["event"].get("error") or {}).get("code") == "session_expired" for e in errors_before):
        return True
    return close.get("code") == 1001 and any(word in reason for word in CAP_REASONS)


def endings(trace: _Trace) -> tuple[list[dict[str, Any]], dict[str, Any], set[str]]:
    """The faults, server settings and what-happened tags that explain how the sessions ended."""
    faults: list[dict[str, Any]] = []
    server: dict[str, Any] = {}
    happened: set[str] = set()
    sessions = {r["session"]: r for r in trace.records if r.get("kind") == "session"}
    errors = [r for r in trace.server_events() if r["event"].get("type") == "error"]
    for close in (r for r in trace.records if r.get("kind") == "close"):
        if close.get("by") == "client":
            continue
        session = sessions.get(close.get("session"))
        mine = [e for e in errors if e.get("session") == close.get("session") and e["t"] <= close["t"]]
        recent = [e for e in mine if close["t"] - e["t"] < 1.0]
        happened.add("disrupted")
        if session is not None and _is_cap(close, recent):
            cap = close["t"] - session["t"]
            server["max_session"] = _round(cap)
            with_error = any((e["event"].get("error") or {}).get("code") == "session_expired" for e in recent)
            server["expiry_ending"] = (
                "both" if with_error and close.get("code") else ("error" if with_error else "close")
            )
            happened.add("cap")
        elif any((e["event"].get("error") or {}).get("code") == "session_idle_timeout" for e in recent):
            idle_since = max(
                (
                    r["t"]
                    for r in trace.records
                    if r.get("session") == close.get("session")
                    and r.get("kind") == "event"
                    and r["dir"] == "in"
                ),
                default=session["t"] if session else close["t"],
            )
            server["idle_timeout"] = _round(close["t"] - idle_since) or 1.0
            happened.add("idle")
        elif close.get("code") in (None, 1006):
            faults.append({**trace.moment(close["t"]), "kind": "drop"})
        else:
            params: dict[str, Any] = {"code": close["code"]}
            if close.get("reason"):
                params["reason"] = str(close["reason"])[:123]
            faults.append({**trace.moment(close["t"]), "kind": "close", "params": params})
        for error in recent:
            if (error["event"].get("error") or {}).get("type") == "server_error":
                happened.add("server_error")
    refusals = [h for h in trace.handshakes if not h.get("accepted")]
    token_refusals = [h for h in refusals if str(h.get("reason") or "").startswith("token_")]
    if token_refusals:
        # the token went bad before the client presented it again: expire it just before that handshake
        faults.append({"at": trace.at(token_refusals[0]["t"] - 0.05), "kind": "expire-tokens"})
        happened.add("token")
    other = [h for h in refusals if h not in token_refusals and h.get("status") in (429, 500, 502, 503)]
    if other:
        params = {"count": len(other), "status": other[0]["status"]}
        if other[0].get("retry_after"):
            params["retry_after"] = other[0]["retry_after"]
        faults.append({"at": trace.at(other[0]["t"] - 0.05), "kind": "reject-connects", "params": params})
        happened.add("refused")
    for error in errors:
        error_body = error["event"].get("error") or {}
        closed_soon = any(
            c.get("kind") == "close"
            and c.get("session") == error.get("session")
            and 0 <= c["t"] - error["t"] < 1.0
            for c in trace.records
        )
        if error_body.get("type") == "server_error" and not closed_soon:
            faults.append({**trace.moment(error["t"] - 0.001), "kind": "server-error"})
            happened.add("server_error")
    return faults, server, happened


def checks_for(happened: set[str], turns: Sequence[Mapping[str, Any]]) -> list[Any]:
    checks: list[Any] = []
    if "disrupted" in happened and not happened & {"cap", "idle"}:
        checks.append({"reconnected_within": {"seconds": 5}})
    if "cap" in happened:
        checks.append({"rotation_before_expiry": {"max_gap": 2}})
    if "idle" in happened:
        checks.append("no_idle_timeout")
    if happened & {"disrupted", "cap", "idle", "token"} and len(turns) > 1:
        checks.append("context_restored")
    if "token" in happened:
        checks.append("tokens_not_retried_blindly")
    if "refused" in happened:
        checks += ["backoff", "respects_retry_after"]
    if "server_error" in happened:
        checks.append("survives_errors")
    if turns:
        checks += ["no_lost_turns", "no_duplicate_responses"]
    checks.append("no_leaked_sessions")
    return checks


def _server_settings(trace: _Trace, inferred: Mapping[str, Any]) -> dict[str, Any]:
    """The recorded server's settings that differ from the defaults (they shaped the run), then what the
    endings imply."""
    defaults = ServerConfig()
    server: dict[str, Any] = {}
    for key in (
        "profile",
        "token_ttl",
        "max_session",
        "idle_timeout",
        "expiry_ending",
        "response_latency",
        "pacing",
        "max_sessions_per_key",
    ):
        value = trace.config.get(key)
        if key != "profile" and value is not None and value != getattr(defaults, key):
            server[key] = value
    server.update(inferred)
    return server


def scenario_from_records(
    records: Sequence[Mapping[str, Any]], *, name: str = "from-trace", source: str = ""
) -> dict[str, Any]:
    """A scenario (plain data) that replays the trace's user turns and the faults that ended its sessions."""
    trace = _Trace(records)
    turns = user_turns(trace)
    faults, inferred, happened = endings(trace)
    server = _server_settings(trace, inferred)
    end = max(r["t"] for r in trace.records if r.get("kind") in ("event", "close", "handshake"))
    client_closes = [r for r in trace.records if r.get("kind") == "close" and r.get("by") == "client"]
    duration = trace.at(client_closes[-1]["t"]) if client_closes else trace.at(end) + TAIL
    last_close = next((r for r in reversed(trace.records) if r.get("kind") == "close"), None)
    if last_close is not None and last_close.get("by") != "client" and last_close["t"] >= end - 0.5:
        duration = max(duration, trace.at(last_close["t"]) + RECONNECT_WINDOW + TAIL)
    described = (
        ", ".join(
            f["kind"] + (f" {f['params']['code']}" if f.get("params", {}).get("code") else "") for f in faults
        )
        or ", ".join(f"{k}={v}" for k, v in inferred.items())
        or "no fault"
    )
    scenario: dict[str, Any] = {
        "name": name,
        "description": f"Reproduces a recorded session{' (' + source + ')' if source else ''}: {described}.",
        "profile": trace.config.get("profile") or "openai",
        "duration": _round(max(duration, max((t["at"] for t in turns), default=0.0) + TAIL)),
    }
    if server:
        scenario["server"] = server
    scenario["user"] = turns
    scenario["faults"] = faults
    scenario["checks"] = checks_for(happened, turns)
    from_dict(scenario, source=name)  # what is written must run
    return scenario


# ---- the command ----------------------------------------------------------------------------------------


def register_on(scenario_parsers: argparse._SubParsersAction) -> None:
    parser = scenario_parsers.add_parser(
        "from-trace",
        help="turn a recorded trace into a scenario that reproduces how it ended",
        description="Read a trace (the JSON Lines `rtsim serve --record DIR` or `rtsim run` writes) and "
        "write a scenario: its user turns, the faults that ended its sessions, and checks that catch it.",
    )
    parser.add_argument("trace", metavar="TRACE")
    parser.add_argument("-o", "--output", required=True, metavar="FILE", help="the scenario file to write")
    parser.add_argument("--name", help="the scenario's name (default: the output file's stem)")
    parser.set_defaults(func=from_trace_command)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("scenario", help="make and inspect scenario files")
    register_on(parser.add_subparsers(dest="scenario_command", required=True))


def from_trace_command(args: argparse.Namespace) -> int:
    output = Path(args.output)
    try:
        records = trace.load(args.trace)  # rtsim's trace, a Chrome HAR, or plain JSON Lines
        scenario = scenario_from_records(records, name=args.name or output.stem, source=Path(args.trace).name)
    except (OSError, ValueError) as exc:
        print(f"rtsim scenario from-trace: {exc}", file=sys.stderr)
        return 2
    output.write_text(yaml.safe_dump(scenario, sort_keys=False, allow_unicode=True))
    faults = "; ".join(f"{f['kind']} {f.get('at', f.get('after'))}" for f in scenario["faults"]) or "none"
    print(f"rtsim scenario from-trace: wrote {output} ({len(scenario['user'])} turn(s); faults: {faults})")
    return 0
