"""The command line as the Go ports' users type it: single-dash flags, -v
anywhere, one-line errors with exit codes 2 / 1 / 130, --json records."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import soundfile as sf

from synctalk_fast import cli, load_features, models
from synctalk_fast.demo import synthetic_speech


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    path = tmp_path_factory.mktemp("speech") / "s.wav"
    sf.write(path, synthetic_speech(1.0), 16000, subtype="PCM_16")
    return path


def test_the_go_audio_port_s_command_line_works_as_written(model_dir, speech, tmp_path, capsys):
    # ./bin/process -audio x -model m -output go_output -fps 25 -mode ave (its README)
    rc = cli.main(
        [
            "features",
            "-audio",
            str(speech),
            "-model",
            str(model_dir / "audio_encoder.onnx"),
            f"-output={tmp_path / 'go_output'}",
            "-fps",
            "25",
            "-mode",
            "ave",
            "-q",
        ]
    )
    assert rc == 0
    feats, windowed = load_features(tmp_path / "go_output" / "features.bin")
    assert feats.shape == (24, 512) and not windowed
    assert len(list((tmp_path / "go_output" / "frames").glob("frame_*.bin"))) == 24
    # --audio-encoder is the same option
    rc = cli.main(
        [
            "features",
            "--audio",
            str(speech),
            "--audio-encoder",
            str(model_dir / "audio_encoder.onnx"),
            "-o",
            str(tmp_path / "again"),
            "-q",
        ]
    )
    assert rc == 0 and np.array_equal(load_features(tmp_path / "again" / "features.bin")[0], feats)


def test_go_spellings_cover_every_flag_of_both_ports():
    parser = cli.build_parser()
    args = parser.parse_args(
        cli.go_spellings(
            [
                "generate",
                "-model",
                "u.onnx",
                "-audio",
                "a.bin",
                "-template",
                "t",
                "-output",
                "o",
                "-mode",
                "ave",
                "-start",
                "3",
                "-video",
                "-video-path",
                "r.mp4",
                "-audio-file",
                "s.wav",
                "-fps",
                "25",
            ],
            parser,
        )
    )
    assert (
        args.model,
        args.audio,
        args.template,
        args.output,
        args.mode,
        args.start,
        args.video,
        args.video_path,
        args.audio_file,
        args.fps,
    ) == ("u.onnx", "a.bin", "t", "o", "ave", 3, True, "r.mp4", "s.wav", 25.0)
    args = parser.parse_args(
        cli.go_spellings(
            ["features", "-audio", "x", "-model", "m", "-output", "d", "-fps", "20", "-mode", "ave"], parser
        )
    )
    assert (args.audio, args.audio_encoder, args.output, args.fps, args.mode) == ("x", "m", "d", 20.0, "ave")
    # short options, negative numbers and unknown words are left alone
    assert cli.go_spellings(["generate", "-o", "x", "-q", "-5", "-nope"], parser) == [
        "generate",
        "-o",
        "x",
        "-q",
        "-5",
        "-nope",
    ]


@pytest.mark.parametrize("argv", [["-v", "info", "--json", "-"], ["info", "-v", "--json", "-"]])
def test_verbose_before_or_after_the_command_and_info_as_json(argv, capsys):
    assert cli.build_parser().parse_args(argv).verbose
    assert cli.main(argv) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["synctalk_fast"] and record["backend"] in ("cpp", "numba", "numpy")


def test_exit_codes_and_one_line_errors(model_dir, speech, tmp_path, monkeypatch, capsys):
    rc = cli.main(
        [
            "generate",
            "--model",
            str(model_dir / "unet_328.onnx"),
            "--audio",
            str(speech),
            "--template",
            str(tmp_path / "none"),
            "-o",
            str(tmp_path / "o.mp4"),
            "-q",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "none" in err and "Traceback" not in err

    def crash(args):
        raise RuntimeError("CUDA failure 2: out of memory\n  at somewhere deep")

    monkeypatch.setattr(cli.info, "run", crash)
    rc = cli.main(["info"])
    err = capsys.readouterr().err
    assert rc == 1 and err.count("\n") == 1 and "internal error: RuntimeError: CUDA failure 2" in err
    assert "-v" in err and "Traceback" not in err

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli.info, "run", interrupted)
    assert cli.main(["info"]) == 130


def test_generate_and_export_write_json_records(model_dir, speech, template_dir, tmp_path, capsys):
    tpl = template_dir
    rc = cli.main(
        [
            "generate",
            "--model",
            str(model_dir / "unet_328.onnx"),
            "--audio-encoder",
            str(model_dir / "audio_encoder.onnx"),
            "--audio",
            str(speech),
            "--template",
            str(tpl),
            "-o",
            str(tmp_path / "o.mp4"),
            "--providers",
            "cpu",
            "--json",
            str(tmp_path / "r.json"),
            "-q",
        ]
    )
    assert rc == 0
    record = json.loads((tmp_path / "r.json").read_text())
    assert record["frames"] == 24 and record["output"] == [str(tmp_path / "o.mp4")]
    assert record["provider"] == "CPUExecutionProvider" and record["device"] == "cpu" and record["runtime"]

    torch = pytest.importorskip("torch")  # to write a .pth to export
    state = models.random_state_dict("audio_encoder")
    torch.save({k: torch.from_numpy(np.asarray(v)) for k, v in state.items()}, tmp_path / "enc.pth")
    rc = cli.main(
        ["export", "--checkpoint", str(tmp_path / "enc.pth"), "-o", str(tmp_path / "enc.onnx"), "--json", "-"]
    )
    record = json.loads(capsys.readouterr().out)
    assert rc == 0 and record["kind"] == "audio_encoder" and record["inputs"] == {"mel": ["N", 1, 80, 16]}


def test_providers_are_strict_with_short_aliases(model_dir, speech, tmp_path, capsys):
    base = [
        "generate",
        "--model",
        str(model_dir / "unet_328.onnx"),
        "--audio-encoder",
        str(model_dir / "audio_encoder.onnx"),
        "--audio",
        str(speech),
        "--template",
        str(tmp_path),
        "-q",
    ]
    assert cli.main(base + ["--providers", "gpu"]) == 2
    err = capsys.readouterr().err
    assert "unknown provider 'gpu'; use one of tensorrt, cuda" in err and err.count("\n") == 1
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        assert cli.main(base + ["--providers", "cuda,cpu"]) == 2
        assert "'cuda' is not available in this onnxruntime build (installed: " in capsys.readouterr().err


def test_encoder_option(model_dir, speech, template_dir, tmp_path, capsys):
    from synctalk_fast import video

    base = [
        "generate",
        "--model",
        str(model_dir / "unet_328.onnx"),
        "--audio-encoder",
        str(model_dir / "audio_encoder.onnx"),
        "--audio",
        str(speech),
        "-q",
        "--template",
        str(template_dir),
    ]
    if video.encoder_problem("h264_nvenc") is not None:
        assert cli.main(base + ["-o", str(tmp_path / "nv.mp4"), "--encoder", "h264_nvenc"]) == 2
        err = capsys.readouterr().err
        assert "encoder h264_nvenc cannot run here" in err and err.count("\n") == 1
        assert not (tmp_path / "nv.mp4").exists()
    assert cli.main(base + ["-o", str(tmp_path / "auto.mp4"), "-encoder=auto"]) == 0
    assert (tmp_path / "auto.mp4").stat().st_size > 0


def test_batch_reports_a_bad_manifest_with_line_numbers_and_exit_2(tmp_path, capsys):
    manifest = tmp_path / "jobs.jsonl"
    manifest.write_text('{"audio": "a.wav", "template": "t", "unet": "u.onnx", "output": "x.mp4"}\nnot json\n')
    assert cli.main(["batch", str(manifest), "--output-dir", str(tmp_path / "out"), "-q"]) == 2
    err = capsys.readouterr().err
    assert "jobs.jsonl:2: bad JSON" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()
    good = tmp_path / "good.jsonl"
    good.write_text('{"audio": "a.wav", "template": "t", "unet": "u.onnx", "output": "x.mp4"}\n')
    assert cli.main(["batch", str(good), "--output-dir", str(tmp_path / "out"), "--num-cpus", "1", "-q"]) == 2
    err = capsys.readouterr().err
    assert "options of Ray workers" in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_batch_ray_without_ray_installed_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    good = tmp_path / "good.jsonl"
    good.write_text('{"audio": "a.wav", "template": "t", "unet": "u.onnx", "output": "x.mp4"}\n')
    assert cli.main(["batch", str(good), "--output-dir", str(tmp_path / "out"), "--ray", "-q"]) == 2
    err = capsys.readouterr().err
    assert "pip install 'synctalk-fast[ray]'" in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()
