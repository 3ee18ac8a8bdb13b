"""The HTML report of a run: one self-contained page (inline CSS and SVG, nothing fetched) that opens offline.

For every scenario × client it draws the recorded history as a timeline, in the manner of Jepsen's nemesis
plots: each client identity's sessions as lanes, each connection a bar ending in its close code, faults as
shaded regions across the identity's lanes, reconnect gaps bracketed, user turns and answers as marks, and
every failed checker's evidence as a numbered pin the reasons link to. Everything comes from the history
records, so a report can be drawn again from a saved `*.history.jsonl`.
"""

from __future__ import annotations

import html
import itertools
import json
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rtsim.simulator.history import History

from .checkers import DISRUPTING_FAULTS, ITEM_DONE, Verdict, reply_text

if TYPE_CHECKING:
    from .runner import RunResult

SVG_WIDTH = 1120
LABEL_WIDTH = 210
RIGHT_MARGIN = 70  # room for the last bar's close-code badge
LANE_HEIGHT = 40
BAR_TOP = 12  # within a lane: user turns above the bar, answers below
BAR_HEIGHT = 18
PIN_SPACING = 16  # pins for records at one moment stand side by side
HEADER_HEIGHT = 24
AXIS_HEIGHT = 28
MIN_FAULT_PX = 6.0  # an instantaneous fault still shows as a band
# Faults whose `seconds` parameter says how long they last (a stall, a black hole...).
TIMED_PARAMS = ("seconds", "duration")

# The palette: how a connection ended, and the marks.
CLIENT_CLOSE = "#5b8c5a"
SERVER_CLOSE = "#c0504d"
OPEN_BAR = "#8a8a8a"
FAULT_FILL = "#f2a93b"
GAP_COLOR = "#7b3fa0"
USER_COLOR = "#2f6db5"
ANSWER_COLOR = "#1b1b1b"
EVIDENCE_COLOR = "#d62728"


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt_t(t: float) -> str:
    return f"{t:.2f}s"


@dataclass
class Lane:
    """One row of the timeline: an identity's connection attempts, or one of its sessions."""

    label: str
    kind: str  # "attempts" | "session"
    session: str | None = None
    conn: str | None = None
    start_t: float | None = None
    end_t: float | None = None
    close: dict[str, Any] | None = None
    y: float = 0.0


@dataclass
class Identity:
    key_id: str
    attempts: Lane
    sessions: list[Lane] = field(default_factory=list)
    top: float = 0.0
    bottom: float = 0.0

    @property
    def lanes(self) -> list[Lane]:
        return [self.attempts, *self.sessions]


class Scale:
    def __init__(self, t0: float, t1: float) -> None:
        self.t0, self.t1 = t0, max(t1, t0 + 1.0)
        self.x0, self.x1 = float(LABEL_WIDTH), float(SVG_WIDTH - RIGHT_MARGIN)

    def x(self, t: float) -> float:
        return self.x0 + (t - self.t0) / (self.t1 - self.t0) * (self.x1 - self.x0)

    def ticks(self) -> list[float]:
        span = self.t1 - self.t0
        raw = span / 10
        magnitude = 10 ** math.floor(math.log10(raw))
        step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
        first = math.ceil(self.t0 / step) * step
        return [first + i * step for i in range(int((self.t1 - first) / step) + 1)]


def _identities(records: Sequence[dict[str, Any]]) -> list[Identity]:
    """Client identities (API keys) in order of their first appearance, each with its sessions as lanes."""
    by_key: dict[str, Identity] = {}
    session_key: dict[str, str] = {}
    lanes: dict[str, Lane] = {}

    def identity(key_id: str) -> Identity:
        if key_id not in by_key:
            by_key[key_id] = Identity(key_id, Lane("connection attempts", "attempts"))
        return by_key[key_id]

    for record in records:
        kind = record["kind"]
        if kind == "handshake" and record.get("key_id"):
            identity(record["key_id"])
        elif kind == "session":
            key_id = record.get("key_id") or "unknown"
            session_key[record["session"]] = key_id
            lane = Lane(
                record["session"], "session", record["session"], record.get("conn"), start_t=record["t"]
            )
            lanes[record["session"]] = lane
            identity(key_id).sessions.append(lane)
        elif kind == "close" and record.get("session") in lanes:
            lane = lanes[record["session"]]
            lane.end_t, lane.close = record["t"], record
    return list(by_key.values())


