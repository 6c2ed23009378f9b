"""Streaming. Audio chunks in, lip-synced frames out, as soon as each frame
can be computed.

:class:`Stream` runs on an :class:`~synctalk_fast.engine.Engine` (shared with
pipelines and other streams) and the same kernels as offline generation:

- the caller's :meth:`Stream.push_audio` converts a chunk (any rate, int16 or
  float, mono or interleaved channels) to 16 kHz mono, through soxr's
  streaming resampler, which gives the same samples as the one-shot
  resampler of :func:`~synctalk_fast.load_audio`;
- a feature thread drives :class:`~synctalk_fast.live_features.UtteranceFeatures`:
  it extends the mel spectrogram by the frames that no later sample can
  change, encodes the encoder windows that lie inside them, and turns every
  frame whose 16 feature rows are known into a job;
- the stream is a work source of the engine (:meth:`Stream.take`): the
  engine's worker for each U-Net session takes whatever jobs are ready (up
  to the batch size: batch 1 when keeping up, larger batches when behind,
  batched with other producers' work), prepares, runs and pastes them, and
  hands each frame back;
- the consumer iterates :meth:`Stream.frames` and gets frames in order.

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

Invariants: every shared field is guarded by ``self._cond``'s lock; the
chunk converter has its own lock, always taken before it; results are
keyed by position and dropped when their generation (bumped by
:meth:`Stream.interrupt`) is stale; at most ``max_ready`` frames are in
compute or waiting for the consumer, so memory stays flat whatever the
consumer's pace.
"""

from __future__ import annotations

import asyncio
import bisect
import functools
import logging
import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import AsyncIterator, Iterator

import numpy as np

from ._filters import SAMPLE_RATE
from .audio import StreamResampler, _to_mono
from .engine import Engine, StepItem
from .errors import AudioError, FeatureError
from .features import FPS
from .shapes import AUDIO_SHAPES
from .template import Template
from .live_features import ENCODER_BATCH, UtteranceFeatures, frame_need

__all__ = ["Stream", "StreamFrame"]

log = logging.getLogger(__name__)

_END = object()


@dataclass(eq=False)
class StreamFrame:
    """One frame out of a :class:`Stream`.

    Attributes
    ----------
    index : int
        Frame number in the stream (lip-synced and idle frames alike).
    time : float
        Its time in the stream, ``index / fps`` seconds.
    image : np.ndarray
        BGR uint8 ``[H, W, 3]``; the caller owns it.
    audio : np.ndarray
        float32 ``[640]``: the 40 ms of 16 kHz speech this frame shows
        (zeros for idle frames and past the end of an utterance).
    utterance : int
        Number of the utterance (0, 1, ...), -1 for an idle frame.
    frame : int
        Frame number within the utterance (the row of offline
        ``pipe.frames``), -1 for an idle frame.
    ready : float
        ``time.perf_counter()`` when the last audio the frame needs arrived
        (for frames that need the end of the utterance: the :meth:`Stream.flush`).
    audio_in : float
        ``time.perf_counter()`` when the first sample of its own 40 ms arrived.
    emitted : float
        ``time.perf_counter()`` when :meth:`Stream.frames` handed it out.
    skipped : bool
        The stream was more than ``max_lag`` behind: the frame is the
        template frame untouched (not lip-synced), with its audio, so that
        the stream catches up with real time.
    last : bool
        The last frame of its utterance (known once the utterance is flushed).
    """

    index: int
    time: float
    image: np.ndarray
    audio: np.ndarray
    utterance: int = -1
    frame: int = -1
    ready: float = math.nan
    audio_in: float = math.nan
    emitted: float = math.nan
    skipped: bool = False
    last: bool = False
    _gen: int = field(default=0, repr=False)

    @property
    def idle(self) -> bool:
        """True for a template frame shown while no speech plays."""
        return self.utterance < 0

    @property
    def wait(self) -> float:
        """Seconds from the arrival of the audio it needs to its emission."""
        return self.emitted - self.ready

    @property
    def delay(self) -> float:
        """Seconds from the arrival of its own first audio sample to its emission."""
        return self.emitted - self.audio_in


