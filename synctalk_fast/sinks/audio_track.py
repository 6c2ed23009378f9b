"""The sound that feeds an MP4's AAC track: a whole track, or samples arriving with the frames.

Both sources hand out mono float32 samples at the track's sample rate in
blocks (``take()``), resampling (soxr, HQ) block by block as they go, so a
long track never exists at the output rate in memory. Not thread-safe: one
sink owns each source.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..audio import StreamResampler

__all__ = ["AAC_SAMPLE_RATES", "TRACK_SAMPLE_RATE", "WholeTrack", "LiveTrack", "check_audio"]

# Sample rates the AAC bitstream can signal (ISO 14496-3 sampling_frequency_index).
AAC_SAMPLE_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350)
#: Sample rate of the stored sound track of an Mp4Sink: AAC's 1024-sample
#: blocks are then 21 ms, so the decoded sound ends within one video frame of the input.
TRACK_SAMPLE_RATE = 48000


class WholeTrack:
    """A whole track as mono float32 samples at the output rate, read front to back in blocks.

    ``length`` is ``int(round(n * out_rate / in_rate))`` for ``n`` input
    samples; where the resampler yields fewer, the end is padded with
    silence (and samples past ``length`` are never read).

    Invariant: only the input array is held; with another input rate, blocks
    are resampled as they are read.
    """

    _BLOCK = 8192  # input samples per resampler call

    def __init__(self, samples: np.ndarray, in_rate: int, out_rate: int):
        self._x = samples
        self._read = 0  # input samples pushed into the resampler
        self._emitted = 0
        self._resampler = StreamResampler(in_rate, out_rate)
        self._buf = np.zeros(0, np.float32)  # resampled, not yet taken
        self.length = int(round(len(samples) * out_rate / in_rate))

    def take(self, n: int) -> np.ndarray:
        """The next ``min(n, remaining)`` samples, float32 ``[m]``."""
        n = min(n, self.length - self._emitted)
        while len(self._buf) < n:
            if self._read < len(self._x):
                block = self._x[self._read : self._read + self._BLOCK]
                self._read += len(block)
                more = self._resampler.push(block)
                if self._read >= len(self._x):
                    more = np.concatenate([more, self._resampler.finish()])
            else:  # the resampler's rounding came up short: pad with silence
                more = np.zeros(n - len(self._buf), np.float32)
            self._buf = np.concatenate([self._buf, more])
        out, self._buf = self._buf[:n], self._buf[n:]
        self._emitted += n
        return out


class LiveTrack:
    """Mono samples that arrive with the frames, resampled to the output rate as they come.

    ``length``: samples at the output rate available so far (all of them once
    ``last``).
    """

    def __init__(self, in_rate: int, out_rate: int):
        self._resampler = StreamResampler(in_rate, out_rate)
        self._buf = np.zeros(0, np.float32)  # resampled, not yet taken
        self.length = 0
        self.last = False

    def append(self, samples: np.ndarray, *, last: bool = False) -> None:
        """Add float32 ``[m]`` samples at the input rate; ``last`` ends the track."""
        more = self._resampler.push(samples)
        if last:
            more = np.concatenate([more, self._resampler.finish()])
        self._buf = np.concatenate([self._buf, more])
        self.length += len(more)
        self.last = last

    def take(self, n: int) -> np.ndarray:
        """The next ``min(n, available)`` samples."""
        out, self._buf = self._buf[:n], self._buf[n:]
        return out


def check_audio(audio: Any) -> np.ndarray:
    """``audio`` as C-contiguous mono float32 ``[n]`` clipped to [-1, 1].

    Raises
    ------
    ValueError
        Not mono, not numbers, empty, or NaN / infinite samples.
    """
    a = np.asarray(audio)
    if a.ndim == 2 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != 1:
        raise ValueError(f"audio must be mono: a 1-D array of samples, got shape {a.shape}")
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)) or a.dtype == np.bool_:
        raise ValueError(f"audio must be float samples in [-1, 1], got dtype {a.dtype}")
    if len(a) == 0:
        raise ValueError("audio is empty; pass audio=None for a video-only file")
    a = a.astype(np.float32)
    if not np.isfinite(a).all():
        raise ValueError("audio contains NaN or infinite samples")
    return np.ascontiguousarray(np.clip(a, -1.0, 1.0))