def _fault_spans(records: Sequence[dict[str, Any]], run_end: float) -> list[tuple[dict[str, Any], float]]:
    """Each fault record with the moment its effect ends: a toxic when removed, a timed fault after its
    seconds, anything else at once (drawn as a narrow band)."""
    spans: list[tuple[dict[str, Any], float]] = []
    seen_toxic: set[tuple[str, float]] = set()
    faults = [r for r in records if r["kind"] == "fault"]
    for index, record in enumerate(faults):
        name = str(record.get("fault", ""))
        if name.endswith(":removed"):
            continue
        # a session fault is recorded once per session hit: draw it once per identity and moment
        once = (f"{record.get('key_id')}|{name}", round(record["t"], 3))
        if once in seen_toxic:
            continue
        seen_toxic.add(once)
        end = record["t"]
        if name.startswith("toxic:"):
            removed = next(
                (
                    r
                    for r in faults[index + 1 :]
                    if r.get("fault") == f"{name}:removed" and r.get("key_id") == record.get("key_id")
                ),
                None,
            )
            end = removed["t"] if removed is not None else run_end
        elif name in DISRUPTING_FAULTS:
            # a stall or black hole with no stated length lasts as long as the sessions it hit
            hit = set(record.get("applied_to") or [])
            ends = [r["t"] for r in records if r["kind"] == "close" and r.get("session") in hit]
            end = max(ends, default=run_end)
        params = record.get("params") or {}
        for param in TIMED_PARAMS:
            if isinstance(params.get(param), int | float) and params[param] > 0:
                end = record["t"] + float(params[param])
        spans.append((record, min(end, run_end)))
    return spans


def _user_turns(records: Iterable[dict[str, Any]]) -> list[tuple[dict[str, Any], str]]:
    """User turns as the server took them in: the first announcement of each user item."""
    seen: set[str] = set()
    turns = []
    for record in records:
        event = record.get("event") or {}
        if record.get("dir") != "out" or event.get("type") not in (*ITEM_DONE, "conversation.item.added"):
            continue
        item = event.get("item") or {}
        if item.get("role") != "user" or item.get("id") in seen:
            continue
        seen.add(item.get("id"))
        text = " ".join(p.get("text") or p.get("transcript") or "" for p in item.get("content") or [])
        turns.append((record, text.strip() or "(audio)"))
    return turns


