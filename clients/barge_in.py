"""Barge-in: the user talks over the assistant, so its reply stops where the user stopped hearing it.

Assistant audio "plays" in real time as it arrives (`Playback`, a playback clock: the server sends audio
faster than real time, so what was heard lags what was received). A typed turn over it cancels the
response (if still generating) and truncates the item at the position played, never beyond the audio
received — also after `response.done`, while the buffered tail is still playing. A spoken turn does
the same through server VAD: the server cancels the response itself (interrupt_response), and the client
truncates on `speech_started` — after the cancelled `response.done` if the response was still generating,
because the server fixes the item's audio length only when it closes the item.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rtsim.clients.common import BYTES_PER_MS, JsonLog, decoded_length
from rtsim.clients.link import Link, Playback, TrackedTurn


class BargeIn:
    def __init__(self, log: JsonLog, interrupt: Callable[[Link, TrackedTurn], None]) -> None:
        self.log = log
        self.interrupt = interrupt  # marks a turn whose reply was cut off (heard in part, not asked again)

    def on_audio(self, link: Link, event: dict[str, Any], now: float) -> None:
        """An assistant audio delta: it extends what plays, unless a barge-in already silenced it."""
        response_id, item_id = str(event.get("response_id")), str(event.get("item_id"))
        if response_id in link.cancelled:
            return
        playback = link.playback
        if playback is None or playback.item_id != item_id:
            # A new reply plays once the one before it has finished (a speaker plays one thing at a time).
            start = max(now, playback.ends_at) if playback is not None else now
            playback = link.playback = Playback(item_id, response_id, started_at=start)
        playback.queue(decoded_length(str(event.get("delta", ""))) / BYTES_PER_MS, now)

    async def typed_over(self, link: Link, now: float) -> None:
        """A typed turn over the assistant: cancel the response, truncate what was not heard."""
        playback = link.playback
        response_id = link.response_id
        if response_id is not None:
            link.cancelled.add(response_id)
            interrupted = link.response_turns.get(response_id)
            if interrupted is not None and interrupted.status == "sent":
                self.interrupt(link, interrupted)
            self.log("barge_in", action="cancel", response=response_id, session=link.session_id)
            # Sent before the truncate: the server closes the item (fixing its audio length) on cancel.
            await link.send({"type": "response.cancel", "response_id": response_id})
        if playback is not None and playback.playing(now):
            await self._truncate(link, playback.item_id, playback.played_ms(now), playback.received_ms)
        link.playback = None

    async def on_speech_started(self, link: Link, now: float) -> None:
        """Server VAD heard the user: local playback stops; truncate now, or once the response is closed."""
        playback = link.playback
        link.playback = None
        if playback is None or not playback.playing(now):
            return
        played = playback.played_ms(now)
        if link.response_id == playback.response_id:
            # The server cancels this response for the barge-in; truncate once it is closed, not before.
            link.deferred_truncate = (playback.response_id, playback.item_id, played)
            self.log(
                "barge_in", action="await_cancel", response=playback.response_id, session=link.session_id
            )
        else:
            await self._truncate(link, playback.item_id, played, playback.received_ms)

    async def on_response_done(self, link: Link, response_id: str) -> None:
        """The response a spoken barge-in waited for is closed: truncate its item now."""
        deferred = link.deferred_truncate
        if deferred is not None and deferred[0] == response_id:
            link.deferred_truncate = None
            await self._truncate(link, deferred[1], deferred[2], received_ms=None)

    async def _truncate(self, link: Link, item_id: str, played_ms: int, received_ms: float | None) -> None:
        if played_ms <= 0:
            return  # nothing was heard; the real API rejects audio_end_ms 0
        self.log(
            "barge_in",
            action="truncate",
            item=item_id,
            audio_end_ms=played_ms,
            received_ms=int(received_ms) if received_ms is not None else None,
            session=link.session_id,
        )
        await link.send(
            {
                "type": "conversation.item.truncate",
                "item_id": item_id,
                "content_index": 0,
                "audio_end_ms": played_ms,
            }
        )
