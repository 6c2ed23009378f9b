"""Throughput engine: overlapped stages, template cache, session
options, batching."""

from __future__ import annotations

import os
import random
import threading
import time

import cv2
import numpy as np
import pytest

import synctalk_fast as stf
from synctalk_fast import models
from synctalk_fast._util.stages import lower_priority, run_stages
from synctalk_fast.demo import synthetic_speech
from synctalk_fast.errors import TemplateError
from synctalk_fast.template import FrameCache, Template


def _stage_threads(prefix: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(prefix)]


# --- run_stages -----------------------------------------------------------------


def test_stages_keep_order_under_random_delays():
    rng = random.Random(0)

    def jitter(x):
        time.sleep(rng.uniform(0, 0.003))
        return x

    out = list(
        run_stages(
            (jitter(i) for i in range(200)), [lambda x: jitter(x) * 2, lambda x: jitter(x) + 1], depth=3, name="t-order"
        )
    )
    assert out == [2 * i + 1 for i in range(200)]
    assert not _stage_threads("t-order")


@pytest.mark.parametrize("where", ["source", "stage1", "stage2"])
def test_an_exception_in_any_stage_reaches_the_caller_and_stops_the_rest(where):
    class Boom(RuntimeError):
        pass

    seen = []

    def source():
        for i in range(10_000):
            if where == "source" and i == 7:
                raise Boom(where)
            seen.append(i)
            yield i

    def stage1(x):
        if where == "stage1" and x == 7:
            raise Boom(where)
        return x

    def stage2(x):
        if where == "stage2" and x == 7:
            raise Boom(where)
        return x

    got = []
    with pytest.raises(Boom, match=where):
        for x in run_stages(source(), [stage1, stage2], depth=2, name=f"t-err-{where}"):
            got.append(x)
    assert got == list(range(len(got))) and len(got) <= 7  # in order, nothing past the failure
    assert len(seen) < 30  # the source stopped: bounded queues, then the stop flag
    assert not _stage_threads(f"t-err-{where}")


def test_closing_early_and_a_consumer_exception_stop_the_threads():
    it = run_stages(iter(range(10_000)), [lambda x: x], depth=2, name="t-close")
    assert next(it) == 0
    it.close()
    assert not _stage_threads("t-close")
    with pytest.raises(KeyError):
        for x in run_stages(iter(range(10_000)), [lambda x: x], name="t-consumer"):
            if x == 3:
                raise KeyError(x)
    assert not _stage_threads("t-consumer")


def test_queues_bound_the_work_ahead_of_a_slow_consumer():
    produced = []

    def source():
        for i in range(1000):
            produced.append(i)
            yield i

    it = run_stages(source(), [lambda x: x, lambda x: x], depth=2, name="t-bound")
    next(it)
    time.sleep(0.3)  # a consumer that stalls
    # 3 queues of 2, one item held by each of 3 threads, the one taken: <= 10
    assert len(produced) <= 10
    it.close()


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="SCHED_IDLE is Linux")
def test_background_threads_run_at_idle_priority():
    policies = {}

    def record(tag):
        def fn(x):
            policies[tag] = os.sched_getscheduler(threading.get_native_id())
            return x

        return fn

    list(run_stages(iter(range(3)), [record("fg"), record("bg")], name="t-prio", background=[2]))
    assert policies == {"fg": os.sched_getscheduler(0), "bg": os.SCHED_IDLE}
    assert os.sched_getscheduler(threading.get_native_id()) != os.SCHED_IDLE  # the caller is untouched

    def child_policy():
        lower_priority()
        inner = {}
        t = threading.Thread(target=lambda: inner.setdefault("p", os.sched_getscheduler(threading.get_native_id())))
        t.start()
        t.join()
        policies["child"] = inner["p"]

    t = threading.Thread(target=child_policy)
    t.start()
    t.join()
    assert policies["child"] == os.SCHED_IDLE  # threads it starts (libx264's) inherit it


# --- the pipeline ------------------------------------------------------------------


@pytest.fixture(scope="module")
def template_dir(make_template):
    return make_template(frames=9)


