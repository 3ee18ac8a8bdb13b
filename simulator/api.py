"""The public Python API: a simulator inside a user's own test, on a real loopback port.

    async with rtsim.Simulator(profile="openai", max_session=5) as sim:
        ...  # point the app under test at sim.base_url (or run it with sim.env)
        await sim.inject("drop")
        close = await sim.wait_for(kind="close")

`SyncSimulator` is the same for suites that are not async: the server runs on its own event loop in a
thread and every method blocks until the loop has done the work.

Everything here is built on the server's own pieces: `RealtimeServer` and `ServerConfig`, its `History`
(queried through `HistoryQuery`) and the control plane's `inject` (faults injected here are recorded with
`route: "python-api"`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import secrets
import ssl
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, TypeVar

from .control.routes import describe as describe_session
from .history import History
from .server import RealtimeServer, ServerConfig
from .tokens import key_id as key_id_of

if TYPE_CHECKING:
    from .control import ControlPlane

__all__ = ["HistoryQuery", "Simulator", "SyncSimulator", "at_event", "fault_when"]

ROUTE = "python-api"
DEFAULT_TIMEOUT = 5.0
Record = dict[str, Any]
RecordMatch = str | Callable[[Record], bool] | None
T = TypeVar("T")

_CONFIG_FIELDS = frozenset(f.name for f in dataclasses.fields(ServerConfig))


def fault_when(when: Any) -> dict[str, Any] | None:
    """The control plane's `when` from the shorthands the API takes.

    None: now. A number: that many milliseconds from now. `("type", nth)`: right after the nth server event
    of that type sent from now on. A dict (`{"after_ms": N}`, `{"at_event": {"type": T, "nth": N}}`) as is.
    """
    if when is None or isinstance(when, dict):
        return when
    if isinstance(when, bool):
        raise TypeError("when must be None, milliseconds, (event_type, nth) or a dict, not a bool")
    if isinstance(when, int | float):
        return {"after_ms": when}
    if isinstance(when, tuple | list) and len(when) == 2 and isinstance(when[0], str):
        return at_event(when[0], when[1])
    raise TypeError(f"when must be None, milliseconds, (event_type, nth) or a dict, not {when!r}")


def at_event(event_type: str, nth: int = 1) -> dict[str, Any]:
    """`when` for "right after the nth server event of this type, counted from now"."""
    return {"at_event": {"type": event_type, "nth": nth}}


def fault_target(session: str | None, key: str | None, key_id: str | None) -> dict[str, Any]:
    """The control plane's `target`: one session, every session of a key or key id, or (naming none) all."""
    candidates = {"session": session, "key": key, "key_id": key_id}
    named = {name: value for name, value in candidates.items() if value is not None}
    if len(named) > 1:
        raise ValueError(f"name at most one target (session, key or key_id), not {sorted(named)}")
    return named


def record_matcher(
    match: RecordMatch = None,
    *,
    kind: str | None = None,
    session: str | None = None,
    key_id: str | None = None,
    direction: str | None = None,
    sessions_of_key: Callable[[str], set[str]] | None = None,
) -> Callable[[Record], bool]:
    """One predicate from the ways a record is picked: an event type (or a predicate), and filters.

    A string `match` is an event type (`"response.done"`), so it implies `kind="event"`; `direction` is
    `"in"` (from the client) or `"out"` (to it). `key_id` matches records of that key and of its sessions.
    """
    event_type = match if isinstance(match, str) else None
    predicate = None if isinstance(match, str) else match
    kind = implied_kind(match, kind, direction)
    # The key's sessions: those begun so far, and each later `session` record of the key as it is seen.
    key_sessions = sessions_of_key(key_id) if key_id is not None and sessions_of_key is not None else set()

    def matches(record: Record) -> bool:
        if key_id is not None and record.get("kind") == "session" and record.get("key_id") == key_id:
            key_sessions.add(record["session"])
        if kind is not None and record.get("kind") != kind:
            return False
        if session is not None and record.get("session") != session:
            return False
        if key_id is not None and key_id != record.get("key_id"):
            if record.get("session") not in key_sessions:
                return False
        if direction is not None and record.get("dir") != direction:
            return False
        if event_type is not None and (record.get("event") or {}).get("type") != event_type:
            return False
        return predicate is None or bool(predicate(record))

    return matches


