"""Session layouts of a CPU engine and the measurement that picks one for a live producer.

"throughput": one session per core (the most frames per second when
behind); "latency": one session on every core (each frame done soonest).
On an accelerator, or with one session, both are the same sessions.
"""

from __future__ import annotations

import logging
import threading

from ..models.session import ModelSession
from ..models.timing import keeps_up, seconds_per_frame, unet_feeds

__all__ = ["LAYOUTS", "SESSION_LAYOUTS", "check_layout", "measure_layout"]

log = logging.getLogger(__name__)

#: What a producer may ask for.
LAYOUTS = ("auto", "throughput", "latency")
#: The layouts that are sets of sessions.
SESSION_LAYOUTS = ("throughput", "latency")


def check_layout(layout: str, *, allowed: tuple[str, ...] = LAYOUTS) -> str:
    if layout not in allowed:
        raise ValueError(f"layout must be {' or '.join(repr(x) for x in allowed)}, got {layout!r}")
    return layout


def measure_layout(single: ModelSession, lock: threading.Lock, *, fps: float, sessions: int) -> str:
    """ "latency" if ``single`` (one session on every core) runs a frame in
    time for ``fps`` with the real-time margin, else "throughput"."""
    feeds = unet_feeds(single.item_shapes, 1)

    def run() -> int:
        with lock:
            single.run(**feeds)
        return 1

    per_frame = seconds_per_frame({"latency": run}, rounds=3)["latency"]
    choice = "latency" if keeps_up(1.0 / per_frame, fps) else "throughput"
    if choice == "throughput":
        log.info("one session on every core takes %.0f ms a frame; using %d sessions", 1000 * per_frame, sessions)
    return choice
