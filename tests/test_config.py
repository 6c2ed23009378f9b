"""show_config / synctalk-fast info: what a bug report needs."""

from __future__ import annotations

import io
import subprocess
import sys
import tempfile

import onnxruntime as ort

import synctalk_fast as stf


def test_config_reports_the_installation():
    info = stf.config()
    assert info["synctalk_fast"] == stf.__version__
    assert info["backend"] == stf.backend()
    assert info["onnxruntime"] == ort.__version__
    assert info["providers_available"] == ort.get_available_providers()
    assert info["providers_default"][-1] == "CPUExecutionProvider"
    assert info["encoders"]["libx264"] and info["encoders"]["aac"]
    assert info["numpy"] and info["opencv"] and info["av"]
    if stf.backend() == "cpp":
        assert {"compiler", "flags", "isa", "isa_builds"} <= set(info["core"])


def test_show_config_prints_every_key():
    buf = io.StringIO()
    info = stf.show_config(file=buf)
    text = buf.getvalue()
    for key in info:
        assert f"\n{key}:" in "\n" + text


def test_cli_info():
    # from outside the checkout, whose synctalk_fast (no compiled core) would shadow the install
    res = subprocess.run(
        [sys.executable, "-m", "synctalk_fast", "info"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tempfile.gettempdir(),
    )
    assert res.returncode == 0, res.stderr
    assert f"synctalk_fast: {stf.__version__}" in res.stdout
    assert f"backend: {stf.backend()}" in res.stdout and "providers_available: " in res.stdout


def test_info_probes_the_gpu_providers_and_names_side_by_side_builds(monkeypatch):
    import onnxruntime as ort

    from synctalk_fast.runtime import ort as ort_runtime

    info = stf.config()
    for name in ("CUDAExecutionProvider", "TensorrtExecutionProvider"):
        if name not in ort.get_available_providers():
            assert info["accelerators"][name] == "not in this onnxruntime build"
    assert ort_runtime.probe("CPUExecutionProvider") is None
    assert "onnxruntime_warning" not in info or len(info["onnxruntime_builds"]) > 1
    monkeypatch.setattr(ort_runtime, "installed_builds", lambda: ["onnxruntime", "onnxruntime-gpu"])
    conflict = ort_runtime.builds_conflict()
    assert "onnxruntime and onnxruntime-gpu are installed side by side" in conflict
    assert conflict.endswith("pip uninstall -y onnxruntime onnxruntime-gpu && pip install onnxruntime-gpu")
