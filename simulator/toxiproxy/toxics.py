"""Toxics: small units chained in a link, each taking chunks from an input channel and writing to an output.

As in the real Toxiproxy, a toxic's attributes are shared by every connection, while each connection and
direction runs the toxic on its own `ToxicStub` (input, output, per-connection state). A stub's task can be
interrupted at any time (it is cancelled) so the chain can be rewired; a toxic holding a chunk when that
happens writes it out before leaving, so nothing is ever lost.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import ClassVar, Final, Protocol

from .errors import BadRequestBody, InvalidToxicType
from .gojson import Float32, json_kind, read_int

UPSTREAM: Final = "upstream"
DOWNSTREAM: Final = "downstream"
STREAMS: Final = (UPSTREAM, DOWNSTREAM)


class Chunk:
    """Bytes read from a socket, stamped with when they arrived (latency counts from there)."""

    __slots__ = ("data", "timestamp")

    def __init__(self, data: bytes, timestamp: float) -> None:
        self.data = data
        self.timestamp = timestamp


# A channel carries chunks, then `None` once the source has ended (EOF).
Item = Chunk | None


class Outlet(Protocol):
    def put(self, item: Item) -> None: ...


class QueueMeter(Protocol):
    """Told how many bytes wait in a link's channels, so the link can pause reading its source."""

    def queued(self, size: int) -> None: ...

    def dequeued(self, size: int) -> None: ...


class _TimedOut:
    pass


TIMED_OUT: Final = _TimedOut()


class Channel:
    """An unbounded FIFO between two stubs. Puts never block (flow control is done per link, on bytes),
    which lets the chain be rewired synchronously. EOF is sticky, like reading a closed Go channel."""

    __slots__ = ("_closed", "_discarding", "_items", "_meter", "_waiter")

    def __init__(self, meter: QueueMeter) -> None:
        self._items: deque[Chunk] = deque()
        self._waiter: asyncio.Future[object] | None = None
        self._closed = False
        self._discarding = False
        self._meter = meter

    def put(self, item: Item) -> None:
        if self._discarding:
            return
        if item is None:
            self._closed = True
        else:
            self._items.append(item)
            self._meter.queued(len(item.data))
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def get(self, max_wait: float | None = None) -> Item | _TimedOut:
        """The next chunk, `None` at EOF, or TIMED_OUT after `max_wait` seconds. Cancelling it never loses
        an item: the item is only taken once this coroutine runs again."""
        while not self._items:
            if self._closed:
                return None
            waiter = asyncio.get_running_loop().create_future()
            self._waiter = waiter
            timer = None
            if max_wait is not None:
                timer = asyncio.get_running_loop().call_later(max_wait, _finish, waiter, TIMED_OUT)
            try:
                if await waiter is TIMED_OUT:
                    return TIMED_OUT
            finally:
                self._waiter = None
                if timer is not None:
                    timer.cancel()
        item = self._items.popleft()
        self._meter.dequeued(len(item.data))
        return item

    def drain(self) -> tuple[list[Chunk], bool]:
        """Take every waiting chunk at once; also tells whether EOF was seen."""
        items = list(self._items)
        self._items.clear()
        for item in items:
            self._meter.dequeued(len(item.data))
        return items, self._closed

    def discard(self) -> None:
        """Drop what waits and everything put from now on (the stub reading it has closed)."""
        self.drain()
        self._discarding = True


def _finish(waiter: asyncio.Future[object], value: object) -> None:
    if not waiter.done():
        waiter.set_result(value)


class ToxicStub:
    """One toxic running on one connection in one direction."""

    __slots__ = ("closed", "input", "output", "reset_connection", "rng", "state")

    def __init__(
        self,
        input_channel: Channel,
        output: Outlet,
        rng: random.Random,
        state: object,
        reset_connection: Callable[[], None],
    ) -> None:
        self.input = input_channel
        self.output = output
        self.rng = rng
        self.state = state
        self.closed = False
        # Closes both sockets of the connection with a TCP RST (used by reset_peer).
        self.reset_connection = reset_connection

    async def read(self, max_wait: float | None = None) -> Item | _TimedOut:
        return await self.input.get(max_wait)

    def write(self, chunk: Chunk) -> None:
        self.output.put(chunk)

    def close(self) -> None:
        """End this direction here: EOF goes on downstream, anything arriving from upstream is dropped."""
        if self.closed:
            return
        self.closed = True
        self.output.put(None)
        self.input.discard()


