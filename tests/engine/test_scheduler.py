"""The engine as one object under every path: what it reports, the U-Net
step, several producers at once (batched together, in order, fair shares),
runtimes and their provider table, and sinks as outputs of generate."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import soundfile as sf

import synctalk_fast as stf
from synctalk_fast import runtime
from synctalk_fast.demo import synthetic_speech
from synctalk_fast.engine import Engine, Producer, StepItem
from synctalk_fast.errors import ModelError, OutputError
from synctalk_fast.features import feature_windows
from synctalk_fast.replay import replay
from synctalk_fast.runtime.ort import PROVIDERS
from synctalk_fast.sinks import MemorySink
from synctalk_fast.template import Template


@pytest.fixture(scope="module")
def tpl(make_template):
    return Template(make_template(frames=7))


@pytest.fixture(scope="module")
def engine(model_dir):
    return Engine(model_dir / "unet_328.onnx", model_dir / "audio_encoder.onnx", sessions=2, threads=1)


@pytest.fixture(scope="module")
def feats(engine):
    return engine.audio_features(synthetic_speech(1.2))


def _windows(feats, n):
    return feature_windows(feats, mode="ave", start=0, stop=n)


def test_the_engine_says_what_it_runs(engine):
    assert engine.runtime == "onnxruntime" and engine.providers[0] == "CPUExecutionProvider"
    assert engine.device == "cpu" and not engine.accelerator and engine.precision == "fp32"
    assert engine.batch_size == 4 and len(engine.sessions) == 2 and engine.mode == "ave"
    assert all(s.threads == 1 and s.providers == engine.providers for s in engine.sessions)
    assert engine.describe() == {
        "runtime": "onnxruntime",
        "provider": "CPUExecutionProvider",
        "device": "cpu",
        "device_id": 0,
        "precision": "fp32",
        "batch_size": 4,
        "sessions": 2,
        "threads_per_session": 1,
    }
    with pytest.raises(ModelError, match="expected a U-Net"):
        Engine(engine.encoder.path)
    with pytest.raises(ModelError, match="expected an audio encoder"):
        Engine(audio_encoder=engine.unet.path)


def test_precision_is_reported_by_every_session(model_dir):
    half = Engine(model_dir / "unet_328.onnx", precision="fp16", sessions=2, threads=1)
    latency = half.layout_sessions("latency")
    assert half.precision == "fp16"
    for s in half.sessions + latency:
        assert s.precision == "fp16" and s.model_path.name.startswith("unet_328.fp16-")
    assert latency[0] not in half.sessions and latency[0].threads == runtime.default_threads()


def test_the_step_is_the_pipeline_s_frames(engine, tpl, feats):
    n = 6
    want = list(stf.Pipeline(engine).frames(feats[:n], tpl, start=3))
    order = tpl.order(n, start=3)
    got = engine.step([(tpl, int(k)) for k in order], _windows(feats[:n], n))
    assert all(np.array_equal(a, b) for a, b in zip(got, want)) and len(got) == n


def test_concurrent_producers_get_their_own_frames_in_order(engine, tpl, feats):
    """Three producers submit at once from their own threads: every frame is
    exactly what the step makes alone, and each producer's items are taken
    in the order it submitted them."""
    n = 10
    windows = _windows(feats, n)
    starts = {0: 0, 1: 2, 2: 5}
    want = {p: engine.step([(tpl, int(k)) for k in tpl.order(n, start=s)], windows) for p, s in starts.items()}
    taken: dict[int, list[int]] = {p: [] for p in starts}
    results: dict[int, list] = {}
    views = {p: [windows[i] for i in range(n)] for p in starts}  # one array object per item
    position = {id(v): i for p in starts for i, v in enumerate(views[p])}

    class Recording(Producer):
        def __init__(self, p):
            self.p = p
            super().__init__(engine)

        def take(self, limit):
            items = super().take(limit)
            taken[self.p] += [position[id(it.window)] for it in items]
            return items

    def produce(p):
        with Recording(p) as prod:
            futures = [prod.submit(tpl, int(k), views[p][i]) for i, k in enumerate(tpl.order(n, start=starts[p]))]
            results[p] = [f.result(timeout=120) for f in futures]

    threads = [threading.Thread(target=produce, args=(p,)) for p in starts]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    for p in starts:
        assert taken[p] == list(range(n))
        assert all(np.array_equal(a, b) for a, b in zip(results[p], want[p])) and len(results[p]) == n


class _ListSource:
    """A work source holding its items up front; records completions."""

    def __init__(self, name, items, done_log, lock):
        self.name, self.items, self.log, self.lock = name, list(items), done_log, lock

    def take(self, limit):
        with self.lock:
            got, self.items = self.items[:limit], self.items[limit:]
        return got

    def done(self, frame, error):
        assert error is None and frame is not None
        with self.lock:
            self.log.append(self.name)


def test_producers_share_the_engine_fairly(model_dir, tpl, feats):
    """A producer with 8 frames next to one with 40 is not starved: with fair
    shares its frames are done within the first batches, not after the 40."""
    engine = Engine(model_dir / "unet_328.onnx", sessions=1, threads=2, batch_size=4)
    windows = _windows(feats, 8)
    log, lock = [], threading.Lock()
    big = _ListSource("big", [], log, lock)
    small = _ListSource("small", [], log, lock)
    big.items = [StepItem(tpl, i % len(tpl), windows[i % 8], big.done) for i in range(40)]
    small.items = [StepItem(tpl, i % len(tpl), windows[i], small.done) for i in range(8)]
    engine.attach(big)
    engine.attach(small)
    engine.wake()
    for _ in range(600):
        with lock:
            if len(log) == 48:
                break
        threading.Event().wait(0.1)
    engine.detach(big)
    engine.detach(small)
    assert len(log) == 48
    last_small = max(i for i, name in enumerate(log) if name == "small")
    assert last_small < 24, log  # FIFO would finish it at 47


def test_a_failing_batch_reaches_each_of_its_producers(engine, tpl, feats):
    with engine.producer() as prod:
        bad = prod.submit(tpl, 0, np.zeros((3, 3), np.float32))  # not an audio window
        with pytest.raises(Exception):  # noqa: B017 - whatever the runtime raises for a bad shape
            bad.result(timeout=60)
        good = prod.submit(tpl, 1, _windows(feats, 1)[0])  # the engine goes on
        assert good.result(timeout=60).shape == (240, 320, 3)


def test_untouched_frames_pass_through(engine, tpl):
    with engine.producer() as prod:
        frame = prod.submit(tpl, 2, None).result(timeout=60)
    assert np.array_equal(frame, tpl.frame(2))


def test_runtime_table_is_the_one_place_providers_mean_something():
    rt = runtime.get_runtime("onnxruntime")
    assert rt.providers is PROVIDERS
    for p in PROVIDERS.values():
        assert runtime.provider_name(p.alias) == runtime.provider_name(p.name.upper()) == p.name
    assert (
        runtime.resolve_providers(["cpu"])
        == runtime.resolve_providers(["CPUExecutionProvider"])
        == ["CPUExecutionProvider"]
    )
    installed = rt.installed()
    if "CUDAExecutionProvider" not in installed:  # strict: a provider this build lacks is an error, not a fallback
        with pytest.raises(ValueError, match="'cuda' is not available in this onnxruntime build"):
            runtime.resolve_providers(["cuda", "cpu"])
    with pytest.raises(ValueError, match="unknown provider 'gpu'; use one of tensorrt, cuda"):
        runtime.resolve_providers(["gpu"])
    for p in PROVIDERS.values():
        assert runtime.default_batch_size([p.name]) == p.batch
        assert runtime.session_plan([p.name])[0] == (1 if p.accelerator else min(runtime.default_threads(), 4))
    assert runtime.default_providers()[-1] == "CPUExecutionProvider"
    with pytest.raises(ValueError, match="unknown runtime"):
        runtime.get_runtime("tvm")


# --- sinks as outputs ---------------------------------------------------------------


def test_generate_into_a_sink_and_a_callback(engine, tpl, feats, tmp_path):
    pipe = stf.Pipeline(engine)
    speech = synthetic_speech(1.2)
    want = list(pipe.frames(feats, tpl))
    sink, seen = MemorySink(), []
    result = pipe.generate(
        speech,
        features=feats,
        template=tpl,
        progress=False,
        output=[sink, lambda frame, audio: seen.append((frame, audio)), tmp_path / "v.mp4"],
    )
    assert result.output is sink and result.frames == len(want) == len(sink.frames) == len(seen)
    assert all(np.array_equal(a, b) for a, b in zip(sink.frames, want))
    assert all(np.array_equal(a, f) for (a, _), f in zip(seen, want))
    # each frame comes with the 640 samples it shows
    assert np.array_equal(seen[3][1], speech[3 * 640 : 4 * 640]) and (tmp_path / "v.mp4").is_file()
    assert result.engine["provider"] == "CPUExecutionProvider"


@pytest.mark.parametrize("name", ["out.webm", "out.mp", "clip.avi"])
def test_an_unknown_output_suffix_is_an_error_that_names_the_choices(engine, tpl, feats, tmp_path, name):
    pipe = stf.Pipeline(engine)
    with pytest.raises(OutputError, match=r"\.mp4.*folder"):
        pipe.generate(features=feats, template=tpl, output=tmp_path / name, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_a_failing_sink_aborts_every_output(engine, tpl, feats, tmp_path):
    class Broken(MemorySink):
        def write(self, frame, audio=None):
            if self.frames_written == 3:
                raise RuntimeError("disk on fire")
            super().write(frame, audio)

    broken = Broken()
    with pytest.raises(RuntimeError, match="disk on fire"):
        stf.Pipeline(engine).generate(features=feats, template=tpl, output=[tmp_path / "v.mp4", broken], progress=False)
    assert list(tmp_path.iterdir()) == [] and broken.frames == []


def test_two_streams_on_one_engine_make_their_offline_frames(engine, tpl):
    """Two live streams share the engine's sessions (their frames may share a
    batch) and each gets exactly the frames offline generation makes."""
    speech = {0: synthetic_speech(1.0, seed=1), 4: synthetic_speech(1.3, seed=2)}
    pipe = stf.Pipeline(engine)
    want = {s: list(pipe.frames(pipe.audio_features(w), tpl, start=s)) for s, w in speech.items()}
    got: dict[int, list] = {}

    def run(start):
        with stf.Stream(engine, template=tpl, start=start, layout="throughput") as stream:
            wav = speech[start]
            for i in range(0, len(wav), 700):
                stream.push_audio(wav[i : i + 700])
            stream.flush()
            got[start] = [f.image for f in stream.frames()]

    threads = [threading.Thread(target=run, args=(s,)) for s in speech]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    for s in speech:
        assert len(got[s]) == len(want[s]) and all(np.array_equal(a, b) for a, b in zip(got[s], want[s]))


def test_moved_names_keep_working_with_a_warning():
    with pytest.warns(DeprecationWarning, match="synctalk_fast.quantize"):
        moved = stf.models.quantize
    assert moved is stf.quantize


def test_replay_plays_a_file_into_a_stream_and_a_sink(engine, tpl, tmp_path):
    wav = synthetic_speech(1.0, seed=3)
    sf.write(tmp_path / "s.wav", wav, 16000, subtype="FLOAT")
    pipe = stf.Pipeline(engine)
    want = list(pipe.frames(pipe.audio_features(wav), tpl))
    sink = MemorySink()
    stats = replay(stf.Stream(engine, template=tpl), tmp_path / "s.wav", chunk_ms=30, output=sink)
    assert stats["frames"] == len(want) == len(sink.frames) and stats["audio_seconds"] == pytest.approx(1.0)
    assert all(np.array_equal(a, b) for a, b in zip(sink.frames, want))
    assert all(a is not None and len(a) == 640 for a in sink.audio)


def test_tensorrt_gets_a_fresh_cache_folder_made(tmp_path, monkeypatch):
    from synctalk_fast.runtime import SessionRequest
    from synctalk_fast.runtime.ort import PROVIDERS

    monkeypatch.setenv("SYNCTALK_FAST_CACHE", str(tmp_path / "fresh" / "cache"))
    row = PROVIDERS["TensorrtExecutionProvider"]
    opts = row.options(SessionRequest(threads=1, batch=16, precision="fp16", inputs={"img": (6, 320, 320)}))
    assert (tmp_path / "fresh" / "cache" / "tensorrt").is_dir()
    assert opts["trt_engine_cache_path"] == str(tmp_path / "fresh" / "cache" / "tensorrt")
    assert opts["trt_fp16_enable"] and opts["trt_profile_opt_shapes"] == "img:16x6x320x320"
    assert opts["trt_profile_max_shapes"] == "img:64x6x320x320"


@pytest.mark.parametrize("loadable", [True, False])
def test_tensorrt_is_offered_only_when_its_libraries_load(monkeypatch, loadable):
    from synctalk_fast.runtime import ort as ort_runtime

    rt = runtime.get_runtime()
    monkeypatch.setattr(
        type(rt),
        "installed",
        lambda self: ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
    )
    monkeypatch.setattr(ort_runtime, "tensorrt_loadable", lambda: loadable)
    want = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert rt.available() == (["TensorrtExecutionProvider"] + want if loadable else want)


@pytest.mark.parametrize("accelerator", [False, True])
def test_background_priority_only_where_the_unet_owns_the_cores(engine, tpl, feats, monkeypatch, accelerator):
    from synctalk_fast import pipeline as pipeline_module

    seen = {}
    real = pipeline_module.run_stages

    def spy(source, stages, **kw):
        seen["background"] = kw.get("background")
        return real(source, stages, **kw)

    monkeypatch.setattr(pipeline_module, "run_stages", spy)
    monkeypatch.setattr(Engine, "accelerator", property(lambda self: accelerator))
    frames = list(stf.Pipeline(engine).frames(feats[:5], tpl))
    assert len(frames) == 5 and seen["background"] == ([] if accelerator else [0])


@pytest.mark.parametrize("per_shape", [False, True])
def test_warmup_runs_every_batch_size_a_stream_can_send_where_the_runtime_plans_per_shape(model_dir, per_shape):
    eng = Engine(model_dir / "unet_328.onnx", model_dir / "audio_encoder.onnx", sessions=1, threads=2, batch_size=3)
    assert eng.unet.per_shape is False  # ONNX Runtime on the CPU
    eng.unet.per_shape = per_shape  # as on CUDA / TensorRT, and OpenVINO's static compiles
    assert eng.warmup() == ([1, 2, 3] if per_shape else [1])


def test_one_io_bound_session_shared_by_threads_keeps_each_callers_frames(model_dir):
    """IOBinding buffers are per batch size: two threads on one session must
    not see each other's inputs or outputs."""
    from synctalk_fast import models

    plain = models.load_session(model_dir / "unet_328.onnx", threads=1)
    bound = models.load_session(model_dir / "unet_328.onnx", threads=1, io_binding=True)
    rng = np.random.default_rng(5)
    inputs = [
        (rng.random((2, 6, 320, 320), dtype=np.float32), rng.standard_normal((2, 32, 16, 16), np.float32))
        for _ in range(2)
    ]
    want = [plain.run(image=i, audio=a) for i, a in inputs]
    errors = []

    def hammer(k):
        for _ in range(6):
            if not np.array_equal(bound.run(image=inputs[k][0], audio=inputs[k][1]), want[k]):
                errors.append(k)

    threads = [threading.Thread(target=hammer, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors
