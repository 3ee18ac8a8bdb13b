"""Each toxic's effect on real loopback sockets, within the real Toxiproxy project's tolerances."""

from __future__ import annotations

import asyncio
import itertools
import random
import socket
import statistics
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from rtsim.simulator.toxiproxy import ToxiproxyServer
from rtsim.simulator.toxiproxy.proxy import Proxy
from rtsim.simulator.toxiproxy.testing import ByteReader, Upstream, read_until_eof, round_trip
from rtsim.simulator.toxiproxy.toxics import SlicerToxic

MS = 0.001
# The real project's timing slack per direction: configured value ± (jitter + 10 ms).
SLACK = 10 * MS


@pytest.fixture
async def toxiproxy() -> AsyncIterator[ToxiproxyServer]:
    server = ToxiproxyServer(seed=1234)
    yield server
    await server.stop()


@pytest.fixture
async def echo_upstream() -> AsyncIterator[Upstream]:
    upstream = await Upstream().start()
    yield upstream
    await upstream.close()


async def make_proxy(server: ToxiproxyServer, upstream: Upstream, name: str = "test") -> Proxy:
    return await server.create_proxy(name, upstream.address)


async def connect(proxy: Proxy) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", proxy.port)


async def retry_once(measure: Callable[[], Awaitable[bool]]) -> None:
    """Timing checks run on a shared 2-core machine: one more try before calling a miss a failure."""
    if not await measure():
        assert await measure(), "timing out of tolerance twice in a row"


async def test_no_toxic_passes_data_both_ways(toxiproxy: ToxiproxyServer, echo_upstream: Upstream) -> None:
    proxy = await make_proxy(toxiproxy, echo_upstream)
    reader, writer = await connect(proxy)
    payload = random.Random(1).randbytes(300_000)
    writer.write(payload)
    assert await reader.readexactly(len(payload)) == payload
    assert bytes(echo_upstream.received) == payload
    writer.close()


@pytest.mark.parametrize("stream", ["upstream", "downstream"])
@pytest.mark.parametrize(("latency", "jitter"), [(100, 0), (100, 30)])
async def test_latency_per_direction(
    toxiproxy: ToxiproxyServer, echo_upstream: Upstream, stream: str, latency: int, jitter: int
) -> None:
    proxy = await make_proxy(toxiproxy, echo_upstream)
    await toxiproxy.add_toxic(
        "test", "latency", stream=stream, attributes={"latency": latency, "jitter": jitter}
    )
    reader, writer = await connect(proxy)

    async def measure() -> bool:
        samples = [await round_trip(reader, writer, b"ping") for _ in range(5)]
        # Never early (a timer cannot fire before its time); late only within the tolerance.
        assert min(samples) >= (latency - jitter) * MS - 1 * MS, samples
        return max(samples) <= (latency + jitter) * MS + SLACK

    await retry_once(measure)
    writer.close()


async def test_two_latency_toxics_add(toxiproxy: ToxiproxyServer, echo_upstream: Upstream) -> None:
    proxy = await make_proxy(toxiproxy, echo_upstream)
    await toxiproxy.add_toxic("test", "latency", name="first", attributes={"latency": 50})
    await toxiproxy.add_toxic("test", "latency", name="second", attributes={"latency": 70})
    reader, writer = await connect(proxy)

    async def measure() -> bool:
        samples = [await round_trip(reader, writer, b"ping") for _ in range(3)]
        assert min(samples) >= 120 * MS - 1 * MS, samples
        return statistics.median(samples) <= 120 * MS + SLACK

    await retry_once(measure)
    writer.close()


async def test_latency_is_pipelined_not_queued(toxiproxy: ToxiproxyServer, echo_upstream: Upstream) -> None:
    """Chunks sent 30 ms apart under 150 ms latency each arrive 150 ms after their own send."""
    proxy = await make_proxy(toxiproxy, echo_upstream)
    await toxiproxy.add_toxic("test", "latency", attributes={"latency": 150})
    reader, writer = await connect(proxy)

    async def measure() -> bool:
        sent_at: list[float] = []
        for index in range(5):
            sent_at.append(time.perf_counter())
            writer.write(bytes([index]))
            await asyncio.sleep(30 * MS)
        delays = []
        for index in range(5):
            assert await reader.readexactly(1) == bytes([index])
            delays.append(time.perf_counter() - sent_at[index])
        assert min(delays) >= 150 * MS - 1 * MS, delays
        return max(delays) <= 150 * MS + SLACK + 5 * MS

    await retry_once(measure)
    writer.close()


