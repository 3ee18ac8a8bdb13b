"""A proxy: a listener, the connections it accepted, and the toxics applied to them."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import random
import socket
from collections.abc import Mapping

from .errors import InvalidStream, ListenError, ToxicAlreadyExists, ToxicNotFound
from .gojson import Float32
from .link import Connection, Endpoint, ToxicLink
from .toxics import DOWNSTREAM, STREAMS, UPSTREAM, ToxicSpec, build_toxic, toxic_class

log = logging.getLogger(__name__)

DEFAULT_LISTEN = "127.0.0.1:0"


class ToxicCollection:
    """A proxy's toxics, one chain per direction, and the live links they are applied to."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._chains: dict[str, list[ToxicSpec]] = {UPSTREAM: [], DOWNSTREAM: []}
        self._links: set[ToxicLink] = set()
        # Rewiring a link awaits toxics as they stop; one change at a time keeps every chain consistent.
        self._lock = asyncio.Lock()

    def all(self) -> list[ToxicSpec]:
        """Upstream toxics first, then downstream, each in the order they were added (as Go lists them)."""
        return [*self._chains[UPSTREAM], *self._chains[DOWNSTREAM]]

    def chain(self, direction: str) -> list[ToxicSpec]:
        return list(self._chains[direction])

    def get(self, name: str) -> ToxicSpec:
        for spec in self.all():
            if spec.name == name:
                return spec
        raise ToxicNotFound()

    def register(self, link: ToxicLink) -> None:
        self._links.add(link)

    def unregister(self, link: ToxicLink) -> None:
        self._links.discard(link)

    def _links_for(self, direction: str) -> list[ToxicLink]:
        return [link for link in self._links if link.direction == direction and not link.finished]

    async def add(
        self,
        type_name: str,
        *,
        name: str | None = None,
        stream: str = DOWNSTREAM,
        toxicity: float = 1.0,
        attributes: Mapping[str, object] | None = None,
    ) -> ToxicSpec:
        """Add a toxic, applied at once to live connections. Checks run in the real server's order."""
        async with self._lock:
            direction = stream.lower()
            if direction not in STREAMS:
                raise InvalidStream()
            name = name or f"{type_name}_{stream}"
            toxic_class(type_name)
            if any(spec.name == name for spec in self.all()):
                raise ToxicAlreadyExists()
            spec = ToxicSpec(name, stream, direction, Float32(toxicity), build_toxic(type_name, attributes))
            self._chains[direction].append(spec)
            for link in self._links_for(direction):
                link.add_toxic(spec)
            return spec

    async def update(
        self, name: str, *, attributes: Mapping[str, object] | None = None, toxicity: float | None = None
    ) -> ToxicSpec:
        """Merge new attributes (and toxicity) into a toxic; live connections pick them up at once."""
        async with self._lock:
            spec = self.get(name)
            spec.toxic = build_toxic(spec.type, attributes, base=spec.toxic)
            if toxicity is not None:
                spec.toxicity = Float32(toxicity)
            await asyncio.gather(*(link.update_toxic(spec) for link in self._links_for(spec.direction)))
            return spec

    async def remove(self, name: str) -> None:
        async with self._lock:
            await self._remove(self.get(name))

    async def reset(self) -> None:
        async with self._lock:
            for spec in self.all():
                await self._remove(spec)

    async def _remove(self, spec: ToxicSpec) -> None:
        self._chains[spec.direction].remove(spec)
        links = [link for link in self._links if link.direction == spec.direction]
        await asyncio.gather(*(link.remove_toxic(spec) for link in links))


def split_host_port(address: str, *, listening: bool) -> tuple[str, int]:
    """Parse `host:port` (IPv6 in brackets) as Go's net package does, with its error texts."""
    action = "listen" if listening else "dial"
    host, colon, port_text = address.rpartition(":")
    if not colon:
        raise ListenError(f"{action} tcp: address {address}: missing port in address")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not port_text.isdigit() or int(port_text) > 65535:
        raise ListenError(f"{action} tcp: address {port_text}: invalid port")
    # An empty host would bind every interface; this simulator stays on loopback.
    return host or "127.0.0.1", int(port_text)


def format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def resolve_listen(listen: str) -> tuple[str, int]:
    """The address a listen string binds: one IP (IPv4 preferred, like Go) and the port."""
    host, port = split_host_port(listen or DEFAULT_LISTEN, listening=True)
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror:
        raise ListenError(f"listen tcp: lookup {host}: no such host") from None
    infos.sort(key=lambda info: info[0] != socket.AF_INET)
    return str(infos[0][4][0]), port


