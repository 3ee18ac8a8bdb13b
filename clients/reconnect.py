"""When to reconnect and how long to wait: every failure sorted into Retry or Fatal, and a capped backoff.

- `Fatal`: an outcome no retry can cure (refused credentials, a policy close, retries exhausted).
- `Retry`: worth another attempt, after the backoff delay or the server's Retry-After if that is longer.
- `Backoff`: capped exponential, optionally with full jitter.
- `ReconnectBudget`: counts consecutive failures and resets the backoff only after a session that proved
  healthy, so an accept-then-close server is not hammered.
"""

from __future__ import annotations

import email.utils
import json
import random
import time

# Close codes that mean "you may not": reconnecting would only repeat the refusal.
# 3000: no or an unknown credential; 4000: a request the GA service will not serve (the beta shape, a missing
# or unknown model), each after an `error` event naming it.
FATAL_CLOSE_CODES = {1008: "policy violation", 3000: "invalid credential", 4000: "invalid request"}


class Fatal(Exception):
    """An outcome no retry can cure (refused credentials, policy close, retries exhausted): exit non-zero."""


class Retry(Exception):
    """A failure worth another attempt, after the backoff delay or the server's Retry-After if longer."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class Backoff:
    """Capped exponential backoff: attempt n waits up to min(cap, base·2ⁿ).

    With an `rng`, the wait is U(0, that ceiling) — full jitter, which spreads a crowd of clients that lost
    the same server instead of having them return in waves. Without one it is the ceiling itself.
    """

    def __init__(self, base: float, cap: float, rng: random.Random | None = None) -> None:
        self.base, self.cap, self.rng = base, cap, rng
        self.attempt = 0

    def next_delay(self) -> float:
        ceiling = min(self.cap, self.base * 2 ** min(self.attempt, 30))
        self.attempt += 1
        return self.rng.uniform(0.0, ceiling) if self.rng is not None else ceiling

    def reset(self) -> None:
        self.attempt = 0


class ReconnectBudget:
    """Consecutive failed attempts, and the backoff between them; too many in a row is fatal."""

    def __init__(self, backoff: Backoff, max_attempts: int, stable_after: float) -> None:
        self.backoff = backoff
        self.max_attempts = max_attempts
        self.stable_after = stable_after  # a session that lived this long (or answered) was a success
        self.failures = 0

    def failed(self, reason: str) -> None:
        """Count a failed attempt; Fatal once there were more than `max_attempts` in a row."""
        self.failures += 1
        if self.failures > self.max_attempts:
            raise Fatal(f"gave up after {self.failures} failed attempts in a row (last: {reason})")

    def session_ended(self, *, lived: float, answered: bool, reason: str) -> None:
        """A session was lost: a healthy one starts the count afresh, one that died at once is a failure."""
        if answered or lived >= self.stable_after:
            self.backoff.reset()
            self.failures = 0
        else:
            self.failed(reason)

    def delay(self, retry_after: float | None = None) -> float:
        """The wait before the next attempt: the backoff, or the server's Retry-After if longer."""
        delay = self.backoff.next_delay()
        return max(delay, retry_after) if retry_after is not None else delay


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After as seconds: a number, or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - time.time())


def error_message(body: bytes | str) -> str:
    """The `error.message` of an OpenAI-style JSON error body, else the body's start."""
    text = body.decode(errors="replace") if isinstance(body, bytes) else body
    try:
        return str(json.loads(text)["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return text[:200]
