"""EngineOptions: every engine option once, and every front end derived from it."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

import synctalk_fast as stf
from synctalk_fast.engine.options import OPTION_NAMES, EngineOptions, add_arguments, flag

#: A value other than the default for every option (a new option must add one here).
NON_DEFAULT = {
    "runtime": "openvino",
    "providers": ("cpu",),
    "device_id": 1,
    "precision": "bf16",
    "batch_size": 3,
    "sessions": 2,
    "threads": 1,
    "cache_mb": 64.0,
}
#: How each is spelled on the command line / in a CSV cell.
AS_TEXT = {
    "runtime": "openvino",
    "providers": "cpu",
    "device_id": "1",
    "precision": "bf16",
    "batch_size": "3",
    "sessions": "2",
    "threads": "1",
    "cache_mb": "64",
}


def test_every_option_has_a_test_value_and_help():
    assert set(NON_DEFAULT) == set(OPTION_NAMES) == set(AS_TEXT)
    for f in dataclasses.fields(EngineOptions):
        assert f.metadata["help"], f.name
        assert getattr(EngineOptions(), f.name) != NON_DEFAULT[f.name]


def test_defaults_and_conversions():
    o = EngineOptions()
    assert (o.runtime, o.precision, o.device_id, o.providers, o.batch_size) == ("onnxruntime", "fp32", 0, None, None)
    o = EngineOptions(providers=["cpu", " cuda "], batch_size="4", cache_mb="12.5")
    assert o.providers == ("cpu", "cuda") and o.batch_size == 4 and o.cache_mb == 12.5
    assert EngineOptions(providers="cuda;cpu").provider_list == ["cuda", "cpu"]
    assert EngineOptions(sessions="auto").sessions is None
    assert hash(o) == hash(EngineOptions(providers=("cpu", "cuda"), batch_size=4, cache_mb=12.5))


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"batch_size": 0}, "batch_size must be >= 1"),
        ({"sessions": -1}, "sessions must be >= 1"),
        ({"threads": "many"}, "threads: expected an integer"),
        ({"batch_size": 2.5}, "batch_size: expected an integer"),
        ({"batch_size": True}, "batch_size: expected a number"),
        ({"precision": "int4"}, "precision must be one of fp32, fp16, bf16"),
        ({"runtime": "tensorflow"}, "runtime must be one of auto, onnxruntime, openvino"),
        ({"device_id": -1}, "device_id must be >= 0"),
    ],
)
def test_bad_values_are_one_line_value_errors(changes, message):
    with pytest.raises(ValueError, match=message):
        EngineOptions(**changes)
    with pytest.raises(ValueError, match=message):
        EngineOptions.from_mapping(changes)


def test_merge_replace_and_unknown_names():
    base = EngineOptions(batch_size=2)
    assert EngineOptions.merge(base, {"batch_size": None, "threads": 1}) == EngineOptions(batch_size=2, threads=1)
    assert EngineOptions.merge(None, {}) == EngineOptions()
    with pytest.raises(TypeError, match="unknown option.*batchsize"):
        EngineOptions.merge(None, {"batchsize": 2}, where="Engine")
    with pytest.raises(TypeError, match="must be an EngineOptions"):
        EngineOptions.merge({"batch_size": 2})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="unknown option"):
        base.replace(speed=2)
    assert base.changed() == {"batch_size": 2}
    assert EngineOptions(providers=("cpu",)).to_dict()["providers"] == ["cpu"]


@pytest.mark.parametrize("name", OPTION_NAMES)
def test_mapping_keys_are_field_names_and_cells_convert(name):
    o = EngineOptions.from_mapping({name: AS_TEXT[name], "template": "x"}, source="jobs.csv:3")
    assert getattr(o, name) == NON_DEFAULT[name]


def test_mapping_errors_name_their_source():
    with pytest.raises(ValueError, match=r"^jobs.csv:3: batch_size must be >= 1"):
        EngineOptions.from_mapping({"batch_size": "0"}, source="jobs.csv:3")


@pytest.mark.parametrize("name", OPTION_NAMES)
def test_flags_given_beat_the_base_and_defaults_do_not(name):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    file_options = EngineOptions(**{name: NON_DEFAULT[name]})
    # not given: the config file's value stays
    assert EngineOptions.from_args(parser.parse_args([]), base=file_options) == file_options
    # given, even as the default value: the command line wins
    default_text = {"providers": "cpu,cuda", "cache_mb": "8"}.get(name, str(getattr(EngineOptions(), name) or 1))
    args = parser.parse_args([flag(name), default_text])
    assert getattr(EngineOptions.from_args(args, base=file_options), name) == getattr(
        EngineOptions.from_mapping({name: default_text}), name
    )
    args = parser.parse_args([flag(name), AS_TEXT[name]])
    assert getattr(EngineOptions.from_args(args), name) == NON_DEFAULT[name]


def test_flag_names():
    assert [flag(n) for n in OPTION_NAMES] == [
        "--runtime",
        "--providers",
        "--device",
        "--precision",
        "--batch-size",
        "--sessions",
        "--threads",
        "--cache-mb",
    ]
    parser = argparse.ArgumentParser()
    add_arguments(parser, only=("runtime", "providers"))
    assert {a.dest for a in parser._actions} == {"help", "runtime", "providers"}
    with pytest.raises(SystemExit):
        parser.parse_args(["--precision", "bf16"])


def test_engine_takes_options_and_keywords(model_dir):
    unet = model_dir / "unet_328.onnx"
    engine = stf.Engine(unet, options=EngineOptions(batch_size=3, sessions=1, threads=1))
    assert (engine.batch_size, len(engine.sessions), engine.sessions[0].threads) == (3, 1, 1)
    assert engine.options.batch_size == 3
    engine = stf.Engine(unet, options=EngineOptions(batch_size=3, sessions=1), batch_size=2)  # keyword over options
    assert engine.batch_size == 2
    with pytest.raises(TypeError, match="Engine: unknown option"):
        stf.Engine(unet, batch=2)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        stf.Engine(unet, batch_size=0)
