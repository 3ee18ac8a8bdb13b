"""WebRTC helpers: open a client call, find its server side, time its states."""

from __future__ import annotations

from typing import Any

from rtsim.clients.reference_webrtc import ReferenceWebRTCClient, Settings
from rtsim.clients.webrtc_call import ClientCall
from rtsim.simulator.server import RealtimeServer
from rtsim.simulator.webrtc.call import Call

KEY = "sk-test-key"


def server_call(server: RealtimeServer, call: ClientCall) -> Call:
    assert call.call_id is not None
    return server.calls[call.call_id]


async def open_call(server: RealtimeServer) -> ClientCall:
    call = ClientCall(server.base_url, KEY)
    await call.connect()
    await call.wait_for("session.created")
    return call


async def reference(server: RealtimeServer, **settings: Any) -> ReferenceWebRTCClient:
    client = ReferenceWebRTCClient(server.base_url, KEY, settings=Settings(**settings))
    await client.start()
    return client


async def remembers_alice(client: ReferenceWebRTCClient) -> None:
    """The conversation outlived the fault: the fact said before it is recalled on the new call."""
    assert "Alice" in await client.ask("What is my name?")


def after(call: ClientCall, moment: float, what: str, state: str) -> float | None:
    """Seconds from `moment` (a call-relative time) until `what` entered `state`, if it did."""
    when = call.when(what, state)
    return None if when is None else when - moment


# ---- dtls-close, sctp-abort, datachannel-close: abrupt ends ------------------------------------------------
