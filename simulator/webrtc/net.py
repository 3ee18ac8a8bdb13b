"""The network underneath a call: loopback host candidates (per peer connection), and the per-call UDP gate
behind the ICE faults and the UDP impairments (loss, latency, jitter).

aiortc sends everything (STUN checks and consent, DTLS, SRTP, SCTP) through aioice, and aioice owns one UDP
socket per local candidate: a `StunProtocol` whose `datagram_received` takes what arrives and whose
`transport.sendto` puts datagrams on the wire. `UdpGate` wraps exactly those two points for the sockets of ONE
call, so shutting it is a real network cut for that call only: the peer's connectivity and consent checks go
unanswered, its media and data stop, and every state it reports is its own stack's reaction. The same two
points lose or delay datagrams (`impair`): what a lossy or slow path does to every packet of the call — STUN,
DTLS, SRTP/SRTCP and SCTP alike — so a client's stats-based health monitor (`getStats`: packetsLost, jitter,
round-trip time) sees real figures. Toxiproxy covers TCP only; this is the UDP path's own.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, cast

import aioice.ice
from aioice import Connection

if TYPE_CHECKING:
    from aiortc import RTCPeerConnection
    from aiortc.rtcicetransport import RTCIceTransport


def gather_on_loopback(connection: Connection) -> None:
    """Gather this one aioice connection's host candidates on loopback only (call it before gathering).

    aioice deliberately skips loopback and offers every other interface; a simulator on 127.0.0.1 must stay
    on loopback instead. Per connection — its `get_component_candidates` is handed the loopback address in
    place of the interfaces — so no other peer connection in the process is affected.
    """
    gather = connection.get_component_candidates
    loopback = ["127.0.0.1"] if connection._use_ipv4 else ["::1"]

    async def loopback_candidates(component: int, addresses: list[str], timeout: int = 5) -> list[Any]:
        return await gather(component, loopback if addresses else addresses, timeout)

    connection.get_component_candidates = loopback_candidates  # type: ignore[method-assign]


def peer_on_loopback(pc: RTCPeerConnection) -> None:
    """`gather_on_loopback` for every ICE transport the peer connection has (call it before gathering:
    after the offer is applied on the answering side, before `setLocalDescription` on the offering side)."""
    for transport in ice_transports(pc):
        gather_on_loopback(transport._connection)


def ice_transports(pc: RTCPeerConnection) -> set[RTCIceTransport]:
    """The peer connection's ICE transports (one once bundled on the first m-line)."""
    transports = {t.receiver.transport.transport for t in pc.getTransceivers()}
    if pc.sctp is not None:
        transports.add(pc.sctp.transport.transport)
    return transports


def is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


Way = Literal["in", "out"]  # in: client → server (what the server receives); out: server → client
Direction = Literal["in", "out", "both"]
WAYS: tuple[Way, ...] = ("in", "out")


def ways(direction: Direction) -> tuple[Way, ...]:
    return WAYS if direction == "both" else (direction,)


@dataclass
class Impairment:
    """What the path does to one direction's datagrams: a loss probability, a delay and its jitter."""

    loss: float = 0.0  # 0..1
    delay: float = 0.0  # seconds
    jitter: float = 0.0  # seconds: each datagram's delay is drawn uniformly from delay ± jitter


