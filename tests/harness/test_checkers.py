"""Each checker passes a good history and fails a bad one, saying why.

Histories are written with the real `History` class in the server's record format, by a small builder
that plays the server's side of a conversation at chosen times.
"""

from __future__ import annotations

from typing import Any

import pytest

from rtsim.scenarios.checkers import CHECKERS, RunView, Verdict
from rtsim.scenarios.spec import Check, UserTurn, from_dict
from rtsim.simulator.history import History

KEY = "key_run"


class Timeline:
    """Writes records as the server would, at explicit times."""

    def __init__(self) -> None:
        self.history = History()
        self.t = 0.0
        self.conns = 0
        self.items = 0
        self.wall0 = 1_000_000.0

    def _record(self, kind: str, at: float, **fields: Any) -> dict[str, Any]:
        self.t = at
        entry = self.history.record(kind, **fields)
        entry["t"], entry["wall"] = at, self.wall0 + at
        return entry

    def handshake(
        self,
        at: float,
        *,
        accepted: bool = True,
        status: int = 101,
        reason: str | None = None,
        credential: str = "cred_a",
        **extra: Any,
    ) -> str:
        self.conns += 1
        conn = f"conn_{self.conns}"
        self._record(
            "handshake",
            at,
            conn=conn,
            key_id=KEY,
            accepted=accepted,
            status=status,
            reason=reason,
            credential=credential,
            **extra,
        )
        return conn

    def session(self, at: float, *, cap: float = 3600.0, instructions: str = "") -> tuple[str, str]:
        conn = self.handshake(at)
        sid = f"sess_{self.conns}"
        self._record("session", at, session=sid, conn=conn, key_id=KEY, deadline_wall=self.wall0 + at + cap)
        self.out(at, sid, {"type": "session.created", "session": {"instructions": instructions}})
        return sid, conn

    def out(self, at: float, sid: str, event: dict[str, Any]) -> None:
        self._record("event", at, dir="out", session=sid, event=event)

    def inbound(self, at: float, sid: str, event: dict[str, Any]) -> None:
        self._record("event", at, dir="in", session=sid, event=event)

    def item(self, at: float, sid: str, role: str, text: str) -> None:
        self.items += 1
        part = (
            {"type": "input_text", "text": text}
            if role != "assistant"
            else {"type": "output_audio", "transcript": text}
        )
        self.out(
            at,
            sid,
            {
                "type": "conversation.item.done",
                "item": {"id": f"item_{self.items}", "role": role, "type": "message", "content": [part]},
            },
        )

    def turn(
        self,
        at: float,
        sid: str,
        user: str,
        reply: str,
        *,
        status: str = "completed",
        reason: str | None = None,
    ) -> None:
        self.item(at, sid, "user", user)
        self.out(at + 0.01, sid, {"type": "response.created", "response": {"id": f"resp_{at}"}})
        details = {"type": status, "reason": reason} if reason else None
        self.out(
            at + 0.5,
            sid,
            {
                "type": "response.done",
                "response": {
                    "id": f"resp_{at}",
                    "status": status,
                    "status_details": details,
                    "conversation_id": "conv_1",
                    "output": [
                        {
                            "type": "message",
                            "role": "assistant",
                            "content": [{"type": "output_audio", "transcript": reply}],
                        }
                    ],
                },
            },
        )

    def close(self, at: float, sid: str | None, conn: str, code: int, by: str, reason: str = "") -> None:
        self._record("close", at, session=sid, conn=conn, key_id=KEY, code=code, by=by, reason=reason)

    def fault(self, at: float, kind: str, sessions: list[str]) -> None:
        self._record("fault", at, fault=kind, applied_to=sessions, target={}, params={}, route="test")

    def view(self, turns: tuple[UserTurn, ...] = (), client_exit: int | None = 0) -> RunView:
        return RunView(
            self.history.records, user_turns=turns, client_exit=client_exit, run_end_t=self.t + 0.1
        )


def check(name: str, view: RunView, **params: Any) -> Verdict:
    return CHECKERS[name](view, **params)


TURNS = (UserTurn(0.2, "My name is Alice."), UserTurn(5.0, "What is my name?"))


