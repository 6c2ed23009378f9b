"""Sessions of any SyncTalk_2D model file a user has, on any runtime.

Inputs are recognised by shape, never by name (earlier exporters called them
"input", "image", "mel_input", ...). A model exported with a fixed batch of 1
is rewritten to a dynamic batch dimension once, checked against the original,
and cached by content hash (next to the file, or in the user cache folder
when that folder is read-only); a model that cannot be rewritten runs one
item at a time, with one warning. A precision the runtime runs only on a
rewritten model (fp16 on ONNX Runtime) is cached the same way.

:func:`resolve_model` does the file work once; :class:`ModelSession` opens a
runtime session on the result, so an engine opens several sessions of one
model without repeating it.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeAlias

import numpy as np

from .._util.atomic import write_atomic
from .._util.system import cache_dir
from ..errors import ModelError
from ..runtime import (
    DEFAULT_RUNTIME,
    RUNTIMES,
    Runtime,
    SessionRequest,
    default_batch_size,
    default_providers,
    default_threads,
    get_runtime,
    resolve_providers,
    session_plan,
)
from ..shapes import AUDIO_SHAPES, IMAGE_SHAPE, MEL_SHAPE

__all__ = [
    "ModelLike",
    "ModelSession",
    "ResolvedModel",
    "load_session",
    "resolve_model",
    "default_providers",
    "default_batch_size",
    "default_threads",
    "session_plan",
    "cache_dir",
]

log = logging.getLogger(__name__)

_VERIFY_TOL = 1e-4  # rewritten vs original output, float32 on the same provider


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

        def dims_text(shape: Sequence[int]) -> str:
            return "[N, " + ", ".join(map(str, shape)) + "]"

        audio = " / ".join(dims_text(s) for s in AUDIO_SHAPES.values())
        raise ModelError(
            f"{path}: not a SyncTalk_2D model: inputs {', '.join(described) or 'none'}; expected a U-Net "
            f"(image {dims_text(IMAGE_SHAPE)} + audio {audio}) or an audio encoder (mel {dims_text(MEL_SHAPE)})"
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


def _probe_inputs(roles: _Roles, n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {roles.inputs[r]: rng.uniform(0.0, 1.0, (n, *s)).astype(np.float32) for r, s in roles.item_shapes.items()}


def _cached(path: Path, tag: str, digest: str, make) -> Path:
    """``<stem>.<tag>-<digest>.onnx`` beside ``path`` or in the user cache
    folder; ``make()`` returns its bytes when neither folder has it yet."""
    name = f"{path.stem}.{tag}-{digest}.onnx"
    for folder in (path.parent, cache_dir()):
        if (folder / name).is_file():
            return folder / name
    data = make()
    for folder in (path.parent, cache_dir()):
        try:
            write_atomic(folder / name, data)
            return folder / name
        except OSError:
            continue
    raise ModelError(f"no writable folder for the rewritten model (tried {path.parent} and {cache_dir()})")


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def _verified_dynamic(path: Path, model, roles: _Roles, runtime: Runtime, providers) -> bytes:
    dynamic = _make_dynamic(model)
    data = dynamic.SerializeToString()
    # Same outputs as the original, alone and in a batch of two different items.
    request = SessionRequest(threads=default_threads())
    original = runtime.open(str(path), providers=providers, request=request)
    rewritten = runtime.open(data, providers=providers, request=request)
    one, two = _probe_inputs(roles, 1, seed=1), _probe_inputs(roles, 1, seed=2)
    both = {k: np.concatenate([one[k], two[k]]) for k in one}
    want = np.concatenate([original.run(one)[0], original.run(two)[0]])
    got = rewritten.run(both)[0]
    err = float(np.abs(got - want).max())
    if got.shape != want.shape or not err <= _VERIFY_TOL:
        raise ModelError(f"the rewritten model differs from the original (max abs {err:.3g})")
    return data


@dataclass
class ResolvedModel:
    """A model file made ready for a runtime: roles found, batch made
    dynamic, precision applied (each rewrite cached on disk).

    Attributes
    ----------
    path : Path
        The file given.
    model_path : Path
        The file a session loads (a cached rewrite, or ``path`` itself).
    kind, mode, roles, dynamic_batch, precision, runtime
    """

    path: Path
    model_path: Path
    roles: _Roles
    dynamic_batch: bool
    precision: str
    runtime: Runtime = field(repr=False)

    @property
    def kind(self) -> str:
        return self.roles.kind

    @property
    def mode(self) -> str | None:
        return self.roles.mode


def resolve_model(
    path: str | os.PathLike,
    *,
    precision: str = "fp32",
    runtime: str | Runtime = DEFAULT_RUNTIME,
    providers: Sequence[str] | None = None,
) -> ResolvedModel:
    """Read a U-Net or audio encoder ONNX file, whatever exported it, and make
    it ready for ``runtime`` at ``precision`` (see :func:`load_session`)."""
    import onnx

    rt = get_runtime(runtime)
    path = Path(path)
    if precision not in rt.precisions:
        elsewhere = [name for name, factory in RUNTIMES.items() if precision in getattr(factory, "precisions", ())]
        hint = f" ({precision} runs on runtime {' or '.join(map(repr, elsewhere))})" if elsewhere else ""
        raise ValueError(f"precision must be one of {', '.join(rt.precisions)} on {rt.name}, got {precision!r}{hint}")
    if not path.is_file():
        raise ModelError(f"model file not found: {path}")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise ModelError(f"{path}: not an ONNX model ({exc})") from None
    roles = _find_roles(model, str(path))
    providers = resolve_providers(providers, runtime=rt)
    model_path, dynamic = path, True
    if roles.batch_fixed:
        try:
            model_path = _cached(
                path, "dynamic", _digest(path), lambda: _verified_dynamic(path, model, roles, rt, providers)
            )
            log.info("%s: fixed batch size of 1 rewritten to dynamic (%s)", path, model_path)
        except Exception as exc:  # any failure: run the original, one item at a time
            log.warning(
                "%s has a fixed batch size of 1 and could not be made dynamic (%s); running one item at a time",
                path,
                exc,
            )
            dynamic = False
    if precision in rt.rewrites:
        source = model_path
        model_path = _cached(source, precision, _digest(source), lambda: rt.convert(source, precision))
    return ResolvedModel(path, model_path, roles, dynamic, precision, rt)


class ModelSession:
    """A runtime session of a U-Net or an audio encoder, inputs bound by role.

    Attributes
    ----------
    kind : {"unet", "audio_encoder"}
    mode : {"ave", "hubert", "wenet"} or None
        U-Net audio mode, from the audio input's shape.
    path : Path
        The model file given; ``model_path`` is the file actually loaded
        (a cached dynamic-batch or fp16 rewrite, or the file itself).
    model : ResolvedModel
        Both, with the roles: more sessions of the same model open from it.
    dynamic_batch : bool
        False when the model only runs batch 1 (then :meth:`run` loops).
    inputs : dict
        role (``image``, ``audio``, ``mel``) -> graph input name.
    runtime : str
        The runtime's name.
    providers : list of str
        The providers the session uses, best first.
    device : str
        Where its buffers live (``"cpu"``, ``"cuda"``).
    accelerator : bool
        It runs on a device other than the host CPU.
    precision : str
    threads : int
        Host threads of the session.
    io_binding : bool
        Inputs and outputs go through device-resident buffers.
    per_shape : bool
        The runtime plans per input shape (cuDNN's search, TensorRT's
        profiles, OpenVINO's static compiles): each batch size pays once.
    session
        The runtime's own session object (``onnxruntime.InferenceSession``).
    """

    def __init__(
        self,
        model: ResolvedModel,
        providers: Sequence[str] | None = None,
        *,
        threads: int | None = None,
        io_binding: bool | None = None,
        batch_size: int | None = None,
        spinning: bool = False,
        device_id: int = 0,
    ):
        rt = model.runtime
        providers = resolve_providers(providers, runtime=rt)
        self.model = model
        self.path = model.path
        self.model_path = model.model_path
        self.kind = model.kind
        self.mode = model.mode
        self.inputs = dict(model.roles.inputs)
        self.output = model.roles.output
        self.dynamic_batch = model.dynamic_batch
        self.item_shapes = dict(model.roles.item_shapes)
        self.precision = model.precision
        request = SessionRequest(
            threads=int(threads or default_threads()),
            batch=int(batch_size or default_batch_size(providers, runtime=rt)),
            precision=model.precision,
            inputs={self.inputs[r]: self.item_shapes[r] for r in self.inputs},
            spinning=spinning,
            device_id=int(device_id),
        )
        self._rt_session = rt.open(str(model.model_path), providers=providers, request=request, io_binding=io_binding)
        self.session = getattr(self._rt_session, "session", self._rt_session)
        self.runtime = rt.name
        self.threads = request.threads
        self.providers = list(self._rt_session.providers)
        self.device = self._rt_session.provider.memory
        self.accelerator = self._rt_session.provider.accelerator
        self.io_binding = self._rt_session.io_binding
        self.per_shape = self._rt_session.per_shape
        self.device_id = int(device_id)

    def __repr__(self) -> str:
        mode = f", mode={self.mode!r}" if self.mode else ""
        return (
            f"ModelSession({self.kind!r}{mode}, path={str(self.path)!r}, dynamic_batch={self.dynamic_batch}, "
            f"runtime={self.runtime!r}, providers={self.providers}, precision={self.precision!r})"
        )

    def run(self, **arrays: np.ndarray) -> np.ndarray:
        """Run a batch. Keywords are roles: ``image=``, ``audio=`` (U-Net) or
        ``mel=`` (encoder), float32 ``[N, ...]``; returns float32 ``[N, ...]``
        (``[N, 3, 320, 320]`` or ``[N, 512]``), a new array the caller owns.
        Thread-safe."""
        if set(arrays) != set(self.inputs):
            raise ValueError(f"{self.kind} takes {', '.join(sorted(self.inputs))}, got {', '.join(sorted(arrays))}")
        feed = {}
        n = None
        for role, arr in arrays.items():
            a = np.ascontiguousarray(arr, dtype=np.float32)
            if a.shape[1:] != self.item_shapes[role]:
                raise ValueError(
                    f"{role} must be [N, {', '.join(map(str, self.item_shapes[role]))}], got {list(a.shape)}"
                )
            if n is not None and a.shape[0] != n:
                raise ValueError("inputs have different batch sizes")
            n = a.shape[0]
            feed[self.inputs[role]] = a
        if not self.dynamic_batch and n is not None and n != 1:
            return np.concatenate(
                [self._rt_session.run({k: v[i : i + 1] for k, v in feed.items()}, [self.output])[0] for i in range(n)]
            )
        return self._rt_session.run(feed, [self.output])[0]


def load_session(
    path: str | os.PathLike,
    *,
    providers: Sequence[str] | None = None,
    threads: int | None = None,
    precision: str = "fp32",
    io_binding: bool | None = None,
    batch_size: int | None = None,
    spinning: bool = False,
    runtime: str | Runtime = DEFAULT_RUNTIME,
    device_id: int = 0,
) -> ModelSession:
    """Open a U-Net or audio encoder ONNX file, whatever exported it.

    Parameters
    ----------
    path : str or os.PathLike
        The model file.
    providers : sequence of str, optional, keyword-only
        Providers in order of preference, full names or short aliases
        (``"cpu"``, ``"cuda"``, ...); default: those installed, best first
        (ONNX Runtime: TensorRT > CUDA > ROCm > CoreML > DirectML > CPU).
    threads : int, optional, keyword-only
        Host threads (default: all cores).
    precision : {"fp32", "fp16"}, keyword-only
        fp16 converts the model (weights and arithmetic in float16, inputs and
        outputs float32; cached beside the model by hash). Meant for GPUs;
        it moves U-Net outputs by a fraction of a level on average.
    io_binding : bool, optional, keyword-only
        Device-resident input and output buffers (default: by provider, on
        for CUDA / TensorRT).
    batch_size : int, optional, keyword-only
        The usual batch (TensorRT builds its engine profile for it).
    spinning : bool, keyword-only
        Let idle runtime threads busy-wait (off by default, so other
        pipeline stages get the cores).
    runtime : str, keyword-only
        The inference runtime (``"onnxruntime"``).
    device_id : int, keyword-only
        Which GPU (for CUDA, TensorRT, ROCm, DirectML).

    Returns
    -------
    ModelSession

    Raises
    ------
    ModelError
        The file is missing, not ONNX, or not a SyncTalk_2D network (the
        message lists its inputs and what was expected).
    """
    model = resolve_model(path, precision=precision, runtime=runtime, providers=providers)
    return ModelSession(
        model,
        providers,
        threads=threads,
        io_binding=io_binding,
        batch_size=batch_size,
        spinning=spinning,
        device_id=device_id,
    )


#: A network the API accepts: an ONNX file (any exporter), or an open session.
ModelLike: TypeAlias = str | os.PathLike[str] | ModelSession
