"""The writers' names before the sinks: :class:`VideoWriter` and :class:`FrameFolderWriter`, deprecated.

Each is :class:`~synctalk_fast.sinks.Mp4Sink` / :class:`~synctalk_fast.sinks.FrameFolderSink`
under its old name and old parameters (a ``DeprecationWarning`` when one is
made); they write the same bytes.
"""

from __future__ import annotations

import os
import warnings
from fractions import Fraction

import numpy as np

from .encoders import DEFAULT_ENCODER, DEFAULT_PRESET
from .folder import FrameFolderSink
from .mp4 import Mp4Sink

__all__ = ["VideoWriter", "FrameFolderWriter"]


class VideoWriter(Mp4Sink):
    """Deprecated: :class:`~synctalk_fast.sinks.Mp4Sink` with the old parameter names and defaults.

    ``sample_rate`` (default 16000) is the AAC track's rate here, Mp4Sink's
    ``track_sample_rate``; ``audio_rate`` (default: ``sample_rate``) is the
    rate of the sound given, Mp4Sink's ``sample_rate``. Per-frame ``audio``
    is ignored unless ``frame_audio=True``, as with every Mp4Sink.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        fps: float | Fraction = 25.0,
        crf: int = 20,
        preset: str = DEFAULT_PRESET,
        audio: np.ndarray | None = None,
        sample_rate: int = 16000,
        audio_rate: int | None = None,
        threads: int = 0,
        frame_audio: bool = False,
        encoder: str = DEFAULT_ENCODER,
    ):
        warnings.warn(
            "VideoWriter is deprecated; use synctalk_fast.sinks.Mp4Sink (its sample_rate= is the rate of "
            "the sound given, track_sample_rate= the stored track's)",
            DeprecationWarning,
            stacklevel=2,
        )
        super().__init__(
            path,
            fps=fps,
            crf=crf,
            preset=preset,
            encoder=encoder,
            audio=audio,
            sample_rate=audio_rate or sample_rate,
            track_sample_rate=sample_rate,
            frame_audio=frame_audio,
            threads=threads,
        )


class FrameFolderWriter(FrameFolderSink):
    """Deprecated: :class:`~synctalk_fast.sinks.FrameFolderSink` under its old name (same parameters)."""

    def __init__(self, folder: str | os.PathLike[str], *, ext: str = "png", jpeg_quality: int = 95):
        warnings.warn(
            "FrameFolderWriter is deprecated; use synctalk_fast.sinks.FrameFolderSink", DeprecationWarning, stacklevel=2
        )
        super().__init__(folder, ext=ext, jpeg_quality=jpeg_quality)
