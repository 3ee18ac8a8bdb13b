"""One Realtime call over WebRTC from the client side (aiortc), and everything a client can observe about it.

`ClientCall.connect()` does what a browser app does: create the `oai-events` data channel and a microphone
track, make an offer, `POST {base_url}/realtime/calls` with the token, apply the answer. It records what the
client sees — ICE and connection states, the data channel's states, every event, the model's audio — with
timestamps relative to the moment the offer was made, and when anything last arrived (`last_inbound`: an RTP
frame or a data channel message), which is the only liveness signal aiortc offers: it has no ICE
`disconnected` state, only `completed` until consent has failed for ~30 s.

The reference and naive clients are built on it; the tests use it directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import av
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from rtsim.clients import tls
from rtsim.simulator import audio
from rtsim.simulator.webrtc.media import OpusStream, mono_samples
from rtsim.simulator.webrtc.net import is_loopback_host, peer_on_loopback

MIC_RATE = 48000
FRAME_SAMPLES = 960  # 20 ms at 48 kHz
SPEECH_FRAME_DBFS = -45.0  # a received frame louder than this carries the model's voice, not silence


class CallRefused(Exception):
    """`POST /realtime/calls` answered with an error (the status and the JSON error body)."""

    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"call refused: HTTP {status}: {body}")
        self.status = status
        self.body = body


class CallAbandoned(Exception):
    """The call was given up (hung up, or replaced by a reconnect) while someone waited on it."""


class MicTrack(MediaStreamTrack):
    """The caller's microphone: 20 ms Opus packets of whatever was queued with `say`, silence otherwise.

    Encoded here (the simulator's `OpusStream`: speech encoded, silence one cached packet) so that many calls
    in one process cost little; the server still decodes every packet, as it must.
    """

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._queue = np.zeros(0, dtype=np.int16)
        self._start: float | None = None
        self._index = 0
        self._opus = OpusStream()

    def say(self, pcm16_24k: bytes) -> float:
        """Queue audio (pcm16 24 kHz) to be sent in real time; returns its duration in seconds."""
        samples = audio.resample(np.frombuffer(pcm16_24k, dtype="<i2"), audio.SAMPLE_RATE, MIC_RATE)
        self._queue = np.concatenate([self._queue, samples])
        return samples.size / MIC_RATE

    async def recv(self) -> av.Packet:  # type: ignore[override]
        loop = asyncio.get_running_loop()
        if self._start is None:
            self._start = loop.time()
        wait = self._start + self._index * 0.02 - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        elif wait < -0.1:
            self._start -= wait  # the loop was blocked: carry on from now rather than burst the backlog
        samples: np.ndarray | None = None
        if self._queue.size:
            samples = np.zeros(FRAME_SAMPLES, dtype=np.int16)
            take = min(FRAME_SAMPLES, self._queue.size)
            samples[:take] = self._queue[:take]
            self._queue = self._queue[take:]
        packet = self._opus.packet(samples, self._index * FRAME_SAMPLES)
        self._index += 1
        return packet


def frame_dbfs(samples: np.ndarray) -> float:
    if samples.size == 0:
        return -120.0
    power = float(np.mean(samples.astype(np.float64) ** 2)) / (32768.0**2)
    return 10 * np.log10(max(power, 1e-12))


class ClientCall:
    """A client-side WebRTC call to the Realtime API (or the simulator at `base_url`)."""

    def __init__(
        self,
        base_url: str,
        credential: str,
        *,
        session: dict[str, Any] | None = None,
        multipart: bool | None = None,
        microphone: bool = True,
        record_audio: bool = False,
        on_event: Callable[[dict[str, Any]], None] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.credential = credential
        self.session_config = session
        self.multipart = session is not None if multipart is None else multipart
        self.mic = MicTrack() if microphone else None
        self.record_audio = record_audio
        self.on_event = on_event
        self.headers = dict(headers or {})  # extra request headers of the offer (e.g. X-Rtsim-Chaos)
        # A simulator on loopback: offer loopback host candidates (aioice skips them by default).
        self.loopback = is_loopback_host(urlsplit(self.base_url).hostname or "")
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.channel = self.pc.createDataChannel("oai-events")
        self.call_id: str | None = None
        self.location: str | None = None
        self.t0 = time.monotonic()
        self.timeline: list[tuple[float, str, str]] = []  # (seconds since the offer, what, state)
        self.received: list[dict[str, Any]] = []
        self.received_at: list[float] = []
        self.last_inbound = self.t0
        self.audio_frames = 0
        self.speech_frames = 0
        self.max_frame_gap = 0.0  # longest wait between two received audio frames (since reset_gap())
        self._last_frame_at: float | None = None
        self.audio: list[np.ndarray] = []  # mono 48 kHz frames, when recording
        self.opened = asyncio.Event()
        self.abandoned = False
        self._arrived = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._watch()

    # ---- observation ------------------------------------------------------------------------------

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def _note(self, what: str, state: str) -> None:
        self.timeline.append((round(self.elapsed(), 3), what, state))

    def _watch(self) -> None:
        pc, channel = self.pc, self.channel
        pc.on("iceconnectionstatechange", lambda: self._note("ice", pc.iceConnectionState))
        pc.on("connectionstatechange", lambda: self._note("connection", pc.connectionState))
        pc.on("track", self._on_track)

        @channel.on("open")
        def on_open() -> None:
            self._note("datachannel", "open")
            self.opened.set()

        @channel.on("close")
        def on_close() -> None:
            self._note("datachannel", "closed")
            self._arrived.set()

        channel.on("message", self._on_message)

    def states(self, what: str) -> list[str]:
        return [state for _, kind, state in self.timeline if kind == what]

    def when(self, what: str, state: str) -> float | None:
        """Seconds since the offer at which `what` first entered `state`."""
        return next((t for t, kind, s in self.timeline if kind == what and s == state), None)

    @property
    def alive(self) -> bool:
        """The transport has not reported itself dead (aiortc's view: it cannot say 'disconnected')."""
        return (
            self.pc.connectionState not in ("failed", "closed")
            and self.channel.readyState not in ("closing", "closed")
            and not self.abandoned
        )

    def _on_message(self, message: str | bytes) -> None:
        self.last_inbound = time.monotonic()
        if isinstance(message, bytes):
            return
        event = json.loads(message)
        self.received.append(event)
        self.received_at.append(self.elapsed())
        self._arrived.set()
        if self.on_event is not None:
            self.on_event(event)

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio":
            self._spawn(self._consume_audio(track))

    async def _consume_audio(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            now = self.last_inbound = time.monotonic()
            if self._last_frame_at is not None:
                self.max_frame_gap = max(self.max_frame_gap, now - self._last_frame_at)
            self._last_frame_at = now
            self.audio_frames += 1
            samples = mono_samples(frame)  # type: ignore[arg-type]
            if frame_dbfs(samples) > SPEECH_FRAME_DBFS:
                self.speech_frames += 1
            if self.record_audio:
                self.audio.append(samples)

    def reset_gap(self) -> None:
        self.max_frame_gap = 0.0
        self._last_frame_at = None

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ---- setup --------------------------------------------------------------------------------------

    async def connect(self, *, wait_open: bool = True, open_timeout: float | None = 10.0) -> ClientCall:
        """Offer, POST, answer; then (by default) wait for the data channel to open."""
        if self.mic is not None:
            self.pc.addTrack(self.mic)
        else:
            self.pc.addTransceiver("audio", direction="recvonly")
        if self.loopback:
            peer_on_loopback(self.pc)  # its transports exist now; gathering starts with the offer
        self.t0 = self.last_inbound = time.monotonic()
        await self.pc.setLocalDescription(await self.pc.createOffer())
        answer = await self._post_offer(self.pc.localDescription.sdp)
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        if wait_open:
            await asyncio.wait_for(self.opened.wait(), open_timeout)
        return self

    async def _post_offer(self, offer: str) -> str:
        headers = {**self.headers, "Authorization": f"Bearer {self.credential}"}
        url = f"{self.base_url}/realtime/calls"
        async with tls.http_session(url) as http:
            if self.multipart:
                form = aiohttp.FormData()
                form.add_field("sdp", offer, content_type="application/sdp")
                form.add_field(
                    "session", json.dumps(self.session_config or {}), content_type="application/json"
                )
                request = http.post(url, data=form, headers=headers)
            else:
                request = http.post(url, data=offer, headers={**headers, "Content-Type": "application/sdp"})
            async with request as response:
                body = await response.text()
                if response.status != 201:
                    with contextlib.suppress(ValueError):
                        body = json.loads(body)
                    raise CallRefused(response.status, body)
                self.location = response.headers.get("Location")
                self.call_id = (self.location or "").rsplit("/", 1)[-1] or None
                return body

    # ---- events -------------------------------------------------------------------------------------

    def send(self, event: dict[str, Any]) -> None:
        """Send a client event; raises aiortc's InvalidStateError unless the channel is open."""
        self.channel.send(json.dumps(event))

    async def wait_for(
        self,
        match: str | Callable[[dict[str, Any]], bool],
        *,
        since: int = 0,
        timeout: float = 10.0,
    ) -> dict[str, Any]:
        """The first event from index `since` on that matches (a type name or a predicate)."""
        predicate = (lambda e: e.get("type") == match) if isinstance(match, str) else match
        index = since
        async with asyncio.timeout(timeout):
            while True:
                while index < len(self.received):
                    event = self.received[index]
                    index += 1
                    if predicate(event):
                        return event
                if self.abandoned or self.channel.readyState == "closed":
                    raise CallAbandoned(f"call {self.call_id} ended while waiting")
                self._arrived.clear()
                await self._arrived.wait()

    def types(self) -> list[str]:
        return [e.get("type", "") for e in self.received]

    # ---- the end --------------------------------------------------------------------------------------

    async def close(self) -> None:
        """Hang up from this side: closing the peer connection sends DTLS close_notify to the server."""
        self.abandoned = True
        self._arrived.set()
        for task in list(self._tasks):
            task.cancel()
        await self.pc.close()

    async def hangup(self, api_key: str, timeout: float = 2.0) -> None:
        """Also tell the API (`POST /realtime/calls/{id}/hangup`), so a call we left behind cannot linger."""
        if self.call_id is not None:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with (
                    tls.http_session(self.base_url, timeout=aiohttp.ClientTimeout(total=timeout)) as http,
                    http.post(
                        f"{self.base_url}/realtime/calls/{self.call_id}/hangup",
                        headers={"Authorization": f"Bearer {api_key}"},
                    ),
                ):
                    pass
        await self.close()


async def mint_token(
    base_url: str, api_key: str, *, session: dict[str, Any] | None = None, ttl: int = 600
) -> dict[str, Any]:
    """`POST /realtime/client_secrets`: a fresh ephemeral token (value, expires_at, session)."""
    body = {
        "expires_after": {"anchor": "created_at", "seconds": ttl},
        "session": {"type": "realtime", **(session or {})},
    }
    async with (
        tls.http_session(base_url) as http,
        http.post(
            f"{base_url.rstrip('/')}/realtime/client_secrets",
            json=body,
            headers={"Authorization": f"Bearer {api_key}"},
        ) as response,
    ):
        payload = await response.json()
        if response.status != 200:
            raise CallRefused(response.status, payload)
        return payload


async def sleep_until(deadline: float) -> None:
    """Sleep until an event-loop time (at once if it has passed)."""
    await asyncio.sleep(max(0.0, deadline - asyncio.get_running_loop().time()))


def reply_text(response_done: dict[str, Any]) -> str:
    """The words of a `response.done`: its output items' transcripts and texts."""
    return "".join(
        part.get("transcript") or part.get("text") or ""
        for item in response_done["response"]["output"]
        for part in item.get("content", [])
    )
