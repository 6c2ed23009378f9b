"""ONNX Runtime behind the :class:`~synctalk_fast.runtime.base.Runtime` interface.

:data:`PROVIDERS` is the one table of what each execution provider means
here. Sessions are tuned for this package's workloads (see
:func:`session_options`); with IOBinding, device buffers are kept per batch
size and guarded by the session's lock.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from .._util.system import cache_dir
from .base import Provider, SessionRequest

__all__ = [
    "PROVIDERS",
    "OnnxRuntime",
    "OrtSession",
    "session_options",
    "tensorrt_cache",
    "tensorrt_loadable",
    "installed_builds",
    "builds_conflict",
    "probe",
]

log = logging.getLogger(__name__)
_TENSORRT_LIBRARIES = {"win32": ("nvinfer_10.dll", "nvinfer.dll"), "darwin": ()}.get(
    sys.platform, ("libnvinfer.so.10", "libnvinfer.so.8", "libnvinfer.so")
)


@functools.lru_cache(maxsize=1)
def tensorrt_loadable() -> bool:
    """Whether the TensorRT libraries load (probed quietly, once): onnxruntime-gpu
    lists its TensorRT provider whether or not TensorRT is installed."""
    try:
        import tensorrt_libs  # noqa: F401 - the pip wheels put the libraries on the loader's path
    except ImportError:
        pass
    for name in _TENSORRT_LIBRARIES:
        try:
            ctypes.CDLL(name)
            return True
        except OSError:
            continue
    return False


def tensorrt_cache() -> Path:
    """TensorRT's engine and timing cache folder, created (ONNX Runtime's
    TensorRT provider does not create missing folders, and fails without it)."""
    folder = cache_dir() / "tensorrt"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _tensorrt_options(req: SessionRequest) -> dict:
    """Engine and timing caches, fp16 when asked, and an optimisation
    profile for batches 1 .. max(batch, 64) when the input roles are known."""
    opts: dict = {
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": str(tensorrt_cache()),
        "trt_timing_cache_enable": True,
        "trt_fp16_enable": req.precision == "fp16",
    }
    if req.inputs:

        def shapes(n: int) -> str:
            return ",".join(f"{name}:{'x'.join(map(str, (n, *item)))}" for name, item in req.inputs.items())

        opts.update(
            trt_profile_min_shapes=shapes(1),
            trt_profile_opt_shapes=shapes(req.batch),
            trt_profile_max_shapes=shapes(max(req.batch, 64)),
        )
    return opts


def _cuda_options(req: SessionRequest) -> dict:
    return {"cudnn_conv_algo_search": "EXHAUSTIVE", "do_copy_in_default_stream": True}


#: ONNX Runtime's execution providers this package knows: name -> its :class:`~synctalk_fast.runtime.base.Provider` row.
#: Batch: on CPUs throughput is flat in the batch, so it stays small (less
#: latency and memory, finer overlap with the other stages); GPUs need
#: batches to fill them.
PROVIDERS: Mapping[str, Provider] = {
    p.name: p
    for p in (
        Provider("TensorrtExecutionProvider", "tensorrt", 0, True, "cuda", 16, True, _tensorrt_options, "device_id"),
        Provider("CUDAExecutionProvider", "cuda", 1, True, "cuda", 16, True, _cuda_options, "device_id"),
        Provider("ROCMExecutionProvider", "rocm", 2, True, "cpu", 16, False, None, "device_id"),
        Provider("CoreMLExecutionProvider", "coreml", 3, True, "cpu", 4, False),
        Provider("DmlExecutionProvider", "directml", 4, True, "cpu", 8, False, None, "device_id"),
        Provider("CPUExecutionProvider", "cpu", 9, False, "cpu", 4, False),
    )
}
_UNKNOWN = Provider("", "", 99, False, "cpu", 4, False)  # a provider missing from the table


def provider(name: str) -> Provider:
    """The table's row for ``name`` (a row of CPU-like defaults if it has none)."""
    return PROVIDERS.get(name) or Provider(name, name, 99, name != "CPUExecutionProvider", "cpu", 4, False)


