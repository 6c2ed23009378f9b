"""SyncTalk_2D networks: checkpoints in, ONNX graphs and ONNX Runtime sessions out.

- :func:`load_state_dict` reads a ``.pth`` / ``.pt`` file without torch and
  without executing pickled code.
- :func:`build_unet` / :func:`build_audio_encoder` turn a state dict into an
  ONNX graph (BatchNorm folded, dynamic batch); :func:`export_onnx` writes
  one and runs it once.
- :func:`load_session` opens any U-Net / encoder ONNX file, binding inputs by
  shape and making a fixed batch of 1 dynamic.
- :func:`random_state_dict` makes fixed-seed weights for tests and demos.
- :func:`quantize` makes an int8 U-Net calibrated on a template and speech;
  it drives the template and frame stages, so it lives in
  :mod:`synctalk_fast.quantization` and is imported from there on first use.
"""

from .checkpoint import CheckpointError, load_state_dict
from .export import ExportSummary, check_state_dict, export_onnx, infer_kind, infer_mode, save_model
from .networks import (
    AUDIO_SHAPES,
    OPSET,
    ModelError,
    build,
    build_audio_encoder,
    build_unet,
    state_dict_spec,
)
from .random_weights import random_state_dict
from .session import ModelSession, cache_dir, default_batch_size, default_providers, default_threads, load_session, session_plan

__all__ = [
    "AUDIO_SHAPES",
    "OPSET",
    "CheckpointError",
    "ExportSummary",
    "ModelError",
    "ModelSession",
    "build",
    "build_audio_encoder",
    "build_unet",
    "check_state_dict",
    "cache_dir",
    "default_batch_size",
    "default_providers",
    "default_threads",
    "export_onnx",
    "infer_kind",
    "infer_mode",
    "load_session",
    "load_state_dict",
    "quantize",
    "QuantizeReport",
    "random_state_dict",
    "save_model",
    "session_plan",
    "state_dict_spec",
]


def __getattr__(name: str):
    if name in ("quantize", "QuantizeReport"):
        from .. import quantization

        return getattr(quantization, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
