"""Networks: ONNX graphs built without torch vs a PyTorch re-statement (numerics §5)."""

from __future__ import annotations

import functools
import json
import logging
import subprocess
import sys
import tempfile

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from helpers import MANIFEST, needs_manifest  # noqa: E402

from synctalk_fast import models  # noqa: E402
from synctalk_fast.models import networks  # noqa: E402
from synctalk_fast.reference import torch_nets as tr  # noqa: E402

MODES = ["ave", "hubert", "wenet"]
TOL = 1e-4  # ONNX Runtime (float32) vs torch
# The torch oracle runs in float64: the error measured is then the ONNX graph's
# own float32 rounding. (torch in float32 carries about as much of its own, and
# the two do not cancel; ERRORS records it beside ours for comparison.)
MANIFEST_NAMES = {
    "unet_328_ave": ("unet", "ave"),
    "unet_328_hubert": ("unet", "hubert"),
    "unet_328_wenet": ("unet", "wenet"),
    "audio_encoder": ("audio_encoder", "ave"),
}
ERRORS: dict[str, float] = {}  # measured max errors, printed at the end of the module


def _unet_inputs(mode: str, n: int, seed: int = 0):
    """Like real inputs: smooth frames in 0..1 (random 20 x 20 colours, bicubic
    up to 320), the masked copy in channels 3-5, N(0, 1) audio features."""
    import cv2

    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 1, (n, 20, 20, 3)).astype(np.float32)
    real = np.stack([cv2.resize(c, (320, 320), interpolation=cv2.INTER_CUBIC) for c in coarse]).clip(0, 1)
    image = np.concatenate([real, real], axis=3).transpose(0, 3, 1, 2).copy()
    image[:, 3:, 5:310, 5:315] = 0.0
    return image, rng.normal(0, 1, (n, *networks.AUDIO_SHAPES[mode])).astype(np.float32)


def _mel_inputs(n: int, seed: int = 0):
    return np.clip(np.random.default_rng(seed).normal(-1, 1.5, (n, 1, 80, 16)), -4, 4).astype(np.float32)


def _torch_unet(mode: str, state):
    return tr.load_numpy_state(tr.UNet(mode), state)


def _torch_encoder(state):
    return tr.load_numpy_state(tr.AudioEncoder(), state, prefix="layers.")


def _torch64(net, *arrays):
    """Forward pass in float64 on a float64 copy of the module."""
    import copy

    with torch.no_grad():
        return copy.deepcopy(net).double()(*(torch.from_numpy(a).double() for a in arrays)).numpy()


def _torch32(net, *arrays):
    with torch.no_grad():
        return net(*(torch.from_numpy(a) for a in arrays)).numpy()


@functools.cache
def _unet_reference(mode: str):
    """Inputs (3 frames) and the float64 torch output for the seed-0 weights,
    computed once per mode: float64 convolutions are slow on a CPU."""
    state = models.random_state_dict("unet", mode=mode)
    image, audio = _unet_inputs(mode, 3, seed=3)
    net = _torch_unet(mode, state)
    return image, audio, _torch64(net, image, audio), _torch32(net, image, audio)


def _ort(model):
    import onnxruntime as ort

    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module", autouse=True)
def _report_errors():
    yield
    if ERRORS:
        print("\nmax abs error, ONNX Runtime vs torch: " + ", ".join(f"{k} {v:.2e}" for k, v in sorted(ERRORS.items())))


# --- the checkpoint layout --------------------------------------------------


@needs_manifest
@pytest.mark.parametrize("name", list(MANIFEST_NAMES))
def test_spec_equals_the_manifest(name):
    manifest = json.loads(MANIFEST.read_text())[name]["state_dict"]
    kind, mode = MANIFEST_NAMES[name]
    assert models.state_dict_spec(kind, mode=mode) == {k: tuple(v) for k, v in manifest.items()}


@pytest.mark.parametrize("mode", MODES)
def test_torch_restatement_has_the_checkpoint_keys(mode):
    want = {k: tuple(v.shape) for k, v in tr.UNet(mode).state_dict().items()}
    assert models.state_dict_spec("unet", mode=mode) == want
    enc = {k.removeprefix("layers."): tuple(v.shape) for k, v in tr.AudioEncoder().state_dict().items()}
    assert models.state_dict_spec("audio_encoder") == enc


