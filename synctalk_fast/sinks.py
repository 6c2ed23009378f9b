"""Where output frames go: a video file, a folder of images, or your own code.

A :class:`Sink` takes frames one at a time with their sound and is then
closed (the output is complete) or aborted (nothing is left at the output
path). Any object with these three methods is a sink; nothing has to be
inherited:

- :class:`Mp4Sink`: an MP4 file (H.264 + AAC);
- :class:`FrameFolderSink`: numbered PNG / JPEG images in a folder;
- :class:`CallbackSink`: calls a function with each frame;
- :class:`MemorySink`: keeps the frames in a list.

:func:`open_sink` is the one place that turns an ``output`` argument (a path,
a callable or a sink) into a sink; the pipeline and the command line use it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ._filters import SAMPLE_RATE
from .errors import OutputError
from .video import DEFAULT_ENCODER, DEFAULT_PRESET, FrameFolderWriter, VideoWriter, _check_encoding, _check_frame

__all__ = [
    "Sink",
    "Mp4Sink",
    "FrameFolderSink",
    "CallbackSink",
    "MemorySink",
    "open_sink",
    "VIDEO_SUFFIXES",
    "TRACK_RATE",
]

# Suffixes (any case) that make open_sink write a video file; the container
# is MP4 whatever the suffix.
VIDEO_SUFFIXES = (".mp4", ".mov", ".m4v", ".mkv")
# Sample rate of the stored sound track: AAC's 1024-sample blocks are then
# 21 ms, so the decoded sound ends within one video frame of the input.
TRACK_RATE = 48000
# Sample rate of the audio handed to sinks (the networks' rate).
_AUDIO_RATE = SAMPLE_RATE


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


class Mp4Sink(VideoWriter):
    """An MP4 file (H.264 + AAC) with its sound: a :class:`VideoWriter` for frames and 16 kHz audio.

    The sound comes from one of two places, chosen here:

    - ``audio=``: the whole track, given at once; the per-frame ``audio``
      of :meth:`write` is ignored.
    - ``frame_audio=True``: each :meth:`write` brings the samples shown with
      its frame (required there), and they become the track as they arrive
      (as :class:`~synctalk_fast.Stream` delivers them).

    With neither, the file has no sound and the per-frame ``audio`` of
    :meth:`write` is ignored.

    Parameters
    ----------
    path : str or os.PathLike
        Destination file (the container is MP4 whatever the suffix); missing
        parent directories are created. Written atomically: the file appears
        at :meth:`close`.
    fps : float or Fraction, default 25.0
        Frame rate, > 0.
    crf : int, default 20
        libx264 constant rate factor, 0 (lossless) to 51.
    preset : str, default :data:`~synctalk_fast.video.DEFAULT_PRESET`
        libx264 preset.
    encoder : str, default "libx264"
        ``"h264_nvenc"`` (NVIDIA hardware encoder) or ``"auto"``; see
        :class:`~synctalk_fast.video.VideoWriter`.
    audio : np.ndarray or None
        The whole track: mono samples in [-1, 1] at ``audio_rate``.
    audio_rate : int, default 16000
        Sample rate of the sound given (``audio`` or per frame).
    track_rate : int, default :data:`TRACK_RATE` (48000)
        Sample rate stored in the file; the sound is resampled (soxr, HQ) as
        it is encoded.
    frame_audio : bool, default False
        Take the track from the frames' ``audio`` instead.

    Raises
    ------
    OutputError
        The destination cannot be written.
    ValueError
        A bad argument, or both ``audio`` and ``frame_audio=True``.

    See Also
    --------
    VideoWriter : frame size, padding, audio length and error details.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        fps: float | Fraction = 25.0,
        crf: int = 20,
        preset: str = DEFAULT_PRESET,
        audio: np.ndarray | None = None,
        audio_rate: int = _AUDIO_RATE,
        track_rate: int = TRACK_RATE,
        frame_audio: bool = False,
        encoder: str = DEFAULT_ENCODER,
    ):
        self._frame_audio = bool(frame_audio)
        super().__init__(path, fps=fps, crf=crf, preset=preset, audio=audio, audio_rate=audio_rate,
                         sample_rate=track_rate, frame_audio=self._frame_audio, encoder=encoder)

    def write(self, frame: np.ndarray, audio: np.ndarray | None = None) -> None:
        """Encode one BGR uint8 ``[H, W, 3]`` frame (and, with ``frame_audio=True``, its sound).

        Raises
        ------
        ValueError
            A bad frame, ``audio`` missing with ``frame_audio=True``, or the
            sink is closed or aborted.
        OutputError
            Writing or encoding failed; the sink is aborted.
        """
        super().write(frame, audio if self._frame_audio else None)


