"""The U-Net alone: rows per session layout and batch size, and fp16 against fp32.

Every figure here is taken by :mod:`synctalk_fast.models.timing`: a row is
:func:`~synctalk_fast.models.timing.frames_per_second` of a layout's
sessions side by side (one thread each, as the pipeline runs them), for
about as long as ``frames`` frames take (estimated from one call of one
session, :func:`~synctalk_fast.models.timing.seconds_per_frame`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..engine import Engine
from ..features import feature_windows
from ..frames import prepare_input
from ..models.timing import frames_per_second, seconds_per_frame
from ..template import Template
from .measure import record_row, reset_peak_rss

__all__ = ["UNetInputs", "unet_inputs", "warm", "layout_rows", "fp16_speed"]

#: (image float32 ``[B, 6, 320, 320]``, audio float32 ``[B, 32, 16, 16]``) of one batch.
UNetInputs = tuple[np.ndarray, np.ndarray]
#: The record's name of each session layout.
LAYOUT_NAMES = {"sessions": "throughput", "single": "latency"}
# the shortest measurement, so that every session's thread gets to run
_MIN_SECONDS = 0.25


def unet_inputs(tpl: Template, feats: np.ndarray, batch: int) -> UNetInputs:
    """Prepared U-Net inputs of the template's first ``batch`` frames (cycled) and features."""
    images = np.stack([prepare_input(tpl.frame(k % len(tpl), copy=False), tpl.box(k % len(tpl))) for k in range(batch)])
    return images, feature_windows(feats, mode="ave", start=0, stop=batch)


def warm(engine: Engine, inputs: dict[int, UNetInputs]) -> None:
    """Run every batch shape once on every session of both layouts, outside the timings."""
    for b in inputs:
        for layout in LAYOUT_NAMES.values():
            for k in range(len(engine.layout_sessions(layout))):
                engine.infer(*inputs[b], session=k, layout=layout)


def _measure(engine: Engine, layout: str, feeds: UNetInputs, frames: int) -> tuple[int, float]:
    """(frames made, seconds) of ``layout``'s sessions side by side for about ``frames`` frames."""
    n = len(engine.layout_sessions(layout))
    batch = len(feeds[0])
    done = [0] * n

    def call(k: int) -> int:
        engine.infer(*feeds, session=k, layout=layout)
        done[k] += batch
        return batch

    one = seconds_per_frame({"probe": lambda: call(0)}, rounds=1, warmup=False)["probe"]
    budget = max(_MIN_SECONDS, frames * one / n)
    done[:] = [0] * n
    runs: list[Callable[[], int]] = [functools.partial(call, k) for k in range(n)]
    fps = frames_per_second(runs, seconds=budget)
    made = sum(done)
    return made, made / fps


def layout_rows(
    engine: Engine,
    inputs: dict[int, UNetInputs],
    frames: int,
    *,
    key: str = "unet",
    label: Callable[[str, Engine, str, int], str],
) -> dict[str, dict[str, Any]]:
    """A row per layout and batch size: ``"{key}:{layout}:b{batch}"``.

    Parameters
    ----------
    engine : Engine
        Warmed up (:func:`warm`).
    inputs : dict of int to UNetInputs
        Batch size -> inputs (:func:`unet_inputs`).
    frames : int
        About how many frames each row makes.
    key : str, keyword-only
        The rows' name prefix.
    label : callable, keyword-only
        ``label(name, engine, layout, batch)``: a row's label.
    """
    rows = {}
    for name, layout in LAYOUT_NAMES.items():
        for b, feeds in inputs.items():
            reset_peak_rss()
            made, seconds = _measure(engine, layout, feeds, frames)
            row_key = f"{key}:{name}:b{b}"
            rows[row_key] = record_row(row_key, label(name, engine, layout, b), made, seconds)
    return rows


def fp16_speed(engines: dict[str, Engine], feeds: UNetInputs, *, rounds: int = 20) -> dict[str, float]:
    """U-Net frames/s of each engine on ``feeds`` (first session, interleaved rounds)."""
    batch = len(feeds[0])

    def run(engine: Engine) -> Callable[[], int]:
        def call() -> int:
            engine.infer(*feeds)
            return batch

        return call

    per_frame = seconds_per_frame({name: run(e) for name, e in engines.items()}, rounds=rounds, reduce="mean")
    return {name: round(1.0 / s, 2) for name, s in per_frame.items()}


def best(rows: dict[str, dict[str, Any]], *, name: str, label: str) -> dict[str, Any]:
    """The fastest of ``rows``, renamed (the record's ``unet`` and ``unet_int8`` rows)."""
    top = max(rows, key=lambda k: rows[k]["fps"])
    return dict(rows[top], name=name, label=label)


def labels_sessions(kind: str) -> Callable[[str, Engine, str, int], str]:
    """Row labels: ``"{kind} alone, 2 sessions x 1 thread(s), batch 4"``."""

    def label(name: str, engine: Engine, layout: str, batch: int) -> str:
        sessions: Sequence[Any] = engine.layout_sessions(layout)
        what = (
            f"{len(sessions)} sessions x {sessions[0].threads} thread(s)"
            if len(sessions) > 1
            else f"1 session x {sessions[0].threads} thread(s)"
        )
        return f"{kind} alone, {what}, batch {batch}"

    return label


def labels_count(kind: str) -> Callable[[str, Engine, str, int], str]:
    """Row labels: ``"{kind} alone, 2 session(s), batch 4"``."""

    def label(name: str, engine: Engine, layout: str, batch: int) -> str:
        return f"{kind} alone, {len(engine.layout_sessions(layout))} session(s), batch {batch}"

    return label
