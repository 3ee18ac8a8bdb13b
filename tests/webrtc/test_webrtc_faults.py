"""ICE and transport faults seen from the client: what aiortc reports, and what the reference client does.

Each fault cuts the real transport of one call on the server (see `simulator.webrtc.call.Call`); the client
side is a plain aiortc peer connection whose own states and timings are asserted, with generous bounds. The
reference client is shown to ride out each fault (reconnecting with its context, or not tearing down a call
that recovers); the naive client is shown to sit through the ~30 s consent timeout.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
from aiortc.exceptions import InvalidStateError

from rtsim.clients.naive_webrtc import NaiveWebRTCClient
from rtsim.clients.webrtc_call import ClientCall
from rtsim.simulator.server import RealtimeServer
from rtsim.simulator.webrtc.call import Call
from tests.support.webrtc import KEY, after, open_call, reference, remembers_alice, server_call


@pytest.fixture
async def server(server_factory: Callable[..., Any]) -> RealtimeServer:
    return await server_factory(pacing=0.0)




async def test_dtls_close_is_an_immediate_closed_connection(server: RealtimeServer) -> None:
    call = await open_call(server)
    moment = call.elapsed()
    await server_call(server, call).dtls_close()
    await asyncio.sleep(0.5)
    assert call.states("connection")[-1] == "closed"
    assert "failed" not in call.states("connection")
    assert after(call, moment, "connection", "closed") < 0.5  # type: ignore[operator]
    assert after(call, moment, "datachannel", "closed") < 0.5  # type: ignore[operator]
    close = server.history.select(kind="close")[-1]
    assert (close["by"], close["reason"]) == ("server", "dtls_close")
    await call.close()


async def test_sctp_abort_kills_the_channel_but_not_the_connection(server: RealtimeServer) -> None:
    call = await open_call(server)
    moment = call.elapsed()
    await server_call(server, call).sctp_abort()
    await asyncio.sleep(0.5)
    assert after(call, moment, "datachannel", "closed") < 0.5  # type: ignore[operator]
    # ICE and DTLS are untouched: aiortc still says connected, and the audio track still flows.
    assert call.pc.connectionState == "connected" and call.pc.iceConnectionState == "completed"
    assert time.monotonic() - call.last_inbound < 0.2
    with pytest.raises(InvalidStateError):
        call.send({"type": "response.create"})
    await call.close()


async def test_datachannel_close_is_a_stream_reset(server: RealtimeServer) -> None:
    call = await open_call(server)
    moment = call.elapsed()
    server_call(server, call).datachannel_close()
    await asyncio.sleep(0.5)
    assert call.states("datachannel") == ["open", "closed"]
    assert after(call, moment, "datachannel", "closed") < 0.5  # type: ignore[operator]
    assert call.pc.connectionState == "connected"
    await call.close()


@pytest.mark.parametrize("fault", ["dtls_close", "sctp_abort", "datachannel_close"])
async def test_reference_client_reconnects_with_its_context_after(server: RealtimeServer, fault: str) -> None:
    client = await reference(server)
    assert "Alice" in await client.ask("My name is Alice.")
    first = client.call
    assert first is not None
    cut = client.elapsed()
    action = getattr(server_call(server, first), fault)()
    if asyncio.iscoroutine(action):
        await action
    await remembers_alice(client)
    reconnect = next(t for t in client.transitions if t.state == "reconnecting")
    assert reconnect.at - cut < 1.0  # said dead by the stack: no grace period
    assert client.reconnects == 1 and client.call is not first and len(server.calls) == 1
    await client.close()


# ---- datachannel-delay ------------------------------------------------------------------------------------


async def test_datachannel_delay_breaks_clients_that_send_before_open(server: RealtimeServer) -> None:
    server.webrtc.on_new_call.append(lambda c: c.datachannel_delay(1.5))
    eager = ClientCall(server.base_url, KEY)
    await eager.connect(wait_open=False)
    connected = asyncio.Event()
    eager.pc.on("connectionstatechange", lambda: eager.pc.connectionState == "connected" and connected.set())
    if eager.pc.connectionState == "connected":
        connected.set()
    await asyncio.wait_for(connected.wait(), 5)
    # Connected, but the channel is still connecting: sending is refused, as a browser refuses it.
    assert eager.channel.readyState == "connecting"
    with pytest.raises(InvalidStateError):
        eager.send({"type": "response.create"})
    await asyncio.wait_for(eager.opened.wait(), 4)
    opened = eager.when("datachannel", "open")
    connected = eager.when("connection", "connected")
    assert opened is not None and connected is not None and 1.3 <= opened - connected <= 2.5
    assert (await eager.wait_for("session.created"))["type"] == "session.created"

    patient = await reference(server)  # waits for open, then works
    assert patient.calls[0].when("datachannel", "open") >= 1.4  # type: ignore[operator]
    assert "Alice" in await patient.ask("My name is Alice.")
    assert patient.reconnects == 0
    await asyncio.gather(eager.close(), patient.close())


# ---- ice-disconnect-recover --------------------------------------------------------------------------------


async def test_transient_disconnect_recovers_without_teardown(server: RealtimeServer) -> None:
    client = await reference(server)
    plain = await open_call(server)
    assert "Alice" in await client.ask("My name is Alice.")
    assert client.call is not None
    cut = time.monotonic()
    server_call(server, client.call).ice_disconnect_recover(1.5)
    server_call(server, plain).ice_disconnect_recover(1.5)
    await asyncio.sleep(0.4)
    mark = len(plain.received)
    plain.send(
        {
            "type": "conversation.item.create",
            "item": {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "Still there?"}],
            },
        }
    )
    await asyncio.sleep(3.0)
    # aiortc reports nothing at all: ICE stays completed; the only sign is the gap in what arrives.
    assert plain.states("ice") == ["checking", "completed"] and plain.states("connection")[-1] == "connected"
    added = await plain.wait_for("conversation.item.added", since=mark, timeout=5)
    assert added["item"]["content"][0]["text"] == "Still there?"  # SCTP delivered it once the path came back
    # The reference client saw the silence, waited, and kept its call.
    states = [t.state for t in client.transitions]
    assert states[-2:] == ["degraded", "live"] and "reconnecting" not in states
    degraded = next(t for t in client.transitions if t.state == "degraded")
    assert 0.3 <= degraded.at - (cut - client._started) <= 1.2
    assert client.reconnects == 0 and len(client.calls) == 1
    await remembers_alice(client)
    await asyncio.gather(client.close(), plain.close())


# ---- ice-fail-setup ------------------------------------------------------------------------------------


async def test_ice_fail_setup_leaves_the_client_checking(server: RealtimeServer) -> None:
    first_call_only = []

    def fail_first(call: Call) -> None:
        if not first_call_only:
            first_call_only.append(call.id)
            call.fail_ice_setup()

    server.webrtc.on_new_call.append(fail_first)
    stuck = ClientCall(server.base_url, KEY)
    await stuck.connect(wait_open=False)  # 201 and an answer, then silence
    await asyncio.sleep(2.5)
    # aioice retransmits its checks for ~64 s before giving up; until then ICE is just 'checking'.
    assert stuck.states("ice") == ["checking"] and stuck.states("connection") == ["connecting"]
    assert not stuck.opened.is_set() and not stuck.received
    client = await reference(server, setup_timeout=1.5)  # its first call is not the failing one
    assert client.reconnects == 0
    await stuck.close()
    await client.close()


async def test_reference_client_abandons_a_call_that_never_opens(server: RealtimeServer) -> None:
    failing = []

    def fail_first(call: Call) -> None:
        if not failing:
            failing.append(call)
            call.fail_ice_setup()

    server.webrtc.on_new_call.append(fail_first)
    started = time.monotonic()
    client = await reference(server, setup_timeout=1.5)
    took = time.monotonic() - started
    assert 1.5 <= took <= 4.0
    abandoned = client.calls[0].states("ice")
    assert len(client.calls) == 2 and abandoned[0] == "checking" and "completed" not in abandoned
    assert client.calls[1].opened.is_set()
    assert "Alice" in await client.ask("My name is Alice.")
    await client.close()


# ---- ice-blackhole -----------------------------------------------------------------------------------------


async def test_blackhole_reference_client_acts_within_three_seconds(server: RealtimeServer) -> None:
    client = await reference(server)
    assert "Alice" in await client.ask("My name is Alice.")
    first = client.call
    assert first is not None
    cut = client.elapsed()
    server_call(server, first).ice_blackhole()
    await remembers_alice(client)
    states = {t.state: t.at - cut for t in client.transitions if t.at >= cut}
    assert 0.3 <= states["degraded"] <= 1.2
    assert 2.0 <= states["reconnecting"] <= 3.5  # the watchdog: silence_after + grace
    # The stack itself had said nothing: the old call was still 'connected' when the client left it.
    assert first.states("connection")[:2] == ["connecting", "connected"]
    assert "failed" not in first.states("connection")
    await client.close()


@pytest.mark.slow
async def test_blackhole_without_a_watchdog_takes_the_consent_timeout(server: RealtimeServer) -> None:
    naive = NaiveWebRTCClient(server.base_url, KEY)
    await naive.start()
    careful = await reference(server)
    assert "Alice" in await naive.ask("My name is Alice.")
    assert "Alice" in await careful.ask("My name is Alice.")
    assert naive.call is not None and careful.call is not None
    blackholed = naive.call
    cut = naive.elapsed()
    server_call(server, naive.call).ice_blackhole()
    server_call(server, careful.call).ice_blackhole()
    await remembers_alice(careful)  # ~3 s
    assert careful.elapsed() - careful.transitions[-1].at < 10
    moment = blackholed.elapsed()
    for _ in range(200):  # up to 50 s
        if naive.noticed:
            break
        await asyncio.sleep(0.25)
    assert naive.noticed, "aiortc never reported the dead path"
    noticed_at, what = naive.noticed[0]
    # Six consent checks ~5 s apart (x0.8-1.2) must fail: ~24-36 s, then aiortc closes everything.
    assert 20 <= noticed_at - cut <= 45, naive.noticed
    assert what == "connection closed"
    assert blackholed.states("ice")[-1] == "closed" and blackholed.states("connection")[-1] == "closed"
    assert after(blackholed, moment, "connection", "closed") >= 19  # type: ignore[operator]
    # It reconnected to a session that never heard of Alice.
    if naive._reconnecting is not None:
        await asyncio.wait_for(naive._reconnecting, 10)
    assert naive.call is not blackholed
    assert "don't know your name" in await naive.ask("What is my name?")
    assert careful.reconnects == 1
    await asyncio.gather(naive.close(), careful.close())


# ---- rotation, as a scenario client -----------------------------------------------------------------------


async def test_scenario_client_rotates_before_the_cap_and_keeps_the_context(
    server_factory: Callable[..., Any], tmp_path: Any
) -> None:
    import io
    import json

    from rtsim.clients.reference_webrtc import main

    server = await server_factory(pacing=0.0, max_session=4.0)
    scenario = tmp_path / "scenario.json"
    scenario.write_text(
        json.dumps(
            {
                "name": "rotation",
                "model": "gpt-realtime",
                "end_at": 6.0,
                "turns": [{"at": 0.2, "say": "My name is Alice."}, {"at": 5.0, "say": "What is my name?"}],
            }
        )
    )
    out = io.StringIO()
    env = {"OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": KEY, "RTSIM_SCENARIO": str(scenario)}
    assert await main(env, out=out) == 0
    log = [json.loads(line) for line in out.getvalue().splitlines()]
    replies = [entry["text"] for entry in log if entry["event"] == "reply"]
    assert replies[0] == "You said: My name is Alice." and "Alice" in replies[1]
    rotations = [e for e in log if e["event"] == "state" and e["to"] == "rotating"]
    assert rotations and all(e["reason"] == "session cap ahead" for e in rotations)
    history = server.history
    sessions = history.select(kind="session")
    assert len(sessions) == 1 + len(rotations) and all(s["transport"] == "webrtc" for s in sessions)
    expired = [
        e
        for e in history.select(kind="event")
        if e["event"].get("error", {}).get("code") == "session_expired"
    ]
    assert not expired  # the user never met the cap
    first_close = history.select(kind="close", session=sessions[0]["session"])[0]
    assert first_close["by"] == "client" and first_close["t"] < sessions[0]["t"] + 4.0
