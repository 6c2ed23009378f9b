"""WebRTC sessions of the avatar server: a browser's microphone in, the
avatar's video and the speech's audio out (aiortc).

``POST /v1/avatars/{name}/webrtc`` takes an SDP offer (``{"sdp", "type"}``)
with an audio track and answers with a 25 fps video track and an audio
track made from the same stream frames (each frame's 40 ms of speech, or
silence for idle frames), so picture and sound leave together. A data
channel carries ``{"type": "interrupt"}`` (barge-in).

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
import json
import logging
import time
from collections import deque
from fractions import Fraction

import av
import numpy as np

from .errors import AudioError
from .stream import Stream

try:
    from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
    from aiortc.mediastreams import MediaStreamError
except ImportError:  # the server without its WebRTC part: POST .../webrtc answers 501
    MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription = object, None, None, None
    MediaStreamError = Exception

__all__ = ["VoiceGate", "WebRtcSession", "available"]

log = logging.getLogger(__name__)

_VIDEO_CLOCK = 90000  # RTP clock of video
_STATES_DONE = ("failed", "closed")


def available() -> bool:
    """Whether aiortc is installed."""
    return RTCPeerConnection is not None


class VoiceGate:
    """Splits a continuous microphone signal into utterances by energy.

    ``feed(samples)`` (mono float32 at ``rate``) returns what to do: the
    samples to push (pre-roll included when a voice starts) and whether to
    flush after them.
    """

    threshold = 0.01  # RMS of a 20 ms block, about -40 dBFS
    preroll = 0.2  # seconds kept before a voice starts
    hangover = 0.6  # seconds of quiet that end an utterance

    def __init__(self, rate: int):
        self.rate = rate
        self.speaking = False
        self.quiet = 0.0
        self._before: deque[np.ndarray] = deque()
        self._before_len = 0

    def feed(self, samples: np.ndarray) -> tuple[np.ndarray | None, bool]:
        loud = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64)))) > self.threshold if len(samples) else False
        seconds = len(samples) / self.rate
        if not self.speaking:
            if not loud:
                self._before.append(samples)
                self._before_len += len(samples)
                while self._before and self._before_len - len(self._before[0]) >= self.preroll * self.rate:
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
        self.speaking, self.quiet = False, 0.0


class _Outgoing(MediaStreamTrack):
    """A track fed from a queue by the session's frame pump."""

    def __init__(self) -> None:
        super().__init__()
        self.queue: asyncio.Queue = asyncio.Queue(50)

    async def recv(self):
        if self.readyState != "live":
            raise MediaStreamError
        frame = await self.queue.get()
        if frame is None:
            self.stop()
            raise MediaStreamError
        return frame


class _VideoOut(_Outgoing):
    kind = "video"


class _AudioOut(_Outgoing):
    kind = "audio"


