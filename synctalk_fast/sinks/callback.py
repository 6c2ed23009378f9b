"""Sinks that hand frames to the caller's code: a callback, or a list in memory.

Both copy what they are given (callers reuse their buffers) and own no
file: :meth:`CallbackSink.abort` only marks the sink finished. Not
thread-safe: one thread writes to each.
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Any, Literal, Self

import numpy as np

from .base import _check_frame

__all__ = ["CallbackSink", "MemorySink"]


class CallbackSink:
    """Calls ``fn(frame, audio)`` for each frame; the frame is the callee's to keep.

    Parameters
    ----------
    fn : callable
        ``fn(frame, audio)`` with ``frame`` a fresh BGR uint8 ``[H, W, 3]``
        copy and ``audio`` a fresh float32 ``[n]`` copy of the frame's
        samples (or None). Its exceptions propagate to the caller of
        :meth:`write`.

    Notes
    -----
    :meth:`close` and :meth:`abort` only mark the sink finished: frames
    already handed to ``fn`` cannot be recalled. ``write`` after either
    raises ``ValueError``. Usable as a context manager (an exception in the
    block aborts).
    """

    def __init__(self, fn: Callable[[np.ndarray, np.ndarray | None], Any]):
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {type(fn).__name__}")
        self._fn = fn
        self._shape: tuple[int, ...] | None = None
        self._state = "open"  # -> "closed" | "aborted"
        self.frames_written = 0

    @property
    def closed(self) -> bool:
        """True once closed or aborted."""
        return self._state != "open"

    def write(self, frame: np.ndarray, audio: np.ndarray | None = None) -> None:
        """Hand copies of ``frame`` (BGR uint8 ``[H, W, 3]``) and ``audio`` to ``fn``.

        Raises
        ------
        ValueError
            A bad frame (as :class:`~synctalk_fast.sinks.Mp4Sink` checks
            it), a size other than the first frame's, or the sink is
            finished.
        """
        if self._state != "open":
            raise ValueError(f"{type(self).__name__} is already {self._state}")
        frame = np.array(_check_frame(frame, self._shape), copy=True)
        samples = None if audio is None else np.array(audio, dtype=np.float32, copy=True)
        self._fn(frame, samples)
        self._shape = frame.shape
        self.frames_written += 1

    def close(self) -> object:
        """Mark the sink finished and return None. Idempotent; ``ValueError`` after :meth:`abort`."""
        if self._state == "aborted":
            raise ValueError(f"{type(self).__name__} was aborted")
        self._state = "closed"
        return None

    def abort(self) -> None:
        """Mark the sink finished (nothing to delete). Idempotent; no effect after :meth:`close`."""
        if self._state == "open":
            self._state = "aborted"

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> Literal[False]:
        if exc_type is not None:
            self.abort()
        elif self._state == "open":
            self.close()
        return False


class MemorySink(CallbackSink):
    """Keeps a copy of every frame and its audio in lists.

    Attributes
    ----------
    frames : list of np.ndarray
        BGR uint8 ``[H, W, 3]`` copies, in order.
    audio : list of (np.ndarray or None)
        For each frame, a float32 ``[n]`` copy of its samples, or None.

    Notes
    -----
    :meth:`abort` empties both lists (an aborted output leaves nothing);
    :meth:`close` returns the frames.
    """

    def __init__(self) -> None:
        self.frames: list[np.ndarray] = []
        self.audio: list[np.ndarray | None] = []
        super().__init__(self._keep)

    def _keep(self, frame: np.ndarray, audio: np.ndarray | None) -> None:
        self.frames.append(frame)
        self.audio.append(audio)

    def close(self) -> list[np.ndarray]:
        """Mark the sink finished and return :attr:`frames`."""
        super().close()
        return self.frames

    def abort(self) -> None:
        """Mark the sink finished and drop what it kept (no effect after :meth:`close`)."""
        if self._state == "open":
            self.frames.clear()
            self.audio.clear()
        super().abort()
