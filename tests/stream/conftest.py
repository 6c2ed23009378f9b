"""Fixtures of the stream tests: a two-session pipeline and the synthetic template."""

from __future__ import annotations

import pytest

import synctalk_fast as stf


@pytest.fixture(scope="module")
def pipe(model_dir):
    # two sessions even on a one-core runner, so both stream layouts exist
    return stf.Pipeline(
        model_dir / "unet_328.onnx", audio_encoder=model_dir / "audio_encoder.onnx", sessions=2, threads=1
    )


@pytest.fixture(scope="module")
def tpl(template_dir):
    return stf.Template(template_dir)