@dataclass(frozen=True)
class Toxic:
    """Base of every toxic type. Dataclass fields are the JSON `attributes`, all integers as in Go."""

    TYPE: ClassVar[str]
    GO_STRUCT: ClassVar[str]  # the Go type name, for decoding errors that read like the real server's
    GO_FIELD_TYPES: ClassVar[Mapping[str, str]] = {}

    async def pipe(self, stub: ToxicStub) -> None:
        raise NotImplementedError

    def new_state(self) -> object:
        """Per-connection state kept across interruptions (e.g. bytes already let through)."""
        return None

    def cleanup(self, stub: ToxicStub) -> None:
        """Called when the toxic is removed from a live connection, after its task stopped."""

    def attributes(self) -> dict[str, int]:
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}


async def _chunks(stub: ToxicStub) -> AsyncIterator[Chunk]:
    """The chunks a toxic receives; at EOF the stub is closed (handed on downstream) and iteration ends."""
    while True:
        chunk = await stub.read()
        if chunk is None:
            stub.close()
            return
        assert isinstance(chunk, Chunk)
        yield chunk


async def _forward_until_eof(stub: ToxicStub) -> None:
    async for chunk in _chunks(stub):
        stub.write(chunk)


@dataclass(frozen=True)
class NoopToxic(Toxic):
    """Lets everything through unchanged."""

    TYPE: ClassVar[str] = "noop"
    GO_STRUCT: ClassVar[str] = "NoopToxic"

    async def pipe(self, stub: ToxicStub) -> None:
        await _forward_until_eof(stub)


@dataclass(frozen=True)
class LatencyToxic(Toxic):
    """Delays each chunk `latency` ± `jitter` ms counted from its arrival, so delays overlap (pipelined)
    rather than queue; the chunk's timestamp moves to its release time, so two latency toxics add."""

    TYPE: ClassVar[str] = "latency"
    GO_STRUCT: ClassVar[str] = "LatencyToxic"
    GO_FIELD_TYPES: ClassVar[Mapping[str, str]] = {"latency": "int64", "jitter": "int64"}
    latency: int = 0
    jitter: int = 0

    def delay_seconds(self, rng: random.Random) -> float:
        delay = self.latency
        if self.jitter > 0:
            delay += rng.randrange(self.jitter * 2) - self.jitter
        return delay / 1000

    async def pipe(self, stub: ToxicStub) -> None:
        loop = asyncio.get_running_loop()
        async for chunk in _chunks(stub):
            release_at = chunk.timestamp + self.delay_seconds(stub.rng)
            try:
                wait = release_at - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                chunk.timestamp = release_at
            finally:
                stub.write(chunk)  # also when interrupted: hand it on at once rather than drop it


@dataclass(frozen=True)
class BandwidthToxic(Toxic):
    """Limits throughput to `rate` KB/s (1 KB = 1000 bytes); chunks larger than 100 ms worth are sent in
    100 ms pieces. A rate of 0 or less stalls the stream, as it does in the real server."""

    TYPE: ClassVar[str] = "bandwidth"
    GO_STRUCT: ClassVar[str] = "BandwidthToxic"
    GO_FIELD_TYPES: ClassVar[Mapping[str, str]] = {"rate": "int64"}
    rate: int = 0

    async def pipe(self, stub: ToxicStub) -> None:
        loop = asyncio.get_running_loop()
        owed = 0.0  # transmission time owed, in seconds; oversleeping is paid back on the next chunk
        async for chunk in _chunks(stub):
            pending = chunk.data
            try:
                if self.rate <= 0:
                    await loop.create_future()  # held until the toxic is updated or removed
                bytes_per_100ms = self.rate * 100
                owed += len(pending) / (self.rate * 1000)
                while len(pending) > bytes_per_100ms:
                    await asyncio.sleep(0.1)
                    stub.write(Chunk(pending[:bytes_per_100ms], chunk.timestamp))
                    pending = pending[bytes_per_100ms:]
                    owed -= 0.1
                started = loop.time()
                await asyncio.sleep(max(owed, 0.0))
                owed -= loop.time() - started
                stub.write(Chunk(pending, chunk.timestamp))
                pending = b""
            finally:
                if pending:
                    stub.write(Chunk(pending, chunk.timestamp))


