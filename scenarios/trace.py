"""Traces from elsewhere as rtsim records: `load(path)` reads any of the three formats below.

- rtsim's record (JSON Lines, what `rtsim serve --record DIR` and `rtsim record --out TRACE` write): every
  line a record with `kind` (see `rtsim.simulator.history`). Returned as is.
- A Chrome HAR (DevTools → Network → "Save all as HAR with content"): each entry with `_webSocketMessages`
  (`type` send | receive, `time` epoch seconds, `opcode` 1 text | 2 binary, `data`) is one connection.
- Plain JSON Lines of `{"t": seconds, "direction": "in" | "out", "event": {...}}` (`in`: the client sent
  it), optionally ending with `{"t": seconds, "close": {"code": 1006, "reason": "", "by": "server"}}`.

Whatever the input, the result is rtsim's record shapes: per connection a `handshake` (`conn`, `path`,
`accepted`, `status`), a `session` when a `session.created` names one, `event` records (`dir`, `session`,
`conn`, `event`, `t` in seconds from the start of the trace) and a `close` when the input knows how the
connection ended. A HAR's credentials stay out: only a fingerprint of the Authorization header is kept.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from ..simulator.record import BINARY_FRAME, UNPARSED_FRAME
from ..simulator.tokens import key_id

FORMATS = ("rtsim", "har", "jsonl")


class TraceError(ValueError):
    """The file is none of the known trace formats, or is malformed."""


def detect(text: str) -> str:
    """Which format a trace's text is in: `rtsim`, `har` or `jsonl`."""
    stripped = text.lstrip()
    if not stripped:
        raise TraceError("the trace is empty")
    first_line = stripped.splitlines()[0]
    try:
        first = json.loads(first_line)
    except ValueError:
        first = None
    if isinstance(first, dict) and "kind" in first:
        return "rtsim"
    if isinstance(first, dict) and ("direction" in first or "close" in first):
        return "jsonl"
    try:
        whole = json.loads(stripped)
    except ValueError:
        raise TraceError("not JSON Lines of records or events, and not a HAR file") from None
    if isinstance(whole, dict) and isinstance(whole.get("log"), dict):
        return "har"
    raise TraceError("not JSON Lines of records or events, and not a HAR file")


def load(path: str | Path) -> list[dict[str, Any]]:
    """The trace at `path` (any of `FORMATS`) as rtsim records, in order."""
    text = Path(path).read_text(encoding="utf-8")
    return parse(text)


def parse(text: str) -> list[dict[str, Any]]:
    kind = detect(text)
    if kind == "rtsim":
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    if kind == "har":
        return from_har(json.loads(text))
    return from_events(json.loads(line) for line in text.splitlines() if line.strip())


class _Builder:
    """Numbers records (`seq`) and keeps the session id of each connection for its events."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self.session_of: dict[str, str | None] = {}

    def add(self, kind: str, t: float, **fields: Any) -> None:
        self.records.append({"seq": len(self.records), "t": round(t, 6), "kind": kind, **fields})

    def handshake(self, conn: str, t: float, path: str = "/v1/realtime", **fields: Any) -> None:
        self.session_of[conn] = None
        self.add(
            "handshake",
            t,
            conn=conn,
            path=path,
            **{"transport": "websocket", "accepted": True, "status": 101, **fields},
        )

    def event(self, conn: str, t: float, direction: str, event: dict[str, Any]) -> None:
        if direction == "out" and event.get("type") == "session.created":
            session = event.get("session") or {}
            self.session_of[conn] = session.get("id")
            self.add("session", t, session=session.get("id"), conn=conn, model=session.get("model"))
        self.add("event", t, dir=direction, session=self.session_of.get(conn), conn=conn, event=event)

    def close(self, conn: str, t: float, code: int | None, reason: str, by: str) -> None:
        fields: dict[str, Any] = {"drop": True} if code == 1006 else {}
        self.add(
            "close",
            t,
            session=self.session_of.get(conn),
            conn=conn,
            code=code,
            reason=reason,
            by=by,
            **fields,
        )


def _frame(opcode: Any, data: Any) -> dict[str, Any]:
    if opcode == 2:
        return {"type": BINARY_FRAME, "binary_bytes": len(data or "")}
    try:
        event = json.loads(data)
    except (TypeError, ValueError):
        return {"type": UNPARSED_FRAME, "text": data}
    return event if isinstance(event, dict) else {"type": UNPARSED_FRAME, "text": data}


def from_har(har: dict[str, Any]) -> list[dict[str, Any]]:
    """Every WebSocket entry of a HAR as one connection (in the order the entries started)."""
    entries = [e for e in har["log"].get("entries", []) if e.get("_webSocketMessages") is not None]
    if not entries:
        raise TraceError("the HAR file has no WebSocket entries (_webSocketMessages)")
    start = min(
        (m["time"] for e in entries for m in e["_webSocketMessages"] if "time" in m),
        default=0.0,
    )
    build = _Builder()
    for index, entry in enumerate(entries, 1):
        conn = f"conn_{index}"
        request, response = entry.get("request", {}), entry.get("response", {})
        url = urlsplit(request.get("url", ""))
        headers = {h["name"].lower(): h["value"] for h in request.get("headers", [])}
        auth = headers.get("authorization", "")
        credential = auth[7:].strip() if auth.lower().startswith("bearer ") else None
        messages = entry["_webSocketMessages"]
        first = messages[0]["time"] if messages else start
        build.handshake(
            conn,
            first - start,
            path=url.path or "/v1/realtime",
            query=dict(parse_qsl(url.query)),
            key_id=key_id(credential) if credential else None,
            status=response.get("status", 101),
        )
        for message in messages:
            direction = "in" if message.get("type") == "send" else "out"
            build.event(
                conn,
                message["time"] - start,
                direction,
                _frame(message.get("opcode", 1), message.get("data")),
            )
    return build.records


def from_events(lines: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Plain `{"t", "direction", "event"}` lines: one connection, and its close when the last line says."""
    build = _Builder()
    conn = "conn_1"
    build.handshake(conn, 0.0)
    for number, line in enumerate(lines, 1):
        if not isinstance(line, dict) or "t" not in line:
            raise TraceError(f"line {number}: expected an object with 't'")
        if "close" in line:
            close = line["close"] or {}
            build.close(
                conn, float(line["t"]), close.get("code"), close.get("reason", ""), close.get("by", "server")
            )
            break
        direction, event = line.get("direction"), line.get("event")
        if direction not in ("in", "out") or not isinstance(event, dict):
            raise TraceError(f"line {number}: expected direction 'in' or 'out' and an event object")
        build.event(conn, float(line["t"]), direction, event)
    return build.records
