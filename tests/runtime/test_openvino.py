"""OpenVINO as a second runtime: fp32 as exact as ONNX Runtime, bf16 where
the CPU has it (refused where it has not), streams equal to offline at the
same precision, and runtime="auto" measured once and cached."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("openvino")

from helpers import DATA, TEMPLATE, needs_data  # noqa: E402

import synctalk_fast as stf  # noqa: E402
from synctalk_fast import cli, models  # noqa: E402
from synctalk_fast.demo import synthetic_speech  # noqa: E402
from synctalk_fast.models import choice  # noqa: E402
from synctalk_fast.quantization import fidelity  # noqa: E402
from synctalk_fast.runtime import openvino as ov_runtime  # noqa: E402

HAS_BF16 = ov_runtime.precision_problem("bf16") is None
needs_bf16 = pytest.mark.skipif(not HAS_BF16, reason="this CPU has no avx512_bf16 / AMX")
FACE_UNET = DATA / "models" / "face_unet.pth"
FEATURES = DATA / "features" / "sanders_ave.bin"


@pytest.fixture(scope="module")
def inputs():
    rng = np.random.default_rng(3)
    return rng.uniform(0, 1, (4, 6, 320, 320)).astype(np.float32), rng.uniform(0, 1, (4, 32, 16, 16)).astype(np.float32)


@pytest.fixture(scope="module")
def tpl(make_template):
    return stf.Template(make_template(frames=8))


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SYNCTALK_FAST_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_fp32_matches_onnx_runtime_and_the_engine_reports_openvino(model_dir, inputs):
    ort = stf.Engine(model_dir / "unet_328.onnx", sessions=1, threads=2)
    ov = stf.Engine(model_dir / "unet_328.onnx", runtime="openvino", sessions=1, threads=2)
    assert ov.describe()["runtime"] == "openvino" and ov.providers == ["CPU"] and ov.precision == "fp32"
    image, audio = inputs
    diff = np.abs(ov.infer(image, audio) - ort.infer(image, audio)).max() * 255
    assert diff < 1.0  # within a level of the exact path


def test_the_audio_encoder_runs_on_openvino_too(model_dir):
    speech = synthetic_speech(1.0)
    ort = stf.Engine(audio_encoder=model_dir / "audio_encoder.onnx").audio_features(speech)
    ov = stf.Engine(audio_encoder=model_dir / "audio_encoder.onnx", runtime="openvino").audio_features(speech)
    np.testing.assert_allclose(ov, ort, atol=1e-3)


@needs_bf16
def test_bf16_is_batch_invariant_and_repeatable(model_dir, inputs):
    eng = stf.Engine(model_dir / "unet_328.onnx", runtime="openvino", precision="bf16", sessions=1, threads=2)
    image, audio = inputs
    four = eng.infer(image, audio)
    ones = np.concatenate([eng.infer(image[i : i + 1], audio[i : i + 1]) for i in range(4)])
    twos = np.concatenate([eng.infer(image[i : i + 2], audio[i : i + 2]) for i in (0, 2)])
    np.testing.assert_array_equal(four, ones)
    np.testing.assert_array_equal(four, twos)
    np.testing.assert_array_equal(four, eng.infer(image, audio))


def test_a_precision_the_cpu_cannot_run_is_one_line_never_emulated(model_dir, monkeypatch):
    monkeypatch.setattr(ov_runtime, "capabilities", lambda device="CPU": ["FP32", "INT8"])
    with pytest.raises(ValueError) as info:
        stf.Engine(model_dir / "unet_328.onnx", runtime="openvino", precision="bf16")
    message = str(info.value)
    assert "precision 'bf16' needs a CPU with avx512_bf16 or AMX" in message and "\n" not in message
    monkeypatch.setattr(ov_runtime, "capabilities", lambda device="CPU": ["FP32", "FP16", "BF16"])
    monkeypatch.setattr(ov_runtime.platform, "machine", lambda: "x86_64")
    with pytest.raises(ValueError, match="precision 'fp16' needs a device with native fp16"):
        stf.Engine(model_dir / "unet_328.onnx", runtime="openvino", precision="fp16")
    with pytest.raises(ValueError, match=r"bf16 runs on runtime 'openvino'"):
        stf.Engine(model_dir / "unet_328.onnx", precision="bf16")


@needs_bf16
@pytest.mark.slow
def test_streamed_frames_equal_offline_frames_at_bf16(model_dir, tpl):
    pipe = stf.Pipeline(
        model_dir / "unet_328.onnx",
        audio_encoder=model_dir / "audio_encoder.onnx",
        runtime="openvino",
        precision="bf16",
        sessions=2,
        threads=1,
    )
    speech = synthetic_speech(1.0)
    feats = pipe.audio_features(speech)
    want = list(pipe.frames(feats, tpl))
    rng = np.random.default_rng(1)
    got = []
    with stf.Stream(pipe, template=tpl) as stream:
        i = 0
        while i < len(speech):
            n = int(rng.integers(100, 4000))
            stream.push_audio(speech[i : i + n], sample_rate=16000)
            i += n
            got += list(stream.frames())
        stream.flush()
        got += list(stream.frames())
    assert len(got) == len(want)
    assert all(np.array_equal(f.image, w) for f, w in zip(got, want))


def test_compiled_models_are_cached_on_disk(model_dir, inputs, cache):
    eng = stf.Engine(model_dir / "unet_328.onnx", runtime="openvino", sessions=1, threads=2)
    eng.infer(*inputs)
    assert any((cache / "openvino").iterdir())


@needs_data
@needs_bf16
@pytest.mark.slow
def test_bf16_fidelity_on_the_face_network(tmp_path):
    """bf16 against ONNX Runtime fp32 on the briefly trained face U-Net with
    the template's own speech features: mouth region of 24 frames."""
    unet = tmp_path / "face.onnx"
    models.export_onnx(models.load_state_dict(FACE_UNET), unet)
    feats = stf.load_features(FEATURES)[0][300:324]
    tpl = stf.Template(TEMPLATE)
    frames = {}
    for runtime, precision in (("onnxruntime", "fp32"), ("openvino", "bf16")):
        sink = stf.sinks.MemorySink()
        stf.Pipeline(unet, runtime=runtime, precision=precision).generate(
            features=feats, template=tpl, output=sink, start=300, progress=False
        )
        frames[precision] = sink.frames
    boxes = [tpl.box(300 + k) for k in range(len(feats))]
    mouth = fidelity(frames["fp32"], frames["bf16"], boxes=boxes)
    assert mouth["psnr"] >= 45.0 and mouth["mean"] < 0.5, mouth