def session_options(request: SessionRequest):
    """ONNX Runtime session options for this package's workloads.

    - all graph optimisations (constant folding, Conv+BN/ReLU fusion, NCHWc
      layouts on CPU);
    - ``request.threads`` intra-op threads, one inter-op thread: the
      networks are single chains;
    - spinning off unless asked: an idle thread sleeps instead of
      busy-waiting, so the pipeline's other stages get the cores between
      U-Net calls;
    - the CPU memory arena and memory patterns on: every call has the same
      shapes, so buffers are planned once and reused.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if request.plain:
        if request.threads:
            opts.intra_op_num_threads = int(request.threads)
        return opts
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.intra_op_num_threads = int(request.threads)
    opts.inter_op_num_threads = 1
    opts.enable_cpu_mem_arena = True
    opts.enable_mem_pattern = True
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if request.spinning else "0")
    return opts


#: The ONNX Runtime distributions that each install the same ``onnxruntime`` package.
BUILDS = (
    "onnxruntime",
    "onnxruntime-gpu",
    "onnxruntime-directml",
    "onnxruntime-openvino",
    "onnxruntime-qnn",
    "onnxruntime-rocm",
    "onnxruntime-training",
)


def installed_builds() -> list[str]:
    """The ONNX Runtime distributions installed in this environment."""
    from importlib.metadata import PackageNotFoundError, version

    found = []
    for name in BUILDS:
        try:
            version(name)
            found.append(name)
        except PackageNotFoundError:
            continue
    return found


def builds_conflict() -> str | None:
    """A one-line warning with the fix when several ONNX Runtime builds share
    one ``onnxruntime`` folder (the last one installed wins), else None."""
    builds = installed_builds()
    if len(builds) < 2:
        return None
    keep = next((b for b in builds if b != "onnxruntime"), builds[-1])
    return (
        f"{' and '.join(builds)} are installed side by side and overwrite each other's onnxruntime folder; "
        f"fix: pip uninstall -y {' '.join(builds)} && pip install {keep}"
    )


def probe(name: str) -> str | None:
    """None when a session on provider ``name`` alone really runs a tiny
    model, else why not (one line)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    if name not in ort.get_available_providers():
        return "not in this onnxruntime build"
    if name == "TensorrtExecutionProvider" and not tensorrt_loadable():
        return "the TensorRT libraries (libnvinfer) do not load"
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = min(model.ir_version, 9)
    try:
        opts = ort.SessionOptions()
        opts.log_severity_level = 4
        sess = ort.InferenceSession(model.SerializeToString(), opts, providers=[name])
        if sess.get_providers()[0] != name:
            return f"the session fell back to {sess.get_providers()[0]}"
        sess.run(None, {"x": [[1.0, -1.0, 2.0, -2.0]]})
    except Exception as exc:  # noqa: BLE001 - the reason is the answer
        return " ".join(str(exc).split())[:200] or type(exc).__name__
    return None


@functools.lru_cache(maxsize=1)
def _say_tensorrt_builds_once() -> None:
    log.warning(
        "TensorRT builds an engine for each model and batch profile on first use: this takes minutes "
        "once; later runs load it from %s",
        tensorrt_cache(),
    )


@functools.lru_cache(maxsize=1)
def _warn_conflict_once() -> None:
    conflict = builds_conflict()
    if conflict:
        log.warning("%s", conflict)