@pytest.fixture(scope="module")
def feats(model_dir):
    return stf.Pipeline(model_dir / "unet_328.onnx", model_dir / "audio_encoder.onnx").audio_features(
        synthetic_speech(1.0)
    )


@pytest.fixture(scope="module")
def reference_frames(model_dir, template_dir, feats):
    pipe = stf.Pipeline(model_dir / "unet_328.onnx", batch_size=1, overlap=False, cache_mb=0)
    return np.stack(list(pipe.frames(feats, template_dir, start=2)))


@pytest.mark.parametrize(
    "batch_size,overlap,sessions", [(1, True, 1), (3, True, 2), (8, True, 3), (8, False, 1), (2, True, None)]
)
def test_frames_are_the_same_whatever_the_batch_and_overlap(
    model_dir, template_dir, feats, reference_frames, batch_size, overlap, sessions
):
    pipe = stf.Pipeline(model_dir / "unet_328.onnx", batch_size=batch_size, overlap=overlap, sessions=sessions)
    assert len(pipe.unets) == (sessions or models.session_plan(["CPUExecutionProvider"])[0])
    frames = list(pipe.frames(feats, template_dir, start=2))
    assert len(frames) == feats.shape[0]
    # batch composition may change float sums in ONNX Runtime's kernels: at most 1 level
    assert np.abs(np.stack(frames).astype(int) - reference_frames).max() <= 1
    assert all(f.flags.writeable and f.flags.c_contiguous for f in frames)  # new arrays the caller owns
    assert len({id(f) for f in frames}) == len(frames)


def test_a_stage_failure_in_the_pipeline_raises_and_writes_nothing(model_dir, template_dir, feats, tmp_path):
    broken = tmp_path / "tpl"
    broken.mkdir()
    for sub in ("full_body_img", "landmarks"):
        (broken / sub).mkdir()
        for f in (template_dir / sub).iterdir():
            (broken / sub / f.name).write_bytes(f.read_bytes())
    tpl = Template(broken, cache_mb=0)
    # a frame that passed the header check but does not decode
    (broken / "full_body_img" / "5.jpg").write_bytes((broken / "full_body_img" / "5.jpg").read_bytes()[:300])
    pipe = stf.Pipeline(model_dir / "unet_328.onnx", batch_size=2)
    with pytest.raises(TemplateError, match="5.jpg"):
        list(pipe.frames(feats, tpl))
    with pytest.raises(TemplateError, match="5.jpg"):
        pipe.generate(synthetic_speech(1.0), features=feats, template=tpl, output=tmp_path / "o.mp4", progress=False)
    assert not (tmp_path / "o.mp4").exists() and not list(tmp_path.glob(".o.mp4*"))
    assert not _stage_threads("synctalk")


