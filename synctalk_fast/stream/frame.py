"""What a :class:`~synctalk_fast.Stream` hands out: :class:`StreamFrame`.

A frame is made by the engine's worker (a lip-synced or skipped frame) or
by the consumer's thread (an idle frame), and is owned by the consumer once
emitted; nothing here holds a lock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["StreamFrame"]


@dataclass(eq=False)
class StreamFrame:
    """One frame out of a :class:`~synctalk_fast.Stream`.

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
        (for frames that need the end of the utterance: the
        :meth:`~synctalk_fast.Stream.flush`).
    audio_in : float
        ``time.perf_counter()`` when the first sample of its own 40 ms arrived.
    emitted : float
        ``time.perf_counter()`` when :meth:`~synctalk_fast.Stream.frames` handed it out.
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
