"""The one interface every int8 tool implements, and what it is given and returns.

A :class:`Tool` turns a :class:`Job` (the prepared fp32 model, the
calibration and validation inputs, the user's settings) into a
:class:`Calibrated` model: every block int8, calibrated, able to score and
write itself with any set of blocks back in floating point. The search
(:mod:`..search`) and :func:`build` are the same for every tool. A new tool
is one module with one class, listed in :data:`~synctalk_fast.quantize.tools.TOOL_CLASSES`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from ...engine import EngineOptions
from ..data import Feeds
from ..search import Found, keep_float_blocks

__all__ = ["Job", "Calibrated", "Tool", "Candidate", "build"]


@dataclass
class Job:
    """What a tool gets.

    Attributes
    ----------
    model : str
        The user's model, named in error messages.
    src : Path
        The fp32 model with named blocks (:func:`~..graph.name_blocks`), in the work folder.
    blocks : list of str
        Every block, in graph order.
    node_names : dict of str to list of str
        Block -> its nodes' names.
    per_channel : bool
        Weights may be quantized per channel (opset >= 13).
    calibration, validation : Feeds
        The calibration and validation frames' inputs.
    validation_psnr : callable
        float32 ``[N, 3, 320, 320]`` predictions on ``validation`` -> mouth PSNR (dB) against fp32.
    methods : sequence of str
        Calibration methods asked for (tools with their own method ignore them).
    keep_fp32 : sequence of str
        Blocks in floating point in any case.
    options : EngineOptions
        Threads and batch size of every run.
    work : Path
        A private temporary folder (deleted afterwards).
    say : callable
        Progress lines.
    """

    model: str
    src: Path
    blocks: list[str]
    node_names: dict[str, list[str]]
    per_channel: bool
    calibration: Feeds
    validation: Feeds
    validation_psnr: Callable[[np.ndarray], float]
    methods: Sequence[str]
    keep_fp32: Sequence[str]
    options: EngineOptions
    work: Path
    say: Callable[[str], None]

    def nodes(self, blocks: Sequence[str]) -> list[str]:
        """The node names of ``blocks``."""
        return [n for b in blocks for n in self.node_names[b]]


class Calibrated(Protocol):
    """A tool's int8 model of every block, calibrated.

    Attributes
    ----------
    runtime, precision : str
        What the int8 model runs fast on (its floating-point blocks at ``precision``).
    method : str
        The calibration method kept.
    methods : dict of str to float
        Method -> validation mouth PSNR with only ``keep_fp32`` in floating point.
    """

    runtime: str
    precision: str
    method: str
    methods: dict[str, float]

    def score(self, float_blocks: list[str], only: str | None) -> float:
        """Validation mouth PSNR with ``float_blocks`` in floating point, or
        (``only`` given) with only block ``only`` int8."""
        ...

    def write(self, float_blocks: Sequence[str], path: Path) -> None:
        """Write the QDQ ONNX model with ``float_blocks`` in floating point to ``path``."""
        ...


class Tool(Protocol):
    """An int8 tool (ONNX Runtime's quantizer, NNCF, ...)."""

    #: ``quantize(tool=...)`` name, and the report's ``tool``.
    name: str
    #: Name in progress lines.
    label: str
    #: An extra the user may lack: missing, it is left out of ``tool="auto"`` with a note.
    optional: bool

    def problem(self) -> str | None:
        """Why the tool cannot run here (not installed, too old), or None."""
        ...

    def calibrate(self, job: Job) -> Calibrated:
        """Every block int8, calibrated on ``job.calibration`` (and, with several
        methods, the best on ``job.validation`` kept)."""
        ...


@dataclass
class Candidate:
    """One tool's int8 model, written to ``path`` in the work folder."""

    path: Path
    tool: str
    runtime: str
    precision: str
    method: str
    methods: dict[str, float]
    found: Found

    @property
    def float_blocks(self) -> list[str]:
        return self.found.float_blocks


def build(tool: Tool, job: Job, target_psnr: float | None) -> Candidate:
    """``tool``'s candidate: calibrate, search the blocks to keep in floating
    point for ``target_psnr``, write the model."""
    model = tool.calibrate(job)
    found = keep_float_blocks(
        tool.label,
        model.methods[model.method],
        model.score,
        blocks=job.blocks,
        keep_fp32=job.keep_fp32,
        target_psnr=target_psnr,
        say=job.say,
    )
    path = job.work / f"{tool.name}_int8.onnx"
    model.write(found.float_blocks, path)
    return Candidate(path, tool.name, model.runtime, model.precision, model.method, model.methods, found)