def test_template_cache_decodes_each_frame_once(model_dir, template_dir, feats, monkeypatch):
    decoded = []
    real = cv2.imread
    monkeypatch.setattr(cv2, "imread", lambda *a, **k: decoded.append(a[0]) or real(*a, **k))
    pipe = stf.Pipeline(model_dir / "unet_328.onnx")
    tpl = pipe.template(template_dir)
    n = 3 * 2 * len(tpl)  # three ping-pong sweeps
    rows = np.concatenate([feats] * (n // len(feats) + 1))[:n]
    list(pipe.frames(rows, template_dir))
    assert sorted(decoded) == sorted(str(p) for p in tpl.frame_paths)  # steady state: no decoding
    assert tpl.cache.misses == len(tpl) and tpl.cache.hits == n - len(tpl)
    assert pipe.template(template_dir) is tpl  # the next call keeps the decoded frames


def test_frame_cache_keeps_the_first_frames_and_shares_them_read_only():
    cache = FrameCache(2)
    loads = []

    def load(k):
        loads.append(k)
        return np.full((2, 2, 3), k, np.uint8)

    for k in [0, 1, 2, 0, 1, 2, 0]:
        frame = cache.get(k, load)
        assert not frame.flags.writeable and frame[0, 0, 0] == k
    assert loads == [0, 1, 2, 2]  # frame 2 never fits: no eviction thrash
    assert (cache.hits, cache.misses, len(cache), cache.nbytes) == (3, 4, 2, 24)


def test_template_cache_size(template_dir):
    assert Template(template_dir).cache.capacity == 9  # default: the whole small template
    assert Template(template_dir, cache_mb=0).cache.capacity == 0
    one = 320 * 240 * 3 / 2**20
    assert Template(template_dir, cache_mb=2.5 * one).cache.capacity == 2
    with pytest.raises(ValueError, match="cache_mb"):
        Template(template_dir, cache_mb=-1)
    tpl = Template(template_dir)
    a, b = tpl.frame(3), tpl.frame(3)
    assert a is not b and a.flags.writeable and np.array_equal(a, b)
    assert not tpl.frame(3, copy=False).flags.writeable


# --- sessions ------------------------------------------------------------------


def test_session_options(model_dir):
    sess = models.load_session(model_dir / "unet_328.onnx", threads=1)
    opts = sess.session.get_session_options()
    assert opts.intra_op_num_threads == 1 and opts.inter_op_num_threads == 1
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert (
        models.load_session(model_dir / "unet_328.onnx").session.get_session_options().intra_op_num_threads
        == models.default_threads()
    )


def test_session_plan():
    cores = models.default_threads()
    assert models.session_plan(["CPUExecutionProvider"]) == (min(cores, 4), max(1, cores // min(cores, 4)))
    assert models.session_plan(["CUDAExecutionProvider", "CPUExecutionProvider"]) == (1, cores)
    assert models.session_plan(["CPUExecutionProvider"], sessions=1, threads=3) == (1, 3)


def test_parallel_stage_keeps_order_and_uses_every_worker():
    used = []

    def worker(tag):
        def fn(x):
            used.append(tag)
            time.sleep(0.001 * (tag + 1))
            return x * 10 + tag

        return fn

    out = list(run_stages(iter(range(50)), [[worker(0), worker(1), worker(2)], lambda x: x], name="t-par"))
    assert out == [i * 10 + i % 3 for i in range(50)]  # item i went to worker i % 3, results in order
    assert sorted(set(used)) == [0, 1, 2]


def test_batch_size_rule():
    assert models.default_batch_size(["CPUExecutionProvider"]) == 4
    assert models.default_batch_size(["CUDAExecutionProvider", "CPUExecutionProvider"]) == 16
    assert models.default_batch_size(["TensorrtExecutionProvider", "CUDAExecutionProvider"]) == 16
    assert models.default_batch_size(["CoreMLExecutionProvider"]) == 4


def test_io_binding_gives_the_plain_results(model_dir):
    rng = np.random.default_rng(0)
    img = rng.random((3, 6, 320, 320), dtype=np.float32)
    aud = rng.standard_normal((3, 32, 16, 16)).astype(np.float32)
    plain = models.load_session(model_dir / "unet_328.onnx")
    bound = models.load_session(model_dir / "unet_328.onnx", io_binding=True)
    assert not plain.io_binding and bound.io_binding
    want = plain.run(image=img, audio=aud)
    first = bound.run(image=img, audio=aud)
    again = bound.run(image=img[:1], audio=aud[:1])  # another batch size: its own buffers
    assert np.array_equal(first, want) and np.array_equal(again, want[:1])
    second = bound.run(image=img[::-1].copy(), audio=aud[::-1].copy())
    assert np.array_equal(second, want[::-1]) and np.array_equal(first, want)  # results are not overwritten


def test_fp16_precision(model_dir, template_dir, feats):
    half = stf.Pipeline(model_dir / "unet_328.onnx", precision="fp16")
    full = stf.Pipeline(model_dir / "unet_328.onnx")
    assert half.unet.precision == "fp16" and half.unet.model_path.name.startswith("unet_328.fp16-")
    a = np.stack(list(full.frames(feats[:6], template_dir))).astype(int)
    b = np.stack(list(half.frames(feats[:6], template_dir)))
    assert 0 < np.abs(a - b).mean() < 1.0  # a fraction of a level on average
    with pytest.raises(ValueError, match="precision"):
        models.load_session(model_dir / "unet_328.onnx", precision="int4")
