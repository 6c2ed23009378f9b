"""Utterances and jobs: the stream's bookkeeping between audio and frames.

An :class:`Utterance` is the speech from the first chunk after a flush (or
an interrupt) to the next flush: its samples and features
(:class:`~synctalk_fast.live_features.UtteranceFeatures`) and when each
piece of audio arrived. A :class:`Job` is one of its video frames whose
feature rows are all known, waiting for (or in) the engine's U-Net.

Threads: the fields of both are guarded by the stream's lock
(:class:`~synctalk_fast.stream.state.StreamState`), except what
:class:`UtteranceFeatures` leaves to its computing thread (see there).
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

import numpy as np

from ..live_features import UtteranceFeatures

__all__ = ["Utterance", "Job"]


class Utterance:
    """Speech from the first chunk after a flush (or interrupt) to the next flush.

    Parameters
    ----------
    number : int
        Its number in the stream (0, 1, ...).
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
        """Every frame of the closed utterance is a job."""
        return self.features.complete and self.made == self.features.frames_known()

    def add(self, samples: np.ndarray, now: float) -> None:
        """Append float32 ``[n]`` 16 kHz samples that arrived at ``now``."""
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
        """Drop the arrival records of pushes that ended before sample ``before`` (in bulk)."""
        k = bisect.bisect_left(self.arrival_end, before)
        if k > 1024:
            del self.arrival_end[:k], self.arrival_time[:k]


@dataclass(eq=False)
class Job:
    """Frame ``i`` of ``utt`` at stream position ``pos``, its features known.

    ``audio`` is float32 ``[640]`` (its 40 ms of speech); ``ready`` and
    ``audio_in`` are the ``perf_counter`` times of :class:`~.frame.StreamFrame`.
    """

    pos: int
    utt: Utterance
    i: int
    audio: np.ndarray
    ready: float
    audio_in: float
    last: bool = False  # the utterance's final frame