def reconnecting_run(*, gap: float, restore: bool, reask_lost: bool = True) -> Timeline:
    """A session dropped at t=3 and a new one `gap` later, with or without the earlier facts restored."""
    tl = Timeline()
    first, conn = tl.session(0.0)
    tl.turn(0.2, first, "My name is Alice.", "You said: My name is Alice.")
    tl.close(3.0, first, conn, 1006, "server")
    second, conn2 = tl.session(3.0 + gap)
    if restore:
        tl.item(3.1 + gap, second, "system", "Summary: the user's name is Alice.")
    if reask_lost:
        tl.turn(
            5.0 + gap,
            second,
            "What is my name?",
            "Your name is Alice." if restore else "I don't know your name.",
        )
    tl.close(9.0, second, conn2, 1000, "client")
    return tl


def test_reconnected_within() -> None:
    assert check("reconnected_within", reconnecting_run(gap=0.4, restore=True).view(), seconds=5).ok
    slow = check("reconnected_within", reconnecting_run(gap=6.0, restore=True).view(), seconds=5)
    assert not slow.ok and "6.00s later" in slow.reason and slow.evidence
    tl = Timeline()
    sid, conn = tl.session(0.0)
    tl.close(3.0, sid, conn, 1011, "server")
    tl._record("server", 9.0, event="stop")
    never = check("reconnected_within", tl.view(), seconds=5)
    assert not never.ok and "never opened another session" in never.reason


def test_reconnected_within_counts_a_stall_as_a_disruption() -> None:
    tl = Timeline()
    first, _ = tl.session(0.0)
    tl.fault(2.0, "stall", [first])
    second, conn = tl.session(4.5)
    tl.close(8.0, second, conn, 1000, "client")
    assert check("reconnected_within", tl.view(), seconds=3).ok
    assert not check("reconnected_within", tl.view(), seconds=2).ok


def test_detected_within_and_a_superseded_session_is_no_disruption() -> None:
    tl = Timeline()
    stalled, conn = tl.session(0.0)
    tl.fault(2.0, "stall", [stalled])
    tl._record("http", 3.5, method="POST", path="/v1/realtime/client_secrets", status=200, key_id=KEY)
    fresh, conn2 = tl.session(3.6)
    tl.close(8.0, stalled, conn, 1006, "network")  # the stall ended: the abandoned close shows late
    tl.close(9.0, fresh, conn2, 1000, "client")
    detected = check("detected_within", tl.view(), seconds=2)
    assert detected.ok and detected.figures["detection_s"] == 1.5
    assert "went unnoticed" in check("detected_within", tl.view(), seconds=1).reason
    assert check("reconnected_within", tl.view(), seconds=2).ok


def test_context_restored() -> None:
    good = check("context_restored", reconnecting_run(gap=0.4, restore=True).view())
    assert good.ok and good.figures["restored_sessions"] == 1
    bad = check("context_restored", reconnecting_run(gap=0.4, restore=False).view())
    assert not bad.ok and "name='Alice'" in bad.reason


def test_answer_and_no_lost_turns() -> None:
    restored = reconnecting_run(gap=0.4, restore=True).view(TURNS)
    assert check("answer", restored, turn=1, contains="Alice").ok
    assert check("no_lost_turns", restored).ok
    forgot = check("answer", reconnecting_run(gap=0.4, restore=False).view(TURNS), turn=1, contains="Alice")
    assert not forgot.ok and "I don't know your name." in forgot.reason
    lost = check("no_lost_turns", reconnecting_run(gap=0.4, restore=True, reask_lost=False).view(TURNS))
    assert not lost.ok and "What is my name?" in lost.reason


def test_a_turn_the_user_talked_over_is_not_lost() -> None:
    tl = Timeline()
    sid, conn = tl.session(0.0)
    tl.turn(0.2, sid, "My name is Alice.", "You said: My", status="cancelled", reason="client_cancelled")
    tl.turn(2.0, sid, "What is my name?", "Your name is Alice.")
    tl.close(4.0, sid, conn, 1000, "client")
    assert check("no_lost_turns", tl.view(TURNS)).ok
    failed = Timeline()
    sid, conn = failed.session(0.0)
    failed.turn(0.2, sid, "My name is Alice.", "You said", status="failed")
    failed.turn(2.0, sid, "What is my name?", "Your name is Alice.")
    failed.close(4.0, sid, conn, 1000, "client")
    assert "'My name is Alice.'" in check("no_lost_turns", failed.view(TURNS)).reason


