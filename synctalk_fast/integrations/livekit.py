"""The avatar in a LiveKit agent: :class:`SyncTalkVideoGenerator` and :class:`SyncTalkAvatarSession`.

::

    session = AgentSession(stt=..., llm=..., tts=...)
    avatar = SyncTalkAvatarSession(engine, template="avatars/May")
    await avatar.start(session, room=ctx.room)
    await session.start(agent=Agent(instructions=...), room=ctx.room)

:class:`SyncTalkVideoGenerator` is a ``livekit.agents.voice.avatar.VideoGenerator``: the agent's
audio goes in through :meth:`~SyncTalkVideoGenerator.push_audio` (``rtc.AudioFrame`` of any rate
and channel count, then ``AudioSegmentEnd`` at the end of the utterance) into a
:class:`~synctalk_fast.Stream` on a shared :class:`~synctalk_fast.Engine`; ``async for item in
generator`` yields, for each video frame of speech, an ``rtc.VideoFrame`` (RGB24) and then that
frame's ``rtc.AudioFrame`` at the rate and channel count that came in, cut sample-exactly from it
(:mod:`synctalk_fast.integrations.common`), then ``AudioSegmentEnd`` after the last frame of each
utterance; while nobody speaks (``idle=True``), the template's own frames at 25 frames/s, paced
in real time. Images are exactly the frames offline generation makes of the same speech.

:meth:`~SyncTalkVideoGenerator.clear_buffer` is barge-in: the stream drops everything not yet
out, and nothing of the cleared utterance is yielded after it (no stale ``AudioSegmentEnd``, so
the agent's playback-finished event fires once, from the runner's clear, and the next
utterance is not cut short).

:class:`SyncTalkAvatarSession` wires it as local avatar plug-ins do: a ``QueueAudioOutput``
replaces the agent's audio output, and an ``AvatarRunner`` in the agent's own process
publishes the frames to the room (``AvatarOptions`` from the template's size, 25 frames/s).

Everything runs on the agent's event loop in steps with no await inside, except the stream's
own threads (features, the engine's workers), which the iteration waits for without a thread.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import cv2

from ..engine import Engine
from ..errors import AudioError
from ..features import FPS
from ..stream import Stream, StreamFrame
from ..stream.core import EngineHolder
from ..template import Template, TemplateLike
from .common import Utterances, avatar_template

try:
    from livekit import rtc
    from livekit.agents import AgentSession, get_job_context
    from livekit.agents.voice.avatar import (
        AudioSegmentEnd,
        AvatarOptions,
        AvatarRunner,
        QueueAudioOutput,
        VideoGenerator,
    )
except ModuleNotFoundError as exc:  # only a missing livekit is worded as such
    if (exc.name or "").split(".")[0] != "livekit":
        raise
    raise ImportError(
        'synctalk_fast.integrations.livekit needs LiveKit Agents: pip install "synctalk-fast[livekit]"'
    ) from None

__all__ = ["SyncTalkVideoGenerator", "SyncTalkAvatarSession"]

log = logging.getLogger("synctalk_fast.integrations.livekit")

_FPS = int(FPS["ave"])  # 25: the streaming model's frame rate


class SyncTalkVideoGenerator(VideoGenerator):
    """The lip-synced avatar as LiveKit's ``VideoGenerator``, run in the agent's process.

    Parameters
    ----------
    engine : Engine or Pipeline
        An ave engine with an audio encoder, shared by every generator (and stream) that runs
        on it: their frames are batched together. Its options (runtime, precision,
        providers, ...) are the generator's.
    template : Template, str or os.PathLike, keyword-only
        The person.
    start : int, keyword-only
        Template frame offset (numerics §2).
    idle : bool, keyword-only
        While nobody speaks, yield the template's own frames (no audio) at 25 frames/s, paced
        in real time (an avatar track keeps moving).
    max_lag : float, optional, keyword-only
        Real-time guard for hardware slower than the frame rate (see
        :class:`~synctalk_fast.Stream`). Default None: every frame is lip-synced.

    Raises
    ------
    ValueError
        ``max_lag`` below 0.
    FeatureError
        The engine has no ave U-Net or no audio encoder.
    TemplateError
        ``template`` is not a template folder.

    Notes
    -----
    The constructor makes the stream and warms the engine's sessions up (it blocks: from a
    running event loop, make it with ``await asyncio.to_thread(SyncTalkVideoGenerator, ...)``,
    as :class:`SyncTalkAvatarSession` does). One consumer iterates it. :meth:`aclose` closes the
    stream; its iteration then ends. Should the stream fail, the iteration raises its error.
    """

    def __init__(
        self,
        engine: Engine | EngineHolder,
        *,
        template: TemplateLike,
        start: int = 0,
        idle: bool = True,
        max_lag: float | None = None,
    ):
        self._template = avatar_template(engine, template, max_lag)
        self._stream = Stream(engine, template=self._template, start=start, idle=idle, max_lag=max_lag)
        self._utts = Utterances(self._stream, fps=_FPS)

    # -- figures -----------------------------------------------------------------
    @property
    def template(self) -> Template:
        """The person."""
        return self._template

    @property
    def video_size(self) -> tuple[int, int]:
        """(width, height) of the frames."""
        width, height = self._template.size
        return int(width), int(height)

    @property
    def video_fps(self) -> float:
        """Frames per second (25)."""
        return float(_FPS)

    def stats(self) -> dict[str, Any]:
        """The stream's counters and latency figures (:meth:`~synctalk_fast.Stream.stats`)."""
        return self._stream.stats()

    # -- VideoGenerator ------------------------------------------------------------
    async def push_audio(self, frame: rtc.AudioFrame | AudioSegmentEnd) -> None:
        """Speech in: an ``rtc.AudioFrame`` (int16, any rate and channel count) goes to the
        utterance (a new one after the last ended), ``AudioSegmentEnd`` ends it.

        Parameters
        ----------
        frame : rtc.AudioFrame or AudioSegmentEnd
            int16 samples, interleaved; or the end of the utterance.

        Notes
        -----
        A frame the stream refuses (a bad format) is logged and dropped: an error here would end
        the runner's audio task.
        """
        if isinstance(frame, AudioSegmentEnd):
            self._utts.end()
            return
        try:
            self._utts.add(frame.data.tobytes(), frame.sample_rate, frame.num_channels)
        except AudioError as exc:
            log.warning("audio frame dropped: %s", exc)

    def clear_buffer(self) -> None:
        """Barge-in: drop every frame not yet yielded; nothing of the cleared utterances
        follows (their ``AudioSegmentEnd`` included). The sweep continues from the last frame."""
        self._utts.interrupt()

    def __aiter__(self) -> AsyncIterator[rtc.VideoFrame | rtc.AudioFrame | AudioSegmentEnd]:
        """Frames as they are made: video, then its audio; ``AudioSegmentEnd`` after each
        utterance's last frame; idle video frames while nobody speaks. Ends after :meth:`aclose`."""
        return self._items()

    async def _items(self) -> AsyncIterator[rtc.VideoFrame | rtc.AudioFrame | AudioSegmentEnd]:
        utts = self._utts
        async for f in self._stream:
            if f.idle:
                yield self._video(f)
                continue
            utt = utts.get(f.utterance)
            if utt is None:  # cleared while this frame was on its way
                continue
            yield self._video(f)
            # Each yield lets the agent run, and a clear_buffer may come: look again after it.
            if utts.get(f.utterance) is not utt:
                continue
            data = utt.audio.cut(last=f.last)
            if data:
                audio = utt.audio
                yield rtc.AudioFrame(data, audio.sample_rate, audio.channels, len(data) // audio.width)
            if f.last and utts.get(f.utterance) is utt:
                utts.forget(utt)
                yield AudioSegmentEnd()

    @staticmethod
    def _video(f: StreamFrame) -> rtc.VideoFrame:
        height, width = f.image.shape[:2]
        rgb = cv2.cvtColor(f.image, cv2.COLOR_BGR2RGB)
        return rtc.VideoFrame(width, height, rtc.VideoBufferType.RGB24, rgb.tobytes())

    async def aclose(self) -> None:
        """Close the stream (its thread ends; the engine stays); the iteration ends."""
        self._utts.forget_all()
        await asyncio.to_thread(self._stream.close, drain=False)


class SyncTalkAvatarSession:
    """The avatar of a LiveKit agent, in the agent's own process: a :class:`SyncTalkVideoGenerator`
    behind a ``QueueAudioOutput`` and an ``AvatarRunner``, as local avatar plug-ins are wired.

    Parameters
    ----------
    engine : Engine or Pipeline
        Shared by every agent in the process (their frames are batched together).
    template : Template, str or os.PathLike, keyword-only
        The person.
    start, idle, max_lag
        As :class:`SyncTalkVideoGenerator`'s.
    sample_rate : int, keyword-only
        Sample rate of the avatar's audio track: the agent's audio output resamples the TTS to
        it (mono), and the generator hands it on unchanged.

    Examples
    --------
    >>> avatar = SyncTalkAvatarSession(engine, template="avatars/May")  # doctest: +SKIP
    >>> await avatar.start(session, room=ctx.room)                       # doctest: +SKIP
    """

    def __init__(
        self,
        engine: Engine | EngineHolder,
        *,
        template: TemplateLike,
        start: int = 0,
        idle: bool = True,
        max_lag: float | None = None,
        sample_rate: int = 24000,
    ):
        self._template = avatar_template(engine, template, max_lag)
        if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate <= 0:
            raise ValueError(f"sample_rate must be a positive integer, got {sample_rate!r}")
        self._engine = engine
        self._start, self._idle, self._max_lag = int(start), bool(idle), max_lag
        self.sample_rate = sample_rate
        self.generator: SyncTalkVideoGenerator | None = None
        self.audio_output: QueueAudioOutput | None = None
        self.runner: AvatarRunner | None = None

    async def start(self, agent_session: AgentSession, room: rtc.Room) -> None:
        """Make the generator (off the event loop: it warms the engine up), start the runner on
        ``room``, and make the avatar the agent's audio output. In a job, :meth:`aclose` runs at
        its shutdown."""
        generator = await asyncio.to_thread(
            SyncTalkVideoGenerator,
            self._engine,
            template=self._template,
            start=self._start,
            idle=self._idle,
            max_lag=self._max_lag,
        )
        self.generator = generator
        width, height = generator.video_size
        options = AvatarOptions(
            video_width=width,
            video_height=height,
            video_fps=generator.video_fps,
            audio_sample_rate=self.sample_rate,
            audio_channels=1,
        )
        self.audio_output = QueueAudioOutput(sample_rate=self.sample_rate)
        self.runner = AvatarRunner(room, audio_recv=self.audio_output, video_gen=generator, options=options)
        await self.runner.start()
        agent_session.output.audio = self.audio_output
        job = get_job_context(required=False)
        if job is not None:
            job.add_shutdown_callback(self.aclose)

    async def aclose(self) -> None:
        """Stop the runner and close the generator's stream."""
        runner, self.runner = self.runner, None
        if runner is not None:
            await runner.aclose()
        generator, self.generator = self.generator, None
        if generator is not None:
            await generator.aclose()
