"""A benchmark row: frames, seconds, frames/s, per-stage seconds and peak memory, printed as it is taken.

Rows of whole runs (a pipeline to MP4, a reference loop) are wall-clock
spans of one call; U-Net rows are timed by :mod:`synctalk_fast.models.timing`
(see :mod:`.unet`) and recorded here. Peak RSS is the process's high-water
mark since :func:`reset_peak_rss` (Linux; None elsewhere).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["reset_peak_rss", "peak_rss_mb", "record_row", "timed_row", "span"]


def reset_peak_rss() -> bool:
    """Reset the process's peak RSS to its current RSS (Linux >= 4.0); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS
        return True
    except OSError:
        return False


def peak_rss_mb() -> float | None:
    """The process's peak RSS in MiB since the last :func:`reset_peak_rss` (None off Linux)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            m = re.search(r"VmHWM:\s+(\d+) kB", f.read())
        return round(int(m.group(1)) / 1024, 1) if m else None
    except OSError:
        return None


def record_row(
    name: str, label: str, frames: int, seconds: float, stages: Mapping[str, float] | None = None
) -> dict[str, Any]:
    """A row of the record from a measurement (and its line on standard output).

    Parameters
    ----------
    name : str
        The row's key (``"mp4"``, ``"unet:sessions:b4"``, ...).
    label : str
        What the chart and the printed line call it.
    frames : int
        Frames made during the measurement.
    seconds : float
        Wall-clock seconds they took.
    stages : mapping of str to float, optional
        Seconds per pipeline stage.
    """
    row = {
        "name": name,
        "label": label,
        "frames": frames,
        "seconds": round(seconds, 4),
        "fps": round(frames / seconds, 3),
        "ms_per_frame": round(1000 * seconds / frames, 2),
        "stages": {k: round(v, 4) for k, v in (stages or {}).items()},
        "peak_rss_mb": peak_rss_mb(),
    }
    print(f"  {label:<34s} {row['fps']:8.2f} frames/s {row['ms_per_frame']:8.1f} ms/frame", flush=True)
    return row


def timed_row(name: str, label: str, frames: int, fn: Callable[[], Mapping[str, float] | None]) -> dict[str, Any]:
    """Time one call of ``fn`` (a whole run making ``frames`` frames, which
    returns its per-stage seconds or None) as a row."""
    reset_peak_rss()
    t0 = time.perf_counter()
    stages = fn() or {}
    return record_row(name, label, frames, time.perf_counter() - t0, stages)


def span(fn: Callable[[], Any]) -> float:
    """Wall-clock seconds of one call of ``fn``."""
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0
