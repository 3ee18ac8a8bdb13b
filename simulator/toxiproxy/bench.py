"""Benchmark of the embedded proxy with no toxic: added latency per round trip and throughput.

Blocking sockets in threads play client, echo server and sink, while the proxy runs on its own event loop
thread (as ThreadedToxiproxyServer), so the figures are the proxy's cost, not the client's.
"""

from __future__ import annotations

import socket
import statistics
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from .server import ThreadedToxiproxyServer


@dataclass(frozen=True)
class BenchResult:
    round_trips: int
    message_size: int
    direct_median_us: float
    direct_p99_us: float
    proxied_median_us: float
    proxied_p99_us: float
    # Added latency per round trip: proxied minus the direct round trip made just before it.
    overhead_median_us: float
    overhead_p99_us: float
    megabytes: int
    direct_mb_per_s: float
    proxied_mb_per_s: float

    def report(self) -> str:
        return "\n".join(
            [
                f"round trips: {self.round_trips} x {self.message_size} B, echo server, no toxic",
                f"  direct    median {self.direct_median_us:8.1f} us   p99 {self.direct_p99_us:8.1f} us",
                f"  proxied   median {self.proxied_median_us:8.1f} us   p99 {self.proxied_p99_us:8.1f} us",
                f"  overhead  median {self.overhead_median_us:8.1f} us   p99 {self.overhead_p99_us:8.1f} us"
                " per round trip",
                f"throughput: {self.megabytes} MB one way, idle proxy",
                f"  direct   {self.direct_mb_per_s:8.1f} MB/s",
                f"  proxied  {self.proxied_mb_per_s:8.1f} MB/s",
            ]
        )


class _ThreadedTcpServer:
    """Accepts on 127.0.0.1 and serves each connection on its own thread."""

    def __init__(self, serve: Callable[[socket.socket], None]) -> None:
        self._serve = serve
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    def _accept_loop(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def close(self) -> None:
        self._listener.close()


def _echo(conn: socket.socket) -> None:
    with conn:
        while data := conn.recv(1 << 16):
            conn.sendall(data)


def _sink(conn: socket.socket) -> None:
    """Reads an 8-byte length, then that many bytes, then answers with the count (no half-close needed:
    Toxiproxy closes both sides when one side ends)."""
    with conn:
        expected = struct.unpack("!Q", _recv_exactly(conn, 8))[0]
        received = 0
        while received < expected:
            data = conn.recv(1 << 20)
            if not data:
                break
            received += len(data)
        conn.sendall(struct.pack("!Q", received))


def _recv_exactly(conn: socket.socket, size: int) -> bytes:
    parts = bytearray()
    while len(parts) < size:
        data = conn.recv(size - len(parts))
        if not data:
            raise ConnectionError("connection closed early")
        parts += data
    return bytes(parts)


def _connect(address: str) -> socket.socket:
    host, port = address.rsplit(":", 1)
    conn = socket.create_connection((host, int(port)))
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return conn


def _percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def _round_trips(
    direct: socket.socket, proxied: socket.socket, count: int, size: int
) -> tuple[list[float], list[float]]:
    """Alternate direct and proxied round trips so both see the same machine load."""
    message = b"x" * size
    direct_us: list[float] = []
    proxied_us: list[float] = []
    for index in range(count + count // 10):
        for conn, samples in ((direct, direct_us), (proxied, proxied_us)):
            started = time.perf_counter_ns()
            conn.sendall(message)
            _recv_exactly(conn, size)
            if index >= count // 10:  # the first tenth warms up
                samples.append((time.perf_counter_ns() - started) / 1000)
    return direct_us, proxied_us


def _throughput(address: str, megabytes: int) -> float:
    total = megabytes * 1_000_000
    block = b"\0" * (1 << 20)
    with _connect(address) as conn:
        started = time.perf_counter()
        conn.sendall(struct.pack("!Q", total))
        remaining = total
        while remaining > 0:
            sent = conn.send(block[: min(remaining, len(block))])
            remaining -= sent
        received = struct.unpack("!Q", _recv_exactly(conn, 8))[0]
        elapsed = time.perf_counter() - started
    if received != total:
        raise RuntimeError(f"sink received {received} of {total} bytes")
    return total / 1_000_000 / elapsed


def run_benchmark(round_trips: int = 3000, megabytes: int = 100, message_size: int = 64) -> BenchResult:
    echo = _ThreadedTcpServer(_echo)
    sink = _ThreadedTcpServer(_sink)
    proxy_server = ThreadedToxiproxyServer()
    try:
        proxy_server.start()
        server = proxy_server.server
        echo_proxy = proxy_server.call(server.create_proxy, "bench_echo", echo.address)
        sink_proxy = proxy_server.call(server.create_proxy, "bench_sink", sink.address)
        with _connect(echo.address) as direct, _connect(echo_proxy.listen) as proxied:
            direct_us, proxied_us = _round_trips(direct, proxied, round_trips, message_size)
        direct_rate = _throughput(sink.address, megabytes)
        proxied_rate = _throughput(sink_proxy.listen, megabytes)
    finally:
        proxy_server.stop()
        echo.close()
        sink.close()
    overheads = [proxied - direct for direct, proxied in zip(direct_us, proxied_us, strict=True)]
    return BenchResult(
        round_trips=round_trips,
        message_size=message_size,
        direct_median_us=statistics.median(direct_us),
        direct_p99_us=_percentile(direct_us, 0.99),
        proxied_median_us=statistics.median(proxied_us),
        proxied_p99_us=_percentile(proxied_us, 0.99),
        overhead_median_us=statistics.median(overheads),
        overhead_p99_us=_percentile(overheads, 0.99),
        megabytes=megabytes,
        direct_mb_per_s=direct_rate,
        proxied_mb_per_s=proxied_rate,
    )
