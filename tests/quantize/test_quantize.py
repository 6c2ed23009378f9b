"""int8 U-Net calibrated on the template with ONNX Runtime's tools: the
model, the report, the search, the command line, failures, and the API
(``unet=``, engine options, the name ``synctalk_fast.quantize``)."""

from __future__ import annotations

import inspect
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from _int8_helpers import failing_quantizer

import synctalk_fast as stf
from synctalk_fast import models
from synctalk_fast.engine import EngineOptions
from synctalk_fast.quantize import tools
from synctalk_fast.quantize.tools import nncf as nncf_tool
from synctalk_fast.reference import (
    reference_audio_window,
    reference_box,
    reference_landmarks,
    reference_paste,
    reference_prepare,
)


@pytest.fixture(scope="module")
def quantized(small, model_dir, tmp_path_factory):
    tpl, speech, _ = small
    out = tmp_path_factory.mktemp("int8") / "unet_int8.onnx"
    report = stf.quantize(
        model_dir / "unet_328.onnx",
        out,
        template=tpl,
        audio=speech,
        audio_encoder=model_dir / "audio_encoder.onnx",
        tool="onnxruntime",
        methods=("MinMax",),
        target_psnr=None,
        calibration=4,
        validation=2,
        heldout=4,
        keep_fp32=["outc"],
        options=EngineOptions(threads=2),
    )
    return out, report


def test_int8_model_loads_runs_batched_and_keeps_requested_blocks(quantized):
    out, report = quantized
    sess = models.load_session(out)
    assert sess.kind == "unet" and sess.mode == "ave" and sess.dynamic_batch
    rng = np.random.default_rng(0)
    pred = sess.run(
        image=rng.random((3, 6, 320, 320), dtype=np.float32), audio=rng.normal(size=(3, 32, 16, 16)).astype(np.float32)
    )
    assert pred.shape == (3, 3, 320, 320) and np.isfinite(pred).all() and 0 <= pred.min() and pred.max() <= 1
    graph = onnx.load(str(out)).graph
    assert sum(n.op_type == "QuantizeLinear" for n in graph.node) > 50
    assert report.fp32_blocks == ["outc"] and "outc" not in report.int8_blocks and len(report.int8_blocks) == 32
    outc = [n for n in graph.node if n.op_type == "Conv" and any("outc" in x for x in n.input)]
    floats = {t.name for t in graph.initializer if t.data_type == onnx.TensorProto.FLOAT}
    assert len(outc) == 1 and outc[0].input[1] in floats  # its weights stayed float
    frames = report.frames
    assert not set(frames["heldout"]) & (set(frames["calibration"]) | set(frames["validation"]))
    assert sum(len(v) for v in frames.values()) == 10
    assert report.speed["threads"] == 2 and report.speed["batch"] == 4  # EngineOptions(threads=2)


def test_report_matches_an_independent_recomputation(quantized, small, model_dir, scalar_cv2):
    """PSNR / max / mean over the mouth box and the whole frame, recomputed
    from the report's held-out frames with the reference code and plain ORT."""
    out, report = quantized
    tpl, _, feats = small
    assert (
        json.loads(Path(str(out) + ".json").read_text())["fidelity"]["mouth"]["max"] == report.fidelity["mouth"]["max"]
    )
    s32 = ort.InferenceSession(str(model_dir / "unet_328.onnx"), providers=["CPUExecutionProvider"])
    s8 = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    sq = {"mouth": 0.0, "frame": 0.0}
    ab = {"mouth": 0.0, "frame": 0.0}
    worst = {"mouth": 0, "frame": 0}
    count = {"mouth": 0, "frame": 0}
    for k, row in zip(report.frames["heldout"], report.feature_rows["heldout"]):
        img = cv2.imread(str(tpl / "full_body_img" / f"{k}.jpg"))
        box = reference_box(reference_landmarks(tpl / "landmarks" / f"{k}.lms"))
        feed = {"image": reference_prepare(img, box)[None], "audio": reference_audio_window(feats, row)}
        a = reference_paste(img, box, s32.run(None, feed)[0][0]).astype(np.int64)
        b = reference_paste(img, box, s8.run(None, feed)[0][0]).astype(np.int64)
        x0, y0, x1, y1 = box
        for region, (ra, rb) in {"mouth": (a[y0:y1, x0:x1], b[y0:y1, x0:x1]), "frame": (a, b)}.items():
            d = np.abs(ra - rb)
            sq[region] += float((d**2).sum())
            ab[region] += float(d.sum())
            worst[region] = max(worst[region], int(d.max()))
            count[region] += d.size
    for region in ("mouth", "frame"):
        got = report.fidelity[region]
        mse = sq[region] / count[region]
        assert got["psnr"] == pytest.approx(10 * math.log10(255**2 / mse) if mse else math.inf, abs=1e-9)
        assert got["max"] == worst[region]
        assert got["mean"] == pytest.approx(ab[region] / count[region], abs=1e-12)
        assert got["pixels"] == count[region]
    assert report.fidelity["frame"]["psnr"] > report.fidelity["mouth"]["psnr"]  # outside the box nothing moves
    s = report.speed
    assert s["fp32"] > 0 and s["int8"] > 0 and s["speedup"] == pytest.approx(s["fp32"] / s["int8"])
    assert report.method == "MinMax" and set(report.methods) == {"MinMax"} and report.met  # no target


