"""SyncTalk_2D networks: checkpoints in, ONNX graphs and runtime sessions out.

- :func:`load_state_dict` reads a ``.pth`` / ``.pt`` file without torch and
  without executing pickled code.
- :func:`build_unet` / :func:`build_audio_encoder` turn a state dict into an
  ONNX graph (BatchNorm folded, dynamic batch); :func:`export_onnx` writes
  one and runs it once.
- :func:`load_session` opens any U-Net / encoder ONNX file, binding inputs by
  shape and making a fixed batch of 1 dynamic (:func:`resolve_model` does the
  file work once, :class:`ModelSession` opens a session on it).
- :func:`random_state_dict` makes fixed-seed weights for tests and demos;
  :func:`demo_audio_encoder` writes the demo's audio encoder.

int8 quantization drives the template and frame stages through the engine,
so it lives above this package: :func:`synctalk_fast.quantize`.
"""

import importlib
import warnings

from .._util.system import cache_dir
from ..errors import CheckpointError, ModelError
from ..runtime import default_batch_size, default_providers, default_threads, session_plan
from ..shapes import AUDIO_SHAPES
from .checkpoint import load_state_dict
from .export import ExportSummary, check_state_dict, demo_audio_encoder, export_onnx, infer_kind, infer_mode, save_model
from .networks import OPSET, build, build_audio_encoder, build_unet, state_dict_spec
from .random_weights import random_state_dict
from .session import ModelSession, ResolvedModel, load_session, resolve_model

__all__ = [
    "AUDIO_SHAPES",
    "OPSET",
    "CheckpointError",
    "ExportSummary",
    "ModelError",
    "ModelSession",
    "ResolvedModel",
    "build",
    "build_audio_encoder",
    "build_unet",
    "check_state_dict",
    "demo_audio_encoder",
    "cache_dir",
    "default_batch_size",
    "default_providers",
    "default_threads",
    "export_onnx",
    "infer_kind",
    "infer_mode",
    "load_session",
    "load_state_dict",
    "random_state_dict",
    "resolve_model",
    "save_model",
    "session_plan",
    "state_dict_spec",
]

_MOVED = {"quantize": "synctalk_fast.quantize", "QuantizeReport": "synctalk_fast.quantize"}


def __getattr__(name: str):
    # Deprecated names that moved above this package; looked up by name at
    # run time only when asked for, so the import graph keeps pointing down.
    if name in _MOVED:
        warnings.warn(
            f"synctalk_fast.models.{name} is deprecated; use synctalk_fast.{name}", DeprecationWarning, stacklevel=2
        )
        return getattr(importlib.import_module(_MOVED[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
