"""One proxied TCP connection: two sockets and two toxic links (upstream: client→server,
downstream: server→client), rewired live as toxics come and go.

A link is `source socket → head → stub → stub → ... → sink → destination socket`. With no toxic the head
is the sink and bytes go straight from one socket's read callback to the other's write (the fast path).
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import struct
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

from .toxics import Channel, Chunk, Item, NoopToxic, Outlet, ToxicSpec, ToxicStub

log = logging.getLogger(__name__)

# Bytes waiting inside a link's channels before reading its source pauses (TCP backpressure takes over).
HIGH_WATER = 1 << 20
LOW_WATER = 256 << 10

_NOOP = NoopToxic()


class Endpoint(asyncio.Protocol):
    """One socket of a proxied connection; hands what it reads to the link it feeds."""

    # Set by a proxy's listener for accepted clients, which have no connection yet.
    on_accepted: Callable[[Endpoint], None]

    def __init__(self, connection: Connection | None = None) -> None:
        self.connection = connection
        self.transport: asyncio.Transport | None = None
        self.reader: ToxicLink | None = None  # the link reading from this socket
        self.writer: ToxicLink | None = None  # the link writing into this socket
        self.lost = False
        self.eof = False

    # asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        # Nothing is read until both links exist (Connection.attach resumes reading).
        transport.pause_reading()
        if self.connection is None:
            self.on_accepted(self)

    def data_received(self, data: bytes) -> None:
        if self.reader is not None:
            self.reader.feed(data)

    def eof_received(self) -> bool:
        self.eof = True
        if self.reader is not None:
            self.reader.feed_eof()
        return True  # keep the socket open: the other direction may still deliver into it

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.connection is not None:
            self.connection.endpoint_lost(self)

    def pause_writing(self) -> None:
        if self.writer is not None:
            self.writer.set_dest_paused(True)

    def resume_writing(self) -> None:
        if self.writer is not None:
            self.writer.set_dest_paused(False)

    # used by links and connections
    def write(self, data: bytes) -> None:
        if not self.lost and self.transport is not None:
            self.transport.write(data)

    def pause_reading(self) -> None:
        if not self.lost and self.transport is not None and self.transport.is_reading():
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if not self.lost and not self.eof and self.transport is not None and not self.transport.is_reading():
            self.transport.resume_reading()

    def close(self) -> None:
        """Close after what is already written; abort at once if the peer is not reading it."""
        if self.lost or self.transport is None or self.transport.is_closing():
            return
        if self.transport.get_write_buffer_size():
            self.transport.abort()
        else:
            self.transport.close()

    def close_when_flushed(self) -> None:
        if not self.lost and self.transport is not None:
            self.transport.close()

    def reset(self) -> None:
        """Close with a TCP RST: SO_LINGER 0 makes close() discard unsent data and reset."""
        if self.lost or self.transport is None:
            return
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
        self.transport.abort()


class _Sink:
    """The end of a link: writes into the destination socket; EOF there finishes the link."""

    __slots__ = ("_link",)

    def __init__(self, link: ToxicLink) -> None:
        self._link = link

    def put(self, item: Item) -> None:
        link = self._link
        if link.finished:
            return
        if item is None:
            link.finish()
        else:
            link.dest.write(item.data)


class _Stage:
    """A toxic of the chain on this link: its stub and the task running it."""

    __slots__ = ("spec", "stub", "task")

    def __init__(self, spec: ToxicSpec, stub: ToxicStub) -> None:
        self.spec = spec
        self.stub = stub
        self.task: asyncio.Task[None] | None = None


class ToxicLink:
    """One direction of one connection, running the proxy's toxics for that direction."""

    def __init__(
        self,
        direction: str,
        source: Endpoint,
        dest: Endpoint,
        specs: Iterable[ToxicSpec],
        rng: random.Random,
        reset_connection: Callable[[], None],
    ) -> None:
        self.direction = direction
        self.source = source
        self.dest = dest
        self.finished = False
        self._rng = rng
        self._reset_connection = reset_connection
        self._loop = asyncio.get_running_loop()
        self._sink = _Sink(self)
        self._head: Outlet = self._sink
        self._stages: list[_Stage] = []
        self._eof_fed = False
        self._queued = 0
        self._dest_paused = False
        self._source_paused = False
        for spec in specs:
            self.add_toxic(spec)

    # data path
    def feed(self, data: bytes) -> None:
        if self._head is self._sink:
            if not self.finished:
                self.dest.write(data)  # fast path: no toxic on this link
        else:
            self._head.put(Chunk(data, self._loop.time()))

    def feed_eof(self) -> None:
        if not self._eof_fed:
            self._eof_fed = True
            self._head.put(None)

    def finish(self) -> None:
        """EOF reached the end of the chain: close the destination once what it was sent is flushed."""
        if not self.finished:
            self.finished = True
            self.dest.close_when_flushed()

    def abort(self) -> None:
        """Stop at once (the destination is gone or the proxy is shutting the connection)."""
        self.finished = True
        for stage in self._stages:
            if stage.task is not None:
                stage.task.cancel()

    # flow control (QueueMeter for the channels, plus the destination's own write buffer)
    def queued(self, size: int) -> None:
        self._queued += size
        if not self._source_paused and self._queued > HIGH_WATER:
            self._update_source()

    def dequeued(self, size: int) -> None:
        self._queued -= size
        if self._source_paused and self._queued <= LOW_WATER:
            self._update_source()

    def set_dest_paused(self, paused: bool) -> None:
        self._dest_paused = paused
        self._update_source()

    def _update_source(self) -> None:
        if self._source_paused:
            if not self._dest_paused and self._queued <= LOW_WATER:
                self._source_paused = False
                self.source.resume_reading()
        elif self._dest_paused or self._queued > HIGH_WATER:
            self._source_paused = True
            self.source.pause_reading()

    # rewiring
    def _start(self, stage: _Stage) -> None:
        # Toxicity is drawn per connection, direction and toxic (again when the toxic is updated).
        toxic = stage.spec.toxic if self._rng.random() < stage.spec.toxicity else _NOOP
        stage.task = self._loop.create_task(self._run(toxic.pipe(stage.stub), stage.spec.name))

    async def _run(self, pipe: Coroutine[Any, Any, None], name: str) -> None:
        try:
            await pipe
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("toxic %s failed on a %s link", name, self.direction)

    def add_toxic(self, spec: ToxicSpec) -> None:
        """Append a toxic at the end of the chain; data already past the chain's end stays ahead of it."""
        if self.finished or (self._stages and self._stages[-1].stub.closed):
            return
        channel = Channel(self)
        stage = _Stage(
            spec, ToxicStub(channel, self._sink, self._rng, spec.toxic.new_state(), self._reset_connection)
        )
        if self._stages:
            self._stages[-1].stub.output = channel
        else:
            self._head = channel
        self._stages.append(stage)
        self._start(stage)

    async def _interrupt(self, stage: _Stage) -> None:
        task = stage.task
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait([task])

    def _find(self, spec: ToxicSpec) -> _Stage | None:
        for stage in self._stages:
            if stage.spec is spec:
                return stage
        return None

    async def update_toxic(self, spec: ToxicSpec) -> None:
        stage = self._find(spec)
        if stage is None or stage.stub.closed or self.finished:
            return
        await self._interrupt(stage)  # a held chunk is handed on by the toxic as it stops
        if not stage.stub.closed and not self.finished:
            self._start(stage)

    async def remove_toxic(self, spec: ToxicSpec) -> None:
        """Take a toxic out of the chain without losing what it holds or what waits for it."""
        stage = self._find(spec)
        if stage is None:
            return
        if not stage.stub.closed and not self.finished:
            await self._interrupt(stage)
            spec.toxic.cleanup(stage.stub)  # the timeout toxic closes the connection here
        if stage.stub.closed or self.finished:
            # Its predecessor keeps feeding its input, which now discards: this direction has ended.
            self._stages.remove(stage)
            return
        waiting, ended = stage.stub.input.drain()
        output = stage.stub.output
        for chunk in waiting:
            output.put(chunk)
        if ended:
            output.put(None)
        index = self._stages.index(stage)
        if index == 0:
            self._head = output
        else:
            self._stages[index - 1].stub.output = output
        del self._stages[index]


