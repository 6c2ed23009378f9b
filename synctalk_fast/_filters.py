"""Audio constants and the mel filterbank of numerics §1.4, in plain numpy.

Shared by the numba and numpy backends (the C++ core builds the same table
in ``csrc/include/synctalk_fast/mel.hpp``). The operation order follows
``librosa.filters.mel`` so every weight rounds to the same float32.
"""

from __future__ import annotations

import functools

import numpy as np

SAMPLE_RATE = 16000
N_FFT = 800
HOP = 200
N_MELS = 80
FMIN = 55.0
FMAX = 7600.0
PREEMPHASIS = 0.97
MIN_LEVEL = float(np.exp(-100 / 20 * np.log(10)))  # the reference's 1e-5 floor


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    mels = f / f_sp
    log_t = f >= min_log_hz
    mels[log_t] = min_log_mel + np.log(f[log_t] / min_log_hz) / logstep
    return mels


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    freqs = f_sp * m
    log_t = m >= min_log_mel
    freqs[log_t] = min_log_hz * np.exp(logstep * (m[log_t] - min_log_mel))
    return freqs


@functools.lru_cache(maxsize=1)
def _filterbank() -> np.ndarray:
    lims = _hz_to_mel(np.array([FMIN, FMAX]))
    mel_f = _mel_to_hz(np.linspace(lims[0], lims[1], N_MELS + 2))
    fftfreqs = np.fft.rfftfreq(n=N_FFT, d=1.0 / SAMPLE_RATE)
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fftfreqs)
    weights = np.zeros((N_MELS, N_FFT // 2 + 1), dtype=np.float32)
    for i in range(N_MELS):
        lower = -ramps[i] / fdiff[i]
        upper = ramps[i + 2] / fdiff[i + 1]
        weights[i] = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_f[2 : N_MELS + 2] - mel_f[:N_MELS]))[:, np.newaxis]
    weights.flags.writeable = False
    return weights


def mel_filterbank() -> np.ndarray:
    """Slaney mel filterbank, float32 [80, 401] (a fresh, writable copy)."""
    return _filterbank().copy()
