"""Ephemeral tokens (`ek_...`) that verify themselves: an HMAC over their claims with the server secret.

Several simulator processes that share `RTSIM_SECRET` accept each other's tokens with no shared store.
A token carries who minted it (the key's id), when it expires, an optional earlier moment at which it
*really* stops working (real tokens have been seen to stop working well before the `expires_at` they
advertise), and the session config it was minted with.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time
import zlib
from dataclasses import dataclass, field
from typing import Any

TOKEN_PREFIX = "ek_"


def key_id(credential: str) -> str:
    """A stable, non-secret identity for an API key (what the history records instead of the key)."""
    return "key_" + hashlib.sha256(credential.encode()).hexdigest()[:12]


def server_secret() -> bytes:
    configured = os.environ.get("RTSIM_SECRET")
    return configured.encode() if configured else secrets.token_bytes(32)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class Token:
    token_id: str
    key_id: str
    issued_at: float
    expires_at: int
    usable_until: float  # when it actually stops working; normally expires_at
    session: dict[str, Any] = field(default_factory=dict)


class TokenError(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TokenAuthority:
    """Mints and verifies tokens; also holds revocations (the `expire-tokens` fault) for this process."""

    def __init__(self, secret: bytes | None = None) -> None:
        self.secret = secret if secret is not None else server_secret()
        self.revoked_tokens: set[str] = set()
        self.revoked_keys: dict[str, float] = {}  # key id -> tokens issued before this time are dead

    def mint(
        self,
        *,
        key: str,
        ttl: float,
        session: dict[str, Any] | None = None,
        usable_for: float | None = None,
        now: float | None = None,
    ) -> tuple[str, Token]:
        now = time.time() if now is None else now
        token = Token(
            token_id=secrets.token_hex(6),
            key_id=key_id(key),
            issued_at=now,
            expires_at=int(now + ttl),
            usable_until=now + (usable_for if usable_for is not None else ttl),
            session=session or {},
        )
        claims = {
            "i": token.token_id,
            "k": token.key_id,
            "t": round(token.issued_at, 3),
            "e": token.expires_at,
            "u": round(token.usable_until, 3),
            "s": token.session,
        }
        payload = _b64(zlib.compress(json.dumps(claims, separators=(",", ":")).encode()))
        return f"{TOKEN_PREFIX}{payload}.{self._sign(payload)}", token

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self.secret, payload.encode(), hashlib.sha256).digest()[:18])

    def verify(self, value: str, *, now: float | None = None) -> Token:
        """The token's claims, or TokenError('invalid' | 'expired' | 'revoked')."""
        now = time.time() if now is None else now
        if not value.startswith(TOKEN_PREFIX) or "." not in value:
            raise TokenError("invalid")
        payload, _, signature = value[len(TOKEN_PREFIX) :].rpartition(".")
        # compare_digest takes ASCII str only; a signature with any other character is simply wrong
        if not signature.isascii() or not hmac.compare_digest(signature, self._sign(payload)):
            raise TokenError("invalid")
        try:
            claims = json.loads(zlib.decompress(_unb64(payload)))
            token = Token(
                token_id=claims["i"],
                key_id=claims["k"],
                issued_at=claims["t"],
                expires_at=claims["e"],
                usable_until=claims["u"],
                session=claims.get("s") or {},
            )
        except (ValueError, KeyError, TypeError, zlib.error):
            raise TokenError("invalid") from None
        if token.token_id in self.revoked_tokens or token.issued_at < self.revoked_keys.get(token.key_id, -1):
            raise TokenError("revoked")
        if now >= min(token.expires_at, token.usable_until):
            raise TokenError("expired")
        return token

    def revoke_token(self, token_id: str) -> None:
        self.revoked_tokens.add(token_id)

    def revoke_key(self, key_id_: str, now: float | None = None) -> None:
        self.revoked_keys[key_id_] = time.time() if now is None else now
