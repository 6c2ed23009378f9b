"""What this installation is: the first thing a bug report needs."""

from __future__ import annotations

import os
import platform
import sys

from . import _backend
from ._util.system import cpu_flags, cpu_name
from ._version import __version__
from .runtime import RUNTIMES, default_providers, get_runtime
from .runtime.openvino import precision_problem
from .runtime.ort import builds_conflict, installed_builds, probe
from .sinks import ENCODERS, encoder_problem

__all__ = ["config", "show_config"]


def _dist_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def _encoders() -> dict[str, bool | str]:
    """True for each encoder that runs here, else why not (hardware encoders are opened)."""
    found: dict[str, bool | str] = {name: encoder_problem(name) or True for name in ENCODERS}
    try:
        import av

        av.codec.Codec("aac", "w")
        found["aac"] = True
    except Exception:  # noqa: BLE001 - av raises UnknownCodecError / ValueError by version
        found["aac"] = "not in this PyAV build"
    return found


def _runtimes() -> dict[str, dict | str]:
    """Each runtime: its version and the precisions it runs natively on this CPU."""
    found: dict[str, dict | str] = {}
    for name in RUNTIMES:
        try:
            runtime = get_runtime(name)
        except ValueError as exc:  # not installed: the message says how to install it
            found[name] = str(exc)
            continue
        native = [p for p in runtime.precisions if name != "onnxruntime" or p == "fp32"]
        if name == "openvino":
            native = [p for p in native if precision_problem(p) is None]
        found[name] = {"version": _dist_version(name) or "?", "devices": runtime.available(), "cpu_precisions": native}
    return found


def config() -> dict:
    """This installation as a dict: versions, kernel backend and build, ONNX
    Runtime providers, PyAV encoders, Python and machine."""
    info: dict = {
        "synctalk_fast": __version__,
        "backend": _backend.name,
        "backend_env": os.environ.get(_backend.ENV_VAR),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
    }
    if _backend.name == "cpp":
        from . import _core

        info["core"] = dict(_core.build_info())
    try:
        import onnxruntime as ort

        info["onnxruntime"] = ort.__version__
        info["onnxruntime_device"] = ort.get_device()
        info["providers_available"] = ort.get_available_providers()
        info["providers_default"] = default_providers()
        info["onnxruntime_builds"] = installed_builds()
        conflict = builds_conflict()
        if conflict:
            info["onnxruntime_warning"] = conflict
        info["accelerators"] = {p: probe(p) or "works" for p in ("CUDAExecutionProvider", "TensorrtExecutionProvider")}
    except ImportError as exc:
        info["onnxruntime"] = f"not importable ({exc})"
    for name, dist in (
        ("numpy", "numpy"),
        ("opencv", "opencv-python-headless"),
        ("av", "av"),
        ("onnx", "onnx"),
        ("numba", "numba"),
        ("soundfile", "soundfile"),
        ("soxr", "soxr"),
    ):
        info[name] = _dist_version(dist)
    if info["opencv"] is None:
        info["opencv"] = _dist_version("opencv-python")
    info["cpu"] = {"name": cpu_name(), **cpu_flags()}
    info["runtimes"] = _runtimes()
    info["encoders"] = _encoders()
    return info


def show_config(file=None) -> dict:
    """Print :func:`config` as ``key: value`` lines (to stdout) and return it."""
    info = config()
    out = file or sys.stdout
    for key, value in info.items():
        if isinstance(value, dict):
            print(f"{key}:", file=out)
            for k, v in value.items():
                print(f"  {k}: {v}", file=out)
        elif isinstance(value, list):
            print(f"{key}: {', '.join(map(str, value))}", file=out)
        else:
            print(f"{key}: {value}", file=out)
    return info
