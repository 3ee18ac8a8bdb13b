"""What server-scoped faults leave behind for the handshake and REST paths to consult."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

DEFAULT_RETRY_AFTER = 1.0  # seconds, when a 429 is not given its own Retry-After


@dataclass
class Rejection:
    """One pending `reject-connects` rule: the next `remaining` handshakes (of `key_id`, or any) refused."""

    remaining: int
    status: int | None = None
    close_code: int | None = None
    reason: str = ""
    retry_after: float | None = None
    key_id: str | None = None


@dataclass
class FaultState:
    """What server-scoped faults leave behind for the handshake and REST paths to consult."""

    rejections: list[Rejection] = field(default_factory=list)
    rate_limited_until: float = 0.0
    rate_limit_retry_after_asked: float | None = None  # None: Retry-After is what is left of the limit
    token_advertised_ttl: float | None = None
    token_usable_for: float | None = None

    def take_rejection(self, key_id: str | None) -> Rejection | None:
        for rule in self.rejections:
            if rule.key_id in (None, key_id):
                rule.remaining -= 1
                if rule.remaining <= 0:
                    self.rejections.remove(rule)
                return rule
        return None

    def rate_limited(self) -> float:
        """Seconds left of an active rate limit (0 when none)."""
        return max(0.0, self.rate_limited_until - time.time())

    def rate_limit_retry_after(self) -> str:
        """The Retry-After of a rate-limited call: as the fault asked, or what is left of the limit."""
        asked = self.rate_limit_retry_after_asked
        return retry_after_header(asked if asked is not None else self.rate_limited())


def retry_after_header(seconds: float) -> str:
    """Retry-After in whole seconds (HTTP's delay-seconds), rounded up."""
    return str(math.ceil(seconds))
