"""The embedded Toxiproxy answers bad input as the real (Go) one does: 400s with encoding/json's
messages for nesting past its 10000 limit, NaN/Infinity, float32 and int64 overflow; its state stays
valid JSON."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import aiohttp
import pytest

from rtsim.simulator.toxiproxy import ToxiproxyServer

UPSTREAM = "127.0.0.1:20001"


@pytest.fixture
async def toxiproxy() -> AsyncIterator[tuple[str, aiohttp.ClientSession]]:
    server = ToxiproxyServer(seed=1)
    url = await server.start("127.0.0.1", 0)
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"{url}/proxies", data=json.dumps({"name": "p", "upstream": UPSTREAM, "listen": "127.0.0.1:0"})
        ) as created:
            assert created.status == 201
        yield url, session
    await server.stop()


async def post(toxiproxy: tuple[str, aiohttp.ClientSession], path: str, raw: bytes) -> tuple[int, str]:
    url, session = toxiproxy
    async with session.post(url + path, data=raw) as response:
        return response.status, await response.text()


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "invalid character '[' exceeded max depth"),
        (b'{"type": "latency", "toxicity": NaN}', "invalid character 'N' looking for beginning of value"),
        (b'{"type": "latency", "toxicity": -Infinity}', "invalid character 'I' in numeric literal"),
        (
            b'{"type": "latency", "toxicity": 1e39}',
            "json: cannot unmarshal number 1e39 into Go struct field ToxicWrapper.toxicity of type float32",
        ),
        (
            b'{"type": "latency", "attributes": {"latency": 18446744073709551616}}',
            "json: cannot unmarshal number 18446744073709551616 into Go struct field",
        ),
    ],
)
async def test_bad_toxic_bodies_get_go_s_400(
    toxiproxy: tuple[str, aiohttp.ClientSession], raw: bytes, message: str
) -> None:
    status, text = await post(toxiproxy, "/proxies/p/toxics", raw)
    assert status == 400 and f"bad request body: {message}" in json.loads(text)["error"], text
    url, session = toxiproxy
    async with session.get(f"{url}/proxies") as listing:
        assert listing.status == 200
        proxies = json.loads(await listing.text(), parse_constant=lambda name: pytest.fail(name))
    assert proxies["p"]["toxics"] == []  # nothing stored, and the listing is still strict JSON


async def test_the_largest_float32_and_int64_are_still_accepted(
    toxiproxy: tuple[str, aiohttp.ClientSession],
) -> None:
    body = {"type": "latency", "toxicity": 3.4028234e38, "attributes": {"latency": 2**63 - 1}}
    status, text = await post(toxiproxy, "/proxies/p/toxics", json.dumps(body).encode())
    assert status == 200, text
    assert json.loads(text)["attributes"]["latency"] == 2**63 - 1


async def test_a_lone_surrogate_becomes_u_fffd_as_go_decodes_it(
    toxiproxy: tuple[str, aiohttp.ClientSession],
) -> None:
    raw = b'{"name": "half\\ud800", "upstream": "127.0.0.1:20001", "listen": "127.0.0.1:0"}'
    status, text = await post(toxiproxy, "/proxies", raw)
    assert status == 201, text
    assert json.loads(text)["name"] == "half\ufffd"
    url, session = toxiproxy
    async with session.get(f"{url}/proxies") as listing:
        assert listing.status == 200 and "half\ufffd" in json.loads(await listing.text())
