"""Turning an ``output`` argument (a path, a callable or a sink) into a sink.

:func:`open_sink` is the one place that decides which sink a path means; the
pipeline, replay, batch jobs and the command line all use it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np

from ..errors import OutputError
from .base import VIDEO_SUFFIXES, Sink
from .callback import CallbackSink
from .encoders import DEFAULT_ENCODER, DEFAULT_PRESET, _check_encoding
from .folder import FrameFolderSink
from .mp4 import Mp4Sink

__all__ = ["open_sink", "OutputLike"]

#: What an ``output=`` argument may be: a path, a sink, or ``fn(frame, audio)``.
OutputLike: TypeAlias = str | os.PathLike[str] | Sink | Callable[[np.ndarray, np.ndarray | None], Any]


def open_sink(
    output: OutputLike,
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
      (``frame_audio=True``), stored at :data:`~synctalk_fast.sinks.TRACK_SAMPLE_RATE`.
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