class _ChunkConverter:
    """Chunks of any layout -> 16 kHz mono float32, one utterance at a time.

    Mono mixing and resampling are those of :func:`~synctalk_fast.load_audio`
    (channel mean in float32, soxr "HQ"); soxr's streaming resampler gives
    the one-shot resampler's samples whatever the chunk sizes.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.rate: int | None = None
        self.channels: int | None = None
        self.n_in = 0  # input frames (one sample per channel) in this utterance
        self.n_out = 0  # 16 kHz samples produced
        self._resampler = None
        self._carry = np.zeros(0, np.float32)  # values of an incomplete interleaved frame
        self._byte = b""  # odd byte of int16 PCM bytes

    def _values(self, chunk) -> tuple[np.ndarray, bytes]:
        """float32 values of ``chunk`` and the odd byte left over from PCM bytes."""
        byte = self._byte
        if isinstance(chunk, (bytes, bytearray, memoryview)):
            data = byte + bytes(chunk)
            cut = len(data) - len(data) % 2
            chunk, byte = np.frombuffer(data[:cut], dtype="<i2"), data[cut:]
        a = np.asarray(chunk)
        if a.dtype == np.int16:
            return a.astype(np.float32) / np.float32(32768.0), byte  # as soundfile reads PCM_16
        if not np.issubdtype(a.dtype, np.floating):
            raise AudioError(f"audio chunk must be float or int16 samples (or int16 PCM bytes), got {a.dtype}")
        return a.astype(np.float32, copy=False), byte

    def convert(self, chunk, sample_rate: int, channels: int | None) -> np.ndarray:
        if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
            raise AudioError(f"sample_rate must be a positive integer, got {sample_rate!r}")
        x, byte = self._values(chunk)
        if x.ndim == 2:  # [n, channels]
            ch = x.shape[1]
            if channels is not None and channels != ch:
                raise AudioError(f"chunk has {ch} channels (shape {x.shape}), but channels={channels}")
        elif x.ndim == 1:
            ch = 1 if channels is None else int(channels)
            if ch < 1:
                raise AudioError(f"channels must be >= 1, got {channels!r}")
        else:
            raise AudioError(f"audio chunk must be [n] (mono or interleaved) or [n, channels], got shape {x.shape}")
        if self.rate is not None and (int(sample_rate), ch) != (self.rate, self.channels):
            raise AudioError(
                f"chunk of {sample_rate} Hz x {ch} channels in an utterance of {self.rate} Hz x "
                f"{self.channels} channels: call flush() before changing the format"
            )
        if not np.isfinite(x).all():
            raise AudioError("audio chunk contains NaN or infinite samples")
        # the chunk is good: from here on the converter's state changes
        self._byte = byte
        if self.rate is None:
            self.rate, self.channels = int(sample_rate), ch
            self._resampler = StreamResampler(self.rate, SAMPLE_RATE)
        if x.ndim == 1 and ch > 1:
            x = np.concatenate([self._carry, x])
            whole = len(x) - len(x) % ch
            self._carry = x[whole:].copy()
            x = x[:whole].reshape(-1, ch)
        mono = _to_mono(np.ascontiguousarray(x.T)) if x.ndim == 2 else x
        mono = np.ascontiguousarray(mono, dtype=np.float32)
        self.n_in += len(mono)
        out = self._resampler.push(mono)
        self.n_out += len(out)
        return np.array(out, np.float32)  # a copy: with equal rates the resampler returns its input

    def finish(self) -> tuple[np.ndarray, int]:
        """The resampler's tail and the utterance's length at 16 kHz
        (``ceil(n * 16000 / rate)``, librosa's length)."""
        tail = np.zeros(0, np.float32)
        total = self.n_out
        if self._resampler is not None and self.rate != SAMPLE_RATE:
            tail = np.asarray(self._resampler.finish(), np.float32)
            total = int(np.ceil(self.n_in * (SAMPLE_RATE / self.rate)))
        self.reset()
        return tail, total


class _Utterance:
    """Speech from the first chunk after a flush (or interrupt) to the next flush.

    ``features`` holds its samples and features (see :class:`UtteranceFeatures`
    for which thread owns what); the rest is the stream's bookkeeping, under
    the stream's lock.
    """

    def __init__(self, number: int):
        self.number = number
        self.features = UtteranceFeatures()
        self.arrival_end: list[int] = []  # samples received after each push ...
        self.arrival_time: list[float] = []  # ... and when
        self.closed = False
        self.closed_at = math.nan
        self.dirty = False  # the feature thread has work here
        self.dropped = False
        self.made = 0  # frames turned into jobs
        self.taken = 0  # frames taken by the workers (jobs leave in order)
        self.base: int | None = None  # stream position of frame 0

    @property
    def finished(self) -> bool:
        return self.features.complete and self.made == self.features.frames_known()

    def add(self, samples: np.ndarray, now: float) -> None:
        if len(samples):
            self.features.push(samples)
            self._arrived(now)

    def close(self, total: int, now: float) -> None:
        """The utterance holds ``total`` samples; raises AudioError if that is too short."""
        self.closed, self.closed_at = True, now
        n = self.features.n_samples
        self.features.end(total)
        if self.features.n_samples > n:  # zeros appended: they "arrive" now (a cut keeps arrival_end sorted)
            self._arrived(now)

    def _arrived(self, now: float) -> None:
        self.arrival_end.append(self.features.n_samples)
        self.arrival_time.append(now)

    def arrival(self, n: int) -> float:
        """When sample ``n - 1`` arrived (``closed_at`` for samples past the end)."""
        j = bisect.bisect_left(self.arrival_end, n)
        return self.arrival_time[j] if j < len(self.arrival_end) else self.closed_at

    def forget_pushes(self, before: int) -> None:
        k = bisect.bisect_left(self.arrival_end, before)
        if k > 1024:
            del self.arrival_end[:k], self.arrival_time[:k]


@dataclass(eq=False)
class _Job:
    pos: int
    utt: _Utterance
    i: int
    audio: np.ndarray
    ready: float
    audio_in: float
    last: bool = False  # the utterance's final frame


class Stream:
    """Real-time lip-sync: push speech in chunks, get frames as soon as they
    can be computed, exactly the frames offline generation makes.

    Parameters
    ----------
    engine : Engine or Pipeline
        An ave engine with an audio encoder (its sessions and batch size are
        used; several streams may share one), or a pipeline (its engine and
        its template cache).
    template : Template, str or os.PathLike, keyword-only
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
        stays near ``max_lag`` plus one batch's compute instead of growing. Default None: every frame is
        lip-synced, however late.
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
    its threads.
    """

    def __init__(self, engine, *, template, start: int = 0, idle: bool = False, max_ready: int | None = None,
                 feather: int = 0, max_lag: float | None = None, layout: str = "auto", warmup: bool = True):
        if not isinstance(engine, Engine):  # a Pipeline: its engine and its template cache
            template = engine.template(template)
            engine = engine.engine
        if engine.mode != "ave":
            raise FeatureError(f"streaming computes features from audio: it needs an ave U-Net, not {engine.mode}")
        if engine.encoder is None:
            raise FeatureError("streaming needs the engine's audio_encoder=...")
        if max_ready is not None and int(max_ready) < 1:
            raise ValueError(f"max_ready must be >= 1, got {max_ready!r}")
        if max_lag is not None and not max_lag >= 0:
            raise ValueError(f"max_lag must be >= 0 seconds, got {max_lag!r}")
        self.max_lag = None if max_lag is None else float(max_lag)
        self.engine = engine
        self.template = template if isinstance(template, Template) else Template(template)
        self.start = int(start)
        self.idle = bool(idle)
        self.feather = int(feather)
        self.fps = float(FPS["ave"])
        self.frame_samples = int(SAMPLE_RATE / self.fps)  # 640
        self.batch_size = engine.batch_size
        self.max_ready = int(max_ready or max(8, 2 * engine.batch_size * len(engine.sessions)))  # both layouts alike
        self.layout = engine.choose_layout(layout, fps=self.fps)
        self.unets = engine.layout_sessions(self.layout)  # the sessions that serve this stream
        if warmup:
            engine.warmup(self.layout)

        self._cond = threading.Condition()
        self._input_lock = threading.Lock()  # taken before self._cond, never after
        self._converter = _ChunkConverter()
        self._gen = 0
        self._utts: deque[_Utterance] = deque()  # oldest first; the last one may be open
        self._jobs: deque[_Job] = deque()
        self._inflight = 0  # jobs in the workers (current generation)
        self._done: dict[int, StreamFrame] = {}  # position -> frame, waiting for the consumer
        self._ready_times: deque[tuple[int, float]] = deque()  # (position, ready) of frames not emitted
        self._next_pos = 0  # next stream position to give out
        self._next_emit = 0  # next position the consumer gets
        self._last_emit = -math.inf
        self._busy = False  # the feature thread holds work outside the lock
        self._closed = False
        self._stop = False
        self._error: BaseException | None = None
        self._stats = {"frames": 0, "idle_frames": 0, "skipped_frames": 0, "dropped_frames": 0, "utterances": 0,
                       "interrupts": 0}
        self._waits: deque[float] = deque(maxlen=100_000)
        self._delays: deque[float] = deque(maxlen=100_000)
        self._max_buffered = 0
        self._threads = [threading.Thread(target=self._feature_loop, name="synctalk-stream-features", daemon=True)]
        for t in self._threads:
            t.start()
        engine.attach(self, layout=self.layout)  # the engine's workers call take()

    def __repr__(self) -> str:
        return (f"Stream(template={str(self.template.folder)!r}, layout={self.layout!r} ({len(self.unets)} "
                f"session(s)), position={self._next_emit}, backlog={self.backlog}, closed={self._closed})")

    # -- input ---------------------------------------------------------------
    def push_audio(self, chunk, *, sample_rate: int = SAMPLE_RATE, channels: int | None = None) -> None:
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
        """
        self._raise_error()
        now = time.perf_counter()
        with self._input_lock:
            if self._closed:
                raise ValueError("the stream is closed")
            samples = self._converter.convert(chunk, sample_rate, channels)
            with self._cond:
                utt = self._open_utterance()
                utt.add(samples, now)
                utt.dirty = True
                self._cond.notify_all()

    def flush(self) -> None:
        """End the utterance: its remaining frames (the end padding of
        numerics §1.8) are computed and emitted. A no-op without pending speech.

        Raises
        ------
        AudioError
            The utterance is shorter than one encoder window (about 0.19 s):
            it makes no frame and is dropped; the stream goes on.
        """
        self._raise_error()
        now = time.perf_counter()
        with self._input_lock:
            tail, total = self._converter.finish()
            with self._cond:
                utt = self._utts[-1] if self._utts and not self._utts[-1].closed else None
                if utt is None:
                    return
                utt.add(tail, now)
                # librosa's length: ceil(n * 16000 / rate). The resampler holds back more
                # than its rounding, so only samples not yet used can be cut.
                try:
                    utt.close(total, now)
                except AudioError as exc:  # shorter than one encoder window
                    utt.dropped = True
                    self._utts.remove(utt)
                    raise AudioError(f"{exc}; it was dropped") from None
                utt.dirty = True
                self._cond.notify_all()

    def interrupt(self) -> None:
        """Barge-in: drop all pending audio and every frame not yet emitted,
        at once. The next chunk starts a new utterance; the template sweep
        continues from the last frame emitted."""
        with self._input_lock:
            self._converter.reset()
            with self._cond:
                self._gen += 1
                dropped = len(self._ready_times)
                self._stats["dropped_frames"] += dropped
                self._stats["interrupts"] += 1
                for utt in self._utts:
                    utt.dropped = True
                self._utts.clear()
                self._jobs.clear()
                self._done.clear()
                self._ready_times.clear()
                self._inflight = 0
                self._next_pos = self._next_emit
                self._cond.notify_all()
        if dropped:
            log.info("stream interrupted: %d frames dropped", dropped)

    def close(self, *, drain: bool = True) -> None:
        """No more audio. With ``drain`` the open utterance is flushed and
        :meth:`frames` ends after the last frame; otherwise pending frames
        are dropped (as :meth:`interrupt`). The threads end once drained."""
        if not drain:
            self.interrupt()
        try:
            self.flush()
        except AudioError as exc:
            log.warning("%s", exc)
        except Exception:  # noqa: BLE001 - the stream failed; frames() raises it
            pass
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if not drain:
            self._shutdown()

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc) -> None:
        self.close(drain=exc[0] is None)
        self._shutdown()

    def _shutdown(self) -> None:
        with self._cond:
            self._stop = True
            self._closed = True
            self._cond.notify_all()
        self.engine.detach(self)
        me = threading.current_thread()
        for t in self._threads:
            if t is not me:
                t.join()

    # -- state (under the lock) ------------------------------------------------
    def _open_utterance(self) -> _Utterance:
        if not self._utts or self._utts[-1].closed:
            self._utts.append(_Utterance(self._stats["utterances"]))
            self._stats["utterances"] += 1
        return self._utts[-1]

    def _work(self) -> _Utterance | None:
        while self._utts and self._utts[0].finished:
            self._utts.popleft()
        return next((u for u in self._utts if u.dirty), None)

    def _speaking(self) -> bool:
        return any(u.made > 0 and not u.finished for u in self._utts)

    def _quiet(self) -> bool:
        return not (self._busy or self._jobs or self._inflight or self._done or self._work() is not None)

    def _fail(self, exc: BaseException) -> None:
        with self._cond:
            if self._error is None:
                self._error = exc
            self._stop = True
            self._cond.notify_all()

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    @property
    def backlog(self) -> int:
        """Frames whose audio has arrived but that are not yet emitted."""
        with self._cond:
            return len(self._ready_times)

    @property
    def lag(self) -> float:
        """Seconds the oldest computable, not yet emitted frame has waited
        since its audio arrived (0 when none waits). Grows when compute is
        slower than real time; frames stay in order."""
        with self._cond:
            return max(0.0, time.perf_counter() - self._ready_times[0][1]) if self._ready_times else 0.0

    @property
    def position(self) -> int:
        """Index of the next frame :meth:`frames` will emit."""
        return self._next_emit

    def stats(self) -> dict:
        """Counters and latency figures of the frames emitted so far.

        ``wait_*``: seconds from the arrival of the last audio a frame needs
        to its emission (compute and queueing); ``delay_*``: from the arrival
        of its own first sample to its emission (audio-in -> frame-out,
        including the ~0.45 s the model's context needs). p50 / p95 / max.
        """
        with self._cond:
            out = dict(self._stats)
            waits, delays = np.array(self._waits), np.array(self._delays)
            out.update(backlog=len(self._ready_times), lag=self.lag, max_buffered=self._max_buffered,
                       max_ready=self.max_ready, layout=self.layout, sessions=len(self.unets))
        for name, values in (("wait", waits), ("delay", delays)):
            for label, q in (("p50", 50), ("p95", 95), ("max", 100)):
                out[f"{name}_{label}"] = float(np.percentile(values, q)) if len(values) else math.nan
        return out

    # -- feature thread --------------------------------------------------------
    def _feature_loop(self) -> None:
        """Extend the features of the utterances with new audio (the steps of
        :class:`UtteranceFeatures`): plans and embeddings under the lock, the
        mel spectrogram and the encoder outside it, while pushes go on."""
        try:
            while True:
                with self._cond:
                    while True:
                        if self._stop:
                            return
                        utt = self._work()
                        if utt is not None:
                            break
                        self._cond.wait()
                    utt.dirty = False
                    gen = self._gen
                    feats = utt.features
                    plan = feats.mel_plan()  # a copy of the samples it needs
                    self._busy = True
                if plan is not None:  # mel frames that are now final (this thread's own state)
                    feats.compute_mel(plan)
                batch = feats.encoder_windows(ENCODER_BATCH)
                emb = self.engine.encode(batch.windows) if batch is not None and batch.size else None
                with self._cond:
                    self._busy = False  # in the same critical section as the jobs: never quiet in between
                    self._cond.notify_all()
                    if gen != self._gen or utt.dropped:
                        continue
                    if batch is not None:
                        feats.add_embeddings(emb, batch)
                        if batch.more:
                            utt.dirty = True
                    self._make_jobs(utt)
                    self._cond.notify_all()
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            self._fail(exc)

    def _make_jobs(self, utt: _Utterance) -> None:
        """Jobs for the frames whose feature rows are now all known (under the lock)."""
        feats = utt.features
        f_to = max(utt.made, feats.frames_known())
        if f_to > utt.made and utt.base is None:
            utt.base = self._next_pos
        for i in range(utt.made, f_to):
            ready = utt.arrival(frame_need(i))  # the flush, for frames that need the utterance's end
            first = self.frame_samples * i
            audio_in = utt.arrival(first + 1)
            audio = feats.samples(first, first + self.frame_samples)
            job = _Job(self._next_pos, utt, i, audio, ready, audio_in, feats.complete and i == f_to - 1)
            self._next_pos += 1
            self._jobs.append(job)
            self._ready_times.append((job.pos, ready))
        utt.made = f_to
        keep = feats.release_samples(self.frame_samples * utt.made)  # the frames' audio, and what the mel needs
        utt.forget_pushes(keep)
        if self._jobs:
            self.engine.wake()  # the engine's workers take() them

    # -- work for the engine (called from its threads) ---------------------------
    def take(self, limit: int) -> list[StepItem]:
        """Up to ``limit`` frames for the engine's U-Net, oldest first, within
        ``max_ready``; frames more than ``max_lag`` late go as untouched
        template frames. (The engine's :class:`~synctalk_fast.engine.WorkSource`.)"""
        with self._cond:
            room = self.max_ready - self._inflight - len(self._done)
            if self._stop or room <= 0 or not self._jobs:
                return []
            batch = [self._jobs.popleft() for _ in range(min(limit, len(self._jobs), room))]
            gen = self._gen
            self._inflight += len(batch)
            self._max_buffered = max(self._max_buffered, self._inflight + len(self._done))
            late = 0
            if self.max_lag is not None:  # ready times grow along the queue: the late ones lead
                now = time.perf_counter()
                late = next((j for j, job in enumerate(batch) if now - job.ready <= self.max_lag), len(batch))
                self._note_skips(late)
            windows = [None if j < late else job.utt.features.audio_window(job.i).reshape(AUDIO_SHAPES["ave"])
                       for j, job in enumerate(batch)]
            for job in batch:
                job.utt.taken = job.i + 1
                job.utt.features.release_frames(job.utt.taken)
        tpl = self.template
        return [StepItem(tpl, int(tpl.order(1, start=self.start, first=job.pos)[0]), w,
                         functools.partial(self._deliver, job, gen, w is None), self.feather)
                for job, w in zip(batch, windows)]

    def _deliver(self, job: _Job, gen: int, skipped: bool, image: np.ndarray | None,
                 error: BaseException | None) -> None:
        """A frame back from the engine (or the error that stopped its batch)."""
        if error is not None:
            self._fail(error)
            return
        f = self._frame(job, image, gen, skipped=skipped)
        with self._cond:
            if gen == self._gen:
                self._inflight -= 1
                self._done[f.index] = f
                self._cond.notify_all()

    def _frame(self, job: _Job, image: np.ndarray, gen: int, *, skipped: bool = False) -> StreamFrame:
        return StreamFrame(index=job.pos, time=job.pos / self.fps, image=image, audio=job.audio,
                           utterance=job.utt.number, frame=job.i, ready=job.ready, audio_in=job.audio_in,
                           skipped=skipped, last=job.last, _gen=gen)

    def _note_skips(self, late: int) -> None:
        """Count frames emitted unsynced; warn once per late stretch (under the lock)."""
        if late and not self._stats["skipped_frames"]:
            log.warning("stream is more than %.2f s behind its audio: emitting template frames until it "
                        "catches up (counted in Stream.stats()['skipped_frames'])", self.max_lag)
        self._stats["skipped_frames"] += late

    # -- output ----------------------------------------------------------------
    def _next(self, follow: bool, timeout: float | None = None):
        """The next frame, ``_END`` when there is none to come, or None at ``timeout``."""
        deadline = None if timeout is None else time.perf_counter() + timeout
        idle_pos = None
        with self._cond:
            while True:
                self._raise_error()
                now = time.perf_counter()
                f = self._done.pop(self._next_emit, None)
                if f is not None:
                    self._next_emit += 1
                    self._last_emit = f.emitted = now
                    if self._ready_times and self._ready_times[0][0] == f.index:
                        self._ready_times.popleft()
                    self._stats["frames"] += 1
                    self._waits.append(f.wait)
                    self._delays.append(f.delay)
                    self._cond.notify_all()
                    self.engine.wake()  # room for one more frame
                    return f
                wake = deadline
                if (follow and self.idle and not self._closed and self._next_pos == self._next_emit
                        and not self._speaking()):
                    due = self._last_emit + 1.0 / self.fps
                    if now >= due:
                        idle_pos = self._next_pos
                        self._next_pos += 1
                        self._next_emit += 1
                        self._last_emit = now
                        self._stats["idle_frames"] += 1
                        break
                    wake = due if wake is None else min(wake, due)
                if self._quiet() and (not follow or (self._closed and not self._utts)):
                    return _END
                if deadline is not None and now >= deadline:
                    return None
                self._cond.wait(None if wake is None else max(0.0, wake - now))
        k = int(self.template.order(1, start=self.start, first=idle_pos)[0])
        return StreamFrame(index=idle_pos, time=idle_pos / self.fps, image=self.template.frame(k),
                           audio=np.zeros(self.frame_samples, np.float32), emitted=now)

    def _unget(self, f: StreamFrame) -> None:
        """Put back the frame just emitted (an asyncio consumer cancelled while it came)."""
        with self._cond:
            if f.idle or f._gen != self._gen or f.index != self._next_emit - 1:
                return
            self._done[f.index] = f
            self._next_emit -= 1
            self._ready_times.appendleft((f.index, f.ready))
            self._stats["frames"] -= 1
            self._cond.notify_all()

    def _unget_done(self, fut) -> None:
        if not fut.cancelled() and fut.exception() is None and isinstance(fut.result(), StreamFrame):
            self._unget(fut.result())

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
            f = self._next(follow, timeout)
            if f is None or f is _END:
                if f is _END and self._closed:
                    self._shutdown()
                return
            yield f

    def __iter__(self) -> Iterator[StreamFrame]:
        return self.frames(follow=True)

    async def _aframes(self) -> AsyncIterator[StreamFrame]:
        loop = asyncio.get_running_loop()
        while True:
            fut = loop.run_in_executor(None, self._next, True, 0.1)
            try:
                f = await asyncio.shield(fut)
            except asyncio.CancelledError:
                fut.add_done_callback(self._unget_done)
                raise
            if f is _END:
                if self._closed:
                    await loop.run_in_executor(None, self._shutdown)
                return
            if f is not None:
                yield f

    def __aiter__(self) -> AsyncIterator[StreamFrame]:
        """``async for f in stream``: frames as with ``frames(follow=True)``,
        waited for in a worker thread so the event loop keeps running."""
        return self._aframes()