class Proxy:
    """Listens on `listen`, dials `upstream` for each client and runs the toxics between them."""

    def __init__(self, name: str, listen: str, upstream: str, rng: random.Random) -> None:
        self.name = name
        self.listen = listen or DEFAULT_LISTEN
        self.upstream = upstream
        self.enabled = False
        self.toxics = ToxicCollection(rng)
        self._rng = rng
        self._server: asyncio.Server | None = None
        self._connections: set[Connection] = set()
        self._dials: set[asyncio.Task[None]] = set()
        self._lock = asyncio.Lock()

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "listen": self.listen,
            "upstream": self.upstream,
            "enabled": self.enabled,
            "toxics": [spec.to_json() for spec in self.toxics.all()],
        }

    @property
    def port(self) -> int:
        return split_host_port(self.listen, listening=True)[1]

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    async def start(self) -> bool:
        """Start listening; False if it already was. The bound address (real port) becomes `listen`,
        so a proxy created on port 0 keeps its port across disable/enable."""
        async with self._lock:
            return await self._start()

    async def stop(self) -> None:
        """Stop listening and close every live connection."""
        async with self._lock:
            await self._stop()

    async def update(
        self, *, listen: str | None = None, upstream: str | None = None, enabled: bool | None = None
    ) -> None:
        """Apply a partial update: a new address restarts the listener; `enabled` starts or stops it."""
        async with self._lock:
            listen = self.listen if listen is None else listen
            upstream = self.upstream if upstream is None else upstream
            enabled = self.enabled if enabled is None else enabled
            if listen != self.listen or upstream != self.upstream:
                await self._stop()
                self.listen, self.upstream = listen, upstream
            if enabled and not self.enabled:
                await self._start()
            elif not enabled and self.enabled:
                await self._stop()

    async def _start(self) -> bool:
        if self.enabled:
            return False
        host, port = await resolve_listen(self.listen)
        loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_server(self._new_client_endpoint, host, port, reuse_address=True)
        except OSError as exc:
            reason = errno.errorcode.get(exc.errno or 0, "")
            text = os.strerror(exc.errno).lower() if exc.errno else str(exc)
            if reason in ("EADDRINUSE", "EADDRNOTAVAIL", "EACCES"):
                text = f"bind: {text}"
            raise ListenError(f"listen tcp {format_address(host, port)}: {text}") from None
        bound = self._server.sockets[0].getsockname()
        self.listen = format_address(bound[0], bound[1])
        self.enabled = True
        log.info("proxy %s listening on %s for %s", self.name, self.listen, self.upstream)
        return True

    async def _stop(self) -> None:
        if not self.enabled:
            return
        self.enabled = False
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for dial in list(self._dials):
            dial.cancel()
        for connection in list(self._connections):
            connection.close()
        if server is not None:
            # Only after closing the connections: from Python 3.12 this waits for them.
            await server.wait_closed()
        log.info("proxy %s stopped", self.name)

    # connections
    def _new_client_endpoint(self) -> Endpoint:
        client = Endpoint()
        client.on_accepted = self._client_accepted
        return client

    def _client_accepted(self, client: Endpoint) -> None:
        connection = Connection(client, self._connection_closed)
        self._connections.add(connection)
        dial = asyncio.get_running_loop().create_task(self._dial(connection, self.upstream))
        self._dials.add(dial)
        dial.add_done_callback(self._dials.discard)

    def _connection_closed(self, connection: Connection) -> None:
        self._connections.discard(connection)
        for link in connection.links or ():
            self.toxics.unregister(link)

    async def _dial(self, connection: Connection, upstream_address: str) -> None:
        """Dial the upstream for an accepted client; if that fails the client is simply closed (EOF)."""
        loop = asyncio.get_running_loop()
        upstream = Endpoint(connection)
        try:
            host, port = split_host_port(upstream_address, listening=False)
            await loop.create_connection(lambda: upstream, host, port)
        except asyncio.CancelledError:
            connection.client.close()
            raise
        except (OSError, ListenError) as exc:
            log.info(
                "proxy %s: unable to open connection to upstream %s: %s", self.name, upstream_address, exc
            )
            connection.client.close()
            return
        if connection.closed or connection.client.lost or upstream.lost or not self.enabled:
            upstream.close()
            connection.client.close()
            return
        links = connection.attach(
            upstream, self.toxics.chain(UPSTREAM), self.toxics.chain(DOWNSTREAM), self._rng
        )
        for link in links:
            self.toxics.register(link)
