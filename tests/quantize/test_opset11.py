"""U-Nets exported as SyncTalk_2D users export them: ``torch.onnx.export(...,
opset_version=11, dynamo=False)``. Converted to opset 13 for per-channel
weights (or quantized per tensor when that fails), and calibrated by every
method although the exporter feeds each Resize an empty float ``roi``."""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import onnx
import pytest
from _int8_helpers import FEATURES, TEMPLATE, dequantize_scales, failing_quantizer, needs_trained, opset_of

import synctalk_fast as stf
from synctalk_fast import models
from synctalk_fast.quantize import fidelity
from synctalk_fast.quantize.data import Feeds
from synctalk_fast.quantize.graph import name_blocks, to_opset
from synctalk_fast.quantize.tools import ort as ort_tool

# --- the legacy export of the re-statement (random weights): calibration must skip its empty roi ----------------


def _legacy_src(legacy_opset11, tmp_path):
    model = to_opset(onnx.load(str(legacy_opset11)), 13)
    name_blocks(model)
    src = tmp_path / "named.onnx"
    onnx.save(model, str(src))
    rng = np.random.default_rng(0)
    feeds = Feeds(
        {"image": "input", "audio": "audio"},
        rng.random((2, 6, 320, 320), dtype=np.float32),
        rng.normal(size=(2, 32, 16, 16)).astype(np.float32),
    )
    return src, feeds


@pytest.mark.parametrize("method", ["Percentile", "Entropy", "MinMax"])
def test_every_method_calibrates_the_legacy_export(legacy_opset11, tmp_path, method):
    """Percentile used to fail on the second frame: ``ValueError: zero-size
    array to reduction operation fmax which has no identity`` (its histogram
    of the empty roi). The cache holds a range for every activation, none for the roi."""
    src, feeds = _legacy_src(legacy_opset11, tmp_path)
    cache = tmp_path / f"{method}.json"
    ort_tool.calibrate(src, method, feeds, cache, tmp_path)
    ranges = json.loads(cache.read_text())["data"]
    graph = onnx.load(str(src)).graph
    rois = {n.input[1] for n in graph.node if n.op_type == "Resize"}
    convs = {n.output[0] for n in graph.node if n.op_type == "Conv"}
    assert len(rois) == 5 and not rois & set(ranges)
    assert convs <= set(ranges)


def test_legacy_export_quantizes_with_every_method_at_target_0(legacy_opset11, small, tmp_path, capsys):
    """The issue's command: ``synctalk-fast quantize --target-psnr 0`` (every
    block int8) with the default methods (all three), on the legacy export."""
    from synctalk_fast import cli

    tpl, _, feats = small
    np.save(tmp_path / "feats.npy", feats)
    out = tmp_path / "u8.onnx"
    rc = cli.main(
        [
            "quantize",
            "--model",
            str(legacy_opset11),
            "--template",
            str(tpl),
            "--features",
            str(tmp_path / "feats.npy"),
            "-o",
            str(out),
            "--target-psnr",
            "0",
            "--calibration",
            "2",
            "--validation",
            "1",
            "--heldout",
            "1",
            "--tool",
            "onnxruntime",
            "--quiet",
        ]
    )
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    report = json.loads(out.with_name("u8.onnx.json").read_text())
    assert set(report["methods"]) == {"MinMax", "Percentile", "Entropy"}
    assert all(isinstance(v, float) and v > 0 for v in report["methods"].values())
    assert report["fp32_blocks"] == [] and len(report["int8_blocks"]) == 33
    assert any("opset 11 converted to 13" in n for n in report["notes"])
    assert opset_of(out) == 13 and sum(s > 1 for s in dequantize_scales(out)) > 50  # per-channel weights
    assert models.load_session(out).kind == "unet"


def test_legacy_export_quantizes_at_the_default_target(legacy_opset11, small, tmp_path):
    """At the default target (40 dB) Percentile's model misses it (random
    weights), so the search runs; a few candidate blocks bound the cost."""
    tpl, _, feats = small
    blocks = name_blocks(onnx.load(str(legacy_opset11)))
    assert len(blocks) == 33 and blocks[0] == "conv00" and blocks[-1] == "outc"  # its weights lost their names
    tried = [blocks[0], blocks[10], blocks[-2], blocks[-1]]
    report = stf.quantize(
        legacy_opset11,
        tmp_path / "u8.onnx",
        template=tpl,
        features=feats,
        tool="onnxruntime",
        methods=("Percentile",),
        keep_fp32=[b for b in blocks if b not in tried],
        calibration=2,
        validation=1,
        heldout=1,
        threads=2,
    )
    assert report.target_psnr == 40.0 and report.method == "Percentile" and report.speed["threads"] == 2
    assert set(report.sensitivity) == set(tried)
    assert report.met == (report.fidelity["mouth"]["psnr"] >= 40.0)
    assert models.load_session(tmp_path / "u8.onnx").kind == "unet"


