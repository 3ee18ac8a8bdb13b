"""The control plane: the `/_rtsim` API (list, inject, schedule, cancel, history, summary), its refusals, its
admin-token guard, and the `rtsim fault|sessions|history` commands."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from rtsim.simulator import cli
from rtsim.simulator.control.routes import is_loopback
from rtsim.simulator.server import RealtimeServer, ServerConfig
from rtsim.simulator.tokens import key_id
from tests.support.faults import (
    OTHER_KEY,
    drain_until_closed,
    http,
    inject,
    server_close,
    session_id_of,
)
from tests.support.wire import KEY, open_session, recv, recv_until, text_turn

DELTA = "response.output_audio.delta"


async def open_sessions(server: RealtimeServer, *keys: str) -> list[tuple[ClientConnection, str]]:
    out = []
    for key in keys:
        ws = await open_session(server, key)
        out.append((ws, await session_id_of(ws, server)))
    return out


# ---- listing ----------------------------------------------------------------------------------------


async def test_sessions_lists_live_sessions(server: RealtimeServer) -> None:
    (a, sid_a), (b, sid_b) = await open_sessions(server, KEY, OTHER_KEY)
    status, body, _ = await http(server, "GET", "/_rtsim/sessions")
    assert status == 200
    listed = {s["session"]: s for s in body["sessions"]}
    assert set(listed) == {sid_a, sid_b}
    assert listed[sid_a]["key_id"] == key_id(KEY) and listed[sid_b]["key_id"] == key_id(OTHER_KEY)
    assert listed[sid_a]["model"] == "gpt-realtime" and listed[sid_a]["stalled"] is False
    await a.close()
    await server_close(server, sid_a)
    _, body, _ = await http(server, "GET", "/_rtsim/sessions")
    assert [s["session"] for s in body["sessions"]] == [sid_b]
    await b.close()


async def test_catalogue_lists_every_kind(server: RealtimeServer) -> None:
    _, body, _ = await http(server, "GET", "/_rtsim/catalogue")
    kinds = {f["kind"]: f for f in body["faults"]}
    expected = {
        "drop",
        "close",
        "expire-session",
        "expire-tokens",
        "reject-connects",
        "stall",
        "latency",
        "slow-first-delta",
        "server-error",
        "benign-error",
        "rate-limit",
        "idle-timeout",
    }
    assert expected <= set(kinds)
    assert kinds["reject-connects"]["scope"] == "server" and kinds["drop"]["scope"] == "session"
    assert "code" in kinds["close"]["params"] and all(f["doc"] for f in body["faults"])


# ---- injecting: one session, one key, all ---------------------------------------------------------------


async def test_inject_into_one_session(server: RealtimeServer) -> None:
    (a, sid_a), (b, _) = await open_sessions(server, KEY, KEY)
    outcome = await inject(server, "close", {"code": 1012, "reason": "restart"}, {"session": sid_a})
    assert outcome == {
        "kind": "close",
        "scope": "session",
        "applied_to": [sid_a],
        "result": "close 1012",
    }
    await drain_until_closed(a)
    assert a.close_code == 1012
    assert "Bea" in await text_turn(b, "My name is Bea.")  # the other one is untouched
    await b.close()


async def test_inject_into_every_session_of_a_key(server: RealtimeServer) -> None:
    opened = await open_sessions(server, KEY, KEY, OTHER_KEY)
    outcome = await inject(server, "close", {"code": 1013}, {"key": KEY})
    assert sorted(outcome["applied_to"]) == sorted(sid for _, sid in opened[:2])
    for ws, _ in opened[:2]:
        await drain_until_closed(ws)
        assert ws.close_code == 1013
    other, other_sid = opened[2]
    assert other.state is State.OPEN
    outcome = await inject(server, "close", {"code": 1000}, {"key_id": key_id(OTHER_KEY)})  # by key id
    assert outcome["applied_to"] == [other_sid]
    await drain_until_closed(other)


async def test_inject_into_every_session(server: RealtimeServer) -> None:
    opened = await open_sessions(server, KEY, OTHER_KEY)
    outcome = await inject(server, "drop")
    assert len(outcome["applied_to"]) == 2
    for ws, _ in opened:
        with pytest.raises(ConnectionClosed):
            await recv(ws)
        assert ws.close_code == 1006


# ---- scheduling and cancelling --------------------------------------------------------------------------


async def test_schedule_after_ms(server: RealtimeServer) -> None:
    ws, sid = (await open_sessions(server, KEY))[0]
    started = time.monotonic()
    status, scheduled, _ = await http(
        server,
        "POST",
        "/_rtsim/faults",
        {"kind": "drop", "target": {"session": sid}, "when": {"after_ms": 300}},
    )
    assert status == 201 and scheduled["scheduled"].startswith("fault_")
    _, listed, _ = await http(server, "GET", "/_rtsim/faults")
    assert [s["id"] for s in listed["scheduled"]] == [scheduled["scheduled"]]
    with pytest.raises(ConnectionClosed):
        await recv(ws, timeout=3)
    assert 0.25 <= time.monotonic() - started < 2.0 and ws.close_code == 1006
    _, listed, _ = await http(server, "GET", "/_rtsim/faults")
    assert listed["scheduled"] == []
    kinds = [r["kind"] for r in server.history.records if r["kind"].startswith("fault")]
    assert kinds == ["fault_scheduled", "fault"]
    fault = server.history.select(kind="fault")[0]
    assert (fault["route"], fault["session"], fault["target"]) == ("control-api", sid, {"session": sid})


async def test_schedule_at_event_drops_right_after_the_third_delta(server: RealtimeServer) -> None:
    ws, sid = (await open_sessions(server, KEY))[0]
    await inject(server, "drop", target={"session": sid}, when={"at_event": {"type": DELTA, "nth": 3}})
    await ws.send(json.dumps({"type": "response.create"}))
    received = await drain_until_closed(ws)
    assert [e["type"] for e in received].count(DELTA) == 3
    assert received[-1]["type"] in (DELTA, "response.output_audio_transcript.delta")  # nothing after it
    assert ws.close_code == 1006 and ws.protocol.close_rcvd is None
    sent = [r["event"]["type"] for r in server.history.events(sid, "out")]
    assert sent.count(DELTA) == 3  # the record shows what went out, not what was queued


async def test_schedule_at_event_close_right_after_the_third_delta(server: RealtimeServer) -> None:
    ws, sid = (await open_sessions(server, KEY))[0]
    await inject(server, "close", {"code": 1011}, {"session": sid}, {"at_event": {"type": DELTA, "nth": 3}})
    await ws.send(json.dumps({"type": "response.create"}))
    received = await drain_until_closed(ws)
    assert [e["type"] for e in received].count(DELTA) == 3
    assert ws.close_code == 1011


async def test_at_event_counts_from_when_it_is_scheduled(server: RealtimeServer) -> None:
    ws, sid = (await open_sessions(server, KEY))[0]
    await ws.send(json.dumps({"type": "response.create"}))
    first = await recv_until(ws, "response.done")
    assert [e["type"] for e in first].count(DELTA) >= 2
    await inject(server, "drop", target={"session": sid}, when={"at_event": {"type": DELTA, "nth": 2}})
    await ws.send(json.dumps({"type": "response.create"}))
    received = await drain_until_closed(ws)
    assert [e["type"] for e in received].count(DELTA) == 2


async def test_cancel_a_scheduled_fault(server: RealtimeServer) -> None:
    ws, sid = (await open_sessions(server, KEY))[0]
    timed = await inject(server, "drop", target={"session": sid}, when={"after_ms": 250})
    evented = await inject(server, "drop", target={"session": sid}, when={"at_event": {"type": DELTA}})
    for fault_id in (timed["scheduled"], evented["scheduled"]):
        status, body, _ = await http(server, "DELETE", f"/_rtsim/faults/{fault_id}")
        assert (status, body) == (204, None)
    _, listed, _ = await http(server, "GET", "/_rtsim/faults")
    assert listed["scheduled"] == []
    await ws.send(json.dumps({"type": "response.create"}))
    await recv_until(ws, "response.done")
    await asyncio.sleep(0.35)
    assert ws.state is State.OPEN and server.history.select(kind="fault") == []
    assert len(server.history.select(kind="fault_cancelled")) == 2
    status, body, _ = await http(server, "DELETE", f"/_rtsim/faults/{timed['scheduled']}")
    assert status == 404 and timed["scheduled"] in body["error"]["message"]
    await ws.close()


async def test_an_at_event_fault_whose_session_ends_is_no_longer_listed(server: RealtimeServer) -> None:
    ws, sid = (await open_sessions(server, KEY))[0]
    scheduled = await inject(server, "drop", target={"session": sid}, when={"at_event": {"type": DELTA}})
    await ws.close()
    await server_close(server, sid)
    _, listed, _ = await http(server, "GET", "/_rtsim/faults")
    assert listed["scheduled"] == []
    skipped = server.history.select(kind="fault_skipped")
    assert [s["fault_id"] for s in skipped] == [scheduled["scheduled"]]


async def test_an_at_event_fault_on_two_sessions_stays_listed_until_both_met_it(
    server: RealtimeServer,
) -> None:
    (a, sid_a), (b, sid_b) = await open_sessions(server, KEY, KEY)
    scheduled = await inject(server, "drop", when={"at_event": {"type": DELTA}})
    assert sorted(scheduled["applies_to"]) == sorted([sid_a, sid_b])
    await a.send(json.dumps({"type": "response.create"}))
    await drain_until_closed(a)
    _, listed, _ = await http(server, "GET", "/_rtsim/faults")
    assert [s["id"] for s in listed["scheduled"]] == [scheduled["scheduled"]]  # b has not met it yet
    await http(server, "DELETE", f"/_rtsim/faults/{scheduled['scheduled']}")
    await b.send(json.dumps({"type": "response.create"}))
    assert (await recv_until(b, "response.done"))[-1]["response"]["status"] == "completed"  # cancelled for b
    await b.close()


# ---- the record -----------------------------------------------------------------------------------------


async def test_history_per_session_and_per_key_as_json_lines(server: RealtimeServer) -> None:
    (a, sid_a), (_, sid_b) = await open_sessions(server, KEY, OTHER_KEY)
    await text_turn(a, "hello")
    await inject(server, "benign-error", target={"session": sid_a})
    await recv(a)
    await inject(server, "drop", target={"key": OTHER_KEY})
    await server_close(server, sid_b)
    async with server_http_raw(server, f"/_rtsim/history?session={sid_a}") as (status, content_type, text):
        assert status == 200 and content_type == "application/x-ndjson"
    records = [json.loads(line) for line in text.splitlines()]
    assert records and all(r["session"] == sid_a for r in records)
    kinds = [r["kind"] for r in records]
    assert kinds[0] == "session" and "fault" in kinds and "event" in kinds
    assert [r["fault"] for r in records if r["kind"] == "fault"] == ["benign-error"]
    _, text, _ = await http(server, "GET", f"/_rtsim/history?key_id={key_id(OTHER_KEY)}")
    records = [json.loads(line) for line in text.splitlines()]
    assert {r.get("session") for r in records} <= {sid_b, None}
    assert [r["kind"] for r in records if r["kind"] in ("handshake", "fault", "close")] == [
        "handshake",
        "fault",
        "close",
    ]
    _, text, _ = await http(server, "GET", "/_rtsim/history?kind=fault")
    assert [json.loads(line)["fault"] for line in text.splitlines()] == ["benign-error", "drop"]
    last_seq = server.history.records[-1]["seq"]
    _, text, _ = await http(server, "GET", f"/_rtsim/history?since={last_seq}")
    assert [json.loads(line)["seq"] for line in text.splitlines()] == [last_seq]
    await a.close()


class server_http_raw:
    """GET a path and hand back (status, content type, body text)."""

    def __init__(self, server: RealtimeServer, path: str) -> None:
        self.url = f"http://127.0.0.1:{server.port}{path}"

    async def __aenter__(self) -> tuple[int, str, str]:
        import aiohttp

        async with aiohttp.ClientSession() as client, client.get(self.url) as response:
            return response.status, response.content_type, await response.text()

    async def __aexit__(self, *exc: object) -> None:
        return None


async def test_summary_shows_the_gap_between_connections(server: RealtimeServer) -> None:
    ws, sid = (await open_sessions(server, KEY))[0]
    await inject(server, "drop", target={"session": sid})
    with pytest.raises(ConnectionClosed):
        await recv(ws)
    await server_close(server, sid)
    await asyncio.sleep(0.2)
    again, _ = (await open_sessions(server, KEY))[0]
    _, summary, _ = await http(server, "GET", "/_rtsim/summary")
    (who,) = summary["identities"]
    assert who["key_id"] == key_id(KEY) and who["faults"] == 1
    first, second = who["connections"]
    assert (first["code"], first["by"], first["fault"], first["session"]) == (1006, "server", "drop", sid)
    assert second["end"] is None and who["still_open"] == [second["session"]]
    (gap,) = who["gaps"]
    assert (gap["after"], gap["before"]) == (first["conn"], second["conn"])
    assert 0.2 <= gap["seconds"] < 2.0
    await again.close()


async def test_summary_counts_refused_handshakes(server: RealtimeServer) -> None:
    await inject(server, "reject-connects", {"status": 503, "count": 2})
    for _ in range(2):
        with pytest.raises(Exception, match="503"):
            await open_session(server)
    ws = await open_session(server)
    _, summary, _ = await http(server, "GET", "/_rtsim/summary")
    (who,) = summary["identities"]
    assert who["refused"] == 2 and [c.get("refused") for c in who["connections"]] == [503, 503, None]
    assert len(who["gaps"]) == 2
    await ws.close()


# ---- bad requests ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "status", "fragment", "param"),
    [
        ({"kind": "explode"}, 400, "Unknown fault kind 'explode'", "kind"),
        ({}, 400, "kind", "kind"),
        ([], 400, "object", None),
        ({"kind": "close", "params": {"code": 999}}, 400, "999", "params.code"),
        ({"kind": "close", "params": {"loud": True}}, 400, "loud", "params.loud"),
        ({"kind": "close", "params": {"reason": "é" * 100}}, 400, "123 bytes", "params.reason"),
        ({"kind": "latency", "params": {"ms": -5}}, 400, "-5", "params.ms"),
        ({"kind": "drop", "target": {"session": "sess_nope"}}, 404, "sess_nope", "target.session"),
        (
            {"kind": "drop", "target": {"session": "sess_nope"}, "when": {"after_ms": 10}},
            404,
            "sess_nope",
            "target.session",
        ),
        ({"kind": "drop", "target": {"room": 1}}, 400, "room", "target.room"),
        ({"kind": "drop", "when": {"after_ms": -1}}, 400, "-1", "when.after_ms"),
        ({"kind": "drop", "when": {"at_event": {"nth": 2}}}, 400, "type", "when.at_event.type"),
        ({"kind": "drop", "when": {}}, 400, "after_ms or at_event", "when"),
        ({"kind": "drop", "when": {"after_ms": 5, "at_event": {"type": DELTA}}}, 400, "one of", "when"),
        (
            {"kind": "drop", "when": {"at_event": {"type": "response.audio.dleta"}}},
            400,
            "dleta",
            "when.at_event.type",
        ),
        ({"kind": "drop", "when": {"at_event": {"type": DELTA, "nth": 0}}}, 400, "0", "when.at_event.nth"),
        ({"kind": "rate-limit", "when": {"at_event": {"type": DELTA}}}, 400, "session faults", "when"),
        ({"kind": "expire-tokens"}, 400, "key", "target"),
    ],
)
async def test_bad_fault_requests_get_a_clear_4xx(
    server: RealtimeServer, body: Any, status: int, fragment: str, param: str | None
) -> None:
    ws = await open_session(server)
    got, answer, _ = await http(server, "POST", "/_rtsim/faults", body)
    assert got == status, answer
    assert fragment in answer["error"]["message"] and answer["error"]["param"] == param
    assert server.history.select(kind="fault") == [] and ws.state is State.OPEN
    await ws.close()


async def test_bad_json_and_other_refusals(server: RealtimeServer) -> None:
    status, body, _ = await http(server, "POST", "/_rtsim/faults", raw=b"{kind: drop")
    assert status == 400 and "not valid JSON" in body["error"]["message"]
    status, body, _ = await http(server, "POST", "/_rtsim/faults", raw=b"")
    assert status == 400 and body["error"]["message"]
    status, body, _ = await http(server, "POST", "/_rtsim/faults", {"kind": "drop"})
    assert status == 404 and "No live websocket session" in body["error"]["message"]  # nobody to hit
    for since in ("soon", "-3"):
        status, body, _ = await http(server, "GET", f"/_rtsim/history?since={since}")
        assert status == 400 and body["error"]["param"] == "since"
    status, body, _ = await http(server, "DELETE", "/_rtsim/faults/fault_404")
    assert status == 404 and "fault_404" in body["error"]["message"]


# ---- the admin-token guard ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("::1", True),
        ("localhost", False),  # a name may resolve anywhere
        ("127.0.0.2", False),  # loopback, but not the address the policy trusts
        ("0.0.0.0", False),
        ("10.1.2.3", False),
    ],
)
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


async def test_beyond_loopback_the_control_api_needs_the_admin_token() -> None:
    # Configured as if bound to every interface; served on loopback by aiohttp's test server.
    guarded = RealtimeServer(ServerConfig(host="0.0.0.0", admin_token="s3cret"))
    async with TestClient(TestServer(guarded.app, host="127.0.0.1")) as client:
        for headers in ({}, {"X-Rtsim-Admin-Token": "wrong"}):
            response = await client.get("/_rtsim/sessions", headers=headers)
            assert response.status == 401
            assert "X-Rtsim-Admin-Token" in (await response.json())["error"]["message"]
        response = await client.post("/_rtsim/faults", json={"kind": "rate-limit"})
        assert response.status == 401 and guarded.history.select(kind="fault") == []
        response = await client.get("/_rtsim/sessions", headers={"X-Rtsim-Admin-Token": "s3cret"})
        assert response.status == 200 and (await response.json()) == {"sessions": []}
    off = RealtimeServer(ServerConfig(host="0.0.0.0"))
    async with TestClient(TestServer(off.app, host="127.0.0.1")) as client:
        response = await client.get("/_rtsim/sessions", headers={"X-Rtsim-Admin-Token": ""})
        assert response.status == 403 and "--admin-token" in (await response.json())["error"]["message"]


# ---- the commands ---------------------------------------------------------------------------------------


async def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """`rtsim ARGV` in a thread (it blocks on HTTP; the in-process server needs the loop)."""
    code = await asyncio.to_thread(cli.main, list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


async def test_cli_fault_prints_what_was_done(
    server: RealtimeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    (a, sid_a), (b, sid_b) = await open_sessions(server, KEY, OTHER_KEY)
    code, out, _ = await run_cli(
        capsys,
        "fault",
        "close",
        "--server",
        server.base_url,
        "--session",
        sid_a,
        "--code",
        "1011",
        "--reason",
        "try again",
    )
    assert code == 0 and out == f"close → {sid_a}: close 1011\n"
    await drain_until_closed(a)
    assert (a.close_code, a.close_reason) == (1011, "try again")

    code, out, _ = await run_cli(capsys, "fault", "latency", "--server", server.base_url, "--ms", "10")
    assert code == 0 and out == f"latency → {sid_b}: latency 10 ± 0 ms on server events\n"  # every session

    code, out, _ = await run_cli(
        capsys,
        "fault",
        "reject-connects",
        "--server",
        server.base_url,
        "--status",
        "429",
        "--retry-after",
        "3",
    )
    assert code == 0 and out == "reject-connects: next 1 handshake(s) answered with HTTP 429\n"

    code, out, _ = await run_cli(
        capsys, "fault", "drop", "--server", server.base_url, "--session", sid_b, "--at-event", f"{DELTA}#2"
    )
    assert code == 0 and out.startswith("scheduled drop as fault_") and sid_b in out
    await b.send(json.dumps({"type": "response.create"}))
    assert [e["type"] for e in await drain_until_closed(b)].count(DELTA) == 2

    code, out, err = await run_cli(
        capsys, "fault", "drop", "--server", server.base_url, "--session", "sess_gone"
    )
    assert code == 1 and out == "" and "404" in err and "sess_gone" in err
    code, _, err = await run_cli(
        capsys, "fault", "drop", "--server", server.base_url, "--at-event", f"{DELTA}#twice"
    )
    assert code == 1 and "(when.at_event.nth)" in err
    code, _, err = await run_cli(capsys, "fault", "close", "--server", server.base_url, "--code", "7")
    assert code == 1 and err.startswith("rtsim fault: 400: ") and "7" in err and "(params.code)" in err
    routes = {r["route"] for r in server.history.select(kind="fault")}
    assert routes == {"control-api"}


async def test_cli_sessions_and_history(server: RealtimeServer, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = await run_cli(capsys, "sessions", "--server", server.base_url)
    assert (code, out) == (0, "no live sessions\n")
    _, sid = (await open_sessions(server, KEY))[0]
    code, out, _ = await run_cli(capsys, "sessions", "--server", server.base_url)
    assert code == 0 and out.startswith(sid) and f"key={key_id(KEY)}" in out
    await inject(server, "stall", target={"session": sid})
    code, out, _ = await run_cli(capsys, "sessions", "--server", server.base_url)
    assert "STALLED" in out
    code, out, _ = await run_cli(capsys, "history", "--server", server.base_url, "--session", sid)
    records = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and records[0]["kind"] == "session" and records[-1]["fault"] == "stall"
    code, out, _ = await run_cli(capsys, "history", "--server", server.base_url, "--summary")
    assert code == 0 and json.loads(out)["identities"][0]["key_id"] == key_id(KEY)
    await inject(server, "drop", target={"session": sid})


async def test_cli_against_rtsim_serve(
    serve_process: Callable[..., tuple[Any, str]], capsys: pytest.CaptureFixture[str]
) -> None:
    from websockets.asyncio.client import connect

    _, url = serve_process("--pacing", "0", "--idle-timeout", "30", "--max-sessions-per-key", "3")
    ws_url = url.replace("http://", "ws://") + "/realtime?model=gpt-realtime"
    async with connect(ws_url, additional_headers={"Authorization": f"Bearer {KEY}"}) as ws:
        created = await recv(ws)
        sid = created["session"]["id"]
        code, out, _ = await run_cli(capsys, "fault", "close", "--server", url, "--code", "3000", "--error")
        assert code == 0 and out == f"close → {sid}: close 3000 after an error event\n"
        received = await drain_until_closed(ws)
        assert [e["type"] for e in received] == ["error"] and ws.close_code == 3000
    code, out, _ = await run_cli(capsys, "history", "--server", url, "--kind", "fault")
    (fault,) = [json.loads(line) for line in out.splitlines()]
    assert (fault["fault"], fault["session"], fault["route"]) == ("close", sid, "control-api")


def test_rtsim_fault_has_a_flag_for_every_catalogue_parameter() -> None:
    """The flags are generated from the kinds' schemas: the documented names, booleans as switches."""
    from rtsim.simulator import faults
    from rtsim.simulator.control.commands import fault_request

    parser = cli.build_parser()
    base = ["fault", "close", "--server", "http://127.0.0.1:1/v1"]
    documented = ["code", "reason", "status", "count", "seconds", "ms", "jitter_ms", "retry_after"]
    documented += ["close_code", "usable_for", "advertise", "token_id", "ending", "error_type", "error_code"]
    documented += ["error_message", "type", "keys", "failure", "percent", "direction"]
    every = {name for kind in faults.CATALOGUE.values() for name in kind.params.fields}
    assert every == {*documented, "mid_frame", "error"}
    argv = [*base, "--mid-frame", "--error"]
    for name in documented:
        argv += ["--" + name.replace("_", "-"), "7"]
    params = fault_request(parser.parse_args(argv))["params"]
    assert params["mid_frame"] is True and params["error"] is True
    assert params["code"] == 7 and params["reason"] == "7"  # a string parameter stays a string
    assert fault_request(parser.parse_args([*base, "--param", "jitter-ms=5"]))["params"] == {"jitter_ms": 5}
