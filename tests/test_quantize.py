"""int8 U-Net calibrated on the template: the model, the report, the search,
ONNX Runtime's and NNCF's candidates and the choice between them."""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import soundfile as sf

import synctalk_fast as stf
from synctalk_fast import models
from synctalk_fast.demo import synthetic_speech, synthetic_template
from synctalk_fast import quantization
from synctalk_fast.quantization import (
    BF16,
    FP32,
    QuantizeReport,
    bf16_advice,
    choose_candidate,
    fidelity,
    name_blocks,
    search_fp32_blocks,
)
from synctalk_fast.reference import (
    reference_audio_window,
    reference_box,
    reference_landmarks,
    reference_paste,
    reference_prepare,
)

from helpers import DATA, TEMPLATE


@pytest.fixture(scope="module")
def small(tmp_path_factory, model_dir):
    """A 12-frame template, 2 s of speech and its features."""
    root = tmp_path_factory.mktemp("quant")
    tpl = synthetic_template(root / "person", frames=12, width=320, height=240)
    speech = root / "speech.wav"
    sf.write(speech, synthetic_speech(2.0), 16000, subtype="PCM_16")
    feats = stf.audio_features(speech, audio_encoder=model_dir / "audio_encoder.onnx")
    return tpl, speech, feats


@pytest.fixture(scope="module")
def quantized(small, model_dir, tmp_path_factory):
    tpl, speech, _ = small
    out = tmp_path_factory.mktemp("int8") / "unet_int8.onnx"
    report = stf.quantize(model_dir / "unet_328.onnx", out, template=tpl, audio=speech,
                             audio_encoder=model_dir / "audio_encoder.onnx", tool="onnxruntime", methods=("MinMax",),
                             target_psnr=None, calibration=4, validation=2, heldout=4, keep_fp32=["outc"])
    return out, report


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


def test_search_keeps_the_fewest_sensitive_blocks():
    ranking = [f"b{i}" for i in range(20)]
    calls = []

    def score(kept):  # fidelity grows as blocks go back to fp32
        calls.append(len(kept))
        return 20.0 + 2.0 * len(kept)

    kept, psnr = search_fp32_blocks(ranking, score, 40.0)
    assert kept == ranking[:10] and psnr == 40.0
    assert len(calls) <= 6  # a binary search, not a scan
    assert search_fp32_blocks(ranking, lambda kept: 50.0, 40.0) == ([], 50.0)
    assert search_fp32_blocks(ranking, lambda kept: 10.0, 40.0)[0] == ranking  # last resort: all fp32


def test_int8_model_loads_runs_batched_and_keeps_requested_blocks(quantized):
    out, report = quantized
    sess = models.load_session(out)
    assert sess.kind == "unet" and sess.mode == "ave" and sess.dynamic_batch
    rng = np.random.default_rng(0)
    pred = sess.run(image=rng.random((3, 6, 320, 320), dtype=np.float32),
                    audio=rng.normal(size=(3, 32, 16, 16)).astype(np.float32))
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


def test_report_matches_an_independent_recomputation(quantized, small, model_dir, scalar_cv2):
    """PSNR / max / mean over the mouth box and the whole frame, recomputed
    from the report's held-out frames with the reference code and plain ORT."""
    out, report = quantized
    tpl, _, feats = small
    assert json.loads(Path(str(out) + ".json").read_text())["fidelity"]["mouth"]["max"] == report.fidelity["mouth"]["max"]
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
    result = stf.generate(speech, template=tpl, output=tmp_path / "int8.mp4", unet=out,
                          audio_encoder=model_dir / "audio_encoder.onnx", progress=False)
    assert result.output.is_file() and result.frames > 40


