"""locustfile.py against `rtsim serve`, as a user runs them: real processes on 127.0.0.1.

- a short single-process headless run reports every custom metric, and an injected `error` event is a
  failure (of its own `ERROR <code>` entry, of the turn it hit, and of locust's exit code);
- under a chaos plan that drops every session, the users reconnect: the gaps show in locust's stats and
  in the server's summary per identity, and no session is left open (no leaks);
- distributed mode: a master and two workers, the master's stats aggregate the sessions of both;
- a broken server's frames are failures the user survives.

Kept short (a few users, seconds of load) because the machine is shared; none of it times anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from rtsim.simulator import audio
from rtsim.simulator.tokens import key_id

ROOT = Path(__file__).resolve().parents[2]
KEY = "sk-test-load"
# Every metric the user reports on a run without faults (barge-in and reconnect need luck or faults).
METRICS = {
    ("POST", "client_secrets"),
    ("WS", "handshake"),
    ("WS", "session.created"),
    ("WS", "session.updated"),
    ("AUDIO", "first delta"),
    ("AUDIO", "turn latency"),
    ("AUDIO", "lateness"),
}

Serve = Callable[..., tuple[subprocess.Popen[str], str]]


@pytest.fixture
def locust_procs() -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def locust(procs: list[subprocess.Popen[str]], *args: str, log: Path | None = None) -> subprocess.Popen[str]:
    """A locust process; its output piped, or (a worker, never read until the end) written to `log`."""
    with log.open("w") if log is not None else contextlib.nullcontext(subprocess.PIPE) as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "locust", "-f", "locustfile.py", "--api-key", KEY, *args],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,  # as in CI; a terminal would switch on locust's keyboard controls
            stdout=out,
            stderr=out,
            text=True,
        )
    procs.append(proc)
    return proc


Stats = dict[tuple[str, str], Any]


def headless(procs: list[subprocess.Popen[str]], url: str, *args: str) -> tuple[int, Stats]:
    """A headless run to its end: its exit code and its final stats by (type, name)."""
    proc = locust(procs, "--headless", "--host", url, "--json", "--skip-log", *args)
    out, err = proc.communicate(timeout=60)
    assert out.strip(), err
    return proc.returncode, stats_by_name(out)


def stats_by_name(json_text: str) -> Stats:
    return {(entry["method"], entry["name"]): entry for entry in json.loads(json_text)}


def summary(url: str) -> list[dict[str, Any]]:
    origin = url.removesuffix("/v1")
    with urllib.request.urlopen(f"{origin}/_rtsim/summary", timeout=10) as response:
        return json.load(response)["identities"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_headless_run_reports_the_metrics_and_an_error_event_fails(
    serve_process: Serve, locust_procs: list[subprocess.Popen[str]]
) -> None:
    # Every session's first reply fails with a server_error event after its second audio delta.
    # Real-time pacing, so the reply is still underway when its second delta has gone out.
    _, url = serve_process(
        "--pacing", "1", "--chaos", "server-error:after_event=response.output_audio.delta#2"
    )
    code, stats = headless(locust_procs, url, "-u", "2", "-r", "2", "-t", "8s")

    assert METRICS <= stats.keys(), sorted(stats)
    assert all(stats[metric]["num_requests"] >= 1 for metric in METRICS)
    assert stats["WS", "session.created"]["num_failures"] == 0
    errors = stats["ERROR", "server_error"]
    assert errors["num_requests"] >= 1 and errors["num_failures"] == errors["num_requests"]
    assert stats["AUDIO", "turn latency"]["num_failures"] >= 1  # the turn the error hit
    assert code == 1  # locust's own verdict: the run had failures


def test_chaos_drops_show_as_reconnect_gaps_and_leave_no_session_open(
    serve_process: Serve, locust_procs: list[subprocess.Popen[str]]
) -> None:
    _, url = serve_process("--pacing", "0", "--chaos", "drop@100%:within=2")
    proc = locust(
        locust_procs, "--headless", "--host", url, "--json", "--skip-log", "-u", "3", "-r", "3", "-t", "8s",
        "--key-per-user",
    )  # fmt: skip
    # While the users ride out the drops, none holds more than its one session: a reconnect leaks nothing.
    during = []
    deadline = time.monotonic() + 30
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)
        if identities_now := summary(url):
            during.append(identities_now)
    out, err = proc.communicate(timeout=60)
    assert out.strip(), err
    stats = stats_by_name(out)

    reconnects = stats["WS", "reconnect"]
    assert reconnects["num_requests"] >= 3 and reconnects["num_failures"] == 0
    assert len(during) >= 5
    for identities in during:
        assert all(len(who["still_open"]) <= 1 for who in identities), identities
    identities = summary(url)
    assert len(identities) == 3  # one per user
    for who in identities:
        assert who["gaps"], who  # the server saw each user come back
        assert who["still_open"] == [], who
        # Every session ended by the server's drop, or closed cleanly by the user when locust stopped.
        assert all((c["code"], c["by"]) in ((1006, "server"), (1000, "client")) for c in who["connections"])
    accepted = sum(1 for who in identities for conn in who["connections"] if conn.get("session"))
    assert stats["WS", "session.created"]["num_requests"] == accepted


def test_distributed_master_aggregates_both_workers(
    serve_process: Serve, locust_procs: list[subprocess.Popen[str]], tmp_path: Path
) -> None:
    _, url = serve_process("--pacing", "0")  # replies arrive at once and play by the users' clocks
    port = str(free_port())
    # Custom options are given to the master only: locust forwards them to the workers.
    master = locust(
        locust_procs,
        "--master",
        "--master-bind-host", "127.0.0.1",
        "--master-bind-port", port,
        "--headless",
        "--expect-workers", "2",
        "--expect-workers-max-wait", "30",
        "-u", "4",
        "-r", "4",
        "-t", "6s",
        "--host", url,
        "--key-per-user",
        "--json",
        "--skip-log",
    )  # fmt: skip
    logs = [tmp_path / f"worker{n}.log" for n in (1, 2)]
    workers = [
        locust(locust_procs, "--worker", "--master-host", "127.0.0.1", "--master-port", port, log=log)
        for log in logs
    ]
    out, err = master.communicate(timeout=60)
    assert out.strip(), err + "".join(log.read_text() for log in logs)
    stats = stats_by_name(out)

    assert METRICS <= stats.keys(), sorted(stats)
    # Each worker ran two users, each with its own key: the server saw all four, from both processes.
    expected = {key_id(f"{KEY}-{worker.pid}-{n}") for worker in workers for n in (1, 2)}
    identities = summary(url)
    assert {who["key_id"] for who in identities} == expected
    accepted = sum(1 for who in identities for conn in who["connections"] if conn.get("session"))
    assert stats["WS", "session.created"]["num_requests"] == accepted == 4
    assert stats["POST", "client_secrets"]["num_requests"] == 4
    for worker in workers:
        worker.wait(timeout=15)  # the master tells its workers to quit at the end


def test_a_server_sending_frames_that_are_no_events_fails_them_and_the_user_reconnects(
    locust_procs: list[subprocess.Popen[str]],
) -> None:
    """A broken relay: after session.updated it sends a JSON array. The user counts a `WS frame` failure,
    abandons that session and opens another (and the load generator survives it)."""
    loop = asyncio.new_event_loop()
    connections = 0

    async def broken(ws: ServerConnection) -> None:
        nonlocal connections
        connections += 1
        await ws.send(json.dumps({"type": "session.created", "event_id": "e1", "session": {"id": "sess_1"}}))
        await ws.recv()  # session.update
        await ws.send(json.dumps({"type": "session.updated", "event_id": "e2", "session": {"id": "sess_1"}}))
        await ws.send("[1, 2, 3]")
        with contextlib.suppress(ConnectionClosed):
            async for _ in ws:  # the microphone, until the user hangs up
                pass

    async def start() -> Server:
        return await serve(broken, "127.0.0.1", 0)

    server = loop.run_until_complete(start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        code, stats = headless(
            locust_procs, f"http://127.0.0.1:{port}/v1", "--auth", "key", "-u", "1", "-r", "1", "-t", "5s"
        )
    finally:

        async def stop() -> None:
            server.close()
            await server.wait_closed()

        asyncio.run_coroutine_threadsafe(stop(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()

    frames = stats["WS", "frame"]
    assert frames["num_requests"] >= 2 and frames["num_failures"] == frames["num_requests"]
    assert stats["WS", "reconnect"]["num_requests"] >= 1 and connections >= 2
    assert code == 1


def test_a_reply_longer_than_the_response_timeout_is_not_taken_for_a_dead_session(
    serve_process: Serve, locust_procs: list[subprocess.Popen[str]], tmp_path: Path
) -> None:
    """--response-timeout is server silence, not reply length: a 5.8 s reply in real time with a 2 s
    timeout is heard out, with no failure and no reconnect."""
    script = tmp_path / "long.yaml"
    reply = "This reply is long on purpose, so that it plays for far longer than the response timeout."
    assert audio.duration_ms_for_text(reply) > 5000
    script.write_text(yaml.safe_dump({"default": reply}))
    _, url = serve_process("--pacing", "1", "--script", str(script))  # the reply's deltas over 5.8 s
    _, stats = headless(locust_procs, url, "-u", "2", "-r", "2", "-t", "12s", "--response-timeout", "2")

    turns = stats["AUDIO", "turn latency"]
    assert turns["num_requests"] >= 1 and turns["num_failures"] == 0
    assert stats["AUDIO", "lateness"]["num_requests"] >= 1  # a whole reply came (its response.done)
    assert ("WS", "reconnect") not in stats
