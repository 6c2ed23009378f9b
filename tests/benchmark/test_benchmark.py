"""The benchmark: its record, its command line (engine flags from EngineOptions), and the U-Net
rows timed by the one U-Net timer (synctalk_fast.models.timing)."""

from __future__ import annotations

import ast
import importlib
import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import cv2
import numpy as np
import pytest
import soundfile as sf
from helpers import ROOT

import synctalk_fast.benchmark as benchmark
from synctalk_fast import cli
from synctalk_fast.benchmark import unet as unet_rows
from synctalk_fast.demo import synthetic_speech
from synctalk_fast.engine.options import OPTION_NAMES, EngineOptions, flag

driver = importlib.import_module("synctalk_fast.benchmark.driver")


@pytest.mark.slow
def test_bench_writes_a_consistent_record(tmp_path, make_template):
    folder = make_template(frames=6)
    sf.write(tmp_path / "s.wav", synthetic_speech(1.0), 16000, subtype="PCM_16")
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "synctalk_fast",
            "bench",
            "--frames",
            "8",
            "--naive-frames",
            "3",
            "--torch-frames",
            "2",
            "--batch-sizes",
            "1,2",
            "--template",
            str(folder),
            "--audio",
            str(tmp_path / "s.wav"),
            "-o",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr
    record = json.loads(next((tmp_path / "out").glob("bench-*.json")).read_text())
    assert cv2.imread(str(next((tmp_path / "out").glob("bench-*.png")))) is not None
    rows = {r["name"]: r for r in record["rows"]}
    assert {"naive", "unet", "frames", "frames:cold", "mp4", "unet:sessions:b1", "unet:single:b2"} <= set(rows)
    if "torch" in rows:
        assert rows["torch"]["frames"] == 2
    for r in rows.values():
        assert r["fps"] == pytest.approx(r["frames"] / r["seconds"], rel=1e-2)
    assert rows["unet"]["fps"] == max(r["fps"] for k, r in rows.items() if k.startswith("unet:"))
    assert record["ratios"]["mp4_vs_unet"] == pytest.approx(rows["mp4"]["fps"] / rows["unet"]["fps"], abs=2e-3)
    assert set(rows["mp4"]["stages"]) >= {"prepare", "infer", "paste", "encode"}
    m = record["machine"]
    assert m["cores"] >= 1 and m["cpu"] and "onnxruntime" in m["versions"]
    assert record["config"]["provider"] == "CPUExecutionProvider" and record["features_60s_seconds"] > 0
    # the report's lines as before
    assert "synctalk_fast bench: template " in res.stdout and "round 1/1" in res.stdout
    assert "U-Net alone, " in res.stdout and " frames/s " in res.stdout and "  ratios: mp4_vs_unet " in res.stdout


