"""One WebRTC call: an aiortc peer connection around the same session engine the WebSocket path drives.

Wiring (the shared `Carrier` does the engine side: timer, chain, triggers, frames, the close record):
- data channel `oai-events`: client text → `session.receive`; engine events → the channel (and every sideband
  WebSocket joined with `?call_id=`), encoded exactly as over WebSocket;
- the model's audio: `session.audio_sink` → `ModelAudioTrack` (Opus, 48 kHz, 20 ms, real-time paced) instead
  of `response.output_audio.delta` events;
- the caller's track: decoded frames → pcm16 24 kHz → `session.append_audio` (server VAD runs in the engine);
- the WebRTC-only events: `output_audio_buffer.started` (first audio of a response on the wire),
  `.stopped` (its audio fully played and the response done), `.cleared` (client `output_audio_buffer.clear`,
  or the caller barging in while audio plays, after which the server truncates the assistant item to what
  was actually played — the client does not send `conversation.item.truncate` over WebRTC).

Faults are methods on the call and cut the real transport of this call only (see `UdpGate` and each method).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

import numpy as np
from aiortc import RTCConfiguration, RTCDataChannel, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcdtlstransport import RTCDtlsTransport
from aiortc.rtcicetransport import RTCIceTransport

from .. import audio
from ..engine import Session
from ..protocol import encode
from ..sideband import JoinableCall
from .media import CallerAudio, ClearedAudio, ModelAudioTrack
from .net import Direction, UdpGate, ice_transports, peer_on_loopback

if TYPE_CHECKING:
    from .endpoint import WebRTCEndpoint

EVENTS_CHANNEL = "oai-events"
DCEP_PPID = 50  # WebRTC Data Channel Establishment Protocol messages (RFC 8832)
DCEP_OPEN = 0x03
# After the engine asks to end the session (the cap), give the data channel this long to carry the last
# events (the session_expired error) before the peer connection is closed.
CLOSE_FLUSH_SECONDS = 0.3
WEBRTC_EVENT_TYPES = (
    "output_audio_buffer.started",
    "output_audio_buffer.stopped",
    "output_audio_buffer.cleared",
)


class Call(JoinableCall):
    """A live call: a carrier over a peer connection, with its sidebands and its fault switches."""

    transport = "webrtc"  # what fault kinds are matched against
    binary_unit = "message"

    def __init__(
        self,
        endpoint: WebRTCEndpoint,
        *,
        call_id: str,
        conn_id: str,
        session: Session,
        key_id: str,
        token_id: str | None,
    ) -> None:
        server = endpoint.server
        super().__init__(
            call_id=call_id,
            session=session,
            conn_id=conn_id,
            key_id=key_id,
            history=server.history,
            seed=server.config.seed,
        )
        self.endpoint = endpoint
        self.token_id = token_id
        # Seeded per call: the same seed and call id lose the same datagrams.
        self.gate = UdpGate(random.Random(f"{server.config.seed}:{call_id}"))
        self.track = ModelAudioTrack(on_started=self._audio_started, on_stopped=self._audio_stopped)
        self.caller_audio = CallerAudio()
        self.pc: RTCPeerConnection | None = None
        self.channel: RTCDataChannel | None = None
        self.unsent: list[dict[str, Any]] = []  # produced before the data channel existed
        self.pending_truncations: list[ClearedAudio] = []
        self.transport_log: list[tuple[float, str, str]] = []  # (loop time, what, state): what the server saw
        self.begun = False
        self._end_cause: tuple[str, str] | None = None  # (reason, by) of a server-side action underway
        self._closing = False
        self._caller_task: asyncio.Task[None] | None = None
        # Setup faults: read when the answer is made (set them from an `on_new_call` hook).
        self._ice_fail_setup = False
        self.channel_open_delay = 0.0
        self._delay_installed = False
        self.hang_up_when_connected: str | None = None  # a reason: end the call as soon as it connects
        session.audio_sink = self._model_audio

    # ---- setup ------------------------------------------------------------------------------------

    async def answer(self, offer_sdp: str) -> str:
        """Apply the offer, attach the model's track, and return the answer SDP (host candidates included)."""
        pc = self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))  # no STUN: host candidates only
        pc.on("datachannel", self._on_datachannel)
        pc.on("track", self._on_track)
        pc.on("connectionstatechange", self._on_connection_state)
        pc.on("iceconnectionstatechange", lambda: self._log_transport("ice", pc.iceConnectionState))
        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        if self.endpoint.loopback:
            peer_on_loopback(pc)  # before the answer gathers candidates
        audio_transceivers = [t for t in pc.getTransceivers() if t.kind == "audio"]
        if audio_transceivers:
            pc.addTrack(self.track)
            # The answer picks the first common codec in aiortc's order, Opus when offered; then the track
            # hands over its own Opus packets, otherwise (PCMU/PCMA/G722 only) raw frames for aiortc.
            codecs = audio_transceivers[0]._codecs
            self.track.encode_opus = bool(codecs) and codecs[0].mimeType.lower() == "audio/opus"
        await pc.setLocalDescription(await pc.createAnswer())
        for ice in self._ice_transports():
            self.gate.attach(ice._connection)
        if self._ice_fail_setup:
            self.gate.shut()  # the answer goes out, but no connectivity check will ever be answered
        if self.channel_open_delay > 0:
            self._install_channel_delay()
        return pc.localDescription.sdp

    def begin(self) -> None:
        """The answer is out: start the session (its events wait for the data channel to open)."""
        self.begun = True
        self.session.start(self.loop.time())
        self.spawn(self.writer())
        self.pump()
        timeout = self.endpoint.server.config.webrtc_setup_timeout
        if timeout:
            self.call_later(timeout, self._check_setup)

    def _check_setup(self) -> None:
        """Answered, but ICE and DTLS never connected: a client that abandoned the call; end it."""
        connected = any(
            what == "connection" and state == "connected" for _, what, state in self.transport_log
        )
        if not connected and not self.ended:
            self.end("setup_timeout", by="network")

    async def discard(self) -> None:
        """Drop a call whose offer was refused: no session began, so nothing is recorded."""
        self._finish()
        await self._teardown()

    def _ice_transports(self) -> set[RTCIceTransport]:
        """The call's ICE transports: one, as everything is bundled on the first m-line."""
        assert self.pc is not None
        return ice_transports(self.pc)

    def _dtls_transports(self) -> set[RTCDtlsTransport]:
        assert self.pc is not None
        transports = {t.receiver.transport for t in self.pc.getTransceivers()}
        if self.pc.sctp is not None:
            transports.add(self.pc.sctp.transport)
        return transports

    # ---- the engine ---------------------------------------------------------------------------------

    def _produced(self, events: list[dict[str, Any]]) -> None:
        for event in events:
            self._observe(event)
            for sideband in self.sidebands:
                sideband.deliver(event)

    def _after_batch(self) -> None:
        self._apply_truncations()

    def _on_close_request(self) -> None:
        if not self._closing:
            self._closing = True
            self.spawn(self._close_after_flush())

    async def _close_after_flush(self) -> None:
        await asyncio.sleep(CLOSE_FLUSH_SECONDS)
        code, reason = self.session.close_request or (1000, "")
        self.end(reason or "session ended", by="server", code=code)

    def _observe(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "response.done":
            self.track.finish(event["response"]["id"])
        elif kind == "input_audio_buffer.speech_started" and self.track.playing and self._interrupts():
            self._clear_output()  # barge-in: the caller talks over the model

    def _interrupts(self) -> bool:
        detection = self.session.config["audio"]["input"].get("turn_detection")
        return bool(detection and detection.get("interrupt_response", True))

    async def _transmit(self, event: dict[str, Any]) -> bool:
        if self.channel is None:
            self.unsent.append(event)  # sent (and counted) when the channel opens
            return False
        return self._send_on_channel(event)

    def _send_on_channel(self, event: dict[str, Any]) -> bool:
        self.history.event("out", self.session.id, event)
        channel = self.channel
        if channel is None or channel.readyState != "open":
            return False
        try:
            channel.send(encode(event))
        except (ValueError, ConnectionError) as exc:  # larger than the peer's max-message-size, or gone
            self.history.record(
                "transport", call_id=self.id, session=self.session.id, what="datachannel_send", state=str(exc)
            )
            return False
        return True  # counted as sent when it went out on the channel, not when it was queued

    # ---- output audio -------------------------------------------------------------------------------

    def _model_audio(self, response_id: str, item_id: str, chunk: bytes) -> None:
        """The engine's audio sink: chunks in the response's output format, delivered at real-time pace."""
        run = next((r for r in self.session.responses if r.id == response_id), None)
        out_format = run.config["format"]["type"] if run is not None else "audio/pcm"
        if out_format == "audio/pcmu":
            samples, rate = audio.ulaw_decode(chunk), 8000
        elif out_format == "audio/pcma":
            samples, rate = audio.alaw_decode(chunk), 8000
        else:
            samples, rate = np.frombuffer(chunk, dtype="<i2"), audio.SAMPLE_RATE
        self.track.push(response_id, item_id, samples, rate)

    def _audio_started(self, response_id: str) -> None:
        self.session.emit({"type": "output_audio_buffer.started", "response_id": response_id})
        self.pump()

    def _audio_stopped(self, response_id: str) -> None:
        self.session.emit({"type": "output_audio_buffer.stopped", "response_id": response_id})
        self.pump()

    def _clear_output(self) -> None:
        cleared = self.track.clear()
        response_id = cleared[0].response_id if cleared else self.track.last_audio_response
        if response_id is None:
            return  # no response has produced audio: nothing to clear, nothing to name
        self.session.emit({"type": "output_audio_buffer.cleared", "response_id": response_id})
        self.pending_truncations.extend(cleared)

    def _apply_truncations(self) -> None:
        """Truncate cleared assistant items to what was played, once their response has closed them."""
        waiting = []
        for cut in self.pending_truncations:
            item = self.session.by_id.get(cut.item_id)
            if item is None:
                continue  # out-of-band response, or deleted meanwhile
            if item.data.get("status") == "in_progress":
                waiting.append(cut)  # its generated length (the truncation bound) is known when it closes
                continue
            if cut.played_ms < item.audio_ms:
                truncate = {
                    "type": "conversation.item.truncate",
                    "item_id": cut.item_id,
                    "content_index": 0,
                    "audio_end_ms": cut.played_ms,
                }
                self.session.receive(truncate, self.loop.time())
        self.pending_truncations = waiting

    # ---- the data channel -----------------------------------------------------------------------------

    def _on_datachannel(self, channel: RTCDataChannel) -> None:
        if channel.label != EVENTS_CHANNEL or self.channel is not None:
            return
        self.channel = channel
        self._log_transport("datachannel", "open")
        channel.on("message", self._on_message)
        channel.on("close", lambda: self._log_transport("datachannel", "closed"))
        backlog, self.unsent = self.unsent, []
        for event in backlog:
            if self._send_on_channel(event):
                self._count_sent(event["type"])

    def _on_message(self, message: str | bytes) -> None:
        now = self.loop.time()
        if isinstance(message, bytes):
            self.receive_binary(len(message), now)
        else:
            self.receive_text(message, now)
        self.pump()

    def _receive(self, event: dict[str, Any], now: float) -> None:
        if event.get("type") == "output_audio_buffer.clear":
            self._clear_output()  # WebRTC's own buffer; the engine rejects this event on WebSocket
            return
        self.session.receive(event, now)

    # ---- the caller's audio ---------------------------------------------------------------------------

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio" and self._caller_task is None:
            self._caller_task = self.spawn(self._consume_caller_audio(track))

    async def _consume_caller_audio(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            if self.ended:
                return
            self.session.append_audio(self.caller_audio.convert(frame), self.loop.time())  # type: ignore[arg-type]
            self.pump()

    # ---- transport states and the end of the call --------------------------------------------------------

    def _log_transport(self, what: str, state: str) -> None:
        self.transport_log.append((self.loop.time(), what, state))
        self.history.record("transport", call_id=self.id, session=self.session.id, what=what, state=state)

    def _on_connection_state(self) -> None:
        assert self.pc is not None
        state = self.pc.connectionState
        self._log_transport("connection", state)
        if state == "connected" and self.hang_up_when_connected is not None:
            self.end(self.hang_up_when_connected, by="server")
        if state in ("failed", "closed") and not self.ended:
            if self._end_cause is not None:
                reason, by = self._end_cause
            elif state == "failed":
                reason, by = "ice_failed", "network"  # connectivity checks went unanswered
            elif self._consent_expired():
                reason, by = "consent_expired", "network"  # the client vanished without a word
            else:
                reason, by = "peer_closed", "client"  # the client's DTLS close_notify
            self.end(reason, by=by)

    def _consent_expired(self) -> bool:
        """Whether ICE died of unanswered consent checks (aioice then closes, and DTLS with it, so aiortc
        reports `closed` rather than `failed`): aioice drops its consent task only in that case."""
        assert self.pc is not None
        connected = any(what == "ice" and state == "completed" for _, what, state in self.transport_log)
        consent_gone = [ice._connection._query_consent_task is None for ice in self._ice_transports()]
        return connected and any(consent_gone)

    def end(self, reason: str, *, by: str, code: int | None = None) -> None:
        """End the call now: record the close, then tear the peer connection down in the background."""
        if self.ended:
            return
        self.closed_by = by
        self._finish()
        if self.begun:
            self.record_close(code, reason, by, transport="webrtc", call_id=self.id)
        self._spawn_outliving(self._teardown())

    async def close(self, code: int = 1000, reason: str = "", *, by: str = "server") -> None:
        """End the call and wait until its transports are down (server shutdown, hangup)."""
        self.end(reason or "hangup", by=by, code=None)
        await self.done.wait()

    async def shut_down(self, code: int, reason: str) -> None:
        """The server is stopping: end the call with `code` and wait until its transports are down."""
        self.end(reason, by="server", code=code)
        await self.done.wait()

    async def _teardown(self) -> None:
        self._cancel_tasks()
        self.gate.close()
        for sideband in list(self.sidebands):
            await sideband.close()
        self.track.stop()
        if self.pc is not None:
            with contextlib.suppress(Exception):  # closing a half-dead connection must not break shutdown
                await self.pc.close()
        self.endpoint.server.carriers.pop(self.session.id, None)
        self.done.set()

    def _spawn_outliving(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """A task that must run to its end although the call's own tasks are cancelled (the teardown)."""
        task = asyncio.ensure_future(coro)
        self.endpoint.background.add(task)
        task.add_done_callback(self.endpoint.background.discard)
        return task

    def fail_ice_setup(self) -> None:
        """The answer goes out, but no connectivity check will ever be answered (before the answer is made:
        from an `on_new_call` hook)."""
        self._ice_fail_setup = True

    # ---- faults: each cuts this call's real transport ------------------------------------------------------

    def ice_blackhole(self) -> None:
        """The server silently stops answering and sending: every datagram of this call is dropped both ways.

        The client's consent checks go unanswered, RTP and SCTP stop. A browser says ICE `disconnected` within
        seconds and `failed` later; aiortc says nothing until consent is lost (six missed checks ~5 s apart,
        ~30 s), then `closed` — unless the client's own watchdog acts first. This side's consent expires the
        same way, which ends the call here (`close` by `network`, reason `consent_expired`).
        """
        self.gate.shut()

    def ice_disconnect_recover(self, seconds: float) -> None:
        """A transient cut: the same black hole, lifted after `seconds` (SCTP retransmits what was lost)."""
        self.gate.shut_for(seconds)

    def impair(
        self,
        direction: Direction,
        *,
        seconds: float | None = None,
        loss: float | None = None,
        delay: float | None = None,
        jitter: float | None = None,
    ) -> None:
        """Lose and/or delay this call's datagrams (`UdpGate.impair`), for `seconds` or the rest of the call.

        Every datagram, as on a real lossy path: RTP loses audio (the peer's `packetsLost`, its jitter), SCTP
        retransmits, consent checks may miss. Ending after `seconds` lifts only what this call set.
        """
        self.gate.impair(direction, loss=loss, delay=delay, jitter=jitter)
        if seconds is not None:
            lift = {
                name: 0.0 for name, value in (("loss", loss), ("delay", delay), ("jitter", jitter)) if value
            }
            self.call_later(seconds, lambda: self.gate.impair(direction, **lift))

    async def dtls_close(self) -> None:
        """End DTLS abruptly: a close_notify alert, after which the client's stack closes the connection."""
        self._end_cause = ("dtls_close", "server")
        for transport in self._dtls_transports():
            await transport.stop()

    async def sctp_abort(self) -> None:
        """Abort the SCTP association (an ABORT chunk): every data channel dies; ICE, DTLS, media stay up."""
        if self.pc is not None and self.pc.sctp is not None:
            await self.pc.sctp.stop()

    def datachannel_close(self) -> None:
        """Close `oai-events` from the server side (an SCTP stream reset); the connection itself stays up."""
        if self.channel is not None:
            self.channel.close()

    def datachannel_delay(self, seconds: float) -> None:
        """Open the client's data channel late: the server sits on its DCEP OPEN for `seconds` before acking.

        Takes effect if set before the client's OPEN arrives (from an `on_new_call` hook, or right after the
        answer); until then the client's channel stays `connecting` and a client that sends breaks.
        """
        self.channel_open_delay = seconds
        if self.pc is not None and self.pc.sctp is not None:
            self._install_channel_delay()

    def _install_channel_delay(self) -> None:
        assert self.pc is not None and self.pc.sctp is not None
        if self._delay_installed:
            return
        self._delay_installed = True
        sctp = self.pc.sctp
        receive = sctp._data_channel_receive

        async def delayed_receive(stream_id: int, pp_id: int, data: bytes) -> None:
            if pp_id == DCEP_PPID and data[:1] == bytes([DCEP_OPEN]) and self.channel_open_delay > 0:
                # Deferred, not awaited: SCTP keeps acknowledging while the application layer "thinks".
                def reopen() -> None:
                    self.spawn(receive(stream_id, pp_id, data))

                self.loop.call_later(self.channel_open_delay, reopen)
                return
            await receive(stream_id, pp_id, data)

        sctp._data_channel_receive = delayed_receive  # type: ignore[method-assign]

