"""The U-Net step's host side (numerics §3): template frames -> network inputs, predictions -> frames.

These functions hold no session: :class:`~synctalk_fast.engine.Engine` runs
the network between them, and the pipeline runs the three parts as
overlapped stages.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..frames import Box, paste_back, prepare_input
from ..shapes import IMAGE_SHAPE
from ..template import Template

__all__ = ["StepBatch", "Timer", "no_timer", "prepare_batch", "paste_batch"]

#: ``timer(stage)`` -> a context manager that adds the time spent inside to ``stage``.
Timer = Callable[[str], AbstractContextManager[Any]]


class _NullSpan:
    def __enter__(self) -> _NullSpan:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


_NULL_SPAN = _NullSpan()


def no_timer(stage: str) -> _NullSpan:
    """A :data:`Timer` that records nothing."""
    return _NULL_SPAN


@dataclass(eq=False)
class StepBatch:
    """U-Net inputs of a batch and, once run, its predictions.

    Attributes
    ----------
    frames : list of (np.ndarray, Box)
        Each item's template frame (read-only, shared with the template's
        cache) and crop box.
    images : np.ndarray
        float32 ``[capacity, 6, 320, 320]``; the first ``len(frames)`` rows
        are the inputs (a buffer the caller may reuse once the batch ran).
    audio : np.ndarray
        float32 ``[n, C, H, W]`` feature windows.
    pred : np.ndarray or None
        float32 ``[n, 3, 320, 320]`` after the U-Net ran.
    """

    frames: list[tuple[np.ndarray, Box]]
    images: np.ndarray
    audio: np.ndarray
    pred: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.frames)


def prepare_batch(
    items: Sequence[tuple[Template, int]],
    windows: np.ndarray,
    *,
    out: np.ndarray | None = None,
    timer: Timer = no_timer,
) -> StepBatch:
    """Network inputs of a batch (numerics §3.1-3.4).

    Parameters
    ----------
    items : sequence of (Template, int)
        Each item's template and template frame index.
    windows : np.ndarray
        float32 ``[n, C, H, W]`` feature windows, one per item.
    out : np.ndarray, optional, keyword-only
        float32 ``[>= n, 6, 320, 320]`` buffer for the image inputs.
    timer : Timer, optional, keyword-only
        Records the "decode" and "prepare" stages.
    """
    n = len(items)
    images = out if out is not None and len(out) >= n else np.empty((n, *IMAGE_SHAPE), np.float32)
    frames = []
    for j, (tpl, k) in enumerate(items):
        with timer("decode"):
            frame = tpl.frame(int(k), copy=False)  # read-only, shared with the cache
        box = tpl.box(int(k))
        with timer("prepare"):
            prepare_input(frame, box, out=images[j])
        frames.append((frame, box))
    return StepBatch(frames, images, np.ascontiguousarray(windows, dtype=np.float32))


def paste_batch(
    batch: StepBatch, *, feather: int | Sequence[int] = 0, out: np.ndarray | None = None, timer: Timer = no_timer
) -> Iterator[np.ndarray]:
    """Each frame of a run batch with its prediction pasted (numerics
    §3.6-3.7): new BGR uint8 ``[H, W, 3]`` arrays, or ``out`` itself every
    time when given (the consumer must be done with one frame before asking
    for the next). ``feather`` is one band for all, or one per item."""
    assert batch.pred is not None, "paste needs a batch that ran"
    bands = [int(feather)] * len(batch) if isinstance(feather, int) else list(feather)
    for (frame, box), p, band in zip(batch.frames, batch.pred, bands):
        with timer("paste"):
            pasted = paste_back(frame, box, p, feather=band, out=out)
        yield pasted
