"""The avatar in a Pipecat pipeline: :class:`SyncTalkVideoService`, placed after the TTS service.

::

    pipeline = Pipeline([transport.input(), stt, user_agg, llm, tts,
                         SyncTalkVideoService(engine, template="avatars/May"),
                         transport.output(), assistant_agg])

The service feeds the TTS audio into a :class:`~synctalk_fast.Stream` on a
shared :class:`~synctalk_fast.Engine` (services on one engine are batched
together) and, for each video frame the stream makes, pushes
``OutputImageRawFrame(image=<RGB bytes>, size=(width, height), format="RGB")``
followed by that frame's audio as a ``TTSAudioRawFrame`` at the TTS's own
sample rate and channel count, cut sample-exactly from the audio that came in
(:mod:`synctalk_fast.integrations.common`). Images are exactly the frames
offline generation makes of the same speech (the stream's contract).

Order. Downstream, everything leaves in the order it came, with each
utterance's images and audio in the place of its audio:

- an utterance starts with the first ``TTSAudioRawFrame`` after the previous
  one ended, and ends at ``TTSStoppedFrame``, at the next ``TTSStartedFrame``,
  at a change of sample rate or channel count, or at ``EndFrame`` (one
  shorter than 0.19 s is padded with silence for the stream, so that it
  makes frames: those past its audio carry none);
- a data or control frame leaves after the audio that came before it: a
  ``TTSStartedFrame`` before its utterance's first image, a
  ``TTSStoppedFrame`` after its last audio, a ``TTSTextFrame`` beside the
  40 ms of audio that was current when it came;
- system frames (other than those below) and upstream frames are not held.

Interruptions. An ``InterruptionFrame`` drops every utterance not yet shown
(:meth:`~synctalk_fast.Stream.interrupt`) and every interruptible frame held behind them,
then passes on: no image or audio of the interrupted utterances follows it.
The template sweep continues from the last frame shown.

Idle. With ``idle=True`` the template's own frames (no audio) leave at 25
frames/s, paced in real time, while nobody speaks; speech resumes where the
sweep is. Speech images are marked ``sync_with_audio=True`` (an output
transport shows each after the audio before it has been played), idle images
are not.

Failures. Should the stream fail (its engine, say), the error is pushed
upstream and from then on frames pass as they come: the user still hears the
agent, without images.

Threads and the event loop. The stream's feature thread and the engine's
workers do the work; the service's one task (made at ``StartFrame``) waits
for frames without a thread (``async for`` on the stream). Everything the
service does to its own state happens on the event loop in steps with no
await inside, and every push of a frame downstream happens under one
``asyncio.Lock``, so an image and its audio are never split by another frame
of the service and an ``InterruptionFrame`` never overtakes a frame already
leaving.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass
from typing import Any

import cv2

from ..engine import Engine
from ..errors import AudioError
from ..features import FPS
from ..stream import Stream, StreamFrame
from ..stream.core import EngineHolder
from ..template import Template, TemplateLike
from .common import Utterance, Utterances, avatar_template

try:
    from pipecat.frames import frames as _frames
    from pipecat.frames.frames import (
        CancelFrame,
        EndFrame,
        Frame,
        InterruptionFrame,
        OutputImageRawFrame,
        StartFrame,
        SystemFrame,
        TTSAudioRawFrame,
        TTSStartedFrame,
        TTSStoppedFrame,
    )
    from pipecat.processors.frame_processor import FrameDirection, FrameProcessor, FrameProcessorSetup
except ModuleNotFoundError as exc:  # only a missing pipecat is worded as such
    if (exc.name or "").split(".")[0] != "pipecat":
        raise
    raise ImportError(
        'synctalk_fast.integrations.pipecat needs Pipecat: pip install "synctalk-fast[pipecat]"'
    ) from None

__all__ = ["SyncTalkVideoService"]

log = logging.getLogger("synctalk_fast.integrations.pipecat")

_FPS = int(FPS["ave"])  # 25: the streaming model's frame rate


@dataclass(eq=False)
class _Held:
    """A frame (or, with ``frame`` None, a waiter) held behind the utterance before it.

    ``after``: it leaves once that many bytes of that utterance's audio have left
    (None: once all of it has).
    """

    frame: Frame | None
    after: int | None
    waiter: asyncio.Future[None] | None = None


#: Frames an interruption does not drop, in pipecat releases before ``Frame.interruptible``.
_UNINTERRUPTIBLE: Any = getattr(_frames, "UninterruptibleFrame", None)


def _interruptible(frame: Frame) -> bool:
    """Whether an interruption drops ``frame`` from the frames held."""
    value = getattr(frame, "interruptible", None)  # a field of every frame in recent pipecat 1.x
    if value is not None:
        return bool(value)
    return _UNINTERRUPTIBLE is None or not isinstance(frame, _UNINTERRUPTIBLE)


class SyncTalkVideoService(FrameProcessor):
    """The lip-synced avatar of a Pipecat voice agent, run in-process.

    Place it after the TTS service. It takes ``TTSStartedFrame``,
    ``TTSAudioRawFrame`` (any sample rate, any channel count, any chunk
    size), ``TTSStoppedFrame`` (the end of the utterance), ``InterruptionFrame``
    (barge-in) and ``StartFrame`` / ``EndFrame`` / ``CancelFrame``, and
    pushes, for each video frame of speech, ``OutputImageRawFrame(image=<RGB
    bytes>, size=(width, height), format="RGB")`` followed by that frame's
    audio as a ``TTSAudioRawFrame`` at the TTS's own rate and channel count
    (the incoming audio frames are not passed on). Every other frame passes
    unchanged and in order; see the module's description for the order and
    for interruptions.

    Parameters
    ----------
    engine : Engine or Pipeline
        An ave engine with an audio encoder, shared by every service (and
        stream) that runs on it: their frames are batched together. Its
        options (runtime, precision, providers, ...) are the service's.
    template : Template, str or os.PathLike, keyword-only
        The person; a folder is loaded with the engine's ``cache_mb`` (or a
        Pipeline's template cache).
    start : int, keyword-only
        Template frame offset (numerics §2), as in :meth:`~synctalk_fast.Pipeline.frames`.
    idle : bool, keyword-only
        While nobody speaks, push the template's own frames (no audio) at 25
        frames/s, paced in real time.
    max_lag : float, optional, keyword-only
        Real-time guard for hardware slower than the frame rate (see
        :class:`~synctalk_fast.Stream`): a frame whose audio arrived more
        than this many seconds before it could be computed is shown as its
        template frame, with its audio. Default None: every frame is lip-synced.
    **kwargs
        Passed to ``FrameProcessor`` (``name=``, ...).

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
    The stream is made (and its sessions warmed up) in :meth:`setup`, off the
    event loop; it is closed at ``EndFrame`` (after the last frame),
    ``CancelFrame`` (at once) or :meth:`cleanup`. Should the stream fail, the
    error is pushed upstream and the audio goes on without images.

    Examples
    --------
    >>> engine = stf.Engine("unet.onnx", "audio_encoder.onnx")              # doctest: +SKIP
    >>> avatar = SyncTalkVideoService(engine, template="avatars/May")          # doctest: +SKIP
    >>> pipeline = Pipeline([transport.input(), stt, user_agg, llm, tts, avatar,
    ...                      transport.output(), assistant_agg])                # doctest: +SKIP
    """

    def __init__(
        self,
        engine: Engine | EngineHolder,
        *,
        template: TemplateLike,
        start: int = 0,
        idle: bool = False,
        max_lag: float | None = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self._template = avatar_template(engine, template, max_lag)
        self._engine = engine
        self._start = int(start)
        self._idle = bool(idle)
        self._max_lag = max_lag
        self._stream: Stream | None = None
        self._utts: Utterances | None = None  # with the stream
        self._pump_task: asyncio.Task[None] | None = None
        self._failed = False  # the stream failed: frames pass on as they come
        # Touched only on the event loop, in steps with no await inside; pushes happen under the lock.
        self._lock = asyncio.Lock()
        # In arrival order: utterances (the first one is being shown) and the frames held behind them.
        self._out: deque[Utterance | _Held] = deque()

    # -- figures -----------------------------------------------------------------
    @property
    def template(self) -> Template:
        """The person."""
        return self._template

    def stats(self) -> dict[str, Any]:
        """The stream's counters and latency figures (:meth:`~synctalk_fast.Stream.stats`); empty
        before :meth:`setup` and once the stream is closed."""
        return self._stream.stats() if self._stream is not None else {}

    # -- life cycle ----------------------------------------------------------------
    # FrameProcessor.setup itself narrows BaseObject.setup's argument (pipecat's own override).
    async def setup(self, setup: FrameProcessorSetup) -> None:  # type: ignore[override, unused-ignore]
        """Make the stream, off the event loop (it warms the engine's sessions up)."""
        await super().setup(setup)
        if self._stream is None:
            self._stream = await asyncio.to_thread(
                Stream, self._engine, template=self._template, start=self._start, idle=self._idle, max_lag=self._max_lag
            )
            self._utts = Utterances(self._stream, fps=_FPS)

    async def cleanup(self) -> None:
        """Close the stream (if ``EndFrame`` or ``CancelFrame`` did not)."""
        await super().cleanup()
        await self._shutdown()
        self._drop_all(keep_uninterruptible=False)

    async def _shutdown(self) -> None:
        """End the service's task and close the stream (its thread ends; the engine stays)."""
        task, self._pump_task = self._pump_task, None
        if task is not None:
            await self.cancel_task(task)
        stream, self._stream = self._stream, None
        if stream is not None:
            await asyncio.to_thread(stream.close, drain=False)

    # -- frames in -----------------------------------------------------------------
    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        """Handle one frame (see the class description)."""
        if isinstance(frame, InterruptionFrame):
            async with self._lock:  # a frame already leaving finishes first
                await super().process_frame(frame, direction)
                await self._interrupt(frame, direction)
            return
        await super().process_frame(frame, direction)
        if isinstance(frame, StartFrame):
            await self.push_frame(frame, direction)
            if self._stream is not None and self._pump_task is None:
                self._pump_task = self.create_task(self._pump(self._stream), name="synctalk_frames")
        elif isinstance(frame, CancelFrame):
            await self._shutdown()
            self._drop_all(keep_uninterruptible=False)
            await self.push_frame(frame, direction)
        elif direction != FrameDirection.DOWNSTREAM or isinstance(frame, SystemFrame):
            await self.push_frame(frame, direction)
        elif isinstance(frame, EndFrame):
            await self._end(frame)
        elif self._utts is None or self._stream is None or self._failed:
            await self.push_frame(frame, direction)  # no avatar: frames go on as they come
        else:
            async with self._lock:
                try:
                    if isinstance(frame, TTSAudioRawFrame):
                        self._add_audio(self._utts, frame)
                    else:
                        if isinstance(frame, (TTSStartedFrame, TTSStoppedFrame)):
                            self._utts.end()
                        self._hold(frame)
                except Exception:  # noqa: BLE001 - the stream failed: its task reports the error
                    await self._give_up()
                    await self.push_frame(frame, direction)
                    return
                await self._release()

    def _add_audio(self, utts: Utterances, frame: TTSAudioRawFrame) -> None:
        """TTS audio into the open utterance (a new one after the last ended, or at a change of
        format). A chunk the stream refuses is held as any other frame: it leaves as it came, in order."""
        opened = utts.open
        try:
            utt = utts.add(frame.audio, frame.sample_rate, frame.num_channels, tag=frame.context_id)
        except AudioError as exc:
            log.warning("TTS audio passed on without images: %s", exc)
            self._hold(frame)
            return
        if utt is not None and utt is not opened:
            self._out.append(utt)

    def _hold(self, frame: Frame | None, waiter: asyncio.Future[None] | None = None) -> None:
        """Queue ``frame`` behind the audio that came before it (the open utterance's, or all of the last)."""
        utts = self._utts
        after = utts.open.audio.received if utts is not None and utts.open is not None else None
        self._out.append(_Held(frame, after, waiter))

    async def _end(self, frame: EndFrame) -> None:
        """``EndFrame``: end the open utterance, let everything before it leave, close the stream, pass it on."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        async with self._lock:
            try:
                if self._utts is not None and not self._failed:
                    self._utts.end()
                self._hold(None, waiter)
                await self._release()
            except Exception:  # noqa: BLE001 - the stream failed: its task reports the error
                await self._give_up()
        await waiter  # resolved when all before it has left, at an interruption, or if the stream fails
        async with self._lock:
            await self._shutdown()
            await self.push_frame(frame)

    async def _interrupt(self, frame: InterruptionFrame, direction: FrameDirection) -> None:
        """Barge-in (under the lock), whichever way the frame goes (an interruption is broadcast
        both ways from where it starts): drop what is not shown yet, pass the frame on."""
        if self._utts is not None and self._stream is not None:
            self._utts.interrupt()
        kept = self._drop_all(keep_uninterruptible=True)
        await self.push_frame(frame, direction)
        for item in kept:
            await self._deliver(item)

    def _drop_all(self, *, keep_uninterruptible: bool) -> list[_Held]:
        """Forget every utterance and held frame; waiters are resolved. Returns the
        uninterruptible frames held (for the caller to deliver) if asked."""
        kept = [
            item
            for item in self._out
            if isinstance(item, _Held)
            and keep_uninterruptible
            and item.frame is not None
            and not _interruptible(item.frame)
        ]
        for item in self._out:
            if isinstance(item, _Held) and item.waiter is not None and not item.waiter.done():
                item.waiter.set_result(None)
        self._out.clear()
        if self._utts is not None:
            self._utts.forget_all()
        return kept

    # -- frames out (under the lock) ----------------------------------------------------
    async def _deliver(self, item: _Held) -> None:
        if item.frame is not None:
            await self.push_frame(item.frame)
        elif item.waiter is not None and not item.waiter.done():
            item.waiter.set_result(None)

    async def _push_audio(self, utt: Utterance, data: bytes) -> None:
        if data:
            context_id = utt.tag if isinstance(utt.tag, str) else None
            audio = TTSAudioRawFrame(
                audio=data, sample_rate=utt.audio.sample_rate, num_channels=utt.audio.channels, context_id=context_id
            )
            await self.push_frame(audio)

    async def _release_beside(self, utt: Utterance) -> None:
        """Deliver the frames held right behind ``utt`` (at the head) whose audio has left."""
        while len(self._out) > 1:
            item = self._out[1]
            if not isinstance(item, _Held) or item.after is None or item.after > utt.audio.sent:
                return
            del self._out[1]
            await self._deliver(item)

    async def _release(self) -> None:
        """Deliver the held frames at the head, up to the first utterance still to be shown
        (and those beside the part of its audio that has left)."""
        while self._out:
            head = self._out[0]
            if isinstance(head, _Held):
                self._out.popleft()
                await self._deliver(head)
            else:
                await self._release_beside(head)
                return

    async def _show(self, f: StreamFrame) -> None:
        """Push one frame of the stream (under the lock), and what may follow it."""
        if f.idle:
            await self.push_frame(self._image(f, sync_with_audio=False))
            return
        utts = self._utts
        utt = utts.get(f.utterance) if utts is not None else None
        if utts is None or utt is None:  # interrupted while this frame was on its way
            return
        while self._out and self._out[0] is not utt:  # never the case: utterances leave in order
            head = self._out.popleft()
            if isinstance(head, _Held):
                await self._deliver(head)
            else:
                await self._push_audio(head, head.audio.cut(last=True))
                utts.forget(head)
        await self.push_frame(self._image(f, sync_with_audio=True))
        await self._push_audio(utt, utt.audio.cut(last=f.last))
        if f.last:
            self._out.popleft()
            utts.forget(utt)
            await self._release()
        else:
            await self._release_beside(utt)

    def _image(self, f: StreamFrame, *, sync_with_audio: bool) -> OutputImageRawFrame:
        height, width = f.image.shape[:2]
        rgb = cv2.cvtColor(f.image, cv2.COLOR_BGR2RGB)
        frame = OutputImageRawFrame(image=rgb.tobytes(), size=(width, height), format="RGB")
        frame.sync_with_audio = sync_with_audio
        return frame

    async def _pump(self, stream: Stream) -> None:
        """The service's task: each frame of the stream, as soon as it is made."""
        try:
            async for f in stream:
                async with self._lock:
                    await self._show(f)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - reported upstream; the audio goes on without images
            async with self._lock:
                await self._give_up()
            await self.push_error(f"{self}: the avatar stream failed: {exc}", exception=exc)

    async def _give_up(self) -> None:
        """The stream failed (under the lock): from now on frames pass as they come; what is
        held leaves now, in order, the audio without images."""
        self._failed = True
        while self._out:
            head = self._out.popleft()
            if isinstance(head, _Held):
                await self._deliver(head)
            else:
                await self._push_audio(head, head.audio.cut(last=True))
        if self._utts is not None:
            self._utts.forget_all()