def test_no_duplicate_responses() -> None:
    tl = reconnecting_run(gap=0.4, restore=True)
    assert check("no_duplicate_responses", tl.view(TURNS)).ok
    third, conn = tl.session(9.5)
    tl.turn(9.6, third, "What is my name?", "Your name is Alice.")
    tl.close(11.0, third, conn, 1000, "client")
    twice = check("no_duplicate_responses", tl.view(TURNS))
    assert not twice.ok and "answered 2 times" in twice.reason


def test_a_response_done_delivered_twice_is_one_answer() -> None:
    """A redelivering relay (the duplicate-event fault) sends the same response.done twice: not a re-ask."""
    tl = Timeline()
    sid, conn = tl.session(0.0)
    tl.turn(0.2, sid, "My name is Alice.", "Nice to meet you, Alice.")
    events = [r["event"] for r in tl.history.records if r["kind"] == "event"]
    done = next(event for event in events if event["type"] == "response.done")
    tl.out(0.8, sid, dict(done))
    tl.close(2.0, sid, conn, 1000, "client")
    turns = (UserTurn(0.2, "My name is Alice."),)
    assert check("no_duplicate_responses", tl.view(turns)).ok
    assert check("no_lost_turns", tl.view(turns)).figures["answered"] == 1


def test_rotation_before_expiry() -> None:
    tl = Timeline()
    old, conn = tl.session(0.0, cap=6.0)
    new, conn2 = tl.session(4.8, cap=6.0)
    tl.close(5.0, old, conn, 1000, "client")
    tl.close(9.0, new, conn2, 1000, "client")
    assert check("rotation_before_expiry", tl.view(), max_gap=2).ok
    capped = Timeline()
    old, conn = capped.session(0.0, cap=6.0)
    capped.close(6.0, old, conn, 1001, "server", "Your session hit the maximum duration of 0.1 minutes.")
    new, conn2 = capped.session(9.0, cap=6.0)
    capped.close(10.0, new, conn2, 1000, "client")
    verdict = check("rotation_before_expiry", capped.view(), max_gap=2)
    assert not verdict.ok and "ran into its cap" in verdict.reason
    short = Timeline()
    only, conn = short.session(0.0, cap=60.0)
    short.close(5.0, only, conn, 1000, "client")
    assert not check(
        "rotation_before_expiry", short.view()
    ).ok  # nothing rotated: the scenario didn't test it


def test_backoff() -> None:
    spaced = Timeline()
    for at in (1.0, 1.6, 2.8, 5.2):
        spaced.handshake(at, accepted=False, status=503, reason="fault:reject-connects")
    assert check("backoff", spaced.view()).ok
    hot = Timeline()
    for i in range(8):
        hot.handshake(1.0 + i * 0.02, accepted=False, status=503)
    verdict = check("backoff", hot.view())
    assert not verdict.ok and "hot loop" in verdict.reason
    flat = Timeline()
    for at in (1.0, 4.0, 7.0, 10.0, 13.0):
        flat.handshake(at, accepted=False, status=503)
    assert "not growing" in check("backoff", flat.view()).reason
    fatal = Timeline()
    for at in (1.0, 4.0, 9.0, 14.0, 20.0):
        conn = fatal.handshake(at)
        fatal.close(at + 0.01, None, conn, 1008, "server")
    verdict = check("backoff", fatal.view(), fatal_attempts=2)
    assert not verdict.ok and "after a fatal outcome" in verdict.reason


@pytest.mark.parametrize(
    "reason", ["missing_credential", "missing_model", "invalid_model", "beta_api_shape_disabled"]
)
def test_backoff_counts_an_upgrade_refused_after_the_101_as_fatal(reason: str) -> None:
    """The GA service refuses these after accepting the upgrade (error, then close 3000/4000): a client that
    keeps retrying is looping on a fatal outcome (docs/parity.md)."""
    looping = Timeline()
    for at in (1.0, 3.0, 7.0, 15.0):
        looping.handshake(at, reason=reason)
    verdict = check("backoff", looping.view(), fatal_attempts=1)
    assert not verdict.ok and "after a fatal outcome" in verdict.reason
    once = Timeline()
    once.handshake(1.0, reason=reason)
    assert check("backoff", once.view(), fatal_attempts=1).ok


def test_tokens_not_retried_blindly() -> None:
    tl = Timeline()
    tl.handshake(1.0, accepted=False, status=401, reason="token_expired", credential="old")
    tl.handshake(1.5, credential="fresh")
    assert check("tokens_not_retried_blindly", tl.view()).ok
    tl.handshake(2.0, accepted=False, status=401, reason="token_expired", credential="old")
    verdict = check("tokens_not_retried_blindly", tl.view())
    assert not verdict.ok and "presented again" in verdict.reason


