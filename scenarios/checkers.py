"""Invariants over the recorded history, judged from the server's side (so any client, in any language).

Each checker takes a `RunView` (the history of one client identity) and its parameters and returns a
`Verdict`: pass or fail, a reason a person can act on, and the records that show it. Figures (a reconnect
gap, a number of attempts) go into `figures` for the report.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from rtsim.simulator.model import known_facts

AUDIO_DELTAS = ("response.output_audio.delta", "response.audio.delta")
ITEM_DONE = ("conversation.item.done", "conversation.item.created")
FATAL_CLOSES = (3000, 4000, 1008)
# Upgrades accepted only to be refused (an error event, then close 3000 or 4000): a retry repeats them.
FATAL_HANDSHAKE_REASONS = (
    "invalid_api_key",
    "missing_credential",
    "missing_model",
    "invalid_model",
    "beta_api_shape_disabled",
)


@dataclass
class Verdict:
    name: str
    ok: bool
    reason: str = ""
    evidence: list[dict[str, Any]] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)


@dataclass
class SessionView:
    id: str
    conn: str
    start_t: float
    start_wall: float
    deadline_wall: float | None
    end_t: float | None = None
    end_wall: float | None = None
    close: dict[str, Any] | None = None
    events: list[dict[str, Any]] = field(default_factory=list)  # event records, both directions

    @property
    def closed_gracefully_by_client(self) -> bool:
        # WebRTC has no close codes: a client's hangup is recorded with code None. A close frame with no
        # status (1005) is as deliberate as 1000: it is what a browser's `WebSocket.close()` sends.
        close = self.close or {}
        return close.get("by") == "client" and close.get("code") in (1000, 1005, None)

    def out(self, *types: str) -> list[dict[str, Any]]:
        return [r for r in self.events if r["dir"] == "out" and r["event"].get("type") in types]

    def incoming(self, *types: str) -> list[dict[str, Any]]:
        return [r for r in self.events if r["dir"] == "in" and r["event"].get("type") in types]


class RunView:
    """One run's history, organised: sessions in order with their events, handshakes, faults, HTTP calls."""

    def __init__(
        self,
        records: Iterable[dict[str, Any]],
        *,
        user_turns: tuple[Any, ...] = (),
        client_exit: int | None = None,
        run_end_t: float | None = None,
    ) -> None:
        self.records = list(records)
        self.user_turns = user_turns
        self.client_exit = client_exit
        self.sessions: list[SessionView] = []
        by_id: dict[str, SessionView] = {}
        self.handshakes = [r for r in self.records if r["kind"] == "handshake"]
        self.faults = [r for r in self.records if r["kind"] == "fault"]
        self.http = [r for r in self.records if r["kind"] == "http"]
        for record in self.records:
            kind = record["kind"]
            if kind == "session":
                view = SessionView(
                    record["session"],
                    record["conn"],
                    record["t"],
                    record["wall"],
                    record.get("deadline_wall"),
                )
                self.sessions.append(view)
                by_id[view.id] = view
            elif kind == "event" and record.get("session") in by_id:
                by_id[record["session"]].events.append(record)
            elif kind == "close" and record.get("session") in by_id:
                view = by_id[record["session"]]
                view.end_t, view.end_wall, view.close = record["t"], record["wall"], record
        self.run_end_t = (
            run_end_t if run_end_t is not None else (self.records[-1]["t"] if self.records else 0.0)
        )

    def session_after(self, t: float) -> SessionView | None:
        return next((s for s in self.sessions if s.start_t >= t), None)


def _brief(record: dict[str, Any]) -> dict[str, Any]:
    """A record trimmed for a report line."""
    if record["kind"] == "event":
        event = record["event"]
        keep = {k: event[k] for k in ("type", "item_id", "response_id", "audio_end_ms", "code") if k in event}
        if "error" in event:
            keep["error"] = {k: event["error"].get(k) for k in ("code", "message")}
        if "response" in event:
            keep["status"] = event["response"].get("status")
        return {"t": record["t"], "session": record.get("session"), **keep}
    return {
        k: v
        for k, v in record.items()
        if k
        in (
            "t",
            "kind",
            "session",
            "conn",
            "code",
            "by",
            "reason",
            "status",
            "accepted",
            "fault",
            "credential",
            "result",
        )
    }


