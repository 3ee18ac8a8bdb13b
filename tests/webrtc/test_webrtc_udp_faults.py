"""webrtc-loss and webrtc-latency: impairments of one call's UDP datagrams, seen by the client's own stack.

The client is a plain aiortc peer connection; what it reports (`getStats` packetsLost, the time an event
takes to come back) is its own measurement of the path. Bounds are generous: the figures are random draws.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from rtsim.clients.webrtc_call import ClientCall
from rtsim.simulator.protocol import RealtimeError
from rtsim.simulator.server import RealtimeServer
from tests.support.webrtc import KEY, open_call, reference, remembers_alice, server_call


@pytest.fixture
async def server(server_factory: Callable[..., Any]) -> RealtimeServer:
    return await server_factory(pacing=0.0)


async def inbound_rtp(call: ClientCall) -> Any:
    report = await call.pc.getStats()
    return next(s for s in report.values() if s.type == "inbound-rtp" and s.kind == "audio")


async def event_round_trip(call: ClientCall) -> float:
    """Seconds from sending a client event on the data channel until the server's answer to it arrives."""
    mark = len(call.received)
    started = time.monotonic()
    call.send({"type": "session.update", "session": {"type": "realtime", "instructions": "Be brief."}})
    await call.wait_for("session.updated", since=mark, timeout=10)
    return time.monotonic() - started


def inject(server: RealtimeServer, kind: str, params: dict[str, Any]) -> str:
    assert server.control is not None
    return str(server.control.inject(kind, params, {"key": KEY}, None, route="test")["result"])


async def test_loss_out_shows_as_packets_lost_in_the_clients_stats(server: RealtimeServer) -> None:
    call = await open_call(server)
    await asyncio.sleep(1.0)
    before = await inbound_rtp(call)
    assert before.packetsLost == 0  # a clean loopback path loses nothing
    print(inject(server, "webrtc-loss", {"percent": 30, "direction": "out"}))
    await asyncio.sleep(3.0)
    after = await inbound_rtp(call)
    lost = after.packetsLost - before.packetsLost
    arrived = after.packetsReceived - before.packetsReceived
    share = lost / (lost + arrived)
    # 3 s of 20 ms packets is ~150: 30% loss is 45 ± a wide margin.
    assert 0.12 < share < 0.5, (lost, arrived)
    gate = server_call(server, call).gate
    assert gate.lost["out"] > 0 and gate.lost["in"] == 0
    await call.close()


async def test_loss_in_loses_the_callers_datagrams_and_sctp_still_delivers(server: RealtimeServer) -> None:
    """Client → server only: the server drops what arrives; the data channel's retransmissions get through."""
    client = await reference(server)
    assert client.call is not None
    inject(server, "webrtc-loss", {"percent": 20, "direction": "in"})
    assert "Alice" in await client.ask("My name is Alice.", timeout=20)
    gate = server_call(server, client.call).gate
    assert gate.lost["in"] > 0 and gate.lost["out"] == 0
    await client.close()


async def test_latency_delays_every_datagram_each_way(server: RealtimeServer) -> None:
    call = await open_call(server)
    baseline = await event_round_trip(call)
    assert baseline < 0.2
    print(inject(server, "webrtc-latency", {"ms": 150, "jitter_ms": 20}))
    slowed = await event_round_trip(call)
    # Both ways: at least 2 × (150 - 20) ms more than before; SCTP needs nothing more when nothing is lost.
    assert slowed - baseline > 0.25, (baseline, slowed)
    assert slowed < 2.0
    gate = server_call(server, call).gate
    assert gate.delayed["in"] > 0 and gate.delayed["out"] > 0
    await call.close()


async def test_jitter_spreads_arrivals_without_reordering(server: RealtimeServer) -> None:
    """Each datagram's delay is drawn from ms ± jitter_ms, yet none overtakes the one sent before it."""
    call = await open_call(server)
    gate = server_call(server, call).gate
    loop = asyncio.get_running_loop()
    arrivals: list[tuple[int, float]] = []
    for n in range(50):
        gate._pass("out", lambda n=n: arrivals.append((n, loop.time())))  # type: ignore[misc]
    assert [n for n, _ in arrivals] == list(range(50))  # no impairment: forwarded at once, in order
    arrivals.clear()
    gate.impair("out", delay=0.1, jitter=0.05)
    sent = loop.time()
    for n in range(50):
        gate._pass("out", lambda n=n: arrivals.append((n, loop.time())))  # type: ignore[misc]
    await asyncio.sleep(0.4)
    assert [n for n, _ in arrivals] == list(range(50))
    delays = [at - sent for _, at in arrivals]
    assert min(delays) >= 0.045 and max(delays) < 0.3
    await call.close()


async def test_a_timed_impairment_lifts_by_itself(server: RealtimeServer) -> None:
    call = await open_call(server)
    inject(server, "webrtc-latency", {"ms": 300, "seconds": 0.5})
    assert await event_round_trip(call) > 0.5
    await asyncio.sleep(0.8)
    assert await event_round_trip(call) < 0.2
    gate = server_call(server, call).gate
    assert gate.impairments["in"].delay == 0 and gate.impairments["out"].delay == 0
    await call.close()


async def test_the_reference_client_rides_out_moderate_loss(server: RealtimeServer) -> None:
    """10% loss both ways is a bad network, not a dead one: no reconnect, and the conversation goes on."""
    client = await reference(server)
    inject(server, "webrtc-loss", {"percent": 10})
    assert "Alice" in await client.ask("My name is Alice.", timeout=20)
    await remembers_alice(client)
    assert client.reconnects == 0
    await client.close()


@pytest.mark.parametrize(
    "kind, params",
    [
        ("webrtc-loss", {"percent": 150}),
        ("webrtc-loss", {"percent": 5, "direction": "sideways"}),
        ("webrtc-latency", {"ms": -1}),
        ("webrtc-latency", {"ms": 10, "jitter_ms": 1e9}),
    ],
)
async def test_bad_parameters_are_refused(server: RealtimeServer, kind: str, params: dict[str, Any]) -> None:
    call = await open_call(server)
    with pytest.raises(RealtimeError):
        inject(server, kind, params)
    await call.close()


async def test_only_calls_take_udp_faults(server: RealtimeServer) -> None:
    from rtsim.simulator.faults import CATALOGUE

    assert CATALOGUE["webrtc-loss"].transports == ("webrtc",)
    assert CATALOGUE["webrtc-latency"].transports == ("webrtc",)


async def test_the_end_of_a_call_drops_what_its_delay_lines_hold(server: RealtimeServer) -> None:
    call = await open_call(server)
    gate = server_call(server, call).gate
    inject(server, "webrtc-latency", {"ms": 2000})
    await asyncio.sleep(0.3)  # audio keeps going out: the out line fills
    assert gate._line["out"] and gate._drain["out"] is not None
    await server_call(server, call).close()
    assert not gate._line["out"] and gate._drain["out"] is None
    await call.close()