# --- ONNX Runtime vs torch ---------------------------------------------------


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("mode", MODES)
def test_unet_matches_torch(mode, batch):
    state = models.random_state_dict("unet", mode=mode)
    image, audio, want, want32 = (a[:batch] for a in _unet_reference(mode))
    got = _ort(models.build_unet(state, mode=mode)).run(None, {"image": image, "audio": audio})[0]
    assert got.shape == want.shape == (batch, 3, 320, 320)
    err = float(np.abs(got - want).max())
    ERRORS[f"unet-{mode}-b{batch}"] = err
    ERRORS[f"(torch-f32) unet-{mode}-b{batch}"] = float(np.abs(want32 - want).max())
    assert err <= TOL


@pytest.mark.parametrize("batch", [1, 3])
def test_audio_encoder_matches_torch(batch):
    state = models.random_state_dict("audio_encoder")
    mel = _mel_inputs(batch, seed=batch)
    got = _ort(models.build_audio_encoder(state)).run(None, {"mel": mel})[0]
    want = _torch64(_torch_encoder(state), mel)
    assert got.shape == want.shape == (batch, 512)
    err = float(np.abs(got - want).max())
    ERRORS[f"encoder-b{batch}"] = err
    assert err <= TOL


def test_graphs_are_checked_with_a_current_opset_and_dynamic_batch():
    import onnx

    model = models.build_unet(models.random_state_dict("unet"), mode="ave")
    onnx.checker.check_model(model)
    assert model.opset_import[0].version == models.OPSET >= 17
    assert [i.name for i in model.graph.input] == ["image", "audio"] and model.graph.output[0].name == "output"
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert not any(n.op_type == "BatchNormalization" for n in model.graph.node)  # folded into the convs


# --- random weights ------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_random_weights_spread_outputs_and_use_the_audio(mode):
    state = models.random_state_dict("unet", mode=mode, seed=0)
    spec = models.state_dict_spec("unet", mode=mode)
    assert {k: v.shape for k, v in state.items()} == spec
    assert state["down1.maxpool_conv.0.double_conv.0.conv.1.num_batches_tracked"].dtype == np.int64
    again = models.random_state_dict("unet", mode=mode, seed=0)
    assert all(np.array_equal(state[k], again[k]) for k in state)
    assert not np.array_equal(
        state["outc.conv.weight"], models.random_state_dict("unet", mode=mode, seed=1)["outc.conv.weight"]
    )
    sess = _ort(models.build_unet(state, mode=mode))
    image, audio = _unet_inputs(mode, 2, seed=7)
    out = sess.run(None, {"image": image, "audio": audio})[0]
    assert 0.1 < out.std() and 0.3 < out.mean() < 0.7
    assert ((out < 0.02) | (out > 0.98)).mean() < 0.1  # not saturated
    out2 = sess.run(None, {"image": image, "audio": audio[::-1].copy()})[0]
    assert np.abs(out - out2).mean() * 255 > 2  # the audio changes the picture


# --- errors ---------------------------------------------------------------------


def test_missing_or_misshaped_key_is_named():
    state = models.random_state_dict("unet")
    broken = dict(state)
    del broken["up3.conv.double_conv.1.conv.4.running_var"]
    with pytest.raises(
        models.ModelError, match=r"missing 'up3.conv.double_conv.1.conv.4.running_var' \(expected shape \[64\]\)"
    ):
        models.build_unet(broken)
    broken = dict(state, **{"outc.conv.weight": np.zeros((3, 32, 1, 1), np.float32)})
    with pytest.raises(
        models.ModelError, match=r"'outc.conv.weight' has shape \[3, 32, 1, 1\], expected \[3, 16, 1, 1\]"
    ):
        models.check_state_dict(broken, kind="unet")
    with pytest.raises(models.ModelError, match="does not"):
        models.check_state_dict(dict(state, extra=np.zeros(1)), kind="unet")


def test_kind_and_mode_inference():
    assert models.infer_kind(models.random_state_dict("audio_encoder")) == "audio_encoder"
    assert models.infer_kind(models.random_state_dict("unet")) == "unet"
    assert models.infer_mode(models.random_state_dict("unet", mode="wenet")) == ("wenet", False)
    assert models.infer_mode(models.random_state_dict("unet", mode="hubert")) == ("ave", True)
    with pytest.raises(models.ModelError):
        models.infer_kind({"fc.weight": np.zeros(3)})


# --- checkpoints from torch.save, through the CLI -----------------------------


