"""WebRTC faults: each cuts one call's real transport (ICE, DTLS, SCTP, the data channel), or sets up how
the next calls are answered. The call does the cutting (see simulator/webrtc/call.py for how)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from ..schema import Enum, Int, Num, Obj
from .kind import MAX_FAULT_SECONDS, WEBRTC, FaultKind, Target

if TYPE_CHECKING:
    from ..webrtc.call import Call


def _call(target: Target) -> Call:
    return cast("Call", target.carrier)  # the kind's transports say it is one


def ice_blackhole(target: Target, params: dict[str, Any]) -> str:
    _call(target).ice_blackhole()
    return "ICE black hole: every datagram of the call dropped both ways; consent checks go unanswered"


def ice_disconnect_recover(target: Target, params: dict[str, Any]) -> str:
    seconds = params.get("seconds", 3.0)
    _call(target).ice_disconnect_recover(seconds)
    return f"transient ICE cut for {seconds:g} s, then the path comes back by itself"


def dtls_close(target: Target, params: dict[str, Any]) -> str:
    call = _call(target)
    call.spawn(call.dtls_close())
    return "DTLS closed (close_notify): the peer connection ends"


def sctp_abort(target: Target, params: dict[str, Any]) -> str:
    call = _call(target)
    call.spawn(call.sctp_abort())
    return "SCTP aborted: the data channel dies, ICE/DTLS/media stay up"


def datachannel_close(target: Target, params: dict[str, Any]) -> str:
    _call(target).datachannel_close()
    return "oai-events data channel closed by the server"


def _for(params: dict[str, Any]) -> str:
    seconds = params.get("seconds")
    return f"for {seconds:g} s" if seconds is not None else "for the rest of the call"


def webrtc_loss(target: Target, params: dict[str, Any]) -> str:
    percent, direction = params.get("percent", 5.0), params.get("direction", "both")
    _call(target).impair(direction, seconds=params.get("seconds"), loss=percent / 100)
    return f"{percent:g}% of the call's datagrams lost ({direction}) {_for(params)}"


def webrtc_latency(target: Target, params: dict[str, Any]) -> str:
    ms, jitter_ms = params.get("ms", 200.0), params.get("jitter_ms", 0.0)
    direction = params.get("direction", "both")
    _call(target).impair(direction, seconds=params.get("seconds"), delay=ms / 1000, jitter=jitter_ms / 1000)
    return f"the call's datagrams delayed {ms:g} ± {jitter_ms:g} ms ({direction}) {_for(params)}"


def ice_fail_setup(target: Target, params: dict[str, Any]) -> str:
    count = params.get("count", 1)
    target.server.on_next_calls(target.key_id, count, lambda call: call.fail_ice_setup())
    return f"the next {count} call(s) get an answer but their connectivity checks are never answered"


def datachannel_delay(target: Target, params: dict[str, Any]) -> str:
    count, seconds = params.get("count", 1), params.get("seconds", 3.0)
    target.server.on_next_calls(target.key_id, count, lambda call: call.datachannel_delay(seconds))
    return f"the next {count} call(s) get their data channel opened {seconds:g} s late"


DIRECTIONS = ("in", "out", "both")
MAX_LATENCY_MS = 60_000.0  # a minute each way: far past any ICE consent timeout, still an ordinary timer

FAULTS = (
    FaultKind(
        "ice-blackhole",
        "session",
        Obj({}),
        ice_blackhole,
        "WebRTC: the server silently stops answering and sending; the client's consent checks fail "
        "(aiortc ~30 s to closed) unless its own watchdog acts",
        WEBRTC,
    ),
    FaultKind(
        "ice-disconnect-recover",
        "session",
        Obj({"seconds": Num(0, MAX_FAULT_SECONDS)}),
        ice_disconnect_recover,
        "WebRTC: a transient cut that heals by itself; clients must not tear down",
        WEBRTC,
    ),
    FaultKind(
        "dtls-close", "session", Obj({}), dtls_close, "WebRTC: DTLS close_notify, an abrupt end", WEBRTC
    ),
    FaultKind(
        "sctp-abort",
        "session",
        Obj({}),
        sctp_abort,
        "WebRTC: SCTP ABORT; the data channel dies while media and ICE stay up",
        WEBRTC,
    ),
    FaultKind(
        "datachannel-close",
        "session",
        Obj({}),
        datachannel_close,
        "WebRTC: the server closes the oai-events channel",
        WEBRTC,
    ),
    FaultKind(
        "webrtc-loss",
        "session",
        Obj({"percent": Num(0, 100), "direction": Enum(DIRECTIONS), "seconds": Num(0, MAX_FAULT_SECONDS)}),
        webrtc_loss,
        "WebRTC: lose `percent` of the call's UDP datagrams (RTP, RTCP, SCTP, STUN), `direction` in "
        "(client→server), out or both (default), for `seconds` or the rest of the call; the peer's getStats "
        "shows it as packetsLost",
        WEBRTC,
    ),
    FaultKind(
        "webrtc-latency",
        "session",
        Obj(
            {
                "ms": Num(0, MAX_LATENCY_MS),
                "jitter_ms": Num(0, MAX_LATENCY_MS),
                "direction": Enum(DIRECTIONS),
                "seconds": Num(0, MAX_FAULT_SECONDS),
            }
        ),
        webrtc_latency,
        "WebRTC: delay the call's UDP datagrams by `ms` ± `jitter_ms` (uniform, no reordering), `direction` "
        "in, out or both (default), for `seconds` or the rest of the call; the peer's getStats shows it as "
        "round-trip time and jitter",
        WEBRTC,
    ),
    FaultKind(
        "ice-fail-setup",
        "server",
        Obj({"count": Int(1, 100000)}),
        ice_fail_setup,
        "WebRTC: the next N calls get an answer whose connectivity checks are never answered",
    ),
    FaultKind(
        "datachannel-delay",
        "server",
        Obj({"count": Int(1, 100000), "seconds": Num(0, MAX_FAULT_SECONDS)}),
        datachannel_delay,
        "WebRTC: the next N calls' data channel opens late (send-before-open breaks)",
    ),
)
