"""OpenVINO behind the :class:`~synctalk_fast.runtime.base.Runtime` interface.

OpenVINO loads the user's ONNX file as it is and compiles it for the
device, at the precision asked: on CPUs with avx512_bf16 or AMX it runs
bf16 kernels (ONNX Runtime's CPU provider has no bf16 convolutions), on
CPUs with native fp16 arithmetic (ARM) fp16 ones. A precision
the device cannot run natively is refused, never emulated slowly.

:data:`DEVICES` is the one table of what each OpenVINO device means here.
A session compiles one static-shape model per batch size it is given
(OpenVINO's CPU kernels are faster on static shapes), lazily and under its
lock; compiled models are cached on disk (``<cache>/openvino``), so a
second process compiles in a fraction of the time.
"""

from __future__ import annotations

import functools
import io
import os
import platform
import threading
from collections.abc import Mapping, Sequence

import numpy as np

from .._util.system import cache_dir
from .base import Provider, SessionRequest

__all__ = [
    "DEVICES",
    "PRECISION_HINTS",
    "OpenVinoRuntime",
    "OvSession",
    "openvino_cache",
    "precision_problem",
    "capabilities",
]

#: OpenVINO's devices this package knows: name -> its :class:`~synctalk_fast.runtime.base.Provider` row.
#: Batch: as ONNX Runtime's CPU provider (throughput is flat in the batch on
#: a CPU); an Intel GPU needs batches to fill it.
DEVICES: Mapping[str, Provider] = {
    p.name: p
    for p in (
        Provider("GPU", "gpu", 1, True, "cpu", 8, False),
        Provider("CPU", "cpu", 9, False, "cpu", 4, False),
    )
}
#: This package's precision names -> OpenVINO's ``INFERENCE_PRECISION_HINT``.
PRECISION_HINTS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}
# The OPTIMIZATION_CAPABILITIES entry that says a device runs a precision natively.
_CAPABILITY = {"fp32": "FP32", "bf16": "BF16", "fp16": "FP16"}
_NEEDS = {
    "bf16": "a CPU with avx512_bf16 or AMX (Intel Xeon Sapphire Rapids or later, AMD Zen 4 or later)",
    "fp16": "a device with native fp16 arithmetic (an ARM CPU, an Intel GPU)",
}


@functools.lru_cache(maxsize=1)
def _core():
    import openvino as ov

    core = ov.Core()
    return core


def openvino_cache() -> str:
    """Folder of OpenVINO's compiled-model cache, created."""
    folder = cache_dir() / "openvino"
    folder.mkdir(parents=True, exist_ok=True)
    return os.fspath(folder)


def _device(name: str, device_id: int = 0) -> str:
    """OpenVINO's device string: ``GPU.1`` for the second GPU."""
    return f"{name}.{device_id}" if device_id and name != "CPU" else name


def capabilities(device: str = "CPU") -> list[str]:
    """OpenVINO's ``OPTIMIZATION_CAPABILITIES`` of ``device`` (e.g. ``["BF16", "FP32", "INT8", ...]``)."""
    return list(_core().get_property(device, "OPTIMIZATION_CAPABILITIES"))


def precision_problem(precision: str, device: str = "CPU") -> str | None:
    """Why ``device`` cannot run ``precision`` natively, or None when it can."""
    if precision == "fp32":
        return None
    native = _CAPABILITY[precision] in capabilities(device)
    if precision == "fp16" and device.startswith("CPU"):
        # x86 CPUs list FP16 but run the convolutions in fp32 (the same
        # outputs, no speed); fp16 arithmetic on a CPU is ARM's
        native = native and platform.machine().lower() in ("arm64", "aarch64")
    if native:
        return None
    name = _core().get_property(device, "FULL_DEVICE_NAME")
    return f"precision {precision!r} needs {_NEEDS[precision]}; this {device} ({name}) has none: use precision 'fp32'"


