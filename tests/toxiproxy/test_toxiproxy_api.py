"""Conformance of the embedded Toxiproxy HTTP API: raw HTTP, the unmodified toxiproxy-python client and
this package's own client, against the real server's routes, bodies, statuses and messages."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
import toxiproxy
from toxiproxy.api import APIConsumer
from toxiproxy.exceptions import InvalidToxic, NotFound, ProxyExists

from rtsim.simulator.toxiproxy import (
    ThreadedToxiproxyServer,
    ToxiproxyClient,
    ToxiproxyClientError,
    ToxiproxyServer,
)
from rtsim.simulator.toxiproxy.testing import Upstream

UPSTREAM = "127.0.0.1:20001"  # never dialled by these tests unless a client connects


@dataclass
class Reply:
    status: int
    text: str
    headers: Any

    @property
    def json(self) -> Any:
        return json.loads(self.text)


@dataclass
class Api:
    server: ToxiproxyServer
    url: str
    session: aiohttp.ClientSession

    async def call(
        self, method: str, path: str, body: object = None, *, raw: bytes | None = None, agent: str = "test"
    ) -> Reply:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        headers = {"User-Agent": agent}
        async with self.session.request(method, self.url + path, data=data, headers=headers) as response:
            return Reply(response.status, await response.text(), response.headers)

    async def create(self, name: str = "test", **fields: object) -> Reply:
        body = {"name": name, "upstream": UPSTREAM, "listen": "127.0.0.1:0", **fields}
        return await self.call("POST", "/proxies", body)


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    server = ToxiproxyServer(seed=1)
    url = await server.start("127.0.0.1", 0)
    async with aiohttp.ClientSession() as session:
        yield Api(server, url, session)
    await server.stop()


def compact(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))


def error_text(message: str, status: int) -> str:
    return compact({"error": message, "status": status}) + "\n"


def listen_port(listen: str) -> int:
    return int(listen.rsplit(":", 1)[1])


def is_listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


# routing, browsers, version
async def test_version(api: Api) -> None:
    reply = await api.call("GET", "/version")
    assert reply.status == 200
    assert reply.text == '{"version": "2.12.0"}\n'
    assert reply.headers["Content-Type"] == "application/json;charset=utf-8"


async def test_unknown_paths_are_404(api: Api) -> None:
    for path in ("/", "/nope", "/proxies/", "/proxies/a/b", "/proxies/a/toxics/b/c", "/versions"):
        reply = await api.call("GET", path)
        assert (reply.status, reply.text) == (404, "404 page not found\n"), path


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PUT", "/proxies"),
        ("DELETE", "/proxies"),
        ("GET", "/reset"),
        ("GET", "/populate"),
        ("POST", "/version"),
        ("PUT", "/proxies/test"),
        ("PUT", "/proxies/test/toxics"),
        ("DELETE", "/proxies/test/toxics"),
        ("PUT", "/proxies/test/toxics/t"),
    ],
)
async def test_known_paths_with_a_wrong_method_are_405(api: Api, method: str, path: str) -> None:
    reply = await api.call(method, path)
    assert reply.status == 405
    assert reply.text == ""


async def test_browsers_are_refused(api: Api) -> None:
    browser = "Mozilla/5.0 (X11; Linux x86_64)"
    reply = await api.call("GET", "/proxies", agent=browser)
    assert (reply.status, reply.text) == (403, "User agent not allowed\n")
    assert (await api.call("POST", "/proxies", {"name": "x"}, agent=browser)).status == 403
    assert (await api.call("GET", "/proxies", agent="curl/8.0 Mozilla/5.0")).status == 200  # prefix only


# proxies
async def test_proxy_lifecycle(api: Api) -> None:
    assert (await api.call("GET", "/proxies")).text == "{}"

    created = await api.create()
    assert created.status == 201
    assert created.headers["Content-Type"] == "application/json"
    port = listen_port(created.json["listen"])
    assert port != 0 and is_listening(port)
    expected = {
        "name": "test",
        "listen": f"127.0.0.1:{port}",
        "upstream": UPSTREAM,
        "enabled": True,
        "toxics": [],
    }
    assert created.text == compact(expected)  # compact JSON, Go's field order

    assert (await api.call("GET", "/proxies")).text == compact({"test": expected})
    assert (await api.call("GET", "/proxies/test")).text == compact(expected)

    disabled = await api.call("POST", "/proxies/test", {"enabled": False})
    assert disabled.status == 200
    assert disabled.json == {**expected, "enabled": False}
    assert not is_listening(port)

    enabled = await api.call("PATCH", "/proxies/test", {"enabled": True})
    assert enabled.json == expected  # same port again
    assert is_listening(port)

    moved = await api.call("PATCH", "/proxies/test", {"upstream": "127.0.0.1:20002"})
    assert moved.json == {**expected, "upstream": "127.0.0.1:20002"}

    deleted = await api.call("DELETE", "/proxies/test")
    assert (deleted.status, deleted.text) == (204, "")
    assert not is_listening(port)
    missing = await api.call("GET", "/proxies/test")
    assert (missing.status, missing.text) == (404, error_text("proxy not found", 404))
    assert (await api.call("DELETE", "/proxies/test")).status == 404
    assert (await api.call("POST", "/proxies/test", {"enabled": True})).status == 404


async def test_proxy_create_errors(api: Api) -> None:
    assert (await api.create()).status == 201
    duplicate = await api.create()
    assert (duplicate.status, duplicate.text) == (409, error_text("proxy already exists", 409))

    no_name = await api.call("POST", "/proxies", {"upstream": UPSTREAM})
    assert (no_name.status, no_name.text) == (400, error_text("missing required field: name", 400))
    no_upstream = await api.call("POST", "/proxies", {"name": "other"})
    assert (no_upstream.status, no_upstream.text) == (
        400,
        error_text("missing required field: upstream", 400),
    )

    cases = {
        b"": "bad request body: EOF",
        b'{"name": "x",': "bad request body: unexpected EOF",
        b"x": "bad request body: invalid character 'x' looking for beginning of value",
        b'{"name": 5}': (
            "bad request body: json: cannot unmarshal number into Go struct field Proxy.name of type string"
        ),
        b'{"name": "x", "upstream": "y", "enabled": "yes"}': (
            "bad request body: json: cannot unmarshal string into Go struct field Proxy.enabled of type bool"
        ),
        b"[]": "bad request body: json: cannot unmarshal array into Go value of type toxiproxy.Proxy",
    }
    for raw, message in cases.items():
        reply = await api.call("POST", "/proxies", raw=raw)
        assert (reply.status, reply.json) == (400, {"error": message, "status": 400}), raw


async def test_listen_conflict_is_a_500_and_creates_nothing(api: Api) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        reply = await api.create(listen=f"127.0.0.1:{port}")
        assert reply.status == 500
        assert reply.json == {
            "error": f"listen tcp 127.0.0.1:{port}: bind: address already in use",
            "status": 500,
        }
    assert (await api.call("GET", "/proxies/test")).status == 404


async def test_proxy_created_disabled_does_not_listen(api: Api) -> None:
    reply = await api.create(enabled=False)
    assert reply.status == 201
    assert reply.json["enabled"] is False
    assert reply.json["listen"] == "127.0.0.1:0"  # bound only when enabled
    enabled = await api.call("POST", "/proxies/test", {"enabled": True})
    assert is_listening(listen_port(enabled.json["listen"]))


async def test_reset_enables_every_proxy_and_removes_every_toxic(api: Api) -> None:
    port = listen_port((await api.create()).json["listen"])
    await api.call("POST", "/proxies/test/toxics", {"type": "latency", "attributes": {"latency": 10}})
    await api.call("POST", "/proxies/test/toxics", {"type": "timeout", "stream": "upstream"})
    await api.call("POST", "/proxies/test", {"enabled": False})

    reply = await api.call("POST", "/reset")
    assert (reply.status, reply.text) == (204, "")
    proxy = (await api.call("GET", "/proxies/test")).json
    assert proxy["enabled"] is True and proxy["toxics"] == []
    assert proxy["listen"] == f"127.0.0.1:{port}"
    assert is_listening(port)


# populate
async def test_populate_creates_keeps_and_replaces(api: Api) -> None:
    first = await api.call(
        "POST", "/populate", [{"name": "one", "upstream": UPSTREAM, "listen": "127.0.0.1:0"}]
    )
    assert first.status == 201
    [created] = first.json["proxies"]
    assert created["name"] == "one" and created["enabled"] is True and created["toxics"] == []
    listen = created["listen"]
    await api.call("POST", "/proxies/one/toxics", {"type": "noop"})

    same = [{"name": "one", "upstream": UPSTREAM, "listen": listen}, {"name": "two", "upstream": UPSTREAM}]
    kept = await api.call("POST", "/populate", same)
    assert kept.status == 201
    one, two = kept.json["proxies"]
    assert one["listen"] == listen and [toxic["name"] for toxic in one["toxics"]] == ["noop_downstream"]
    assert two["name"] == "two" and two["enabled"] is True

    changed = await api.call(
        "POST", "/populate", [{"name": "one", "upstream": "127.0.0.1:20002", "listen": listen}]
    )
    [replaced] = changed.json["proxies"]
    assert replaced["upstream"] == "127.0.0.1:20002" and replaced["toxics"] == []  # a new proxy
    assert sorted((await api.call("GET", "/proxies")).json) == ["one", "two"]

    disabled = await api.call(
        "POST", "/populate", [{"name": "three", "upstream": UPSTREAM, "enabled": False}]
    )
    assert disabled.json["proxies"][0]["enabled"] is False


async def test_populate_errors(api: Api) -> None:
    empty = await api.call("POST", "/populate", [])
    assert (empty.status, empty.text) == (201, '{"proxies":null}')

    invalid = [{"name": "a", "upstream": UPSTREAM}, {"upstream": UPSTREAM}]
    reply = await api.call("POST", "/populate", invalid)
    assert reply.status == 400
    assert reply.text == '{"error":"missing required field: name at proxy 2","status":400,"proxies":null}'
    assert (await api.call("GET", "/proxies")).json == {}  # checked before anything is created
    reply = await api.call("POST", "/populate", [{"name": "a"}])
    assert reply.json["error"] == "missing required field: upstream at proxy 1"

    not_a_list = await api.call("POST", "/populate", {"name": "a"})
    assert not_a_list.status == 400
    assert not_a_list.json["error"].startswith("bad request body: json: cannot unmarshal object")

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = f"127.0.0.1:{taken.getsockname()[1]}"
        partial = await api.call(
            "POST",
            "/populate",
            [{"name": "ok", "upstream": UPSTREAM}, {"name": "bad", "upstream": UPSTREAM, "listen": busy}],
        )
    assert partial.status == 500
    assert partial.json["error"] == f"listen tcp {busy}: bind: address already in use"
    assert [proxy["name"] for proxy in partial.json["proxies"]] == ["ok"]


# toxics
async def test_toxic_lifecycle(api: Api) -> None:
    await api.create()
    created = await api.call(
        "POST", "/proxies/test/toxics", {"type": "latency", "attributes": {"latency": 100}}
    )
    assert created.status == 200
    expected = {
        "attributes": {"latency": 100, "jitter": 0},
        "name": "latency_downstream",
        "type": "latency",
        "stream": "downstream",
        "toxicity": 1,
    }
    assert created.text == compact(expected)

    upstream = await api.call(
        "POST",
        "/proxies/test/toxics",
        {
            "name": "cut",
            "type": "limit_data",
            "stream": "upstream",
            "toxicity": 0.5,
            "attributes": {"bytes": 9},
        },
    )
    assert upstream.json == {
        "attributes": {"bytes": 9},
        "name": "cut",
        "type": "limit_data",
        "stream": "upstream",
        "toxicity": 0.5,
    }
    # Listed upstream first, then downstream; also embedded in the proxy.
    listing = (await api.call("GET", "/proxies/test/toxics")).json
    assert [toxic["name"] for toxic in listing] == ["cut", "latency_downstream"]
    assert (await api.call("GET", "/proxies/test")).json["toxics"] == listing
    assert (await api.call("GET", "/proxies/test/toxics/latency_downstream")).json == expected

    merged = await api.call("POST", "/proxies/test/toxics/latency_downstream", {"attributes": {"jitter": 5}})
    assert merged.json["attributes"] == {"latency": 100, "jitter": 5}
    patched = await api.call("PATCH", "/proxies/test/toxics/latency_downstream", {"toxicity": 0.25})
    assert patched.json == {**expected, "attributes": {"latency": 100, "jitter": 5}, "toxicity": 0.25}

    deleted = await api.call("DELETE", "/proxies/test/toxics/latency_downstream")
    assert (deleted.status, deleted.text) == (204, "")
    gone = await api.call("GET", "/proxies/test/toxics/latency_downstream")
    assert (gone.status, gone.text) == (404, error_text("toxic not found", 404))
    assert (await api.call("DELETE", "/proxies/test/toxics/latency_downstream")).status == 404
    assert (await api.call("PATCH", "/proxies/test/toxics/latency_downstream", {})).status == 404


@pytest.mark.parametrize(
    ("toxic_type", "attributes"),
    [
        ("latency", {"latency": 0, "jitter": 0}),
        ("bandwidth", {"rate": 0}),
        ("slow_close", {"delay": 0}),
        ("timeout", {"timeout": 0}),
        ("reset_peer", {"timeout": 0}),
        ("slicer", {"average_size": 0, "size_variation": 0, "delay": 0}),
        ("limit_data", {"bytes": 0}),
        ("noop", {}),
    ],
)
async def test_every_toxic_type_lists_all_its_attributes(
    api: Api, toxic_type: str, attributes: dict[str, int]
) -> None:
    await api.create()
    reply = await api.call("POST", "/proxies/test/toxics", {"type": toxic_type, "stream": "upstream"})
    assert reply.status == 200
    assert reply.json["attributes"] == attributes
    assert reply.json["name"] == f"{toxic_type}_upstream"


async def test_toxic_errors(api: Api) -> None:
    for method, path in [
        ("GET", "/proxies/none/toxics"),
        ("POST", "/proxies/none/toxics"),
        ("GET", "/proxies/none/toxics/t"),
        ("PATCH", "/proxies/none/toxics/t"),
        ("DELETE", "/proxies/none/toxics/t"),
    ]:
        reply = await api.call(method, path, raw=b"not json")
        assert (reply.status, reply.text) == (404, error_text("proxy not found", 404)), (method, path)

    await api.create()
    stream = await api.call("POST", "/proxies/test/toxics", {"type": "latency", "stream": "sideways"})
    assert (stream.status, stream.text) == (
        400,
        error_text("stream was invalid, can be either upstream or downstream", 400),
    )
    kind = await api.call("POST", "/proxies/test/toxics", {"type": "down"})
    assert (kind.status, kind.text) == (400, error_text("invalid toxic type", 400))
    assert (await api.call("POST", "/proxies/test/toxics", {})).json["error"] == "invalid toxic type"

    assert (await api.call("POST", "/proxies/test/toxics", {"type": "noop"})).status == 200
    duplicate = await api.call("POST", "/proxies/test/toxics", {"type": "noop"})
    assert (duplicate.status, duplicate.text) == (409, error_text("toxic already exists", 409))
    # Names are unique across both streams.
    same_name = await api.call("POST", "/proxies/test/toxics", {"type": "latency", "name": "noop_downstream"})
    assert same_name.status == 409

    bad_attributes = {
        '{"type": "latency", "attributes": {"latency": 1.5}}': (
            "json: cannot unmarshal number 1.5 into Go struct field "
            "LatencyToxic.attributes.latency of type int64"
        ),
        '{"type": "slicer", "attributes": {"delay": "1"}}': (
            "json: cannot unmarshal string into Go struct field SlicerToxic.attributes.delay of type int"
        ),
        '{"type": "latency", "toxicity": "high"}': (
            "json: cannot unmarshal string into Go struct field ToxicWrapper.toxicity of type float32"
        ),
        '{"type": "latency", "attributes": [1]}': (
            "json: cannot unmarshal array into Go struct field .attributes of type toxics.LatencyToxic"
        ),
        "{": "unexpected EOF",
    }
    for raw, message in bad_attributes.items():
        reply = await api.call("POST", "/proxies/test/toxics", raw=raw.encode())
        assert (reply.status, reply.json) == (
            400,
            {"error": f"bad request body: {message}", "status": 400},
        ), raw

    update = await api.call("POST", "/proxies/test/toxics/noop_downstream", raw=b"{")
    assert (update.status, update.json["error"]) == (400, "bad request body: unexpected EOF")
    # The toxic is looked up before the body is read, as in the real server.
    assert (await api.call("POST", "/proxies/test/toxics/none", raw=b"{")).status == 404


async def test_toxics_set_over_http_act_on_traffic(api: Api) -> None:
    upstream = await Upstream().start()
    try:
        created = await api.call("POST", "/proxies", {"name": "echo", "upstream": upstream.address})
        port = listen_port(created.json["listen"])
        await api.call("POST", "/proxies/echo/toxics", {"type": "latency", "attributes": {"latency": 150}})

        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        started = time.perf_counter()
        writer.write(b"ping")
        assert await reader.readexactly(4) == b"ping"
        assert time.perf_counter() - started >= 0.149
        await api.call("DELETE", "/proxies/echo/toxics/latency_downstream")
        started = time.perf_counter()
        writer.write(b"ping")
        assert await reader.readexactly(4) == b"ping"
        assert time.perf_counter() - started < 0.1
        writer.close()
    finally:
        await upstream.close()


# toxiproxy-python (unmodified), synchronous: the server runs on its own thread
@pytest.fixture
def threaded() -> Iterator[ThreadedToxiproxyServer]:
    with ThreadedToxiproxyServer(seed=5) as server:
        yield server


@pytest.fixture
def toxiproxy_python(threaded: ThreadedToxiproxyServer) -> Iterator[toxiproxy.Toxiproxy]:
    client = toxiproxy.Toxiproxy()
    host, port = threaded.url.removeprefix("http://").rsplit(":", 1)  # type: ignore[union-attr]
    saved = APIConsumer.host, APIConsumer.port
    client.update_api_consumer(host, int(port))
    yield client
    APIConsumer.host, APIConsumer.port = saved


def _blocking_round_trip(port: int) -> float:
    with socket.create_connection(("127.0.0.1", port), timeout=2) as conn:
        started = time.perf_counter()
        conn.sendall(b"ping")
        assert conn.recv(4) == b"ping"
        return time.perf_counter() - started


@pytest.fixture
def blocking_echo() -> Iterator[str]:
    """An echo server on a plain thread, so blocking clients do not depend on any event loop."""
    import threading

    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                while data := conn.recv(65536):
                    conn.sendall(data)

    threading.Thread(target=serve, daemon=True).start()
    yield f"127.0.0.1:{listener.getsockname()[1]}"
    listener.close()


def test_toxiproxy_python_server_calls(toxiproxy_python: toxiproxy.Toxiproxy) -> None:
    assert toxiproxy_python.running() is True
    assert toxiproxy_python.version() == b'{"version": "2.12.0"}\n'
    assert toxiproxy_python.proxies() == {}


def test_toxiproxy_python_proxies_and_toxics(
    toxiproxy_python: toxiproxy.Toxiproxy, blocking_echo: str
) -> None:
    proxy = toxiproxy_python.create(upstream=blocking_echo, name="echo")
    assert proxy.enabled is True and proxy.upstream == blocking_echo
    port = listen_port(proxy.listen)
    assert port != 0
    assert set(toxiproxy_python.proxies()) == {"echo"}
    assert toxiproxy_python.get_proxy("echo").listen == proxy.listen
    with pytest.raises(ProxyExists):
        toxiproxy_python.create(upstream=blocking_echo, name="echo")
    assert _blocking_round_trip(port) < 0.05

    proxy.add_toxic(type="latency", attributes={"latency": 120})
    toxic = proxy.get_toxic("latency_downstream")
    assert toxic is not None
    assert (toxic.type, toxic.stream, toxic.toxicity) == ("latency", "downstream", 1)
    assert toxic.attributes == {"latency": 120, "jitter": 0}
    assert _blocking_round_trip(port) >= 0.119
    with pytest.raises(ProxyExists):  # the client maps every 409 to ProxyExists
        proxy.add_toxic(type="latency", attributes={"latency": 1})
    with pytest.raises(InvalidToxic):
        proxy.add_toxic(type="no_such_toxic")
    with pytest.raises(InvalidToxic):
        proxy.add_toxic(type="latency", stream="sideways")

    assert proxy.destroy_toxic("latency_downstream") is True
    assert proxy.toxics() == {}
    with pytest.raises(NotFound):
        proxy.destroy_toxic("latency_downstream")
    assert _blocking_round_trip(port) < 0.05

    with proxy.down():
        assert toxiproxy_python.get_proxy("echo").enabled is False
        with pytest.raises(ConnectionRefusedError):
            _blocking_round_trip(port)
    assert toxiproxy_python.get_proxy("echo").enabled is True
    assert _blocking_round_trip(port) < 0.05

    proxy.add_toxic(type="timeout", stream="upstream", attributes={"timeout": 0})
    proxy.disable()
    assert toxiproxy_python.reset() is True
    restored = toxiproxy_python.get_proxy("echo")
    assert restored.enabled is True and restored.listen == proxy.listen
    assert restored.toxics() == {}

    assert proxy.destroy() is True
    assert toxiproxy_python.get_proxy("echo") is None
    with pytest.raises(NotFound):
        proxy.destroy()


def test_toxiproxy_python_populate_and_destroy_all(toxiproxy_python: toxiproxy.Toxiproxy) -> None:
    created = toxiproxy_python.populate(
        [
            {"name": "a", "upstream": UPSTREAM, "listen": "127.0.0.1:0"},
            {"name": "b", "upstream": UPSTREAM, "listen": "127.0.0.1:0", "enabled": False},
        ]
    )
    assert [proxy.name for proxy in created] == ["a", "b"]
    assert toxiproxy_python.get_proxy("b").enabled is False
    toxiproxy_python.destroy_all()
    assert toxiproxy_python.proxies() == {}


def test_threaded_server_direct_calls(threaded: ThreadedToxiproxyServer, blocking_echo: str) -> None:
    server = threaded.server
    proxy = threaded.call(server.create_proxy, "direct", blocking_echo)
    threaded.call(server.add_toxic, "direct", "latency", stream="upstream", attributes={"latency": 80})
    assert _blocking_round_trip(proxy.port) >= 0.079
    threaded.call(server.remove_toxic, "direct", "latency_upstream")
    assert _blocking_round_trip(proxy.port) < 0.05


# this package's client, against the embedded server (and, via TOXIPROXY_URL, any real one)
async def test_client_round_trip(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOXIPROXY_URL", api.url + "/")
    async with ToxiproxyClient() as client:
        assert client.url == api.url
        assert await client.version() == "2.12.0"
        proxy = await client.create_proxy("c", UPSTREAM)
        assert proxy["enabled"] is True and listen_port(proxy["listen"]) != 0
        assert (await client.get_proxy("c"))["listen"] == proxy["listen"]
        toxic = await client.add_toxic("c", "bandwidth", stream="upstream", attributes={"rate": 10})
        assert toxic["name"] == "bandwidth_upstream"
        updated = await client.update_toxic("c", "bandwidth_upstream", attributes={"rate": 20}, toxicity=0.5)
        assert (updated["attributes"], updated["toxicity"]) == ({"rate": 20}, 0.5)
        assert [t["name"] for t in await client.toxics("c")] == ["bandwidth_upstream"]
        assert (await client.get_toxic("c", "bandwidth_upstream"))["type"] == "bandwidth"
        await client.remove_toxic("c", "bandwidth_upstream")
        assert (await client.update_proxy("c", enabled=False))["enabled"] is False
        await client.reset()
        assert (await client.proxies())["c"]["enabled"] is True
        populated = await client.populate([{"name": "d", "upstream": UPSTREAM}])
        assert [p["name"] for p in populated] == ["d"]
        await client.delete_proxy("c")
        with pytest.raises(ToxiproxyClientError) as caught:
            await client.get_proxy("c")
        assert (caught.value.status, caught.value.message) == (404, "proxy not found")
        with pytest.raises(ToxiproxyClientError) as caught:
            await client.add_toxic("d", "latency", stream="sideways")
        assert caught.value.status == 400
