"""The official `openai` SDK's own reconnect (`on_reconnecting=`), driven through the simulator's faults.

The SDK reconnects on 1001/1005/1006/1011/1012/1013/1015 and not on 1000, 1008 or 3000; it reconnects to the
same URL, so the server sees a second session for the same key.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest
from openai import AsyncOpenAI
from openai.types.websocket_reconnection import ReconnectingEvent
from websockets.exceptions import ConnectionClosed

from rtsim.simulator.server import RealtimeServer
from rtsim.simulator.tokens import key_id
from tests.support.faults import inject
from tests.support.wire import KEY


@dataclass
class Run:
    reconnects: list[ReconnectingEvent] = field(default_factory=list)
    sessions_seen: int = 0
    ended_by: ConnectionClosed | None = None


async def drive(
    server: RealtimeServer,
    kind: str,
    params: dict[str, Any],
    *,
    sessions: int = 2,
    before: tuple[str, dict[str, Any]] | None = None,
) -> Run:
    """Connect with the SDK, inject `kind` into the first session (after the server fault `before`, if any),
    iterate until `sessions` session.created events were seen or the SDK gives up."""
    run = Run()
    client = AsyncOpenAI(base_url=server.base_url, api_key=KEY)
    async with client.realtime.connect(
        model="gpt-realtime", on_reconnecting=run.reconnects.append, initial_delay=0.05
    ) as conn:
        try:
            async with asyncio.timeout(10):
                async for event in conn:
                    if event.type != "session.created":
                        continue
                    run.sessions_seen += 1
                    if run.sessions_seen == 1:
                        if before is not None:
                            await inject(server, *before)
                        sid = server.history.select(kind="session")[-1]["session"]
                        await inject(server, kind, params, {"session": sid})
                    if run.sessions_seen == sessions:
                        break
        except ConnectionClosed as exc:
            run.ended_by = exc
    return run


def sessions_of_key(server: RealtimeServer) -> list[str]:
    return [s["session"] for s in server.history.select(kind="session") if s["key_id"] == key_id(KEY)]


@pytest.mark.parametrize(
    ("kind", "params", "code"),
    [
        ("drop", {}, 1006),
        ("drop", {"mid_frame": True}, 1006),
        ("close", {"code": 1011, "reason": "internal error"}, 1011),
        ("close", {"code": 1012}, 1012),
        ("close", {"code": 1013}, 1013),
        ("expire-session", {}, 1001),  # the session cap: the SDK reconnects, and the context is gone
    ],
)
async def test_the_sdk_reconnects(
    server: RealtimeServer, kind: str, params: dict[str, Any], code: int
) -> None:
    run = await drive(server, kind, params)
    assert run.sessions_seen == 2 and run.ended_by is None  # a new session.created after the fault
    assert [(r.attempt, r.close_code) for r in run.reconnects] == [(1, code)]
    first, second = sessions_of_key(server)  # the record: a second session for the same key
    assert first != second
    close = server.history.select(kind="close")[0]
    assert (close["session"], close["code"], close["by"]) == (first, code, "server")
    (who,) = server.history.summary()["identities"]
    assert len(who["connections"]) == 2 and len(who["gaps"]) == 1


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"code": 3000, "reason": "invalid_request_error.invalid_api_key", "error": True}, 3000),
        ({"code": 1008, "reason": "policy violation"}, 1008),
    ],
)
async def test_the_sdk_does_not_reconnect(server: RealtimeServer, params: dict[str, Any], code: int) -> None:
    run = await drive(server, "close", params)
    assert run.reconnects == [] and run.sessions_seen == 1
    assert run.ended_by is not None and run.ended_by.rcvd is not None and run.ended_by.rcvd.code == code
    assert len(sessions_of_key(server)) == 1
    assert len(server.history.select(kind="handshake")) == 1


async def test_the_sdk_ends_normally_on_1000(server: RealtimeServer) -> None:
    run = await drive(server, "close", {"code": 1000})
    assert run.reconnects == [] and run.sessions_seen == 1 and run.ended_by is None  # the iterator just ends
    assert len(sessions_of_key(server)) == 1


async def test_the_sdk_retries_refused_handshakes_with_backoff(server: RealtimeServer) -> None:
    run = await drive(server, "drop", {}, before=("reject-connects", {"status": 503, "count": 2}))
    assert run.sessions_seen == 2
    assert [r.attempt for r in run.reconnects] == [1, 2, 3]
    assert [r.delay for r in run.reconnects] == sorted(r.delay for r in run.reconnects)  # backing off
    handshakes = server.history.select(kind="handshake")
    assert [(h["accepted"], h["status"]) for h in handshakes] == [
        (True, 101),
        (False, 503),
        (False, 503),
        (True, 101),
    ]


async def test_the_sdk_does_not_loop_on_accept_then_1008(server: RealtimeServer) -> None:
    rejection = ("reject-connects", {"close_code": 1008, "reason": "policy violation", "count": 5})
    run = await drive(server, "drop", {}, before=rejection)
    assert [r.close_code for r in run.reconnects] == [1006]  # it came back once after the drop...
    assert run.ended_by is not None and run.ended_by.rcvd is not None and run.ended_by.rcvd.code == 1008
    assert len(server.history.select(kind="handshake")) == 2  # ...and stopped at the 1008