@dataclass(frozen=True)
class SlowCloseToxic(Toxic):
    """Delays closing by `delay` ms once the source has ended."""

    TYPE: ClassVar[str] = "slow_close"
    GO_STRUCT: ClassVar[str] = "SlowCloseToxic"
    GO_FIELD_TYPES: ClassVar[Mapping[str, str]] = {"delay": "int64"}
    delay: int = 0

    async def pipe(self, stub: ToxicStub) -> None:
        while True:
            chunk = await stub.read()
            if chunk is None:
                # If interrupted here the EOF stays in the (sticky) input and is handed on by the rewiring.
                await asyncio.sleep(self.delay / 1000)
                stub.close()
                return
            assert isinstance(chunk, Chunk)
            stub.write(chunk)


@dataclass(frozen=True)
class TimeoutToxic(Toxic):
    """Drops all data and closes the connection `timeout` ms after the last chunk (0: never closes).
    Removing it from a live connection closes that connection, as in the real server."""

    TYPE: ClassVar[str] = "timeout"
    GO_STRUCT: ClassVar[str] = "TimeoutToxic"
    GO_FIELD_TYPES: ClassVar[Mapping[str, str]] = {"timeout": "int64"}
    timeout: int = 0

    async def pipe(self, stub: ToxicStub) -> None:
        wait = self.timeout / 1000 if self.timeout > 0 else None
        while True:
            chunk = await stub.read(wait)
            if chunk is None or chunk is TIMED_OUT:
                stub.close()
                return
            # Any chunk is dropped on the floor; the timer starts again.

    def cleanup(self, stub: ToxicStub) -> None:
        stub.close()


@dataclass(frozen=True)
class ResetPeerToxic(Toxic):
    """On the first data (or EOF): drop it, wait `timeout` ms, then reset the connection with a TCP RST
    (SO_LINGER 0), so peers read ECONNRESET. Once triggered, the reset happens even if the toxic goes."""

    TYPE: ClassVar[str] = "reset_peer"
    GO_STRUCT: ClassVar[str] = "ResetToxic"
    GO_FIELD_TYPES: ClassVar[Mapping[str, str]] = {"timeout": "int64"}
    timeout: int = 0

    async def pipe(self, stub: ToxicStub) -> None:
        await stub.read()
        asyncio.get_running_loop().call_later(max(self.timeout, 0) / 1000, stub.reset_connection)
        await asyncio.get_running_loop().create_future()  # nothing more flows through this stub


