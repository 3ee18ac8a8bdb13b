"""`rtsim serve --workers N`: N simulator processes behind one port, one simulator to the clients.

The supervisor (the `rtsim serve` process) reserves the port (a socket bound with SO_REUSEPORT that never
listens: `--port 0` picks the port once for all, and no connection is ever queued on it), then starts
N workers. Each worker is a whole `RealtimeServer` listening on that port with SO_REUSEPORT — the kernel
spreads new connections over them — and on a private control port on loopback. All share
`RTSIM_SECRET` (the supervisor makes one when none is set), so a token minted by one verifies on all
(tokens verify themselves: `tokens.py`). Once every worker is up, the supervisor tells each the private
control URLs of the others, and the control API on the public port reaches every worker (`control/fanout`).

Protocol between supervisor and worker, one JSON line each way on stdin/stdout:
supervisor → worker `{"config": ServerConfig fields, "loop": "asyncio"|"uvloop"}`; worker → supervisor
`{"base_url": ..., "control": private base URL}`; supervisor → worker `{"peers": [[number, url], ...]}`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import json
import os
import secrets
import socket
import sys
import threading
from collections.abc import Callable
from typing import Any

from .server import RealtimeServer, ServerConfig, quiet_collector

READY_TIMEOUT_SECONDS = 60.0


def reserve_port(host: str, port: int) -> socket.socket:
    """A socket bound to (host, port) with SO_REUSEPORT, never listening: the workers bind beside it."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


async def supervise(
    config: ServerConfig, workers: int, *, loop: str = "asyncio", ready: Callable[[str], None] | None = None
) -> int:
    """Run `workers` worker processes until SIGINT/SIGTERM (exit status 0) or until one of them ends
    (1: the others are stopped too, so clients never meet a half-served port)."""
    from .signals import until_signalled

    if config.tls and config.tls_cert is None:
        # One certificate for every worker: each making its own CA would leave clients trusting only one.
        from . import tls

        ca_file = config.tls_ca_file or tls.default_ca_path()
        server_pem = await asyncio.to_thread(tls.local_ca_files, ca_file)
        config = dataclasses.replace(config, tls_cert=server_pem, tls_key=None, tls_ca_file=ca_file)
    reservation = reserve_port(config.host, config.port)
    port = reservation.getsockname()[1]
    env = dict(os.environ)
    env.setdefault("RTSIM_SECRET", secrets.token_hex(32))
    procs: list[asyncio.subprocess.Process] = []
    try:
        for number in range(1, workers + 1):
            spec = {
                "config": dataclasses.asdict(dataclasses.replace(config, port=port, worker=number)),
                "loop": loop,
            }
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "rtsim.simulator.workers",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                env=env,
            )
            procs.append(proc)
            assert proc.stdin is not None
            proc.stdin.write(json.dumps(spec).encode() + b"\n")
            await proc.stdin.drain()
        started = [await _ready_line(proc) for proc in procs]
        urls = [(number, line["control"]) for number, line in enumerate(started, 1)]
        for number, proc in enumerate(procs, 1):
            assert proc.stdin is not None
            peers = [[n, url] for n, url in urls if n != number]
            proc.stdin.write(json.dumps({"peers": peers}).encode() + b"\n")
            await proc.stdin.drain()
        if ready is not None:
            ready(started[0]["base_url"])
        ended = [asyncio.Event()]

        async def watch(proc: asyncio.subprocess.Process) -> None:
            await proc.wait()
            ended[0].set()

        watchers = [asyncio.create_task(watch(proc)) for proc in procs]
        try:
            await until_signalled(ended[0])
        finally:
            for watcher in watchers:
                watcher.cancel()
        gone = [number for number, proc in enumerate(procs, 1) if proc.returncode is not None]
        if gone:
            print(f"rtsim serve: worker {gone[0]} ended; stopping the others", file=sys.stderr)
            return 1
        return 0
    finally:
        for proc in procs:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.terminate()
        for proc in procs:
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        reservation.close()


async def _ready_line(proc: asyncio.subprocess.Process) -> dict[str, Any]:
    assert proc.stdout is not None
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), READY_TIMEOUT_SECONDS)
    except TimeoutError:
        line = b""
    try:
        return dict(json.loads(line))
    except ValueError:
        raise OSError(f"a worker did not start (it said {line[:200]!r})") from None


async def _worker(spec: dict[str, Any]) -> None:
    from .signals import until_signalled

    config = ServerConfig(**spec["config"])
    server = RealtimeServer(config)
    base_url = await server.start()
    collector = quiet_collector(server) if config.gc_policy == "quiet" else None
    print(json.dumps({"base_url": base_url, "control": server.private_url}), flush=True)
    loop = asyncio.get_running_loop()
    peers: asyncio.Queue[str] = asyncio.Queue()

    def read_supervisor() -> None:
        # A daemon thread, not the loop's executor: a blocked readline must not hold up the exit. The peers
        # line, then end of file when the supervisor is gone (a worker never outlives it).
        for line in itertools.chain(iter(sys.stdin.readline, ""), [""]):
            loop.call_soon_threadsafe(peers.put_nowait, line)

    threading.Thread(target=read_supervisor, daemon=True).start()
    try:
        line = await peers.get()
        if line:
            server.peers = [(int(number), str(url)) for number, url in json.loads(line)["peers"]]
            supervisor_gone = asyncio.Event()

            async def until_eof() -> None:
                while await peers.get():
                    pass
                supervisor_gone.set()

            watcher = asyncio.create_task(until_eof())
            await until_signalled(supervisor_gone)
            watcher.cancel()
    finally:
        await server.stop()
        if collector is not None:
            await collector.stop()


def worker_main() -> int:
    spec = json.loads(sys.stdin.readline())
    run: Callable[..., Any] = asyncio.run
    if spec.get("loop") == "uvloop":
        import uvloop

        run = uvloop.run
    run(_worker(spec))
    return 0


if __name__ == "__main__":
    sys.exit(worker_main())