# ---- the conversation as the model saw it ------------------------------------------------------------------


def conversation_before(session: SessionView, t: float) -> tuple[list[dict[str, Any]], str]:
    """The items and instructions the session held just before time t (from what the server announced)."""
    items: dict[str, dict[str, Any]] = {}
    instructions = ""
    for record in session.events:
        if record["t"] >= t:
            break
        event = record["event"]
        kind = event.get("type")
        if record["dir"] != "out":
            continue
        if kind in ITEM_DONE or kind == "conversation.item.added":
            items[event["item"]["id"]] = event["item"]
        elif kind == "conversation.item.deleted":
            items.pop(event.get("item_id"), None)
        elif kind in ("session.created", "session.updated"):
            instructions = event["session"].get("instructions") or ""
    return list(items.values()), instructions


def facts_of(session: SessionView, until: float) -> dict[str, str]:
    items, instructions = conversation_before(session, until)
    return known_facts(items, instructions)


def reply_text(response_done: dict[str, Any]) -> str:
    return " ".join(
        part.get("transcript") or part.get("text") or ""
        for item in response_done["response"].get("output") or []
        for part in item.get("content") or []
    ).strip()


def _user_text(item: dict[str, Any]) -> str:
    return " ".join(p.get("text") or p.get("transcript") or "" for p in item.get("content") or []).strip()


def answered_turns(
    run: RunView, *, interrupted_counts: bool = False
) -> list[tuple[str, dict[str, Any], SessionView]]:
    """(user text, response.done record, session) for every completed response to a user turn.

    With `interrupted_counts`, a response the user talked over (cancelled by the client or by turn detection)
    counts too: the user moved on, nothing was lost.
    """
    statuses = ("completed", "cancelled") if interrupted_counts else ("completed",)
    answers = []
    for session in run.sessions:
        last_user = ""
        seen: set[Any] = set()  # a response.done delivered twice (a redelivering relay) is one answer
        for record in session.events:
            event = record["event"]
            if record["dir"] != "out":
                continue
            kind = event.get("type")
            if kind in ITEM_DONE and event["item"].get("role") == "user":
                last_user = _user_text(event["item"])
            elif kind == "response.done" and event["response"].get("status") in statuses and last_user:
                response_id = event["response"].get("id") or event.get("event_id")
                if event["response"].get("conversation_id") is not None and response_id not in seen:
                    seen.add(response_id)
                    answers.append((last_user, record, session))
    return answers


def _same_turn(spoken: str, seen: str) -> bool:
    norm = lambda text: re.sub(r"\W+", " ", text).strip().lower()  # noqa: E731
    return norm(spoken) == norm(seen)


# ---- checkers ----------------------------------------------------------------------------------------


# Faults that leave the socket open (a stall, a network black hole): only the client can notice and move on.
DISRUPTING_FAULTS = ("stall", "toxic:timeout", "ice-blackhole", "sctp-abort", "datachannel-close")