def _cli(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "synctalk_fast", *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=cwd or tempfile.gettempdir(),
    )


def test_export_cli_from_a_torch_checkpoint(tmp_path):
    state = models.random_state_dict("unet", mode="wenet")
    net = _torch_unet("wenet", state)
    ckpt = tmp_path / "wenet.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}, "epoch": 3}, ckpt)
    res = _cli("export", "--checkpoint", str(ckpt), "-o", str(tmp_path / "wenet.onnx"))
    assert res.returncode == 0, res.stderr
    assert "mode wenet" in res.stdout and "13,055,399 parameters" in res.stdout and "self-check" in res.stdout
    sess = models.load_session(tmp_path / "wenet.onnx")
    assert (sess.kind, sess.mode, sess.dynamic_batch) == ("unet", "wenet", True)
    image, audio, want, _ = _unet_reference("wenet")
    assert np.abs(sess.run(image=image, audio=audio) - want).max() <= TOL


def test_export_cli_encoder_with_prefix_and_errors(tmp_path):
    state = models.random_state_dict("audio_encoder")
    enc = _torch_encoder(state)
    ckpt = tmp_path / "enc.pth"
    torch.save({f"audio_encoder.{k.removeprefix('layers.')}": v for k, v in enc.state_dict().items()}, ckpt)
    res = _cli("export", "--checkpoint", str(ckpt), "--kind", "audio-encoder", "-o", str(tmp_path / "enc.onnx"))
    assert res.returncode == 0, res.stderr
    assert "audio encoder" in res.stdout and "embedding" in res.stdout
    mel = _mel_inputs(4)
    assert np.abs(models.load_session(tmp_path / "enc.onnx").run(mel=mel) - _torch64(enc, mel)).max() <= TOL
    # Wrong kind: a clear one-line error, no traceback, no output file.
    res = _cli("export", "--checkpoint", str(ckpt), "--kind", "unet", "-o", str(tmp_path / "bad.onnx"))
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines()[-1].startswith("synctalk-fast: error: checkpoint is missing")
    assert not (tmp_path / "bad.onnx").exists()
    res = _cli("export", "--checkpoint", str(tmp_path / "missing.pth"), "-o", str(tmp_path / "x.onnx"))
    assert res.returncode == 2 and "Traceback" not in res.stderr


def test_demo_models_cli(tmp_path):
    res = _cli("demo-models", "-o", str(tmp_path / "m"))
    assert res.returncode == 0, res.stderr
    unet, enc = (
        models.load_session(tmp_path / "m" / "unet_328.onnx"),
        models.load_session(tmp_path / "m" / "audio_encoder.onnx"),
    )
    assert (unet.kind, unet.mode, enc.kind) == ("unet", "ave", "audio_encoder")
    emb = enc.run(mel=_mel_inputs(3))
    assert emb.shape == (3, 512) and (emb >= 0).all()


# --- ONNX files from other exporters ------------------------------------------


def _legacy_export(mode: str, path, state):
    """What earlier tools produced: torch.onnx.export, static batch 1, opset 11."""
    image, audio = _unet_inputs(mode, 1)
    torch.onnx.export(
        _torch_unet(mode, state),
        (torch.from_numpy(image), torch.from_numpy(audio)),
        str(path),
        opset_version=11,
        input_names=["input", "audio"],
        output_names=["out"],
        dynamo=False,
    )


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")
def test_static_batch_export_becomes_dynamic(tmp_path):
    state = models.random_state_dict("unet", mode="ave")
    path = tmp_path / "unet_328.onnx"
    _legacy_export("ave", path, state)
    sess = models.load_session(path, providers=["CPUExecutionProvider"])
    assert (sess.kind, sess.mode, sess.dynamic_batch) == ("unet", "ave", True)
    assert sess.inputs == {"image": "input", "audio": "audio"}
    assert sess.model_path != path and sess.model_path.is_file()  # cached next to the original
    image, audio, want, _ = _unet_reference("ave")  # same weights as the exported module
    got = sess.run(image=image, audio=audio)
    assert got.shape == (3, 3, 320, 320)
    err = float(np.abs(got - want).max())
    ERRORS["legacy-export-b3"] = err
    assert err <= TOL
    assert models.load_session(path).model_path == sess.model_path  # the cached rewrite is reused


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")
def test_read_only_model_folder_uses_the_cache_dir(tmp_path, monkeypatch):
    from synctalk_fast.models import session as session_module

    state = models.random_state_dict("audio_encoder")
    folder = tmp_path / "ro"
    folder.mkdir()
    enc = _torch_encoder(state)
    torch.onnx.export(
        enc,
        (torch.from_numpy(_mel_inputs(1)),),
        str(folder / "enc.onnx"),
        opset_version=12,
        input_names=["mel_input"],
        output_names=["feat"],
        dynamo=False,
    )
    monkeypatch.setenv("SYNCTALK_FAST_CACHE", str(tmp_path / "cache"))
    real_write = session_module.write_atomic

    def write(target, data):  # the model's own folder refuses writes (root ignores chmod)
        if target.parent == folder:
            raise PermissionError(13, "Permission denied", str(target))
        return real_write(target, data)

    monkeypatch.setattr(session_module, "write_atomic", write)
    sess = models.load_session(folder / "enc.onnx")
    assert sess.dynamic_batch and sess.model_path.parent == tmp_path / "cache"
    assert sorted(p.name for p in folder.iterdir()) == ["enc.onnx"]
    mel = _mel_inputs(5, seed=2)
    assert np.abs(sess.run(mel=mel) - _torch64(enc, mel)).max() <= TOL
    assert models.load_session(folder / "enc.onnx").model_path == sess.model_path  # found in the cache


