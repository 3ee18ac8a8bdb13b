"""`POST /_rtsim/client-records` (what a client saw, joined to its key's history) and the page's static
files under `/_rtsim/client/`; neither is open to a browser's cross-origin requests."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import aiohttp
import pytest

from rtsim.scenarios.runner import ClientSpec, Nemesis
from rtsim.scenarios.spec import FaultStep
from rtsim.simulator.server import RealtimeServer
from rtsim.simulator.tokens import key_id

KEY = "sk-test-key"


def root(server: RealtimeServer) -> str:
    return server.base_url.removesuffix("/v1")


async def post(server: RealtimeServer, body: Any, **headers: str) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(root(server) + "/_rtsim/client-records", json=body, headers=headers) as response,
    ):
        return response.status, await response.json()


async def test_records_join_the_keys_history(server: RealtimeServer) -> None:
    records = [
        {"event": "transport", "what": "ice", "state": "connected", "call": "rtc_1"},
        {"event": "stats", "packetsLost": 3, "seq": 0, "kind": "close", "key_id": "forged"},
    ]
    status, body = await post(server, {"key": KEY, "client": "browser", "records": records})
    assert (status, body) == (200, {"recorded": 2})
    stored = server.history.select(kind="client")
    assert [r["event"] for r in stored] == ["transport", "stats"]
    assert all(r["key_id"] == key_id(KEY) and r["client"] == "browser" for r in stored)
    # A client cannot pass its record off as the server's bookkeeping.
    assert stored[1]["kind"] == "client" and stored[1]["seq"] != 0


@pytest.mark.parametrize(
    "body",
    [
        {"key": KEY, "client": "browser", "records": [{"no_event": 1}]},
        {"key": KEY, "client": "browser", "records": [{"event": "x"}] * 101},
        {"key": KEY, "client": "browser", "records": [{"event": "x", "blob": "a" * 9000}]},
        {"client": "browser", "records": []},
        ["not", "an", "object"],
    ],
)
async def test_bad_bodies_are_refused(server: RealtimeServer, body: Any) -> None:
    status, _ = await post(server, body)
    assert status == 400
    assert not server.history.select(kind="client")


async def test_a_browser_cannot_write_records(server: RealtimeServer) -> None:
    status, _ = await post(
        server, {"key": KEY, "client": "browser", "records": [{"event": "x"}]}, Origin="http://page.example"
    )
    assert status == 403


async def test_the_page_is_served_under_rtsim_client(server: RealtimeServer) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(root(server) + "/_rtsim/client/index.html") as response:
            assert response.status == 200
            assert "client.js" in await response.text()
            assert "Access-Control-Allow-Origin" not in response.headers
        async with http.get(root(server) + "/_rtsim/client/client.js") as response:
            assert response.status == 200
            assert "oai-events" in await response.text()


class _Process:
    """A stand-in for the client process: records the signals it is sent."""

    returncode: int | None = None

    def __init__(self) -> None:
        self.signals: list[int] = []

    def send_signal(self, sig: int) -> None:
        self.signals.append(sig)


class _Simulator:
    def __init__(self) -> None:
        self.noted: list[str] = []

    def note_fault(self, kind: str, params: dict[str, Any], key: str, *, route: str) -> None:
        self.noted.append(f"{kind}:{route}")


@pytest.mark.parametrize(
    "client, delivered",
    [
        (ClientSpec.named("browser"), True),
        (ClientSpec.from_command("node app.js"), True),
        (ClientSpec.named("reference-webrtc"), False),
    ],
)
async def test_page_reload_goes_to_clients_with_a_page_only(client: ClientSpec, delivered: bool) -> None:
    simulator, process = _Simulator(), _Process()
    step = FaultStep("page-reload", at=0.0)
    nemesis = Nemesis(simulator, KEY, [step])  # type: ignore[arg-type]
    nemesis.client = (client, process)  # type: ignore[assignment]
    nemesis.fire(step)
    await asyncio.sleep(0)
    assert process.signals == ([signal.SIGUSR1] if delivered else [])
    assert simulator.noted == (["page-reload:scenario:client"] if delivered else [])
    assert ("skipped" in nemesis.log[0]) is not delivered