def reconnected_within(run: RunView, seconds: float = 5.0) -> Verdict:
    """After every session the server or network ended (or stalled), a new session came within `seconds`."""
    disruptions = [
        (s.end_t, s.close)
        for s in run.sessions
        if s.close is not None
        and s.close.get("by") != "client"
        and s.end_t is not None
        and not _superseded(run, s)
    ]
    disruptions += [
        (f["t"], f) for f in run.faults if f.get("fault") in DISRUPTING_FAULTS and f.get("applied_to")
    ]
    gaps = []
    for when, record in sorted(disruptions, key=lambda d: d[0]):
        following = run.session_after(when)
        what = (
            f"{record.get('session')} ended ({record.get('code')} by {record.get('by')})"
            if record["kind"] == "close"
            else f"{record.get('fault')} hit {', '.join(record['applied_to'])}"
        )
        if following is None:
            if when >= run.run_end_t - 0.5:
                continue  # it ended with the run
            return Verdict(
                "reconnected_within",
                False,
                f"{what} at t={when:.2f}s and the client never opened another session",
                [_brief(record)],
            )
        gap = following.start_t - when
        gaps.append(gap)
        if gap > seconds:
            return Verdict(
                "reconnected_within",
                False,
                f"{what} at t={when:.2f}s; the next session came {gap:.2f}s later, more than {seconds:g}s",
                [_brief(record)],
                {"max_reconnect_gap_s": round(gap, 3)},
            )
    if not disruptions:
        return Verdict(
            "reconnected_within",
            False,
            "nothing disrupted a session: the scenario did not exercise reconnection",
        )
    return Verdict(
        "reconnected_within",
        True,
        figures={"max_reconnect_gap_s": round(max(gaps), 3) if gaps else None, "reconnects": len(gaps)},
    )


def _superseded(run: RunView, session: SessionView) -> bool:
    """The client had already moved to a newer session when this one ended (e.g. it abandoned a stall)."""
    return any(session.start_t < other.start_t < (session.end_t or 0) for other in run.sessions)


def detected_within(run: RunView, seconds: float = 5.0) -> Verdict:
    """After a fault that leaves the socket open (a stall, a black hole), the client reached out again within
    `seconds` — a token request or a handshake — proving its own liveness check noticed."""
    faults = [f for f in run.faults if f.get("fault") in DISRUPTING_FAULTS and f.get("applied_to")]
    if not faults:
        return Verdict(
            "detected_within", False, "no stall or black hole happened: the scenario did not exercise it"
        )
    slowest = 0.0
    for fault in faults:
        reach = [r["t"] for r in run.handshakes + run.http if r["t"] > fault["t"]]
        if not reach or min(reach) - fault["t"] > seconds:
            waited = f"for {min(reach) - fault['t']:.2f}s" if reach else "until the end"
            return Verdict(
                "detected_within",
                False,
                f"{fault['fault']} at t={fault['t']:.2f}s went unnoticed "
                f"{waited} (more than {seconds:g}s): no liveness check acted",
                [_brief(fault)],
            )
        slowest = max(slowest, min(reach) - fault["t"])
    return Verdict("detected_within", True, figures={"detection_s": round(slowest, 3)})


def sessions_at_most(run: RunView, n: int = 1) -> Verdict:
    """The conversation stayed in at most `n` sessions (errors it should have survived did not end it)."""
    if len(run.sessions) > n:
        first_close = run.sessions[0].close
        return Verdict(
            "sessions_at_most",
            False,
            f"{len(run.sessions)} sessions where at most {n} were needed",
            [_brief(first_close)] if first_close else [],
            {"sessions": len(run.sessions)},
        )
    return Verdict("sessions_at_most", True, figures={"sessions": len(run.sessions)})


def _failed_attempts(run: RunView) -> list[dict[str, Any]]:
    """Handshakes that gave no usable session: refused, or accepted and closed at once by the server."""
    failed = []
    closes = {r["conn"]: r for r in run.records if r["kind"] == "close"}
    for handshake in run.handshakes:
        close = closes.get(handshake["conn"])
        if not handshake.get("accepted"):
            failed.append(handshake)
        elif (
            close is not None
            and close.get("by") == "server"
            and close["t"] - handshake["t"] < 1.0
            and close.get("session") is None
        ):
            failed.append({**handshake, "closed_with": close.get("code")})
    return failed


