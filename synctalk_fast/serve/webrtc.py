"""The WebRTC transport: a browser's microphone in, the avatar's video and
the speech's audio out (aiortc).

``POST /v1/avatars/{name}/webrtc`` takes an SDP offer (``{"sdp", "type"}``)
with an audio track and answers with a 25 fps video track and an audio
track made from the same stream frames (each frame's 40 ms of speech, or
silence for idle frames), so picture and sound leave together. A data
channel carries ``{"type": "interrupt"}`` (barge-in) and, from the server,
the error message (:func:`~.protocol.error_message`) of a session it ends.

The session is a :class:`~.conversation.Conversation`, so the server's
limits apply as over the WebSocket: microphone audio faster than
``max_audio_rate`` x real time ends it (``rate_limited``), so does no
microphone audio and no data channel message for ``idle_seconds``
(``idle_timeout``), and the session length (``session_too_long``).

The microphone never says where an utterance ends: a voice gate does. Audio
louder than :attr:`VoiceGate.threshold` opens an utterance (with the
preceding :attr:`VoiceGate.preroll` seconds, so onsets are kept); after
:attr:`VoiceGate.hangover` seconds below it the utterance is flushed. While
nobody speaks the stream emits idle frames at the frame rate.

Threads: everything here runs on the server's event loop; the stream runs
in its own threads.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections import deque
from collections.abc import Callable
from fractions import Fraction
from typing import Any

import av
import numpy as np

from .._util.deprecation import renamed
from ..stream import Stream
from .conversation import Conversation, Host
from .protocol import Refusal

try:
    from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
    from aiortc.mediastreams import MediaStreamError
except ImportError:  # the server without its WebRTC part: POST .../webrtc answers 501
    MediaStreamTrack = object  # type: ignore[assignment,misc]
    RTCConfiguration = RTCPeerConnection = RTCSessionDescription = None  # type: ignore[assignment,misc]
    MediaStreamError = Exception  # type: ignore[assignment,misc]

__all__ = ["VoiceGate", "WebRtcSession", "available", "offer_endpoint"]

log = logging.getLogger(__name__)

_VIDEO_CLOCK = 90000  # RTP clock of video
_AUDIO_RATE = 16000  # the stream's audio, sent back with each frame
_STATES_DONE = ("failed", "closed")
_TELL_SECONDS = 1.0  # at most this long for a refusal to leave before the association is aborted


def available() -> bool:
    """Whether aiortc is installed."""
    return RTCPeerConnection is not None


class VoiceGate:
    """Splits a continuous microphone signal into utterances by energy.

    ``feed(samples)`` (mono float32 ``[n]`` at ``sample_rate``) returns what
    to do: the samples to push (pre-roll included when a voice starts) and
    whether to flush after them.
    """

    threshold = 0.01  # RMS of a 20 ms block, about -40 dBFS
    preroll = 0.2  # seconds kept before a voice starts
    hangover = 0.6  # seconds of quiet that end an utterance

    def __init__(self, sample_rate: int | None = None, **deprecated: Any):
        given = renamed(deprecated, {"sample_rate": sample_rate}, {"rate": "sample_rate"}, where="VoiceGate")
        if given["sample_rate"] is None:
            raise TypeError("VoiceGate() needs sample_rate")
        self.sample_rate = int(given["sample_rate"])
        self.speaking = False
        self.quiet = 0.0
        self._before: deque[np.ndarray] = deque()
        self._before_len = 0

    @property
    def rate(self) -> int:
        """The former name of :attr:`sample_rate`."""
        return self.sample_rate

    def feed(self, samples: np.ndarray) -> tuple[np.ndarray | None, bool]:
        """The samples to push now (or None) and whether to flush after them."""
        loud = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64)))) > self.threshold if len(samples) else False
        seconds = len(samples) / self.sample_rate
        if not self.speaking:
            if not loud:
                self._before.append(samples)
                self._before_len += len(samples)
                while self._before and self._before_len - len(self._before[0]) >= self.preroll * self.sample_rate:
                    self._before_len -= len(self._before.popleft())
                return None, False
            self.speaking, self.quiet = True, 0.0
            out = np.concatenate([*self._before, samples])
            self._before.clear()
            self._before_len = 0
            return out, False
        self.quiet = 0.0 if loud else self.quiet + seconds
        if self.quiet >= self.hangover:
            self.speaking = False
            return samples, True
        return samples, False

    def reset(self) -> None:
        """Forget the utterance under way (barge-in)."""
        self.speaking, self.quiet = False, 0.0


class _Outgoing(MediaStreamTrack):
    """A track fed from a queue by the session's frame pump."""

    def __init__(self) -> None:
        super().__init__()
        self.queue: asyncio.Queue[Any] = asyncio.Queue(50)

    async def recv(self) -> Any:
        if self.readyState != "live":
            raise MediaStreamError
        frame = await self.queue.get()
        if frame is None:
            self.stop()
            raise MediaStreamError
        return frame

    def offer(self, item: Any) -> None:
        """Queue ``item``; when the peer is not taking frames, the oldest goes."""
        if self.queue.full():
            self.queue.get_nowait()
        self.queue.put_nowait(item)

    def clear(self) -> None:
        while not self.queue.empty():
            self.queue.get_nowait()