class WebRtcSession:
    """One browser conversation over WebRTC on an avatar's engine.

    Parameters
    ----------
    engine, template
        The avatar's engine and template.
    on_frame : callable, optional
        ``on_frame(frame)`` for each frame sent (metrics).
    on_close : callable, optional
        Called once when the session ends.
    """

    def __init__(self, engine, template, *, on_frame=None, on_close=None):
        if not available():
            raise RuntimeError("WebRTC needs aiortc: pip install 'synctalk-fast[serve]'")
        self.engine, self.template = engine, template
        self.on_frame, self.on_close = on_frame, on_close
        # No STUN / TURN servers: aiortc's default asks a public STUN server on
        # every session; the server offers its own host candidates only.
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.video, self.audio = _VideoOut(), _AudioOut()
        self.stream: Stream | None = None
        self.tasks: list[asyncio.Task] = []
        self.closed = asyncio.Event()
        self.frames_sent = 0
        self.lipsync_frames = 0
        self._gate = VoiceGate(48000)  # remade at the microphone's own rate

    async def answer(self, offer: dict) -> dict:
        """The SDP answer to a browser's ``offer`` (``{"sdp", "type": "offer"}``).

        Raises
        ------
        ValueError
            Not an SDP offer, or one without an audio track.
        """
        if not isinstance(offer, dict) or offer.get("type") != "offer" or not isinstance(offer.get("sdp"), str):
            raise ValueError('expected {"sdp": "...", "type": "offer"}')
        if "m=audio" not in offer["sdp"]:
            raise ValueError("the offer has no audio track (the microphone drives the avatar)")
        loop = asyncio.get_running_loop()
        self.stream = await loop.run_in_executor(None, lambda: Stream(
            self.engine, template=self.template, idle=True, layout="throughput", warmup=False))
        pc = self.pc

        @pc.on("track")
        def on_track(track):
            if track.kind == "audio":
                self.tasks.append(asyncio.ensure_future(self._listen(track)))

        @pc.on("datachannel")
        def on_datachannel(channel):
            @channel.on("message")
            def on_message(message):
                try:
                    kind = json.loads(message).get("type")
                except (ValueError, AttributeError):
                    kind = None
                if kind == "interrupt":
                    self.stream.interrupt()
                    self._gate.reset()
                    for q in (self.video.queue, self.audio.queue):
                        while not q.empty():
                            q.get_nowait()

        @pc.on("connectionstatechange")
        async def on_state():
            if pc.connectionState in _STATES_DONE:
                await self.close()

        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer["sdp"], type="offer"))
        pc.addTrack(self.video)  # takes the offer's video transceiver (recvonly on the browser's side)
        pc.addTrack(self.audio)  # and its audio one, next to the microphone
        await pc.setLocalDescription(await pc.createAnswer())
        self.tasks.append(asyncio.ensure_future(self._pump()))
        return {"sdp": pc.localDescription.sdp, "type": pc.localDescription.type}

    async def _listen(self, track) -> None:
        """Microphone frames -> voice gate -> the stream."""
        try:
            while True:
                frame = await track.recv()
                rate = frame.sample_rate
                if self._gate.rate != rate:
                    self._gate = VoiceGate(rate)
                gate = self._gate
                pcm = frame.to_ndarray()
                channels = len(frame.layout.channels)
                if frame.format.name not in ("s16", "s16p"):
                    raise AudioError(f"unexpected microphone sample format {frame.format.name}")
                mono = pcm.reshape(-1, channels).mean(axis=1) if frame.format.name == "s16" else pcm.mean(axis=0)
                samples = (mono / 32768.0).astype(np.float32)
                push, flush = gate.feed(samples)
                if push is not None:
                    self.stream.push_audio(push, sample_rate=rate)
                if flush:
                    try:
                        self.stream.flush()
                    except AudioError:  # a click shorter than one encoder window
                        pass
        except MediaStreamError:
            return

    async def _pump(self) -> None:
        """Stream frames -> the video and audio tracks, paced at the frame rate."""
        fps = self.stream.fps
        base = None
        try:
            async for f in self.stream:
                now = time.monotonic()
                if base is None or now - (base + f.index / fps) > 0.5:
                    base = now - f.index / fps  # start, or re-anchor after a stall (no burst to catch up)
                due = base + f.index / fps
                if due > now:
                    await asyncio.sleep(due - now)
                video = av.VideoFrame.from_ndarray(f.image, format="bgr24")
                video.pts, video.time_base = int(round(f.index * _VIDEO_CLOCK / fps)), Fraction(1, _VIDEO_CLOCK)
                pcm = (np.clip(f.audio, -1.0, 1.0) * 32767).astype(np.int16)
                audio = av.AudioFrame.from_ndarray(pcm[None, :], format="s16", layout="mono")
                audio.sample_rate = 16000
                audio.pts, audio.time_base = f.index * len(pcm), Fraction(1, 16000)
                for q, item in ((self.video.queue, video), (self.audio.queue, audio)):
                    if q.full():  # the peer is not taking frames: keep the newest
                        q.get_nowait()
                    q.put_nowait(item)
                self.frames_sent += 1
                self.lipsync_frames += not f.idle
                if self.on_frame is not None:
                    self.on_frame(f)
        finally:
            for q in (self.video.queue, self.audio.queue):
                if q.full():
                    q.get_nowait()
                q.put_nowait(None)

    async def close(self) -> None:
        """End the session (idempotent): the stream, the tasks, the peer connection."""
        if self.closed.is_set():
            return
        self.closed.set()
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.stream is not None:
            stream = self.stream
            await asyncio.get_running_loop().run_in_executor(None, lambda: stream.close(drain=False))
        await self.pc.close()
        if self.on_close is not None:
            self.on_close()