def test_pipeline_runs_the_int8_model(quantized, small, model_dir, tmp_path):
    out, _ = quantized
    tpl, speech, _ = small
    result = stf.generate(
        speech,
        template=tpl,
        output=tmp_path / "int8.mp4",
        unet=out,
        audio_encoder=model_dir / "audio_encoder.onnx",
        progress=False,
    )
    assert result.output.is_file() and result.frames > 40


@pytest.mark.slow
def test_search_until_the_target_holds(small, model_dir, tmp_path):
    """Below the target, every block's sensitivity is measured and the most
    sensitive ones go back to fp32; the report says whether the target held."""
    tpl, _, feats = small
    report = stf.quantize(
        model_dir / "unet_328.onnx",
        tmp_path / "u8.onnx",
        template=tpl,
        features=feats,
        tool="onnxruntime",
        methods=("MinMax",),
        target_psnr=60.0,
        calibration=3,
        validation=2,
        heldout=3,
    )
    assert len(report.sensitivity) == 33
    ranking = sorted(report.sensitivity, key=report.sensitivity.get)
    assert sorted(report.fp32_blocks, key=ranking.index) == ranking[: len(report.fp32_blocks)]
    assert report.fp32_blocks  # random weights amplify int8 noise: 60 dB needs fp32 blocks
    assert report.met == (report.fidelity["mouth"]["psnr"] >= 60.0)


def test_cli_quantize(small, model_dir, tmp_path):
    """The CLI's quantize (tool "auto"), with NNCF hidden: ONNX Runtime's int8 alone, and a note saying so."""
    tpl, _, feats = small
    np.save(tmp_path / "feats.npy", feats)
    out = tmp_path / "u8.onnx"
    hidden = tmp_path / "hidden" / "nncf"
    hidden.mkdir(parents=True)
    (hidden / "__init__.py").write_text("raise ImportError('hidden by the test', name='nncf')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(hidden.parent), os.environ.get("PYTHONPATH", "")])}
    cmd = [
        sys.executable,
        "-m",
        "synctalk_fast",
        "quantize",
        "--model",
        str(model_dir / "unet_328.onnx"),
        "--template",
        str(tpl),
        "--features",
        str(tmp_path / "feats.npy"),
        "-o",
        str(out),
        "--methods",
        "MinMax",
        "--target-psnr",
        "0",
        "--calibration",
        "3",
        "--validation",
        "1",
        "--heldout",
        "2",
        "--report",
        str(tmp_path / "r.json"),
    ]
    run = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=600, env=env)
    assert run.returncode == 0, run.stderr
    assert "mouth  PSNR" in run.stdout and "x (batch" in run.stdout
    assert "note: only ONNX Runtime's int8 was tried: NNCF int8 needs the openvino and nncf packages" in run.stdout
    assert "* onnxruntime int8" in run.stdout and "nncf int8" not in run.stdout
    assert json.loads((tmp_path / "r.json").read_text())["output"] == str(out) and out.is_file()
    bad = subprocess.run(
        cmd[:5] + [str(model_dir / "audio_encoder.onnx")] + cmd[6:],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert bad.returncode == 2 and "audio encoder" in bad.stderr and "Traceback" not in bad.stderr


def test_quantizer_failure_is_a_one_line_model_error_and_writes_nothing(small, model_dir, tmp_path, monkeypatch):
    _, _, feats = small
    folder = tmp_path / "out"
    folder.mkdir()
    out = folder / "u8.onnx"
    failing_quantizer(monkeypatch, final_only=True)  # the output's write fails half-way
    with pytest.raises(stf.errors.ModelError) as info:
        stf.quantize(
            model_dir / "unet_328.onnx",
            out,
            template=small[0],
            features=feats,
            tool="onnxruntime",
            methods=("MinMax",),
            target_psnr=None,
            calibration=2,
            validation=1,
            heldout=1,
        )
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(model_dir / "unet_328.onnx") + ": ")
    assert "ONNX Runtime's quantizer" in message
    assert "RuntimeError: [ONNXRuntimeError] : 1 : FAIL : boom in the quantizer" in message
    assert isinstance(info.value, ValueError)
    assert list(folder.iterdir()) == []  # no model, no report, no temporary file