class _VideoOut(_Outgoing):
    kind = "video"


class _AudioOut(_Outgoing):
    kind = "audio"


def _mono(frame: Any) -> np.ndarray:
    """A microphone frame (int16, packed or planar) as mono float32 ``[n]`` in [-1, 1]."""
    if frame.format.name not in ("s16", "s16p"):
        raise Refusal("bad_request", f"unexpected microphone sample format {frame.format.name}")
    pcm = frame.to_ndarray()
    channels = len(frame.layout.channels)
    mono = pcm.reshape(-1, channels).mean(axis=1) if frame.format.name == "s16" else pcm.mean(axis=0)
    return (mono / 32768.0).astype(np.float32)


def _media(f: Any, fps: float) -> tuple[av.VideoFrame, av.AudioFrame]:
    """A stream frame as a video frame and its 40 ms of audio, time-stamped by its index."""
    video = av.VideoFrame.from_ndarray(f.image, format="bgr24")
    video.pts, video.time_base = int(round(f.index * _VIDEO_CLOCK / fps)), Fraction(1, _VIDEO_CLOCK)
    pcm = (np.clip(f.audio, -1.0, 1.0) * 32767).astype(np.int16)
    audio = av.AudioFrame.from_ndarray(pcm[None, :], format="s16", layout="mono")
    audio.sample_rate = _AUDIO_RATE
    audio.pts, audio.time_base = f.index * len(pcm), Fraction(1, _AUDIO_RATE)
    return video, audio