def test_python_m_bench_uses_the_installed_package():
    res = subprocess.run(
        [sys.executable, "-m", "bench", "--help"], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert res.returncode == 0, res.stderr
    assert "--frames" in res.stdout and "python -m bench" in res.stdout


def test_public_names():
    assert callable(benchmark.run) and callable(benchmark.main) and callable(benchmark.machine_info)
    assert callable(benchmark.write_chart) and callable(benchmark.build_parser)
    assert set(benchmark.TARGETS) >= {"mp4_vs_unet", "mp4_vs_naive"}


# --- the command line: engine flags from EngineOptions --------------------------------------


@pytest.fixture
def bench_run(monkeypatch):
    """Replace the benchmark's run(); returns the keywords of its calls."""
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(driver, "run", lambda **kwargs: calls.append(kwargs) or {})
    return calls


def test_bench_flags_reach_run_as_engine_options(bench_run):
    words = [
        "--runtime",
        "openvino",
        "--providers",
        "cpu",
        "--device",
        "1",
        "--precision",
        "bf16",
        "--batch-size",
        "3",
        "--sessions",
        "2",
        "--threads",
        "1",
        "--cache-mb",
        "64",
    ]
    assert {w for w in words if w.startswith("--")} == {flag(name) for name in OPTION_NAMES}
    assert cli.main(["bench", "--frames", "200", "--rounds", "3", *words]) == 0
    got = bench_run[-1]
    assert (got["frames"], got["rounds"], got["torch"], got["int8"], got["output"]) == (
        200,
        3,
        True,
        False,
        "bench/results",
    )
    assert got["options"] == EngineOptions(
        runtime="openvino",
        providers=("cpu",),
        device_id=1,
        precision="bf16",
        batch_size=3,
        sessions=2,
        threads=1,
        cache_mb=64.0,
    )
    assert benchmark.main(["--batch-sizes", "1,2", "--no-torch"]) == 0
    assert bench_run[-1]["options"] == EngineOptions() and bench_run[-1]["batch_sizes"] == [1, 2]
    assert bench_run[-1]["torch"] is False


def test_bench_help_lists_every_engine_flag(capsys):
    with pytest.raises(SystemExit):
        benchmark.main(["--help"])
    out = capsys.readouterr().out
    assert all(flag(name) in out for name in OPTION_NAMES) and "--batch-sizes" in out and "--rounds" in out


def test_run_takes_options_and_the_same_keywords(monkeypatch, tmp_path):
    seen: list[EngineOptions] = []

    def prepare(work, *, options, **kwargs):
        seen.append(options)
        raise KeyboardInterrupt  # stop before anything is measured

    monkeypatch.setattr(driver, "_prepare", prepare)
    for call in (
        lambda: benchmark.run(precision="fp16", batch_size=2, output=tmp_path),
        lambda: benchmark.run(options=EngineOptions(precision="fp16"), batch_size=2, output=tmp_path),
    ):
        with pytest.raises(KeyboardInterrupt):
            call()
        assert seen[-1] == EngineOptions(precision="fp16", batch_size=2)
    with pytest.raises(TypeError, match="unknown option"):
        benchmark.run(batchsize=2)


# --- the U-Net rows: the one timer ------------------------------------------------------------


class _FakeEngine:
    """Sessions that take a fixed time per call (each session its own lock, as the engine's)."""

    def __init__(self, sessions: dict[str, int], per_call: float = 0.004):
        self._sessions = {
            layout: [SimpleNamespace(threads=2 // n or 1) for _ in range(n)] for layout, n in sessions.items()
        }
        self._locks = {layout: [threading.Lock() for _ in range(n)] for layout, n in sessions.items()}
        self.per_call = per_call
        self.calls: dict[tuple[str, int], int] = {}

    def layout_sessions(self, layout: str) -> list[Any]:
        return self._sessions[layout]

    def infer(self, image: np.ndarray, audio: np.ndarray, *, session: int = 0, layout: str = "throughput") -> None:
        with self._locks[layout][session]:
            time.sleep(self.per_call)
        self.calls[layout, session] = self.calls.get((layout, session), 0) + 1


def test_unet_rows_are_timed_by_the_one_timer(monkeypatch):
    timing = importlib.import_module("synctalk_fast.models.timing")
    used: list[str] = []
    for name in ("seconds_per_frame", "frames_per_second"):
        real = getattr(timing, name)
        monkeypatch.setattr(
            unet_rows, name, lambda *a, _real=real, _name=name, **k: used.append(_name) or _real(*a, **k)
        )
    engine = _FakeEngine({"throughput": 2, "latency": 1})
    inputs = {b: (np.zeros((b, 6, 320, 320), np.float32), np.zeros((b, 32, 16, 16), np.float32)) for b in (1, 2)}
    rows = unet_rows.layout_rows(engine, inputs, 40, key="unet", label=unet_rows.labels_sessions("U-Net"))  # type: ignore[arg-type]
    assert list(rows) == ["unet:sessions:b1", "unet:sessions:b2", "unet:single:b1", "unet:single:b2"]
    assert used.count("frames_per_second") == 4
    for row in rows.values():
        assert row["fps"] == pytest.approx(row["frames"] / row["seconds"], rel=1e-2)
        assert row["frames"] >= 1
    assert rows["unet:sessions:b1"]["label"] == "U-Net alone, 2 sessions x 1 thread(s), batch 1"
    assert rows["unet:single:b2"]["label"] == "U-Net alone, 1 session x 2 thread(s), batch 2"
    # two sessions side by side make about twice the frames per second of one (4 ms a call)
    assert rows["unet:sessions:b1"]["fps"] > 1.4 * rows["unet:single:b1"]["fps"]
    assert engine.calls["throughput", 1] > 0  # every session of the layout ran
    best = unet_rows.best(rows, name="unet", label="U-Net alone, best of these")
    assert best["fps"] == max(r["fps"] for r in rows.values()) and best["name"] == "unet"


def test_no_private_u_net_timer_in_the_benchmark():
    # wall-clock spans of whole runs live in measure.py; the U-Net is timed by models.timing only
    folder = Path(benchmark.__file__).parent
    for path in folder.glob("*.py"):
        if path.name == "measure.py":
            continue
        names = {n.attr for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Attribute)}
        assert not names & {"perf_counter", "monotonic", "time_ns"}, path.name
