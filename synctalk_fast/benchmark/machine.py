"""What the benchmark ran on: CPU, cores, memory, GPUs, providers, kernel backend, package versions."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from typing import Any

from .. import _backend
from .._util.system import cpu_name
from .._version import __version__
from ..runtime import default_providers

__all__ = ["machine_info", "gpus", "package_version"]

# (record key, distribution name) of the versions a record lists
_DISTRIBUTIONS = (
    ("synctalk_fast", "synctalk-fast"),
    ("onnxruntime", "onnxruntime"),
    ("onnxruntime-gpu", "onnxruntime-gpu"),
    ("numpy", "numpy"),
    ("opencv", "opencv-python-headless"),
    ("av", "av"),
    ("torch", "torch"),
)


def gpus() -> list[str]:
    """NVIDIA GPUs as ``"name, memory"`` lines of ``nvidia-smi`` (empty without one)."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return []
    try:
        out = subprocess.run(
            [smi, "--query-gpu=name,memory.total", "--format=csv,noheader"], capture_output=True, text=True, timeout=20
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [ln.strip() for ln in out.splitlines() if ln.strip()]


def package_version(distribution: str) -> str | None:
    """The installed version of ``distribution``, None if it is not installed."""
    try:
        from importlib.metadata import version

        return version(distribution)
    except Exception:  # noqa: BLE001 - not installed, or broken metadata: no version to report
        return None


def _cores() -> int | None:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count()


def _memory_gib() -> float | None:
    try:
        return round(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30, 1)
    except (AttributeError, ValueError, OSError):
        return None


def machine_info() -> dict[str, Any]:
    """The machine as a dict.

    Returns
    -------
    dict
        ``cpu`` (model name), ``cores`` (this process's affinity),
        ``memory_gib``, ``gpus``, ``platform``, ``python``,
        ``available_providers``, ``kernel_backend``, ``versions`` (installed
        packages that matter to speed) and, with the compiled core,
        ``kernel_isa``.
    """
    versions = {name: v for name, dist in _DISTRIBUTIONS if (v := package_version(dist))}
    versions["synctalk_fast"] = __version__
    info: dict[str, Any] = {
        "cpu": cpu_name(),
        "cores": _cores(),
        "memory_gib": _memory_gib() or None,
        "gpus": gpus(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "available_providers": default_providers(),
        "kernel_backend": _backend.name,
        "versions": versions,
    }
    if _backend.name == "cpp":
        from .. import _core

        info["kernel_isa"] = _core.build_info().get("isa")
    return info
