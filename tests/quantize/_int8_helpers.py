"""Shared by the int8 tests: where the trained U-Net is, and U-Nets exported
as SyncTalk_2D users export them (opset 11, the TorchScript exporter)."""

from __future__ import annotations

import warnings
from pathlib import Path

import onnx
import pytest
from helpers import DATA, TEMPLATE

TRAINED = DATA / "models" / "face_unet.pth"
FEATURES = DATA / "features" / "sanders_ave.bin"
HAVE_TRAINED = TRAINED.is_file() and FEATURES.is_file() and TEMPLATE.is_dir()
needs_trained = pytest.mark.skipif(not HAVE_TRAINED, reason=f"no trained U-Net / features / template under {DATA}")


def opset_of(path: Path) -> int:
    """The default-domain opset of an ONNX file."""
    return next(o.version for o in onnx.load(str(path)).opset_import if o.domain in ("", "ai.onnx"))


def export_legacy_opset11(state: dict, path: Path) -> Path:
    """A U-Net state dict exported as SyncTalk_2D's and the Go ports' scripts
    do: the PyTorch re-statement through ``torch.onnx.export(...,
    opset_version=11, dynamo=False)`` (the TorchScript exporter), dynamic batch axes."""
    torch = pytest.importorskip("torch")
    from synctalk_fast.reference import torch_nets

    net = torch_nets.load_numpy_state(torch_nets.UNet("ave"), state)
    batch = {0: "batch"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            net,
            (torch.zeros(1, 6, 320, 320), torch.zeros(1, 32, 16, 16)),
            str(path),
            opset_version=11,
            input_names=["input", "audio"],
            output_names=["output"],
            dynamic_axes={"input": batch, "audio": batch, "output": batch},
            dynamo=False,
        )
    assert opset_of(path) == 11
    return path


def dequantize_scales(path: Path) -> list[int]:
    """Element counts of the scales of every DequantizeLinear of a weight (an initializer)."""
    import numpy as np

    graph = onnx.load(str(path)).graph
    inits = {t.name: t for t in graph.initializer}
    return [
        int(np.prod(inits[n.input[1]].dims))
        for n in graph.node
        if n.op_type == "DequantizeLinear" and n.input[0] in inits and n.input[1] in inits
    ]


def failing_quantizer(monkeypatch: pytest.MonkeyPatch, *, final_only: bool) -> None:
    """ONNX Runtime's quantize_static raising: on every call, or (``final_only``)
    only when it writes its final model, after writing part of it; the search's
    candidates before then are copies of the fp32 model (no time spent quantizing)."""
    import shutil

    import onnxruntime.quantization as ortq

    def quantize_static(model_input, model_output, *args, calibration_cache_path=None, **kwargs):
        if final_only and Path(model_output).name == "candidate.onnx":
            shutil.copyfile(model_input, model_output)
            return
        if final_only:
            Path(model_output).write_bytes(b"\x08\x07partial")
        raise RuntimeError("[ONNXRuntimeError] : 1 : FAIL : boom\n  in the quantizer")

    monkeypatch.setattr(ortq, "quantize_static", quantize_static)