@pytest.mark.slow
def test_search_until_the_target_holds(small, model_dir, tmp_path):
    """Below the target, every block's sensitivity is measured and the most
    sensitive ones go back to fp32; the report says whether the target held."""
    tpl, _, feats = small
    report = stf.quantize(model_dir / "unet_328.onnx", tmp_path / "u8.onnx", template=tpl, features=feats,
                          tool="onnxruntime", methods=("MinMax",), target_psnr=60.0, calibration=3, validation=2,
                          heldout=3)
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
    cmd = [sys.executable, "-m", "synctalk_fast", "quantize", "--model", str(model_dir / "unet_328.onnx"),
           "--template", str(tpl), "--features", str(tmp_path / "feats.npy"), "-o", str(out),
           "--methods", "MinMax", "--target-psnr", "0", "--calibration", "3", "--validation", "1", "--heldout", "2",
           "--report", str(tmp_path / "r.json")]
    run = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=600, env=env)
    assert run.returncode == 0, run.stderr
    assert "mouth  PSNR" in run.stdout and "x (batch" in run.stdout
    assert "note: only ONNX Runtime's int8 was tried: NNCF int8 needs the openvino and nncf packages" in run.stdout
    assert "* onnxruntime int8" in run.stdout and "nncf int8" not in run.stdout
    assert json.loads((tmp_path / "r.json").read_text())["output"] == str(out) and out.is_file()
    bad = subprocess.run(cmd[:5] + [str(model_dir / "audio_encoder.onnx")] + cmd[6:], capture_output=True, text=True,
                         cwd=tmp_path, timeout=300)
    assert bad.returncode == 2 and "audio encoder" in bad.stderr and "Traceback" not in bad.stderr


# --- opset < 13 exports (torch.onnx.export at opset 11) and tool failures ---------------

TRAINED = DATA / "models" / "face_unet.pth"
FEATURES = DATA / "features" / "sanders_ave.bin"
needs_trained = pytest.mark.skipif(not (TRAINED.is_file() and FEATURES.is_file() and TEMPLATE.is_dir()),
                                   reason=f"no trained U-Net / features / template under {DATA}")


def _dequantize_scales(path) -> list[int]:
    """Element counts of the scales of every DequantizeLinear of a weight (an initializer)."""
    graph = onnx.load(str(path)).graph
    inits = {t.name: t for t in graph.initializer}
    return [int(np.prod(inits[n.input[1]].dims)) for n in graph.node
            if n.op_type == "DequantizeLinear" and n.input[0] in inits and n.input[1] in inits]


def _opset(path) -> int:
    return next(o.version for o in onnx.load(str(path)).opset_import if o.domain in ("", "ai.onnx"))


@pytest.fixture(scope="module")
def opset11(tmp_path_factory):
    """The trained U-Net as SyncTalk_2D users export it: torch.onnx.export at
    opset 11 (TorchScript exporter), dynamic batch axes."""
    torch = pytest.importorskip("torch")
    if not (TRAINED.is_file() and FEATURES.is_file() and TEMPLATE.is_dir()):
        pytest.skip(f"no trained U-Net / features / template under {DATA}")
    from synctalk_fast.reference import torch_nets

    net = torch_nets.load_numpy_state(torch_nets.UNet("ave"), models.load_state_dict(TRAINED))
    path = tmp_path_factory.mktemp("opset11") / "unet_328.onnx"
    batch = {0: "batch"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(net, (torch.zeros(1, 6, 320, 320), torch.zeros(1, 32, 16, 16)), str(path),
                          opset_version=11, input_names=["input", "audio"], output_names=["output"],
                          dynamic_axes={"input": batch, "audio": batch, "output": batch}, dynamo=False)
    assert _opset(path) == 11
    return path


@pytest.fixture(scope="module")
def opset11_int8(opset11):
    before = opset11.read_bytes()
    out = opset11.with_name("unet_int8.onnx")
    report = stf.quantize(opset11, out, template=TEMPLATE, features=FEATURES, tool="onnxruntime", methods=("MinMax",),
                          target_psnr=None, calibration=2, validation=1, heldout=1)
    assert opset11.read_bytes() == before  # the user's model is read, never written
    return out, report


@needs_trained
def test_opset11_export_is_converted_and_quantized_per_channel(opset11_int8):
    out, report = opset11_int8
    assert sorted(p.name for p in out.parent.iterdir()) == ["unet_328.onnx", "unet_int8.onnx", "unet_int8.onnx.json"]
    assert any("opset 11 converted to 13" in n for n in report.notes)
    assert _opset(out) == 13
    scales = _dequantize_scales(out)
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
    with caplog.at_level(logging.WARNING, logger="synctalk_fast.quantization"):
        report = stf.quantize(opset11, out, template=TEMPLATE, features=FEATURES, tool="onnxruntime",
                              methods=("MinMax",), target_psnr=None, calibration=2, validation=1, heldout=1)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and "per tensor" in warned[0] and "No adapter for op Resize from version 11" in warned[0]
    assert any("quantized per tensor" in n for n in report.notes)
    assert _opset(out) == 11 and all(s == 1 for s in _dequantize_scales(out))
    assert 20.0 <= report.fidelity["mouth"]["psnr"] < 60.0
    assert models.load_session(out).kind == "unet"


def _failing_quantizer(monkeypatch, *, final_only: bool):
    """ONNX Runtime's quantize_static raising: on every call, or (``final_only``)
    only when it writes its final model, after writing part of it; the search's
    candidates before then are copies of the fp32 model (no time spent quantizing)."""
    import onnxruntime.quantization as ortq

    def quantize_static(model_input, model_output, *args, calibration_cache_path=None, **kwargs):
        if final_only and Path(model_output).name == "candidate.onnx":
            shutil.copyfile(model_input, model_output)
            return
        if final_only:
            Path(model_output).write_bytes(b"\x08\x07partial")
        raise RuntimeError("[ONNXRuntimeError] : 1 : FAIL : boom\n  in the quantizer")

    monkeypatch.setattr(ortq, "quantize_static", quantize_static)


def test_quantizer_failure_is_a_one_line_model_error_and_writes_nothing(small, model_dir, tmp_path, monkeypatch):
    _, _, feats = small
    folder = tmp_path / "out"
    folder.mkdir()
    out = folder / "u8.onnx"
    _failing_quantizer(monkeypatch, final_only=True)  # the output's write fails half-way
    with pytest.raises(stf.errors.ModelError) as info:
        stf.quantize(model_dir / "unet_328.onnx", out, template=small[0], features=feats, tool="onnxruntime",
                     methods=("MinMax",), target_psnr=None, calibration=2, validation=1, heldout=1)
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(model_dir / "unet_328.onnx") + ": ")
    assert "ONNX Runtime's quantizer" in message
    assert "RuntimeError: [ONNXRuntimeError] : 1 : FAIL : boom in the quantizer" in message
    assert isinstance(info.value, ValueError)
    assert list(folder.iterdir()) == []  # no model, no report, no temporary file


