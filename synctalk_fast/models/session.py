"""ONNX Runtime sessions for any SyncTalk_2D model file a user has.

Inputs are recognised by shape, never by name (earlier exporters called them
"input", "image", "mel_input", ...). A model exported with a fixed batch of 1
is rewritten to a dynamic batch dimension once, checked against the original,
and cached by content hash (next to the file, or in the user cache directory
when that folder is read-only); a model that cannot be rewritten runs one
item at a time, with one warning.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from .networks import AUDIO_SHAPES, IMAGE_SHAPE, MEL_SHAPE, ModelError

__all__ = ["ModelSession", "load_session", "default_providers", "cache_dir"]

log = logging.getLogger(__name__)

PROVIDER_PREFERENCE = (
    "TensorrtExecutionProvider",
    "CUDAExecutionProvider",
    "CoreMLExecutionProvider",
    "DmlExecutionProvider",
    "CPUExecutionProvider",
)
_VERIFY_TOL = 1e-4  # rewritten vs original output, float32 on the same provider


def default_providers() -> list[str]:
    """Available ONNX Runtime providers, best first (TensorRT > CUDA > CoreML > DirectML > CPU)."""
    import onnxruntime as ort

    available = set(ort.get_available_providers())
    return [p for p in PROVIDER_PREFERENCE if p in available] or ["CPUExecutionProvider"]


def cache_dir() -> Path:
    """Where rewritten models go when the model's own folder is read-only:
    ``$SYNCTALK_FAST_CACHE``, else the platform's user cache folder."""
    if os.environ.get("SYNCTALK_FAST_CACHE"):
        return Path(os.environ["SYNCTALK_FAST_CACHE"])
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "synctalk_fast"


def _dims(value_info) -> list[int | str | None]:
    dims = []
    for d in value_info.type.tensor_type.shape.dim:
        dims.append(d.dim_value if d.HasField("dim_value") else (d.dim_param or None))
    return dims


def _matches(dims: list, shape: Sequence[int]) -> bool:
    """dims [N, C, H, W] (ints or symbols) fit the per-item shape [C, H, W]."""
    return len(dims) == 1 + len(shape) and all(not isinstance(d, int) or d == s for d, s in zip(dims[1:], shape))


@dataclass
class _Roles:
    kind: str  # "unet" | "audio_encoder"
    mode: str | None
    inputs: dict[str, str]  # role -> graph input name
    output: str
    batch_fixed: bool = False
    item_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)


def _find_roles(model, path: str) -> _Roles:
    init_names = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in init_names]
    found: dict[str, str] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    mode = None
    described = []
    for vi in inputs:
        dims = _dims(vi)
        described.append(f"{vi.name} {dims}")
        if _matches(dims, IMAGE_SHAPE):
            found["image"], shapes["image"] = vi.name, IMAGE_SHAPE
        elif _matches(dims, MEL_SHAPE):
            found["mel"], shapes["mel"] = vi.name, MEL_SHAPE
        else:
            for m, shape in AUDIO_SHAPES.items():
                if _matches(dims, shape) and len(dims) == 4:
                    found["audio"], shapes["audio"], mode = vi.name, shape, m
                    break
    if set(found) == {"image", "audio"} and len(inputs) == 2:
        kind = "unet"
    elif set(found) == {"mel"} and len(inputs) == 1:
        kind, mode = "audio_encoder", None
    else:
        raise ModelError(
            f"{path}: not a SyncTalk_2D model: inputs {', '.join(described) or 'none'}; expected a U-Net "
            f"(image [N, 6, 320, 320] + audio [N, 32, 16, 16] / [N, 32, 32, 32] / [N, 256, 16, 32]) "
            f"or an audio encoder (mel [N, 1, 80, 16])"
        )
    if len(model.graph.output) != 1:
        raise ModelError(f"{path}: expected one output, found {len(model.graph.output)}")
    fixed = any(_dims(vi)[0] == 1 for vi in inputs)
    return _Roles(kind, mode, found, model.graph.output[0].name, fixed, shapes)


def _make_dynamic(model):
    """Copy of the model with a symbolic batch dimension on every input and
    output, intermediate shape annotations dropped, and constant shapes with a
    leading 1 in Reshape / Resize nodes made batch-agnostic."""
    import onnx
    from onnx import numpy_helper

    m = onnx.ModelProto()
    m.CopyFrom(model)
    for vi in list(m.graph.input) + list(m.graph.output):
        dims = vi.type.tensor_type.shape.dim
        if dims:
            dims[0].Clear()
            dims[0].dim_param = "batch"
    del m.graph.value_info[:]
    consts = {t.name: t for t in m.graph.initializer}
    for node in m.graph.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    consts[node.output[0]] = a.t
    for node in m.graph.node:
        if node.op_type == "Reshape" and len(node.input) > 1 and node.input[1] in consts:
            t = consts[node.input[1]]
            shape = numpy_helper.to_array(t).copy()
            if shape.size and shape[0] == 1:
                shape[0] = 0  # 0: copy the input's dim 0 (the batch)
                t.CopyFrom(numpy_helper.from_array(shape.astype(np.int64), t.name))
        elif node.op_type == "Resize" and len(node.input) > 3 and node.input[3] in consts:
            raise ModelError("Resize with constant output sizes pins the batch size")
    return m


def _session(model_bytes_or_path, providers):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(model_bytes_or_path, opts, providers=list(providers))


