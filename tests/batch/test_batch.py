"""Batch rendering (synctalk_fast.batch): manifests, workers, failures, resume."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from helpers import needs_loopback_namespace

from synctalk_fast import models
from synctalk_fast.batch import read_jobs, render_batch
from synctalk_fast.batch.manifest import JOB_KEYS
from synctalk_fast.batch.render import _overrides, plan_workers
from synctalk_fast.batch.worker import TEST_CRASH_ENV
from synctalk_fast.demo import synthetic_speech
from synctalk_fast.engine.options import OPTION_NAMES, EngineOptions
from synctalk_fast.pipeline import Pipeline


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, model_dir, make_template):
    """Two small templates, two U-Nets (seeds 0 and 1), four 0.3 s speeches and a bad audio file."""
    root = tmp_path_factory.mktemp("batch_inputs")
    for k in range(2):
        shutil.copytree(make_template(frames=8, seed=k), root / f"tpl{k}")  # a copy: paths resolve under root
    shutil.copy(model_dir / "unet_328.onnx", root / "unet0.onnx")
    shutil.copy(model_dir / "audio_encoder.onnx", root / "enc.onnx")
    models.export_onnx(models.random_state_dict("unet", seed=1), root / "unet1.onnx", kind="unet")
    for k in range(4):
        sf.write(root / f"speech{k}.wav", synthetic_speech(0.3, seed=k), 16000)
    (root / "bad.wav").write_bytes(np.random.default_rng(0).bytes(3000))
    return root


def _jobs(root: Path) -> list[dict]:
    """10 jobs over 2 templates x 2 U-Nets (paths relative to ``root``); line 7 has bad audio."""
    jobs = []
    for k in range(10):
        job = {
            "audio": f"speech{k % 4}.wav",
            "template": f"tpl{k % 2}",
            "unet": f"unet{(k // 2) % 2}.onnx",
            "audio_encoder": "enc.onnx",
            "output": f"out{k}",
            "start": k,
        }
        if k == 6:
            job["audio"] = "bad.wav"
        jobs.append(job)
    return jobs


def _frames(folder: Path) -> list[bytes]:
    return [p.read_bytes() for p in sorted(folder.glob("frame_*.png"))]


def _parts(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith(".part")]


@pytest.mark.slow
def test_batch_matches_generate_records_failures_and_resumes(inputs, tmp_path):
    manifest = tmp_path / "jobs.jsonl"
    manifest.write_text("\n".join(json.dumps(j) for j in _jobs(inputs)) + "\n")
    # the manifest's folder is the base of relative paths: put the inputs beside it
    for p in inputs.iterdir():
        (tmp_path / p.name).symlink_to(p)
    out = tmp_path / "out"
    result = render_batch(manifest, output_dir=out, workers=2, progress=False)

    assert result.counts == {"done": 9, "skipped": 0, "failed": 1}
    assert result.exit_code == 1 and result.workers == 2
    failed = [r for r in result.results if r.status == "failed"]
    assert [r.job for r in failed] == [7] and "bad.wav" in failed[0].error and "\n" not in failed[0].error
    lines = [json.loads(s) for s in (out / "results.jsonl").read_text().splitlines()]
    assert [d["job"] for d in lines] == list(range(1, 11))
    assert [d["status"] for d in lines] == ["done"] * 6 + ["failed"] + ["done"] * 3
    assert all(set(d) >= {"job", "status", "output", "frames", "seconds", "error"} for d in lines)

    # every output equals a single generate call with the same plan
    _, plan, _ = plan_workers(4, 2, "onnxruntime")
    pipes = {u: Pipeline(inputs / u, inputs / "enc.onnx", **plan) for u in ("unet0.onnx", "unet1.onnx")}
    for k, job in enumerate(_jobs(inputs)):
        if k == 6:
            assert not (out / "out6").exists()
            continue
        ref = tmp_path / "ref" / f"out{k}"
        r = pipes[job["unet"]].generate(
            inputs / job["audio"], template=inputs / job["template"], output=ref, start=k, progress=False
        )
        assert lines[k]["frames"] == r.frames > 0
        assert _frames(out / f"out{k}") == _frames(ref), f"job {k + 1}"
    assert not _parts(out)

    again = render_batch(manifest, output_dir=out, workers=2, progress=False)
    assert again.counts == {"done": 0, "skipped": 9, "failed": 1} and again.frames == 0

    before = _frames(out / "out3")
    shutil.rmtree(out / "out3")
    (out / "out6").mkdir()  # not skipped: no record
    third = render_batch(manifest, output_dir=out, workers=1, progress=False)
    assert third.counts == {"done": 1, "skipped": 8, "failed": 1}
    assert [r.job for r in third.results if r.status == "done"] == [4]
    assert _frames(out / "out3") == before


@pytest.mark.slow
def test_dead_worker_is_retried_and_leaves_no_partial_file(inputs, tmp_path, monkeypatch):
    jobs = [
        {
            "audio": "speech0.wav",
            "template": "tpl0",
            "unet": "unet0.onnx",
            "audio_encoder": "enc.onnx",
            "output": "a.mp4",
        },
        {
            "audio": "speech1.wav",
            "template": "tpl0",
            "unet": "unet0.onnx",
            "audio_encoder": "enc.onnx",
            "output": "sub/b",
        },
    ]
    out = tmp_path / "out"
    monkeypatch.setenv(TEST_CRASH_ENV, "a.mp4:1")  # a.mp4's first attempt dies midway
    result = render_batch(jobs, output_dir=out, workers=1, retries=1, progress=False, base=inputs)
    assert result.counts == {"done": 2, "skipped": 0, "failed": 0}
    assert [r.attempts for r in result.results] == [2, 1]
    assert (out / "a.mp4").stat().st_size > 0 and len(_frames(out / "sub" / "b")) == result.results[1].frames
    assert not _parts(out)

    monkeypatch.setenv(TEST_CRASH_ENV, "c.mp4:9")  # dies every time
    jobs[0]["output"] = "c.mp4"
    result = render_batch(jobs, output_dir=out, workers=1, retries=1, progress=False, base=inputs)
    assert result.counts == {"done": 0, "skipped": 1, "failed": 1} and result.exit_code == 1
    assert "worker process died" in result.results[0].error and result.results[0].attempts == 2
    assert not (out / "c.mp4").exists() and not _parts(out)


def test_manifest_errors_are_listed_with_line_numbers(tmp_path):
    good = {"audio": "a.wav", "template": "t", "unet": "u.onnx", "output": "x.mp4"}
    lines = [
        json.dumps(good),
        "{not json",
        json.dumps({**good, "output": "y.mp4", "colour": 1}),
        json.dumps({"audio": "a.wav", "output": "z.mp4"}),
        "",
        json.dumps({**good, "output": "../up.mp4"}),
        json.dumps(good),
        json.dumps({**good, "output": "w.webm"}),
        json.dumps({**good, "crf": "high", "output": "v"}),
    ]
    manifest = tmp_path / "jobs.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    with pytest.raises(ValueError) as e:
        render_batch(manifest, output_dir=out, progress=False)
    msg = str(e.value)
    for line, what in (
        (2, "bad JSON"),
        (3, "unknown key 'colour'"),
        (4, "missing template, unet"),
        (6, "not inside the output directory"),
        (7, "also the output of line 1"),
        (8, "w.webm"),
        (9, "crf: bad value"),
    ):
        assert f"jobs.jsonl:{line}: " in msg and what in msg, (line, what, msg)
    assert ":1: " not in msg and ":5: " not in msg
    assert not out.exists()  # nothing ran
    with pytest.raises(ValueError, match="workers must be >= 1"):
        render_batch([good], output_dir=out, workers=0)
    with pytest.raises(ValueError, match="missing audio"):
        read_jobs([{"template": "t", "unet": "u", "output": "o"}], output_dir=out)


@pytest.mark.slow
def test_csv_manifest(inputs, tmp_path):
    (tmp_path / "jobs.csv").write_text(
        "audio,template,unet,audio_encoder,output,start,feather\n"
        f"{inputs}/speech2.wav,{inputs}/tpl1,{inputs}/unet1.onnx,{inputs}/enc.onnx,clip,3,\n"
        f"{inputs}/speech2.wav,no_such_template,{inputs}/unet1.onnx,{inputs}/enc.onnx,clip2.mp4,,2\n"
    )
    jobs = read_jobs(tmp_path / "jobs.csv", output_dir=tmp_path / "out")
    assert [j.line for j in jobs] == [2, 3] and jobs[0].options == {"start": 3} and jobs[1].options == {"feather": 2}
    assert jobs[0].inputs["template"] == inputs / "tpl1"
    (tmp_path / "bad.csv").write_text("audio,template,unet,output,size\na.wav,t,u,o,9\n")
    with pytest.raises(ValueError, match=r"bad.csv:2: unknown key 'size'"):
        read_jobs(tmp_path / "bad.csv", output_dir=tmp_path / "out")
    result = render_batch(tmp_path / "jobs.csv", output_dir=tmp_path / "out", workers=1, progress=False)
    assert result.counts == {"done": 1, "skipped": 0, "failed": 1} and result.exit_code == 1
    assert result.results[1].job == 3 and "no_such_template" in result.results[1].error
    assert not (tmp_path / "out" / "clip2.mp4").exists()
    _, plan, _ = plan_workers(1, 1, "onnxruntime")
    ref = Pipeline(inputs / "unet1.onnx", inputs / "enc.onnx", **plan).generate(
        inputs / "speech2.wav", template=inputs / "tpl1", output=tmp_path / "ref", start=3, progress=False
    )
    assert result.results[0].frames == ref.frames
    assert _frames(tmp_path / "out" / "clip") == _frames(tmp_path / "ref")


@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="needs ray (the [ray] extra)")
@needs_loopback_namespace
@pytest.mark.slow
def test_ray_actors_match_local_workers_and_survive_a_killed_actor(inputs, tmp_path):
    """Two Ray actors on a local Ray instance: outputs equal to single
    generate calls, a killed actor's job retried with no partial file, and
    the same with inputs shipped through the object store."""
    jobs = [
        {
            "audio": f"speech{k}.wav",
            "template": f"tpl{k % 2}",
            "unet": "unet0.onnx",
            "audio_encoder": "enc.onnx",
            "output": f"clip{k}",
        }
        for k in range(4)
    ]
    jobs.append({**jobs[0], "audio": "bad.wav", "output": "bad"})
    script = Path(__file__).with_name("ray_check.py")
    proc = subprocess.run(
        ["unshare", "-n", sys.executable, str(script), str(inputs), str(tmp_path), json.dumps(jobs)],
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = json.loads(proc.stdout.strip().splitlines()[-1])

    shared, shipped = runs["shared"], runs["shipped"]
    assert shared["counts"] == {"done": 4, "skipped": 0, "failed": 1} and shared["workers"] == 2, shared
    assert [r["attempts"] for r in shared["results"]] == [2, 1, 1, 1, 1]
    assert "bad.wav" in shared["results"][4]["error"]
    assert runs["shut_down"] and runs["still_up"]
    assert runs["too_big"].startswith("no node of the Ray cluster has 3 CPUs and 0 GPUs"), runs["too_big"]
    assert shipped["counts"] == {"done": 3, "skipped": 0, "failed": 2} and shipped["workers"] == 2, shipped
    died = shipped["results"][1]
    assert died["status"] == "failed" and "worker process died" in died["error"] and died["attempts"] == 2

    _, plan, _ = plan_workers(1, 2, "onnxruntime")  # each actor: 1 CPU of 2, as a local worker
    pipe = Pipeline(inputs / "unet0.onnx", inputs / "enc.onnx", **plan)
    for k, job in enumerate(jobs[:4]):
        ref = pipe.generate(
            inputs / job["audio"], template=inputs / job["template"], output=tmp_path / "ref" / f"c{k}", progress=False
        )
        assert shared["results"][k]["frames"] == ref.frames
        assert _frames(tmp_path / "shared" / f"clip{k}") == _frames(tmp_path / "ref" / f"c{k}"), k
        if k != 1:
            assert _frames(tmp_path / "shipped" / f"clip{k}") == _frames(tmp_path / "ref" / f"c{k}"), k
    assert not _parts(tmp_path / "shared") and not _parts(tmp_path / "shipped")
    assert not (tmp_path / "shipped" / "clip1").exists()


def test_manifest_engine_options_are_the_engine_options_fields(tmp_path):
    """Every engine option is a manifest key (and every key of before the
    split still is), converted and checked by EngineOptions; a bad value is
    one line with its manifest line."""
    old_keys = {
        "mode",
        "runtime",
        "providers",
        "batch_size",
        "threads",
        "sessions",
        "precision",
        "overlap",
        "cache_mb",
        "device_id",
        "start",
        "fps",
        "crf",
        "preset",
        "encoder",
        "feather",
        "image_format",
        "audio",
        "features",
        "template",
        "unet",
        "audio_encoder",
        "output",
    }
    assert set(OPTION_NAMES) <= set(JOB_KEYS) and old_keys <= set(JOB_KEYS)
    head = "audio,template,unet,output,providers,batch_size,device_id,cache_mb,precision,overlap,mode,crf\n"
    (tmp_path / "good.csv").write_text(head + "a.wav,t,u.onnx,x,cpu;cuda,2,1,64,fp16,no,ave,18\n")
    (job,) = read_jobs(tmp_path / "good.csv", output_dir=tmp_path / "out")
    assert job.options == {
        "providers": ["cpu", "cuda"],
        "batch_size": 2,
        "device_id": 1,
        "cache_mb": 64.0,
        "precision": "fp16",
        "overlap": False,
        "mode": "ave",
        "crf": 18,
    }
    assert job.engine_options == {
        "providers": ["cpu", "cuda"],
        "batch_size": 2,
        "device_id": 1,
        "cache_mb": 64.0,
        "precision": "fp16",
    }
    (tmp_path / "bad.csv").write_text(
        head + "a.wav,t,u.onnx,x,,0,,,,,,\n" + "a.wav,t,u.onnx,y,,,,,fp8,,,\n" + "a.wav,t,u.onnx,z,,,-1,,,maybe,,\n"
    )
    with pytest.raises(ValueError) as e:
        read_jobs(tmp_path / "bad.csv", output_dir=tmp_path / "out")
    msg = str(e.value)
    assert msg.startswith("3 problem(s)")
    assert "bad.csv:2: batch_size must be >= 1, got 0" in msg
    assert "bad.csv:3: precision must be one of" in msg
    assert "bad.csv:4: device_id must be >= 0, got -1; overlap: bad value 'maybe'" in msg
    good = {"audio": "a.wav", "template": "t", "unet": "u.onnx", "output": "x"}
    with pytest.raises(ValueError, match=r"jobs:1: threads: expected an integer, got 'many'"):
        read_jobs([{**good, "threads": "many"}], output_dir=tmp_path / "out")


def test_overrides_given_to_render_batch():
    """Explicit keywords (even a default's value) and the changed fields of
    ``options``, keywords last; None is "not given"."""
    assert _overrides(None, {}) == {}
    assert _overrides(None, {"device_id": 0, "batch_size": None}) == {"device_id": 0}
    assert _overrides(EngineOptions(device_id=0, batch_size=2), {}) == {"batch_size": 2}
    assert _overrides(EngineOptions(batch_size=2), {"batch_size": "3", "providers": "cpu"}) == {
        "batch_size": 3,
        "providers": ["cpu"],
    }
    with pytest.raises(TypeError, match="colour"):
        _overrides(None, {"colour": 1})
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        _overrides(None, {"batch_size": 0})


def test_engine_options_given_to_render_batch_beat_the_manifest_and_count_in_the_digest(
    tmp_path, template_dir, model_dir
):
    sf.write(tmp_path / "s.wav", synthetic_speech(0.3), 16000)
    job = {
        "audio": str(tmp_path / "s.wav"),
        "template": str(template_dir),
        "unet": str(model_dir / "unet_328.onnx"),
        "audio_encoder": str(model_dir / "audio_encoder.onnx"),
        "output": "clip",
        "batch_size": 1,
    }
    out = tmp_path / "out"
    first = render_batch([job], output_dir=out, workers=1, progress=False, batch_size=2)
    assert first.counts == {"done": 1, "skipped": 0, "failed": 0}
    assert first.results[0].engine is not None and first.results[0].engine["batch_size"] == 2
    (line,) = (json.loads(s) for s in (out / "results.jsonl").read_text().splitlines())
    assert line["engine"]["batch_size"] == 2
    # the same options, given as an EngineOptions: already done; None is "not given"
    again = render_batch(
        [job], output_dir=out, workers=1, progress=False, options=EngineOptions(batch_size=2), batch_size=None
    )
    assert again.counts == {"done": 0, "skipped": 1, "failed": 0} and again.results[0].engine is None
    # without the override the row's batch size holds: a different job, rendered again
    row = render_batch([job], output_dir=out, workers=1, progress=False)
    assert row.counts == {"done": 1, "skipped": 0, "failed": 0} and row.results[0].engine["batch_size"] == 1
    assert row.results[0].frames == first.results[0].frames > 0
    assert render_batch([job], output_dir=out, workers=1, progress=False).counts["skipped"] == 1
    with pytest.raises(TypeError, match="colour"):
        render_batch([job], output_dir=out, colour=1)