@needs_trained
def test_cli_quantizer_failure_exits_2_with_one_line(opset11, tmp_path, monkeypatch, capsys):
    from synctalk_fast import cli

    _failing_quantizer(monkeypatch, final_only=False)
    out = tmp_path / "u8.onnx"
    rc = cli.main(["quantize", "--model", str(opset11), "--template", str(TEMPLATE), "--features", str(FEATURES),
                   "-o", str(out), "--methods", "MinMax", "--target-psnr", "0", "--calibration", "2",
                   "--validation", "1", "--heldout", "1", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2
    assert len(err.splitlines()) == 1 and err.startswith(f"synctalk-fast: error: {opset11}: int8 quantization failed")
    assert "boom" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


# --- the choice between candidates (ONNX Runtime's and NNCF's int8) ---------------------


def _row(seconds: float, psnr: float, *, int8: bool = True, runtime: str = "openvino", precision: str = "bf16"):
    """A candidate as QuantizeReport.candidates holds it (the fields the choice reads, and the table's)."""
    return {"tool": None, "runtime": runtime, "precision": precision, "int8": int8, "seconds": seconds,
            "speedup": 0.075 / seconds, "mouth": {"psnr": psnr, "max": 12, "mean": 0.5, "pixels": 1000},
            "float_blocks": ["outc"] if int8 else [], "met": True}


def _fake_candidates() -> dict:
    return {FP32: _row(0.075, math.inf, int8=False, runtime="onnxruntime", precision="fp32"),
            BF16: _row(0.030, 55.0, int8=False),  # the fastest and the closest, but no int8: never written
            "onnxruntime int8": _row(0.054, 41.0, runtime="onnxruntime", precision="fp32"),
            "nncf int8": _row(0.036, 40.5)}


def test_choose_candidate_is_the_fastest_int8_model_reaching_the_target():
    c = _fake_candidates()
    assert choose_candidate(c, 40.0) == "nncf int8"
    assert choose_candidate(c, 40.8) == "onnxruntime int8"  # only the slower one reaches it
    assert choose_candidate(c, 45.0) == "onnxruntime int8"  # none does: the closest to fp32
    assert choose_candidate(c, None) == "nncf int8"  # no target: the fastest
    c["nncf int8"]["mouth"]["psnr"] = 41.0
    assert choose_candidate(c, 45.0) == "nncf int8"  # as close: the faster
    with pytest.raises(ValueError, match="no int8 candidate"):
        choose_candidate({FP32: c[FP32], BF16: c[BF16]}, 40.0)


def test_report_says_when_bf16_alone_is_faster_and_closer():
    c = _fake_candidates()
    line = bf16_advice(c, "nncf int8", "face.onnx")
    assert line is not None and "\n" not in line and "bf16" in line and "face.onnx" in line
    assert "30.0 vs 36.0 ms/frame" in line and "55.0 vs 40.5 dB" in line
    assert bf16_advice({**c, BF16: _row(0.040, 55.0, int8=False)}, "nncf int8", "m") is None  # slower
    assert bf16_advice({**c, BF16: _row(0.030, 40.0, int8=False)}, "nncf int8", "m") is None  # not closer
    assert bf16_advice({k: v for k, v in c.items() if k != BF16}, "nncf int8", "m") is None  # no native bf16
    mouth = c["nncf int8"]["mouth"]
    report = QuantizeReport(
        model="face.onnx", output="u8.onnx", tool="nncf", runtime="openvino", precision="bf16", method="MeanMinMax",
        methods={"MeanMinMax": 33.7}, target_psnr=40.0, met=True, fp32_blocks=["outc"], int8_blocks=["inc"],
        sensitivity={}, frames={"calibration": [1], "validation": [2], "heldout": [3]},
        feature_rows={"calibration": [1], "validation": [2], "heldout": [3]},
        fidelity={"mouth": mouth, "frame": mouth, "unet": mouth},
        speed={"fp32": 0.075, "int8": 0.036, "speedup": 0.075 / 0.036, "batch": 4, "threads": 2, "frames": 1},
        candidates=c, seconds=1.0, notes=[line])
    text = str(report).splitlines()
    table = {name: [ln for ln in text if ln[4:].startswith(f"{name} ")] for name in c}
    assert all(len(lines) == 1 for lines in table.values())  # a row for every candidate ...
    assert [name for name, lines in table.items() if lines[0].startswith("  * ")] == ["nncf int8"]  # ... one marked
    assert all(s in table["nncf int8"][0] for s in ("openvino", "bf16", " 36.0 ", "2.08x", "40.50 dB"))
    assert "run it with: Pipeline(unet='u8.onnx', runtime='openvino', precision='bf16')" in text
    assert f"note: {line}" in text
    assert json.loads(json.dumps(report.to_dict()))["candidates"][FP32]["mouth"]["psnr"] == "inf"


def test_tool_choice(small, model_dir, tmp_path, monkeypatch):
    """An unknown tool, and tool="nncf" without NNCF, are refused before any work
    ("auto" then quantizes with ONNX Runtime alone and says so: test_cli_quantize)."""
    _, _, feats = small
    args = dict(template=small[0], features=feats, methods=("MinMax",), target_psnr=None, calibration=2,
                validation=1, heldout=2)
    with pytest.raises(ValueError, match="unknown tool 'tflite'"):
        stf.quantize(model_dir / "unet_328.onnx", tmp_path / "u8.onnx", tool="tflite", **args)
    problem = "NNCF int8 needs the openvino and nncf packages (nncf is missing): pip install 'synctalk-fast[openvino]'"
    monkeypatch.setattr(quantization, "_nncf_problem", lambda: problem)
    with pytest.raises(ValueError, match=r"nncf is missing"):
        stf.quantize(model_dir / "unet_328.onnx", tmp_path / "u8.onnx", tool="nncf", **args)
    assert list(tmp_path.iterdir()) == []
    assert quantization._tools("auto", notes := []) == ["onnxruntime"] and notes == [
        f"only ONNX Runtime's int8 was tried: {problem}"]


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
            inits.extend([numpy_helper.from_array(np.asarray(scale, np.float32), f"s_{name}"),
                          numpy_helper.from_array(np.asarray(zero), f"z_{name}")])
            axis = [helper.make_attribute("axis", 0)] if np.ndim(scale) else []
            nodes.append(helper.make_node("QuantizeLinear", [x, f"s_{name}", f"z_{name}"], [f"q_{name}"],
                                          name=f"QuantizeLinear_{name}"))
            nodes.append(helper.make_node("DequantizeLinear", [f"q_{name}", f"s_{name}", f"z_{name}"], [f"dq_{name}"],
                                          name=f"DequantizeLinear_{name}"))
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
        g = helper.make_graph(nodes, "two", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 8, 8])],
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, 4, 8, 8])], inits)
        return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])

    fp, q8 = path / "float.onnx", path / "qdq.onnx"
    onnx.save(graph(False), str(fp))
    onnx.save(graph(True), str(q8))
    return fp, q8