@pytest.mark.slow
def test_legacy_export_full_search_at_the_default_target(legacy_opset11, small, tmp_path):
    """The default target on every block, Percentile and MinMax."""
    tpl, _, feats = small
    report = stf.quantize(
        legacy_opset11,
        tmp_path / "u8.onnx",
        template=tpl,
        features=feats,
        tool="onnxruntime",
        methods=("MinMax", "Percentile"),
        calibration=2,
        validation=1,
        heldout=1,
    )
    assert set(report.methods) == {"MinMax", "Percentile"} and len(report.sensitivity) == 33
    assert report.fp32_blocks and report.met == (report.fidelity["mouth"]["psnr"] >= 40.0)


# --- the trained U-Net at opset 11 -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def opset11_int8(opset11):
    before = opset11.read_bytes()
    out = opset11.with_name("unet_int8.onnx")
    report = stf.quantize(
        opset11,
        out,
        template=TEMPLATE,
        features=FEATURES,
        tool="onnxruntime",
        methods=("MinMax",),
        target_psnr=None,
        calibration=2,
        validation=1,
        heldout=1,
    )
    assert opset11.read_bytes() == before  # the user's model is read, never written
    return out, report


@needs_trained
def test_opset11_export_is_converted_and_quantized_per_channel(opset11_int8):
    out, report = opset11_int8
    assert sorted(p.name for p in out.parent.iterdir()) == ["unet_328.onnx", "unet_int8.onnx", "unet_int8.onnx.json"]
    assert any("opset 11 converted to 13" in n for n in report.notes)
    assert opset_of(out) == 13
    scales = dequantize_scales(out)
    assert len(scales) > 50 and sum(s > 1 for s in scales) > 50  # per-channel weight scales
    sess = models.load_session(out)
    assert sess.kind == "unet" and sess.mode == "ave" and sess.dynamic_batch
    # Fidelity of a trained network against its fp32 self: every block int8 (no target)
    # costs some dB in the mouth box (about 25.5 here, as for the same weights exported
    # at opset 17), nothing outside it.
    mouth, frame = report.fidelity["mouth"], report.fidelity["frame"]
    assert 22.0 <= mouth["psnr"] < 60.0 and 0 < mouth["max"] < 255 and 0 < mouth["mean"] < 20
    assert frame["psnr"] > mouth["psnr"] + 10 and frame["max"] == mouth["max"]
    assert math.isfinite(report.fidelity["unet"]["psnr"]) and report.speed["int8"] > 0


@needs_trained
def test_opset11_int8_model_runs_in_the_pipeline(opset11_int8, opset11):
    out, _ = opset11_int8
    rows = stf.load_features(FEATURES)[0][100:106]
    got = list(stf.Pipeline(out, providers=["cpu"], sessions=1, overlap=False).frames(rows, TEMPLATE))
    want = list(stf.Pipeline(opset11, providers=["cpu"], sessions=1, overlap=False).frames(rows, TEMPLATE))
    assert len(got) == len(want) == 6 and got[0].shape == want[0].shape == (720, 1280, 3)
    assert fidelity(want, got)["psnr"] > 35.0  # whole frames: only the mouth box differs


@needs_trained
@pytest.mark.slow
def test_failed_opset_conversion_falls_back_to_per_tensor(opset11, tmp_path, monkeypatch, caplog):
    from onnx import version_converter

    def no_adapter(model, version):
        raise RuntimeError("No adapter for op Resize\nfrom version 11")

    monkeypatch.setattr(version_converter, "convert_version", no_adapter)
    out = tmp_path / "u8.onnx"
    with caplog.at_level(logging.WARNING, logger="synctalk_fast.quantize"):
        report = stf.quantize(
            opset11,
            out,
            template=TEMPLATE,
            features=FEATURES,
            tool="onnxruntime",
            methods=("MinMax",),
            target_psnr=None,
            calibration=2,
            validation=1,
            heldout=1,
        )
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and "per tensor" in warned[0] and "No adapter for op Resize from version 11" in warned[0]
    assert any("quantized per tensor" in n for n in report.notes)
    assert opset_of(out) == 11 and all(s == 1 for s in dequantize_scales(out))
    assert 20.0 <= report.fidelity["mouth"]["psnr"] < 60.0
    assert models.load_session(out).kind == "unet"


@needs_trained
def test_cli_quantizer_failure_exits_2_with_one_line(opset11, tmp_path, monkeypatch, capsys):
    from synctalk_fast import cli

    failing_quantizer(monkeypatch, final_only=False)
    out = tmp_path / "u8.onnx"
    rc = cli.main(
        [
            "quantize",
            "--model",
            str(opset11),
            "--template",
            str(TEMPLATE),
            "--features",
            str(FEATURES),
            "-o",
            str(out),
            "--methods",
            "MinMax",
            "--target-psnr",
            "0",
            "--calibration",
            "2",
            "--validation",
            "1",
            "--heldout",
            "1",
            "--quiet",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2
    assert len(err.splitlines()) == 1 and err.startswith(f"synctalk-fast: error: {opset11}: int8 quantization failed")
    assert "boom" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []
