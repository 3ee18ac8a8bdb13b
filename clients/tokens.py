"""Ephemeral tokens: the API key only mints (`POST /realtime/client_secrets`); the WebSocket carries an `ek_`.

A token is reused for new sessions until its `refresh_at`, then a fresh one is minted instead of presenting
one that may have expired; after an HTTP 401 at the handshake the caller asks for a fresh one at once.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import aiohttp

from rtsim.clients.common import ClientEnv, JsonLog
from rtsim.clients.reconnect import Fatal, Retry, error_message, parse_retry_after


@dataclass(frozen=True)
class Token:
    value: str
    expires_at: float  # epoch seconds, as the server says
    refresh_at: float  # epoch seconds from which the client mints a new one instead


class TokenSource:
    """Ephemeral client secrets, minted with the API key; the key itself never goes on the WebSocket.

    `refresh_at` is a fifth of the token's lifetime before `expires_at`, and at most `max_age` after minting,
    because `expires_at` has been seen to promise more than it holds.
    """

    def __init__(
        self, http: aiohttp.ClientSession, env: ClientEnv, log: JsonLog, *, timeout: float, max_age: float
    ) -> None:
        self.http, self.env, self.log = http, env, log
        self.timeout, self.max_age = timeout, max_age
        self.token: Token | None = None

    async def get(self, *, fresh: bool = False) -> str:
        if fresh or self.token is None or time.time() >= self.token.refresh_at:
            self.token = await self._mint()
        return self.token.value

    def discard(self) -> None:
        self.token = None

    async def _mint(self) -> Token:
        scenario = self.env.scenario
        body = {"session": {**scenario.session_config(), "model": scenario.model}}
        try:
            async with self.http.post(
                f"{self.env.base_url}/realtime/client_secrets",
                json=body,
                headers={"Authorization": f"Bearer {self.env.api_key}"},
                timeout=aiohttp.ClientTimeout(total=self.timeout),
            ) as response:
                status, text = response.status, await response.text()
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise Retry(f"minting a token failed: {exc!r}") from None
        if status == 429:
            self.log("token_refused", status=status, retry_after=retry_after)
            raise Retry(
                "HTTP 429 minting a token", retry_after=retry_after if retry_after is not None else 1.0
            )
        if status >= 500:
            raise Retry(f"HTTP {status} minting a token")
        if (
            status != 200
        ):  # 401/403: the key is refused; 400: our request is wrong. Neither heals by retrying.
            raise Fatal(f"HTTP {status} minting a token: {error_message(text)}")
        try:
            data = json.loads(text)
            value, expires_at = str(data["value"]), float(data["expires_at"])
        except (ValueError, KeyError, TypeError):
            raise Retry("the client_secrets answer is not a token") from None
        now = time.time()
        lifetime = max(0.0, expires_at - now)
        refresh_at = min(expires_at - max(1.0, 0.2 * lifetime), now + self.max_age)
        self.log("token_minted", expires_in=round(lifetime, 1), refresh_in=round(refresh_at - now, 1))
        return Token(value, expires_at, refresh_at)
