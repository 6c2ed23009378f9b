"""Deprecated module: the writers are :mod:`synctalk_fast.sinks` (:class:`~synctalk_fast.sinks.Mp4Sink`,
:class:`~synctalk_fast.sinks.FrameFolderSink`); these names keep old imports working."""

from .errors import OutputError
from .sinks.encoders import DEFAULT_ENCODER, DEFAULT_PRESET, ENCODERS, X264_PRESETS, encoder_problem, resolve_encoder
from .sinks.legacy import FrameFolderWriter, VideoWriter

__all__ = [
    "VideoWriter",
    "FrameFolderWriter",
    "OutputError",
    "X264_PRESETS",
    "DEFAULT_PRESET",
    "ENCODERS",
    "DEFAULT_ENCODER",
    "encoder_problem",
    "resolve_encoder",
]
