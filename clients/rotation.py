"""When to hand a conversation over to a new session before the server's session cap ends the old one.

Both reference clients rotate a lead of min(lead_max, fraction × lifetime) before `expires_at`, so a
compressed 6 s cap rotates at ~4.8 s and a real hour at 59 min.
"""

from __future__ import annotations

from dataclasses import dataclass


def rotation_lead(expires_in: float, *, lead_max: float, lead_fraction: float) -> float:
    """Seconds before the cap at which the handoff starts."""
    return min(lead_max, lead_fraction * expires_in)


@dataclass
class HandoffSchedule:
    """The moments of one session's dual-session handoff, in event-loop time.

    - `rotate_at`: open the next session (the lead before the cap).
    - `start_early_at`: from here (half a lead earlier) a user turn waiting to start begins the handoff, so it
      is asked on the new session rather than cut off by the cap on this one.
    - `switch_by`: hand the user over even mid-response (a quarter of the lead before the cap).
    """

    rotate_at: float | None
    start_early_at: float | None
    switch_by: float | None

    @classmethod
    def none(cls) -> HandoffSchedule:
        """A session without a cap: it is never rotated."""
        return cls(None, None, None)

    @classmethod
    def before_cap(
        cls, now: float, expires_in: float, *, lead_max: float, lead_fraction: float
    ) -> HandoffSchedule:
        lead = rotation_lead(expires_in, lead_max=lead_max, lead_fraction=lead_fraction)
        rotate_at = now + expires_in - lead
        return cls(rotate_at, rotate_at - lead / 2, now + expires_in - lead / 4)

    def due(self, now: float, *, turn_waiting: bool) -> bool:
        """Time to hand over: the lead before the cap has come, or a turn waits to start close to it."""
        if self.rotate_at is None:
            return False
        if now >= self.rotate_at:
            return True
        return turn_waiting and self.start_early_at is not None and now >= self.start_early_at

    def retry_at(self, moment: float) -> None:
        """A handoff failed: try again at `moment` if that is still before `switch_by`, else never.

        A waiting turn must not bring the retry forward, so the early start moves with it.
        """
        self.rotate_at = moment if self.switch_by is not None and moment < self.switch_by else None
        self.start_early_at = self.rotate_at
