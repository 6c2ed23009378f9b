"""Engine flags on the command line: one flag per EngineOptions field on every command that
runs an engine, every flag reaching the application, and the precedence rule (a flag given on
the command line beats the config file or manifest, which beats the default) for every field.

The applications are replaced by stand-ins that record what they were given, so no server,
pool or pipeline starts; the values come from each field's metadata, so a new option is
tested here without a new line.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import subprocess
import sys
from types import SimpleNamespace
from typing import Any

import pytest

from synctalk_fast import cli
from synctalk_fast.engine.options import OPTION_NAMES, EngineOptions, flag

FIELDS = {f.name: f for f in dataclasses.fields(EngineOptions)}
#: Options whose default is a value a flag can spell (``--precision fp32``), not "not set".
SPELLED_DEFAULTS = [name for name in OPTION_NAMES if FIELDS[name].default is not None]


def texts(name: str) -> list[str]:
    """Two command-line spellings of values other than the default and of each other, from the field's metadata."""
    meta, default = FIELDS[name].metadata, FIELDS[name].default
    if meta["choices"] is not None:
        found = [c for c in meta["choices"] if c != default]
    elif meta["minimum"] is not None:  # a number
        found = [str(int(meta["minimum"]) + 2), str(int(meta["minimum"]) + 3)]
    else:  # a list of names
        found = ["cpu", "cuda,cpu"]
    assert len(found) >= 2, f"{name}: no two values other than the default to test with"
    return found[:2]


def value(name: str, text: str) -> Any:
    """What ``text`` becomes as option ``name``."""
    return getattr(EngineOptions.from_mapping({name: text}), name)


def toml_line(name: str, text: str) -> str:
    """``name = value`` in TOML, typed as the option is."""
    v = value(name, text)
    if isinstance(v, tuple):
        return f"{name} = {json.dumps(list(v))}"
    return f"{name} = {json.dumps(v)}"


def test_every_option_has_two_test_values():
    for name in OPTION_NAMES:
        a, b = (value(name, t) for t in texts(name))
        assert a != b and getattr(EngineOptions(), name) not in (a, b)


# --- every command that runs an engine has every engine flag -----------------------------


def _flags(command: str) -> set[str]:
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return {o for o in sub.choices[command]._option_string_actions if o.startswith("--")}


@pytest.mark.parametrize("command", ["generate", "stream", "serve", "batch"])
def test_engine_commands_have_every_engine_flag(command):
    assert {flag(name) for name in OPTION_NAMES} <= _flags(command)


def test_features_and_quantize_have_the_flags_that_apply():
    engine_flags = {flag(name) for name in OPTION_NAMES}
    assert _flags("features") & engine_flags == {"--runtime", "--providers", "--device"}
    assert _flags("quantize") & engine_flags == {"--threads"}


# --- serve: flag > config file > default -----------------------------------------------


class _Server:
    """Stands in for AvatarServer: records its arguments."""

    made: list[dict[str, Any]] = []

    def __init__(self, avatars, audio_encoder, **kwargs):
        _Server.made.append({"avatars": avatars, "audio_encoder": audio_encoder, **kwargs})
        engine = SimpleNamespace(runtime="onnxruntime", providers=["CPUExecutionProvider"], precision="fp32")
        self.avatars = {a.name: SimpleNamespace(engine=engine) for a in avatars}
        self.capacity = 1


@pytest.fixture
def served(monkeypatch):
    """Run ``synctalk-fast serve ARGS`` with the server replaced; returns what AvatarServer and serve got."""
    serve_module = importlib.import_module("synctalk_fast.serve")
    runs: list[dict[str, Any]] = []
    monkeypatch.setattr(serve_module, "AvatarServer", _Server)
    monkeypatch.setattr(serve_module, "serve", lambda server, **kw: runs.append(kw))
    _Server.made = []

    def run(*argv: str) -> dict[str, Any]:
        assert cli.main(["serve", "--avatar", "ann=tpl:unet.onnx", *argv]) == 0
        return dict(_Server.made[-1], **runs[-1])

    return run


def _config(tmp_path, *lines: str):
    path = tmp_path / "avatars.toml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


@pytest.mark.parametrize("name", OPTION_NAMES)
def test_serve_flag_beats_config_file_beats_default(name, served, tmp_path):
    in_file, on_line = texts(name)
    config = _config(tmp_path, toml_line(name, in_file))
    assert served()["options"] == EngineOptions()
    assert getattr(served("--config", config)["options"], name) == value(name, in_file)
    assert getattr(served("--config", config, flag(name), on_line)["options"], name) == value(name, on_line)
    assert served(flag(name), on_line)["options"] == EngineOptions().replace(**{name: value(name, on_line)})