def test_tool_choice(small, model_dir, tmp_path, monkeypatch):
    """An unknown tool, and tool="nncf" without NNCF, are refused before any work
    ("auto" then quantizes with ONNX Runtime alone and says so: test_cli_quantize)."""
    _, _, feats = small
    args = dict(
        template=small[0], features=feats, methods=("MinMax",), target_psnr=None, calibration=2, validation=1, heldout=2
    )
    with pytest.raises(ValueError, match="unknown tool 'tflite'"):
        stf.quantize(model_dir / "unet_328.onnx", tmp_path / "u8.onnx", tool="tflite", **args)
    problem = "NNCF int8 needs the openvino and nncf packages (nncf is missing): pip install 'synctalk-fast[openvino]'"
    monkeypatch.setattr(nncf_tool, "problem", lambda: problem)
    with pytest.raises(ValueError, match=r"nncf is missing"):
        stf.quantize(model_dir / "unet_328.onnx", tmp_path / "u8.onnx", tool="nncf", **args)
    assert list(tmp_path.iterdir()) == []
    notes: list[str] = []
    assert [t.name for t in tools.select("auto", notes)] == ["onnxruntime"] and notes == [
        f"only ONNX Runtime's int8 was tried: {problem}"
    ]


def test_quantize_is_the_function_and_the_package_imports():
    """``synctalk_fast.quantize`` is the function although a subpackage has its
    name; the package, its modules and the old module path import."""
    import synctalk_fast
    import synctalk_fast.quantize.tools.ort  # noqa: F401  (a submodule import does not rebind the name)
    from synctalk_fast import quantization
    from synctalk_fast.quantize import QuantizeReport, quantize

    assert inspect.isfunction(synctalk_fast.quantize) and synctalk_fast.quantize is quantize
    assert synctalk_fast.QuantizeReport is QuantizeReport
    assert quantization.quantize is quantize and quantization.QuantizeReport is QuantizeReport
    assert list(inspect.signature(quantize).parameters)[:2] == ["unet", "output"]
    with pytest.warns(DeprecationWarning, match="synctalk_fast.models.quantize is deprecated"):
        assert models.quantize is quantize


def test_model_keyword_is_deprecated_and_engine_options_are_checked(small, model_dir, tmp_path):
    """``model=`` still names the U-Net (with a DeprecationWarning); engine
    options quantize cannot honour are refused before any work."""
    unet = model_dir / "unet_328.onnx"
    args = dict(template=small[0], features=small[2], methods=("MinMax",), target_psnr=None)
    with pytest.warns(DeprecationWarning, match=r"quantize\(model=...\) is deprecated; use unet="):
        with pytest.raises(ValueError, match="unknown tool 'tflite'"):  # reached: the keyword was taken
            stf.quantize(model=unet, output=tmp_path / "u8.onnx", tool="tflite", **args)
    with pytest.raises(TypeError, match="both 'model' and its new name 'unet'"):
        stf.quantize(unet, tmp_path / "u8.onnx", model=unet, **args)
    with pytest.raises(TypeError, match="missing required argument 'output'"):
        stf.quantize(unet, **args)
    with pytest.raises(ValueError, match="runtime, precision cannot be set"):
        stf.quantize(unet, tmp_path / "u8.onnx", runtime="openvino", precision="bf16", **args)
    with pytest.raises(ValueError, match="threads must be >= 1"):
        stf.quantize(unet, tmp_path / "u8.onnx", threads=0, **args)
    with pytest.raises(TypeError, match="unknown option"):
        stf.quantize(unet, tmp_path / "u8.onnx", thread=2, **args)
    assert list(tmp_path.iterdir()) == []


def test_an_audio_encoder_is_refused(small, model_dir, tmp_path):
    with pytest.raises(stf.errors.ModelError, match="audio_encoder.onnx: is an audio encoder; quantize takes a U-Net"):
        stf.quantize(
            model_dir / "audio_encoder.onnx",
            tmp_path / "u8.onnx",
            template=small[0],
            features=small[2],
            tool="onnxruntime",
        )
    assert list(tmp_path.iterdir()) == []
