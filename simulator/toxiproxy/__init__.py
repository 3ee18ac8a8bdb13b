"""An embedded, Toxiproxy-compatible TCP fault proxy (the real one is a Go binary not installable here).

- `ToxiproxyServer`: runs in the current event loop; direct async methods plus the real HTTP API.
- `ThreadedToxiproxyServer`: the same on a background thread, for synchronous callers.
- `ToxiproxyClient`: a small async client for this server or a real Toxiproxy (`TOXIPROXY_URL`).
"""

from .client import ToxiproxyClient, ToxiproxyClientError
from .errors import ApiError
from .proxy import Proxy
from .server import VERSION, PopulateFailed, ThreadedToxiproxyServer, ToxiproxyServer
from .toxics import DOWNSTREAM, TOXIC_TYPES, UPSTREAM, ToxicSpec

__all__ = [
    "DOWNSTREAM",
    "TOXIC_TYPES",
    "UPSTREAM",
    "VERSION",
    "ApiError",
    "PopulateFailed",
    "Proxy",
    "ThreadedToxiproxyServer",
    "ToxicSpec",
    "ToxiproxyClient",
    "ToxiproxyClientError",
    "ToxiproxyServer",
]