def backoff(run: RunView, min_gap: float = 0.05, max_rate: float = 4.0, fatal_attempts: int = 3) -> Verdict:
    """No hot loop: failed attempts spaced, the spacing growing, few retries after a fatal outcome."""
    failed = _failed_attempts(run)
    times = [a["t"] for a in run.handshakes]
    figures: dict[str, Any] = {"attempts": len(run.handshakes), "failed_attempts": len(failed)}
    for earlier, later in itertools.pairwise(failed):
        between = [t for t in times if earlier["t"] < t < later["t"]]
        if not between and later["t"] - earlier["t"] < min_gap:
            return Verdict(
                "backoff",
                False,
                f"retried {later['t'] - earlier['t']:.3f}s after a failed attempt (less than "
                f"{min_gap:g}s): a hot loop",
                [_brief(earlier), _brief(later)],
                figures,
            )
    for i, start in enumerate(times):
        window = [t for t in times[i:] if t - start < 1.0]
        if len(window) > max_rate:
            return Verdict(
                "backoff",
                False,
                f"{len(window)} connection attempts within one second at "
                f"t={start:.2f}s (at most {max_rate:g})",
                [_brief(a) for a in run.handshakes[i : i + len(window)]],
                figures,
            )
    streak = _longest_failure_streak(run, failed)
    if len(streak) >= 4:
        gaps = [b["t"] - a["t"] for a, b in itertools.pairwise(streak)]
        half = len(gaps) // 2
        early, late = sum(gaps[:half]) / half, sum(gaps[half:]) / (len(gaps) - half)
        figures["backoff_gaps_s"] = [round(g, 3) for g in gaps]
        if late <= early:
            return Verdict(
                "backoff",
                False,
                f"retry spacing is not growing over {len(streak)} failed attempts "
                f"(gaps {', '.join(f'{g:.2f}' for g in gaps)} s)",
                [_brief(a) for a in streak],
                figures,
            )
    fatal = [
        a
        for a in failed
        if a.get("closed_with") in FATAL_CLOSES
        or a.get("status") in (401, 403)
        or a.get("reason") in FATAL_HANDSHAKE_REASONS
    ]
    fatal += [h for h in run.handshakes if h.get("reason") in FATAL_HANDSHAKE_REASONS]
    if fatal:
        first = min(a["t"] for a in fatal)
        after = [h for h in run.handshakes if h["t"] > first]
        figures["attempts_after_fatal"] = len(after)
        if len(after) > fatal_attempts:
            return Verdict(
                "backoff",
                False,
                f"{len(after)} more attempts after a fatal outcome at t={first:.2f}s "
                f"(at most {fatal_attempts}): fatal errors must not be retried blindly",
                [_brief(a) for a in after[:5]],
                figures,
            )
    return Verdict("backoff", True, figures=figures)


def _longest_failure_streak(run: RunView, failed: list[dict[str, Any]]) -> list[dict[str, Any]]:
    failed_conns = {a["conn"] for a in failed}
    best: list[dict[str, Any]] = []
    current: list[dict[str, Any]] = []
    for handshake in run.handshakes:
        if handshake["conn"] in failed_conns:
            current.append(handshake)
            best = max(best, current, key=len)
        else:
            current = []
    return best


def context_restored(run: RunView) -> Verdict:
    """A new session answers its first response knowing the facts given in earlier sessions."""
    known: dict[str, str] = {}
    restored = 0
    for session in run.sessions:
        first = next(iter(session.out("response.created")), None)
        if known and first is not None:
            have = facts_of(session, first["t"])
            missing = {k: v for k, v in known.items() if have.get(k) != v}
            if missing:
                listed = ", ".join(f"{k}={v!r}" for k, v in missing.items())
                return Verdict(
                    "context_restored",
                    False,
                    f"{session.id} began answering without the earlier facts ({listed}): context was not "
                    "restored after the new session",
                    [_brief(first)],
                    {"sessions": len(run.sessions)},
                )
            restored += 1
        end = session.end_t if session.end_t is not None else float("inf")
        known.update(facts_of(session, end))
    return Verdict("context_restored", True, figures={"restored_sessions": restored})