def test_auto_measures_once_caches_and_is_never_slower_than_onnx_runtime_fp32(model_dir, cache, monkeypatch):
    calls = []

    def fake(path, runtime, precision):
        calls.append((runtime, precision))
        return {"onnxruntime": 10.0, "openvino": 20.0 if precision == "fp32" else 12.0}[runtime]

    monkeypatch.setattr(choice, "_ms_per_frame", fake)
    unet = model_dir / "unet_328.onnx"
    assert choice.choose_runtime(unet) == ("onnxruntime", "fp32")
    assert set(calls) == {("onnxruntime", "fp32"), ("openvino", "fp32")}
    calls.clear()
    eng = stf.Engine(unet, runtime="auto", sessions=1)
    assert (eng.runtime, eng.precision, calls) == ("onnxruntime", "fp32", [])  # cached: nothing measured
    record = json.loads(choice.choice_file().read_text())
    [(key, entry)] = record.items()
    assert "|fp32|" in key and entry["ms_per_frame"] == {"onnxruntime:fp32": 10.0, "openvino:fp32": 20.0}
    if HAS_BF16:
        # bf16 is faster than ONNX Runtime fp32 here: chosen
        monkeypatch.setattr(choice, "_ms_per_frame", lambda p, r, q: {"onnxruntime": 10.0, "openvino": 5.0}[r])
        eng = stf.Engine(unet, runtime="auto", precision="bf16", sessions=1)
        assert (eng.runtime, eng.precision) == ("openvino", "bf16")


@pytest.mark.slow
def test_auto_really_measures(model_dir, cache):
    runtime, precision = choice.choose_runtime(model_dir / "unet_328.onnx")
    assert precision == "fp32" and runtime in ("onnxruntime", "openvino")
    entry = next(iter(json.loads(choice.choice_file().read_text()).values()))
    assert set(entry["ms_per_frame"]) == {"onnxruntime:fp32", "openvino:fp32"}
    assert all(v > 0 for v in entry["ms_per_frame"].values())


def test_cli_runs_openvino_and_refuses_bf16_on_onnx_runtime(model_dir, tmp_path, capsys, make_template):
    import soundfile as sf

    speech = tmp_path / "s.wav"
    sf.write(speech, synthetic_speech(0.6), 16000, subtype="PCM_16")
    template = make_template(frames=4)
    base = [
        "generate",
        "--model",
        str(model_dir / "unet_328.onnx"),
        "--audio-encoder",
        str(model_dir / "audio_encoder.onnx"),
        "--audio",
        str(speech),
        "--template",
        str(template),
        "-q",
    ]
    precision = "bf16" if HAS_BF16 else "fp32"
    rc = cli.main(
        base
        + [
            "-o",
            str(tmp_path / "f"),
            "--runtime",
            "openvino",
            "--precision",
            precision,
            "--json",
            str(tmp_path / "r.json"),
        ]
    )
    assert rc == 0
    record = json.loads((tmp_path / "r.json").read_text())
    assert (record["runtime"], record["provider"], record["precision"]) == ("openvino", "CPU", precision)
    assert cli.main(base + ["-o", str(tmp_path / "g"), "-precision", "bf16"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bf16 runs on runtime 'openvino'" in err


def test_info_reports_precisions_and_runtimes():
    info = stf.config()
    assert set(info["cpu"]) >= {"avx512_bf16", "amx", "arm_fp16"}
    assert info["runtimes"]["openvino"]["cpu_precisions"][0] == "fp32"
    assert ("bf16" in info["runtimes"]["openvino"]["cpu_precisions"]) == HAS_BF16