class Timeline:
    """The SVG of one run."""

    def __init__(self, records: Sequence[dict[str, Any]], verdicts: Sequence[Verdict], anchor: str) -> None:
        self.records = list(records)
        self.verdicts = list(verdicts)
        self.anchor = anchor
        self.identities = _identities(self.records)
        moments = [r["t"] for r in self.records if r["kind"] not in ("server",)]
        self.run_end = max((r["t"] for r in self.records), default=1.0)
        start = min(moments, default=0.0)
        self.scale = Scale(math.floor(start), self.run_end)
        self.lane_of_session: dict[str, Lane] = {}
        self.lane_of_conn: dict[str, Lane] = {}
        y = float(AXIS_HEIGHT)
        for ident in self.identities:
            ident.top = y
            y += HEADER_HEIGHT
            for lane in ident.lanes:
                lane.y = y
                y += LANE_HEIGHT
                if lane.session:
                    self.lane_of_session[lane.session] = lane
                if lane.conn:
                    self.lane_of_conn[lane.conn] = lane
            ident.bottom = y
            y += 8
        self.height = y + AXIS_HEIGHT

    # ---- pieces ----------------------------------------------------------------------------------------

    def _axis(self, y: float) -> list[str]:
        s = self.scale
        parts = [f'<line class="axis" x1="{s.x0:.1f}" y1="{y:.1f}" x2="{s.x1:.1f}" y2="{y:.1f}"/>']
        for tick in s.ticks():
            x = s.x(tick)
            parts.append(
                f'<line class="tick" x1="{x:.1f}" y1="{y - 3:.1f}" x2="{x:.1f}" y2="{y + 3:.1f}"/>'
                f'<text class="tick-label" x="{x:.1f}" y="{y - 8 if y < 40 else y + 16:.1f}">{tick:g}s</text>'
            )
        return parts

    def _grid(self) -> list[str]:
        s = self.scale
        return [
            f'<line class="grid" x1="{s.x(t):.1f}" y1="{AXIS_HEIGHT:.1f}" x2="{s.x(t):.1f}" '
            f'y2="{self.height - AXIS_HEIGHT:.1f}"/>'
            for t in s.ticks()
        ]

    def _faults(self) -> list[str]:
        s = self.scale
        parts = []
        label_rows: dict[str, list[float]] = {}  # identity → where each label row is free again (x)
        for record, end in _fault_spans(self.records, self.run_end):
            owners = [i for i in self.identities if i.key_id == record.get("key_id")] or self.identities
            x_start = s.x(record["t"])
            width = max(s.x(end) - x_start, MIN_FAULT_PX)
            name = str(record.get("fault"))
            title = f"fault {name} at {_fmt_t(record['t'])}: {record.get('result') or ''}"
            for ident in owners:
                rows = label_rows.setdefault(ident.key_id, [])
                label_x = x_start + width + 3
                row = next((i for i, free in enumerate(rows) if free <= label_x), len(rows))
                if row == len(rows):
                    rows.append(0.0)
                rows[row] = label_x + 7.5 * (len(name) + 2) + 6
                parts.append(
                    f'<g class="fault" data-fault="{_e(name)}" data-t="{record["t"]:.3f}" '
                    f'data-t-end="{end:.3f}">'
                    f"<title>{_e(title)}</title>"
                    f'<rect class="fault-region" x="{x_start:.1f}" y="{ident.top:.1f}" width="{width:.1f}" '
                    f'height="{ident.bottom - ident.top:.1f}"/>'
                    f'<text class="fault-label" x="{label_x:.1f}" y="{ident.top + 15 + 13 * row:.1f}">'
                    f"⚡ {_e(name)}</text></g>"
                )
        return parts

    def _attempts(self, ident: Identity) -> list[str]:
        s, lane = self.scale, ident.attempts
        mid = lane.y + LANE_HEIGHT / 2
        parts = [
            f'<text class="lane-label" x="8" y="{mid + 4:.1f}">{_e(lane.label)}</text>',
            f'<line class="lane-rule" x1="{s.x0:.1f}" y1="{mid:.1f}" x2="{s.x1:.1f}" y2="{mid:.1f}"/>',
        ]
        with_session = {r.get("conn") for r in self.records if r["kind"] == "session"}
        closes = {r.get("conn"): r for r in self.records if r["kind"] == "close"}
        code_free_at = 0.0  # a code label is left out where it would run into the previous one
        for record in self.records:
            if record["kind"] != "handshake" or record.get("key_id") != ident.key_id:
                continue
            x = s.x(record["t"])
            close = closes.get(record["conn"])
            if record.get("accepted") and record["conn"] not in with_session and close is not None:
                # accepted, then closed before a session began (e.g. accept-then-close 1008 loops)
                code = str(close.get("code"))
                x_end = max(s.x(close["t"]), x + 3)
                label = (
                    f'<text class="attempt-code" x="{x_end + 3:.1f}" y="{mid - 6:.1f}">{_e(code)}</text>'
                    if x_end + 3 >= code_free_at
                    else ""
                )
                code_free_at = max(code_free_at, x_end + 3 + 8 * len(code)) if label else code_free_at
                by = close.get("by")
                title = f"{record['conn']} accepted, closed {code} by {by} before a session began"
                parts.append(
                    f'<g class="conn sessionless" data-conn="{_e(record["conn"])}" '
                    f'data-t="{record["t"]:.3f}" data-t-end="{close["t"]:.3f}" data-close-code="{_e(code)}" '
                    f'data-by="{_e(by)}"><title>{_e(title)}</title>'
                    f'<rect x="{x:.1f}" y="{mid - 3:.1f}" width="{x_end - x:.1f}" height="6" '
                    f'fill="{SERVER_CLOSE}"/>'
                    f"{label}</g>"
                )
            self.lane_of_conn.setdefault(record["conn"], lane)
            accepted = bool(record.get("accepted"))
            title = f"{record['conn']} at {_fmt_t(record['t'])}: " + (
                "accepted" if accepted else f"refused {record.get('status')} {record.get('reason') or ''}"
            )
            shape = (
                f'<circle cx="{x:.1f}" cy="{mid:.1f}" r="4"/>'
                if accepted
                else f'<path d="M{x - 4:.1f},{mid - 4:.1f}L{x + 4:.1f},{mid + 4:.1f}'
                f'M{x - 4:.1f},{mid + 4:.1f}L{x + 4:.1f},{mid - 4:.1f}"/>'
            )
            parts.append(
                f'<g class="attempt {"accepted" if accepted else "refused"}" data-t="{record["t"]:.3f}">'
                f"<title>{_e(title)}</title>{shape}</g>"
            )
        return parts

    def _session(self, lane: Lane) -> list[str]:
        s = self.scale
        top = lane.y + BAR_TOP
        mid = top + BAR_HEIGHT / 2
        start = lane.start_t or 0.0
        end = lane.end_t if lane.end_t is not None else self.run_end
        close = lane.close or {}
        by = close.get("by")
        color = OPEN_BAR if lane.close is None else CLIENT_CLOSE if by == "client" else SERVER_CLOSE
        code = "open" if lane.close is None else str(close["code"]) if close.get("code") is not None else "—"
        ended = "still open at the end" if lane.close is None else f"closed {code} by {by}"
        x_start, x_end = s.x(start), s.x(end)
        parts = [
            f'<text class="lane-label" x="8" y="{mid + 4:.1f}">{_e(lane.label)}</text>',
            f'<g class="conn" data-session="{_e(lane.session)}" data-conn="{_e(lane.conn)}" '
            f'data-t="{start:.3f}" data-t-end="{end:.3f}" data-close-code="{_e(code)}" data-by="{_e(by)}">'
            f"<title>{_e(f'{lane.session} ({lane.conn}) {_fmt_t(start)} – {_fmt_t(end)}, {ended}')}</title>"
            f'<rect class="conn-bar" x="{x_start:.1f}" y="{top:.1f}" width="{max(x_end - x_start, 2):.1f}" '
            f'height="{BAR_HEIGHT:.1f}" rx="3" fill="{color}"/>'
            f'<rect class="close-badge" x="{x_end + 2:.1f}" y="{top:.1f}" width="{8 + 7 * len(code):.1f}" '
            f'height="{BAR_HEIGHT:.1f}" rx="3" fill="{color}"/>'
            f'<text class="close-code" x="{x_end + 6:.1f}" y="{mid + 4:.1f}">{_e(code)}</text></g>',
        ]
        parts += self._responses(lane, top)
        return parts

    def _responses(self, lane: Lane, top: float) -> list[str]:
        """A response as a strip on its session's bar (cut short where the session died), answers as dots."""
        s = self.scale
        bottom = top + BAR_HEIGHT
        created: dict[str, float] = {}
        parts = []
        events = [r for r in self.records if r["kind"] == "event" and r.get("session") == lane.session]
        for record in events:
            event = record["event"]
            kind = event.get("type")
            if record["dir"] != "out":
                continue
            if kind == "response.created":
                created[(event.get("response") or {}).get("id", "")] = record["t"]
            elif kind == "response.done":
                response = event.get("response") or {}
                began = created.pop(response.get("id", ""), record["t"])
                status = response.get("status")
                x = s.x(record["t"])
                parts.append(
                    f'<rect class="speaking" x="{s.x(began):.1f}" y="{top + 4:.1f}" '
                    f'width="{max(x - s.x(began), 1):.1f}" height="{bottom - top - 8:.1f}"/>'
                )
                title = f"answer ({status}) at {_fmt_t(record['t'])}: {reply_text(event)}"
                parts.append(
                    f'<g class="answer {_e(status)}" data-t="{record["t"]:.3f}" '
                    f'data-session="{_e(lane.session)}"><title>{_e(title)}</title>'
                    f'<circle cx="{x:.1f}" cy="{bottom + 3:.1f}" r="4"/></g>'
                )
        for began in created.values():  # never finished: the session ended under it
            end = lane.end_t if lane.end_t is not None else self.run_end
            parts.append(
                f'<g class="answer cut" data-t="{end:.3f}" data-session="{_e(lane.session)}">'
                f"<title>{_e(f'response begun at {_fmt_t(began)} never finished')}</title>"
                f'<rect class="speaking cut" x="{s.x(began):.1f}" y="{top + 4:.1f}" '
                f'width="{max(s.x(end) - s.x(began), 1):.1f}" height="{bottom - top - 8:.1f}"/></g>'
            )
        for record, text in _user_turns(events):
            x = s.x(record["t"])
            title = f"user turn at {_fmt_t(record['t'])}: {text}"
            parts.append(
                f'<g class="user-turn" data-t="{record["t"]:.3f}" data-session="{_e(lane.session)}">'
                f"<title>{_e(title)}</title>"
                f'<path d="M{x - 5:.1f},{top - 7:.1f}L{x + 5:.1f},{top - 7:.1f}L{x:.1f},{top:.1f}Z"/></g>'
            )
        for record in self.records:
            if record["kind"] == "transport" and record.get("session") == lane.session:
                x = s.x(record["t"])
                title = f"{record.get('what')} {record.get('state')} at {_fmt_t(record['t'])}"
                parts.append(
                    f'<g class="transport" data-t="{record["t"]:.3f}">'
                    f"<title>{_e(title)}</title>"
                    f'<path d="M{x:.1f},{bottom - 2:.1f}l4,4l-4,4l-4,-4Z"/></g>'
                )
        return parts

    def _gaps(self, ident: Identity) -> list[str]:
        """Between a session's end and the next session of the same identity: the time without one."""
        s = self.scale
        parts = []
        ordered = sorted(ident.sessions, key=lambda lane: lane.start_t or 0.0)
        for previous, following in itertools.pairwise(ordered):
            if previous.end_t is None or following.start_t is None or following.start_t <= previous.end_t:
                continue
            seconds = following.start_t - previous.end_t
            x_a, x_b = s.x(previous.end_t), s.x(following.start_t)
            y = following.y + LANE_HEIGHT / 2
            parts.append(
                f'<g class="gap" data-t="{previous.end_t:.3f}" data-t-end="{following.start_t:.3f}" '
                f'data-seconds="{seconds:.3f}">'
                f"<title>{_e(f'no session for {seconds:.2f}s (reconnect gap)')}</title>"
                f'<rect class="gap-region" x="{x_a:.1f}" y="{previous.y + LANE_HEIGHT / 2:.1f}" '
                f'width="{x_b - x_a:.1f}" height="{y - previous.y - LANE_HEIGHT / 2:.1f}"/>'
                f'<line class="gap-line" x1="{x_a:.1f}" y1="{y:.1f}" x2="{x_b:.1f}" y2="{y:.1f}"/>'
                f'<line class="gap-line" x1="{x_a:.1f}" y1="{y - 6:.1f}" x2="{x_a:.1f}" y2="{y + 6:.1f}"/>'
                f'<line class="gap-line" x1="{x_b:.1f}" y1="{y - 6:.1f}" x2="{x_b:.1f}" y2="{y + 6:.1f}"/>'
                f'<text class="gap-label" x="{(x_a + x_b) / 2:.1f}" y="{y - 5:.1f}">'
                f"gap {seconds:.2f}s</text></g>"
            )
        last = ordered[-1] if ordered else None
        if (
            last is not None
            and last.close is not None
            and last.close.get("by") != "client"
            and last.end_t is not None
            and self.run_end - last.end_t > 0.5
        ):
            # the server or network ended the last session and the client never had another
            seconds = self.run_end - last.end_t
            badge = 8 + 7 * len(str(last.close.get("code")))
            x_a, x_b = s.x(last.end_t) + badge + 6, s.x(self.run_end)
            y = last.y + BAR_TOP + BAR_HEIGHT / 2
            parts.append(
                f'<g class="gap open" data-t="{last.end_t:.3f}" data-t-end="{self.run_end:.3f}" '
                f'data-seconds="{seconds:.3f}">'
                f"<title>{_e(f'no session again for the remaining {seconds:.2f}s of the run')}</title>"
                f'<line class="gap-line open" x1="{x_a:.1f}" y1="{y:.1f}" x2="{x_b:.1f}" y2="{y:.1f}"/>'
                f'<text class="gap-label" x="{(x_a + x_b) / 2:.1f}" y="{y - 4:.1f}">'
                f"no session again ({seconds:.2f}s)</text></g>"
            )
        return parts

    def _evidence(self) -> list[str]:
        """A numbered pin per record a failed checker gave as evidence, where that record sits."""
        s = self.scale
        parts = []
        taken: dict[tuple[int, int], int] = {}  # (lane, pixel) → pins already there
        for number, verdict in enumerate(self.failures(), 1):
            for index, record in enumerate(verdict.evidence):
                lane = self._lane_for(record)
                if lane is None or "t" not in record:
                    continue
                x = s.x(record["t"])
                spot = (id(lane), round(x))
                stacked = taken.get(spot, 0)
                taken[spot] = stacked + 1
                pin_x, y = x + PIN_SPACING * stacked, lane.y + 4
                what = record.get("type") or record.get("kind") or ""
                title = f"{verdict.name}: {what} at {_fmt_t(record['t'])}"
                parts.append(
                    f'<g class="evidence" id="{self.anchor}-ev{number}-{index + 1}" '
                    f'data-checker="{_e(verdict.name)}" data-t="{record["t"]:.3f}">'
                    f"<title>{_e(title)}</title>"
                    f'<line class="evidence-stem" x1="{pin_x:.1f}" y1="{y:.1f}" x2="{x:.1f}" '
                    f'y2="{lane.y + BAR_TOP + BAR_HEIGHT + 4:.1f}"/>'
                    f'<circle class="evidence-pin" cx="{pin_x:.1f}" cy="{y:.1f}" r="7"/>'
                    f'<text class="evidence-number" x="{pin_x:.1f}" y="{y + 3.5:.1f}">{number}</text></g>'
                )
        return parts

    def _lane_for(self, record: dict[str, Any]) -> Lane | None:
        if record.get("session") in self.lane_of_session:
            return self.lane_of_session[record["session"]]
        if record.get("conn") in self.lane_of_conn:
            return self.lane_of_conn[record["conn"]]
        return self.identities[0].attempts if self.identities else None

    def failures(self) -> list[Verdict]:
        return [v for v in self.verdicts if not v.ok]

    def svg(self) -> str:
        if not self.identities:
            return '<p class="empty">No client connected: the history holds no handshake or session.</p>'
        parts = [*self._grid(), *self._faults()]
        for ident in self.identities:
            parts.append(
                f'<text class="identity-label" x="8" y="{ident.top + 16:.1f}">client identity '
                f"{_e(ident.key_id)}</text>"
                f'<line class="identity-rule" x1="0" y1="{ident.top:.1f}" x2="{SVG_WIDTH}" '
                f'y2="{ident.top:.1f}"/>'
            )
            parts += self._attempts(ident)
            for lane in ident.sessions:
                parts.append(f'<g class="lane" data-session="{_e(lane.session)}">')
                parts += self._session(lane)
                parts.append("</g>")
            parts += self._gaps(ident)
        parts += self._evidence()
        parts += self._axis(AXIS_HEIGHT - 4) + self._axis(self.height - AXIS_HEIGHT + 4)
        return (
            f'<svg class="timeline" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {SVG_WIDTH} '
            f'{self.height:.0f}" width="{SVG_WIDTH}" height="{self.height:.0f}" role="img" '
            f'aria-label="timeline of the run">' + "".join(parts) + "</svg>"
        )