def rotation_before_expiry(run: RunView, max_gap: float = 2.0) -> Verdict:
    """Sessions the run outlived were replaced before their cap: new one opened, old closed by the client."""
    rotations = 0
    for session in run.sessions:
        deadline = session.deadline_wall
        if deadline is None or session.close is None:
            continue
        outlived = run.records[-1]["wall"] > deadline + 0.5
        if not outlived:
            continue
        close = session.close
        if close.get("by") != "client" or (session.end_wall or 0) > deadline:
            return Verdict(
                "rotation_before_expiry",
                False,
                f"{session.id} ran into its cap ({close.get('code')} by {close.get('by')}, "
                f"{close.get('reason') or 'no reason'}) instead of being rotated before expires_at",
                [_brief(close)],
            )
        following = run.session_after(session.start_t + 1e-9)
        if following is None:
            return Verdict(
                "rotation_before_expiry",
                False,
                f"{session.id} closed before its cap but nothing replaced it",
                [_brief(close)],
            )
        gap = following.start_wall - (session.end_wall or 0)
        if gap > max_gap:
            return Verdict(
                "rotation_before_expiry",
                False,
                f"the user was without a session for {gap:.2f}s at rotation (more than {max_gap:g}s)",
                [_brief(close)],
                {"rotation_gap_s": round(gap, 3)},
            )
        rotations += 1
    if rotations == 0:
        return Verdict(
            "rotation_before_expiry",
            False,
            "no session reached rotation time: the scenario did not exercise rotation",
        )
    return Verdict("rotation_before_expiry", True, figures={"rotations": rotations})


def no_lost_turns(run: RunView) -> Verdict:
    """Every user turn got its answer (or the user talked over it), whatever broke in between."""
    answered = answered_turns(run, interrupted_counts=True)
    for index, turn in enumerate(run.user_turns):
        if not any(_same_turn(turn.say, text) for text, _, _ in answered):
            return Verdict(
                "no_lost_turns",
                False,
                f"turn {index} ({turn.say!r}, due at t={turn.at:g}s) never got a completed answer",
                [_brief(r) for _, r, _ in answered[-3:]],
            )
    return Verdict("no_lost_turns", True, figures={"answered": len(answered)})


def no_duplicate_responses(run: RunView) -> Verdict:
    """No user turn answered twice to completion (e.g. re-asked although the answer had arrived)."""
    answered = answered_turns(run)
    for turn in run.user_turns:
        hits = [(r, s) for text, r, s in answered if _same_turn(turn.say, text)]
        if len(hits) > 1:
            return Verdict(
                "no_duplicate_responses",
                False,
                f"{turn.say!r} was answered {len(hits)} times",
                [_brief(r) for r, _ in hits],
            )
    return Verdict("no_duplicate_responses", True)


def answer(run: RunView, turn: int, contains: str | None = None, not_contains: str | None = None) -> Verdict:
    """What the user heard back for a turn: the model's reply contains (or lacks) a text."""
    name = "answer"
    if turn >= len(run.user_turns):
        return Verdict(name, False, f"the scenario has no turn {turn}")
    spoken = run.user_turns[turn].say
    replies = [(reply_text(r["event"]), r) for text, r, _ in answered_turns(run) if _same_turn(spoken, text)]
    if not replies:
        return Verdict(name, False, f"turn {turn} ({spoken!r}) got no completed answer")
    text, record = replies[-1]
    if contains is not None and contains.lower() not in text.lower():
        return Verdict(
            name,
            False,
            f"turn {turn} ({spoken!r}) was answered {text!r}, which lacks {contains!r}",
            [_brief(record)],
        )
    if not_contains is not None and not_contains.lower() in text.lower():
        return Verdict(name, False, f"turn {turn} ({spoken!r}) was answered {text!r}", [_brief(record)])
    return Verdict(name, True, figures={"answer": text})


