"""rtsim: a protocol simulator and chaos test harness for realtime voice APIs.

The installed distribution keeps everything under this one namespace: `rtsim.simulator` (the fake server),
`rtsim.clients` (reference and naive clients), `rtsim.scenarios` (scenario files, runner, checkers).
"""

from __future__ import annotations

__version__ = "0.1.0"
