"""What a Stream runs on: an Engine, a Pipeline, or a U-Net path with engine options."""

from __future__ import annotations

import numpy as np
import pytest

import synctalk_fast as stf
from synctalk_fast.demo import synthetic_speech
from synctalk_fast.engine import EngineOptions


@pytest.fixture(scope="module")
def speech():
    return synthetic_speech(0.5)


def frames_of(stream, speech):
    with stream:
        stream.push_audio(speech)
        stream.flush()
        return list(stream.frames())


def test_a_unet_path_builds_the_streams_own_engine(model_dir, template_dir, pipe, tpl, speech):
    want = frames_of(stf.Stream(pipe, template=tpl), speech)
    stream = stf.Stream(
        model_dir / "unet_328.onnx",
        audio_encoder=model_dir / "audio_encoder.onnx",
        template=template_dir,
        options=EngineOptions(sessions=1, threads=1, cache_mb=4),
        batch_size=2,
        cache_mb=0,
        warmup=False,
    )
    engine = stream.engine
    assert engine.options.sessions == 1 and engine.options.batch_size == 2 and engine.batch_size == 2
    assert stream.template.cache.capacity == 0  # the options' cache_mb, keyword over options
    got = frames_of(stream, speech)
    assert len(got) == len(want) > 0
    for f, w in zip(got, want):
        assert f.index == w.index
        np.testing.assert_array_equal(f.image, w.image)
    with pytest.raises(RuntimeError, match="closed"):  # the stream closed the engine it built
        engine.attach(stream)
    with pytest.raises(stf.FeatureError, match="audio_encoder"):
        stf.Stream(str(model_dir / "unet_328.onnx"), template=tpl, sessions=1, threads=1, warmup=False)


def test_a_template_folder_gets_the_engines_cache_mb(model_dir, template_dir):
    engine = stf.Engine(
        model_dir / "unet_328.onnx", model_dir / "audio_encoder.onnx", sessions=1, threads=1, cache_mb=0
    )
    with stf.Stream(engine, template=template_dir, warmup=False) as stream:
        assert stream.template.cache.capacity == 0
    with stf.Stream(engine, template=stf.Template(template_dir, cache_mb=8), warmup=False) as stream:
        assert stream.template.cache.capacity > 0  # a Template given is used as it is
    engine.close()


@pytest.mark.parametrize(
    "given", [{"options": EngineOptions()}, {"batch_size": 2}, {"precision": "fp16"}, {"audio_encoder": "enc.onnx"}]
)
def test_engine_options_with_an_engine_or_pipeline_are_refused(pipe, tpl, given):
    name = next(iter(given))
    for runs_on in (pipe, pipe.engine):
        with pytest.raises(ValueError, match=f"Stream: {name} apply only to an engine built from a U-Net path"):
            stf.Stream(runs_on, template=tpl, warmup=False, **given)


def test_unknown_keywords_and_forwarded_nones(pipe, tpl):
    with pytest.raises(TypeError, match="idel"):
        stf.Stream(pipe, template=tpl, idel=True)
    with stf.Stream(pipe.engine, template=tpl, batch_size=None, options=None, warmup=False) as stream:
        assert stream.engine is pipe.engine  # a None override is no option given
    with pipe.stream(tpl, idle=True, max_lag=1.0, layout="throughput") as stream:  # Pipeline.stream still works
        assert stream.idle and stream.max_lag == 1.0 and stream.engine is pipe.engine
