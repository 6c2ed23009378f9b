"""The fp32 U-Net as the int8 tools read it: opset 13 or later where it can
be (per-channel weights), its blocks named, saved in the work folder.

A model of a lower default-domain opset (``torch.onnx.export`` at opset 11,
as SyncTalk_2D's own export writes) is converted in memory, and the
conversion is checked by running one frame against the original; when it
fails, weights are quantized per tensor instead (a log warning and a report
note say so). The user's file is only read.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..engine import EngineOptions
from .data import Feeds
from .failure import failure, reason
from .graph import PER_CHANNEL_OPSET, block_nodes, default_opset, name_blocks, to_opset
from .runs import cpu_engine, predict

if TYPE_CHECKING:
    import onnx

__all__ = ["Prepared", "prepare_model"]

log = logging.getLogger(__name__)

_CONVERSION_TOLERANCE = 1e-3  # max |difference| of the converted model's output (0..1) against the original


@dataclass
class Prepared:
    """The model the tools quantize.

    Attributes
    ----------
    src : Path
        The fp32 model with named blocks, in the work folder.
    blocks : list of str
        Its blocks, in graph order.
    node_names : dict of str to list of str
        Block -> its nodes' names.
    per_channel : bool
        Weights may be quantized per channel (opset >= 13).
    """

    src: Path
    blocks: list[str]
    node_names: dict[str, list[str]]
    per_channel: bool


def prepare_model(
    model: str,
    path: Path,
    work: Path,
    *,
    check: Feeds,
    reference: np.ndarray,
    options: EngineOptions,
    notes: list[str],
    say: Callable[[str], None],
) -> Prepared:
    """Read the fp32 U-Net at ``path``, convert it to opset 13 when older, name its blocks, save it in ``work``.

    Parameters
    ----------
    model : str
        The user's model, named in messages.
    path : Path
        The ONNX file to read (the engine's resolved copy of ``model``).
    work : Path
        The work folder.
    check : Feeds
        One frame's inputs to check a conversion with; ``reference`` its fp32
        prediction, float32 ``[1, 3, 320, 320]``.
    options : EngineOptions
        Threads of the check's run.
    notes : list of str
        Report notes, appended to.
    say : callable
        Progress lines.
    """
    import onnx

    src = work / "named.onnx"
    with failure(model, "while reading the model", work):
        named = onnx.load(str(path))
    opset = default_opset(named)
    per_channel = opset is None or opset >= PER_CHANNEL_OPSET
    if not per_channel:
        assert opset is not None
        say(f"converting the model from opset {opset} to {PER_CHANNEL_OPSET} (per-channel int8 weights) ...")
        converted = _converted(model, named, opset, src, check, reference, options, notes)
        if converted is not None:
            named, per_channel = converted, True
    with failure(model, "while preparing the model", work):
        blocks = name_blocks(named)
        onnx.save(named, str(src))
    return Prepared(src, blocks, block_nodes(named, blocks), per_channel)


def _converted(
    model: str,
    named: onnx.ModelProto,
    opset: int,
    src: Path,
    check: Feeds,
    reference: np.ndarray,
    options: EngineOptions,
    notes: list[str],
) -> onnx.ModelProto | None:
    """``named`` at opset 13, checked on one frame; None (with a warning and a note) when that fails."""
    import onnx

    try:
        converted = to_opset(named, PER_CHANNEL_OPSET)
        onnx.save(converted, str(src))  # replaced by the named model afterwards
        diff = float(np.abs(predict(cpu_engine(src, options), check) - reference).max())
        if not diff <= _CONVERSION_TOLERANCE:
            raise ValueError(f"the converted model's output differs from the original's by {diff:.3g}")
    except (OSError, MemoryError):
        raise
    except Exception as exc:
        why = reason(exc, src.parent)
        log.warning(
            "%s: opset %d could not be converted to %d (%s); quantizing weights per tensor, which loses fidelity",
            model,
            opset,
            PER_CHANNEL_OPSET,
            why,
        )
        notes.append(
            f"opset {opset} could not be converted to {PER_CHANNEL_OPSET} ({why}): weights "
            f"quantized per tensor (export at opset >= {PER_CHANNEL_OPSET} for per-channel weights)"
        )
        return None
    notes.append(f"opset {opset} converted to {PER_CHANNEL_OPSET} for per-channel int8 weights")
    return converted
