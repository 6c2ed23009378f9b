"""The one U-Net timer and the one real-time margin.

Every measured decision of the package uses these: the runtime choice
(``runtime="auto"``), the engine's session layout, the server's capacity,
quantization's speed figures and the benchmark. Timings are taken in
interleaved rounds (each candidate once per round) so that a noisy
neighbour slows all candidates alike.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np

__all__ = ["REALTIME_MARGIN", "unet_feeds", "seconds_per_frame", "frames_per_second", "keeps_up", "realtime_streams"]

#: A producer counts as real time when it makes frames this many times faster
#: than the frame rate (the rest is left for features, images and jitter).
REALTIME_MARGIN = 1.25


def unet_feeds(
    item_shapes: Mapping[str, Sequence[int]], batch: int, *, seed: int | None = None
) -> dict[str, np.ndarray]:
    """Inputs for a timing run: float32 ``[batch, *shape]`` per role, zeros
    (``seed`` None) or uniform in 0..1 (a fixed ``seed``)."""
    if seed is None:
        return {role: np.zeros((batch, *shape), np.float32) for role, shape in item_shapes.items()}
    rng = np.random.default_rng(seed)
    return {role: rng.uniform(0.0, 1.0, (batch, *shape)).astype(np.float32) for role, shape in item_shapes.items()}


def seconds_per_frame(
    runs: Mapping[str, Callable[[], int]], *, rounds: int = 3, warmup: bool = True, reduce: str = "median"
) -> dict[str, float]:
    """Seconds per frame of each candidate.

    Parameters
    ----------
    runs : mapping of str to callable
        Each call does one pass and returns the frames it made.
    rounds : int, keyword-only
        Passes per candidate, interleaved (round 1 of every candidate, then round 2, ...).
    warmup : bool, keyword-only
        One untimed pass each first (a runtime's first-run setup is not speed).
    reduce : {"median", "min", "mean"}, keyword-only
        How the rounds become one figure.
    """
    if warmup:
        for run in runs.values():
            run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(max(1, rounds)):
        for name, run in runs.items():
            t0 = time.perf_counter()
            frames = run()
            times[name].append((time.perf_counter() - t0) / max(1, frames))
    reducers: dict[str, Callable[[list[float]], float]] = {
        "median": statistics.median,
        "min": min,
        "mean": statistics.fmean,
    }
    pick = reducers[reduce]
    return {name: float(pick(t)) for name, t in times.items()}


def frames_per_second(runs: Sequence[Callable[[], int]], *, seconds: float) -> float:
    """Frames per second of ``runs`` working at once (one thread each, every
    one calling its run until ``seconds`` have passed): a machine's throughput."""
    done = [0] * len(runs)
    deadline = time.perf_counter() + seconds

    def work(k: int) -> None:
        while time.perf_counter() < deadline:
            done[k] += runs[k]()

    t0 = time.perf_counter()
    threads = [threading.Thread(target=work, args=(k,), name=f"synctalk-timing-{k}") for k in range(len(runs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(done) / (time.perf_counter() - t0)


def keeps_up(frames_per_second: float, fps: float) -> bool:
    """Whether ``frames_per_second`` serves a producer at ``fps`` in real time (with the margin)."""
    return frames_per_second >= REALTIME_MARGIN * fps


def realtime_streams(frames_per_second: float, fps: float) -> int:
    """How many producers at ``fps`` a throughput of ``frames_per_second`` serves in real time (at least 1)."""
    return max(1, int(frames_per_second / (REALTIME_MARGIN * fps)))
