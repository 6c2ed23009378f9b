"""synctalk_fast: fast, exact SyncTalk_2D lip-sync inference.

The signal and image core is flat (``audio``, ``features``,
``live_features``, ``frames``, ``template``, ``shapes``); each application
is a folder: ``runtime/``, ``models/``, ``engine/`` (with
:class:`EngineOptions`, every engine option once), ``sinks/``, ``stream/``,
``pipeline``, ``quantize/``, ``batch/``, ``serve/``, ``integrations/`` (the
Pipecat and LiveKit Agents plug-ins, imported only on demand: their
frameworks are optional), ``benchmark/``, ``cli/``. Data flows one way
through them; which module may import which is stated once, by
``tests/test_imports.py``.
"""

from . import _backend
from ._config import config, show_config
from ._version import __version__
from .audio import load_audio, mel_spectrogram, mel_windows, num_mel_windows
from .batch import BatchResult, render_batch
from .engine import Engine, EngineOptions, Producer
from .errors import AudioError, BoxError, Error, FeatureError, ModelError, OutputError, TemplateError
from .features import feature_windows, load_features, pad_embeddings, save_features
from .frames import clip_box, crop_box, load_landmarks, paste_back, prepare_input
from .pipeline import GenerateResult, Pipeline, audio_features, generate
from .quantize import QuantizeReport, quantize  # binds the name to the function, over the subpackage
from .sinks import CallbackSink, FrameFolderSink, MemorySink, Mp4Sink, Sink, open_sink
from .stream import Stream, StreamFrame
from .template import Template

__all__ = [
    "BatchResult",
    "render_batch",
    "__version__",
    "backend",
    "show_config",
    "config",
    "Engine",
    "EngineOptions",
    "Producer",
    "Pipeline",
    "generate",
    "quantize",
    "QuantizeReport",
    "Sink",
    "open_sink",
    "Mp4Sink",
    "FrameFolderSink",
    "CallbackSink",
    "MemorySink",
    "audio_features",
    "GenerateResult",
    "Stream",
    "StreamFrame",
    "Template",
    "load_audio",
    "mel_spectrogram",
    "mel_windows",
    "num_mel_windows",
    "pad_embeddings",
    "feature_windows",
    "load_features",
    "save_features",
    "load_landmarks",
    "crop_box",
    "clip_box",
    "prepare_input",
    "paste_back",
    "Error",
    "AudioError",
    "FeatureError",
    "TemplateError",
    "BoxError",
    "ModelError",
    "OutputError",
]


def backend() -> str:
    """Name of the kernel backend in use: ``"cpp"``, ``"numba"`` or ``"numpy"``.

    Chosen once at import (compiled core first); the environment variable
    ``SYNCTALK_FAST_BACKEND`` forces one.
    """
    return _backend.name
