"""Where output frames go: a video file, a folder of images, or your own code.

A :class:`Sink` takes frames one at a time with their sound and is then
closed (the output is complete) or aborted (nothing is left at the output
path). Any object with these three methods is a sink; nothing has to be
inherited:

- :class:`Mp4Sink` (:mod:`.mp4`): an MP4 file (H.264 + AAC), the one video
  writer; its encoders and presets are in :mod:`.encoders`, the sound
  sources feeding its AAC track in :mod:`.audio_track`;
- :class:`FrameFolderSink` (:mod:`.folder`): numbered PNG / JPEG images;
- :class:`CallbackSink`, :class:`MemorySink` (:mod:`.callback`): your code,
  or a list in memory.

:func:`open_sink` (:mod:`.factory`) is the one place that turns an
``output`` argument (a path, a callable or a sink) into a sink; the
pipeline and the command line use it. The protocol and the never-partial
invariant of the file sinks are in :mod:`~synctalk_fast.sinks.base`.
"""

from __future__ import annotations

import warnings
from typing import Any

from .audio_track import TRACK_SAMPLE_RATE
from .base import VIDEO_SUFFIXES, Sink
from .callback import CallbackSink, MemorySink
from .encoders import DEFAULT_ENCODER, DEFAULT_PRESET, ENCODERS, X264_PRESETS, encoder_problem, resolve_encoder
from .factory import OutputLike, open_sink
from .folder import FrameFolderSink
from .mp4 import Mp4Sink

__all__ = [
    "Sink",
    "Mp4Sink",
    "FrameFolderSink",
    "CallbackSink",
    "MemorySink",
    "open_sink",
    "OutputLike",
    "VIDEO_SUFFIXES",
    "TRACK_SAMPLE_RATE",
    "X264_PRESETS",
    "DEFAULT_PRESET",
    "ENCODERS",
    "DEFAULT_ENCODER",
    "encoder_problem",
    "resolve_encoder",
]

# Deprecated module constants: old name -> new name.
_RENAMED = {"TRACK_RATE": "TRACK_SAMPLE_RATE"}


def __getattr__(name: str) -> Any:
    if name in _RENAMED:
        warnings.warn(
            f"synctalk_fast.sinks.{name} is deprecated; use {_RENAMED[name]}", DeprecationWarning, stacklevel=2
        )
        return globals()[_RENAMED[name]]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