async def test_toxics_apply_to_live_carriers_and_updates_merge(
    toxiproxy: ToxiproxyServer, echo_upstream: Upstream
) -> None:
    proxy = await make_proxy(toxiproxy, echo_upstream)
    reader, writer = await connect(proxy)
    assert await round_trip(reader, writer, b"a") < 50 * MS

    await toxiproxy.add_toxic("test", "latency", attributes={"latency": 100, "jitter": 5})
    assert 95 * MS - 1 * MS <= await round_trip(reader, writer, b"b")

    spec = await toxiproxy.update_toxic("test", "latency_downstream", attributes={"latency": 200})
    assert spec.toxic.attributes() == {"latency": 200, "jitter": 5}  # jitter kept by the merge
    assert 195 * MS - 1 * MS <= await round_trip(reader, writer, b"c")

    await toxiproxy.remove_toxic("test", "latency_downstream")
    assert await round_trip(reader, writer, b"d") < 50 * MS
    writer.close()


@pytest.mark.parametrize(
    ("toxic", "attributes"),
    [
        ("latency", {"latency": 10_000}),
        ("bandwidth", {"rate": 0}),
        ("slicer", {"average_size": 1, "delay": 10**6}),
    ],
)
async def test_removing_a_toxic_flushes_what_it_holds(
    toxiproxy: ToxiproxyServer, echo_upstream: Upstream, toxic: str, attributes: dict[str, int]
) -> None:
    proxy = await make_proxy(toxiproxy, echo_upstream)
    await toxiproxy.add_toxic("test", toxic, stream="upstream", attributes=attributes)
    reader, writer = await connect(proxy)
    payload = bytes(range(256)) * 40
    writer.write(payload)
    await asyncio.sleep(100 * MS)
    assert len(echo_upstream.received) < len(payload)  # held back by the toxic
    removed_at = time.perf_counter()
    await toxiproxy.remove_toxic("test", f"{toxic}_upstream")
    assert await asyncio.wait_for(reader.readexactly(len(payload)), 1) == payload
    assert time.perf_counter() - removed_at < 0.5
    writer.close()


async def test_bandwidth_limits_rate(toxiproxy: ToxiproxyServer, echo_upstream: Upstream) -> None:
    """480,000 bytes at 1000 KB/s (1 KB = 1000 B) take 480 ms, within 10 %."""
    proxy = await make_proxy(toxiproxy, echo_upstream)
    await toxiproxy.add_toxic("test", "bandwidth", stream="upstream", attributes={"rate": 1000})
    payload = b"hello world " * 40_000
    assert len(payload) == 480_000

    async def measure() -> bool:
        reader, writer = await connect(proxy)
        started = time.perf_counter()
        writer.write(payload)
        assert await reader.readexactly(len(payload)) == payload
        elapsed = time.perf_counter() - started
        writer.close()
        assert elapsed >= 0.480 * 0.9, elapsed
        return elapsed <= 0.480 * 1.1

    await retry_once(measure)


async def test_slow_close_delays_the_close(toxiproxy: ToxiproxyServer) -> None:
    async def close_at_once(reader: ByteReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"bye")

    upstream = await Upstream(close_at_once).start()
    proxy = await make_proxy(toxiproxy, upstream)
    try:
        reader, writer = await connect(proxy)
        started = time.perf_counter()
        assert await read_until_eof(reader, 1) == b"bye"
        assert time.perf_counter() - started < 80 * MS  # without the toxic the close is immediate
        writer.close()

        await toxiproxy.add_toxic("test", "slow_close", attributes={"delay": 200})
        reader, writer = await connect(proxy)
        started = time.perf_counter()
        assert await reader.readexactly(3) == b"bye"  # data is not delayed, only the close
        assert time.perf_counter() - started < 80 * MS
        assert await read_until_eof(reader, 1) == b""
        assert 200 * MS - 1 * MS <= time.perf_counter() - started <= 200 * MS + 60 * MS
        writer.close()
    finally:
        await upstream.close()


async def test_timeout_drops_data_and_closes_after_the_last_chunk(
    toxiproxy: ToxiproxyServer, echo_upstream: Upstream
) -> None:
    proxy = await make_proxy(toxiproxy, echo_upstream)
    await toxiproxy.add_toxic("test", "timeout", stream="upstream", attributes={"timeout": 200})
    reader, writer = await connect(proxy)
    writer.write(b"dropped 1")
    await asyncio.sleep(100 * MS)
    writer.write(b"dropped 2")
    last_chunk_at = time.perf_counter()
    assert await read_until_eof(reader, 1) == b""
    closed_after = time.perf_counter() - last_chunk_at
    assert 200 * MS - 1 * MS <= closed_after <= 200 * MS + 60 * MS
    assert echo_upstream.received == b""
    await echo_upstream.wait_connection_ended()  # the upstream side was closed too
    writer.close()


