"""Graph surgery for int8: block names, blocks back in floating point,
folded weight quantizers, and the tensors calibration skips."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from synctalk_fast.quantize import name_blocks
from synctalk_fast.quantize.graph import float_blocks, fold_weight_quantizers, uncalibrated_tensors


def test_name_blocks(model_dir):
    model = onnx.load(str(model_dir / "unet_328.onnx"))
    blocks = name_blocks(model)
    assert blocks[0] == "audio_model.conv1" and blocks[-1] == "outc" and "inc" in blocks
    assert len(blocks) == 33  # 7 audio layers, inc, 2 x 5 down, 2 x 2 fuse, 2 x 5 up, outc
    assert all(n.name.split("/")[0] in blocks for n in model.graph.node)
    assert len({n.name for n in model.graph.node}) == len(model.graph.node)
    renamed = {init.name: f"onnx::Conv_{k}" for k, init in enumerate(model.graph.initializer)}
    for init in model.graph.initializer:  # another exporter's weight names: blocks of three convolutions
        init.name = renamed[init.name]
    for node in model.graph.node:
        node.input[:] = [renamed.get(x, x) for x in node.input]
    assert name_blocks(model)[:2] == ["conv00", "conv01"]


def _qdq_model(path: Path) -> tuple[Path, Path]:
    """Two 3x3 convolutions (blocks "a" and "b", ReLU between), and the same
    with QuantizeLinear -> DequantizeLinear on every conv input (per-channel
    int8 weights, uint8 activations), as NNCF writes it before weight compression."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = {k: rng.normal(0, 0.3, (4, c, 3, 3)).astype(np.float32) for k, c in (("a", 2), ("b", 4))}

    def graph(qdq: bool):
        nodes, inits = [], []

        def q(x: str, name: str, scale, zero) -> str:
            if not qdq:
                return x
            inits.extend(
                [
                    numpy_helper.from_array(np.asarray(scale, np.float32), f"s_{name}"),
                    numpy_helper.from_array(np.asarray(zero), f"z_{name}"),
                ]
            )
            axis = [helper.make_attribute("axis", 0)] if np.ndim(scale) else []
            nodes.append(
                helper.make_node(
                    "QuantizeLinear", [x, f"s_{name}", f"z_{name}"], [f"q_{name}"], name=f"QuantizeLinear_{name}"
                )
            )
            nodes.append(
                helper.make_node(
                    "DequantizeLinear",
                    [f"q_{name}", f"s_{name}", f"z_{name}"],
                    [f"dq_{name}"],
                    name=f"DequantizeLinear_{name}",
                )
            )
            nodes[-2].attribute.extend(axis)
            nodes[-1].attribute.extend(axis)
            return f"dq_{name}"

        x = "x"
        for k, act in (("a", np.uint8(0)), ("b", np.uint8(0))):
            inits.append(numpy_helper.from_array(w[k], f"{k}.w"))
            scale = np.abs(w[k]).reshape(4, -1).max(1) / 127
            xi = q(x, f"{k}_in", np.float32(0.02), act)
            wi = q(f"{k}.w", f"{k}_w", scale, np.zeros(4, np.int8))
            nodes.append(helper.make_node("Conv", [xi, wi], [f"{k}_conv"], name=f"{k}/Conv_{len(nodes)}", pads=[1] * 4))
            nodes.append(helper.make_node("Relu", [f"{k}_conv"], [f"{k}_relu"], name=f"{k}/Relu_{len(nodes)}"))
            x = f"{k}_relu"
        g = helper.make_graph(
            nodes,
            "two",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 8, 8])],
            [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, 4, 8, 8])],
            inits,
        )
        return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])

    fp, q8 = path / "float.onnx", path / "qdq.onnx"
    onnx.save(graph(False), str(fp))
    onnx.save(graph(True), str(q8))
    return fp, q8


def _ort(model, x) -> np.ndarray:
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def test_blocks_back_in_floating_point_and_folded_weights(tmp_path):
    fp, q8 = _qdq_model(tmp_path)
    qdq = onnx.load(str(q8))
    x = np.random.default_rng(1).uniform(0, 1, (1, 2, 8, 8)).astype(np.float32)
    ref = _ort(fp, x)
    assert not np.array_equal(_ort(qdq, x), ref)  # int8 changes the result

    b_float = float_blocks(qdq, ["b"])
    convs = {n.name.split("/")[0]: n for n in b_float.graph.node if n.op_type == "Conv"}
    assert list(convs["b"].input) == ["a_relu", "b.w"]  # reads the float activation and weight
    assert list(convs["a"].input) == ["dq_a_in", "dq_a_w"]  # block a untouched
    assert {n.name for n in b_float.graph.node if n.op_type == "QuantizeLinear"} == {
        "QuantizeLinear_a_in",
        "QuantizeLinear_a_w",
    }
    assert {t.name for t in b_float.graph.initializer} == {"a.w", "b.w", "s_a_in", "z_a_in", "s_a_w", "z_a_w"}
    assert len(qdq.graph.node) == 12  # the original is not changed
    all_float = float_blocks(qdq, ["a", "b"])
    assert not any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in all_float.graph.node)
    assert np.array_equal(_ort(all_float, x), ref)

    before = _ort(qdq, x)
    fold_weight_quantizers(qdq)
    inits = {t.name: t for t in qdq.graph.initializer}
    assert not any(n.op_type == "QuantizeLinear" and n.input[0] in inits for n in qdq.graph.node)
    assert inits["q_a_w"].data_type == onnx.TensorProto.INT8 and "a.w" not in inits  # int8 weights only
    assert np.array_equal(_ort(qdq, x), before)  # the same model


def test_calibration_skips_the_empty_roi_of_a_legacy_export(legacy_opset11):
    """The TorchScript exporter at opset 11 feeds each Resize an empty float
    ``roi`` constant: no range exists for it, so calibration skips it (and any
    tensor that is not float)."""
    from onnx import TensorProto, helper, numpy_helper, shape_inference

    model = shape_inference.infer_shapes(onnx.load(str(legacy_opset11)))
    made = {o: n for n in model.graph.node for o in n.output}
    resizes = [n for n in model.graph.node if n.op_type == "Resize"]
    assert len(resizes) == 5 and {"ConstantOfShape", "Slice", "Cast"} <= {n.op_type for n in model.graph.node}
    rois = [n.input[1] for n in resizes]
    assert all(made[r].op_type == "Constant" and numpy_helper.to_array(made[r].attribute[0].t).size == 0 for r in rois)
    skip = uncalibrated_tensors(model)
    assert set(rois) <= skip
    assert not {n.output[0] for n in model.graph.node if n.op_type in ("Conv", "Relu", "Add")} & skip
    assert {n.output[0] for n in model.graph.node if n.op_type in ("Shape", "Cast")} <= skip  # int64 shapes

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 0, 4])  # empty by its shape
    i = helper.make_tensor_value_info("i", TensorProto.INT64, [2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])
    g = helper.make_graph([helper.make_node("Identity", ["x"], ["z"])], "g", [x, i, y], [])
    assert uncalibrated_tensors(helper.make_model(g)) == {"x", "i"}