class OrtSession:
    """An ONNX Runtime ``InferenceSession`` with this package's options.

    Attributes
    ----------
    session : onnxruntime.InferenceSession
    providers : list of str
        Those the session uses, best first.
    provider : Provider
        The table row of ``providers[0]``.
    precision, threads, io_binding
        As opened.

    Invariant: with IOBinding, one set of device buffers per batch size,
    allocated on first use and only touched under ``self._lock``.
    """

    def __init__(self, model, providers: Sequence[str], request: SessionRequest, io_binding: bool | None = None):
        import onnxruntime as ort

        with_options = []
        for row in (provider(p) for p in providers):
            opts = dict(row.options(request)) if row.options and not request.plain else {}
            if row.device_option and request.device_id:
                opts[row.device_option] = int(request.device_id)
            with_options.append((row.name, opts) if opts else row.name)
        source = model if isinstance(model, bytes) else os.fspath(model)
        self.session = ort.InferenceSession(source, session_options(request), providers=with_options)
        self.providers: list[str] = self.session.get_providers()
        self.provider = provider(self.providers[0])
        self.precision = request.precision
        self.threads = int(request.threads)
        self.device_id = int(request.device_id)
        self.io_binding = bool(self.provider.io_binding if io_binding is None else io_binding)
        self.per_shape = self.provider.accelerator  # cuDNN's algorithm search, TensorRT's profiles
        self.outputs = [o.name for o in self.session.get_outputs()]
        if self.provider.name == "TensorrtExecutionProvider" and not request.plain:
            _say_tensorrt_builds_once()
        self._bound: dict[int, tuple] = {}  # batch size -> (binding, input OrtValues, output OrtValue)
        self._lock = threading.Lock()

    def run(self, feeds: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None) -> list[np.ndarray]:
        if not self.io_binding or len(self.outputs) != 1:
            return self.session.run(list(outputs) if outputs else None, dict(feeds))
        return [self._run_bound(feeds)]

    def _run_bound(self, feeds: Mapping[str, np.ndarray]) -> np.ndarray:
        import onnxruntime as ort

        n = next(iter(feeds.values())).shape[0]
        memory = self.provider.memory
        with self._lock:
            bound = self._bound.get(n)
            if bound is None:
                binding = self.session.io_binding()
                values = {}
                for name, a in feeds.items():
                    values[name] = ort.OrtValue.ortvalue_from_shape_and_type(
                        a.shape, np.float32, memory, self.device_id
                    )
                    binding.bind_ortvalue_input(name, values[name])
            else:
                binding, values, out = bound
            for name, a in feeds.items():
                values[name].update_inplace(np.ascontiguousarray(a, dtype=np.float32))
            if bound is None:  # the first run allocates the output buffer; later runs reuse it
                binding.bind_output(self.outputs[0], memory, self.device_id)
                self.session.run_with_iobinding(binding)
                out = binding.get_outputs()[0]
                binding.bind_ortvalue_output(self.outputs[0], out)
                self._bound[n] = (binding, values, out)
            else:
                self.session.run_with_iobinding(binding)
            result = out.numpy()
        # a device buffer arrives as a new host array; a host buffer is the
        # bound memory itself, which the next run overwrites
        return result.copy() if memory == "cpu" else result


class OnnxRuntime:
    """The ONNX Runtime runtime: :data:`PROVIDERS`, fp32 and fp16."""

    name = "onnxruntime"
    precisions: tuple[str, ...] = ("fp32", "fp16")
    rewrites: tuple[str, ...] = ("fp16",)
    providers: Mapping[str, Provider] = PROVIDERS

    def installed(self) -> list[str]:
        import onnxruntime as ort

        return list(ort.get_available_providers())

    def available(self) -> list[str]:
        _warn_conflict_once()
        installed = set(self.installed())
        if "TensorrtExecutionProvider" in installed and not tensorrt_loadable():
            installed.discard("TensorrtExecutionProvider")  # listed by onnxruntime-gpu, but TensorRT is absent
        ranked = sorted((p for p in PROVIDERS.values() if p.name in installed), key=lambda p: p.rank)
        return [p.name for p in ranked] or ["CPUExecutionProvider"]

    def open(
        self, model, *, providers: Sequence[str], request: SessionRequest, io_binding: bool | None = None
    ) -> OrtSession:
        return OrtSession(model, providers, request, io_binding)

    def convert(self, model, precision: str) -> bytes | None:
        """fp16: weights and arithmetic in float16, inputs and outputs still float32."""
        if precision == "fp32":
            return None
        import onnx
        from onnxruntime.transformers.float16 import convert_float_to_float16

        return convert_float_to_float16(onnx.load(os.fspath(model)), keep_io_types=True).SerializeToString()
