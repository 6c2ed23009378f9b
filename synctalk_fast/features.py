"""Stage 2: per-frame audio features -> the U-Net's audio input.

SPEC 1.8-1.9. ``ave`` features are the audio encoder's 512-float embeddings
(padded by :func:`pad_embeddings`); ``hubert`` and ``wenet`` features are
precomputed per video frame by models outside this package.
"""

from __future__ import annotations

import numpy as np

__all__ = ["MODES", "FPS", "pad_embeddings", "feature_windows", "FeatureError"]

CONTEXT = 16  # feature rows per video frame: i - 8 .. i + 7
#: U-Net audio input shape [C, H, W] per mode.
MODES: dict[str, tuple[int, int, int]] = {"ave": (32, 16, 16), "hubert": (32, 32, 32), "wenet": (256, 16, 32)}
#: Video frame rate per mode.
FPS: dict[str, int] = {"ave": 25, "hubert": 25, "wenet": 20}


class FeatureError(ValueError):
    """Features of the wrong shape for the mode, or a bad mode."""


def _mode_shape(mode: str) -> tuple[int, int, int]:
    try:
        return MODES[mode]
    except KeyError:
        raise FeatureError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}") from None


def pad_embeddings(embeddings: np.ndarray) -> np.ndarray:
    """Repeat the first and last encoder embedding once (SPEC 1.8).

    Parameters
    ----------
    embeddings : np.ndarray
        float32 ``[n, D]`` audio encoder outputs, ``n >= 1``.

    Returns
    -------
    np.ndarray
        float32 ``[n + 2, D]``: ``[e0, e0, e1, ..., e(n-1), e(n-1)]``; the
        video has exactly ``n + 2`` frames.
    """
    emb = np.asarray(embeddings, dtype=np.float32)
    if emb.ndim != 2 or emb.shape[0] == 0:
        raise FeatureError(f"embeddings must be [n >= 1, D], got shape {emb.shape}")
    return np.ascontiguousarray(np.concatenate([emb[:1], emb, emb[-1:]]))


def feature_windows(features: np.ndarray, *, mode: str = "ave", start: int = 0, stop: int | None = None) -> np.ndarray:
    """The U-Net audio input of video frames ``start .. stop - 1`` (SPEC 1.9).

    Frame ``i`` takes feature rows ``i - 8 .. i + 7`` (rows outside the
    array are zeros) and reshapes the ``16 x D`` block row-major to the
    mode's ``[C, H, W]``.

    Parameters
    ----------
    features : np.ndarray
        float32 ``[F, D]``, one row per video frame (for ``ave`` the output of
        :func:`pad_embeddings`). ``16 * D`` must equal ``C * H * W`` of the
        mode: D = 512 (ave, wenet) or 2048 (hubert).
    mode : {"ave", "hubert", "wenet"}, keyword-only
    start, stop : int, keyword-only
        Range of video frames, default all ``F``.

    Returns
    -------
    np.ndarray
        float32 ``[stop - start, C, H, W]``, C-contiguous: ``[N, 32, 16, 16]``
        (ave), ``[N, 32, 32, 32]`` (hubert), ``[N, 256, 16, 32]`` (wenet).
    """
    shape = _mode_shape(mode)
    feats = np.asarray(features, dtype=np.float32)
    if feats.ndim != 2:
        raise FeatureError(f"features must be 2-D [frames, D], got shape {feats.shape}")
    n_rows, dim = feats.shape
    if CONTEXT * dim != shape[0] * shape[1] * shape[2]:
        need = shape[0] * shape[1] * shape[2] // CONTEXT
        raise FeatureError(f"mode {mode!r} needs {need} floats per feature row, got {dim}")
    stop = n_rows if stop is None else stop
    if not 0 <= start <= stop <= n_rows:
        raise FeatureError(f"frame range [{start}, {stop}) is not inside [0, {n_rows})")
    # Only rows start - 8 .. stop + 7 are read: copy them into a zero block,
    # then windows[j] = block[j : j + 16] = feature rows start + j - 8 .. + 7.
    lo, hi = start - CONTEXT // 2, stop + CONTEXT // 2
    block = np.zeros((hi - lo, dim), dtype=np.float32)
    block[max(lo, 0) - lo : min(hi, n_rows) - lo] = feats[max(lo, 0) : min(hi, n_rows)]
    windows = np.lib.stride_tricks.sliding_window_view(block, CONTEXT, axis=0).transpose(0, 2, 1)
    return np.ascontiguousarray(windows[: stop - start]).reshape((stop - start,) + shape)
