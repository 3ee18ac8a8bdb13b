"""CORS on the browser-facing REST endpoints, as the real API answers it (sources in simulator/cors.py):
`Access-Control-Allow-Origin: *` and a fixed header list by default, configurable origins, never on
`/_rtsim/`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from rtsim.simulator.server import RealtimeServer

PAGE = "http://127.0.0.1:5173"
PREFLIGHT = {
    "Origin": PAGE,
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization,content-type",
}
BROWSER_PATHS = (
    "/realtime/calls",
    "/realtime/calls/rtc_0123/hangup",
    "/realtime/client_secrets",
    "/realtime/sessions",
)


def _listed(value: str) -> set[str]:
    return {part.strip().lower() for part in value.split(",")}


@pytest.mark.parametrize("path", BROWSER_PATHS)
async def test_preflight_allows_any_origin_with_the_real_header_list(
    server: RealtimeServer, path: str
) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.options(server.base_url + path, headers=PREFLIGHT) as response,
    ):
        assert response.status == 200
        assert response.headers["Access-Control-Allow-Origin"] == "*"
        assert "post" in _listed(response.headers["Access-Control-Allow-Methods"])
        allowed = _listed(response.headers["Access-Control-Allow-Headers"])
        assert {"authorization", "content-type", "openai-beta", "x-stainless-os"} <= allowed


async def test_unknown_request_headers_are_not_reflected(server: RealtimeServer) -> None:
    """openclaw/openclaw#76435: api.openai.com refuses a browser's `originator` header at preflight."""
    headers = {**PREFLIGHT, "Access-Control-Request-Headers": "authorization,originator"}
    async with (
        aiohttp.ClientSession() as http,
        http.options(server.base_url + "/realtime/calls", headers=headers) as response,
    ):
        assert "originator" not in _listed(response.headers["Access-Control-Allow-Headers"])


async def test_the_real_response_carries_the_origin_and_exposes_location(server: RealtimeServer) -> None:
    """Even a refusal is readable by the page (a 401 it can show), and a call's Location is exposed."""
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            server.base_url + "/realtime/client_secrets", json={}, headers={"Origin": PAGE}
        ) as response,
    ):
        assert response.status == 401
        assert response.headers["Access-Control-Allow-Origin"] == "*"
        assert "location" in _listed(response.headers["Access-Control-Expose-Headers"])
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            server.base_url + "/realtime/client_secrets",
            json={},
            headers={"Origin": PAGE, "Authorization": "Bearer sk-test"},
        ) as response,
    ):
        assert response.status == 200
        assert response.headers["Access-Control-Allow-Origin"] == "*"


async def test_configured_origins_allow_only_those(server_factory: Callable[..., Any]) -> None:
    server = await server_factory(cors_origins=[PAGE])
    async with aiohttp.ClientSession() as http:
        async with http.options(server.base_url + "/realtime/calls", headers=PREFLIGHT) as response:
            assert response.headers["Access-Control-Allow-Origin"] == PAGE
            assert "Origin" in response.headers.getall("Vary")
        other = {**PREFLIGHT, "Origin": "http://evil.example"}
        async with http.options(server.base_url + "/realtime/calls", headers=other) as response:
            assert response.status < 300
            assert "Access-Control-Allow-Origin" not in response.headers
        async with http.post(
            server.base_url + "/realtime/client_secrets",
            json={},
            headers={"Origin": "http://evil.example", "Authorization": "Bearer sk-test"},
        ) as response:
            assert "Access-Control-Allow-Origin" not in response.headers


@pytest.mark.parametrize("path", ("/_rtsim/sessions", "/_rtsim/faults", "/_rtsim/history"))
async def test_never_on_the_control_api(server: RealtimeServer, path: str) -> None:
    root = server.base_url.removesuffix("/v1")
    async with aiohttp.ClientSession() as http:
        async with http.options(root + path, headers=PREFLIGHT) as response:
            assert "Access-Control-Allow-Origin" not in response.headers
            assert response.status == 405
        async with http.get(root + path, headers={"Origin": PAGE}) as response:
            assert response.status == 403
            assert "Access-Control-Allow-Origin" not in response.headers


async def test_websocket_path_has_no_preflight(server: RealtimeServer) -> None:
    """Browsers never preflight a WebSocket upgrade; only the REST endpoints take OPTIONS."""
    async with (
        aiohttp.ClientSession() as http,
        http.options(server.base_url + "/realtime", headers=PREFLIGHT) as response,
    ):
        assert response.status == 405
        assert "Access-Control-Allow-Origin" not in response.headers


def test_serve_takes_cors_origins() -> None:
    import argparse

    from rtsim.simulator.serve import add_server_options, config_from_args

    parser = argparse.ArgumentParser()
    add_server_options(parser)
    assert config_from_args(parser.parse_args([])).cors_origins == ["*"]
    args = parser.parse_args(["--cors-origin", PAGE, "--cors-origin", "https://app.example"])
    assert config_from_args(args).cors_origins == [PAGE, "https://app.example"]


async def test_rtsim_serve_cors_origin(serve_process: Callable[..., Any]) -> None:
    """As a user runs it: `rtsim serve --cors-origin` allows that origin on the preflight, and no other."""
    _, url = serve_process("--cors-origin", PAGE)
    async with aiohttp.ClientSession() as http:
        async with http.options(url + "/realtime/calls", headers=PREFLIGHT) as response:
            assert response.headers["Access-Control-Allow-Origin"] == PAGE
        other = {**PREFLIGHT, "Origin": "http://127.0.0.1:9"}
        async with http.options(url + "/realtime/calls", headers=other) as response:
            assert "Access-Control-Allow-Origin" not in response.headers
