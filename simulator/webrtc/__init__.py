"""The WebRTC transport: `POST /v1/realtime/calls`, the `oai-events` data channel, Opus audio tracks, the
sideband WebSocket, and transport faults that cut a call's real network path.

Importing this package registers `install` as a `RealtimeServer` extension; every server built afterwards
serves WebRTC calls. A server then has `server.webrtc` (the `WebRTCEndpoint`: `calls`, `call_for_session`,
`on_new_call` hooks) and `server.calls` (call id → `Call`, whose fault methods are the primitives the fault
control plane drives).
"""

from __future__ import annotations

from ..server import RealtimeServer
from .call import WEBRTC_EVENT_TYPES, Call, Sideband
from .endpoint import WebRTCEndpoint, install
from .net import UdpGate, use_loopback_candidates

# Importing this package is what turns WebRTC on for every server built afterwards.
if install not in RealtimeServer.extensions:
    RealtimeServer.extensions.append(install)

__all__ = [
    "WEBRTC_EVENT_TYPES",
    "Call",
    "Sideband",
    "UdpGate",
    "WebRTCEndpoint",
    "install",
    "use_loopback_candidates",
]