@dataclass(frozen=True)
class SlicerToxic(Toxic):
    """Slices chunks into pieces of about `average_size` ± `size_variation` bytes, waiting `delay` µs after
    each piece, to mimic data arriving in many small reads."""

    TYPE: ClassVar[str] = "slicer"
    GO_STRUCT: ClassVar[str] = "SlicerToxic"
    GO_FIELD_TYPES: ClassVar[Mapping[str, str]] = {
        "average_size": "int",
        "size_variation": "int",
        "delay": "int",
    }
    average_size: int = 0
    size_variation: int = 0
    delay: int = 0

    def slice_bounds(self, size: int, rng: random.Random) -> list[int]:
        """Cut points from 0 to size, halving recursively like the real toxic so sizes vary evenly."""
        cuts = [0]
        pending = [(0, size)]
        while pending:
            start, end = pending.pop()
            if end - start <= 1 or (end - start) - self.average_size <= self.size_variation:
                if end > start:
                    cuts.append(end)
                continue
            variation = 0
            if self.size_variation > 0:
                variation = rng.randrange(self.size_variation * 2) - self.size_variation
            middle = min(max(start + (end - start) // 2 + variation, start + 1), end - 1)
            pending.append((middle, end))  # popped after the left half: cut points stay in order
            pending.append((start, middle))
        return cuts

    async def pipe(self, stub: ToxicStub) -> None:
        pause = max(self.delay, 0) / 1_000_000
        async for chunk in _chunks(stub):
            data = chunk.data
            cuts = self.slice_bounds(len(data), stub.rng)
            sent = 0
            try:
                for cut in cuts[1:]:
                    stub.write(Chunk(data[sent:cut], chunk.timestamp))
                    sent = cut
                    await asyncio.sleep(pause)
            finally:
                if sent < len(data):
                    stub.write(Chunk(data[sent:], chunk.timestamp))


class _LimitDataState:
    __slots__ = ("transmitted",)

    def __init__(self) -> None:
        self.transmitted = 0


@dataclass(frozen=True)
class LimitDataToxic(Toxic):
    """Lets `bytes` bytes through per connection and direction, then closes the connection."""

    TYPE: ClassVar[str] = "limit_data"
    GO_STRUCT: ClassVar[str] = "LimitDataToxic"
    GO_FIELD_TYPES: ClassVar[Mapping[str, str]] = {"bytes": "int64"}
    bytes: int = 0

    def new_state(self) -> object:
        return _LimitDataState()

    async def pipe(self, stub: ToxicStub) -> None:
        state = stub.state
        assert isinstance(state, _LimitDataState)
        async for chunk in _chunks(stub):
            remaining = max(self.bytes - state.transmitted, 0)
            if remaining < len(chunk.data):
                chunk = Chunk(chunk.data[:remaining], chunk.timestamp)
            if chunk.data:
                stub.write(chunk)
                state.transmitted += len(chunk.data)
            if self.bytes - state.transmitted <= 0:
                stub.close()
                return


TOXIC_TYPES: Final[Mapping[str, type[Toxic]]] = {
    toxic.TYPE: toxic
    for toxic in (
        BandwidthToxic,
        LatencyToxic,
        LimitDataToxic,
        NoopToxic,
        ResetPeerToxic,
        SlicerToxic,
        SlowCloseToxic,
        TimeoutToxic,
    )
}


def toxic_class(type_name: str) -> type[Toxic]:
    try:
        return TOXIC_TYPES[type_name]
    except KeyError:
        raise InvalidToxicType() from None


def build_toxic(type_name: str, attributes: object, base: Toxic | None = None) -> Toxic:
    """A toxic of that type from JSON-like attributes, starting from `base` (an update merges into it)
    or from zero values; unknown attributes are ignored, wrong types refused as Go refuses them."""
    toxic_type = toxic_class(type_name)
    values: dict[str, int] = base.attributes() if base is not None else {}
    if attributes is not None:
        if not isinstance(attributes, Mapping):
            raise BadRequestBody(
                f"json: cannot unmarshal {json_kind(attributes)} into Go struct field "
                f".attributes of type toxics.{toxic_type.GO_STRUCT}"
            )
        for field, go_type in toxic_type.GO_FIELD_TYPES.items():
            raw = attributes.get(field)
            if raw is not None:
                values[field] = read_int(raw, toxic_type.GO_STRUCT, f"attributes.{field}", go_type)
    return toxic_type(**values)


@dataclass
class ToxicSpec:
    """A toxic as the API knows it (Go's ToxicWrapper): shared by every connection of its proxy."""

    name: str
    stream: str  # as the client spelled it; `direction` is the parsed value
    direction: str
    toxicity: float
    toxic: Toxic

    @property
    def type(self) -> str:
        return self.toxic.TYPE

    def to_json(self) -> dict[str, object]:
        # Field order follows the Go struct: the embedded attributes come first.
        return {
            "attributes": self.toxic.attributes(),
            "name": self.name,
            "type": self.type,
            "stream": self.stream,
            "toxicity": Float32(self.toxicity),
        }