def tokens_not_retried_blindly(run: RunView) -> Verdict:
    """A credential refused as expired or revoked is not presented again."""
    refused: dict[str, dict[str, Any]] = {}
    for handshake in run.handshakes:
        credential = handshake.get("credential")
        if credential in refused:
            return Verdict(
                "tokens_not_retried_blindly",
                False,
                f"a token refused ({refused[credential]['reason']}) at t={refused[credential]['t']:.2f}s "
                f"was presented again at t={handshake['t']:.2f}s",
                [_brief(refused[credential]), _brief(handshake)],
            )
        if not handshake.get("accepted") and str(handshake.get("reason", "")).startswith("token_"):
            refused[credential] = handshake
    return Verdict("tokens_not_retried_blindly", True, figures={"refused_tokens": len(refused)})


def truncate_within_delivered(run: RunView) -> Verdict:
    """Every truncate points inside the audio the client had actually received for that item."""
    truncates = 0
    for session in run.sessions:
        delivered: dict[str, int] = {}
        for record in session.events:
            event = record["event"]
            kind = event.get("type")
            if record["dir"] == "out" and kind in AUDIO_DELTAS:
                delivered[event["item_id"]] = delivered.get(event["item_id"], 0) + event.get("audio_bytes", 0)
            elif record["dir"] == "in" and kind == "conversation.item.truncate":
                truncates += 1
                received_ms = delivered.get(event.get("item_id"), 0) // 48
                if event.get("audio_end_ms", 0) > received_ms:
                    return Verdict(
                        "truncate_within_delivered",
                        False,
                        f"truncate at {event.get('audio_end_ms')} ms but only {received_ms} ms of "
                        f"{event.get('item_id')} had been delivered",
                        [_brief(record)],
                    )
    errors = [
        r
        for s in run.sessions
        for r in s.out("error")
        if (r["event"]["error"].get("param") or "") == "audio_end_ms"
    ]
    if errors:
        return Verdict(
            "truncate_within_delivered",
            False,
            "a truncate was rejected: " + errors[0]["event"]["error"]["message"],
            [_brief(errors[0])],
        )
    return Verdict("truncate_within_delivered", True, figures={"truncates": truncates})


@dataclass
class BargeIn:
    """The user started speaking (server VAD) while assistant audio was still playing."""

    t: float
    item_id: str
    heard_ms: float  # the listener's playback position in the item then
    received_ms: float  # what had arrived of it by then (ahead of playback: audio comes faster)


class Speaker:
    """The listener's side of one session, rebuilt from what the server sent and when: each audio delta plays
    in real time after the audio before it (one speaker), never before it arrived. The server sends audio
    faster than real time, so playback lags arrival; a barge-in clears the speaker, and the rest of the
    interrupted item is never heard."""

    def __init__(self, session: SessionView) -> None:
        self.segments: dict[str, list[tuple[float, float]]] = {}  # item -> (start, ms) as played
        self.arrived: dict[str, list[tuple[float, float]]] = {}  # item -> (t, ms) as received
        self.barge_ins: list[BargeIn] = []
        ends = 0.0
        silenced: set[str] = set()
        for record in session.events:
            event = record["event"]
            kind, t = event.get("type"), record["t"]
            if record["dir"] != "out":
                continue
            if kind in AUDIO_DELTAS:
                item_id = str(event.get("item_id"))
                ms = event.get("audio_bytes", 0) / 48
                self.arrived.setdefault(item_id, []).append((t, ms))
                if item_id in silenced:
                    continue
                start = max(ends, t)
                ends = start + ms / 1000
                self.segments.setdefault(item_id, []).append((start, ms))
            elif kind == "input_audio_buffer.speech_started":
                playing = self.playing_at(t)
                if playing is not None:
                    self.barge_ins.append(
                        BargeIn(t, playing, self.heard_ms(playing, t), self.received_ms(playing, t))
                    )
                    silenced.add(playing)
                    ends = t

    def heard_ms(self, item_id: str, t: float) -> float:
        return sum(min(ms, max(0.0, (t - start) * 1000)) for start, ms in self.segments.get(item_id, ()))

    def received_ms(self, item_id: str, t: float) -> float:
        return sum(ms for at, ms in self.arrived.get(item_id, ()) if at <= t)

    def playing_at(self, t: float) -> str | None:
        for item_id, segments in self.segments.items():
            start, (last_start, last_ms) = segments[0][0], segments[-1]
            if start <= t < last_start + last_ms / 1000:
                return item_id
        return None


