"""synctalk_fast: fast, exact SyncTalk_2D lip-sync inference.

Data flows one way: :mod:`~synctalk_fast.audio` (sound -> mel) ->
:mod:`~synctalk_fast.features` (per-frame audio input) ->
:mod:`~synctalk_fast.frames` (template frames in and out of the network).
"""

from . import _backend
from ._version import __version__
from .audio import AudioError, load_audio, mel_spectrogram, mel_windows, num_mel_windows
from .features import FeatureError, feature_windows, pad_embeddings
from .frames import BoxError, clip_box, crop_box, load_landmarks, paste_back, prepare_input

__all__ = [
    "__version__",
    "backend",
    "load_audio",
    "mel_spectrogram",
    "mel_windows",
    "num_mel_windows",
    "pad_embeddings",
    "feature_windows",
    "load_landmarks",
    "crop_box",
    "clip_box",
    "prepare_input",
    "paste_back",
    "AudioError",
    "FeatureError",
    "BoxError",
]


def backend() -> str:
    """Name of the kernel backend in use: ``"cpp"``, ``"numba"`` or ``"numpy"``.

    Chosen once at import (compiled core first); the environment variable
    ``SYNCTALK_FAST_BACKEND`` forces one.
    """
    return _backend.name