class UdpGate:
    """Stands between one call's ICE sockets and the network; while shut, datagrams are dropped both ways.

    Dropping (not rejecting) is the point: a black-holed peer sends no ICMP, no close, nothing — just what a
    dead NAT binding or a vanished server looks like to the other side. Open, it may still impair each way:
    lose a datagram with the set probability, or hold it for its delay (a delay line: a datagram never
    overtakes the one before it, as on one path without reordering, so jitter shows as uneven arrival).
    """

    def __init__(self, rng: random.Random | None = None) -> None:
        self.open = True
        self.dropped_in = 0
        self.dropped_out = 0
        self.lost: dict[Way, int] = {"in": 0, "out": 0}  # lost by the impairment (not by a shut gate)
        self.delayed: dict[Way, int] = {"in": 0, "out": 0}
        self.impairments: dict[Way, Impairment] = {"in": Impairment(), "out": Impairment()}
        self._rng = rng or random.Random(0)
        # The delay line of each way: (due, forward) in sending order, drained by one timer at a time.
        self._line: dict[Way, deque[tuple[float, Callable[[], None]]]] = {"in": deque(), "out": deque()}
        self._drain: dict[Way, asyncio.TimerHandle | None] = {"in": None, "out": None}
        self._attached: set[int] = set()
        self._reopen: asyncio.TimerHandle | None = None

    def impair(
        self,
        direction: Direction,
        *,
        loss: float | None = None,
        delay: float | None = None,
        jitter: float | None = None,
    ) -> None:
        """Set (or with 0, lift) loss and/or latency on one direction or both; unnamed settings stay."""
        for way in ways(direction):
            current = self.impairments[way]
            self.impairments[way] = Impairment(
                loss=current.loss if loss is None else loss,
                delay=current.delay if delay is None else delay,
                jitter=current.jitter if jitter is None else jitter,
            )

    def _pass(self, way: Way, forward: Callable[[], None]) -> None:
        """One datagram through the open gate: lost, forwarded now, or forwarded after its delay."""
        impairment = self.impairments[way]
        if impairment.loss > 0 and self._rng.random() < impairment.loss:
            self.lost[way] += 1
            return
        if impairment.delay <= 0 and impairment.jitter <= 0:
            forward()
            return
        loop = asyncio.get_running_loop()
        spread = self._rng.uniform(-impairment.jitter, impairment.jitter) if impairment.jitter else 0.0
        line = self._line[way]
        due = loop.time() + max(0.0, impairment.delay + spread)
        if line:
            due = max(due, line[-1][0])  # never before the datagram sent ahead of it
        line.append((due, forward))
        self.delayed[way] += 1
        if self._drain[way] is None:
            self._drain[way] = loop.call_at(due, self._forward_due, way)

    def _forward_due(self, way: Way) -> None:
        loop = asyncio.get_running_loop()
        line = self._line[way]
        now = loop.time()
        while line and line[0][0] <= now:
            line.popleft()[1]()
        self._drain[way] = loop.call_at(line[0][0], self._forward_due, way) if line else None

    def attach(self, connection: Connection) -> None:
        """Wrap every socket the aioice connection gathered (after gathering, before the peer's checks)."""
        for protocol in connection._protocols:
            if id(protocol) not in self._attached:
                self._attached.add(id(protocol))
                self._wrap(protocol)

    def _wrap(self, protocol: aioice.ice.StunProtocol) -> None:
        deliver = protocol.datagram_received

        def datagram_received(data: bytes | str, addr: tuple[Any, ...]) -> None:
            if self.open:
                self._pass("in", lambda: deliver(data, addr))
            else:
                self.dropped_in += 1

        # asyncio calls the protocol's bound attribute, so an instance attribute intercepts arrivals.
        protocol.datagram_received = datagram_received  # type: ignore[method-assign]
        protocol.transport = cast(asyncio.DatagramTransport, _GatedTransport(protocol.transport, self))

    def close(self) -> None:
        """The call is over: drop what the delay lines still hold, and their timers; what the closing call
        still sends (its DTLS and SCTP goodbyes) goes out unimpaired."""
        for way in WAYS:
            self.impairments[way] = Impairment()
            handle = self._drain[way]
            if handle is not None:
                handle.cancel()
            self._drain[way] = None
            self._line[way].clear()
        self._cancel_reopen()

    def shut(self) -> None:
        self._cancel_reopen()
        self.open = False

    def reopen(self) -> None:
        self._cancel_reopen()
        self.open = True

    def shut_for(self, seconds: float) -> None:
        """A transient cut: shut now, open again by itself after `seconds`."""
        self.shut()
        self._reopen = asyncio.get_running_loop().call_later(seconds, self.reopen)

    def _cancel_reopen(self) -> None:
        if self._reopen is not None:
            self._reopen.cancel()
            self._reopen = None


class _GatedTransport:
    """A datagram transport whose `sendto` obeys the gate; everything else is the real transport's."""

    def __init__(self, inner: asyncio.DatagramTransport, gate: UdpGate) -> None:
        self._inner = inner
        self._gate = gate

    def sendto(self, data: bytes, addr: Any = None) -> None:
        if self._gate.open:
            self._gate._pass("out", lambda: self._send_now(data, addr))
        else:
            self._gate.dropped_out += 1

    def _send_now(self, data: bytes, addr: Any) -> None:
        if not self._inner.is_closing():  # a delayed datagram may outlive its socket
            self._inner.sendto(data, addr)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)
