"""The :class:`Stream`: audio chunks in, lip-synced frames out, as soon as each
frame can be computed, exactly the frames offline generation makes.

A stream runs on an :class:`~synctalk_fast.engine.Engine` (shared with
pipelines and other streams) and the same kernels as offline generation. It
ties together, around one :class:`~.state.StreamState`:

- the caller's :meth:`Stream.push_audio`, through the chunk converter
  (:mod:`.convert`), into the open utterance (:mod:`.utterance`);
- the feature thread (:mod:`~synctalk_fast.stream.features`): features -> jobs;
- the engine's workers, through the stream's work source (:mod:`.work`);
- the consumer, through the emitter (:mod:`.emit`): :meth:`Stream.frames`
  in a thread, or ``async for f in stream`` on an event loop.

Exactness (numerics §1). Mel frame ``t`` covers samples ``200 t - 400 .. 200 t +
399``: once ``200 t + 400`` samples have arrived it is final, and it is
computed by :func:`~synctalk_fast.mel_spectrogram` on a slice starting at a
multiple of 200 samples whose own padding and pre-emphasis do not reach
frame ``t``. Window ``i`` (mel frames ``s .. s + 15``, ``s =
int(80.0 * (i / 25.0))``) is final when its last mel frame is; video frame
``i`` reads feature rows ``i - 8 .. i + 7`` (row ``r`` is embedding ``r -
1``), so it needs window ``i + 6``: about ``0.04 i + 0.45`` s of audio. The
end of an utterance (its window count, the windows moved back to ``T - 16``,
the end padding of the STFT and the repeated last embedding of numerics §1.8) is
only known at :meth:`Stream.flush`, which computes the rest. Every value is
the one offline generation computes; ONNX Runtime's CPU results do not
depend on the batch composition, so the frames are identical.

Positions. Each frame the stream emits (lip-synced or idle) takes the next
position of the template's ping-pong sweep (numerics §2), so the person keeps
moving naturally across utterances, pauses and interruptions.

Threads and locks: the input lock (the chunk converter's) is taken before
the state's lock, never after; the state's lock before the engine's. One
feature thread per stream (ended by :meth:`Stream.close`), the engine's
workers (shared), and no thread for an asyncio consumer. The invariants of
the shared state (generations, ``max_ready``) are stated in :mod:`.state`.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any, Protocol, TypeAlias

from .._filters import SAMPLE_RATE
from ..engine import Engine, EngineOptions, StepItem
from ..errors import AudioError, FeatureError
from ..features import FPS
from ..models.session import ModelSession
from ..template import Template, TemplateLike
from .convert import AudioChunk, ChunkConverter
from .emit import END, Emitter
from .features import FeatureThread
from .frame import StreamFrame
from .state import StreamState
from .work import JobSource

__all__ = ["Stream", "StreamFrame", "EngineHolder", "EngineLike", "TemplateLike"]

log = logging.getLogger("synctalk_fast.stream")


class EngineHolder(Protocol):
    """What a :class:`~synctalk_fast.Pipeline` offers a stream: its engine and its template cache."""

    engine: Engine

    def template(self, template: Any) -> Template: ...


#: What :class:`Stream` runs on: an engine, a pipeline, or a U-Net ONNX file to build an engine from.
EngineLike: TypeAlias = Engine | EngineHolder | str | os.PathLike[str]


def _engine_and_template(
    engine: EngineLike,
    template: TemplateLike,
    audio_encoder: Any,
    options: EngineOptions | None,
    engine_options: dict[str, Any],
) -> tuple[Engine, Template, bool]:
    """The stream's engine, its template, and whether the stream owns the engine (built it)."""
    opts = EngineOptions.merge(options, engine_options, where="Stream")  # unknown names: TypeError
    owned = False
    if isinstance(engine, (str, os.PathLike)):
        built, owned = Engine(engine, audio_encoder, options=opts), True
    else:
        given = [
            name
            for name, value in (("options", options), ("audio_encoder", audio_encoder), *engine_options.items())
            if value is not None
        ]
        if given:
            raise ValueError(
                f"Stream: {', '.join(given)} apply only to an engine built from a U-Net path; "
                "set them on the Engine or Pipeline given"
            )
        if isinstance(engine, Engine):
            built = engine
        else:  # a Pipeline: its engine and its template cache
            template = engine.template(template)
            built = engine.engine
    if not isinstance(template, Template):
        template = Template(template, cache_mb=built.options.cache_mb)
    return built, template, owned


