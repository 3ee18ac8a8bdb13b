"""rtsim: a protocol simulator and chaos test harness for realtime voice APIs.

The installed distribution keeps everything under this one namespace: `rtsim.simulator` (the fake server),
`rtsim.clients` (reference and naive clients), `rtsim.scenarios` (scenario files, runner, checkers).

The Python API for a user's own tests — `rtsim.Simulator` (async) and `rtsim.SyncSimulator` — is loaded on
first use: `import rtsim` alone (which every `rtsim.clients` module does first) must not load the server.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .simulator.api import HistoryQuery, Simulator, SyncSimulator
    from .simulator.protocol import RealtimeError
    from .simulator.server import ServerConfig

# Public name → the module that defines it, imported when the name is first used.
_LAZY = {
    "Simulator": "rtsim.simulator.api",
    "SyncSimulator": "rtsim.simulator.api",
    "HistoryQuery": "rtsim.simulator.api",
    "ServerConfig": "rtsim.simulator.server",
    "RealtimeError": "rtsim.simulator.protocol",
}

__all__ = ["HistoryQuery", "RealtimeError", "ServerConfig", "Simulator", "SyncSimulator", "__version__"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'rtsim' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