def test_truncate_within_delivered_and_truncated_on_barge_in() -> None:
    def barge_in(truncate_ms: int | None) -> RunView:
        tl = Timeline()
        sid, conn = tl.session(0.0)
        for i in range(5):  # 500 ms of audio delivered
            tl.out(
                0.5 + i * 0.1,
                sid,
                {"type": "response.output_audio.delta", "item_id": "item_a", "audio_bytes": 4800},
            )
        tl.out(
            1.0,
            sid,
            {
                "type": "response.done",
                "response": {
                    "status": "cancelled",
                    "status_details": {"type": "cancelled", "reason": "turn_detected"},
                },
            },
        )
        if truncate_ms is not None:
            tl.inbound(
                1.1,
                sid,
                {"type": "conversation.item.truncate", "item_id": "item_a", "audio_end_ms": truncate_ms},
            )
        tl.close(3.0, sid, conn, 1000, "client")
        return tl.view()

    assert check("truncate_within_delivered", barge_in(400)).ok
    beyond = check("truncate_within_delivered", barge_in(900))
    assert not beyond.ok and "only 500 ms" in beyond.reason
    assert check("truncated_on_barge_in", barge_in(400)).ok
    assert "never truncated" in check("truncated_on_barge_in", barge_in(None)).reason


def fast_reply_then_user_speaks(
    speech_at: float, truncate_ms: int | None, truncate_at: float = 0.0
) -> RunView:
    """3 s of audio sent 4x faster than real time (a 100 ms delta every 25 ms from t=0.5), the response done
    at 1.3 s, and the user's speech starting at `speech_at` while (or after) the tail plays."""
    tl = Timeline()
    sid, conn = tl.session(0.0)
    for i in range(30):
        tl.out(
            0.5 + i * 0.025,
            sid,
            {"type": "response.output_audio.delta", "item_id": "item_a", "audio_bytes": 4800},
        )
    tl.out(1.3, sid, {"type": "response.done", "response": {"status": "completed", "status_details": None}})
    tl.out(speech_at, sid, {"type": "input_audio_buffer.speech_started", "item_id": "item_u"})
    if truncate_ms is not None:
        tl.inbound(
            truncate_at or speech_at + 0.05,
            sid,
            {"type": "conversation.item.truncate", "item_id": "item_a", "audio_end_ms": truncate_ms},
        )
    tl.close(5.0, sid, conn, 1000, "client")
    return tl.view()


def test_barge_in_is_judged_by_playback_position_not_arrival() -> None:
    """The real service sends audio faster than real time (docs/parity.md), so at a barge-in the client has
    received more than the user heard: audio_end_ms must be the playback position. All 3 s had arrived by
    1.25 s; at 2.0 s the listener had heard 1.5 s."""
    played = check("truncated_on_barge_in", fast_reply_then_user_speaks(2.0, 1500))
    assert played.ok, played.reason
    assert played.figures == {"barge_ins": 1}
    arrival = check("truncated_on_barge_in", fast_reply_then_user_speaks(2.0, 3000))
    assert not arrival.ok
    assert "playback position" in arrival.reason and "1500 ms" in arrival.reason
    # A barge-in after response.done (the tail still playing) still needs a truncate.
    never = check("truncated_on_barge_in", fast_reply_then_user_speaks(2.0, None))
    assert not never.ok and "never truncated" in never.reason
    # Speech after the audio has finished playing interrupts nothing.
    after = check("truncated_on_barge_in", fast_reply_then_user_speaks(4.0, None))
    assert not after.ok and "no barge-in happened" in after.reason
    # Truncating later than the barge-in is judged against what had played by the truncate, within tolerance.
    late = check("truncated_on_barge_in", fast_reply_then_user_speaks(2.0, 1700, truncate_at=2.2))
    assert late.ok, late.reason