def truncated_on_barge_in(run: RunView, tolerance_ms: float = 500) -> Verdict:
    """When the user spoke over the model's audio, the client truncated the item where the listener was.

    A barge-in is judged by playback, not arrival: the server sends audio faster than real time, so the
    response may be over while its audio still plays, and `audio_end_ms` must be what was heard (within
    `tolerance_ms`), not what had arrived. A response cancelled by turn detection is a barge-in too.
    """
    barge_ins = 0
    for session in run.sessions:
        speaker = Speaker(session)
        found = list(speaker.barge_ins)
        for record in session.out("response.done"):
            details = record["event"]["response"].get("status_details") or {}
            if details.get("reason") != "turn_detected" or any(b.t <= record["t"] for b in found):
                continue
            heard = [i for i in speaker.segments if speaker.segments[i][0][0] <= record["t"]]
            if heard:  # the item that was playing when turn detection cut the response
                item_id = heard[-1]
                t = record["t"]
                found.append(
                    BargeIn(t, item_id, speaker.heard_ms(item_id, t), speaker.received_ms(item_id, t))
                )
        for barge_in in found:
            barge_ins += 1
            if barge_in.heard_ms <= 0:
                continue  # nothing heard: nothing to truncate (the real API refuses a truncate at 0 ms)
            truncates = [
                r
                for r in session.incoming("conversation.item.truncate")
                if r["t"] >= barge_in.t and r["event"].get("item_id") == barge_in.item_id
            ]
            if not truncates:
                return Verdict(
                    "truncated_on_barge_in",
                    False,
                    f"the user spoke over {barge_in.item_id} at t={barge_in.t:.2f}s "
                    f"({barge_in.heard_ms:.0f} ms heard) but the client never truncated what was not heard",
                    [{"t": barge_in.t, "session": session.id, "item_id": barge_in.item_id}],
                )
            end_ms = truncates[0]["event"].get("audio_end_ms", 0)
            heard_by_then = speaker.heard_ms(barge_in.item_id, truncates[0]["t"])
            if not barge_in.heard_ms - tolerance_ms <= end_ms <= heard_by_then + tolerance_ms:
                return Verdict(
                    "truncated_on_barge_in",
                    False,
                    f"truncated {barge_in.item_id} at {end_ms} ms, but the listener had heard "
                    f"{barge_in.heard_ms:.0f} ms when the user spoke ({barge_in.received_ms:.0f} ms had "
                    "arrived): audio_end_ms must be the playback position, not what was received",
                    [_brief(truncates[0])],
                    figures={"heard_ms": round(barge_in.heard_ms), "audio_end_ms": end_ms},
                )
    if not barge_ins:
        return Verdict(
            "truncated_on_barge_in", False, "no barge-in happened: the scenario did not exercise it"
        )
    return Verdict("truncated_on_barge_in", True, figures={"barge_ins": barge_ins})


def no_leaked_sessions(run: RunView) -> Verdict:
    """Every session was closed, the last one by the client with 1000: nothing left to hit a session limit."""
    open_sessions = [s for s in run.sessions if s.close is None]
    if open_sessions:
        return Verdict(
            "no_leaked_sessions",
            False,
            f"{len(open_sessions)} session(s) still open at the end: "
            + ", ".join(s.id for s in open_sessions),
            figures={"sessions": len(run.sessions)},
        )
    if run.sessions and not run.sessions[-1].closed_gracefully_by_client:
        close = run.sessions[-1].close or {}
        return Verdict(
            "no_leaked_sessions",
            False,
            f"the last session ended {close.get('code')} by "
            f"{close.get('by')}, not closed by the client (1000, or a close frame without a status)",
            [_brief(close)] if close else [],
        )
    refused = [h for h in run.handshakes if h.get("reason") == "concurrent_session_limit"]
    if refused:
        return Verdict(
            "no_leaked_sessions",
            False,
            "the concurrent-session limit refused the client: sessions leaked",
            [_brief(h) for h in refused[:3]],
        )
    return Verdict("no_leaked_sessions", True, figures={"sessions": len(run.sessions)})


