"""What importing a module loads, each case in a fresh interpreter run outside the repository.

The dependency rule made checkable: the engine is sans-I/O, the clients need nothing of the server, the
server pays for WebRTC (aiortc, aioice) only once a call is made, and `import rtsim` loads no server.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

NETWORK_STACKS = ("aiohttp", "aiortc", "aioice", "websockets")
WEBRTC_STACKS = ("aiortc", "aioice")
SERVER_SIDE = (
    "rtsim.simulator.server",
    "rtsim.simulator.control",
    "rtsim.simulator.faults",
    "rtsim.simulator.webrtc",
)


def modules_after(code: str, cwd: Path) -> dict[str, list[str]]:
    """Run `code` in a fresh isolated interpreter; it calls `loaded(label)` to snapshot `sys.modules`."""
    prelude = (
        "import json, sys\n"
        "def loaded(label):\n"
        "    print(json.dumps({label: sorted(sys.modules)}), flush=True)\n"
    )
    finished = subprocess.run(
        [sys.executable, "-I", "-c", prelude + code],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert finished.returncode == 0, finished.stderr
    snapshots: dict[str, list[str]] = {}
    for line in finished.stdout.splitlines():
        snapshots.update(json.loads(line))
    return snapshots


def under(modules: list[str], packages: tuple[str, ...]) -> list[str]:
    """The modules that are one of `packages` or inside one of them."""
    return [m for m in modules if any(m == p or m.startswith(p + ".") for p in packages)]


def test_the_engine_loads_no_network_stack(tmp_path: Path) -> None:
    snapshot = modules_after("import rtsim.simulator.engine\nloaded('engine')\n", tmp_path)["engine"]
    assert "rtsim.simulator.engine" in snapshot
    assert under(snapshot, NETWORK_STACKS) == []


def test_the_reference_client_loads_nothing_of_the_server(tmp_path: Path) -> None:
    snapshot = modules_after("import rtsim.clients.reference\nloaded('client')\n", tmp_path)["client"]
    assert "rtsim.clients.reference" in snapshot
    assert under(snapshot, SERVER_SIDE) == []


def test_import_rtsim_loads_no_server_until_the_api_is_used(tmp_path: Path) -> None:
    code = (
        "import rtsim\n"
        "assert rtsim.__version__ and 'Simulator' in dir(rtsim)\n"
        "loaded('imported')\n"
        "rtsim.Simulator\n"
        "loaded('used')\n"
    )
    snapshots = modules_after(code, tmp_path)
    assert under(snapshots["imported"], ("rtsim.simulator", "aiohttp")) == []
    assert {"rtsim.simulator.api", "rtsim.simulator.server"} <= set(snapshots["used"])


@pytest.fixture(scope="module")
def sdp_offer() -> str:
    """A real browser-style offer (audio + the `oai-events` channel), made in this process so that the fresh
    interpreter under test imports no WebRTC stack of its own to make it."""
    import asyncio

    from aiortc import RTCPeerConnection

    async def offer() -> str:
        peer = RTCPeerConnection()
        peer.addTransceiver("audio", direction="sendrecv")
        peer.createDataChannel("oai-events")
        await peer.setLocalDescription(await peer.createOffer())
        sdp = peer.localDescription.sdp
        await peer.close()
        return sdp

    return asyncio.run(offer())


def test_the_server_loads_webrtc_only_once_a_call_is_made(tmp_path: Path, sdp_offer: str) -> None:
    (tmp_path / "offer.sdp").write_text(sdp_offer)
    code = """
import asyncio
import aiohttp
from rtsim.simulator.server import RealtimeServer, ServerConfig

async def main():
    server = RealtimeServer(ServerConfig())
    loaded("constructed")
    await server.start()
    loaded("started")
    try:
        async with aiohttp.ClientSession() as http:
            async with http.post(
                server.base_url + "/realtime/calls",
                data=open("offer.sdp").read(),
                headers={"Authorization": "Bearer sk-test", "Content-Type": "application/sdp"},
            ) as response:
                assert response.status == 201, (response.status, await response.text())
        loaded("called")
    finally:
        await server.stop()
    loaded("stopped")

asyncio.run(main())
"""
    snapshots = modules_after(code, tmp_path)
    for moment in ("constructed", "started"):
        assert under(snapshots[moment], WEBRTC_STACKS) == [], moment
    assert set(WEBRTC_STACKS) <= set(snapshots["called"])
    assert "stopped" in snapshots
