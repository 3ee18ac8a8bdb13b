"""The load user's player: plays by the listener's clock, pauses on an underrun, measures lateness."""

from __future__ import annotations

import pytest

from rtsim.clients.player import Player


def test_audio_ahead_of_the_player_is_never_late_and_plays_in_real_time() -> None:
    player = Player.start("item", "resp", at=10.0)
    for _ in range(10):  # one second of audio, all of it arriving at once (faster than real time)
        assert player.add(100, now=10.0) == 0
    assert player.plays_until == pytest.approx(11.0)
    assert player.played_ms(10.25) == 250
    assert player.playing(10.99) and not player.playing(11.0)
    assert player.played_ms(12.0) == 1000  # never more than was received


def test_a_delta_after_an_underrun_is_late_against_the_item_timeline_and_the_player_resumes() -> None:
    player = Player.start("item", "resp", at=0.0)
    assert player.add(100, now=0.0) == 0
    assert player.add(100, now=0.1) == 0  # exactly on time
    assert not player.playing(0.45)  # an underrun: the user heard what it had, then silence
    assert player.played_ms(0.45) == 200
    # The next 100 ms were due at 0.2 s and came at 0.5 s: 300 ms late; the player waited for them.
    assert player.add(100, now=0.5) == pytest.approx(300)
    assert player.plays_until == pytest.approx(0.6)  # resumed on arrival, not on the old timeline
    assert player.played_ms(0.55) == 250


def test_an_item_queued_behind_one_still_playing_has_played_nothing_yet() -> None:
    player = Player.start("item2", "resp", at=5.0)  # the previous item plays until 5.0
    assert player.add(200, now=4.0) == 0
    assert player.played_ms(4.5) == 0 and player.plays_until == pytest.approx(5.2)
