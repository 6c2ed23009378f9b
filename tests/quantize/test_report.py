"""The pure parts of int8 quantization: the block search, the timing of
candidates, the choice between them and the report."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from synctalk_fast.quantize import BF16, FP32, QuantizeReport, bf16_advice, choose_candidate, search_fp32_blocks
from synctalk_fast.quantize.data import Feeds
from synctalk_fast.quantize.evaluate import speeds
from synctalk_fast.quantize.search import HEADROOM, keep_float_blocks


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


def _row(seconds: float, psnr: float, *, int8: bool = True, runtime: str = "openvino", precision: str = "bf16"):
    """A candidate as QuantizeReport.candidates holds it (the fields the choice reads, and the table's)."""
    return {
        "tool": None,
        "runtime": runtime,
        "precision": precision,
        "int8": int8,
        "seconds": seconds,
        "speedup": 0.075 / seconds,
        "mouth": {"psnr": psnr, "max": 12, "mean": 0.5, "pixels": 1000},
        "float_blocks": ["outc"] if int8 else [],
        "met": True,
    }


def _fake_candidates() -> dict:
    return {
        FP32: _row(0.075, math.inf, int8=False, runtime="onnxruntime", precision="fp32"),
        BF16: _row(0.030, 55.0, int8=False),  # the fastest and the closest, but no int8: never written
        "onnxruntime int8": _row(0.054, 41.0, runtime="onnxruntime", precision="fp32"),
        "nncf int8": _row(0.036, 40.5),
    }


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
        model="face.onnx",
        output="u8.onnx",
        tool="nncf",
        runtime="openvino",
        precision="bf16",
        method="MeanMinMax",
        methods={"MeanMinMax": 33.7},
        target_psnr=40.0,
        met=True,
        fp32_blocks=["outc"],
        int8_blocks=["inc"],
        sensitivity={},
        frames={"calibration": [1], "validation": [2], "heldout": [3]},
        feature_rows={"calibration": [1], "validation": [2], "heldout": [3]},
        fidelity={"mouth": mouth, "frame": mouth, "unet": mouth},
        speed={"fp32": 0.075, "int8": 0.036, "speedup": 0.075 / 0.036, "batch": 4, "threads": 2, "frames": 1},
        candidates=c,
        seconds=1.0,
        notes=[line],
    )
    text = str(report).splitlines()
    table = {name: [ln for ln in text if ln[4:].startswith(f"{name} ")] for name in c}
    assert all(len(lines) == 1 for lines in table.values())  # a row for every candidate ...
    assert [name for name, lines in table.items() if lines[0].startswith("  * ")] == ["nncf int8"]  # ... one marked
    assert all(s in table["nncf int8"][0] for s in ("openvino", "bf16", " 36.0 ", "2.08x", "40.50 dB"))
    assert "run it with: Pipeline(unet='u8.onnx', runtime='openvino', precision='bf16')" in text
    assert f"note: {line}" in text
    assert json.loads(json.dumps(report.to_dict()))["candidates"][FP32]["mouth"]["psnr"] == "inf"


def test_keep_float_blocks_ranks_by_sensitivity_and_aims_above_the_target():
    blocks = ["a", "b", "c", "d", "e"]
    harm = {"a": 1.0, "b": 8.0, "c": 0.5, "d": 4.0, "e": 2.0}  # dB each block costs when int8

    def score(float_blocks, only):
        int8 = [only] if only is not None else [b for b in blocks if b not in float_blocks]
        return 50.0 - sum(harm[b] for b in int8)

    lines = []
    found = keep_float_blocks(
        "T", score([], None), score, blocks=blocks, keep_fp32=["c"], target_psnr=45.0, say=lines.append
    )
    assert found.sensitivity == {"a": 49.0, "b": 42.0, "d": 46.0, "e": 48.0}  # keep_fp32 is not measured
    assert found.float_blocks == ["c", "b", "d"] and found.validation_psnr == 47.0 >= 45.0 + HEADROOM
    assert any("most sensitive: b 42.0 dB, d 46.0 dB" in ln for ln in lines)
    none = keep_float_blocks("T", 30.0, score, blocks=blocks, keep_fp32=["c"], target_psnr=None, say=lines.append)
    assert none.float_blocks == ["c"] and none.validation_psnr == 30.0 and none.sensitivity == {}


class _FakeEngine:
    def __init__(self, name, log):
        self.name, self.log = name, log

    def infer(self, images, audio):
        self.log.append((self.name, len(images)))
        return np.zeros((len(images), 3, 1, 1), np.float32)


def test_speeds_use_the_one_timer_interleaved(monkeypatch):
    """Candidates are timed by models.timing.seconds_per_frame: a warm-up pass
    each, then rounds taking turns, the best round of each (reduce="min")."""
    from synctalk_fast.quantize import evaluate

    calls = []
    real = evaluate.seconds_per_frame

    def spy(runs, **kwargs):
        calls.append(kwargs)
        return real(runs, **kwargs)

    monkeypatch.setattr(evaluate, "seconds_per_frame", spy)
    log = []
    feeds = Feeds({"image": "i", "audio": "a"}, np.zeros((10, 6, 2, 2), np.float32), np.zeros((10, 1), np.float32))
    got = speeds({"x": _FakeEngine("x", log), "y": _FakeEngine("y", log)}, feeds, 4, rounds=2)
    assert calls == [{"rounds": 2, "reduce": "min"}] and set(got) == {"x", "y"} and all(s > 0 for s in got.values())
    passes = [name for k, (name, n) in enumerate(log) if k % 3 == 0]  # 3 calls (4 + 4 + 2 frames) per pass
    assert [n for _, n in log[:3]] == [4, 4, 2] and passes == ["x", "y", "x", "y", "x", "y"]