class WebRtcSession:
    """One browser conversation over WebRTC.

    Parameters
    ----------
    conversation : Conversation
        The session's core (stream, limits, metrics); the session opens,
        runs and closes it.
    on_close : callable, optional
        Called once when the session ends.

    Attributes
    ----------
    frames_sent, lipsync_frames : int
        Frames handed to the tracks, and those of them that are lip-synced.
    refusal : Refusal or None
        Why the server ended the session, if it did.
    """

    def __init__(self, conversation: Conversation, *, on_close: Callable[[], None] | None = None):
        if not available():
            raise RuntimeError("WebRTC needs aiortc: pip install 'synctalk-fast[serve]'")
        self.conversation = conversation
        self.on_close = on_close
        # No STUN / TURN servers: aiortc's default asks a public STUN server on
        # every session; the server offers its own host candidates only.
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.video, self.audio = _VideoOut(), _AudioOut()
        self.closed = asyncio.Event()
        self.frames_sent = 0
        self.lipsync_frames = 0
        self.refusal: Refusal | None = None
        self._microphone: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._channel: Any = None
        self._task: asyncio.Future[None] | None = None
        self._gate = VoiceGate(48000)  # remade at the microphone's own rate

    @property
    def stream(self) -> Stream:
        """The conversation's stream."""
        return self.conversation.stream

    async def answer(self, offer: dict[str, Any]) -> dict[str, str]:
        """The SDP answer to a browser's ``offer`` (``{"sdp", "type": "offer"}``);
        the session then runs until the peer connection ends or a limit ends it.

        Raises
        ------
        Refusal
            ``bad_request``: not an SDP offer, or one without an audio track.
        """
        if not isinstance(offer, dict) or offer.get("type") != "offer" or not isinstance(offer.get("sdp"), str):
            raise Refusal("bad_request", 'expected {"sdp": "...", "type": "offer"}')
        if "m=audio" not in offer["sdp"]:
            raise Refusal("bad_request", "the offer has no audio track (the microphone drives the avatar)")
        await self.conversation.open()
        self._listen_to(self.pc)
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=offer["sdp"], type="offer"))
        self.pc.addTrack(self.video)  # takes the offer's video transceiver (recvonly on the browser's side)
        self.pc.addTrack(self.audio)  # and its audio one, next to the microphone
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        self._task = asyncio.ensure_future(self._run())
        return {"sdp": self.pc.localDescription.sdp, "type": self.pc.localDescription.type}

    def _listen_to(self, pc: Any) -> None:
        """The peer connection's events: the microphone, the data channel, the end."""

        @pc.on("track")
        def on_track(track: Any) -> None:
            if track.kind == "audio" and not self._microphone.done():
                self._microphone.set_result(track)

        @pc.on("datachannel")
        def on_datachannel(channel: Any) -> None:
            self._channel = channel
            channel.on("message", self._on_message)

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if pc.connectionState in _STATES_DONE:
                await self.close()

    def _on_message(self, message: Any) -> None:
        self.conversation.heard()
        try:
            kind = json.loads(message).get("type")
        except (ValueError, TypeError, AttributeError):
            kind = None
        if kind == "interrupt":
            self.conversation.interrupt()
            self._gate.reset()
            self.video.clear()
            self.audio.clear()

    async def _run(self) -> None:
        """The conversation with the microphone and the frame pump, then the end of the session."""
        try:
            await self.conversation.run(self._listen(), self._pump())
        except Refusal as exc:
            self.refusal = exc
            self.conversation.seat.refused(exc.code)
            await self._tell(exc)
        except Exception as exc:  # noqa: BLE001 - this session only
            log.exception("WebRTC session on %s failed", self.conversation.name)
            await self._tell(Refusal.internal(exc))
        finally:
            await self.close()

    async def _tell(self, refusal: Refusal) -> None:
        """The refusal's error message over the data channel, if it is open.

        Returns once the message has left for the network (the channel's
        ``bufferedAmount`` is back to 0), or after ``_TELL_SECONDS``: closing
        the peer connection aborts the SCTP association, which drops whatever
        is still queued.
        """
        channel = self._channel
        if channel is None or channel.readyState != "open":
            return
        try:
            channel.send(json.dumps(refusal.to_message()))
        except Exception:  # noqa: BLE001 - the peer is gone already
            return
        deadline = time.monotonic() + _TELL_SECONDS
        while channel.bufferedAmount > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

    async def _listen(self) -> None:
        """Microphone frames -> the conversation's limits -> voice gate -> the stream."""
        conversation = self.conversation
        track = await self._microphone
        try:
            while True:
                frame = await track.recv()
                sample_rate = frame.sample_rate
                conversation.receive_audio(frame.samples / sample_rate)
                if self._gate.sample_rate != sample_rate:
                    self._gate = VoiceGate(sample_rate)
                push, flush = self._gate.feed(_mono(frame))
                if push is not None:
                    conversation.push_audio(push, sample_rate=sample_rate)
                if flush:
                    conversation.flush()  # a click shorter than one encoder window makes no frame: ignored
        except MediaStreamError:
            return  # the microphone ended; the session lasts until the peer connection does

    async def _pump(self) -> None:
        """Stream frames -> the video and audio tracks, paced at the frame rate."""
        conversation = self.conversation
        fps = conversation.stream.fps
        base = None
        try:
            async for f in conversation.frames():
                now = time.monotonic()
                if base is None or now - (base + f.index / fps) > 0.5:
                    base = now - f.index / fps  # start, or re-anchor after a stall (no burst to catch up)
                due = base + f.index / fps
                if due > now:
                    await asyncio.sleep(due - now)
                video, audio = _media(f, fps)
                self.video.offer(video)
                self.audio.offer(audio)
                self.frames_sent += 1
                self.lipsync_frames += not f.idle
                conversation.seat.sent(f)
        finally:
            self.video.offer(None)
            self.audio.offer(None)

    async def close(self) -> None:
        """End the session (idempotent): its tasks, the conversation, the peer connection."""
        if self.closed.is_set():
            return
        self.closed.set()
        task = self._task
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        try:
            await self.conversation.close()
            await self.pc.close()
        finally:
            if self.on_close is not None:
                self.on_close()


def _read_offer(body: bytes, max_bytes: int) -> dict[str, Any]:
    if len(body) > max_bytes:
        raise Refusal("too_large", "the offer is too large")
    try:
        offer = json.loads(body)
    except ValueError:
        raise Refusal("bad_request", 'the body must be JSON {"sdp", "type": "offer"}') from None
    return offer if isinstance(offer, dict) else {}


async def offer_endpoint(host: Host, request: Any, sessions: set[WebRtcSession]) -> tuple[int, dict[str, Any]]:
    """``POST /v1/avatars/{name}/webrtc``: an SDP offer in, the answer out.

    Returns the HTTP status and the JSON body: the answer (200), or a
    refusal's error message with its status. The session, once answered,
    is in ``sessions`` until it ends.
    """
    name = request.path_params["name"]
    session: WebRtcSession | None = None
    try:
        if not available():
            raise Refusal("unavailable", "WebRTC needs aiortc: pip install 'synctalk-fast[serve]'")
        avatar = host.avatar_for(request.headers, request.query_params, name)
        limits = host.limits
        offer = _read_offer(await request.body(), limits.max_message_bytes)
        seat = host.admission.admit(name)
        conversation = Conversation(avatar, seat, limits, idle=True)
        session = WebRtcSession(conversation)
        session.on_close = functools.partial(sessions.discard, session)
        sessions.add(session)
        return 200, await session.answer(offer)
    except Exception as exc:  # noqa: BLE001 - this request only
        refusal = exc if isinstance(exc, Refusal) else Refusal.internal(exc)
        if not isinstance(exc, Refusal):
            log.exception("WebRTC session on %s failed", name)
        host.admission.refused(name, refusal.code)
        if session is not None:
            await session.close()
        return refusal.http_status, refusal.http_body()