async def test_timeout_zero_never_closes_and_removing_it_closes_both_ends(
    toxiproxy: ToxiproxyServer, echo_upstream: Upstream
) -> None:
    proxy = await make_proxy(toxiproxy, echo_upstream)
    await toxiproxy.add_toxic("test", "timeout", attributes={"timeout": 0})
    reader, writer = await connect(proxy)
    writer.write(b"hello")
    with pytest.raises(TimeoutError):
        await read_until_eof(reader, 0.3)  # no data comes back and nothing closes
    assert echo_upstream.received == b"hello"  # upstream direction untouched

    removed_at = time.perf_counter()
    await toxiproxy.remove_toxic("test", "timeout_downstream")
    assert await read_until_eof(reader, 1) == b""
    await echo_upstream.wait_connection_ended(limit=1)
    assert time.perf_counter() - removed_at < 1
    writer.close()


def _blocking_reset_check(port: int) -> tuple[float, BaseException | None, bytes | None]:
    """Write, then read: the first read must fail with ECONNRESET, the next one read EOF."""
    with socket.create_connection(("127.0.0.1", port), timeout=2) as conn:
        started = time.perf_counter()
        conn.sendall(b"reset toxic payload\n")
        error: BaseException | None = None
        try:
            conn.recv(1000)
        except OSError as exc:
            error = exc
        elapsed = time.perf_counter() - started
        after = conn.recv(1000) if error is not None else None
    return elapsed, error, after


@pytest.mark.parametrize("stream", ["upstream", "downstream"])
async def test_reset_peer_resets_the_connection(
    toxiproxy: ToxiproxyServer, echo_upstream: Upstream, stream: str
) -> None:
    proxy = await make_proxy(toxiproxy, echo_upstream)
    await toxiproxy.add_toxic("test", "reset_peer", stream=stream, attributes={"timeout": 100})

    async def measure() -> bool:
        elapsed, error, after = await asyncio.to_thread(_blocking_reset_check, proxy.port)
        assert isinstance(error, ConnectionResetError), error
        assert after == b""
        assert elapsed >= 100 * MS - 1 * MS, elapsed
        return elapsed <= 210 * MS

    await retry_once(measure)


async def test_reset_peer_without_timeout_resets_at_once(
    toxiproxy: ToxiproxyServer, echo_upstream: Upstream
) -> None:
    proxy = await make_proxy(toxiproxy, echo_upstream)
    await toxiproxy.add_toxic("test", "reset_peer", stream="upstream")
    elapsed, error, _after = await asyncio.to_thread(_blocking_reset_check, proxy.port)
    assert isinstance(error, ConnectionResetError)
    assert elapsed < 100 * MS


async def test_slicer_splits_into_many_reads_and_keeps_data_intact(
    toxiproxy: ToxiproxyServer, echo_upstream: Upstream
) -> None:
    proxy = await make_proxy(toxiproxy, echo_upstream)
    await toxiproxy.add_toxic(
        "test", "slicer", attributes={"average_size": 100, "size_variation": 20, "delay": 2000}
    )
    reader, writer = await connect(proxy)
    payload = random.Random(2).randbytes(5000)
    writer.write(payload)
    received = bytearray()
    reads = 0
    while len(received) < len(payload):
        received += await asyncio.wait_for(reader.read(1 << 16), 2)
        reads += 1
    assert bytes(received) == payload
    assert reads >= 10  # about 50 slices, 2 ms apart
    writer.close()


def test_slicer_cuts_cover_the_chunk_in_order() -> None:
    slicer = SlicerToxic(average_size=10, size_variation=4, delay=0)
    for size in (0, 1, 7, 14, 15, 100, 4096):
        cuts = slicer.slice_bounds(size, random.Random(size))
        assert cuts[0] == 0 and cuts[-1] == size
        sizes = [end - start for start, end in itertools.pairwise(cuts)]
        assert all(0 < piece <= 14 for piece in sizes), (size, sizes)
    # Degenerate settings (the real server panics on them) still terminate.
    assert SlicerToxic(average_size=0).slice_bounds(5, random.Random(0)) == [0, 1, 2, 3, 4, 5]


