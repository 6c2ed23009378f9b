"""Kernel backend, chosen once at import: cpp -> numba -> numpy.

Every backend module exposes the same functions with the same signatures
(``_core.pyi`` documents them): ``rfft``, ``mel_spectrogram``,
``mel_filterbank``, ``resize_cubic``, ``prepare_input``, ``paste_back``.
The environment variable ``SYNCTALK_FAST_BACKEND`` (cpp, numba or numpy)
forces one; asking for one that cannot load is an ImportError, never a
silent fallback.
"""

from __future__ import annotations

import importlib
import os
import warnings
from pathlib import Path
from types import ModuleType

__all__ = ["BACKENDS", "ENV_VAR", "available", "load", "kernels", "name"]

BACKENDS = ("cpp", "numba", "numpy")
ENV_VAR = "SYNCTALK_FAST_BACKEND"
_MODULES = {
    "cpp": "synctalk_fast._core",
    "numba": "synctalk_fast._numba_kernels",
    "numpy": "synctalk_fast._numpy_kernels",
}


def load(backend: str) -> ModuleType:
    """Import the kernel module of ``backend``; ImportError if it cannot load."""
    if backend not in _MODULES:
        raise ValueError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    return importlib.import_module(_MODULES[backend])


def available() -> list[str]:
    """Backends that import on this installation, in order of preference."""
    names = []
    for backend in BACKENDS:
        try:
            load(backend)
        except ImportError:
            continue
        names.append(backend)
    return names


def _source_tree_hint() -> str:
    root = Path(__file__).resolve().parents[1]
    if (root / "CMakeLists.txt").is_file() and (root / "csrc").is_dir():
        return (
            f". This is the source checkout at {root}, which has no compiled core: "
            "`pip install .`, then import from outside the checkout"
        )
    return ""


def _choose() -> tuple[str, ModuleType]:
    requested = os.environ.get(ENV_VAR, "").strip().lower()
    if requested:
        if requested not in BACKENDS:
            raise ImportError(f"{ENV_VAR}={requested!r} is not one of {', '.join(BACKENDS)}")
        try:
            return requested, load(requested)
        except ImportError as exc:
            raise ImportError(f"{ENV_VAR}={requested} was requested but cannot be loaded: {exc}") from exc
    failures = []
    for backend in BACKENDS:
        try:
            module = load(backend)
        except ImportError as exc:
            failures.append(f"{backend}: {exc}")
            continue
        if failures:
            warnings.warn(
                f"synctalk_fast: using the {backend} backend ({'; '.join(failures)}){_source_tree_hint()}",
                RuntimeWarning,
                stacklevel=3,
            )
        return backend, module
    raise ImportError("no synctalk_fast backend could be loaded: " + "; ".join(failures))  # numpy always loads


name, kernels = _choose()
