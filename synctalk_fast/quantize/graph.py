"""Graph surgery on ONNX U-Nets for int8: block names, opset conversion,
blocks back in floating point, folded weight quantizers, tensors calibration skips.

Pure functions of ``onnx.ModelProto`` objects (the ``onnx`` package is
imported when first used); functions that change a model in place say so.
Block names (:func:`name_blocks`) are the unit every other step speaks of:
``"<block>/<op>_<k>"`` node names, ``inc`` / ``down1...`` / ``outc``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import onnx

__all__ = [
    "name_blocks",
    "block_nodes",
    "default_opset",
    "to_opset",
    "float_blocks",
    "fold_weight_quantizers",
    "uncalibrated_tensors",
    "PER_CHANNEL_OPSET",
    "QDQ",
]

#: DequantizeLinear's ``axis`` attribute (per-channel weights) appears in opset 13.
PER_CHANNEL_OPSET = 13
QDQ = ("QuantizeLinear", "DequantizeLinear")


# --- blocks -------------------------------------------------------------------------


def _block_of(weight: str) -> str | None:
    """The network block a weight belongs to, from its state-dict name: an
    inverted-residual block (``down3...double_conv.1``), an audio layer
    (``audio_model.conv4``), ``inc`` or ``outc``; None for other names."""
    parts = re.sub(r"_\d+$", "", weight).split(".")
    if parts[0] in ("inc", "outc"):
        return parts[0]
    if parts[0] == "audio_model" and len(parts) > 1:
        return ".".join(parts[:2])
    if "double_conv" in parts:
        i = parts.index("double_conv")
        return ".".join(parts[: i + 2])
    return None


def name_blocks(model: onnx.ModelProto) -> list[str]:
    """Name every node of a U-Net graph ``"<block>/<op>_<k>"`` and return the
    blocks in graph order.

    A convolution's block comes from its weight's name (the state-dict keys
    of numerics §5, as :func:`~synctalk_fast.models.export_onnx` writes them);
    with other names, every three convolutions make a block (an inverted
    residual). Nodes without weights join the block of their first input.
    The model is changed in place.

    Parameters
    ----------
    model : onnx.ModelProto
        A U-Net graph (any exporter).

    Returns
    -------
    list of str
        The block names, in graph order.
    """
    inits = {t.name for t in model.graph.initializer}
    producer: dict[str, str] = {}
    blocks: list[str] = []
    convs = 0
    for k, node in enumerate(model.graph.node):
        weights = [x for x in node.input if x in inits]
        if node.op_type == "Conv" and weights:
            block = _block_of(weights[0]) or f"conv{convs // 3:02d}"
            convs += 1
        else:
            block = next((producer[x] for x in node.input if x in producer), "input")
        node.name = f"{block}/{node.op_type}_{k}"
        for out in node.output:
            producer[out] = block
        if block not in blocks:
            blocks.append(block)
    return blocks


def block_nodes(model: onnx.ModelProto, blocks: Sequence[str]) -> dict[str, list[str]]:
    """Block -> the names of its nodes, in a model named by :func:`name_blocks`."""
    return {b: [n.name for n in model.graph.node if n.name.startswith(b + "/")] for b in blocks}


# --- opsets -------------------------------------------------------------------------


def default_opset(model: onnx.ModelProto) -> int | None:
    """The default-domain (``""`` / ``"ai.onnx"``) opset of an ONNX model; None without one."""
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)


def to_opset(model: onnx.ModelProto, version: int) -> onnx.ModelProto:
    """``model`` converted to opset ``version`` (default domain) and checked with ONNX's checker."""
    import onnx
    from onnx import version_converter

    converted = version_converter.convert_version(model, version)
    onnx.checker.check_model(converted)
    return converted


# --- calibration --------------------------------------------------------------------

_CALIBRATED_TYPES = (1, 10)  # onnx.TensorProto.FLOAT, FLOAT16: the element types calibration measures


