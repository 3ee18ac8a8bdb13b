"""WebRTC faults by the three injection routes (control API, `rtsim fault`, fault plans), seen by aiortc."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

from rtsim.clients.webrtc_call import ClientCall
from rtsim.simulator import control as control_api
from rtsim.simulator.server import RealtimeServer
from tests.support.webrtc import KEY, after, open_call


async def control(server: RealtimeServer, body: dict[str, Any]) -> dict[str, Any]:
    assert server.control is not None
    return server.control.inject(
        body["kind"], body.get("params"), body.get("target"), body.get("when"), route="test"
    )


@pytest.fixture
async def server(server_factory: Callable[..., Any]) -> RealtimeServer:
    return await server_factory(pacing=0.0)


async def test_control_api_ice_blackhole_on_a_session(server: RealtimeServer) -> None:
    call = await open_call(server)
    session_id = (await call.wait_for("session.created"))["session"]["id"]
    status, listing = await asyncio.to_thread(control_api.call, server.base_url, "GET", "/_rtsim/sessions")
    assert status == 200
    assert {"session": session_id, "transport": "webrtc"}.items() <= listing["sessions"][0].items()
    outcome = await control(server, {"kind": "ice-blackhole", "target": {"session": session_id}})
    assert outcome["applied_to"] == [session_id]
    seen = len(call.received)
    call.send({"type": "response.create"})  # SCTP takes it; the server never hears it, nothing comes back
    await asyncio.sleep(1.5)
    assert len(call.received) == seen
    assert (
        not server.history.select(kind="event", session=session_id)[-1]["event"]["type"] == "response.create"
    )
    fault = server.history.select(kind="fault")[-1]
    assert (fault["fault"], fault["session"], fault["route"]) == ("ice-blackhole", session_id, "test")
    await call.close()


async def test_websocket_only_faults_refuse_a_webrtc_session(server: RealtimeServer) -> None:
    from rtsim.simulator.protocol import RealtimeError

    call = await open_call(server)
    session_id = (await call.wait_for("session.created"))["session"]["id"]
    with pytest.raises(RealtimeError, match="No live websocket session"):
        await control(server, {"kind": "drop", "target": {"session": session_id}})
    outcome = await control(
        server, {"kind": "benign-error", "target": {"session": session_id}}
    )  # any transport
    assert outcome["applied_to"] == [session_id]
    error = await call.wait_for("error")
    assert error["error"]["code"] == "response_cancel_not_active"
    await call.close()


async def test_cli_dtls_close_hits_every_live_call(server: RealtimeServer) -> None:
    calls = [await open_call(server), await open_call(server)]
    moments = [c.elapsed() for c in calls]
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "rtsim.simulator.cli", "fault", "dtls-close", "--server", server.base_url],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("dtls-close →") == 2
    await asyncio.sleep(0.8)
    for call, moment in zip(calls, moments, strict=True):
        assert call.states("connection")[-1] == "closed"
        assert after(call, moment, "connection", "closed") < 2.0  # type: ignore[operator]
        await call.close()


async def test_setup_faults_arm_the_next_call(server: RealtimeServer) -> None:
    await control(server, {"kind": "ice-fail-setup", "params": {"count": 1}})
    failing = ClientCall(server.base_url, KEY)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(failing.connect(), 3.0)  # answered, but connectivity checks never are
    assert "connected" not in failing.states("connection")
    await failing.close()
    healthy = await open_call(server)  # the rule was for one call only
    assert healthy.states("connection")[-1] == "connected"
    await healthy.close()


async def test_a_server_plan_deals_webrtc_faults(server_factory: Callable[..., Any]) -> None:
    server = await server_factory(pacing=0.0, chaos="datachannel-close:after_event=session.created#1")
    call = ClientCall(server.base_url, KEY)
    await call.connect()
    for _ in range(30):
        if call.states("datachannel")[-1:] == ["closed"]:
            break
        await asyncio.sleep(0.1)
    assert call.states("datachannel")[-1] == "closed"
    assert call.states("connection")[-1] == "connected"  # only the channel went
    fault = server.history.select(kind="fault")[-1]
    assert (fault["fault"], fault["route"]) == ("datachannel-close", "plan:server")
    await call.close()
