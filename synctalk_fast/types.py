"""Type aliases of what the public API accepts, in one place for annotations.

Each is defined beside the code that reads it; this module only gathers them:

>>> from synctalk_fast.types import AudioLike, TemplateLike, ModelLike, OutputLike  # doctest: +SKIP
"""

from .audio import AudioLike
from .engine.options import EngineOptions
from .features import FeaturesLike
from .models.session import ModelLike
from .sinks import OutputLike
from .stream.convert import AudioChunk
from .stream.core import EngineLike
from .template import TemplateLike

__all__ = [
    "AudioLike",
    "AudioChunk",
    "FeaturesLike",
    "TemplateLike",
    "ModelLike",
    "OutputLike",
    "EngineLike",
    "EngineOptions",
]
