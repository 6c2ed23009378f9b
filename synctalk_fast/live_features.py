"""Incremental audio -> features of one utterance, exact (numerics §1.2-1.9).

:class:`UtteranceFeatures` takes the 16 kHz samples of one utterance as
they arrive and computes, as soon as no later sample can change them, the
log-mel frames, the audio encoder's embeddings and each video frame's U-Net
audio input. Every value is the one offline generation computes from the
whole utterance, bit for bit::

    feature_windows(pad_embeddings(encode(mel_windows(mel_spectrogram(wav)))))

Exactness. Mel frame ``t`` covers samples ``200 t - 400 .. 200 t + 399``
(centred STFT): once ``200 t + 400`` samples have arrived it is final. It
is computed by :func:`~synctalk_fast.mel_spectrogram` on a slice that
starts on a hop boundary at least 3 hops before the first new frame, so
that the slice's own padding and its first pre-emphasised sample do not
reach the frames kept. Window ``i`` (mel frames ``s .. s + 15``, ``s =
window_start(i)``) is final when its last mel frame is; while the end is
unknown no window is moved back. Video frame ``i`` reads feature rows ``i -
8 .. i + 7`` (row ``r`` is embedding ``r - 1``), so it needs window ``i +
6``: :func:`frame_need` samples. Only :meth:`UtteranceFeatures.end` tells
the utterance's length, hence the STFT's end padding, the window count
``n = num_mel_windows(T)``, the windows moved back to ``T - 16`` and the
repeated last embedding (row ``n + 1``) of the last frames.

Threads. The class holds no lock and starts no thread. A caller with
threads (:class:`~synctalk_fast.Stream`) appends samples in one thread and
computes features in another: each step is split into a cheap part taken
under the caller's lock (:meth:`~UtteranceFeatures.mel_plan`,
:meth:`~UtteranceFeatures.add_embeddings`) and a heavy part done outside it
(:meth:`~UtteranceFeatures.compute_mel`,
:meth:`~UtteranceFeatures.encoder_windows` and the encoder), on state that
only the computing thread touches. :meth:`~UtteranceFeatures.advance` runs
all the steps in one thread.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ._filters import HOP, N_MELS, SAMPLE_RATE
from .audio import mel_spectrogram, num_mel_windows, window_start
from .errors import AudioError, FeatureError
from .features import feature_windows
from .shapes import CONTEXT, EMBEDDING, ENCODER_BATCH, MEL_WINDOW

__all__ = [
    "UtteranceFeatures",
    "MelPlan",
    "EncoderBatch",
    "window_start",
    "frame_need",
    "MIN_SAMPLES",
    "ENCODER_BATCH",
    "EMBEDDING",
    "LOOKAHEAD",
]

N_FFT_HALF = 400  # centred STFT: frame t covers samples 200 t - 400 .. 200 t + 399
LOOKAHEAD = 6  #: frame i needs window i + 6 (feature row i + 7)
MIN_SAMPLES = (MEL_WINDOW - 1) * HOP  #: 16 mel frames (1 + n // 200 >= 16): one encoder window
_MEL_MARGIN = 3  # hops a mel slice starts before its first new frame


def frame_need(i: int) -> int:
    """Samples that must have arrived before video frame ``i`` of an utterance
    is computable without knowing where the utterance ends.

    Frame ``i`` needs window ``i + 6``, whose last mel frame ``t =
    window_start(i + 6) + 15`` is final once ``200 t + 400`` samples have
    arrived: ``frame_need(0) == 7200`` (0.45 s), then about 640 a frame.
    Frames that need more than the utterance holds are known at its end.
    """
    return HOP * (window_start(i + LOOKAHEAD) + MEL_WINDOW - 1) + N_FFT_HALF


Encoder = Callable[[np.ndarray], np.ndarray]


class _Buffer:
    """Rows appended at the end, addressed by absolute index, released at the front.

    Not thread-safe: its owner serialises the calls. ``get`` returns copies.
    Invariant: rows ``start .. end - 1`` are held (``_a[: end - start]``);
    rows before ``start`` are gone; ``start`` only moves by at least half the
    capacity at a time, so releasing costs amortised O(1) per row.
    """

    def __init__(self, tail: tuple[int, ...] = (), capacity: int = 4096):
        self._a = np.empty((capacity, *tail), np.float32)
        self.start = 0  # absolute index of self._a[0]
        self.end = 0  # absolute index one past the last row

    def append(self, rows: np.ndarray) -> None:
        used, n = self.end - self.start, len(rows)
        if used + n > len(self._a):
            grown = np.empty((max(2 * len(self._a), used + n), *self._a.shape[1:]), np.float32)
            grown[:used] = self._a[:used]
            self._a = grown
        self._a[used : used + n] = rows
        self.end += n

    def get(self, lo: int, hi: int) -> np.ndarray:
        """Rows ``lo .. hi - 1`` (absolute), a copy; rows past the end are zeros."""
        assert lo >= self.start, (lo, self.start)
        out = np.zeros((hi - lo, *self._a.shape[1:]), np.float32)
        top = min(hi, self.end)
        if top > lo:
            out[: top - lo] = self._a[lo - self.start : top - self.start]
        return out

    def truncate(self, end: int) -> None:
        self.end = max(self.start, min(self.end, end))

    def release(self, lo: int) -> None:
        """Rows before ``lo`` are no longer needed."""
        lo = min(lo, self.end)
        k = lo - self.start
        if k > 0 and k >= len(self._a) // 2:
            used = self.end - self.start
            self._a[: used - k] = self._a[k:used]
            self.start = lo


@dataclass(frozen=True, eq=False)
class MelPlan:
    """Samples for the mel frames that became final: the snapshot that
    :meth:`UtteranceFeatures.mel_plan` takes under the caller's lock.

    Attributes
    ----------
    samples : np.ndarray
        float32 ``[m]``, a copy: samples ``200 * first ..`` of the utterance.
    first : int
        Mel frame at which ``samples`` start (a hop boundary).
    t_from, t_to : int
        The mel frames ``t_from .. t_to - 1`` it makes final.
    final : bool
        ``samples`` run to the utterance's end: the mel is then complete.
    """

    samples: np.ndarray
    first: int
    t_from: int
    t_to: int
    final: bool


@dataclass(frozen=True, eq=False)
class EncoderBatch:
    """Encoder windows ready to encode (:meth:`UtteranceFeatures.encoder_windows`).

    Attributes
    ----------
    windows : np.ndarray
        float32 ``[stop - start, 1, 80, 16]``, C-contiguous: the encoder's
        input for windows ``start .. stop - 1`` (may be empty when the batch
        only completes the utterance).
    start, stop : int
        Window range.
    more : bool
        More windows were computable than the batch limit let in.
    n_windows : int or None
        The utterance's window count when adding this batch completes it.
    """

    windows: np.ndarray
    start: int
    stop: int
    more: bool
    n_windows: int | None

    @property
    def size(self) -> int:
        return self.stop - self.start


class UtteranceFeatures:
    """Feature state of one utterance: 16 kHz samples in, each video frame's
    U-Net audio input out, as soon as it is final.

    Frame ``i`` is known (``i < frames_known()``) once :func:`frame_need`
    ``(i)`` samples were pushed and the steps ran, or after :meth:`end` for
    every frame of the utterance (``n + 2`` for ``n`` encoder windows). Its
    :meth:`audio_window` is then exactly row ``i`` of offline
    ``feature_windows(pad_embeddings(embeddings))``.

    Steps, with the lock of a caller that pushes from another thread:

    ====================================  ============  =====================================
    call                                  lock          cost
    ====================================  ============  =====================================
    :meth:`push`, :meth:`end`             held          a copy of the chunk
    ``plan = mel_plan()``                 held          a copy of the new frames' samples
    ``compute_mel(plan)``                 not held      STFT + filterbank of the new frames
    ``batch = encoder_windows()``         not held      copies of the windows
    ``emb = encode(batch.windows)``       not held      the encoder
    ``add_embeddings(emb, batch)``        held          a copy of the embeddings
    frames_known, audio_window, release   held          small
    ====================================  ============  =====================================

    One thread (the "feature thread") makes the calls of the steps, one
    plan and one batch at a time; other threads may push, end, and read
    known frames under the lock meanwhile. :meth:`advance` does it all
    without threads.

    Attributes
    ----------
    emb : _Buffer
        The embeddings ``[w_done, 512]`` (rows released at the front by
        :meth:`release_frames`). Under the caller's lock.
    t_done : int
        Final mel frames computed. The feature thread's own.
    w_done : int
        Windows encoded and added. Written under the lock by the feature
        thread, which alone may read it without the lock.
    n_windows : int or None
        The utterance's window count, set under the lock once every window
        is encoded after :meth:`end`; None before.
    closed : bool
        :meth:`end` was called (under the lock).
    """

    def __init__(self) -> None:
        # under the caller's lock
        self._samples = _Buffer()  # 16 kHz mono
        self._used = 0  # samples the last mel plan read: end() cannot cut them
        self.closed = False
        self.emb = _Buffer((EMBEDDING,))
        self.w_done = 0
        self.n_windows: int | None = None
        # the feature thread's own (mel_plan reads t_done under the lock, from that thread)
        self._mel = _Buffer((N_MELS,))  # mel frames as rows
        self.t_done = 0
        self._mel_final = False  # the mel is complete (its last plan ran to the end)

    def __repr__(self) -> str:
        return (
            f"UtteranceFeatures(samples={self.n_samples}, mel_frames={self.t_done}, windows={self.w_done}, "
            f"frames_known={self.frames_known()}, closed={self.closed})"
        )

    # -- samples (under the caller's lock) -------------------------------------
    @property
    def n_samples(self) -> int:
        """Samples received so far (after :meth:`end`: the utterance's length)."""
        return self._samples.end

    def push(self, samples: np.ndarray) -> None:
        """Append 16 kHz mono samples, float32 ``[k]`` (``k`` may be 0).

        Raises
        ------
        ValueError
            After :meth:`end`.
        """
        if self.closed:
            raise ValueError("the utterance has ended")
        x = np.asarray(samples, dtype=np.float32)
        if x.ndim != 1:
            raise AudioError(f"samples must be 1-D [k], got shape {x.shape}")
        if len(x):
            self._samples.append(x)

    def end(self, total: int | None = None) -> None:
        """The utterance is complete: it holds ``total`` samples (default: those
        pushed). Samples past ``total`` are cut, missing ones are zeros.

        Raises
        ------
        AudioError
            ``total`` is under :data:`MIN_SAMPLES` (about 0.19 s, one encoder
            window): the utterance makes no frame; nothing changes.
        ValueError
            Called twice, or ``total`` would cut samples a mel frame was
            already computed from.
        """
        if self.closed:
            raise ValueError("the utterance has already ended")
        total = self.n_samples if total is None else int(total)
        if total < MIN_SAMPLES:
            raise AudioError(
                f"utterance too short: {total / SAMPLE_RATE:.3f} s of audio, one encoder window "
                f"needs {MIN_SAMPLES / SAMPLE_RATE:.3f} s"
            )
        if total < self._used:
            raise ValueError(f"cannot end the utterance at {total} samples: mel frames were computed from {self._used}")
        if self._samples.end > total:
            self._samples.truncate(total)
        elif total > self._samples.end:
            self._samples.append(np.zeros(total - self._samples.end, np.float32))
        self.closed = True

    def samples(self, lo: int, hi: int) -> np.ndarray:
        """Samples ``lo .. hi - 1``, a float32 copy; zeros past the end.
        ``lo`` must not be before a release (:meth:`release_samples`)."""
        return self._samples.get(lo, hi)

    def release_samples(self, keep: int) -> int:
        """The caller no longer needs samples before ``keep``; those the mel
        still needs are kept. Returns the first sample kept."""
        keep = min(HOP * max(0, self.t_done - _MEL_MARGIN), keep)
        self._samples.release(keep)
        return keep

    # -- mel (plan under the lock, compute outside) --------------------------------
    def mel_plan(self) -> MelPlan | None:
        """Under the lock, from the feature thread: the samples for the mel
        frames that became final since the last plan, or None if none did."""
        n = self._samples.end
        if self.closed:
            t_to = 1 + n // HOP
        else:
            t_to = (n - N_FFT_HALF) // HOP + 1 if n >= N_FFT_HALF else 0
        if t_to <= self.t_done:
            return None
        # Start 3 hops before the first new frame, on a hop boundary: the slice's
        # own zero padding (400) and first pre-emphasised sample stay outside it.
        a = max(0, self.t_done - _MEL_MARGIN)
        hi = n if self.closed else HOP * (t_to - 1) + N_FFT_HALF
        self._used = max(self._used, hi)
        return MelPlan(self._samples.get(HOP * a, hi), a, self.t_done, t_to, self.closed)

    def compute_mel(self, plan: MelPlan, *, n_threads: int = 1) -> None:
        """Outside the lock, in the feature thread: compute the plan's mel frames.

        Parameters
        ----------
        plan : MelPlan
            The last plan of :meth:`mel_plan`, not yet computed.
        n_threads : int, keyword-only
            Threads of :func:`~synctalk_fast.mel_spectrogram`.
        """
        if plan.t_from != self.t_done:
            raise ValueError(f"stale mel plan: it starts at mel frame {plan.t_from}, {self.t_done} are done")
        m = mel_spectrogram(plan.samples, n_threads=n_threads)  # [80, frames of the slice]
        self._mel.append(m[:, plan.t_from - plan.first : plan.t_to - plan.first].T)
        self.t_done = plan.t_to
        self._mel_final = plan.final

    # -- encoder (windows outside the lock, embeddings under it) -------------------
    def encoder_windows(self, limit: int = ENCODER_BATCH) -> EncoderBatch | None:
        """Outside the lock, in the feature thread: the next windows whose mel
        frames are final, at most ``limit``; None when there is nothing to add.

        Returns
        -------
        EncoderBatch or None
            Its ``windows`` are float32 ``[k, 1, 80, 16]``, ``k <= limit``
            (``k == 0`` for the batch that only completes the utterance).
        """
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit!r}")
        if self.n_windows is not None:
            return None
        T, w0 = self.t_done, self.w_done
        n_win = num_mel_windows(T) if self._mel_final else None
        stop = w0
        if n_win is not None:
            stop = max(w0, n_win)
        else:
            while window_start(stop) + MEL_WINDOW <= T:
                stop += 1
        more = stop - w0 > limit
        stop = min(stop, w0 + limit)
        if stop == w0 and n_win is None:
            return None
        # At the end windows run past T - 16 are moved back (mel_windows); earlier none does.
        starts = [min(window_start(i), T - MEL_WINDOW) for i in range(w0, stop)]
        windows = np.empty((stop - w0, 1, N_MELS, MEL_WINDOW), np.float32)
        for k, s in enumerate(starts):
            windows[k, 0] = self._mel.get(s, s + MEL_WINDOW).T
        self._mel.release(max(0, min(window_start(stop), T - MEL_WINDOW)))
        return EncoderBatch(windows, w0, stop, more, None if more else n_win)

    def add_embeddings(self, emb: np.ndarray | None, batch: EncoderBatch) -> None:
        """Under the lock: the encoder's output for ``batch``.

        Parameters
        ----------
        emb : np.ndarray or None
            float32 ``[batch.size, 512]`` (None for an empty batch).
        batch : EncoderBatch
            The last batch of :meth:`encoder_windows`.
        """
        if batch.start != self.w_done:
            raise ValueError(f"stale encoder batch: it starts at window {batch.start}, {self.w_done} are done")
        if batch.size:
            emb = np.asarray(emb, dtype=np.float32)
            if emb.shape != (batch.size, EMBEDDING):
                raise FeatureError(
                    f"the audio encoder returned shape {emb.shape} for {batch.size} windows, "
                    f"expected ({batch.size}, {EMBEDDING})"
                )
            self.emb.append(emb)
            self.w_done = batch.stop
        if batch.n_windows is not None:
            self.n_windows = batch.n_windows

    # -- frames (under the lock) ------------------------------------------------
    @property
    def complete(self) -> bool:
        """Every frame of the utterance is known (after :meth:`end` and the steps)."""
        return self.n_windows is not None

    def frames_known(self) -> int:
        """Frames ``0 .. frames_known() - 1`` are known: ``n + 2`` once complete."""
        if self.n_windows is not None:
            return self.n_windows + 2
        return max(0, self.w_done - LOOKAHEAD)

    def audio_window(self, i: int) -> np.ndarray:
        """U-Net audio input of known frame ``i``: feature rows ``i - 8 .. i +
        7`` of ``pad_embeddings(embeddings)`` (row 0 = e0, row r = e(r - 1),
        row n + 1 = e(n - 1), zeros outside), float32 ``[16, 512]``; its
        row-major ``[32, 16, 16]`` is :func:`feature_windows`' frame ``i``.

        Raises
        ------
        IndexError
            Frame ``i`` is not known.
        """
        if not 0 <= i < self.frames_known():
            raise IndexError(f"frame {i} is not known ({self.frames_known()} are)")
        n = self.n_windows
        n_rows = n + 2 if n is not None else self.w_done + 1  # rows known
        lo, hi = max(i - CONTEXT // 2, 0), min(i + CONTEXT // 2, n_rows)
        e = np.maximum(np.arange(lo, hi) - 1, 0)  # row r -> embedding: pad_embeddings' first row
        if n is not None:
            np.minimum(e, n - 1, out=e)  # ... and its last
        rows = self.emb.get(int(e[0]), int(e[-1]) + 1)[e - e[0]]  # feature rows lo .. hi - 1
        return feature_windows(rows, start=i - lo, stop=i - lo + 1)[0].reshape(CONTEXT, EMBEDDING)

    def release_frames(self, first: int) -> None:
        """Frames before ``first`` will not be asked for again: release the
        embeddings only they read (frame ``i`` reads embeddings ``i - 9 ..``)."""
        self.emb.release(max(0, first - CONTEXT // 2 - 1))

    # -- single thread ----------------------------------------------------------
    def advance(self, encode: Encoder, *, limit: int = ENCODER_BATCH) -> int:
        """Run the steps until nothing more is computable; no lock, no thread.

        Parameters
        ----------
        encode : callable
            The audio encoder: float32 ``[k, 1, 80, 16]`` -> float32 ``[k, 512]``
            (e.g. ``lambda w: session.run(mel=w)``).
        limit : int, keyword-only
            Windows per ``encode`` call, at most.

        Returns
        -------
        int
            :meth:`frames_known`.
        """
        while True:
            plan = self.mel_plan()
            if plan is not None:
                self.compute_mel(plan)
            batch = self.encoder_windows(limit)
            if batch is None:
                if plan is None:
                    return self.frames_known()
                continue
            self.add_embeddings(encode(batch.windows) if batch.size else None, batch)
