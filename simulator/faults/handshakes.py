"""`reject-connects`: the next handshakes refused with an HTTP status, or accepted then closed."""

from __future__ import annotations

from typing import Any

from ..schema import Enum, Int, Num, Obj, Str
from .kind import CLOSE_CODES, MAX_FAULT_SECONDS, MAX_REASON_BYTES, FaultKind, Target
from .state import DEFAULT_RETRY_AFTER, Rejection


def reject_connects(target: Target, params: dict[str, Any]) -> str:
    status, close_code = params.get("status"), params.get("close_code")
    if status is None and close_code is None:
        status = 503
    rule = Rejection(
        remaining=params.get("count", 1),
        status=status,
        close_code=close_code,
        reason=params.get("reason", ""),
        # A 429 always says when to come back.
        retry_after=params.get("retry_after", DEFAULT_RETRY_AFTER if status == 429 else None),
        key_id=target.key_id,
    )
    target.server.state.rejections.append(rule)
    how = f"HTTP {status}" if status is not None else f"accept then close {close_code}"
    return f"next {rule.remaining} handshake(s) answered with {how}"


FAULTS = (
    FaultKind(
        "reject-connects",
        "server",
        Obj(
            {
                "count": Int(1, 100000),
                "status": Enum((401, 403, 429, 500, 502, 503)),
                "close_code": Enum(CLOSE_CODES),
                "reason": Str(max_length=MAX_REASON_BYTES),
                "retry_after": Num(0, MAX_FAULT_SECONDS),
            }
        ),
        reject_connects,
        "the next N handshakes refused with an HTTP status, or accepted then closed with a code",
    ),
)