def _ort(model, x) -> np.ndarray:
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def test_blocks_back_in_floating_point_and_folded_weights(tmp_path):
    from synctalk_fast.quantization import _float_blocks, _fold_weight_quantizers

    fp, q8 = _qdq_model(tmp_path)
    qdq = onnx.load(str(q8))
    x = np.random.default_rng(1).uniform(0, 1, (1, 2, 8, 8)).astype(np.float32)
    ref = _ort(fp, x)
    assert not np.array_equal(_ort(qdq, x), ref)  # int8 changes the result

    b_float = _float_blocks(qdq, ["b"])
    convs = {n.name.split("/")[0]: n for n in b_float.graph.node if n.op_type == "Conv"}
    assert list(convs["b"].input) == ["a_relu", "b.w"]  # reads the float activation and weight
    assert list(convs["a"].input) == ["dq_a_in", "dq_a_w"]  # block a untouched
    assert {n.name for n in b_float.graph.node if n.op_type == "QuantizeLinear"} == {"QuantizeLinear_a_in",
                                                                                     "QuantizeLinear_a_w"}
    assert {t.name for t in b_float.graph.initializer} == {"a.w", "b.w", "s_a_in", "z_a_in", "s_a_w", "z_a_w"}
    assert len(qdq.graph.node) == 12  # the original is not changed
    all_float = _float_blocks(qdq, ["a", "b"])
    assert not any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in all_float.graph.node)
    assert np.array_equal(_ort(all_float, x), ref)

    before = _ort(qdq, x)
    _fold_weight_quantizers(qdq)
    inits = {t.name: t for t in qdq.graph.initializer}
    assert not any(n.op_type == "QuantizeLinear" and n.input[0] in inits for n in qdq.graph.node)
    assert inits["q_a_w"].data_type == onnx.TensorProto.INT8 and "a.w" not in inits  # int8 weights only
    assert np.array_equal(_ort(qdq, x), before)  # the same model


