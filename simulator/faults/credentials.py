"""Faults of credentials and quotas: tokens that expire (now, or earlier than they say), a rate limit."""

from __future__ import annotations

import time
from typing import Any

from ..protocol import RealtimeError
from ..schema import Num, Obj, Str
from .kind import MAX_FAULT_SECONDS, FaultKind, Target


def expire_tokens(target: Target, params: dict[str, Any]) -> str:
    state, key_id = target.server.state, target.key_id
    if "usable_for" in params:
        state.token_usable_for = params["usable_for"]
        state.token_advertised_ttl = params.get("advertise", 7200)
        return (
            f"tokens minted from now on say {state.token_advertised_ttl:g} s but stop working "
            f"after {params['usable_for']:g} s"
        )
    if "token_id" in params:
        target.server.tokens.revoke_token(params["token_id"])
        return f"token {params['token_id']} expired"
    if key_id is None:
        raise RealtimeError(
            "expire-tokens needs a key (target.key or target.key_id), a token_id, or usable_for",
            code="missing_required_parameter",
            param="target",
        )
    target.server.tokens.revoke_key(key_id)
    return f"every token minted for {key_id} expired"


def rate_limit(target: Target, params: dict[str, Any]) -> str:
    seconds = params.get("seconds", 30)
    state = target.server.state
    state.rate_limited_until = time.time() + seconds
    state.rate_limit_retry_after_asked = params.get("retry_after")
    for carrier in target.server.live_carriers(target.key_id):
        carrier.session.emit(
            {
                "type": "rate_limits.updated",
                "rate_limits": [
                    {"name": "tokens", "limit": 40000, "remaining": 0, "reset_seconds": float(seconds)},
                ],
            }
        )
        carrier.pump()
    return f"rate limited for {seconds:g} s (token minting answers 429)"


FAULTS = (
    FaultKind(
        "expire-tokens",
        "server",
        Obj(
            {
                "token_id": Str(),
                "usable_for": Num(0, MAX_FAULT_SECONDS),
                "advertise": Num(0, MAX_FAULT_SECONDS),
            }
        ),
        expire_tokens,
        "every token of a key (or one token) expires now; or usable_for: tokens stop working early",
    ),
    FaultKind(
        "rate-limit",
        "server",
        Obj({"seconds": Num(0, MAX_FAULT_SECONDS), "retry_after": Num(0, MAX_FAULT_SECONDS)}),
        rate_limit,
        "rate_limits.updated to zero on live sessions; token minting answers 429 with Retry-After",
    ),
)
