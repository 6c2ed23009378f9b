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

__all__ = [
    "ModelSession",
    "load_session",
    "default_providers",
    "default_batch_size",
    "default_threads",
    "session_plan",
    "cache_dir",
    "GPU_PROVIDERS",
]

log = logging.getLogger(__name__)

PROVIDER_PREFERENCE = (
    "TensorrtExecutionProvider",
    "CUDAExecutionProvider",
    "CoreMLExecutionProvider",
    "DmlExecutionProvider",
    "CPUExecutionProvider",
)
GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "DmlExecutionProvider", "ROCMExecutionProvider")
_VERIFY_TOL = 1e-4  # rewritten vs original output, float32 on the same provider
PRECISIONS = ("fp32", "fp16")
# Frames per U-Net call, by the session's first provider. On CPUs the
# throughput is flat in the batch (measured 60-63 ms/frame for 1..8 on 2
# cores), so the batch is kept small: less latency and memory, finer overlap
# with the other stages. GPUs need batches to fill them.
_BATCH_RULE = {
    "TensorrtExecutionProvider": 16,
    "CUDAExecutionProvider": 16,
    "ROCMExecutionProvider": 16,
    "DmlExecutionProvider": 8,
    "CoreMLExecutionProvider": 4,
    "CPUExecutionProvider": 4,
}


def default_providers() -> list[str]:
    """Available ONNX Runtime providers, best first (TensorRT > CUDA > CoreML > DirectML > CPU)."""
    import onnxruntime as ort

    available = set(ort.get_available_providers())
    return [p for p in PROVIDER_PREFERENCE if p in available] or ["CPUExecutionProvider"]


def default_batch_size(providers: Sequence[str]) -> int:
    """Frames per U-Net call for a session on ``providers`` (the first decides):
    16 on CUDA / TensorRT / ROCm, 8 on DirectML, 4 on CoreML and CPU."""
    return _BATCH_RULE.get(next(iter(providers), "CPUExecutionProvider"), 4)