# --- NNCF's int8 on the trained face U-Net ------------------------------------------------

needs_nncf = pytest.mark.skipif(quantization._nncf_problem() is not None, reason="no openvino / nncf")


@pytest.fixture(scope="module")
def face_onnx(tmp_path_factory):
    if not (TRAINED.is_file() and FEATURES.is_file() and TEMPLATE.is_dir()):
        pytest.skip(f"no trained U-Net / features / template under {DATA}")
    path = tmp_path_factory.mktemp("face") / "face_unet.onnx"
    models.export_onnx(models.load_state_dict(TRAINED), path)
    return path


@pytest.fixture(scope="module")
def face_nncf(face_onnx):
    """NNCF int8 of the trained U-Net, outc in floating point, every other block int8."""
    out = face_onnx.with_name("face_nncf.onnx")
    report = stf.quantize(face_onnx, out, template=TEMPLATE, features=FEATURES, tool="nncf", target_psnr=None,
                          keep_fp32=["outc"], calibration=4, validation=2, heldout=4)
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
        stf.quantize(model_dir / "unet_328.onnx", out, template=small[0], features=small[2], tool="nncf",
                     target_psnr=None, calibration=2, validation=1, heldout=1)
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
    report = stf.quantize(face_onnx, tmp_path / "u8.onnx", template=TEMPLATE, features=FEATURES, tool="nncf",
                          target_psnr=40.0, keep_fp32=[b for b in blocks if b not in tried], calibration=4,
                          validation=2, heldout=4)
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
    report = stf.quantize(face_onnx, out, template=TEMPLATE, features=FEATURES, methods=("MinMax",),
                          target_psnr=None, calibration=4, validation=2, heldout=8)
    assert {"onnxruntime int8", "nncf int8"} <= set(report.candidates)
    chosen = choose_candidate(report.candidates, None)
    assert report.tool == report.candidates[chosen]["tool"] and report.runtime == report.candidates[chosen]["runtime"]
    assert report.speed["int8"] == report.candidates[chosen]["seconds"]
    assert report.fidelity["mouth"] == report.candidates[chosen]["mouth"]
    rows = stf.load_features(FEATURES)[0][100:102]
    pipe = stf.Pipeline(out, runtime=report.runtime, precision=report.precision, providers=["cpu"], sessions=1)
    assert len(list(pipe.frames(rows, TEMPLATE))) == 2