@pytest.mark.parametrize("stream", ["upstream", "downstream"])
async def test_limit_data_forwards_that_many_bytes_then_closes(
    toxiproxy: ToxiproxyServer, echo_upstream: Upstream, stream: str
) -> None:
    proxy = await make_proxy(toxiproxy, echo_upstream)
    await toxiproxy.add_toxic("test", "limit_data", stream=stream, attributes={"bytes": 10})
    reader, writer = await connect(proxy)
    for piece in (b"0123", b"4567", b"89ab", b"cdef"):
        writer.write(piece)
        await asyncio.sleep(5 * MS)
    echoed = await read_until_eof(reader, 1)
    await echo_upstream.wait_connection_ended()
    if stream == "upstream":
        assert echo_upstream.received == b"0123456789"
        # The upstream socket closes right after the 10th byte, so its echo of the last bytes is cut off.
        assert b"0123456789".startswith(echoed)
    else:
        assert echoed == b"0123456789"
        assert echo_upstream.received.startswith(b"0123456789")
    writer.close()


async def test_noop_changes_nothing(toxiproxy: ToxiproxyServer, echo_upstream: Upstream) -> None:
    proxy = await make_proxy(toxiproxy, echo_upstream)
    await toxiproxy.add_toxic("test", "noop", stream="upstream")
    await toxiproxy.add_toxic("test", "noop", stream="downstream")
    reader, writer = await connect(proxy)
    payload = random.Random(3).randbytes(100_000)
    writer.write(payload)
    assert await reader.readexactly(len(payload)) == payload
    assert await round_trip(reader, writer, b"x") < 50 * MS
    writer.close()


async def test_toxicity_zero_never_applies_and_one_always_does(
    toxiproxy: ToxiproxyServer, echo_upstream: Upstream
) -> None:
    proxy = await make_proxy(toxiproxy, echo_upstream)
    await toxiproxy.add_toxic("test", "latency", toxicity=0.0, attributes={"latency": 200})
    for _ in range(3):
        reader, writer = await connect(proxy)
        assert await round_trip(reader, writer, b"x") < 100 * MS
        writer.close()
    await toxiproxy.update_toxic("test", "latency_downstream", toxicity=1.0)
    for _ in range(3):
        reader, writer = await connect(proxy)
        assert await round_trip(reader, writer, b"x") >= 199 * MS
        writer.close()


async def _toxic_pattern(seed: int, upstream: Upstream, connections: int) -> list[bool]:
    """Which of successive connections drew the toxic (toxicity 0.5) under a seeded server."""
    server = ToxiproxyServer(seed=seed)
    try:
        proxy = await server.create_proxy("seeded", upstream.address)
        await server.add_toxic("seeded", "latency", toxicity=0.5, attributes={"latency": 60})
        pattern = []
        for _ in range(connections):
            reader, writer = await connect(proxy)
            pattern.append(await round_trip(reader, writer, b"x") >= 59 * MS)
            writer.close()
        return pattern
    finally:
        await server.stop()


async def test_toxicity_draws_are_per_connection_and_reproducible_with_a_seed(
    echo_upstream: Upstream,
) -> None:
    first = await _toxic_pattern(99, echo_upstream, 10)
    assert first == await _toxic_pattern(99, echo_upstream, 10)
    assert 0 < sum(first) < 10  # drawn per connection: some got the toxic, some did not


async def test_disable_closes_live_carriers_and_enable_reuses_the_port(
    toxiproxy: ToxiproxyServer, echo_upstream: Upstream
) -> None:
    proxy = await make_proxy(toxiproxy, echo_upstream)
    port = proxy.port
    reader, writer = await connect(proxy)
    assert await round_trip(reader, writer, b"x") < 50 * MS

    await toxiproxy.update_proxy("test", enabled=False)
    assert await read_until_eof(reader, 1) == b""
    writer.close()
    await echo_upstream.wait_connection_ended(limit=1)
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)

    await toxiproxy.update_proxy("test", enabled=True)
    assert proxy.port == port
    reader, writer = await connect(proxy)
    assert await round_trip(reader, writer, b"again") < 50 * MS
    writer.close()


async def test_delete_closes_live_carriers(toxiproxy: ToxiproxyServer, echo_upstream: Upstream) -> None:
    proxy = await make_proxy(toxiproxy, echo_upstream)
    await toxiproxy.add_toxic("test", "latency", attributes={"latency": 5000})
    reader, writer = await connect(proxy)
    writer.write(b"in flight")
    await asyncio.sleep(50 * MS)
    await toxiproxy.delete_proxy("test")
    assert await read_until_eof(reader, 1) == b""
    await echo_upstream.wait_connection_ended(limit=1)
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.close()


