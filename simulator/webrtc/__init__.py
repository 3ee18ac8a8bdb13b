"""The WebRTC transport: `POST /v1/realtime/calls`, the `oai-events` data channel, Opus audio tracks, the
sideband WebSocket, and transport faults that cut a call's real network path.

The server routes calls here on first use (`RealtimeServer.webrtc`, the `WebRTCEndpoint`: creation,
hangup, the sideband, `on_new_call` hooks); each `Call` is a carrier in `RealtimeServer.carriers`, and
`RealtimeServer.calls` finds them by call id. This package imports no server: the reference WebRTC client
uses its media and network modules on their own.
"""