def test_no_leaked_sessions() -> None:
    assert check("no_leaked_sessions", reconnecting_run(gap=0.4, restore=True).view()).ok
    tl = Timeline()
    tl.session(0.0)
    verdict = check("no_leaked_sessions", tl.view())
    assert not verdict.ok and "still open" in verdict.reason
    limit = reconnecting_run(gap=0.4, restore=True)
    limit.handshake(9.5, accepted=False, status=429, reason="concurrent_session_limit")
    assert "concurrent-session limit" in check("no_leaked_sessions", limit.view()).reason
    # A close frame without a status (1005: a browser's `WebSocket.close()`) is a deliberate close; a drop
    # (1006) or a server's close is not the client closing its session.
    for code, by, ok in (
        (1000, "client", True),
        (1005, "client", True),
        (1006, "client", False),
        (1005, "server", False),
    ):
        closed = Timeline()
        sid, conn = closed.session(0.0)
        closed.close(1.0, sid, conn, code, by)
        verdict = check("no_leaked_sessions", closed.view())
        assert verdict.ok is ok, (code, by, verdict.reason)


def test_survives_errors_and_sessions_at_most() -> None:
    tl = Timeline()
    sid, conn = tl.session(0.0)
    tl.out(
        1.0,
        sid,
        {"type": "error", "error": {"type": "invalid_request_error", "code": "response_cancel_not_active"}},
    )
    tl.turn(2.0, sid, "hello", "You said: hello.")
    tl.close(4.0, sid, conn, 1000, "client")
    assert check("survives_errors", tl.view()).ok and check("sessions_at_most", tl.view(), n=1).ok
    quitter = Timeline()
    sid, conn = quitter.session(0.0)
    quitter.out(
        1.0,
        sid,
        {"type": "error", "error": {"type": "invalid_request_error", "code": "response_cancel_not_active"}},
    )
    quitter.close(1.2, sid, conn, 1000, "client")
    second, conn2 = quitter.session(4.0)
    quitter.close(6.0, second, conn2, 1000, "client")
    assert "right after a recoverable error" in check("survives_errors", quitter.view()).reason
    assert not check("sessions_at_most", quitter.view(), n=1).ok


def test_respects_retry_after() -> None:
    tl = Timeline()
    tl.handshake(1.0, accepted=False, status=429, reason="fault:reject-connects", retry_after=2)
    tl.handshake(3.2)
    assert check("respects_retry_after", tl.view()).ok
    rushed = Timeline()
    rushed.handshake(1.0, accepted=False, status=429, reason="fault:reject-connects", retry_after=2)
    rushed.handshake(1.3)
    assert "0.30s after a 429" in check("respects_retry_after", rushed.view()).reason


def test_no_idle_timeout_and_client_exit() -> None:
    tl = Timeline()
    sid, _ = tl.session(0.0)
    assert check("no_idle_timeout", tl.view()).ok
    tl.out(4.0, sid, {"type": "error", "error": {"code": "session_idle_timeout"}})
    assert not check("no_idle_timeout", tl.view()).ok
    assert check("client_exit", tl.view(client_exit=0)).ok
    assert "exited with 1" in check("client_exit", tl.view(client_exit=1)).reason


def test_every_checker_is_covered_here() -> None:
    tested = {name for name in CHECKERS if f'"{name}"' in open(__file__).read()}
    assert tested == set(CHECKERS)


def test_scenario_files_are_validated_with_clear_errors() -> None:
    from rtsim.scenarios.spec import ScenarioError

    base = {"name": "x", "checks": ["context_restored"]}
    assert from_dict(base).checks == (Check("context_restored", {}),)
    for bad, fragment in [
        ({**base, "checks": ["nope"]}, "must name a checker"),
        ({**base, "faults": [{"kind": "explode", "at": 1}]}, "needs a `kind`"),
        ({**base, "bogus": 1}, "unknown keys"),
        ({**base, "server": {"max_sesion": 3}}, "unknown server setting"),
    ]:
        with pytest.raises(ScenarioError, match=fragment):
            from_dict(bad)


def test_time_compression_keeps_the_timeline_shape() -> None:
    scenario = from_dict(
        {
            "name": "x",
            "time_scale": 600,
            "server": {"max_session": 3600, "token_ttl": 600},
            "duration": 7200,
            "user": [{"at": 600, "say": "hi"}],
            "faults": [
                {"at": 3000, "kind": "drop"},
                {"after": {"event": "response.done", "delay": 60}, "kind": "drop"},
            ],
        }
    )
    assert scenario.server["max_session"] == 6 and scenario.server["token_ttl"] == 1
    assert scenario.duration == 12 and scenario.user[0].at == 1
    assert scenario.faults[0].at == 5 and scenario.faults[1].delay == 0.1
