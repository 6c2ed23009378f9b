"""The chunk converter: audio chunks of any layout -> 16 kHz mono float32.

:class:`ChunkConverter` takes the chunks of one utterance (any sample rate,
int16 or float, mono, interleaved or ``[n, channels]``, or int16 PCM bytes)
and gives 16 kHz mono float32 samples. Mono mixing and resampling are those
of :func:`~synctalk_fast.load_audio` (channel mean in float32, soxr "HQ");
soxr's streaming resampler gives the one-shot resampler's samples whatever
the chunk sizes.

Threads: the converter holds no lock; its owner (the stream) calls it under
its input lock, one chunk at a time.
"""

from __future__ import annotations

from typing import TypeAlias

import numpy as np

from .._filters import SAMPLE_RATE
from ..audio import StreamResampler, _to_mono
from ..errors import AudioError

__all__ = ["AudioChunk", "ChunkConverter"]

#: What :meth:`~synctalk_fast.Stream.push_audio` accepts: samples (float or
#: int16, ``[n]`` or ``[n, channels]``) or int16 little-endian PCM bytes.
AudioChunk: TypeAlias = np.ndarray | bytes | bytearray | memoryview


def _check_sample_rate(sample_rate: object) -> int:
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise AudioError(f"sample_rate must be a positive integer, got {sample_rate!r}")
    return int(sample_rate)


class ChunkConverter:
    """Chunks of any layout -> 16 kHz mono float32, one utterance at a time.

    The first chunk of an utterance fixes its sample rate and channel count;
    :meth:`finish` ends the utterance (and frees the format).
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget the utterance (its format, its resampler's state, any partial sample)."""
        self.sample_rate: int | None = None
        self.channels: int | None = None
        self.n_in = 0  # input frames (one sample per channel) in this utterance
        self.n_out = 0  # 16 kHz samples produced
        self._resampler: StreamResampler | None = None
        self._carry = np.zeros(0, np.float32)  # values of an incomplete interleaved frame
        self._byte = b""  # odd byte of int16 PCM bytes

    def _values(self, chunk: AudioChunk) -> tuple[np.ndarray, bytes]:
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

    def _channels(self, x: np.ndarray, channels: int | None) -> int:
        """The chunk's channel count (checked against ``channels``)."""
        if x.ndim == 2:  # [n, channels]
            ch = int(x.shape[1])
            if channels is not None and channels != ch:
                raise AudioError(f"chunk has {ch} channels (shape {x.shape}), but channels={channels}")
            return ch
        if x.ndim == 1:
            ch = 1 if channels is None else int(channels)
            if ch < 1:
                raise AudioError(f"channels must be >= 1, got {channels!r}")
            return ch
        raise AudioError(f"audio chunk must be [n] (mono or interleaved) or [n, channels], got shape {x.shape}")

    def convert(self, chunk: AudioChunk, sample_rate: int, channels: int | None) -> np.ndarray:
        """The 16 kHz mono samples of ``chunk`` available so far.

        Parameters
        ----------
        chunk : np.ndarray or bytes
            float or int16 ``[n]`` (mono or interleaved) or ``[n, channels]``;
            bytes are int16 little-endian PCM.
        sample_rate : int
        channels : int, optional
            Channels of an interleaved 1-D chunk (default 1).

        Returns
        -------
        np.ndarray
            float32 ``[k]``, a new array (the resampler holds some samples back).

        Raises
        ------
        AudioError
            A bad chunk, or a format other than the utterance's; nothing of
            the chunk is used and the converter's state is unchanged.
        """
        sample_rate = _check_sample_rate(sample_rate)
        x, byte = self._values(chunk)
        ch = self._channels(x, channels)
        if self.sample_rate is not None and (sample_rate, ch) != (self.sample_rate, self.channels):
            raise AudioError(
                f"chunk of {sample_rate} Hz x {ch} channels in an utterance of {self.sample_rate} Hz x "
                f"{self.channels} channels: call flush() before changing the format"
            )
        if not np.isfinite(x).all():
            raise AudioError("audio chunk contains NaN or infinite samples")
        # the chunk is good: from here on the converter's state changes
        self._byte = byte
        if self._resampler is None:
            self.sample_rate, self.channels = sample_rate, ch
            self._resampler = StreamResampler(sample_rate, SAMPLE_RATE)
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
        """End the utterance.

        Returns
        -------
        tail : np.ndarray
            float32 ``[k]``: the samples the resampler still held back.
        total : int
            The utterance's length at 16 kHz (``ceil(n * 16000 / sample_rate)``,
            librosa's length).
        """
        tail = np.zeros(0, np.float32)
        total = self.n_out
        if self._resampler is not None and self.sample_rate != SAMPLE_RATE:
            assert self.sample_rate is not None
            tail = np.asarray(self._resampler.finish(), np.float32)
            total = int(np.ceil(self.n_in * (SAMPLE_RATE / self.sample_rate)))
        self.reset()
        return tail, total