class Stream:
    """Real-time lip-sync: push speech in chunks, get frames as soon as they
    can be computed, exactly the frames offline generation makes.

    Parameters
    ----------
    engine : Engine, Pipeline, str or os.PathLike
        An ave engine with an audio encoder (its sessions and batch size are
        used; several streams may share one), a pipeline (its engine and
        its template cache), or a U-Net ONNX file: the stream then builds
        its own engine with ``audio_encoder`` and the engine options (and
        closes it at the end).
    template : Template, str or os.PathLike, keyword-only
        The person; a folder is loaded with the engine options' ``cache_mb``.
    audio_encoder : str or os.PathLike, optional, keyword-only
        The audio encoder of an engine built from a U-Net path.
    start : int, keyword-only
        Template frame offset (numerics §2), as in :meth:`Pipeline.frames`.
    idle : bool, keyword-only
        While no speech is pending, :meth:`frames` with ``follow=True``
        emits the template frames untouched at the frame rate (the person
        idles as recorded), continuing the ping-pong sweep.
    max_ready : int, optional, keyword-only
        Frames in compute or waiting for the consumer, at most (default:
        twice the batch size times the sessions, at least 8). Audio keeps
        being accepted beyond it, as features (2 KB a frame); only the
        images wait.
    feather : int, keyword-only
        Soft paste band in pixels (0: the reference's hard paste).
    max_lag : float, optional, keyword-only
        Real-time guard for hardware slower than the frame rate: a frame
        whose audio arrived more than this many seconds before a U-Net
        session could take it is emitted as its template frame instead
        (``skipped``, counted in :meth:`stats`, logged once), so the lag
        stays near ``max_lag`` plus one batch's compute instead of growing.
        Default None: every frame is lip-synced, however late.
    layout : {"auto", "throughput", "latency"}, keyword-only
        The engine's sessions that serve the stream (see
        :meth:`Engine.choose_layout`). "throughput": one session per core
        on CPU (the most frames per second when behind); "latency": one
        session on every core (each frame done soonest, when the hardware
        keeps up); "auto" (default): "latency" if that session measures at
        least 1.25 x the frame rate on this machine, else "throughput". On
        a GPU there is one session and this changes nothing.
    warmup : bool, keyword-only
        Run each session once now, so that the first frame does not pay
        for ONNX Runtime's first-run setup (or a TensorRT engine build).
    options : EngineOptions, optional, keyword-only
        How an engine built from a U-Net path runs.
    **engine_options
        Fields of :class:`~synctalk_fast.engine.EngineOptions` by name, over
        ``options`` (for an engine built from a U-Net path).

    Raises
    ------
    ValueError
        ``options``, ``audio_encoder`` or engine options with an Engine or
        Pipeline; a bad ``max_ready``, ``max_lag`` or ``layout``.
    TypeError
        An unknown keyword.
    FeatureError
        The engine has no ave U-Net or no audio encoder.

    Examples
    --------
    >>> stream = stf.Stream(pipe, template="dataset/May")        # doctest: +SKIP
    >>> stream.push_audio(chunk, sample_rate=24000)               # doctest: +SKIP
    >>> for f in stream.frames():  # the frames this audio makes  # doctest: +SKIP
    ...     show(f.image, f.audio)
    >>> stream.flush()                                            # doctest: +SKIP
    >>> for f in stream.frames(): ...                             # doctest: +SKIP

    Notes
    -----
    ``push_audio``, ``flush``, ``interrupt`` and ``close`` are thread-safe
    and never wait for compute. One consumer iterates the frames, in the
    caller's thread (``frames()``) or in asyncio (``async for f in
    stream``). Close the stream (``close()`` or a ``with`` block) to end
    its thread.
    """

    def __init__(
        self,
        engine: EngineLike,
        *,
        template: TemplateLike,
        audio_encoder: str | os.PathLike[str] | ModelSession | None = None,
        start: int = 0,
        idle: bool = False,
        max_ready: int | None = None,
        feather: int = 0,
        max_lag: float | None = None,
        layout: str = "auto",
        warmup: bool = True,
        options: EngineOptions | None = None,
        **engine_options: Any,
    ):
        eng, tpl, self._owns_engine = _engine_and_template(engine, template, audio_encoder, options, engine_options)
        try:
            self._check(eng, max_ready, max_lag)
            self._setup(
                eng,
                tpl,
                start=start,
                idle=idle,
                max_ready=max_ready,
                feather=feather,
                max_lag=max_lag,
                layout=layout,
                warmup=warmup,
            )
        except BaseException:
            if self._owns_engine:
                eng.close()
            raise

    @staticmethod
    def _check(engine: Engine, max_ready: int | None, max_lag: float | None) -> None:
        if engine.mode != "ave":
            raise FeatureError(f"streaming computes features from audio: it needs an ave U-Net, not {engine.mode}")
        if engine.encoder is None:
            raise FeatureError("streaming needs the engine's audio_encoder=...")
        if max_ready is not None and int(max_ready) < 1:
            raise ValueError(f"max_ready must be >= 1, got {max_ready!r}")
        if max_lag is not None and not max_lag >= 0:
            raise ValueError(f"max_lag must be >= 0 seconds, got {max_lag!r}")

    def _setup(
        self,
        engine: Engine,
        template: Template,
        *,
        start: int,
        idle: bool,
        max_ready: int | None,
        feather: int,
        max_lag: float | None,
        layout: str,
        warmup: bool,
    ) -> None:
        self.engine = engine
        self.template = template
        self.start = int(start)
        self.idle = bool(idle)
        self.feather = int(feather)
        self.max_lag = None if max_lag is None else float(max_lag)
        self.fps = float(FPS["ave"])
        self.frame_samples = int(SAMPLE_RATE / self.fps)  # 640
        self.batch_size = engine.batch_size
        self.max_ready = int(max_ready or max(8, 2 * engine.batch_size * len(engine.sessions)))  # both layouts alike
        self.layout = engine.choose_layout(layout, fps=self.fps)
        self.unets = engine.layout_sessions(self.layout)  # the sessions that serve this stream
        if warmup:
            engine.warmup(self.layout)

        self._state = StreamState()
        self._input_lock = threading.Lock()  # taken before the state's lock, never after
        self._converter = ChunkConverter()
        self._jobs = JobSource(
            self._state,
            template=self.template,
            start=self.start,
            fps=self.fps,
            feather=self.feather,
            max_ready=self.max_ready,
            max_lag=self.max_lag,
        )
        self._emitter = Emitter(
            self._state,
            template=self.template,
            start=self.start,
            fps=self.fps,
            frame_samples=self.frame_samples,
            idle=self.idle,
            wake_engine=engine.wake,
        )
        self._features = FeatureThread(self._state, engine.encode, engine.wake, self.frame_samples)
        self._features.start()
        engine.attach(self, layout=self.layout)  # the engine's workers call take()

    def __repr__(self) -> str:
        return (
            f"Stream(template={str(self.template.folder)!r}, layout={self.layout!r} ({len(self.unets)} "
            f"session(s)), position={self.position}, backlog={self.backlog}, closed={self._state.closed})"
        )

    # -- input ---------------------------------------------------------------
    def push_audio(self, chunk: AudioChunk, *, sample_rate: int = SAMPLE_RATE, channels: int | None = None) -> None:
        """Add speech to the current utterance (a new one after a flush).

        Parameters
        ----------
        chunk : np.ndarray or bytes
            Samples of any length (one sample is fine): float (in [-1, 1]) or
            int16; ``[n]`` mono, ``[n * channels]`` interleaved, or ``[n,
            channels]``; bytes are int16 little-endian PCM. An interleaved
            frame or a PCM sample cut between two chunks is completed by
            the next chunk.
        sample_rate : int, keyword-only
            Its sample rate (resampled to 16 kHz as :func:`load_audio` does).
        channels : int, optional, keyword-only
            Channels of an interleaved 1-D chunk (default 1); mixed to mono
            by averaging. Rate and channels are fixed within an utterance.

        Raises
        ------
        AudioError
            A chunk of another dtype, shape or format than the utterance's,
            or with NaN / infinite samples (nothing of it is used).
        ValueError
            The stream is closed.
        """
        st = self._state
        st.raise_error()
        now = time.perf_counter()
        with self._input_lock:
            if st.closed:
                raise ValueError("the stream is closed")
            samples = self._converter.convert(chunk, sample_rate, channels)
            with st.cond:
                utt = st.open_utterance()
                utt.add(samples, now)
                utt.dirty = True
                st.notify()

    def flush(self) -> None:
        """End the utterance: its remaining frames (the end padding of
        numerics §1.8) are computed and emitted. A no-op without pending speech.

        Raises
        ------
        AudioError
            The utterance is shorter than one encoder window (about 0.19 s):
            it makes no frame and is dropped; the stream goes on.
        """
        st = self._state
        st.raise_error()
        now = time.perf_counter()
        with self._input_lock:
            tail, total = self._converter.finish()
            with st.cond:
                utt = st.utts[-1] if st.utts and not st.utts[-1].closed else None
                if utt is None:
                    return
                utt.add(tail, now)
                # librosa's length: ceil(n * 16000 / sample_rate). The resampler holds back more
                # than its rounding, so only samples not yet used can be cut.
                try:
                    utt.close(total, now)
                except AudioError as exc:  # shorter than one encoder window
                    utt.dropped = True
                    st.utts.remove(utt)
                    st.notify()
                    raise AudioError(f"{exc}; it was dropped") from None
                utt.dirty = True
                st.notify()

    def interrupt(self) -> None:
        """Barge-in: drop all pending audio and every frame not yet emitted,
        at once. The next chunk starts a new utterance; the template sweep
        continues from the last frame emitted."""
        with self._input_lock:
            self._converter.reset()
            with self._state.cond:
                dropped = self._state.drop_all()
        if dropped:
            log.info("stream interrupted: %d frames dropped", dropped)

    def close(self, *, drain: bool = True) -> None:
        """No more audio. With ``drain`` the open utterance is flushed and
        :meth:`frames` ends after the last frame; otherwise pending frames
        are dropped (as :meth:`interrupt`). The thread ends once drained."""
        if not drain:
            self.interrupt()
        try:
            self.flush()
        except AudioError as exc:
            log.warning("%s", exc)
        except Exception:  # noqa: BLE001 - the stream failed; frames() raises it
            pass
        with self._state.cond:
            self._state.closed = True
            self._state.notify()
        if not drain:
            self._shutdown()

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close(drain=exc[0] is None)
        self._shutdown()

    def _shutdown(self, *, join: bool = True) -> None:
        """Stop the feature thread and leave the engine; ``join`` waits for
        the thread to end (an event loop does not: it ends by itself)."""
        st = self._state
        with st.cond:
            st.stop = True
            st.closed = True
            st.notify()
        if self._owns_engine:
            self.engine.close()
        else:
            self.engine.detach(self)
        if join:
            self._features.join()

    # -- figures -------------------------------------------------------------
    @property
    def backlog(self) -> int:
        """Frames whose audio has arrived but that are not yet emitted."""
        return self._emitter.backlog()

    @property
    def lag(self) -> float:
        """Seconds the oldest computable, not yet emitted frame has waited
        since its audio arrived (0 when none waits). Grows when compute is
        slower than real time; frames stay in order."""
        return self._emitter.lag()

    @property
    def position(self) -> int:
        """Index of the next frame :meth:`frames` will emit."""
        return self._state.next_emit

    def stats(self) -> dict[str, Any]:
        """Counters and latency figures of the frames emitted so far.

        ``frames``, ``idle_frames``, ``skipped_frames``, ``dropped_frames``,
        ``utterances``, ``interrupts``, ``backlog``, ``lag``,
        ``max_buffered``, ``max_ready``, ``layout``, ``sessions``;
        ``wait_*``: seconds from the arrival of the last audio a frame needs
        to its emission (compute and queueing); ``delay_*``: from the arrival
        of its own first sample to its emission (audio-in -> frame-out,
        including the ~0.45 s the model's context needs). p50 / p95 / max.
        """
        out = self._emitter.stats()
        out.update(max_ready=self.max_ready, layout=self.layout, sessions=len(self.unets))
        return out

    # -- work for the engine (called from its threads) ---------------------------
    def take(self, limit: int) -> list[StepItem]:
        """Up to ``limit`` frames for the engine's U-Net, oldest first, within
        ``max_ready``; frames more than ``max_lag`` late go as untouched
        template frames. (The engine's :class:`~synctalk_fast.engine.WorkSource`.)"""
        return self._jobs.take(limit)

    # -- output ----------------------------------------------------------------
    def frames(self, *, follow: bool = False, timeout: float | None = None) -> Iterator[StreamFrame]:
        """Frames in order, each as soon as it is computed.

        Parameters
        ----------
        follow : bool, keyword-only
            False: the frames the audio pushed so far makes, then stop (after
            :meth:`flush`: the rest of the utterance). True: keep waiting for
            more audio (with ``idle``, emitting idle frames meanwhile) until
            :meth:`close` and the last frame; for a consumer in its own thread.
        timeout : float, optional, keyword-only
            Stop when no frame came for this many seconds.

        Yields
        ------
        StreamFrame
        """
        while True:
            f = self._emitter.next(follow, timeout)
            if not isinstance(f, StreamFrame):
                if f is END and self._state.closed:
                    self._shutdown()
                return
            yield f

    def __iter__(self) -> Iterator[StreamFrame]:
        return self.frames(follow=True)

    def __aiter__(self) -> AsyncIterator[StreamFrame]:
        """``async for f in stream``: frames as with ``frames(follow=True)``.

        Waiting takes no thread: the stream's threads wake the event loop
        (``call_soon_threadsafe``) when a frame is ready, the stream ends or
        fails, and idle frames are paced with ``loop.call_later``. A
        consumer cancelled while waiting loses no frame.
        """
        return self._emitter.aframes(self._ended)

    def _ended(self) -> None:
        """The async consumer got the last frame: end the stream's thread without waiting for it."""
        if self._state.closed:
            self._shutdown(join=False)
