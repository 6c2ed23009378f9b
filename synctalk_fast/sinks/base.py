"""The sink protocol, and the state machine every file-writing sink shares.

A :class:`Sink` takes frames one at a time with their sound and is then
closed (the output is complete) or aborted (nothing is left at the output
path). Any object with these three methods is a sink; nothing has to be
inherited.

File sinks (subclasses of ``_Writer``) never leave partial output: they
build it beside the destination (a hidden ``.<name>.<random>.part`` file or
folder in the same directory) and move it into place only when ``close``
succeeds. An exception, ``abort``, a ``KeyboardInterrupt`` inside a ``with``
block, garbage collection of an unclosed sink or interpreter exit deletes
the temporary output instead (and any parent directories the sink created),
so the destination is either the complete new output or exactly what it
was before. Sinks are not thread-safe: one thread writes to each.
"""

from __future__ import annotations

import os
import weakref
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Protocol, Self, runtime_checkable

import av
import numpy as np

from ..errors import OutputError

__all__ = ["Sink", "VIDEO_SUFFIXES"]

#: Suffixes (any case) that make open_sink write a video file; the container
#: is MP4 whatever the suffix.
VIDEO_SUFFIXES = (".mp4", ".mov", ".m4v", ".mkv")


@runtime_checkable
class Sink(Protocol):
    """What receives output frames: any object with ``write``, ``close`` and ``abort``.

    The protocol is structural: a class with these methods is a sink
    (``isinstance(obj, Sink)`` checks that the methods exist) without
    inheriting from anything.

    Callers reuse their frame buffer: a sink that keeps a frame beyond
    :meth:`write` must keep a copy, never the array it was given.
    """

    def write(self, frame: np.ndarray, audio: np.ndarray | None = None) -> None:
        """Take the next frame.

        Parameters
        ----------
        frame : np.ndarray
            BGR uint8 ``[H, W, 3]``; every frame has the first one's size.
            Only valid during the call (copy it to keep it).
        audio : np.ndarray or None
            float32 ``[n]``: the mono samples at 16 kHz shown with this frame
            (``16000 / fps`` of them on average), or None when the caller has
            no per-frame sound.
        """

    def close(self) -> object:
        """Finish the output (what it returns is up to the sink, e.g. the path)."""

    def abort(self) -> None:
        """Stop without output: nothing is left at the output path. Idempotent."""


def _output_error(dest: Path, exc: BaseException) -> OutputError:
    """One-line ``OutputError`` for ``exc`` while writing ``dest``, keeping its errno."""
    reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    reason = " ".join(str(reason).split())
    if isinstance(exc, av.error.FFmpegError) and not isinstance(exc, OSError):
        reason = f"encoding failed ({reason})"
    err = OutputError(f"cannot write {os.fspath(dest)}: {reason}")
    code = getattr(exc, "errno", None)
    if isinstance(code, int) and code > 0:
        err.errno = code
    return err


def _check_frame(frame: Any, first_shape: tuple[int, ...] | None) -> np.ndarray:
    """``frame`` as a C-contiguous BGR uint8 ``[H, W, 3]`` array of the first frame's shape, or ``ValueError``."""
    if not isinstance(frame, np.ndarray):
        raise ValueError(f"frame must be a numpy array, got {type(frame).__name__}")
    if frame.dtype != np.uint8:
        raise ValueError(f"frame must be uint8 BGR, got dtype {frame.dtype}")
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"frame must have shape [H, W, 3] (BGR), got {frame.shape}")
    if frame.shape[0] == 0 or frame.shape[1] == 0:
        raise ValueError(f"frame is empty: shape {frame.shape}")
    if first_shape is not None and frame.shape != first_shape:
        raise ValueError(
            f"frame size {frame.shape[1]}x{frame.shape[0]} differs from the first frame's {first_shape[1]}x{first_shape[0]}"
        )
    return np.ascontiguousarray(frame)


class _Writer:
    """Shared state machine of the file sinks: open -> (closed | aborted); abort is idempotent.

    Invariant: while open, ``self._discard`` is a live finalizer that deletes
    the temporary output; it is detached only after the output is in place.
    """

    _dest: Path
    _discard: weakref.finalize
    _closed = False
    _frames = 0
    _shape: tuple[int, ...] | None = None

    @property
    def frames_written(self) -> int:
        """Number of frames accepted by :meth:`write` so far."""
        return self._frames

    @property
    def path(self) -> Path:
        """The destination."""
        return self._dest

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"{type(self).__name__} for {os.fspath(self._dest)} is already closed")
        if not self._discard.alive:
            raise ValueError(f"{type(self).__name__} for {os.fspath(self._dest)} was aborted; nothing was written")

    def _fail(self, exc: BaseException) -> BaseException:
        """Abort, and map I/O and encoder errors to ``OutputError``; return what to raise."""
        self.abort()
        if isinstance(exc, (OSError, av.error.FFmpegError)) and not isinstance(exc, OutputError):
            return _output_error(self._dest, exc)
        return exc

    def abort(self) -> None:
        """Stop and delete the temporary output; the destination is left untouched.

        Does nothing after :meth:`close` succeeded or a previous abort.
        """
        if not self._closed:
            self._discard()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> Literal[False]:
        if exc_type is not None:
            self.abort()
        elif not self._closed and self._discard.alive:
            self.close()
        return False

    def write(self, frame: np.ndarray, audio: np.ndarray | None = None) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def close(self) -> Path:  # pragma: no cover - overridden
        raise NotImplementedError
