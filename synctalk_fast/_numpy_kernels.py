"""numpy + OpenCV backend: the kernels written with library calls.

Same functions and signatures as ``_core`` (see ``_core.pyi``). The mel uses
``numpy.fft.rfft``; the resizes use ``cv2.resize`` with OpenCV's default
(optimised) code paths, which differ from the compiled backends' exact
scalar-path emulation by at most one level. In-place arguments (``out`` of
``prepare_input``, ``frame`` of ``paste_back``) must be writable C-contiguous
arrays of the kernel's dtype and shape.
"""

from __future__ import annotations

import cv2
import numpy as np

from ._filters import HOP, MIN_LEVEL, N_FFT, PREEMPHASIS, mel_filterbank
from ._validate import check_box, check_frame, check_writable

__all__ = ["rfft", "mel_spectrogram", "mel_filterbank", "resize_cubic", "prepare_input", "paste_back"]

CROP, INNER, BORDER = 328, 320, 4
_FRAMES_PER_BLOCK = 2048  # bounds the float64 frame matrix to ~13 MB


def _only_235(n: int) -> bool:
    for p in (2, 3, 5):
        while n % p == 0:
            n //= p
    return n == 1


def rfft(x):
    x = np.ascontiguousarray(x, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"rfft: x must be 1-D, got ndim={x.ndim}")
    if x.size == 0:
        raise ValueError("rfft: x must not be empty")
    if not _only_235(x.size):
        raise ValueError(f"rfft: FFT length {x.size} has a prime factor other than 2, 3, 5")
    return np.fft.rfft(x)


def mel_spectrogram(wav, n_threads=0):
    wav = np.ascontiguousarray(wav, dtype=np.float32)
    if wav.ndim != 1:
        raise ValueError(f"mel_spectrogram: wav must be 1-D float32 [n], got ndim={wav.ndim}")
    y = wav.astype(np.float64)
    y[1:] -= PREEMPHASIS * wav[:-1].astype(np.float64)
    y = np.pad(y, N_FFT // 2)
    n_frames = 1 + wav.size // HOP
    frames = np.lib.stride_tricks.sliding_window_view(y, N_FFT)[::HOP][:n_frames]
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(N_FFT) / N_FFT)
    basis = mel_filterbank().astype(np.float64)
    out = np.empty((basis.shape[0], n_frames), dtype=np.float32)
    for t0 in range(0, n_frames, _FRAMES_PER_BLOCK):
        block = frames[t0 : t0 + _FRAMES_PER_BLOCK]
        mel = basis @ np.abs(np.fft.rfft(block * window, axis=1)).T
        s = 20.0 * np.log10(np.maximum(MIN_LEVEL, mel)) - 20.0
        out[:, t0 : t0 + block.shape[0]] = np.clip(8.0 * ((s + 100.0) / 100.0) - 4.0, -4.0, 4.0)
    return out


def resize_cubic(src, width, height):
    src = np.ascontiguousarray(src, dtype=np.uint8)
    if src.ndim not in (2, 3):
        raise ValueError(f"resize_cubic: src must be uint8 [H, W] or [H, W, C], got shape {src.shape}")
    if width <= 0 or height <= 0 or src.shape[0] == 0 or src.shape[1] == 0:
        raise ValueError("resize_cubic: sizes must be positive")
    out = cv2.resize(src, (int(width), int(height)), interpolation=cv2.INTER_CUBIC)
    return out.reshape((height, width) + src.shape[2:])


def prepare_input(frame, x0, y0, x1, y1, out):
    frame = np.ascontiguousarray(frame, dtype=np.uint8)
    check_frame("prepare_input", frame)
    x0, y0, x1, y1 = check_box("prepare_input", frame.shape, x0, y0, x1, y1)
    check_writable("prepare_input", "out", out, np.float32, (6, INNER, INNER))
    crop = cv2.resize(frame[y0:y1, x0:x1], (CROP, CROP), interpolation=cv2.INTER_CUBIC)
    real = crop[BORDER : BORDER + INNER, BORDER : BORDER + INNER].transpose(2, 0, 1)
    np.divide(real, np.float32(255.0), out=out[:3], dtype=np.float32)
    out[3:] = out[:3]
    out[3:, 5:310, 5:315] = 0.0


def paste_back(frame, x0, y0, x1, y1, pred, feather=0):
    check_writable("paste_back", "frame", frame, np.uint8, (-1, -1, 3))
    x0, y0, x1, y1 = check_box("paste_back", frame.shape, x0, y0, x1, y1)
    pred = np.ascontiguousarray(pred, dtype=np.float32)
    if pred.shape != (3, INNER, INNER):
        raise ValueError(f"paste_back: pred must be float32 [3, 320, 320], got shape {pred.shape}")
    if feather < 0:
        raise ValueError("paste_back: feather must be >= 0")
    h, w = y1 - y0, x1 - x0
    crop = cv2.resize(frame[y0:y1, x0:x1], (CROP, CROP), interpolation=cv2.INTER_CUBIC)
    scaled = np.nan_to_num(pred * np.float32(255.0), nan=0.0)
    crop[BORDER : BORDER + INNER, BORDER : BORDER + INNER] = np.clip(scaled, 0, 255).astype(np.uint8).transpose(1, 2, 0)
    new = cv2.resize(crop, (w, h), interpolation=cv2.INTER_CUBIC)
    if feather > 0:
        k1 = feather + 1
        dy = np.minimum(np.arange(h), np.arange(h)[::-1])[:, None]
        dx = np.minimum(np.arange(w), np.arange(w)[::-1])[None, :]
        a = np.minimum(np.minimum(dy, dx) + 1, k1)[:, :, None].astype(np.int32)
        old = frame[y0:y1, x0:x1].astype(np.int32)
        new = ((new * a + old * (k1 - a) + k1 // 2) // k1).astype(np.uint8)
    frame[y0:y1, x0:x1] = new
