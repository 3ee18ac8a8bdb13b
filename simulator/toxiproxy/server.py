"""The embedded Toxiproxy server: the proxy collection, its direct Python API and the HTTP API's lifecycle."""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Self, TypeVar

from aiohttp import web

from .errors import ApiError, MissingField, ProxyAlreadyExists, ProxyNotFound
from .proxy import DEFAULT_LISTEN, Proxy, format_address, resolve_listen
from .toxics import DOWNSTREAM, ToxicSpec

# The real server version whose behaviour this one follows; /version reports it.
VERSION = "2.12.0"

T = TypeVar("T")


class PopulateFailed(ApiError):
    """/populate stopped at an error; `populated` holds the proxies it had applied before it."""

    def __init__(self, cause: ApiError, populated: list[Proxy]) -> None:
        super().__init__(cause.message, cause.status)
        self.populated = populated


class ToxiproxyServer:
    """A Toxiproxy-compatible server living in the running event loop.

    Use the HTTP API (`await start(host, port)`, then any Toxiproxy client on `url`) or the direct methods
    below, which behave exactly like the corresponding HTTP calls and raise `ApiError` subclasses.
    Pass `seed` or `rng` to make toxicity draws, jitter and slicing reproducible.
    """

    def __init__(self, *, seed: int | None = None, rng: random.Random | None = None) -> None:
        self.rng = rng if rng is not None else random.Random(seed)
        self.version = VERSION
        self._proxies: dict[str, Proxy] = {}
        self._lock = asyncio.Lock()
        self._runner: web.AppRunner | None = None
        self.url: str | None = None

    # lifecycle
    async def start(self, host: str = "127.0.0.1", port: int = 8474) -> str:
        """Serve the HTTP API on host:port (0 picks a free port); returns its URL."""
        from .api import build_app  # the HTTP layer is only needed when serving it

        if self._runner is not None:
            raise RuntimeError("the Toxiproxy HTTP API is already running")
        runner = web.AppRunner(build_app(self), access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port, reuse_address=True).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        bound_host, bound_port = runner.addresses[0][:2]
        self.url = f"http://{format_address(bound_host, bound_port)}"
        return self.url

    async def stop(self) -> None:
        """Stop the HTTP API (if started) and every proxy, closing their connections."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        self.url = None
        async with self._lock:
            for proxy in self._proxies.values():
                await proxy.stop()
            self._proxies.clear()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # proxies
    def proxies(self) -> dict[str, Proxy]:
        return dict(sorted(self._proxies.items()))

    def get_proxy(self, name: str) -> Proxy:
        try:
            return self._proxies[name]
        except KeyError:
            raise ProxyNotFound() from None

    async def create_proxy(
        self, name: str, upstream: str, *, listen: str = DEFAULT_LISTEN, enabled: bool = True
    ) -> Proxy:
        """Create a proxy (listening at once unless enabled=False); `listen` "127.0.0.1:0" picks a port."""
        if not name:
            raise MissingField("name")
        if not upstream:
            raise MissingField("upstream")
        async with self._lock:
            if name in self._proxies:
                raise ProxyAlreadyExists()
            proxy = Proxy(name, listen, upstream, self.rng)
            if enabled:
                await proxy.start()
            self._proxies[name] = proxy
            return proxy

    async def update_proxy(
        self,
        name: str,
        *,
        listen: str | None = None,
        upstream: str | None = None,
        enabled: bool | None = None,
    ) -> Proxy:
        """Change listen/upstream (restarting the listener) and/or enable or disable the proxy.
        Disabling stops listening and closes every live connection."""
        proxy = self.get_proxy(name)
        await proxy.update(listen=listen, upstream=upstream, enabled=enabled)
        return proxy

    async def delete_proxy(self, name: str) -> None:
        """Stop the proxy, closing its connections, and forget it."""
        async with self._lock:
            proxy = self.get_proxy(name)
            await proxy.stop()
            del self._proxies[name]

    async def populate(self, configs: Iterable[Mapping[str, Any]]) -> list[Proxy]:
        """Create proxies from `{name, upstream, listen?, enabled?}` mappings. An existing proxy of the same
        name is kept as it is unless its listen or upstream differ, in which case it is replaced.
        Raises `PopulateFailed` (with the proxies applied so far) if one cannot be started."""
        configs = list(configs)
        for index, config in enumerate(configs, start=1):
            if not config.get("name"):
                raise MissingField(f"name at proxy {index}")
            if not config.get("upstream"):
                raise MissingField(f"upstream at proxy {index}")
        populated: list[Proxy] = []
        async with self._lock:
            for config in configs:
                try:
                    populated.append(await self._add_or_replace(config))
                except ApiError as exc:
                    raise PopulateFailed(exc, populated) from None
        return populated

    async def _add_or_replace(self, config: Mapping[str, Any]) -> Proxy:
        name, upstream = config["name"], config["upstream"]
        listen = config.get("listen") or DEFAULT_LISTEN
        existing = self._proxies.get(name)
        if existing is not None:
            host, port = await resolve_listen(listen)
            if existing.listen == format_address(host, port) and existing.upstream == upstream:
                return existing
            await existing.stop()
            del self._proxies[name]
        proxy = Proxy(name, listen, upstream, self.rng)
        if config.get("enabled", True) is not False:
            await proxy.start()
        self._proxies[name] = proxy
        return proxy

    async def reset(self) -> None:
        """Enable every proxy again and remove every toxic (removing flushes what toxics hold)."""
        async with self._lock:
            for proxy in self.proxies().values():
                await proxy.start()
                await proxy.toxics.reset()

    # toxics
    def toxics(self, proxy: str) -> list[ToxicSpec]:
        return self.get_proxy(proxy).toxics.all()

    def get_toxic(self, proxy: str, toxic: str) -> ToxicSpec:
        return self.get_proxy(proxy).toxics.get(toxic)

    async def add_toxic(
        self,
        proxy: str,
        type: str,
        *,
        name: str | None = None,
        stream: str = DOWNSTREAM,
        toxicity: float = 1.0,
        attributes: Mapping[str, object] | None = None,
    ) -> ToxicSpec:
        """Add a toxic (default name `{type}_{stream}`); it applies to live connections at once."""
        return await self.get_proxy(proxy).toxics.add(
            type, name=name, stream=stream, toxicity=toxicity, attributes=attributes
        )

    async def update_toxic(
        self,
        proxy: str,
        toxic: str,
        *,
        attributes: Mapping[str, object] | None = None,
        toxicity: float | None = None,
    ) -> ToxicSpec:
        """Merge attributes into a toxic (others keep their values) and optionally change its toxicity."""
        return await self.get_proxy(proxy).toxics.update(toxic, attributes=attributes, toxicity=toxicity)

    async def remove_toxic(self, proxy: str, toxic: str) -> None:
        """Remove a toxic; data it held is flushed (a timeout toxic's removal closes its connections)."""
        await self.get_proxy(proxy).toxics.remove(toxic)


async def _shut_down(server: ToxiproxyServer) -> None:
    """Stop the server, then let every task still on this loop (toxics of closed links) finish."""
    await server.stop()
    others = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
    for task in others:
        task.cancel()
    await asyncio.gather(*others, return_exceptions=True)


class ThreadedToxiproxyServer:
    """A ToxiproxyServer on its own event loop in a background thread, for synchronous code and tools
    (e.g. `toxiproxy-python`, whose blocking calls would stall a server sharing their loop)."""

    def __init__(self, *, seed: int | None = None, rng: random.Random | None = None) -> None:
        self._seed = seed
        self._rng = rng
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: ToxiproxyServer | None = None
        self.url: str | None = None

    @property
    def server(self) -> ToxiproxyServer:
        if self._server is None:
            raise RuntimeError("not started")
        return self._server

    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name="toxiproxy", daemon=True)
        self._thread.start()

        async def start_server() -> ToxiproxyServer:
            server = ToxiproxyServer(seed=self._seed, rng=self._rng)
            await server.start(host, port)
            return server

        self._server = asyncio.run_coroutine_threadsafe(start_server(), loop).result()
        self.url = self._server.url
        assert self.url is not None
        return self.url

    def call(self, function: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        """Run `await function(*args, **kwargs)` on the server's loop, e.g. `call(server.add_toxic, ...)`."""
        if self._loop is None:
            raise RuntimeError("not started")

        async def invoke() -> T:
            return await function(*args, **kwargs)

        return asyncio.run_coroutine_threadsafe(invoke(), self._loop).result()

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if self._server is not None:
            asyncio.run_coroutine_threadsafe(_shut_down(self._server), loop).result()
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()
        self._loop = self._thread = self._server = None
        self.url = None

    def __enter__(self) -> Self:
        if self._loop is None:
            self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