class OvSession:
    """A model compiled by OpenVINO, one static-shape compile per batch size.

    Attributes
    ----------
    providers : list of str
        ``[device]``.
    provider : Provider
        The table row of the device.
    precision, threads, io_binding
        As opened (``io_binding`` is always False: OpenVINO's CPU plugin
        reads host arrays in place).

    Invariant: ``self._compiled`` (batch -> (compiled model, infer request))
    is only touched under ``self._lock``; one inference at a time.
    """

    def __init__(self, model, device: str, request: SessionRequest):
        core = _core()
        self._model = core.read_model(io.BytesIO(model) if isinstance(model, bytes) else os.fspath(model))
        self._device = _device(device, request.device_id)
        self.provider = DEVICES.get(device) or Provider(device, device.lower(), 99, device != "CPU", "cpu", 4, False)
        self.providers = [device]
        self.precision = request.precision
        self.threads = int(request.threads)
        self.device_id = int(request.device_id)
        self.io_binding = False
        self.per_shape = True  # one static-shape compile per batch size
        self.outputs = [o.get_any_name() for o in self._model.outputs]
        self._inputs = [i.get_any_name() for i in self._model.inputs]
        self._config = self._compile_config(request)
        self._compiled: dict[tuple, tuple] = {}
        self._lock = threading.Lock()

    def _compile_config(self, request: SessionRequest) -> dict:
        """One stream of ``threads`` threads at the precision asked, unpinned
        (several sessions share the cores, as ONNX Runtime's one-per-core
        layout does), cached on disk."""
        config: dict = {"CACHE_DIR": openvino_cache()}
        if request.plain:
            return config
        config["INFERENCE_PRECISION_HINT"] = PRECISION_HINTS[request.precision]
        config["PERFORMANCE_HINT"] = "LATENCY"
        config["NUM_STREAMS"] = 1
        if self._device == "CPU":
            config["INFERENCE_NUM_THREADS"] = int(request.threads)
            config["ENABLE_CPU_PINNING"] = False
        return config

    def _compiled_for(self, feeds: Mapping[str, np.ndarray]):
        key = tuple(feeds[name].shape for name in self._inputs)
        entry = self._compiled.get(key)
        if entry is None:
            model = self._model.clone()
            model.reshape({name: list(shape) for name, shape in zip(self._inputs, key)})
            compiled = _core().compile_model(model, self._device, self._config)
            entry = self._compiled[key] = (compiled, compiled.create_infer_request())
        return entry

    def run(self, feeds: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None) -> list[np.ndarray]:
        feeds = {name: np.ascontiguousarray(a, dtype=np.float32) for name, a in feeds.items()}
        with self._lock:
            infer = self._compiled_for(feeds)[1]
            infer.infer(feeds)
            # copies: the request's output buffers are overwritten by its next run
            results = {o: np.array(infer.get_tensor(o).data, copy=True) for o in (outputs or self.outputs)}
        return [results[o] for o in (outputs or self.outputs)]


class OpenVinoRuntime:
    """The OpenVINO runtime: :data:`DEVICES`, fp32, bf16 and fp16 (where native)."""

    name = "openvino"
    precisions: tuple[str, ...] = ("fp32", "bf16", "fp16")
    rewrites: tuple[str, ...] = ()  # every precision runs on the file as it is
    providers: Mapping[str, Provider] = DEVICES

    def __init__(self):
        try:
            import openvino  # noqa: F401
        except ImportError:
            raise ValueError(
                "the openvino runtime needs the openvino package: pip install 'synctalk-fast[openvino]'"
            ) from None

    def installed(self) -> list[str]:
        return sorted({d.split(".")[0] for d in _core().available_devices})

    def available(self) -> list[str]:
        installed = set(self.installed())
        ranked = sorted((p for p in DEVICES.values() if p.name in installed), key=lambda p: p.rank)
        return [p.name for p in ranked] or ["CPU"]

    def open(
        self, model, *, providers: Sequence[str], request: SessionRequest, io_binding: bool | None = None
    ) -> OvSession:
        device = next(iter(providers), "CPU")
        problem = precision_problem(request.precision, _device(device, request.device_id))
        if problem:
            raise ValueError(problem)
        return OvSession(model, device, request)

    def convert(self, model, precision: str) -> bytes | None:
        return None