async def test_upstream_dial_failure_accepts_then_closes(toxiproxy: ToxiproxyServer) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        dead_port = unused.getsockname()[1]  # bound but never listening: connections are refused
        proxy = await toxiproxy.create_proxy("dead", f"127.0.0.1:{dead_port}")
        reader, writer = await connect(proxy)  # the proxy accepts...
        assert await read_until_eof(reader, 1) == b""  # ...then closes at once
        writer.close()


async def test_eof_from_either_side_closes_both(toxiproxy: ToxiproxyServer, echo_upstream: Upstream) -> None:
    proxy = await make_proxy(toxiproxy, echo_upstream)
    reader, writer = await connect(proxy)
    await round_trip(reader, writer, b"x")
    writer.write_eof()  # the client ends: the upstream connection is closed, then the client's
    await echo_upstream.wait_connection_ended(limit=1)
    assert await read_until_eof(reader, 1) == b""
    writer.close()

    async def close_after_greeting(reader: ByteReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"hi")

    closing = await Upstream(close_after_greeting).start()
    try:
        proxy = await make_proxy(toxiproxy, closing, name="closing")
        reader, writer = await connect(proxy)
        assert await read_until_eof(reader, 1) == b"hi"
        writer.close()
    finally:
        await closing.close()


async def test_ordered_writes_survive_toxics_added_and_removed(
    toxiproxy: ToxiproxyServer, echo_upstream: Upstream
) -> None:
    """65,535 ordered writes through both directions while toxics come and go: nothing lost or reordered."""
    proxy = await make_proxy(toxiproxy, echo_upstream)
    reader, writer = await connect(proxy)
    count = 65_535
    expected = b"".join(struct.pack("!I", index) for index in range(count))
    writes_done = asyncio.Event()

    async def write_all() -> None:
        for index in range(count):
            writer.write(struct.pack("!I", index))
            if index % 512 == 0:
                await asyncio.sleep(1 * MS)  # the proxy reads many separate chunks, spread over time
        await writer.drain()
        writes_done.set()

    churn_rounds = 0
    rounds_while_writing = 0

    async def churn() -> None:
        nonlocal churn_rounds, rounds_while_writing
        toxics = [
            ("latency", {"latency": 2, "jitter": 1}),
            ("slicer", {"average_size": 500, "size_variation": 100, "delay": 0}),
            ("bandwidth", {"rate": 50_000}),
            ("noop", {}),
        ]
        while not writes_done.is_set() or churn_rounds < 5:
            for stream in ("upstream", "downstream"):
                for kind, attributes in toxics:
                    await toxiproxy.add_toxic("test", kind, stream=stream, attributes=attributes)
            await asyncio.sleep(2 * MS)
            for stream in ("downstream", "upstream"):
                for kind, _ in reversed(toxics):
                    await toxiproxy.remove_toxic("test", f"{kind}_{stream}")
            churn_rounds += 1
            if not writes_done.is_set():
                rounds_while_writing += 1

    async def read_all() -> bytes:
        return await reader.readexactly(len(expected))

    async with asyncio.timeout(30):
        _, _, received = await asyncio.gather(write_all(), churn(), read_all())
    assert rounds_while_writing >= 5, rounds_while_writing
    assert received == expected
    writer.close()


@pytest.mark.parametrize("toxic", [None, ("latency", {"latency": 20}), ("bandwidth", {"rate": 40_000})])
async def test_large_transfers_keep_order_under_backpressure(
    toxiproxy: ToxiproxyServer, echo_upstream: Upstream, toxic: tuple[str, dict[str, int]] | None
) -> None:
    """Megabytes each way, more than the proxy buffers: reading pauses and resumes, nothing is lost."""
    proxy = await make_proxy(toxiproxy, echo_upstream)
    if toxic is not None:
        await toxiproxy.add_toxic("test", toxic[0], stream="upstream", attributes=toxic[1])
        await toxiproxy.add_toxic("test", toxic[0], stream="downstream", attributes=toxic[1])
    reader, writer = await connect(proxy)
    payload = random.Random(4).randbytes(6_000_000)

    async def send() -> None:
        for offset in range(0, len(payload), 1 << 16):
            writer.write(payload[offset : offset + (1 << 16)])
            await writer.drain()

    started = time.perf_counter()
    async with asyncio.timeout(20):
        _, received = await asyncio.gather(send(), reader.readexactly(len(payload)))
    assert received == payload
    if toxic is not None and toxic[0] == "bandwidth":
        assert time.perf_counter() - started >= 6_000_000 / 40_000_000 * 0.9  # 150 ms at 40 MB/s
    writer.close()
