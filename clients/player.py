"""The load-test user's audio player: assistant audio played by the listener's own clock, with underruns.

The reference client's `link.Playback` keeps one fixed timeline from the first delta (what it needs to
truncate at the right place); a player under load also has to say how late audio came and what the user
heard when it did, so this one pauses on an underrun and measures each delta against the item's timeline.
Pure and clock-free (times are passed in), so tests drive it directly.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Player:
    """One assistant item as the user's player plays it, by the user's own clock (never by arrival: deltas
    may come faster than real time). It starts on the first delta, or after the item still playing; an
    underrun pauses it until more audio comes, as a jitter buffer does, so it never plays unreceived audio.
    """

    item_id: str
    response_id: str
    started_at: float
    plays_until: float  # when the audio received so far will have played
    received_ms: float = 0.0

    @classmethod
    def start(cls, item_id: str, response_id: str, at: float) -> Player:
        return cls(item_id, response_id, started_at=at, plays_until=at)

    def add(self, ms: float, now: float) -> float:
        """A delta of `ms` of audio arrives `now`: queue it; return how late it is against the item's own
        timeline (due once all the item's earlier audio had played without a pause; 0 if it came first)."""
        late = max(0.0, (now - self.started_at) * 1000 - self.received_ms)
        self.plays_until = max(now, self.plays_until) + ms / 1000
        self.received_ms += ms
        return late

    def playing(self, now: float) -> bool:
        return now < self.plays_until

    def played_ms(self, now: float) -> int:
        """How much of the item the user has heard by `now`: what was received, less what is still queued."""
        queued_ms = max(0.0, self.plays_until - now) * 1000
        return int(max(0.0, self.received_ms - queued_ms))
