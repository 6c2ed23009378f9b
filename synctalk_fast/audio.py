"""Stage 1: sound -> samples -> log-mel spectrogram -> encoder windows.

numerics §1.1-1.6. Everything here returns C-contiguous float32 arrays
ready for ONNX Runtime.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np

from . import _backend
from ._filters import HOP, N_MELS, SAMPLE_RATE
from ._util.deprecation import renamed
from .errors import AudioError
from .shapes import MEL_WINDOW

__all__ = [
    "load_audio",
    "mel_spectrogram",
    "mel_windows",
    "num_mel_windows",
    "window_start",
    "StreamResampler",
    "AudioError",
    "MEL_WINDOW",
]

#: What the API accepts as speech: a sound file, or samples (see :func:`load_audio`).
AudioLike: TypeAlias = str | os.PathLike[str] | np.ndarray
AudioSource = AudioLike  # the name this module used first


def _to_mono(y: np.ndarray) -> np.ndarray:
    # Channels first, averaged as librosa.to_mono does (identical float32 sums).
    return np.mean(y, axis=tuple(range(y.ndim - 1))) if y.ndim > 1 else y


def _resample(y: np.ndarray, source_rate: float, sample_rate: int) -> np.ndarray:
    # librosa.resample(res_type="soxr_hq"): soxr, then fixed to ceil(n * ratio).
    if source_rate == sample_rate:
        return y
    import soxr

    ratio = float(sample_rate) / source_rate
    n_out = int(np.ceil(y.shape[-1] * ratio))
    y_hat = soxr.resample(y, source_rate, sample_rate, quality="soxr_hq")
    if y_hat.shape[-1] > n_out:
        y_hat = y_hat[:n_out]
    elif y_hat.shape[-1] < n_out:
        y_hat = np.pad(y_hat, (0, n_out - y_hat.shape[-1]))
    return np.asarray(y_hat, dtype=y.dtype)


class StreamResampler:
    """Mono float32 resampling of a signal that arrives in pieces (soxr, "HQ").

    Feed the signal with :meth:`push`, end it with :meth:`finish`. The
    concatenation of everything returned equals the one-shot
    ``soxr.resample(signal, in_rate, out_rate, quality="soxr_hq")`` of the
    whole signal, sample for sample, whatever the chunk sizes: soxr's
    streaming resampler (``soxr.ResampleStream``, the same filter) guarantees
    it, and the package relies on it wherever audio is resampled
    incrementally. The total length is therefore soxr's, about
    ``round(n * out_rate / in_rate)`` for ``n`` input samples; callers that
    need another length pad or trim (:func:`load_audio` makes it
    ``ceil(n * out_rate / in_rate)``, as librosa does).

    With equal rates no soxr is involved: samples pass through unchanged.

    Parameters
    ----------
    in_rate, out_rate : int
        Sample rates in Hz, > 0.

    Attributes
    ----------
    samples_in : int
        Samples pushed so far.
    samples_out : int
        Samples returned so far (by :meth:`push` and :meth:`finish`).

    Raises
    ------
    ValueError
        A rate that is not a positive integer.
    """

    def __init__(self, in_rate: int, out_rate: int):
        for name, rate in (("in_rate", in_rate), ("out_rate", out_rate)):
            if isinstance(rate, bool) or not isinstance(rate, (int, np.integer)) or rate <= 0:
                raise ValueError(f"{name} must be a positive integer, got {rate!r}")
        self.in_rate = int(in_rate)
        self.out_rate = int(out_rate)
        self.samples_in = 0
        self.samples_out = 0
        self._finished = False
        self._stream = None
        if self.in_rate != self.out_rate:
            import soxr

            self._stream = soxr.ResampleStream(self.in_rate, self.out_rate, 1, dtype="float32", quality="HQ")

    def _check_open(self) -> None:
        if self._finished:
            raise ValueError("StreamResampler is finished; make a new one for another signal")

    def push(self, samples: np.ndarray) -> np.ndarray:
        """Resample the next piece of the signal.

        Parameters
        ----------
        samples : np.ndarray
            float ``[m]`` mono samples at ``in_rate`` (converted to float32;
            ``m`` may be 0).

        Returns
        -------
        np.ndarray
            float32 ``[k]``: the output samples available so far, C-contiguous
            (the filter's delay holds some back until later pushes or
            :meth:`finish`). With equal rates this is ``samples`` as
            contiguous float32: the caller's own array when it already is
            one, so copy it before reusing that buffer.

        Raises
        ------
        ValueError
            ``samples`` is not 1-D floating point, or :meth:`finish` was called.
        """
        self._check_open()
        x = np.asarray(samples)
        if x.ndim != 1 or not np.issubdtype(x.dtype, np.floating):
            raise ValueError(f"samples must be 1-D float mono samples, got shape {x.shape} dtype {x.dtype}")
        x = np.ascontiguousarray(x, dtype=np.float32)
        out = x if self._stream is None else np.asarray(self._stream.resample_chunk(x, last=False), np.float32)
        self.samples_in += len(x)
        self.samples_out += len(out)
        return out

    def finish(self) -> np.ndarray:
        """End the signal and return the samples still held back.

        Returns
        -------
        np.ndarray
            float32 ``[k]`` (empty with equal rates). The resampler is spent
            afterwards: :meth:`push` and :meth:`finish` raise ``ValueError``.
        """
        self._check_open()
        self._finished = True
        if self._stream is None:
            return np.zeros(0, np.float32)
        tail = np.asarray(self._stream.resample_chunk(np.zeros(0, np.float32), last=True), np.float32)
        self._stream = None
        self.samples_out += len(tail)
        return tail


def _read_soundfile(path: str) -> tuple[np.ndarray, int]:
    import soundfile as sf

    with sf.SoundFile(path) as f:
        return f.read(frames=-1, dtype="float32", always_2d=False).T, f.samplerate


def _read_av(path: str) -> tuple[np.ndarray, int]:
    import av

    chunks = []
    with av.open(path) as container:
        if not container.streams.audio:
            raise AudioError(f"{path}: no audio stream")
        stream = container.streams.audio[0]
        sr = stream.codec_context.sample_rate
        resampler = av.AudioResampler(format="fltp", layout=stream.codec_context.layout.name, rate=sr)
        for frame in container.decode(stream):
            for out in resampler.resample(frame):
                chunks.append(out.to_ndarray())
        for out in resampler.resample(None):
            chunks.append(out.to_ndarray())
    if not chunks:
        raise AudioError(f"{path}: the audio stream is empty")
    return np.concatenate(chunks, axis=1).astype(np.float32, copy=False), sr


def load_audio(
    source: AudioSource, *, sample_rate: int = SAMPLE_RATE, source_sample_rate: float | None = None, **deprecated: Any
) -> np.ndarray:
    """Load speech as mono float32 samples at ``sample_rate`` Hz (numerics §1.1).

    Parameters
    ----------
    source : str, os.PathLike or np.ndarray
        A sound file (WAV, FLAC, OGG, MP3 through soundfile; M4A, AAC, MP4
        and anything else ffmpeg decodes through PyAV), or samples:
        ``[n]`` mono or ``[channels, n]`` (librosa's layout; an
        ``[n, channels]`` array with at most 8 channels is recognised too),
        float in [-1, 1] or int16.
    sample_rate : int, keyword-only
        Target sample rate, 16000 for every network of this package
        (``sr=`` is its deprecated name).
    source_sample_rate : float, optional, keyword-only
        Sample rate of an array ``source`` (default: already ``sample_rate``;
        ``orig_sr=`` is its deprecated name).

    Returns
    -------
    np.ndarray
        float32 ``[n]``, C-contiguous. For a file read by soundfile this is
        identical to ``librosa.load(path, sr=sample_rate)`` (same reader, same channel
        average, same soxr "HQ" resampler and length).

    Raises
    ------
    AudioError
        Missing or undecodable file, empty or non-finite samples.
    """
    if deprecated:
        given = renamed(
            deprecated,
            {"sample_rate": None, "source_sample_rate": source_sample_rate},
            {"sr": "sample_rate", "orig_sr": "source_sample_rate"},
            where="load_audio",
        )
        sample_rate = given["sample_rate"] or sample_rate
        source_sample_rate = given["source_sample_rate"]
    if isinstance(source, np.ndarray):
        y = source
        if y.dtype == np.int16:
            y = y.astype(np.float32) / np.float32(32768.0)
        y = np.asarray(y, dtype=np.float32)
        if y.ndim not in (1, 2):
            raise AudioError(f"audio array must be [n] or [channels, n], got shape {y.shape}")
        if y.ndim == 2 and y.shape[1] <= 8 < y.shape[0]:
            y = y.T  # soundfile's [n, channels]
        native = float(source_sample_rate) if source_sample_rate is not None else float(sample_rate)
    else:
        path = os.fspath(source)
        if not Path(path).is_file():
            raise AudioError(f"audio file not found: {path}")
        try:
            y, native = _read_soundfile(path)
        except Exception:  # soundfile lacks this format: let ffmpeg (PyAV) try
            try:
                y, native = _read_av(path)
            except AudioError:
                raise
            except Exception as exc:
                raise AudioError(f"cannot decode audio file {path}: {exc}") from exc
    y = _to_mono(y)
    if y.size == 0:
        raise AudioError("audio is empty")
    if not np.isfinite(y).all():
        raise AudioError("audio contains NaN or infinite samples")
    return np.ascontiguousarray(_resample(y, native, sample_rate), dtype=np.float32)


def mel_spectrogram(wav: np.ndarray, *, n_threads: int = 0) -> np.ndarray:
    """Normalised log-mel spectrogram of numerics §1.2-1.5.

    Parameters
    ----------
    wav : np.ndarray
        float32 ``[n]`` mono samples at 16 kHz (other float dtypes are
        converted).
    n_threads : int, keyword-only
        Threads of the compiled backend (0: all cores; long audio only).

    Returns
    -------
    np.ndarray
        float32 ``[80, 1 + n // 200]`` in [-4, 4], C-contiguous; within 1e-4
        of the float64 reference (librosa STFT + Slaney filterbank).

    Raises
    ------
    AudioError
        ``wav`` is not 1-D floating point, or has NaN / infinite samples.
    """
    wav = np.asarray(wav)
    if wav.ndim != 1:
        raise AudioError(f"mel_spectrogram: wav must be 1-D [n], got shape {wav.shape}")
    if not np.issubdtype(wav.dtype, np.floating):
        raise AudioError(f"mel_spectrogram: wav must be floating point samples, got {wav.dtype}")
    wav = np.ascontiguousarray(wav, dtype=np.float32)
    if not np.isfinite(wav).all():
        raise AudioError("mel_spectrogram: wav contains NaN or infinite samples")
    return _backend.kernels.mel_spectrogram(wav, n_threads)


def num_mel_windows(n_mel_frames: int) -> int:
    """Encoder windows for ``T`` mel frames: ``int((T - 16) / 80.0 * 25.0) + 2``.

    Evaluated in IEEE double in exactly the reference's order (numerics §1.6);
    for about 0.5% of lengths this is one less than the exact rational value.
    """
    return int((n_mel_frames - MEL_WINDOW) / 80.0 * 25.0) + 2


def window_start(i: int) -> int:
    """First mel frame of encoder window ``i``: ``int(80.0 * (i / 25.0))`` in
    IEEE double, as the reference computes it (numerics §1.6), before any
    move back to ``T - 16``."""
    return int(80.0 * (i / 25.0))


def mel_windows(mel: np.ndarray, *, start: int = 0, stop: int | None = None) -> np.ndarray:
    """Cut a mel spectrogram into the audio encoder's input windows (numerics §1.6).

    Parameters
    ----------
    mel : np.ndarray
        float32 ``[80, T]`` from :func:`mel_spectrogram`, ``T >= 16``.
    start, stop : int, keyword-only
        Range of windows to cut (default all), so that long audio can be
        encoded in batches.

    Returns
    -------
    np.ndarray
        float32 ``[stop - start, 1, 80, 16]`` (all ``n = num_mel_windows(T)``
        by default); window ``i``
        starts at mel frame ``int(80.0 * (i / 25.0))``, moved back to
        ``T - 16`` where it would run past the end.

    Raises
    ------
    AudioError
        Fewer than 16 mel frames (audio shorter than about 0.19 s).
    """
    mel = np.asarray(mel, dtype=np.float32)
    if mel.ndim != 2 or mel.shape[0] != N_MELS:
        raise AudioError(f"mel_windows: mel must be [{N_MELS}, T], got shape {mel.shape}")
    T = mel.shape[1]
    if T < MEL_WINDOW:
        seconds = (MEL_WINDOW - 1) * HOP / SAMPLE_RATE
        raise AudioError(
            f"audio too short: {T} mel frames, the encoder needs at least {MEL_WINDOW} (about {seconds:.2f} s of audio)"
        )
    n = num_mel_windows(T)
    stop = n if stop is None else min(stop, n)
    starts = np.array([min(window_start(i), T - MEL_WINDOW) for i in range(start, stop)], dtype=np.intp)
    view = np.lib.stride_tricks.sliding_window_view(mel, MEL_WINDOW, axis=1)  # [80, T-15, 16]
    return np.ascontiguousarray(view[:, starts, :].transpose(1, 0, 2)[:, None, :, :])
