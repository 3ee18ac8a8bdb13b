"""`rtsim serve --workers 2`: two real processes behind one port, one simulator to clients and to the
control API (tokens, faults, sessions, history and summary reach every worker)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from rtsim.simulator.control.fanout import merge_fault
from tests.support.wire import recv

KEY_A, KEY_B = "sk-worker-a", "sk-worker-b"
MAX_TRIES = 40  # connections until both workers got one; the kernel spreads them by a hash of the ports


def control(url: str, path: str, body: Any = None) -> tuple[int, Any]:
    root = url.removesuffix("/v1")
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        root + path, data=data, method="POST" if data else "GET", headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            text, status = response.read().decode(), response.status
    except urllib.error.HTTPError as exc:
        text, status = exc.read().decode(), exc.code
    if path.startswith("/_rtsim/history"):
        return status, [json.loads(line) for line in text.splitlines() if line]
    return status, json.loads(text) if text else None


@pytest.fixture
def workers(serve_process: Callable[..., Any]) -> str:
    _, url = serve_process("--workers", "2")
    return str(url)


@pytest.fixture
async def sockets() -> AsyncIterator[list[ClientConnection]]:
    opened: list[ClientConnection] = []
    yield opened
    for ws in opened:
        await ws.close()


async def open_ws(url: str, credential: str, opened: list[ClientConnection]) -> str:
    ws = await connect(
        url.replace("http://", "ws://") + "/realtime?model=gpt-realtime",
        additional_headers={"Authorization": f"Bearer {credential}"},
    )
    opened.append(ws)
    created = await recv(ws)
    assert created["type"] == "session.created", created
    return str(created["session"]["id"])


def worker_of(url: str) -> dict[str, int]:
    status, body = control(url, "/_rtsim/sessions")
    assert status == 200, body
    return {s["session"]: s["worker"] for s in body["sessions"]}


async def sessions_on_both(url: str, key: str, opened: list[ClientConnection]) -> dict[str, int]:
    """Open sessions of `key` until each worker holds at least one; session id → worker."""
    mine: set[str] = set()
    for _ in range(MAX_TRIES):
        mine.add(await open_ws(url, key, opened))
        placed = {sid: w for sid, w in worker_of(url).items() if sid in mine}
        if set(placed.values()) == {1, 2} and len(placed) == len(mine):
            return placed
    pytest.fail(f"{MAX_TRIES} connections never reached both workers")


async def test_the_sessions_list_holds_every_workers_sessions(workers: str, sockets: list[Any]) -> None:
    placed = await sessions_on_both(workers, KEY_A, sockets)
    # Asked again (the request may land on either worker), the merged list is the same.
    for _ in range(4):
        assert worker_of(workers) == placed
    status, history = control(workers, "/_rtsim/history?kind=session")
    assert status == 200
    assert {r["session"]: r["worker"] for r in history} == placed
    status, summary = control(workers, "/_rtsim/summary")
    assert status == 200
    (identity,) = summary["identities"]
    assert sorted(identity["still_open"]) == sorted(placed)


async def test_a_token_minted_by_one_worker_opens_a_session_on_the_other(
    workers: str, sockets: list[Any]
) -> None:
    for _ in range(MAX_TRIES):
        # A new connection per request, so the kernel places each one afresh.
        async with (
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http,
            http.post(
                f"{workers}/realtime/client_secrets", json={}, headers={"Authorization": f"Bearer {KEY_A}"}
            ) as response,
        ):
            assert response.status == 200
            token = (await response.json())["value"]
        _, minted = control(workers, "/_rtsim/history?kind=token")
        minted_by = {r["token_id"]: r["worker"] for r in minted}
        session_id = await open_ws(workers, token, sockets)
        _, handshakes = control(workers, "/_rtsim/history?kind=handshake")
        (handshake,) = [r for r in handshakes if r.get("auth") == "ephemeral" and r["accepted"]][-1:]
        if minted_by[handshake["token_id"]] != worker_of(workers)[session_id]:
            return  # minted on one worker, accepted by the other
    pytest.fail("every token was used on the worker that minted it")


async def test_a_fault_by_key_reaches_that_keys_sessions_on_every_worker(
    workers: str, sockets: list[Any]
) -> None:
    placed = await sessions_on_both(workers, KEY_A, sockets)
    bystander = await open_ws(workers, KEY_B, sockets)
    status, outcome = control(
        workers,
        "/_rtsim/faults",
        {"kind": "close", "params": {"code": 1011, "reason": "fanned out"}, "target": {"key": KEY_A}},
    )
    assert status == 200, outcome
    assert sorted(outcome["applied_to"]) == sorted(placed)
    for ws in sockets[:-1]:
        with pytest.raises(ConnectionClosed):
            while True:
                await recv(ws, timeout=10)
        assert ws.close_code == 1011
    assert list(worker_of(workers)) == [bystander]


async def test_a_fault_on_one_session_finds_it_on_whichever_worker(workers: str, sockets: list[Any]) -> None:
    placed = await sessions_on_both(workers, KEY_A, sockets)
    for session_id in placed:
        status, outcome = control(
            workers, "/_rtsim/faults", {"kind": "benign-error", "target": {"session": session_id}}
        )
        assert status == 200, outcome
        assert outcome["applied_to"] == [session_id]
    status, missing = control(workers, "/_rtsim/faults", {"kind": "drop", "target": {"session": "sess_none"}})
    assert status == 404, missing


def test_a_fault_no_worker_could_apply_is_the_error_not_a_404() -> None:
    bad = (400, {"error": {"message": "Unknown fault kind"}})
    assert merge_fault([(404, {"error": {}}), bad]) == bad
    assert merge_fault([(404, {"error": {"m": 1}}), (404, {"error": {"m": 2}})])[0] == 404


def test_the_cli_fans_out_over_several_servers(
    serve_process: Callable[..., Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """Several simulators (as on hosts behind a load balancer): `rtsim sessions`, `fault` and `history`
    given every `--server` act on all of them."""
    from websockets.sync.client import connect as connect_sync

    from rtsim.simulator.cli import main

    env = {"RTSIM_SECRET": "shared-by-the-fleet"}
    urls = [serve_process(env=env)[1] for _ in range(2)]
    servers = [arg for url in urls for arg in ("--server", url)]
    opened = [
        connect_sync(
            url.replace("http://", "ws://") + "/realtime?model=gpt-realtime",
            additional_headers={"Authorization": f"Bearer {KEY_A}"},
        )
        for url in urls
    ]
    try:
        ids = [json.loads(ws.recv(timeout=10))["session"]["id"] for ws in opened]
        capsys.readouterr()
        assert main(["sessions", *servers]) == 0
        listed = capsys.readouterr().out
        assert all(session_id in listed for session_id in ids)
        assert main(["history", *servers, "--kind", "session"]) == 0
        records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert {r["session"]: r["worker"] for r in records} == {ids[0]: 1, ids[1]: 2}
        assert main(["fault", "close", "--key", KEY_A, "--code", "1013", *servers]) == 0
        hit = [line.split(" → ")[1].split(":")[0] for line in capsys.readouterr().out.splitlines()]
        assert sorted(hit) == sorted(ids)
        for ws in opened:
            with pytest.raises(ConnectionClosed):
                while True:
                    ws.recv(timeout=10)
            assert ws.close_code == 1013
        assert main(["history", *servers, "--summary"]) == 0
        (identity,) = json.loads(capsys.readouterr().out)["identities"]
        assert [c["code"] for c in identity["connections"]] == [1013, 1013]
    finally:
        for ws in opened:
            ws.close()


def test_a_worker_that_dies_stops_the_others(serve_process: Callable[..., Any]) -> None:
    proc, _ = serve_process("--workers", "2")
    children = subprocess.run(
        ["pgrep", "-P", str(proc.pid)], capture_output=True, text=True, check=False
    ).stdout.split()
    assert len(children) == 2
    os.kill(int(children[0]), signal.SIGKILL)
    assert proc.wait(timeout=30) == 1
    deadline = time.monotonic() + 15
    while any(os.path.exists(f"/proc/{child}") for child in children[1:]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(os.path.exists(f"/proc/{child}") for child in children[1:])


async def test_every_worker_serves_the_one_certificate_the_printed_ca_issued(tmp_path: Any) -> None:
    """With --tls, the workers share one certificate: a client trusting the printed CA reaches either one
    (each making its own CA would leave every other worker's handshakes failing verification)."""
    ca_file = tmp_path / "ca.pem"
    serve = ["serve", "--port", "0", "--workers", "2", "--tls", "--tls-ca-file", str(ca_file)]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "rtsim.simulator.cli", *serve, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        url = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode().strip()
        assert url.startswith("https://127.0.0.1:"), url
        context = ssl.create_default_context(cafile=str(ca_file))
        seen: set[int] = set()
        async with aiohttp.ClientSession() as http:
            for _ in range(MAX_TRIES):
                async with connect(
                    url.replace("https://", "wss://") + "/realtime?model=gpt-realtime",
                    additional_headers={"Authorization": f"Bearer {KEY_A}"},
                    ssl=context,
                ) as ws:
                    created = await recv(ws)
                    assert created["type"] == "session.created", created
                    sessions_url = url.removesuffix("/v1") + "/_rtsim/sessions"
                    async with http.get(sessions_url, ssl=context) as response:
                        listed = (await response.json())["sessions"]
                    seen |= {s["worker"] for s in listed if s["session"] == created["session"]["id"]}
                if seen == {1, 2}:
                    break
        assert seen == {1, 2}
    finally:
        proc.terminate()
        await proc.wait()