LEGEND = (
    '<div class="legend">'
    f'<span><i style="background:{CLIENT_CLOSE}"></i>connection closed by the client</span>'
    f'<span><i style="background:{SERVER_CLOSE}"></i>ended by the server or network</span>'
    f'<span><i style="background:{OPEN_BAR}"></i>still open</span>'
    f'<span><i style="background:{FAULT_FILL};opacity:.5"></i>fault</span>'
    f'<span><i style="border:2px dashed {GAP_COLOR}"></i>reconnect gap</span>'
    f'<span><b style="color:{USER_COLOR}">▼</b> user turn</span>'
    f'<span><b style="color:{ANSWER_COLOR}">●</b> answer (○ not completed)</span>'
    f'<span><b style="color:{EVIDENCE_COLOR}">①</b> evidence of a failed check</span>'
    "</div>"
)

CSS = f"""
body {{ font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px; color: #1b1b1b; }}
h1 {{ font-size: 22px; margin: 0 0 4px; }} h2 {{ font-size: 18px; margin: 28px 0 6px; }}
.meta {{ color: #555; }}
table.results {{ border-collapse: collapse; margin: 12px 0; }}
table.results th, table.results td {{ border-bottom: 1px solid #ddd; padding: 4px 12px 4px 0;
  text-align: left; }}
.PASS {{ color: {CLIENT_CLOSE}; font-weight: 600; }} .FAIL {{ color: {SERVER_CLOSE}; font-weight: 600; }}
ol.reasons li {{ margin: 4px 0; }} ol.reasons a {{ color: {EVIDENCE_COLOR}; margin-left: 6px; }}
.checker {{ font-family: ui-monospace, monospace; font-weight: 600; }}
pre.evidence-records {{ background: #f6f6f6; padding: 6px; font-size: 12px; overflow-x: auto;
  margin: 2px 0; }}
.timeline {{ display: block; margin: 8px 0; max-width: 100%; height: auto; }}
.timeline text {{ font: 12px system-ui, sans-serif; fill: #1b1b1b; }}
.axis, .tick {{ stroke: #555; }} .grid {{ stroke: #eee; }} .tick-label {{ text-anchor: middle; fill: #555; }}
.identity-label {{ font-weight: 600; }} .identity-rule {{ stroke: #ccc; }}
.lane-rule {{ stroke: #ddd; stroke-dasharray: 2 3; }}
.fault-region {{ fill: {FAULT_FILL}; fill-opacity: .35; stroke: {FAULT_FILL}; }}
.timeline .fault-label {{ fill: #9a5b00; font-weight: 600; }}
.attempt.accepted circle {{ fill: {CLIENT_CLOSE}; }}
.attempt.refused path {{ stroke: {SERVER_CLOSE}; stroke-width: 2.5; }}
.timeline .close-code {{ fill: #fff; font-weight: 700; font-family: ui-monospace, monospace; }}
.speaking {{ fill: #fff; fill-opacity: .45; }} .speaking.cut {{ fill: #fff; fill-opacity: .8; stroke: #fff;
  stroke-dasharray: 3 2; }}
.answer circle {{ fill: {ANSWER_COLOR}; }} .answer.cancelled circle, .answer.incomplete circle,
.answer.failed circle {{ fill: #fff; stroke: {ANSWER_COLOR}; stroke-width: 1.5; }}
.timeline .attempt-code {{ fill: {SERVER_CLOSE}; font-size: 10px; font-weight: 700; }}
details > summary h2 {{ display: inline; }}
.user-turn path {{ fill: {USER_COLOR}; }} .transport path {{ fill: #555; }}
.gap-region {{ fill: {GAP_COLOR}; fill-opacity: .08; stroke: {GAP_COLOR}; stroke-dasharray: 4 3; }}
.gap-line {{ stroke: {GAP_COLOR}; stroke-width: 2; }} .gap-line.open {{ stroke-dasharray: 6 4; }}
.timeline .gap-label {{ fill: {GAP_COLOR}; font-weight: 700; text-anchor: middle; }}
.evidence-pin {{ fill: {EVIDENCE_COLOR}; stroke: #fff; stroke-width: 1.5; }}
.evidence-stem {{ stroke: {EVIDENCE_COLOR}; stroke-width: 1.5; }}
.timeline .evidence-number {{ fill: #fff; font-size: 10px; font-weight: 700; text-anchor: middle; }}
.evidence:target .evidence-pin {{ r: 10; stroke: #000; stroke-width: 2.5; }}
.legend {{ display: flex; flex-wrap: wrap; gap: 14px; color: #444; font-size: 12px; }}
.legend i {{ display: inline-block; width: 18px; height: 10px; margin-right: 4px; vertical-align: middle; }}
details > summary {{ cursor: pointer; }}
"""


