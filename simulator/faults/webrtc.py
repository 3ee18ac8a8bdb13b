"""WebRTC faults: each cuts one call's real transport (ICE, DTLS, SCTP, the data channel), or sets up how
the next calls are answered. The call does the cutting (see simulator/webrtc/call.py for how)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from ..schema import Int, Num, Obj
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


def ice_fail_setup(target: Target, params: dict[str, Any]) -> str:
    count = params.get("count", 1)
    target.server.on_next_calls(target.key_id, count, lambda call: call.fail_ice_setup())
    return f"the next {count} call(s) get an answer but their connectivity checks are never answered"


def datachannel_delay(target: Target, params: dict[str, Any]) -> str:
    count, seconds = params.get("count", 1), params.get("seconds", 3.0)
    target.server.on_next_calls(target.key_id, count, lambda call: call.datachannel_delay(seconds))
    return f"the next {count} call(s) get their data channel opened {seconds:g} s late"


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