def _probe_inputs(roles: _Roles, n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        roles.inputs[r]: rng.uniform(0.0, 1.0, (n, *s)).astype(np.float32) for r, s in roles.item_shapes.items()
    }


def _write_atomic(data: bytes, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=target.name, suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _dynamic_copy(path: Path, model, roles: _Roles, providers) -> Path:
    """Path of a verified dynamic-batch rewrite of ``model`` (cached by hash)."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    name = f"{path.stem}.dynamic-{digest}.onnx"
    for folder in (path.parent, cache_dir()):
        if (folder / name).is_file():
            return folder / name
    dynamic = _make_dynamic(model)
    data = dynamic.SerializeToString()
    # Same outputs as the original, alone and in a batch of two different items.
    original = _session(str(path), providers)
    rewritten = _session(data, providers)
    one, two = _probe_inputs(roles, 1, seed=1), _probe_inputs(roles, 1, seed=2)
    both = {k: np.concatenate([one[k], two[k]]) for k in one}
    want = np.concatenate([original.run(None, one)[0], original.run(None, two)[0]])
    got = rewritten.run(None, both)[0]
    err = float(np.abs(got - want).max())
    if got.shape != want.shape or not err <= _VERIFY_TOL:
        raise ModelError(f"the rewritten model differs from the original (max abs {err:.3g})")
    for folder in (path.parent, cache_dir()):
        try:
            _write_atomic(data, folder / name)
            return folder / name
        except OSError:
            continue
    raise ModelError(f"no writable folder for the rewritten model (tried {path.parent} and {cache_dir()})")


class ModelSession:
    """An ONNX Runtime session of a U-Net or an audio encoder, inputs bound by role.

    Attributes
    ----------
    kind : {"unet", "audio_encoder"}
    mode : {"ave", "hubert", "wenet"} or None
        U-Net audio mode, from the audio input's shape.
    path : Path
        The model file given; ``model_path`` is the file actually loaded
        (a cached dynamic-batch rewrite, or the file itself).
    dynamic_batch : bool
        False when the model only runs batch 1 (then :meth:`run` loops).
    inputs : dict
        role (``image``, ``audio``, ``mel``) -> graph input name.
    providers : list of str
        The providers the session uses.
    """

    def __init__(self, path: Path, model_path: Path, roles: _Roles, dynamic_batch: bool, providers):
        self.path = path
        self.model_path = model_path
        self.kind = roles.kind
        self.mode = roles.mode
        self.inputs = dict(roles.inputs)
        self.output = roles.output
        self.dynamic_batch = dynamic_batch
        self.item_shapes = dict(roles.item_shapes)
        self.session = _session(str(model_path), providers)
        self.providers = self.session.get_providers()

    def __repr__(self) -> str:
        mode = f", mode={self.mode!r}" if self.mode else ""
        return (
            f"ModelSession({self.kind!r}{mode}, path={str(self.path)!r}, "
            f"dynamic_batch={self.dynamic_batch}, providers={self.providers})"
        )

    def run(self, **arrays: np.ndarray) -> np.ndarray:
        """Run a batch. Keywords are roles: ``image=``, ``audio=`` (U-Net) or
        ``mel=`` (encoder), float32 ``[N, ...]``; returns float32 ``[N, ...]``
        (``[N, 3, 320, 320]`` or ``[N, 512]``)."""
        if set(arrays) != set(self.inputs):
            raise ValueError(f"{self.kind} takes {', '.join(sorted(self.inputs))}, got {', '.join(sorted(arrays))}")
        feed = {}
        n = None
        for role, arr in arrays.items():
            a = np.ascontiguousarray(arr, dtype=np.float32)
            if a.shape[1:] != self.item_shapes[role]:
                raise ValueError(f"{role} must be [N, {', '.join(map(str, self.item_shapes[role]))}], got {list(a.shape)}")
            if n is not None and a.shape[0] != n:
                raise ValueError("inputs have different batch sizes")
            n = a.shape[0]
            feed[self.inputs[role]] = a
        if self.dynamic_batch or n == 1:
            return self.session.run([self.output], feed)[0]
        return np.concatenate([self.session.run([self.output], {k: v[i : i + 1] for k, v in feed.items()})[0] for i in range(n)])


def load_session(path: str | os.PathLike, *, providers: Sequence[str] | None = None) -> ModelSession:
    """Open a U-Net or audio encoder ONNX file, whatever exported it.

    Parameters
    ----------
    path : str or os.PathLike
        The model file.
    providers : sequence of str, optional, keyword-only
        ONNX Runtime providers in order of preference (default:
        :func:`default_providers`).

    Returns
    -------
    ModelSession

    Raises
    ------
    ModelError
        The file is missing, not ONNX, or not a SyncTalk_2D network (the
        message lists its inputs and what was expected).
    """
    import onnx

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model file not found: {path}")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise ModelError(f"{path}: not an ONNX model ({exc})") from None
    roles = _find_roles(model, str(path))
    providers = list(providers) if providers is not None else default_providers()
    if not roles.batch_fixed:
        return ModelSession(path, path, roles, True, providers)
    try:
        dynamic_path = _dynamic_copy(path, model, roles, providers)
    except Exception as exc:  # any failure: run the original, one item at a time
        log.warning("%s has a fixed batch size of 1 and could not be made dynamic (%s); running one item at a time", path, exc)
        return ModelSession(path, path, roles, False, providers)
    log.info("%s: fixed batch size of 1 rewritten to dynamic (%s)", path, dynamic_path)
    return ModelSession(path, dynamic_path, roles, True, providers)
