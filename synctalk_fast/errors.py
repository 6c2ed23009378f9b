"""The exceptions of synctalk_fast: all derive from :class:`Error`.

Each is also a ``ValueError`` (bad input) or, for :class:`OutputError`, an
``OSError``, so code catching the builtin types keeps working. Messages name
the file and the problem in one line.
"""

from __future__ import annotations

__all__ = [
    "Error",
    "AudioError",
    "FeatureError",
    "TemplateError",
    "BoxError",
    "ModelError",
    "CheckpointError",
    "OutputError",
]


class Error(Exception):
    """Base of every synctalk_fast error."""


class AudioError(Error, ValueError):
    """Audio that cannot be read or is unusable (missing, undecodable, too short, not finite)."""


class FeatureError(Error, ValueError):
    """Audio features of the wrong shape for the mode, an unreadable features file, or a bad mode."""


class TemplateError(Error, ValueError):
    """A template folder that cannot be used (missing or unpaired files, bad landmarks, mixed frame sizes)."""


class BoxError(TemplateError):
    """A crop box that is empty or lies outside the frame."""


class ModelError(Error, ValueError):
    """A state dict that does not fit the network, or an unusable model file."""


class CheckpointError(ModelError):
    """A checkpoint that cannot be read safely."""


class OutputError(Error, OSError):
    """The output cannot be written (unwritable location, disk full, encoder failure)."""
