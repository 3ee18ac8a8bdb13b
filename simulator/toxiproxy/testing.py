"""Small TCP peers for exercising proxies in tests: an upstream server and timing helpers."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Protocol


class ByteReader(Protocol):
    async def read(self, size: int = -1) -> bytes: ...

    async def readexactly(self, size: int) -> bytes: ...


Handler = Callable[[ByteReader, asyncio.StreamWriter], Awaitable[None]]


async def echo(reader: ByteReader, writer: asyncio.StreamWriter) -> None:
    """Send back everything received until EOF."""
    while data := await reader.read(1 << 16):
        writer.write(data)
        await writer.drain()


class Upstream:
    """An upstream TCP server on 127.0.0.1 running `handler` per connection, recording what it received
    (`received`) and how each connection ended, so tests can check both sides of a proxy."""

    def __init__(self, handler: Handler = echo) -> None:
        self._handler = handler
        self._server: asyncio.Server | None = None
        self.address = ""
        self.port = 0
        self.accepted = 0
        self.received = bytearray()
        self.closed_events: list[asyncio.Event] = []
        self._accepted_event = asyncio.Event()
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> Upstream:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self._writers.add(writer)
        ended = asyncio.Event()
        self.closed_events.append(ended)
        self._accepted_event.set()
        recording = _RecordingReader(reader, self.received)
        try:
            await self._handler(recording, writer)
        except (ConnectionError, OSError):
            pass
        finally:
            ended.set()
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    async def wait_connection_ended(self, index: int = 0, limit: float = 1.0) -> float:
        """Wait until the index-th accepted connection ended (its handler returned); returns the wait.
        Raises TimeoutError after `limit` seconds."""
        started = time.perf_counter()
        async with asyncio.timeout(limit):
            while len(self.closed_events) <= index:
                await self._accepted_event.wait()
                self._accepted_event.clear()
            await self.closed_events[index].wait()
        return time.perf_counter() - started

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.transport.abort()
            # Let the handlers see their connections end rather than be cancelled with the loop.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1):
                    for ended in self.closed_events:
                        await ended.wait()
            await self._server.wait_closed()


class _RecordingReader:
    """Wraps a StreamReader, appending everything read to a shared buffer."""

    def __init__(self, reader: asyncio.StreamReader, sink: bytearray) -> None:
        self._reader = reader
        self._sink = sink

    async def read(self, size: int = -1) -> bytes:
        data = await self._reader.read(size)
        self._sink += data
        return data

    async def readexactly(self, size: int) -> bytes:
        data = await self._reader.readexactly(size)
        self._sink += data
        return data


async def read_until_eof(reader: asyncio.StreamReader, limit: float) -> bytes:
    """Everything until EOF; raises TimeoutError if EOF does not come within `limit` seconds."""
    data = bytearray()
    async with asyncio.timeout(limit):
        while chunk := await reader.read(1 << 16):
            data += chunk
    return bytes(data)


async def round_trip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, message: bytes) -> float:
    """Seconds for `message` to come back from an echo peer."""
    started = time.perf_counter()
    writer.write(message)
    await reader.readexactly(len(message))
    return time.perf_counter() - started
