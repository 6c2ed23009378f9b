"""A load test's results as lines of text, a JSON file and a chart (delay and frames/s against clients)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .._util.atomic import write_atomic
from .client import FLOOR
from .run import MARGIN, LoadResult, RampResult

__all__ = ["level_line", "write_json", "write_chart"]


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{1000 * value:.0f}"


def level_line(result: LoadResult) -> str:
    """One line for a level: clients, frames/s, delay and wait percentiles, faults, the server's figures."""
    s = result.summary()
    d, w, srv = s["delay"], s["wait"], s["server"]
    faults = ", ".join(f"{s[k]} {k}" for k in ("refused", "skipped", "dropped", "missing") if s[k]) or "no faults"
    mem = f"{srv['rss_peak'] / 2**20:.0f} MiB" if srv.get("rss_peak") else "- MiB"
    cpu = f"{srv['cpu_share']:.2f} cores" if srv.get("cpu_share") is not None else "- cores"
    return (
        f"{s['sessions']:3d} clients: {s['fps_per_session']['mean']:5.1f} frames/s each (min "
        f"{s['fps_per_session']['min']:.1f}); delay p50/p95/max {_ms(d['p50'])}/{_ms(d['p95'])}/{_ms(d['max'])} ms, "
        f"wait p95 {_ms(w['p95'])} ms; {s['completed']}/{s['flushed']} utterances ended, "
        f"{s['interrupted']} interrupted; {faults}; server {mem}, {cpu}" + ("" if s["held"] else "  <- does not hold")
    )


def write_json(result: LoadResult | RampResult, path: str | Path, **extra: Any) -> Path:
    """``result.summary()`` (with ``extra`` keys) as JSON, written atomically."""
    record = {**extra, **result.summary()}
    return write_atomic(Path(path), (json.dumps(record, indent=2) + "\n").encode())


def _text(img: np.ndarray, text: str, at: tuple[int, int], scale: float = 0.45, color=(0, 0, 0)) -> None:
    cv2.putText(img, text, at, cv2.FONT_HERSHEY_SIMPLEX, scale, color, 1, cv2.LINE_AA)


def write_chart(result: RampResult, path: str | Path, *, title: str = "") -> Path:
    """The ramp as a PNG: delay p50 / p95 (ms, left axis) and frames/s per client (right axis)
    against clients, with the hold line ``FLOOR + MARGIN`` (drawn with OpenCV, as the benchmark's chart).

    Raises
    ------
    OSError
        The PNG cannot be written.
    """
    width, height, left, right, top, bottom = 900, 480, 70, 70, 50, 50
    img = np.full((height, width, 3), 255, np.uint8)
    levels = [r.summary() for r in result.levels]
    n = [lv["sessions"] for lv in levels]
    p50 = [lv["delay"]["p50"] or 0.0 for lv in levels]
    p95 = [lv["delay"]["p95"] or 0.0 for lv in levels]
    fps = [lv["fps_per_session"]["mean"] for lv in levels]
    x_max = max(n, default=1) + 1
    y_max = max([*p95, FLOOR + MARGIN]) * 1.15
    f_max = max([*fps, 25.0]) * 1.15
    plot_w, plot_h = width - left - right, height - top - bottom

    def xy(x: float, y: float, top_y: float) -> tuple[int, int]:
        return int(left + plot_w * x / x_max), int(top + plot_h * (1 - y / top_y))

    cv2.rectangle(img, (left, top), (left + plot_w, top + plot_h), (0, 0, 0), 1)
    for k in n:
        _text(img, str(k), (xy(k, 0, 1)[0] - 4, top + plot_h + 18))
    for frac in (0.25, 0.5, 0.75, 1.0):
        y = top + int(plot_h * (1 - frac))
        _text(img, f"{1000 * y_max * frac:.0f}", (8, y + 4))
        _text(img, f"{f_max * frac:.0f}", (left + plot_w + 8, y + 4), color=(40, 130, 40))
    hold = xy(0, FLOOR + MARGIN, y_max)[1]
    cv2.line(img, (left, hold), (left + plot_w, hold), (150, 150, 150), 1, cv2.LINE_AA)
    _text(img, f"floor + {MARGIN:.1f} s", (left + 6, hold - 6), color=(110, 110, 110))
    for values, color, top_y in (
        (p50, (200, 120, 40), y_max),
        (p95, (40, 40, 200), y_max),
        (fps, (40, 150, 40), f_max),
    ):
        points = [xy(x, y, top_y) for x, y in zip(n, values)]
        for a, b in zip(points, points[1:]):
            cv2.line(img, a, b, color, 2, cv2.LINE_AA)
        for p in points:
            cv2.circle(img, p, 4, color, -1, cv2.LINE_AA)
    _text(img, title or f"load test: {result.held} clients held", (left, 30), 0.6)
    _text(img, "delay p50 (ms)", (left + 10, top + plot_h + 40), color=(200, 120, 40))
    _text(img, "delay p95 (ms)", (left + 170, top + plot_h + 40), color=(40, 40, 200))
    _text(img, "frames/s per client (right)", (left + 330, top + plot_h + 40), color=(40, 150, 40))
    _text(img, "clients", (left + plot_w - 60, top + plot_h + 40))
    ok, png = cv2.imencode(".png", img)
    if not ok:
        raise OSError(f"cannot encode the chart for {path}")
    return write_atomic(Path(path), png.tobytes())