def uncalibrated_tensors(model: onnx.ModelProto) -> set[str]:
    """Tensors calibration must skip: those not float32 / float16, and the
    empty ones (a dimension of 0 in the inferred shape, or a ``Constant``
    with no elements: the empty ``roi`` the TorchScript exporter feeds
    ``Resize`` at opset 11), whose range is undefined.

    Parameters
    ----------
    model : onnx.ModelProto
        A model after shape inference (its ``value_info`` filled in).

    Returns
    -------
    set of str
        Tensor names.
    """
    skip: set[str] = set()
    infos = [*model.graph.value_info, *model.graph.input, *model.graph.output]
    for info in infos:
        if not info.type.HasField("tensor_type"):
            skip.add(info.name)
            continue
        t = info.type.tensor_type
        if t.elem_type not in _CALIBRATED_TYPES or any(
            d.HasField("dim_value") and d.dim_value == 0 for d in t.shape.dim
        ):
            skip.add(info.name)
    for node in model.graph.node:
        if node.op_type == "Constant":
            value = next((a.t for a in node.attribute if a.name == "value"), None)
            if value is not None and (value.data_type not in _CALIBRATED_TYPES or 0 in value.dims):
                skip.update(node.output)
    return skip


# --- QDQ models ---------------------------------------------------------------------


def _prune(graph: onnx.GraphProto) -> None:
    """Drop quantize / dequantize nodes nothing reads, then initializers nothing reads."""
    while True:
        read = {x for n in graph.node for x in n.input} | {o.name for o in graph.output}
        dead = [n for n in graph.node if n.op_type in QDQ and not any(o in read for o in n.output)]
        if not dead:
            break
        for n in dead:
            graph.node.remove(n)
    read = {x for n in graph.node for x in n.input} | {o.name for o in graph.output}
    kept = [t for t in graph.initializer if t.name in read]
    del graph.initializer[:]
    graph.initializer.extend(kept)


def float_blocks(model: onnx.ModelProto, blocks: Sequence[str]) -> onnx.ModelProto:
    """A copy of the QDQ model ``model`` with ``blocks`` (names of
    :func:`name_blocks`) back in floating point: every input of their nodes
    that passes through QuantizeLinear -> DequantizeLinear (activations and
    weights) reads the float tensor instead. Weights must still be float
    initializers under their QuantizeLinear (NNCF without weight
    compression); quantizers other consumers read stay. ``model`` is not changed."""
    import onnx

    out = onnx.ModelProto()
    out.CopyFrom(model)
    chosen = set(blocks)
    if not chosen:
        return out
    made = {o: n for n in out.graph.node for o in n.output}
    for node in out.graph.node:
        if node.op_type in QDQ or node.name.split("/")[0] not in chosen:
            continue
        for i, x in enumerate(node.input):
            dq = made.get(x)
            q = made.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
            if q is not None and q.op_type == "QuantizeLinear":
                node.input[i] = q.input[0]
    _prune(out.graph)
    return out


def fold_weight_quantizers(model: onnx.ModelProto) -> None:
    """Replace every QuantizeLinear of an initializer (a weight) by its
    result, an int8 initializer read by the DequantizeLinear: a quarter of
    the size, the same model (ONNX's QuantizeLinear: round half to even,
    saturate). In place."""
    from onnx import numpy_helper

    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    for node in list(graph.node):
        if node.op_type != "QuantizeLinear" or node.input[0] not in inits:
            continue
        x = numpy_helper.to_array(inits[node.input[0]]).astype(np.float32)
        scale = numpy_helper.to_array(inits[node.input[1]]).astype(np.float32)
        zero = (
            numpy_helper.to_array(inits[node.input[2]])
            if len(node.input) > 2 and node.input[2]
            else np.zeros(scale.shape, np.uint8)
        )
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1) % max(x.ndim, 1)
        shape = [1] * x.ndim
        if scale.ndim:
            shape[axis] = -1
        y = np.rint(x / scale.reshape(shape)) + zero.reshape(shape).astype(np.float32)
        info = np.iinfo(zero.dtype)
        graph.initializer.append(
            numpy_helper.from_array(np.clip(y, info.min, info.max).astype(zero.dtype), node.output[0])
        )
        graph.node.remove(node)
    _prune(graph)
