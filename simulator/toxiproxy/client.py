"""A small async client for the Toxiproxy HTTP API: the embedded server or a real Toxiproxy.

The URL comes from the argument, else `TOXIPROXY_URL`, else http://127.0.0.1:8474. Bodies are returned
as the server sends them (plain JSON dicts and lists).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from typing import Any, Self
from urllib.parse import quote

import aiohttp

DEFAULT_URL = "http://127.0.0.1:8474"


class ToxiproxyClientError(Exception):
    """The server answered with an error status; `message` is its `error` text when it sent one."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message


def resolve_url(url: str | None = None) -> str:
    return (url or os.environ.get("TOXIPROXY_URL") or DEFAULT_URL).rstrip("/")


class ToxiproxyClient:
    def __init__(self, url: str | None = None, *, session: aiohttp.ClientSession | None = None) -> None:
        self.url = resolve_url(url)
        self._session = session
        self._owns_session = session is None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()
        self._session = None

    async def _request(self, method: str, path: str, body: object = None) -> Any:
        if self._session is None:
            self._session = aiohttp.ClientSession()
            self._owns_session = True
        data = None if body is None else json.dumps(body)
        async with self._session.request(method, self.url + path, data=data) as response:
            text = await response.text()
            if response.status >= 400:
                try:
                    message = json.loads(text).get("error", text)
                except (ValueError, AttributeError):
                    message = text.strip()
                raise ToxiproxyClientError(response.status, message)
            return json.loads(text) if text.strip() else None

    # server
    async def version(self) -> str:
        body = await self._request("GET", "/version")
        return body["version"] if isinstance(body, dict) else str(body)

    async def reset(self) -> None:
        """Enable every proxy and remove every toxic."""
        await self._request("POST", "/reset")

    async def populate(self, proxies: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        body = await self._request("POST", "/populate", list(proxies))
        return body.get("proxies") or []

    # proxies
    async def proxies(self) -> dict[str, dict[str, Any]]:
        return await self._request("GET", "/proxies")

    async def create_proxy(
        self, name: str, upstream: str, *, listen: str = "127.0.0.1:0", enabled: bool = True
    ) -> dict[str, Any]:
        body = {"name": name, "upstream": upstream, "listen": listen, "enabled": enabled}
        return await self._request("POST", "/proxies", body)

    async def get_proxy(self, name: str) -> dict[str, Any]:
        return await self._request("GET", f"/proxies/{quote(name, safe='')}")

    async def update_proxy(
        self,
        name: str,
        *,
        listen: str | None = None,
        upstream: str | None = None,
        enabled: bool | None = None,
    ) -> dict[str, Any]:
        changes = {"listen": listen, "upstream": upstream, "enabled": enabled}
        # POST rather than PATCH: every server version accepts it.
        return await self._request(
            "POST", f"/proxies/{quote(name, safe='')}", {k: v for k, v in changes.items() if v is not None}
        )

    async def delete_proxy(self, name: str) -> None:
        await self._request("DELETE", f"/proxies/{quote(name, safe='')}")

    # toxics
    async def toxics(self, proxy: str) -> list[dict[str, Any]]:
        return await self._request("GET", f"/proxies/{quote(proxy, safe='')}/toxics")

    async def add_toxic(
        self,
        proxy: str,
        type: str,
        *,
        name: str | None = None,
        stream: str = "downstream",
        toxicity: float = 1.0,
        attributes: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": type,
            "stream": stream,
            "toxicity": toxicity,
            "attributes": attributes or {},
        }
        if name:
            body["name"] = name
        return await self._request("POST", f"/proxies/{quote(proxy, safe='')}/toxics", body)

    async def get_toxic(self, proxy: str, toxic: str) -> dict[str, Any]:
        return await self._request("GET", f"/proxies/{quote(proxy, safe='')}/toxics/{quote(toxic, safe='')}")

    async def update_toxic(
        self,
        proxy: str,
        toxic: str,
        *,
        attributes: Mapping[str, Any] | None = None,
        toxicity: float | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {}
        if attributes is not None:
            body["attributes"] = dict(attributes)
        if toxicity is not None:
            body["toxicity"] = toxicity
        return await self._request(
            "POST", f"/proxies/{quote(proxy, safe='')}/toxics/{quote(toxic, safe='')}", body
        )

    async def remove_toxic(self, proxy: str, toxic: str) -> None:
        await self._request("DELETE", f"/proxies/{quote(proxy, safe='')}/toxics/{quote(toxic, safe='')}")