@pytest.mark.parametrize("name", SPELLED_DEFAULTS)
def test_serve_flag_at_its_default_still_beats_the_config_file(name, served, tmp_path):
    # the bug: `--precision fp32` or `--runtime onnxruntime` could not override the file
    config = _config(tmp_path, toml_line(name, texts(name)[0]))
    default = getattr(EngineOptions(), name)
    options = served("--config", config, flag(name), str(default))["options"]
    assert getattr(options, name) == default


def test_serve_hands_every_engine_flag_to_the_server(served):
    # the bug: --batch-size, --device and --cache-mb were accepted and dropped
    argv = [word for name in OPTION_NAMES for word in (flag(name), texts(name)[1])]
    expected = EngineOptions(**{name: value(name, texts(name)[1]) for name in OPTION_NAMES})
    got = served(*argv)
    assert got["options"] == expected
    assert not set(OPTION_NAMES) & set(got)  # all in options=, none forwarded another way


def test_serve_settings_flag_beats_config_file_beats_default(served, tmp_path):
    config = _config(
        tmp_path,
        'host = "127.0.0.2"',
        "port = 9001",
        "max_clients = 3",
        'allowed_origins = ["https://a.example"]',
        'audio_encoder = "enc.onnx"',
    )
    got = served()
    assert (got["host"], got["port"], got["max_clients"], got["allowed_origins"]) == ("127.0.0.1", 8000, "auto", [])
    got = served("--config", config)
    assert (got["host"], got["port"], got["max_clients"]) == ("127.0.0.2", 9001, 3)
    assert got["audio_encoder"] == tmp_path / "enc.onnx" and got["allowed_origins"] == ["https://a.example"]
    got = served(
        "--config",
        config,
        "--host",
        "127.0.0.3",
        "--port",
        "9002",
        "--max-clients",
        "2",
        "--audio-encoder",
        "mine.onnx",
        "--allowed-origin",
        "https://b.example",
    )
    assert (got["host"], got["port"], got["max_clients"], got["audio_encoder"]) == ("127.0.0.3", 9002, 2, "mine.onnx")
    assert got["allowed_origins"] == ["https://b.example", "https://a.example"]


def test_serve_max_sessions_is_the_former_name_of_max_clients(served, capsys):
    assert served("--max-sessions", "4")["max_clients"] == 4
    assert served("-max-sessions", "auto")["max_clients"] == "auto"  # the Go spelling too
    assert cli.main(["serve", "--avatar", "ann=tpl:unet.onnx", "--max-clients", "many"]) == 2
    err = capsys.readouterr().err
    assert "--max-clients must be 'auto' or an integer >= 1" in err and err.count("\n") == 1


# --- generate, and the other engine commands: flag > default -----------------------------


@pytest.fixture
def generated(monkeypatch, tmp_path):
    """Run ``synctalk-fast generate ARGS`` with pipeline.generate replaced; returns its keywords."""
    pipeline = importlib.import_module("synctalk_fast.pipeline")
    calls: list[dict[str, Any]] = []

    def generate(audio, **kwargs):
        calls.append(dict(kwargs, audio=audio))
        return SimpleNamespace(frames=1, fps=25.0, seconds=0.04, frames_per_second=25.0, timings={}, engine={})

    monkeypatch.setattr(pipeline, "generate", generate)

    def run(*argv: str) -> dict[str, Any]:
        assert (
            cli.main(
                [
                    "generate",
                    "--audio",
                    "s.wav",
                    "--template",
                    "t",
                    "--audio-encoder",
                    "e.onnx",
                    "-o",
                    str(tmp_path / "o.mp4"),
                    "-q",
                    *argv,
                ]
            )
            == 0
        )
        return calls[-1]

    return run


@pytest.mark.parametrize("name", OPTION_NAMES)
def test_generate_flag_beats_default(name, generated):
    assert generated()["options"] == EngineOptions()
    text = texts(name)[0]
    got = generated(flag(name), text)
    assert got["options"] == EngineOptions().replace(**{name: value(name, text)})
    assert not set(OPTION_NAMES) & set(got)


def test_generate_hands_on_its_own_options(generated):
    got = generated(
        "--start",
        "3",
        "--fps",
        "20",
        "--crf",
        "18",
        "--preset",
        "fast",
        "--feather",
        "2",
        "--encoder",
        "libx264",
        "--mode",
        "ave",
    )
    assert (got["start"], got["fps"], got["crf"], got["preset"], got["feather"], got["encoder"], got["mode"]) == (
        3,
        20.0,
        18,
        "fast",
        2,
        "libx264",
        "ave",
    )
    assert got["unet"] == "./models/unet_328.onnx" and got["audio_encoder"] == "e.onnx" and got["progress"] is False


class _Stop(Exception):
    pass


