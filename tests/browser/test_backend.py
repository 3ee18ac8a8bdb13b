"""The browser client's app backend: JSON only (so another page cannot drive it without a preflight it
refuses), CORS for the simulator's origin only, bad bodies refused."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from rtsim.clients.browser import Backend
from rtsim.clients.common import ClientEnv, JsonLog
from rtsim.clients.reference_webrtc import Settings
from rtsim.simulator.server import RealtimeServer


@pytest.fixture
async def backend(server: RealtimeServer, tmp_path: Path) -> AsyncIterator[Backend]:
    scenario = tmp_path / "scenario.json"
    scenario.write_text(json.dumps({"name": "b", "model": "gpt-realtime", "turns": [], "end_at": 1}))
    env = ClientEnv.from_env(
        {"OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": "sk-test", "RTSIM_SCENARIO": str(scenario)}
    )
    with (tmp_path / "log").open("w") as out:
        backend = Backend(env, Settings(), JsonLog("browser", out))
        await backend.start()
        yield backend
        await backend.stop()


async def test_tokens_are_minted_for_json_requests_only(backend: Backend) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.post(backend.url + "token", json={}) as response:
            assert response.status == 200
            assert (await response.json())["value"].startswith("ek_")
        async with http.post(
            backend.url + "token", data="{}", headers={"Content-Type": "text/plain"}
        ) as response:
            assert response.status == 415
        async with http.post(
            backend.url + "hangup", data="x", headers={"Content-Type": "text/plain"}
        ) as response:
            assert response.status == 415


async def test_cors_only_for_the_simulators_origin(backend: Backend) -> None:
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"}
    async with aiohttp.ClientSession() as http:
        async with http.options(
            backend.url + "token", headers={**preflight, "Origin": backend.simulator_origin}
        ) as response:
            assert response.headers["Access-Control-Allow-Origin"] == backend.simulator_origin
        async with http.options(
            backend.url + "token", headers={**preflight, "Origin": "http://evil.example"}
        ) as response:
            assert response.status == 403
            assert "Access-Control-Allow-Origin" not in response.headers


@pytest.mark.parametrize("body", ["not json", "[1, 2]", '{"no_event": 1}'])
async def test_bad_reports_and_hangups_are_refused(backend: Backend, body: str) -> None:
    headers = {"Content-Type": "application/json"}
    async with aiohttp.ClientSession() as http:
        async with http.post(backend.url + "report", data=body, headers=headers) as response:
            assert response.status == 400
        async with http.post(backend.url + "hangup", data=body, headers=headers) as response:
            assert response.status == 400