def _slug(result: RunResult, index: int) -> str:
    name = f"{result.scenario.name}--{result.client.name}"
    safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in name)
    return f"run{index}-{safe}"


def records_of(result: RunResult) -> list[dict[str, Any]]:
    """The run's records: kept on the result, or read back from its saved history."""
    if result.records:
        return result.records
    if result.history_path is not None and Path(result.history_path).exists():
        return History.load(result.history_path)
    return []


def _section(result: RunResult, index: int, out_dir: Path | None) -> str:
    anchor = _slug(result, index)
    timeline = Timeline(records_of(result), result.verdicts, anchor)
    status = "PASS" if result.passed else "FAIL"
    reasons = []
    for number, verdict in enumerate(timeline.failures(), 1):
        links = "".join(
            f'<a href="#{anchor}-ev{number}-{j}">→ t={record["t"]:.2f}s</a>'
            for j, record in enumerate(verdict.evidence, 1)
            if "t" in record
        )
        shown = "\n".join(json.dumps(r, default=str) for r in verdict.evidence[:4])
        reasons.append(
            f'<li><span class="checker">{_e(verdict.name)}</span>: {_e(verdict.reason)}{links}'
            + (f'<pre class="evidence-records">{_e(shown)}</pre>' if shown else "")
            + "</li>"
        )
    files = []
    for label, path in (("history", result.history_path), ("client log", result.log_path)):
        if path is not None:
            href = Path(path).name if out_dir is not None and Path(path).parent == out_dir else str(path)
            files.append(f'<a href="{_e(href)}">{label}</a>')
    body = (
        f"<p>{_e(result.scenario.description)}</p>"
        + (f'<ol class="reasons">{"".join(reasons)}</ol>' if reasons else "<p>Every check passed.</p>")
        + ("<p><b>faults:</b> " + "; ".join(_e(f) for f in result.faults) + "</p>" if result.faults else "")
        + timeline.svg()
        + LEGEND
        + (f'<p class="meta">{" · ".join(files)}</p>' if files else "")
    )
    heading = (
        f'<h2 id="{anchor}">{_e(result.scenario.name)} × {_e(result.client.name)} — '
        f'<span class="{status}">{status}</span> <small class="meta">{result.seconds:.1f}s</small></h2>'
    )
    if result.passed:
        return (
            f'<section class="run" data-status="{status}"><details><summary>{heading}</summary>{body}'
            "</details></section>"
        )
    return f'<section class="run" data-status="{status}">{heading}{body}</section>'


