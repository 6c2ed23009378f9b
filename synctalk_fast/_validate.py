"""Argument checks of the Python backends, worded like the C++ bindings'."""

from __future__ import annotations

import operator

import numpy as np


def check_frame(fn: str, frame: np.ndarray) -> None:
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"{fn}: frame must be uint8 [H, W, 3] (BGR), got shape {frame.shape}")


def check_box(fn: str, shape, x0, y0, x1, y1) -> tuple[int, int, int, int]:
    """The box as ints; ValueError unless 0 <= x0 < x1 <= W and 0 <= y0 < y1 <= H."""
    x0, y0, x1, y1 = (operator.index(v) for v in (x0, y0, x1, y1))
    h, w = shape[0], shape[1]
    if not (0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h):
        raise ValueError(f"{fn}: box ({x0}, {y0}, {x1}, {y1}) is empty or not inside the {w}x{h} frame")
    return x0, y0, x1, y1


def check_writable(fn: str, what: str, a, dtype, shape) -> None:
    """In-place buffers: exactly this dtype, writable, C-contiguous; -1 in shape is any size."""
    if not (isinstance(a, np.ndarray) and a.dtype == dtype and a.flags.c_contiguous and a.flags.writeable):
        raise ValueError(f"{fn}: {what} must be a writable C-contiguous {np.dtype(dtype).name} array")
    if a.ndim != len(shape) or any(s >= 0 and n != s for n, s in zip(a.shape, shape)):
        raise ValueError(f"{fn}: {what} has shape {a.shape}")