class Connection:
    """A client accepted by a proxy, the upstream socket dialled for it, and the two links between them."""

    def __init__(self, client: Endpoint, on_closed: Callable[[Connection], None]) -> None:
        self.client = client
        client.connection = self
        self.upstream: Endpoint | None = None
        self.links: tuple[ToxicLink, ToxicLink] | None = None
        self.closed = False
        self._on_closed = on_closed

    def attach(
        self,
        upstream: Endpoint,
        upstream_toxics: Iterable[ToxicSpec],
        downstream_toxics: Iterable[ToxicSpec],
        rng: random.Random,
    ) -> tuple[ToxicLink, ToxicLink]:
        """Start both links once the upstream socket is connected, then let the client's data flow."""
        self.upstream = upstream
        outbound = ToxicLink("upstream", self.client, upstream, upstream_toxics, rng, self.reset)
        inbound = ToxicLink("downstream", upstream, self.client, downstream_toxics, rng, self.reset)
        self.client.reader = upstream.writer = outbound
        upstream.reader = self.client.writer = inbound
        self.links = (outbound, inbound)
        self.client.resume_reading()
        upstream.resume_reading()
        return self.links

    def endpoint_lost(self, endpoint: Endpoint) -> None:
        if endpoint.reader is not None:
            endpoint.reader.feed_eof()  # its source is gone: let what the toxics hold drain, then close
        if endpoint.writer is not None:
            endpoint.writer.abort()  # nothing can be delivered any more
        if self.client.lost and (self.upstream is None or self.upstream.lost):
            self._finish()

    def _finish(self) -> None:
        if not self.closed:
            self.closed = True
            for link in self.links or ():
                link.abort()
            self._on_closed(self)

    def reset(self) -> None:
        """Reset both sockets with TCP RST (the reset_peer toxic)."""
        for endpoint in (self.client, self.upstream):
            if endpoint is not None:
                endpoint.reset()

    def close(self) -> None:
        """Close both sockets now (the proxy was disabled or deleted)."""
        for link in self.links or ():
            link.abort()
        for endpoint in (self.client, self.upstream):
            if endpoint is not None:
                endpoint.close()
