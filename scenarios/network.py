"""The network between client and simulator, for scenarios: a Toxiproxy proxy with toxics on the timeline.

The proxy is the embedded Toxiproxy-compatible server (simulator/toxiproxy), or a real Toxiproxy when
`TOXIPROXY_URL` is set. Both are driven through the same HTTP API client, so a scenario behaves the same
on either. The client is handed the proxy's address as its base URL: every byte it exchanges with the
simulator — token minting included — crosses the proxy.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit

from rtsim.simulator.toxiproxy import ToxiproxyClient, ToxiproxyServer


class NetworkLink:
    def __init__(self, name: str, *, seed: int = 0) -> None:
        self.name = name
        self.seed = seed
        self.embedded: ToxiproxyServer | None = None
        self.client: ToxiproxyClient | None = None
        self.real = bool(os.environ.get("TOXIPROXY_URL"))

    async def start(self, simulator_base_url: str) -> str:
        """Create the proxy in front of the simulator; returns the base URL the client should use."""
        api_url = os.environ.get("TOXIPROXY_URL")
        if not api_url:
            self.embedded = ToxiproxyServer(seed=self.seed)
            api_url = await self.embedded.start("127.0.0.1", 0)
        self.client = ToxiproxyClient(api_url)
        target = urlsplit(simulator_base_url)
        proxy = await self.client.create_proxy(
            self.name, f"{target.hostname}:{target.port}", listen="127.0.0.1:0"
        )
        # A TCP proxy: TLS passes through it untouched, so the client keeps the simulator's scheme.
        return f"{target.scheme}://{proxy['listen']}{target.path}"

    async def add(
        self,
        toxic_type: str,
        *,
        name: str,
        stream: str = "downstream",
        toxicity: float = 1.0,
        attributes: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        assert self.client is not None
        return await self.client.add_toxic(
            self.name, toxic_type, name=name, stream=stream, toxicity=toxicity, attributes=attributes
        )

    async def remove(self, name: str) -> None:
        assert self.client is not None
        await self.client.remove_toxic(self.name, name)

    async def stop(self) -> None:
        if self.client is not None:
            try:
                await self.client.delete_proxy(self.name)
            finally:
                await self.client.close()
        if self.embedded is not None:
            await self.embedded.stop()
