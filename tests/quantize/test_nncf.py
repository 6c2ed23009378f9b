"""NNCF's int8 (OpenVINO's post-training quantization) on the trained face
U-Net: the model on both runtimes, the report, failures, the search, and
the choice between ONNX Runtime's and NNCF's candidates."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
from _int8_helpers import FEATURES, TEMPLATE, needs_trained

import synctalk_fast as stf
from synctalk_fast.quantize import BF16, FP32, choose_candidate, fidelity, name_blocks
from synctalk_fast.quantize.tools import nncf as nncf_tool

needs_nncf = pytest.mark.skipif(nncf_tool.problem() is not None, reason="no openvino / nncf")


@pytest.fixture(scope="module")
def face_nncf(face_onnx):
    """NNCF int8 of the trained U-Net, outc in floating point, every other block int8."""
    out = face_onnx.with_name("face_nncf.onnx")
    report = stf.quantize(
        face_onnx,
        out,
        template=TEMPLATE,
        features=FEATURES,
        tool="nncf",
        target_psnr=None,
        keep_fp32=["outc"],
        calibration=4,
        validation=2,
        heldout=4,
    )
    return out, report


@needs_nncf
@needs_trained
def test_nncf_int8_runs_in_the_pipeline_on_both_runtimes(face_nncf, face_onnx):
    out, report = face_nncf
    assert report.tool == "nncf" and report.runtime == "openvino"
    assert report.precision == ("bf16" if BF16 in report.candidates else "fp32")
    rows = stf.load_features(FEATURES)[0][100:104]
    want = list(stf.Pipeline(face_onnx, providers=["cpu"], sessions=1, overlap=False).frames(rows, TEMPLATE))
    for runtime, precision in (("onnxruntime", "fp32"), ("openvino", report.precision)):
        pipe = stf.Pipeline(out, runtime=runtime, precision=precision, providers=["cpu"], sessions=1, overlap=False)
        got = list(pipe.frames(rows, TEMPLATE))
        assert len(got) == 4 and got[0].shape == (720, 1280, 3)
        assert fidelity(want, got)["psnr"] > 35.0, runtime  # whole frames: only the mouth box differs


@needs_nncf
@needs_trained
def test_nncf_report_and_model(face_nncf):
    out, report = face_nncf
    assert list(report.candidates)[0] == FP32 and list(report.candidates)[-1] == "nncf int8"
    assert "onnxruntime int8" not in report.candidates
    assert report.fp32_blocks == ["outc"] and len(report.int8_blocks) == 32 and report.method == "MeanMinMax"
    graph = onnx.load(str(out)).graph
    inits = {t.name: t for t in graph.initializer}
    made = {o: n for n in graph.node for o in n.output}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    assert len(convs) == 93
    for conv in convs:
        weight = conv.input[1]
        if conv.name.startswith("outc/"):  # floating point: its own float weight, read directly
            assert inits[weight].data_type == onnx.TensorProto.FLOAT
        else:  # int8 weights stored as int8 (folded), read through a DequantizeLinear
            assert made[weight].op_type == "DequantizeLinear"
            assert inits[made[weight].input[0]].data_type == onnx.TensorProto.INT8
    # every block but outc int8 on a trained network costs some dB in the mouth box (about 35 here)
    row = report.candidates["nncf int8"]
    assert row["mouth"] == report.fidelity["mouth"] and row["seconds"] == report.speed["int8"]
    assert 25.0 < report.fidelity["mouth"]["psnr"] < 55.0 and report.fidelity["frame"]["psnr"] > 40.0
    assert row["speedup"] == pytest.approx(report.candidates[FP32]["seconds"] / row["seconds"])
    bf = report.candidates.get(BF16)
    if bf is not None:
        assert bf["mouth"]["psnr"] > 45.0 and not bf["int8"]  # bf16 alone: close to fp32
    says = [n for n in report.notes if "bf16 without int8" in n]
    faster_closer = bf is not None and bf["seconds"] < row["seconds"] and bf["mouth"]["psnr"] > row["mouth"]["psnr"]
    assert len(says) == int(faster_closer)
    saved = json.loads(Path(str(out) + ".json").read_text())
    assert saved["tool"] == "nncf" and saved["candidates"][FP32]["mouth"]["psnr"] == "inf"


@needs_nncf
def test_nncf_failure_is_a_one_line_model_error_and_writes_nothing(small, model_dir, tmp_path, monkeypatch):
    import nncf

    def failing(*args, **kwargs):
        raise RuntimeError("Could not\n  collect statistics")

    monkeypatch.setattr(nncf, "quantize", failing)
    out = tmp_path / "u8.onnx"
    with pytest.raises(stf.errors.ModelError) as info:
        stf.quantize(
            model_dir / "unet_328.onnx",
            out,
            template=small[0],
            features=small[2],
            tool="nncf",
            target_psnr=None,
            calibration=2,
            validation=1,
            heldout=1,
        )
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(model_dir / "unet_328.onnx") + ": ")
    assert "NNCF's quantizer" in message and "RuntimeError: Could not collect statistics" in message
    assert list(tmp_path.iterdir()) == []


@needs_nncf
@needs_trained
@pytest.mark.slow
def test_nncf_search_puts_the_most_sensitive_blocks_back(face_onnx, tmp_path):
    """Below the target (plus headroom) NNCF's candidate ranks the blocks as
    ONNX Runtime's does and puts the most sensitive back in floating point.
    Four candidate blocks (the rest kept in floating point) bound the cost."""
    blocks = name_blocks(onnx.load(str(face_onnx)))
    tried = ["outc", "up5.conv.double_conv.0", "up5.conv.double_conv.1", "down1.maxpool_conv.0.double_conv.0"]
    report = stf.quantize(
        face_onnx,
        tmp_path / "u8.onnx",
        template=TEMPLATE,
        features=FEATURES,
        tool="nncf",
        target_psnr=40.0,
        keep_fp32=[b for b in blocks if b not in tried],
        calibration=4,
        validation=2,
        heldout=4,
    )
    assert set(report.sensitivity) == set(tried)
    ranking = sorted(report.sensitivity, key=report.sensitivity.get)
    extra = [b for b in report.fp32_blocks if b in tried]
    assert extra and sorted(extra, key=ranking.index) == ranking[: len(extra)]
    assert report.candidates["nncf int8"]["validation_psnr"] >= 41.0  # the target plus 1 dB headroom
    assert report.met == (report.fidelity["mouth"]["psnr"] >= 40.0)


@needs_nncf
@needs_trained
@pytest.mark.slow
def test_auto_writes_the_candidate_the_rule_picks(face_onnx, tmp_path):
    out = tmp_path / "u8.onnx"
    report = stf.quantize(
        face_onnx,
        out,
        template=TEMPLATE,
        features=FEATURES,
        methods=("MinMax",),
        target_psnr=None,
        calibration=4,
        validation=2,
        heldout=8,
    )
    assert {"onnxruntime int8", "nncf int8"} <= set(report.candidates)
    chosen = choose_candidate(report.candidates, None)
    assert report.tool == report.candidates[chosen]["tool"] and report.runtime == report.candidates[chosen]["runtime"]
    assert report.speed["int8"] == report.candidates[chosen]["seconds"]
    assert report.fidelity["mouth"] == report.candidates[chosen]["mouth"]
    rows = stf.load_features(FEATURES)[0][100:102]
    pipe = stf.Pipeline(out, runtime=report.runtime, precision=report.precision, providers=["cpu"], sessions=1)
    assert len(list(pipe.frames(rows, TEMPLATE))) == 2