@pytest.mark.parametrize(
    "command, target, argv",
    [
        ("stream", "synctalk_fast.cli.stream.Pipeline", ["--audio", "s.wav", "--template", "t"]),
        ("features", "synctalk_fast.cli.generate.Engine", ["--audio", "s.wav"]),
    ],
)
def test_stream_and_features_hand_on_the_flags_given(command, target, argv, monkeypatch):
    got: list[dict[str, Any]] = []

    def record(*args, **kwargs):
        got.append(kwargs)
        raise KeyboardInterrupt  # stop there: exit status 130

    monkeypatch.setattr(target, record)
    assert cli.main([command, *argv, "-q"]) == 130 and got[-1]["options"] == EngineOptions()
    names = ["runtime", "providers", "device_id"] if command == "features" else OPTION_NAMES
    words = [word for name in names for word in (flag(name), texts(name)[1])]
    assert cli.main([command, *argv, *words, "-q"]) == 130
    assert got[-1]["options"] == EngineOptions(**{name: value(name, texts(name)[1]) for name in names})


def test_quantize_hands_on_threads(monkeypatch):
    quantize = importlib.import_module("synctalk_fast.quantize")
    got: list[tuple[tuple, dict[str, Any]]] = []

    def record(*args, **kwargs):
        got.append((args, kwargs))
        raise KeyboardInterrupt

    monkeypatch.setattr(quantize, "quantize", record)
    assert (
        cli.main(
            [
                "quantize",
                "--model",
                "u.onnx",
                "--template",
                "t",
                "--features",
                "f.bin",
                "-o",
                "q.onnx",
                "--threads",
                "3",
                "-q",
            ]
        )
        == 130
    )
    args, kwargs = got[-1]
    assert args == ("u.onnx", "q.onnx") and kwargs["options"] == EngineOptions(threads=3)


# --- batch: flag > manifest (the keywords render_batch gets) --------------------------------


@pytest.fixture
def batched(monkeypatch, tmp_path):
    """Run ``synctalk-fast batch ARGS`` with render_batch replaced; returns its keywords."""
    batch = importlib.import_module("synctalk_fast.batch")
    calls: list[dict[str, Any]] = []

    def render_batch(jobs, **kwargs):
        calls.append(kwargs)
        return SimpleNamespace(results=[], exit_code=0, to_dict=lambda: {})

    monkeypatch.setattr(batch, "render_batch", render_batch)

    def run(*argv: str) -> dict[str, Any]:
        assert (
            cli.main(["batch", str(tmp_path / "jobs.jsonl"), "--output-dir", str(tmp_path / "out"), "-q", *argv]) == 0
        )
        return calls[-1]

    return run


@pytest.mark.parametrize("name", OPTION_NAMES)
def test_batch_flags_given_beat_the_manifest_and_others_leave_it(name, batched):
    got = batched()
    assert not set(OPTION_NAMES) & set(got)  # nothing given: each job keeps its manifest value or the default
    assert "options" not in got or got["options"] is None
    text = texts(name)[0]
    got = batched(flag(name), text)
    assert {k: got[k] for k in OPTION_NAMES if k in got} == {name: value(name, text)}


@pytest.mark.parametrize("name", SPELLED_DEFAULTS)
def test_batch_flag_at_its_default_is_handed_on(name, batched):
    default = getattr(EngineOptions(), name)
    assert batched(flag(name), str(default))[name] == default  # beats a manifest's other value


def test_batch_hands_on_its_own_options(batched):
    got = batched(
        "--workers", "2", "--retries", "1", "--num-cpus", "1.5", "--num-gpus", "0", "--ship-inputs", "--ray", "auto"
    )
    assert (
        got["workers"],
        got["retries"],
        got["num_cpus"],
        got["num_gpus"],
        got["ship_inputs"],
        got["ray_address"],
        got["progress"],
    ) == (2, 1, 1.5, 0.0, True, "auto", False)


# --- imports ------------------------------------------------------------------------------


HEAVY = ("aiortc", "uvicorn", "starlette", "ray", "torch", "nncf")
APPLICATIONS = (
    "synctalk_fast.serve",
    "synctalk_fast.server",
    "synctalk_fast.webrtc",
    "synctalk_fast.batch",
    "synctalk_fast.quantize",
    "synctalk_fast.quantization",
    "synctalk_fast.benchmark",
)


def test_info_imports_no_server_ray_torch_or_quantizer():
    code = (
        "import sys, json\n"
        "import synctalk_fast\n"
        "before = set(sys.modules)\n"
        "from synctalk_fast.cli import main\n"
        "assert main(['info', '--json', '-']) == 0\n"
        "print(json.dumps({'all': sorted(sys.modules), 'new': sorted(set(sys.modules) - before)}))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    modules = json.loads(res.stdout.splitlines()[-1])
    assert not [m for m in modules["all"] if m.split(".")[0] in HEAVY]
    # the package itself may import batch and quantize (its top-level names); the command line adds none
    assert not [m for m in modules["new"] if m.startswith(APPLICATIONS)]
    assert not [
        m
        for m in modules["all"]
        if m.startswith(
            ("synctalk_fast.serve", "synctalk_fast.server", "synctalk_fast.webrtc", "synctalk_fast.benchmark")
        )
    ]