def implied_kind(match: RecordMatch, kind: str | None, direction: str | None) -> str | None:
    """An event type or a direction only makes sense of `event` records."""
    if kind is None and (isinstance(match, str) or direction is not None):
        return "event"
    return kind


class HistoryQuery:
    """Queries over a server's record (see simulator/history.py for the record kinds and their fields).

    Every query returns the records themselves (plain dicts, oldest first); `since` is a record `seq`.
    """

    def __init__(self, history: History) -> None:
        self.source = history

    @property
    def records(self) -> list[Record]:
        return self.source.records

    def __iter__(self) -> Iterator[Record]:
        return iter(list(self.source.records))

    def __len__(self) -> int:
        return len(self.source.records)

    def select(
        self,
        match: RecordMatch = None,
        *,
        kind: str | None = None,
        session: str | None = None,
        key_id: str | None = None,
        direction: str | None = None,
        since: int = 0,
    ) -> list[Record]:
        """Records by event type or predicate, record kind, session, key id and direction."""
        matches = record_matcher(
            match,
            kind=kind,
            session=session,
            key_id=key_id,
            direction=direction,
            sessions_of_key=self.source.sessions_of,
        )
        candidates = self.source.select(kind=implied_kind(match, kind, direction), since_seq=since)
        return [r for r in candidates if matches(r)]

    def first(self, match: RecordMatch = None, **filters: Any) -> Record | None:
        found = self.select(match, **filters)
        return found[0] if found else None

    def last(self, match: RecordMatch = None, **filters: Any) -> Record | None:
        found = self.select(match, **filters)
        return found[-1] if found else None

    def events(
        self,
        event_type: str | None = None,
        *,
        direction: str | None = None,
        session: str | None = None,
        key_id: str | None = None,
        since: int = 0,
    ) -> list[Record]:
        """`event` records, of one event type or all; `direction`: "in" (client → server) or "out"."""
        return self.select(
            event_type, kind="event", direction=direction, session=session, key_id=key_id, since=since
        )

    def sessions(self, *, key_id: str | None = None, since: int = 0) -> list[Record]:
        """`session` records: every session that began (live or not)."""
        return self.select(kind="session", key_id=key_id, since=since)

    def handshakes(
        self, *, accepted: bool | None = None, key_id: str | None = None, since: int = 0
    ) -> list[Record]:
        found = self.select(kind="handshake", key_id=key_id, since=since)
        return [r for r in found if accepted is None or bool(r.get("accepted")) == accepted]

    def closes(
        self,
        *,
        session: str | None = None,
        key_id: str | None = None,
        code: int | None = None,
        by: str | None = None,
        since: int = 0,
    ) -> list[Record]:
        """`close` records: `code` (None when no close frame was exchanged) and who closed (`by`)."""
        found = self.select(kind="close", session=session, key_id=key_id, since=since)
        return [r for r in found if (code is None or r.get("code") == code) and by in (None, r.get("by"))]

    def faults(
        self,
        fault: str | None = None,
        *,
        session: str | None = None,
        key_id: str | None = None,
        route: str | None = None,
        since: int = 0,
    ) -> list[Record]:
        """`fault` records (one per session hit, or one for a server fault), of one fault kind or all."""
        found = self.select(kind="fault", session=session, key_id=key_id, since=since)
        return [r for r in found if fault in (None, r.get("fault")) and route in (None, r.get("route"))]

    def summary(self) -> dict[str, Any]:
        """Per client identity: its connections, how each ended, the gaps between them."""
        return self.source.summary()

    def to_jsonl(self, records: list[Record] | None = None) -> str:
        return self.source.to_jsonl(records)