def render_report(
    results: Sequence[RunResult], *, title: str = "rtsim run", out_dir: Path | None = None
) -> str:
    """The whole report as one HTML document: the result table, then each run's reasons and timeline
    (failures first and open; passes folded)."""
    ordered = sorted(results, key=lambda r: (r.client.name, r.scenario.name))
    rows = []
    for index, result in enumerate(ordered):
        status = "PASS" if result.passed else "FAIL"
        figures = " ".join(f"{k}={v}" for k, v in result.figures.items() if not isinstance(v, str))
        rows.append(
            f'<tr><td><a href="#{_slug(result, index)}">{_e(result.scenario.name)}</a></td>'
            f'<td>{_e(result.client.name)}</td><td class="{status}">{status}</td>'
            f"<td>{result.seconds:.1f}s</td><td>{_e(figures)}</td></tr>"
        )
    sections = [(not r.passed, _section(r, i, out_dir)) for i, r in enumerate(ordered)]
    failed = sum(not r.passed for r in results)
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{_e(title)}: {len(results) - failed} passed, {failed} failed</title>"
        f"<style>{CSS}</style></head><body>"
        f"<h1>{_e(title)}</h1>"
        f'<p class="meta">{len(results) - failed} passed, {failed} failed · '
        f"{time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}</p>"
        '<table class="results"><thead><tr><th>scenario</th><th>client</th><th>result</th><th>time</th>'
        f"<th>figures</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
        + "".join(html_ for failing, html_ in sections if failing)
        + "".join(html_ for failing, html_ in sections if not failing)
        + "</body></html>\n"
    )


def write_report(results: Sequence[RunResult], path: str | Path, *, title: str = "rtsim run") -> Path:
    """Write `render_report(results)` to `path` (links to histories are relative when they sit beside it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_report(results, title=title, out_dir=path.parent), encoding="utf-8")
    return path
