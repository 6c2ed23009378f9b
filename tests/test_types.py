"""The public type aliases: one place to import them, each defined beside the code that reads it."""

from __future__ import annotations

import inspect
import os
import typing

import numpy as np

import synctalk_fast as stf
from synctalk_fast import types


def test_aliases_name_what_the_api_accepts():
    assert set(typing.get_args(types.AudioLike)) == {str, os.PathLike[str], np.ndarray}
    assert stf.Template in typing.get_args(types.TemplateLike)
    assert stf.models.ModelSession in typing.get_args(types.ModelLike)
    assert stf.Sink in typing.get_args(types.OutputLike)
    assert types.EngineOptions is stf.EngineOptions
    assert set(types.__all__) <= set(dir(types))


def test_the_public_signatures_are_annotated():
    for fn in (
        stf.generate,
        stf.Pipeline.__init__,
        stf.Pipeline.generate,
        stf.Engine.__init__,
        stf.Stream.__init__,
        stf.render_batch,
        stf.quantize,
        stf.load_audio,
        stf.open_sink,
    ):
        hints = typing.get_type_hints(fn)
        assert "return" in hints or fn.__name__ == "__init__", fn
        params = [p for p in inspect.signature(fn).parameters if p != "self"]
        assert all(p in hints for p in params), (fn, [p for p in params if p not in hints])
