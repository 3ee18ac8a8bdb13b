"""The control plane is safe from browsers, needs the admin token beyond 127.0.0.1/::1, and the streaming
keep-alive is authenticated with the session's own key; the CLI and remote runs keep working."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from rtsim.simulator import control
from rtsim.simulator.server import RealtimeServer
from tests.support.faults import OTHER_KEY, http, session_id_of
from tests.support.wire import KEY, open_session

BROWSER_HEADERS = [
    {"Origin": "https://evil.example"},
    {"Origin": "null"},
    {"Sec-Fetch-Site": "cross-site"},
    {"Sec-Fetch-Site": "same-site"},
    {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36"},
]


@pytest.mark.parametrize("headers", BROWSER_HEADERS)
async def test_browser_requests_are_refused_with_403(server: RealtimeServer, headers: dict[str, str]) -> None:
    ws = await open_session(server)
    for method, path, body in (
        ("GET", "/_rtsim/sessions", None),
        ("GET", "/_rtsim/history", None),
        ("POST", "/_rtsim/faults", {"kind": "drop"}),
    ):
        status, reply, _ = await http(server, method, path, body, headers=headers)
        assert status == 403 and "browser" in reply["error"]["message"], (method, path)
    assert not server.history.select(kind="fault")
    await ws.close()


async def test_a_post_that_is_not_declared_json_is_refused(server: RealtimeServer) -> None:
    ws = await open_session(server)
    raw = json.dumps({"kind": "drop"}).encode()
    for content_type in (
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ):
        status, _, _ = await http(
            server, "POST", "/_rtsim/faults", raw=raw, headers={"Content-Type": content_type}
        )
        assert status == 415, content_type
    assert not server.history.select(kind="fault")
    status, _, _ = await http(server, "POST", "/_rtsim/faults", raw=raw)  # declared JSON: applied
    assert status == 200 and server.history.select(kind="fault")
    await ws.close()


async def test_same_origin_fetch_metadata_and_programs_pass(server: RealtimeServer) -> None:
    for headers in ({"Sec-Fetch-Site": "none"}, {"Sec-Fetch-Site": "same-origin"}, {"User-Agent": "curl/8"}):
        status, _, _ = await http(server, "GET", "/_rtsim/sessions", headers=headers)
        assert status == 200, headers


async def test_bound_to_127_0_0_2_the_control_api_needs_the_admin_token(
    server_factory: Callable[..., Any],
) -> None:
    server = await server_factory(host="127.0.0.2", pacing=0.0)
    url = f"http://127.0.0.2:{server.port}/_rtsim/sessions"
    async with aiohttp.ClientSession() as client:
        async with client.get(url) as response:
            assert response.status == 403
    guarded = await server_factory(host="127.0.0.2", pacing=0.0, admin_token="s3cret")
    url = f"http://127.0.0.2:{guarded.port}/_rtsim/sessions"
    async with aiohttp.ClientSession() as client:
        async with client.get(url) as response:
            assert response.status == 401
        async with client.get(url, headers={"X-Rtsim-Admin-Token": "s3cret"}) as response:
            assert response.status == 200


async def test_keep_alive_needs_a_credential_of_the_sessions_key(server: RealtimeServer) -> None:
    ws = await open_session(server)
    sid = await session_id_of(ws, server)
    body = {"session_id": sid}
    status, reply, _ = await http(server, "POST", "/v1/streaming.keep_alive", body)
    assert status == 401 and reply["error"]["message"].startswith("You didn't provide an API key")
    status, _, _ = await http(
        server, "POST", "/v1/streaming.keep_alive", body, headers={"Authorization": "Bearer nope"}
    )
    assert status == 401
    status, _, _ = await http(
        server, "POST", "/v1/streaming.keep_alive", body, headers={"Authorization": f"Bearer {OTHER_KEY}"}
    )
    assert status == 404  # another key's session is not even named
    status, reply, _ = await http(
        server, "POST", "/v1/streaming.keep_alive", body, headers={"Authorization": f"Bearer {KEY}"}
    )
    assert (status, reply) == (200, {"session_id": sid, "status": "ok"})
    assert len(server.history.select(kind="keep_alive")) == 1
    await ws.close()


async def test_the_cli_client_and_remote_runs_still_reach_the_control_api(server: RealtimeServer) -> None:
    ws = await open_session(server)
    base_url = f"http://127.0.0.1:{server.port}/v1"
    status, listed = await asyncio.to_thread(control.call, base_url, "GET", f"{control.PREFIX}/sessions")
    assert status == 200 and len(listed["sessions"]) == 1
    status, applied = await asyncio.to_thread(
        control.call, base_url, "POST", f"{control.PREFIX}/faults", {"kind": "drop", "target": {"key": KEY}}
    )
    assert status == 200 and applied["applied_to"], applied
    await ws.wait_closed()
