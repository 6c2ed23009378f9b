"""int8 U-Net calibrated on the template: the model, the report, the search."""

from __future__ import annotations

import json
import logging
import math
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
from synctalk_fast.quantization import fidelity, name_blocks, search_fp32_blocks
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
                             audio_encoder=model_dir / "audio_encoder.onnx", methods=("MinMax",), target_psnr=None,
                             calibration=4, validation=2, heldout=4, keep_fp32=["outc"])
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
                             methods=("MinMax",), target_psnr=60.0, calibration=3, validation=2, heldout=3)
    assert len(report.sensitivity) == 33
    ranking = sorted(report.sensitivity, key=report.sensitivity.get)
    assert sorted(report.fp32_blocks, key=ranking.index) == ranking[: len(report.fp32_blocks)]
    assert report.fp32_blocks  # random weights amplify int8 noise: 60 dB needs fp32 blocks
    assert report.met == (report.fidelity["mouth"]["psnr"] >= 60.0)


def test_cli_quantize(small, model_dir, tmp_path):
    tpl, _, feats = small
    np.save(tmp_path / "feats.npy", feats)
    out = tmp_path / "u8.onnx"
    cmd = [sys.executable, "-m", "synctalk_fast", "quantize", "--model", str(model_dir / "unet_328.onnx"),
           "--template", str(tpl), "--features", str(tmp_path / "feats.npy"), "-o", str(out),
           "--methods", "MinMax", "--target-psnr", "0", "--calibration", "3", "--validation", "1", "--heldout", "2",
           "--report", str(tmp_path / "r.json")]
    run = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert run.returncode == 0, run.stderr
    assert "mouth  PSNR" in run.stdout and "x (batch" in run.stdout
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
    report = stf.quantize(opset11, out, template=TEMPLATE, features=FEATURES, methods=("MinMax",), target_psnr=None,
                          calibration=2, validation=1, heldout=1)
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
        report = stf.quantize(opset11, out, template=TEMPLATE, features=FEATURES, methods=("MinMax",),
                              target_psnr=None, calibration=2, validation=1, heldout=1)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and "per tensor" in warned[0] and "No adapter for op Resize from version 11" in warned[0]
    assert any("quantized per tensor" in n for n in report.notes)
    assert _opset(out) == 11 and all(s == 1 for s in _dequantize_scales(out))
    assert 20.0 <= report.fidelity["mouth"]["psnr"] < 60.0
    assert models.load_session(out).kind == "unet"


def _failing_quantizer(monkeypatch, *, final_only: bool):
    """ONNX Runtime's quantize_static raising: on every call, or (``final_only``)
    only when it writes the output, after writing part of it; the candidates
    before then are copies of the fp32 model (no time spent quantizing)."""
    import onnxruntime.quantization as ortq

    def quantize_static(model_input, model_output, *args, calibration_cache_path=None, **kwargs):
        if final_only and not str(model_output).endswith(".part"):
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
        stf.quantize(model_dir / "unet_328.onnx", out, template=small[0], features=feats, methods=("MinMax",),
                     target_psnr=None, calibration=2, validation=1, heldout=1)
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
