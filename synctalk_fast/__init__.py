"""synctalk_fast: fast, exact SyncTalk_2D lip-sync inference.

Data flows one way (each module imports only those before it):

- :mod:`~synctalk_fast.shapes`: shapes, modes, frame rates, crop geometry;
- :mod:`~synctalk_fast.audio` (sound -> mel) -> :mod:`~synctalk_fast.features`
  (per-frame audio input) -> :mod:`~synctalk_fast.live_features` (the same,
  incrementally, for speech that arrives in chunks);
- :mod:`~synctalk_fast.frames` / :mod:`~synctalk_fast.template` (template
  frames in and out of the network);
- :mod:`~synctalk_fast.runtime` (inference runtimes and their provider
  tables) -> :mod:`~synctalk_fast.models` (checkpoints, ONNX graphs, model
  sessions) -> :mod:`~synctalk_fast.engine` (one person's networks and the
  U-Net step, shared by every producer);
- :mod:`~synctalk_fast.video` -> :mod:`~synctalk_fast.sinks` (where frames go);
- :mod:`~synctalk_fast.stream` (live), :mod:`~synctalk_fast.pipeline`
  (whole utterances), :mod:`~synctalk_fast.quantization` (int8),
  :mod:`~synctalk_fast.replay` -> :mod:`~synctalk_fast.benchmark` ->
  :mod:`~synctalk_fast.cli`.
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
from .quantization import QuantizeReport, quantize
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
