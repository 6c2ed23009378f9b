"""``runtime="auto"``: the fastest runtime for a U-Net on this machine, measured once.

On an accelerator the answer is ONNX Runtime (its GPU providers). On the
host CPU the candidates are ONNX Runtime at fp32 (always: the exact path,
and the floor: auto never picks anything slower) and, where OpenVINO is
installed, OpenVINO at the precision asked (and at fp32). Each candidate
runs the U-Net on every core at the CPU batch; the fastest wins. The
decision is cached per (model file content, precision, machine, runtime
versions) in ``<cache>/runtime_choice.json``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from .._util.atomic import write_atomic
from .._util.system import cache_dir, cpu_cores, cpu_name
from ..runtime import DEFAULT_RUNTIME, default_batch_size, get_runtime, is_accelerator
from .session import ModelSession, resolve_model
from .timing import seconds_per_frame, unet_feeds

__all__ = ["choose_runtime", "choice_file"]

log = logging.getLogger(__name__)
_TIMED_RUNS = 3


def choice_file() -> Path:
    """Where measured decisions are kept."""
    return cache_dir() / "runtime_choice.json"


def _machine() -> str:
    versions = []
    for dist in ("onnxruntime", "onnxruntime-gpu", "openvino"):
        try:
            versions.append(f"{dist}={version(dist)}")
        except PackageNotFoundError:
            continue
    return f"{cpu_name()}|{cpu_cores()} cores|{' '.join(versions)}"


def _candidates(precision: str) -> list[tuple[str, str]]:
    found = [("onnxruntime", "fp32")]
    if precision != "fp32" and precision in get_runtime("onnxruntime").precisions:
        found.append(("onnxruntime", precision))
    try:
        openvino = get_runtime("openvino")
    except ValueError:  # not installed
        return found
    for p in dict.fromkeys((precision, "fp32")):
        if p in openvino.precisions:
            found.append(("openvino", p))
    return found


def _ms_per_frame(path: Path, runtime: str, precision: str) -> float:
    model = resolve_model(path, precision=precision, runtime=runtime)
    session = ModelSession(model, threads=cpu_cores())
    batch = default_batch_size(session.providers, runtime=runtime)
    feeds = unet_feeds(session.item_shapes, batch, seed=0)

    def run() -> int:
        session.run(**feeds)
        return batch

    return 1000.0 * seconds_per_frame({"unet": run}, rounds=_TIMED_RUNS, reduce="mean")["unet"]


def choose_runtime(unet: str | os.PathLike, *, precision: str = "fp32") -> tuple[str, str]:
    """(runtime, precision) for ``runtime="auto"`` on the U-Net file ``unet``.

    Parameters
    ----------
    unet : str or os.PathLike
        The U-Net ONNX file.
    precision : str, keyword-only
        The precision asked for. The answer may be ONNX Runtime at fp32
        instead, where that is faster (it is also the exact path).

    Returns
    -------
    tuple of (str, str)
        The runtime's name and the precision it runs.

    Raises
    ------
    ValueError
        No runtime installed here runs ``precision`` (a one-line reason).
    """
    ort_first = get_runtime("onnxruntime").available()
    if is_accelerator(ort_first, runtime="onnxruntime"):
        if precision not in get_runtime("onnxruntime").precisions:
            raise ValueError(f"precision {precision!r} is for CPUs (OpenVINO); on {ort_first[0]} use fp32 or fp16")
        return DEFAULT_RUNTIME, precision
    path = Path(unet)
    if not path.is_file():
        return DEFAULT_RUNTIME, "fp32"  # resolve_model says what is wrong with the file
    key = f"{hashlib.sha256(path.read_bytes()).hexdigest()[:16]}|{precision}|{_machine()}"
    store = choice_file()
    try:
        known = json.loads(store.read_text())
    except (OSError, ValueError):
        known = {}
    if key in known:
        return known[key]["runtime"], known[key]["precision"]
    measured: dict[str, float] = {}
    problems = []
    for runtime, p in _candidates(precision):
        try:
            measured[f"{runtime}:{p}"] = _ms_per_frame(path, runtime, p)
        except ValueError as exc:  # the precision is not native here: not a candidate
            problems.append(str(exc))
    wanted = {name for name in measured if name.endswith(f":{precision}")}
    if not wanted and precision != "fp32" and problems:
        raise ValueError(problems[-1])
    best = min(measured, key=lambda name: measured[name])
    runtime, chosen = best.split(":")
    log.info("runtime auto: %s (%s)", best, ", ".join(f"{k} {v:.1f} ms/frame" for k, v in measured.items()))
    known[key] = {
        "runtime": runtime,
        "precision": chosen,
        "ms_per_frame": {k: round(v, 2) for k, v in measured.items()},
        "measured": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    try:
        write_atomic(store, (json.dumps(known, indent=1) + "\n").encode())
    except OSError as exc:  # a read-only cache costs a measurement per process, nothing else
        log.warning("could not save the runtime choice to %s (%s)", store, exc)
    return runtime, chosen