class Simulator:
    """An in-process simulator on a loopback port for the length of an `async with` block.

    Keyword arguments are `ServerConfig` fields (`profile`, `max_session`, `seed`, `pacing`, `chaos`, `tls`,
    …); `api_key` is the key `env` hands to a client (by default one unique to this simulator). With
    `tls=True` it serves HTTPS/WSS from a local CA: `ssl_context` trusts it, and `env` names it for clients.
    """

    def __init__(
        self, *, api_key: str | None = None, config: ServerConfig | None = None, **options: Any
    ) -> None:
        unknown = sorted(set(options) - _CONFIG_FIELDS)
        if unknown:
            raise TypeError(
                f"unknown Simulator option(s) {', '.join(unknown)}; "
                f"ServerConfig fields are: {', '.join(sorted(_CONFIG_FIELDS))}"
            )
        base = config if config is not None else ServerConfig()
        self.config = dataclasses.replace(base, **options)
        if api_key is None:
            api_key = self.config.api_keys[0] if self.config.api_keys else f"sk-rtsim-{secrets.token_hex(12)}"
        self.api_key = api_key
        self.key_id = key_id_of(api_key)
        self.server = RealtimeServer(self.config)
        self.history = HistoryQuery(self.server.history)
        self.base_url = ""
        self._running = False
        self._stopped = False

    # ---- lifecycle ----------------------------------------------------------------------------------

    async def start(self) -> Simulator:
        if self._stopped:
            # A stopped server has closed its record: a new run needs a new Simulator.
            raise RuntimeError("this Simulator has stopped; start a new one")
        if not self._running:
            self.base_url = await self.server.start()
            self._running = True
        return self

    async def stop(self) -> None:
        """Close every live session with 1001 (going away) and stop serving; the history stays readable."""
        if self._running:
            self._running = False
            self._stopped = True
            await self.server.stop()

    async def __aenter__(self) -> Simulator:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def running(self) -> bool:
        return self._running

    # ---- what a client needs ------------------------------------------------------------------------

    @property
    def control_url(self) -> str:
        """The control API's root (`/_rtsim` lives under it): the base URL without `/v1`."""
        return self.base_url.removesuffix("/v1")

    @property
    def env(self) -> dict[str, str]:
        """The environment for a client run as a subprocess: this process's own, plus where and how to
        connect (`OPENAI_BASE_URL`, `OPENAI_API_KEY`; for the Azure profile the `AZURE_OPENAI_*` pair too)."""
        self._require_running("env")
        env = {
            **os.environ,
            "OPENAI_BASE_URL": self.base_url,
            "OPENAI_API_KEY": self.api_key,
            "RTSIM_SEED": str(self.config.seed),
        }
        if self.config.profile == "azure":
            env["AZURE_OPENAI_ENDPOINT"] = self.control_url
            env["AZURE_OPENAI_API_KEY"] = self.api_key
        if self.server.tls is not None:  # tls=True: SSL_CERT_FILE and NODE_EXTRA_CA_CERTS name the CA
            env.update(self.server.tls.client_env())
        return env

    @property
    def ssl_context(self) -> ssl.SSLContext | None:
        """With `tls=True`: a verifying client context that trusts this simulator (for `websockets.connect(
        ssl=...)`, `httpx.AsyncClient(verify=...)`, `aiohttp.TCPConnector(ssl=...)`); None over plain HTTP."""
        self._require_running("ssl_context")
        return self.server.tls.client_context() if self.server.tls is not None else None

    @property
    def ca_file(self) -> str | None:
        """With `tls=True`: the PEM file of the local CA that issued the server's certificate."""
        return self.server.tls.ca_file if self.server.tls is not None else None

    # ---- faults, sessions, waiting ------------------------------------------------------------------

    async def inject(
        self,
        kind: Any,
        session: str | None = None,
        key: str | None = None,
        key_id: str | None = None,
        when: Any = None,
        **params: Any,
    ) -> dict[str, Any]:
        """Inject a fault of the catalogue, as the control API does; returns what the control plane returns.

        `kind` is a fault name or a catalogue entry (anything with `.name`). The target is one session, every
        session of a key (`key`) or key id (`key_id`), or, naming none, every live session (server faults:
        server-wide). `when` is None (now), milliseconds, `(event_type, nth)` or the control API's dict.
        A bad request raises `RealtimeError` with the control API's message and `param`.
        """
        self._require_running("inject")
        name = getattr(kind, "name", kind)
        target = fault_target(session, key, key_id)
        return self._control().inject(name, params, target, fault_when(when), route=ROUTE)

    async def ring_sip(
        self,
        webhook_url: str,
        *,
        sip_headers: list[dict[str, str]] | None = None,
        key: str | None = None,
        webhook_secret: str | None = None,
        deliveries: int = 1,
    ) -> dict[str, Any]:
        """A SIP call rings: its signed `realtime.call.incoming` webhook goes to `webhook_url` (awaited;
        `deliveries` times), and the call is returned as `POST /_rtsim/sip/calls` describes it."""
        self._require_running("ring_sip")
        incoming = await self.server.sip.ring(
            webhook_url,
            sip_headers=sip_headers,
            key_id=key_id_of(key) if key is not None else None,
            secret=webhook_secret,
            deliveries=deliveries,
        )
        return incoming.describe()

    def sessions(self) -> list[dict[str, Any]]:
        """Live sessions, each as `GET /_rtsim/sessions` describes it (session, conn, key_id, model, …)."""
        return [describe_session(carrier) for carrier in self.server.live_carriers()]

    async def wait_for(
        self,
        match: RecordMatch = None,
        *,
        kind: str | None = None,
        session: str | None = None,
        key_id: str | None = None,
        direction: str | None = None,
        since: int | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> Record:
        """The first record that matches — already recorded (from `since`, a seq; default: the start) or
        the next to come. `match` is an event type (`"response.done"`) or a predicate over records; the
        filters are those of `HistoryQuery.select`. Raises TimeoutError after `timeout` seconds."""
        history = self.server.history
        matches = record_matcher(
            match,
            kind=kind,
            session=session,
            key_id=key_id,
            direction=direction,
            sessions_of_key=history.sessions_of,
        )
        found: asyncio.Future[Record] = asyncio.get_running_loop().create_future()

        def listen(record: Record) -> None:
            if not found.done() and matches(record):
                found.set_result(record)

        # Subscribe before scanning what is already there, so that nothing recorded in between is missed.
        history.listeners.append(listen)
        try:
            for record in history.select(since_seq=since or 0):
                if matches(record):
                    return record
            async with asyncio.timeout(timeout):
                return await found
        except TimeoutError:
            wanted = _describe_match(match, kind)
            raise TimeoutError(f"no record matched within {timeout} s: {wanted}") from None
        finally:
            history.listeners.remove(listen)

    # ---- internals ----------------------------------------------------------------------------------

    def _control(self) -> ControlPlane:
        if self.server.control is None:
            raise RuntimeError("the server has no control plane installed")
        return self.server.control

    def _require_running(self, what: str) -> None:
        if not self._running:
            raise RuntimeError(f"Simulator.{what} needs a running simulator: use `async with Simulator(...)`")


def _describe_match(match: RecordMatch, kind: str | None) -> str:
    if isinstance(match, str):
        return f"event {match!r}"
    if match is not None:
        over = f" over {kind!r} records" if kind else ""
        return f"predicate {getattr(match, '__name__', match)!r}{over}"
    return f"a {kind!r} record" if kind else "any record"


class SyncSimulator:
    """`Simulator` for suites that are not async: `with rtsim.SyncSimulator(...) as sim:`.

    The server runs on its own event loop in a daemon thread; each method hands its work to that loop
    (`asyncio.run_coroutine_threadsafe`) and blocks until it is done, so a test may call them from any
    thread — including while a blocking client (a subprocess, `websockets.sync`) talks to the server.
    """

    def __init__(
        self, *, api_key: str | None = None, config: ServerConfig | None = None, **options: Any
    ) -> None:
        self._sim = Simulator(api_key=api_key, config=config, **options)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.history = _LoopHistory(self._sim.history, self._call)

    # ---- lifecycle ----------------------------------------------------------------------------------

    def start(self) -> SyncSimulator:
        if self._loop is not None:
            return self
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="rtsim-simulator", daemon=True)
        thread.start()
        self._loop, self._thread = loop, thread
        try:
            self._run(self._sim.start(), timeout=30)
        except BaseException:
            self._shut_loop()
            raise
        return self

    def stop(self) -> None:
        if self._loop is None:
            return
        try:
            self._run(self._sim.stop(), timeout=30)
        finally:
            self._shut_loop()

    def __enter__(self) -> SyncSimulator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ---- the same surface as Simulator, blocking ----------------------------------------------------

    @property
    def server(self) -> RealtimeServer:
        return self._sim.server

    @property
    def config(self) -> ServerConfig:
        return self._sim.config

    @property
    def running(self) -> bool:
        return self._sim.running

    @property
    def base_url(self) -> str:
        return self._sim.base_url

    @property
    def control_url(self) -> str:
        return self._sim.control_url

    @property
    def api_key(self) -> str:
        return self._sim.api_key

    @property
    def key_id(self) -> str:
        return self._sim.key_id

    @property
    def env(self) -> dict[str, str]:
        return self._sim.env

    @property
    def ssl_context(self) -> ssl.SSLContext | None:
        return self._sim.ssl_context

    @property
    def ca_file(self) -> str | None:
        return self._sim.ca_file

    def inject(
        self,
        kind: Any,
        session: str | None = None,
        key: str | None = None,
        key_id: str | None = None,
        when: Any = None,
        **params: Any,
    ) -> dict[str, Any]:
        return self._run(self._sim.inject(kind, session, key, key_id, when, **params))

    def ring_sip(
        self,
        webhook_url: str,
        *,
        sip_headers: list[dict[str, str]] | None = None,
        key: str | None = None,
        webhook_secret: str | None = None,
        deliveries: int = 1,
    ) -> dict[str, Any]:
        coroutine = self._sim.ring_sip(
            webhook_url,
            sip_headers=sip_headers,
            key=key,
            webhook_secret=webhook_secret,
            deliveries=deliveries,
        )
        return self._run(coroutine, timeout=deliveries * self.config.webhook_timeout + 10)

    def sessions(self) -> list[dict[str, Any]]:
        return self._call(self._sim.sessions)

    def wait_for(
        self, match: RecordMatch = None, *, timeout: float = DEFAULT_TIMEOUT, **filters: Any
    ) -> Record:
        # The loop enforces `timeout`; the margin here only guards against a loop that stopped answering.
        return self._run(self._sim.wait_for(match, timeout=timeout, **filters), timeout=timeout + 10)

    # ---- handing work to the loop -------------------------------------------------------------------

    def _run(self, coroutine: Any, timeout: float | None = 30) -> Any:
        loop = self._loop
        if loop is None or not loop.is_running():
            coroutine.close()
            raise RuntimeError("SyncSimulator is not running: use `with SyncSimulator(...) as sim:`")
        if _running_loop() is loop:
            coroutine.close()
            raise RuntimeError("SyncSimulator methods block: call them from a thread other than the server's")
        return asyncio.run_coroutine_threadsafe(coroutine, loop).result(timeout)

    def _call(self, function: Callable[[], T]) -> T:
        """`function()` on the server's loop while it runs (records and sessions change only there); after
        stop, directly."""
        loop = self._loop
        if loop is None or not loop.is_running() or _running_loop() is loop:
            return function()
        done: Future[T] = Future()

        def call() -> None:
            try:
                done.set_result(function())
            except BaseException as exc:
                done.set_exception(exc)

        loop.call_soon_threadsafe(call)
        return done.result(30)

    def _shut_loop(self) -> None:
        loop, thread = self._loop, self._thread
        self._loop = self._thread = None
        if loop is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(timeout=30)
        if not loop.is_running():
            loop.close()


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class _LoopHistory:
    """A `HistoryQuery` whose queries run on the server's loop, so a query never races a new record."""

    def __init__(self, query: HistoryQuery, call: Callable[[Callable[[], Any]], Any]) -> None:
        self._query = query
        self._call = call

    @property
    def source(self) -> History:
        return self._query.source

    @property
    def records(self) -> list[Record]:
        return self._call(lambda: list(self._query.records))

    def __iter__(self) -> Iterator[Record]:
        return iter(self.records)

    def __len__(self) -> int:
        return self._call(self._query.__len__)

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._query, name)
        if not callable(attribute):
            return attribute

        def on_loop(*args: Any, **kwargs: Any) -> Any:
            return self._call(lambda: attribute(*args, **kwargs))

        on_loop.__name__ = name
        on_loop.__doc__ = attribute.__doc__
        return on_loop