def _unbatchable_model(path):
    """U-Net-shaped inputs, but a Reshape to [3, 320, 320] pins the batch to 1."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = [
        helper.make_node("Slice", ["image", "starts", "ends", "axes"], ["rgb"]),
        helper.make_node("Reshape", ["rgb", "chw"], ["flat"]),
        helper.make_node("Unsqueeze", ["flat", "zero"], ["one"]),
        helper.make_node("ReduceMean", ["audio"], ["a"], axes=[1, 2, 3], keepdims=1),
        helper.make_node("Add", ["one", "a"], ["out"]),
    ]
    inits = [
        numpy_helper.from_array(np.array(v, np.int64), n)
        for n, v in [("starts", [0]), ("ends", [3]), ("axes", [1]), ("chw", [3, 320, 320]), ("zero", [0])]
    ]
    graph = helper.make_graph(
        nodes,
        "pinned",
        [
            helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 6, 320, 320]),
            helper.make_tensor_value_info("audio", TensorProto.FLOAT, [1, 32, 16, 16]),
        ],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 3, 320, 320])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))


def test_unbatchable_model_runs_one_at_a_time_and_says_so(tmp_path, caplog):
    path = tmp_path / "pinned.onnx"
    _unbatchable_model(path)
    with caplog.at_level(logging.WARNING, logger="synctalk_fast.models.session"):
        sess = models.load_session(path, providers=["CPUExecutionProvider"])
    assert not sess.dynamic_batch and sess.model_path == path
    assert sum("one item at a time" in r.message for r in caplog.records) == 1
    image, audio = _unet_inputs("ave", 3, seed=5)
    out = sess.run(image=image, audio=audio)
    assert out.shape == (3, 3, 320, 320)
    np.testing.assert_allclose(out, image[:, :3] + audio.mean(axis=(1, 2, 3), keepdims=True), rtol=1e-6, atol=1e-6)


def test_inputs_are_found_by_shape_not_name(tmp_path):
    import onnx

    model = models.build_unet(models.random_state_dict("unet", mode="hubert"), mode="hubert")
    for vi, name in zip(model.graph.input, ["x_0", "feat"]):
        for node in model.graph.node:
            node.input[:] = [name if i == vi.name else i for i in node.input]
        vi.name = name
    onnx.save(model, str(tmp_path / "renamed.onnx"))
    sess = models.load_session(tmp_path / "renamed.onnx")
    assert sess.inputs == {"image": "x_0", "audio": "feat"} and sess.mode == "hubert"


def test_not_a_synctalk_model(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 10])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])],
    )
    onnx.save(helper.make_model(graph), str(tmp_path / "relu.onnx"))
    with pytest.raises(models.ModelError, match="not a SyncTalk_2D model: inputs x \\[1, 10\\]"):
        models.load_session(tmp_path / "relu.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not onnx")
    with pytest.raises(models.ModelError, match="not an ONNX model"):
        models.load_session(tmp_path / "junk.onnx")
    with pytest.raises(models.ModelError, match="not found"):
        models.load_session(tmp_path / "nope.onnx")
