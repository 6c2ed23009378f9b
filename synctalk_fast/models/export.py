"""Checkpoint (.pth state dict) -> ONNX file, with a self-check run."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._util.atomic import write_atomic
from ..demo import DEMO_ENCODER_SEED
from ..errors import ModelError
from ..runtime import cpu_session
from ..shapes import AUDIO_SHAPES, EMBEDDING, IMAGE_SHAPE, MEL_SHAPE, PRED_SHAPE
from .networks import build, state_dict_spec
from .random_weights import random_state_dict

__all__ = [
    "ExportSummary",
    "infer_kind",
    "infer_mode",
    "check_state_dict",
    "demo_audio_encoder",
    "export_onnx",
    "save_model",
]

_ENCODER_KEY = "0.conv_block.0.weight"
_UNET_KEY = "inc.inconv.0.conv.0.weight"
_WENET_KEY = "audio_model.conv1.conv.0.weight"


def infer_kind(state: Mapping[str, np.ndarray]) -> str:
    """``"unet"`` or ``"audio_encoder"`` from the keys; ModelError if neither."""
    if _UNET_KEY in state:
        return "unet"
    if _ENCODER_KEY in state:
        return "audio_encoder"
    sample = ", ".join(list(state)[:4])
    raise ModelError(f"not a SyncTalk_2D U-Net or audio encoder checkpoint (keys begin: {sample})")


def infer_mode(state: Mapping[str, np.ndarray]) -> tuple[str, bool]:
    """U-Net audio mode from the keys, and whether that was a guess.

    wenet has its own shapes. ave and hubert checkpoints have identical keys
    and shapes (only a stride differs), so they cannot be told apart: the
    answer is ``("ave", True)`` and the caller should say so.
    """
    w = state.get(_WENET_KEY)
    if w is not None and tuple(np.shape(w)) == (512, 256, 1, 1):
        return "wenet", False
    return "ave", True


def check_state_dict(state: Mapping[str, np.ndarray], *, kind: str, mode: str = "ave") -> None:
    """Raise ModelError naming the first missing, mis-shaped or unexpected key."""
    spec = state_dict_spec(kind, mode=mode)
    for key, shape in spec.items():
        if key.endswith("num_batches_tracked"):
            continue
        if key not in state:
            raise ModelError(f"checkpoint is missing {key!r} (expected shape {list(shape)})")
        if tuple(np.shape(state[key])) != shape:
            raise ModelError(f"checkpoint key {key!r} has shape {list(np.shape(state[key]))}, expected {list(shape)}")
    unexpected = [k for k in state if k not in spec]
    if unexpected:
        more = f" (and {len(unexpected) - 3} more)" if len(unexpected) > 3 else ""
        raise ModelError(
            f"checkpoint has keys a {kind}{'' if kind != 'unet' else f' ({mode})'} does not: "
            f"{', '.join(unexpected[:3])}{more}"
        )


@dataclass
class ExportSummary:
    """What :func:`export_onnx` wrote."""

    path: Path
    kind: str
    mode: str | None
    mode_guessed: bool
    parameters: int
    inputs: dict[str, list] = field(default_factory=dict)
    outputs: dict[str, list] = field(default_factory=dict)
    check_seconds: float = 0.0
    check_range: tuple[float, float] = (0.0, 0.0)

    def __str__(self) -> str:
        lines = [f"wrote {self.path} ({self.path.stat().st_size / 1e6:.1f} MB)"]
        what = "U-Net" if self.kind == "unet" else "audio encoder"
        if self.mode:
            what += f", mode {self.mode}"
            if self.mode_guessed:
                what += " (ave and hubert checkpoints have identical keys: pass --mode hubert for a HuBERT model)"
        lines.append(f"  model: {what}, {self.parameters:,} parameters")
        for name, shape in self.inputs.items():
            lines.append(f"  input  {name}: {shape}")
        for name, shape in self.outputs.items():
            lines.append(f"  output {name}: {shape}")
        lo, hi = self.check_range
        lines.append(
            f"  self-check: batch of 2 ran in {self.check_seconds * 1e3:.0f} ms on CPU, outputs in [{lo:.3f}, {hi:.3f}]"
        )
        return "\n".join(lines)


def save_model(model, path: str | os.PathLike) -> Path:
    """Write an ONNX model atomically (a temporary file renamed into place)."""
    return write_atomic(Path(path), model.SerializeToString())


def export_onnx(
    state: Mapping[str, np.ndarray],
    path: str | os.PathLike,
    *,
    kind: str | None = None,
    mode: str | None = None,
) -> ExportSummary:
    """Build the ONNX graph of a state dict, write it, and run it once.

    Parameters
    ----------
    state : mapping of str to np.ndarray
        A U-Net or audio encoder state dict (e.g. from
        :func:`synctalk_fast.models.load_state_dict`).
    path : str or os.PathLike
        Output ``.onnx`` file, written atomically.
    kind : {"unet", "audio_encoder"}, optional, keyword-only
        Inferred from the keys when omitted.
    mode : {"ave", "hubert", "wenet"}, optional, keyword-only
        U-Net mode; inferred when omitted (wenet is recognised; ave and
        hubert share their keys, so ``ave`` is assumed and reported).

    Returns
    -------
    ExportSummary
        Printable: path, parameter count, input/output shapes, self-check.
    """
    kind = kind or infer_kind(state)
    guessed = False
    if kind == "unet" and mode is None:
        mode, guessed = infer_mode(state)
    mode = mode if kind == "unet" else None
    check_state_dict(state, kind=kind, mode=mode or "ave")
    model = build(state, kind=kind, mode=mode or "ave")
    out = save_model(model, path)
    spec = state_dict_spec(kind, mode=mode or "ave")
    params = sum(int(np.prod(s)) for k, s in spec.items() if not k.endswith("num_batches_tracked"))
    item_shapes: dict[str, tuple[int, ...]]
    if kind == "unet":
        item_shapes = {"image": IMAGE_SHAPE, "audio": AUDIO_SHAPES[mode or "ave"]}
        outputs: dict[str, list] = {"output": ["N", *PRED_SHAPE]}
    else:
        item_shapes, outputs = {"mel": MEL_SHAPE}, {"embedding": ["N", EMBEDDING]}
    inputs: dict[str, list] = {name: ["N", *shape] for name, shape in item_shapes.items()}
    rng = np.random.default_rng(0)
    feed = {name: rng.uniform(0.0, 1.0, (2, *shape)).astype(np.float32) for name, shape in item_shapes.items()}
    sess = cpu_session(str(out))
    t0 = time.perf_counter()
    result = sess.run(feed)[0]
    seconds = time.perf_counter() - t0
    if not np.isfinite(result).all():
        raise ModelError(f"{out}: the self-check run produced NaN or infinite outputs; is the checkpoint trained?")
    return ExportSummary(
        out, kind, mode, guessed, params, inputs, outputs, seconds, (float(result.min()), float(result.max()))
    )


def demo_audio_encoder(path: str | os.PathLike) -> Path:
    """Write the demo's audio encoder: fixed random weights (seed
    :data:`~synctalk_fast.demo.DEMO_ENCODER_SEED`), what the demo U-Net learned to hear.

    Parameters
    ----------
    path : str or os.PathLike
        The ONNX file to write (its folder is made); an existing file is kept as it is.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    out = Path(path)
    if not out.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        export_onnx(random_state_dict("audio_encoder", seed=DEMO_ENCODER_SEED), out)
    return out