def survives_errors(run: RunView) -> Verdict:
    """After a recoverable error event the session goes on: the client does not tear it down."""
    for session in run.sessions:
        for record in session.out("error"):
            error = record["event"]["error"]
            if error.get("type") == "server_error" or error.get("code") in (
                "session_expired",
                "invalid_api_key",
                "session_idle_timeout",
            ):
                continue
            close = session.close
            if (
                close is not None
                and close.get("by") == "client"
                and close["t"] - record["t"] < 1.0
                and session is not run.sessions[-1]
            ):
                return Verdict(
                    "survives_errors",
                    False,
                    f"the client closed {session.id} right after a recoverable error ({error.get('code')})",
                    [_brief(record), _brief(close)],
                )
            if (
                not [r for r in session.out("response.done") if r["t"] > record["t"]]
                and session.close
                and session.close.get("by") == "client"
                and session is not run.sessions[-1]
            ):
                return Verdict(
                    "survives_errors",
                    False,
                    f"{session.id} was abandoned after {error.get('code')}",
                    [_brief(record)],
                )
    return Verdict("survives_errors", True)


def respects_retry_after(run: RunView) -> Verdict:
    """After a 429 with Retry-After, the next request of the same kind waits at least that long."""
    calls = sorted(run.handshakes + run.http, key=lambda r: r["t"])
    for index, call in enumerate(calls):
        if call.get("status") != 429:
            continue
        retry_after = call.get("retry_after") or 0
        later = [c for c in calls[index + 1 :] if c["kind"] == call["kind"]]
        if later and later[0]["t"] - call["t"] < retry_after * 0.9:
            return Verdict(
                "respects_retry_after",
                False,
                f"retried {later[0]['t'] - call['t']:.2f}s after a 429 asking for {retry_after:g}s",
                [_brief(call), _brief(later[0])],
            )
    return Verdict("respects_retry_after", True)


def no_idle_timeout(run: RunView) -> Verdict:
    """No session was closed for inactivity: the client kept it alive (activity or keep-alive)."""
    for session in run.sessions:
        for record in session.out("error"):
            if record["event"]["error"].get("code") == "session_idle_timeout":
                return Verdict(
                    "no_idle_timeout", False, f"{session.id} was closed for inactivity", [_brief(record)]
                )
    return Verdict("no_idle_timeout", True)


def client_exit(run: RunView, code: int = 0) -> Verdict:
    """The client ended as the interface says: exit 0 after a graceful close (non-zero when it gave up)."""
    if run.client_exit != code:
        return Verdict("client_exit", False, f"the client exited with {run.client_exit}, expected {code}")
    return Verdict("client_exit", True)


CHECKERS: Mapping[str, Callable[..., Verdict]] = {
    fn.__name__: fn
    for fn in (
        reconnected_within,
        detected_within,
        sessions_at_most,
        backoff,
        context_restored,
        rotation_before_expiry,
        no_lost_turns,
        no_duplicate_responses,
        answer,
        tokens_not_retried_blindly,
        truncate_within_delivered,
        truncated_on_barge_in,
        no_leaked_sessions,
        survives_errors,
        respects_retry_after,
        no_idle_timeout,
        client_exit,
    )
}


def run_checks(run: RunView, checks: Iterable[Any]) -> list[Verdict]:
    verdicts = []
    for check in checks:
        try:
            verdicts.append(CHECKERS[check.name](run, **check.params))
        except TypeError as exc:
            verdicts.append(Verdict(check.name, False, f"bad parameters for {check.name}: {exc}"))
    return verdicts