def session_plan(providers: Sequence[str], *, sessions: int | None = None, threads: int | None = None) -> tuple[int, int]:
    """(U-Net sessions, intra-op threads each) for a pipeline on ``providers``.

    On CPU, one session per core up to 4 (the Go port's way), the cores
    shared out among them: 2 cores -> 2 x 1 thread, 8 -> 4 x 2, 16 -> 4 x 4.
    Sessions of one thread need no barrier between their threads, so a
    core taken by another stage for a moment costs only that moment; here
    2 x 1 ran 17.1-17.7 frames/s against 16.4-16.9 for 1 x 2. On a GPU, one
    session, and the threads only feed it.
    """
    cores = default_threads()
    first = next(iter(providers), "CPUExecutionProvider")
    if sessions is None:
        sessions = min(cores, 4) if first == "CPUExecutionProvider" else 1
    sessions = max(1, int(sessions))
    return sessions, int(threads or max(1, cores // sessions))


def default_threads() -> int:
    """ONNX Runtime intra-op threads: every core this process may use.

    The U-Net is ~98% of the arithmetic, so it gets all cores; the other
    pipeline stages (decode, prepare, paste, encode) run in their own threads
    and take the cores whenever ONNX Runtime's threads wait, because spinning
    is turned off (see :func:`load_session`).
    """
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


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


def _session_options(threads: int | None = None, spinning: bool = False):
    """Session options for this package's workloads.

    - all graph optimisations (constant folding, Conv+BN/ReLU fusion, NCHWc
      layouts on CPU);
    - ``threads`` intra-op threads (default :func:`default_threads`), one
      inter-op thread: the networks are single chains;
    - spinning off: an idle ONNX Runtime thread sleeps instead of busy-waiting,
      so the pipeline's other stages get the cores between U-Net calls
      (U-Net alone: the same speed either way, 60-63 ms/frame here);
    - the CPU memory arena and memory patterns on: every call has the same
      shapes, so buffers are planned once and reused.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.intra_op_num_threads = int(threads or default_threads())
    opts.inter_op_num_threads = 1
    opts.enable_cpu_mem_arena = True
    opts.enable_mem_pattern = True
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    return opts


def _provider_options(providers: Sequence[str], roles: _Roles | None, batch: int, fp16: bool) -> list:
    """``providers`` with their options: TensorRT gets an engine cache, an
    optimisation profile for batches 1..``batch`` and fp16 when asked."""
    out: list = []
    for p in providers:
        if p == "TensorrtExecutionProvider":
            opts = {
                "trt_engine_cache_enable": True,
                "trt_engine_cache_path": str(cache_dir() / "tensorrt"),
                "trt_timing_cache_enable": True,
                "trt_fp16_enable": bool(fp16),
            }
            if roles is not None:
                def shapes(n):
                    return ",".join(f"{roles.inputs[r]}:{'x'.join(map(str, (n, *roles.item_shapes[r])))}" for r in roles.inputs)

                opts.update(trt_profile_min_shapes=shapes(1), trt_profile_opt_shapes=shapes(batch),
                            trt_profile_max_shapes=shapes(max(batch, 64)))
            out.append((p, opts))
        elif p == "CUDAExecutionProvider":
            out.append((p, {"cudnn_conv_algo_search": "EXHAUSTIVE", "do_copy_in_default_stream": True}))
        else:
            out.append(p)
    return out


def _session(model_bytes_or_path, providers, *, threads=None, spinning=False, roles=None, batch=4, fp16=False):
    import onnxruntime as ort

    return ort.InferenceSession(model_bytes_or_path, _session_options(threads, spinning),
                                providers=_provider_options(list(providers), roles, batch, fp16))


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


def _cached(path: Path, tag: str, digest: str, make) -> Path:
    """``<stem>.<tag>-<digest>.onnx`` beside ``path`` or in :func:`cache_dir`;
    ``make()`` returns its bytes when neither folder has it yet."""
    name = f"{path.stem}.{tag}-{digest}.onnx"
    for folder in (path.parent, cache_dir()):
        if (folder / name).is_file():
            return folder / name
    data = make()
    for folder in (path.parent, cache_dir()):
        try:
            _write_atomic(data, folder / name)
            return folder / name
        except OSError:
            continue
    raise ModelError(f"no writable folder for the rewritten model (tried {path.parent} and {cache_dir()})")


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def _dynamic_copy(path: Path, model, roles: _Roles, providers) -> Path:
    """Path of a verified dynamic-batch rewrite of ``model`` (cached by hash)."""
    return _cached(path, "dynamic", _digest(path), lambda: _verified_dynamic(path, model, roles, providers))


def _verified_dynamic(path: Path, model, roles: _Roles, providers) -> bytes:
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
    return data


def _fp16_copy(path: Path) -> Path:
    """Path of an fp16 copy of the model at ``path`` (weights and arithmetic
    in float16, inputs and outputs still float32), cached by hash."""

    def make() -> bytes:
        import onnx
        from onnxruntime.transformers.float16 import convert_float_to_float16

        return convert_float_to_float16(onnx.load(str(path)), keep_io_types=True).SerializeToString()

    return _cached(path, "fp16", _digest(path), make)


class ModelSession:
    """An ONNX Runtime session of a U-Net or an audio encoder, inputs bound by role.

    Attributes
    ----------
    kind : {"unet", "audio_encoder"}
    mode : {"ave", "hubert", "wenet"} or None
        U-Net audio mode, from the audio input's shape.
    path : Path
        The model file given; ``model_path`` is the file actually loaded
        (a cached dynamic-batch or fp16 rewrite, or the file itself).
    dynamic_batch : bool
        False when the model only runs batch 1 (then :meth:`run` loops).
    inputs : dict
        role (``image``, ``audio``, ``mel``) -> graph input name.
    providers : list of str
        The providers the session uses.
    precision : {"fp32", "fp16"}
    io_binding : bool
        Inputs and outputs go through ONNX Runtime IOBinding with buffers
        kept on the provider's device (default on GPU providers).
    """

    def __init__(self, path: Path, model_path: Path, roles: _Roles, dynamic_batch: bool, providers, *,
                 threads: int | None = None, precision: str = "fp32", io_binding: bool | None = None,
                 batch_size: int = 4, spinning: bool = False):
        self.path = path
        self.model_path = model_path
        self.kind = roles.kind
        self.mode = roles.mode
        self.inputs = dict(roles.inputs)
        self.output = roles.output
        self.dynamic_batch = dynamic_batch
        self.item_shapes = dict(roles.item_shapes)
        self.precision = precision
        self.session = _session(str(model_path), providers, threads=threads, spinning=spinning, roles=roles,
                                batch=batch_size, fp16=precision == "fp16")
        self.threads = int(threads or default_threads())  # intra-op threads
        self.providers = self.session.get_providers()
        self.device = "cuda" if self.providers[0] in ("TensorrtExecutionProvider", "CUDAExecutionProvider") else "cpu"
        self.io_binding = bool(self.device != "cpu" if io_binding is None else io_binding)
        self._bound: dict[int, tuple] = {}  # batch size -> (binding, input OrtValues, output OrtValue)

    def __repr__(self) -> str:
        mode = f", mode={self.mode!r}" if self.mode else ""
        return (
            f"ModelSession({self.kind!r}{mode}, path={str(self.path)!r}, dynamic_batch={self.dynamic_batch}, "
            f"providers={self.providers}, precision={self.precision!r})"
        )

    def run(self, **arrays: np.ndarray) -> np.ndarray:
        """Run a batch. Keywords are roles: ``image=``, ``audio=`` (U-Net) or
        ``mel=`` (encoder), float32 ``[N, ...]``; returns float32 ``[N, ...]``
        (``[N, 3, 320, 320]`` or ``[N, 512]``), a new array the caller owns.
        Not thread-safe with IOBinding (one caller at a time)."""
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
        if not self.dynamic_batch and n != 1:
            return np.concatenate([self._run(1, {k: v[i : i + 1] for k, v in feed.items()}) for i in range(n)])
        return self._run(n, feed)

    def _run(self, n: int, feed: dict[str, np.ndarray]) -> np.ndarray:
        if not self.io_binding:
            return self.session.run([self.output], feed)[0]
        # IOBinding: one set of device buffers per batch size, allocated once;
        # each call copies the inputs in (update_inplace) and the output out.
        if n not in self._bound:
            import onnxruntime as ort

            binding = self.session.io_binding()
            values = {}
            for name, a in feed.items():
                values[name] = ort.OrtValue.ortvalue_from_shape_and_type(a.shape, np.float32, self.device, 0)
                binding.bind_ortvalue_input(name, values[name])
            out_shape = (n, *self._output_item_shape())
            out = ort.OrtValue.ortvalue_from_shape_and_type(out_shape, np.float32, self.device, 0)
            binding.bind_ortvalue_output(self.output, out)
            self._bound[n] = (binding, values, out)
        binding, values, out = self._bound[n]
        for name, a in feed.items():
            values[name].update_inplace(a)
        self.session.run_with_iobinding(binding)
        return np.array(out.numpy(), dtype=np.float32, copy=True)

    def _output_item_shape(self) -> tuple[int, ...]:
        return (3, IMAGE_SHAPE[1], IMAGE_SHAPE[2]) if self.kind == "unet" else (512,)


def load_session(
    path: str | os.PathLike,
    *,
    providers: Sequence[str] | None = None,
    threads: int | None = None,
    precision: str = "fp32",
    io_binding: bool | None = None,
    batch_size: int | None = None,
    spinning: bool = False,
) -> ModelSession:
    """Open a U-Net or audio encoder ONNX file, whatever exported it.

    Parameters
    ----------
    path : str or os.PathLike
        The model file.
    providers : sequence of str, optional, keyword-only
        ONNX Runtime providers in order of preference (default:
        :func:`default_providers`: TensorRT > CUDA > CoreML > DirectML > CPU,
        those installed).
    threads : int, optional, keyword-only
        Intra-op threads (default :func:`default_threads`: all cores).
    precision : {"fp32", "fp16"}, keyword-only
        fp16 converts the model (weights and arithmetic in float16, inputs and
        outputs float32; cached beside the model by hash). Meant for GPUs;
        it moves U-Net outputs by a fraction of a level on average (the bench
        reports the difference).
    io_binding : bool, optional, keyword-only
        Use IOBinding with device-resident buffers (default: on CUDA / TensorRT).
    batch_size : int, optional, keyword-only
        The usual batch (TensorRT builds its engine profile for it).
    spinning : bool, keyword-only
        Let idle ONNX Runtime threads busy-wait (off by default, so other
        pipeline stages get the cores).

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
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if not path.is_file():
        raise ModelError(f"model file not found: {path}")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise ModelError(f"{path}: not an ONNX model ({exc})") from None
    roles = _find_roles(model, str(path))
    providers = list(providers) if providers is not None else default_providers()
    options = dict(threads=threads, io_binding=io_binding, spinning=spinning,
                   batch_size=int(batch_size or default_batch_size(providers)))
    model_path, dynamic = path, True
    if roles.batch_fixed:
        try:
            model_path = _dynamic_copy(path, model, roles, providers)
            log.info("%s: fixed batch size of 1 rewritten to dynamic (%s)", path, model_path)
        except Exception as exc:  # any failure: run the original, one item at a time
            log.warning("%s has a fixed batch size of 1 and could not be made dynamic (%s); running one item at a time",
                        path, exc)
            dynamic = False
    if precision == "fp16":
        model_path = _fp16_copy(model_path)
    return ModelSession(path, model_path, roles, dynamic, providers, precision=precision, **options)
