"""Progress bars (tqdm, on a terminal only) and per-stage timing."""

from __future__ import annotations

import sys
import threading
import time
from collections import defaultdict

__all__ = ["progress_bar", "StageTimer"]


def progress_bar(total: int, desc: str, enabled: bool, unit: str = "frame"):
    """A tqdm bar on stderr when ``enabled`` and stderr is a terminal, else None."""
    if not enabled or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, leave=False)


class StageTimer:
    """Seconds spent in each stage, summed over threads (thread-safe):
    ``with timer("infer"): ...``; ``timer.totals`` maps stage -> seconds."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = defaultdict(float)
        self._lock = threading.Lock()

    def __call__(self, stage: str):
        timer = self

        class _Span:
            def __enter__(self):
                self.t0 = time.perf_counter()

            def __exit__(self, *exc):
                dt = time.perf_counter() - self.t0
                with timer._lock:
                    timer.totals[stage] += dt

        return _Span()
