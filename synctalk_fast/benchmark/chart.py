"""The record as a PNG: a horizontal bar of frames/s per row, with the ratios underneath (drawn with OpenCV)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .._util.atomic import write_atomic

__all__ = ["write_chart"]

# bar colour (BGR) by the first part of a row's name
_COLORS = {
    "naive": (90, 90, 200),
    "torch": (60, 60, 160),
    "unet": (160, 120, 60),
    "frames": (80, 170, 80),
    "mp4": (40, 140, 40),
    "unet_int8": (200, 150, 70),
    "mp4_int8": (20, 110, 20),
}


def _text(
    img: np.ndarray,
    text: str,
    at: tuple[int, int],
    scale: float,
    color: tuple[int, int, int] = (0, 0, 0),
    thickness: int = 1,
) -> None:
    cv2.putText(img, text, at, cv2.FONT_HERSHEY_SIMPLEX, scale, color, thickness, cv2.LINE_AA)


def write_chart(record: Mapping[str, Any], path: Path) -> Path:
    """Draw ``record`` (:func:`~synctalk_fast.benchmark.run`'s) as a bar chart of frames/s per row.

    Parameters
    ----------
    record : mapping
        The benchmark record (``rows``, ``machine``, ``config``, ``ratios``).
    path : Path
        The PNG to write (atomically; its folder is created).

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    OSError
        The PNG cannot be written.
    """
    rows = record["rows"]
    width, bar_h, left, top = 1000, 34, 330, 70
    height = top + bar_h * len(rows) + 60
    img = np.full((height, width, 3), 255, np.uint8)
    m = record["machine"]
    _text(
        img,
        f"synctalk_fast {m['versions'].get('synctalk_fast')}: frames/s, {record['config']['provider']}",
        (16, 30),
        0.7,
        thickness=2,
    )
    sub = f"{m['cpu']}, {m['cores']} cores" + (f", {m['gpus'][0]}" if m["gpus"] else "")
    _text(img, sub[:110], (16, 54), 0.5, (80, 80, 80))
    top_fps = max(r["fps"] for r in rows)
    for i, r in enumerate(rows):
        y = top + i * bar_h
        w = int((width - left - 110) * r["fps"] / top_fps)
        color = _COLORS.get(r["name"].split(":")[0], (120, 120, 120))
        cv2.rectangle(img, (left, y + 4), (left + max(w, 1), y + bar_h - 6), color, -1)
        _text(img, r["label"][:40], (16, y + bar_h - 12), 0.5)
        _text(img, f"{r['fps']:.1f}", (left + w + 8, y + bar_h - 12), 0.5)
    foot = "  ".join(f"{k} {v:.2f}x" for k, v in record["ratios"].items())
    _text(img, foot[:140], (16, height - 20), 0.45)
    ok, png = cv2.imencode(".png", img)
    if not ok:
        raise OSError(f"cannot encode the chart for {path}")
    return write_atomic(path, png.tobytes())