class FrameFolderSink(FrameFolderWriter):
    """Frames as numbered images ``frame_00000.png`` ... in a folder; the audio is ignored.

    A :class:`~synctalk_fast.video.FrameFolderWriter` (written atomically:
    the images appear at :meth:`close`; stale ``frame_*`` images of an
    earlier run are removed then).

    Parameters
    ----------
    folder : str or os.PathLike
        Destination folder, created if missing.
    ext : {"png", "jpg"}, default "png"
        Image format; PNG is lossless.
    jpeg_quality : int, default 95
        JPEG quality 0..100.
    """


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
            A bad frame (as :class:`~synctalk_fast.video.VideoWriter`
            checks it), a size other than the first frame's, or the sink is
            finished.
        """
        if self._state != "open":
            raise ValueError(f"{type(self).__name__} is already {self._state}")
        frame = np.array(_check_frame(frame, self._shape), copy=True)
        samples = None if audio is None else np.array(audio, dtype=np.float32, copy=True)
        self._fn(frame, samples)
        self._shape = frame.shape
        self.frames_written += 1

    def close(self) -> None:
        """Mark the sink finished. Idempotent; ``ValueError`` after :meth:`abort`."""
        if self._state == "aborted":
            raise ValueError(f"{type(self).__name__} was aborted")
        self._state = "closed"

    def abort(self) -> None:
        """Mark the sink finished (nothing to delete). Idempotent; no effect after :meth:`close`."""
        if self._state == "open":
            self._state = "aborted"

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
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


def open_sink(
    output: str | os.PathLike | Sink | Callable[[np.ndarray, np.ndarray | None], Any],
    *,
    fps: float | Fraction = 25.0,
    crf: int = 20,
    preset: str = DEFAULT_PRESET,
    encoder: str = DEFAULT_ENCODER,
    audio: np.ndarray | None = None,
    frame_audio: bool = False,
    image_format: str = "png",
) -> Sink:
    """The sink for an ``output`` argument.

    - a :class:`Sink` (any object with ``write``, ``close`` and ``abort``):
      returned as is; the other arguments are only checked.
    - a callable: a :class:`CallbackSink` calling it.
    - a path whose suffix is one of :data:`VIDEO_SUFFIXES` (any case): an
      :class:`Mp4Sink` with ``fps``, ``crf``, ``preset`` and the sound of
      ``audio`` (16 kHz, the whole track) or of the frames
      (``frame_audio=True``), stored at :data:`TRACK_RATE`.
    - an existing directory, or a path without a suffix: a
      :class:`FrameFolderSink` of ``image_format`` images.

    Parameters
    ----------
    output : str, os.PathLike, Sink or callable
        Where the frames go.
    fps, crf, preset, encoder
        Video encoding (see :class:`Mp4Sink`); checked whatever the output.
    audio : np.ndarray or None
        float32 ``[n]`` mono 16 kHz track of a video file.
    frame_audio : bool, default False
        A video file's track comes with the frames (see :class:`Mp4Sink`).
    image_format : {"png", "jpg"}, default "png"
        Image format of a folder.

    Returns
    -------
    Sink

    Raises
    ------
    OutputError
        A path with another suffix (e.g. ``out.webm``; nothing is created),
        a destination that cannot be written, or an encoder that cannot run
        here.
    ValueError
        A bad ``fps``, ``crf``, ``preset``, ``encoder`` or ``image_format``.
    TypeError
        ``output`` is none of the above.
    """
    _check_encoding(fps, crf, preset, encoder)
    ext = str(image_format).lower().lstrip(".")
    if ext not in ("png", "jpg", "jpeg"):
        raise ValueError(f"image_format must be 'png' or 'jpg', got {image_format!r}")
    if isinstance(output, type):  # a sink class passes isinstance(cls, Sink) too
        raise TypeError(f"output must be a path, a callable or a Sink instance, got the class {output.__name__}")
    if isinstance(output, Sink):
        return output
    if not isinstance(output, (str, os.PathLike)):
        if callable(output):
            return CallbackSink(output)
        raise TypeError(f"output must be a path, a callable or a Sink, got {type(output).__name__}")
    path = Path(os.fsdecode(output))
    suffix = path.suffix
    if suffix.lower() in VIDEO_SUFFIXES:
        return Mp4Sink(path, fps=fps, crf=crf, preset=preset, encoder=encoder, audio=audio, frame_audio=frame_audio)
    if not suffix or path.is_dir():
        return FrameFolderSink(path, ext=ext)
    raise OutputError(
        f"{os.fspath(path)}: unknown output kind {suffix!r}; use a video file "
        f"({', '.join(VIDEO_SUFFIXES)}) or a folder for frames (a path without a suffix)"
    )
