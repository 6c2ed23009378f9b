"""The ``synctalk-fast`` command line."""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import traceback
from pathlib import Path

import soundfile as sf

from . import models
from ._filters import SAMPLE_RATE
from ._util.atomic import write_atomic
from ._config import config, show_config
from ._version import __version__
from .batch import render_batch
from .benchmark import main as bench_main
from .demo import synthetic_speech, synthetic_template
from .engine import Engine
from .errors import Error
from .features import save_features
from .pipeline import Pipeline, generate
from .quantization import quantize
from .replay import replay
from .server import AvatarServer, AvatarSpec, check_binding, load_config, serve
from .runtime import DEFAULT_RUNTIME, PRECISIONS, RUNTIMES
from .shapes import MODE_TABLE
from .video import DEFAULT_ENCODER as DEFAULT_VIDEO_ENCODER, DEFAULT_PRESET, ENCODERS, X264_PRESETS

KINDS = {"unet": "unet", "audio-encoder": "audio_encoder"}
MODES = tuple(MODE_TABLE)


def _write_json(target: str | None, record: dict) -> None:
    """``--json FILE`` (``-``: standard output), written atomically."""
    if not target:
        return
    text = json.dumps(record, indent=2, default=str) + "\n"
    if target == "-":
        sys.stdout.write(text)
    else:
        write_atomic(Path(target), text.encode())


def _info(args: argparse.Namespace) -> int:
    if args.json:
        _write_json(args.json, config())
    else:
        show_config()
    return 0


def _export(args: argparse.Namespace) -> int:
    state = models.load_state_dict(args.checkpoint)
    summary = models.export_onnx(state, args.output, kind=KINDS.get(args.kind), mode=args.mode)
    if args.json != "-":
        print(summary)
    _write_json(args.json, {"path": str(summary.path), "kind": summary.kind, "mode": summary.mode,
                            "mode_guessed": summary.mode_guessed, "parameters": summary.parameters,
                            "inputs": summary.inputs, "outputs": summary.outputs})
    return 0


def _demo_models(args: argparse.Namespace) -> int:
    out = Path(args.output)
    unet_name = "unet_328.onnx" if args.mode == "ave" else f"unet_328_{args.mode}.onnx"
    jobs = [("unet", args.mode, out / unet_name)]
    if args.mode == "ave":
        jobs.append(("audio_encoder", "ave", out / "audio_encoder.onnx"))
    for kind, mode, path in jobs:
        state = models.random_state_dict(kind, mode=mode, seed=args.seed)
        summary = models.export_onnx(state, path, kind=kind, mode=mode if kind == "unet" else None)
        print(summary)
    print(f"demo models (fixed random weights, seed {args.seed}) are in {out}/")
    return 0


def _is_features(path: str | None) -> bool:
    p = Path(path) if path else None
    return p is not None and (p.suffix in (".bin", ".npy") or p.is_dir())


def _providers(args: argparse.Namespace) -> list[str] | None:
    return [p.strip() for p in args.providers.split(",") if p.strip()] if args.providers else None


def _generate(args: argparse.Namespace) -> int:
    features = args.features
    audio = args.audio
    if _is_features(audio):  # the Go port's --audio features.bin
        features, audio = audio, None
    if args.audio_file:
        audio = args.audio_file
    if audio is None and features is None:
        raise ValueError("give --audio (a sound file or a features .bin) or --features")
    encoder = args.audio_encoder
    if encoder is None and features is None and Path(DEFAULT_ENCODER).is_file():
        encoder = DEFAULT_ENCODER
    outputs = [args.output]
    if args.video:  # the Go port: frames in --output and a video at --video-path, in one pass
        outputs.append(args.video_path)
    result = generate(audio, output=outputs, features=features, template=args.template, unet=args.model,
                      audio_encoder=encoder, mode=args.mode, runtime=args.runtime, providers=_providers(args),
                      batch_size=args.batch_size,
                      start=args.start, fps=args.fps, crf=args.crf, preset=args.preset, encoder=args.encoder,
                      feather=args.feather,
                      threads=args.threads, sessions=args.sessions, precision=args.precision, cache_mb=args.cache_mb,
                      device_id=args.device, progress=not args.quiet)
    if not args.quiet and args.json != "-":
        print(result)
    _write_json(args.json, {"output": [str(o) for o in outputs], "frames": result.frames, "fps": result.fps,
                            "seconds": result.seconds, "frames_per_second": result.frames_per_second,
                            "timings": result.timings, **result.engine})
    return 0


def _features(args: argparse.Namespace) -> int:
    engine = Engine(audio_encoder=args.audio_encoder, runtime=args.runtime, providers=_providers(args))
    feats = engine.audio_features(args.audio, progress=not args.quiet)
    out = save_features(feats, args.output, mode="ave", fps=args.fps, metadata={"audio": str(args.audio)})
    if not args.quiet:
        print(f"{out}/: features.bin [{feats.shape[0]}, {feats.shape[1]}] + .bin.json, "
              f"frames/frame_00000.bin .. frame_{feats.shape[0] - 1:05d}.bin, metadata.json")
    return 0


def _stream(args: argparse.Namespace) -> int:
    encoder = args.audio_encoder or (DEFAULT_ENCODER if Path(DEFAULT_ENCODER).is_file() else None)
    pipe = Pipeline(args.model, audio_encoder=encoder, runtime=args.runtime, providers=_providers(args),
                    batch_size=args.batch_size, threads=args.threads, sessions=args.sessions, cache_mb=args.cache_mb,
                    precision=args.precision, device_id=args.device)
    stream = pipe.stream(args.template, start=args.start, idle=args.idle, max_lag=args.max_lag, layout=args.layout)
    if not args.quiet:
        mode = (("real time" if args.speed == 1 else f"{args.speed:g} x real time") if args.realtime
                else "as fast as possible")
        print(f"streaming {args.audio} in {args.chunk_ms:g} ms chunks, {mode}; {pipe.engine.runtime} "
              f"{pipe.engine.providers[0]} {pipe.engine.precision}, {len(stream.unets)} U-Net session(s) ({stream.layout} layout), "
              f"batch <= {pipe.batch_size}")
    stats = replay(stream, args.audio, chunk_ms=args.chunk_ms, realtime=args.realtime, speed=args.speed,
                   output=args.output, crf=args.crf, preset=args.preset, encoder=args.encoder)
    stats.update(pipe.engine.describe())
    _write_json(args.json, stats)
    if not args.quiet:
        wall, first = stats["wall_seconds"], stats["first_frame_seconds"]
        ms = {k: v * 1000 for k, v in stats.items() if k.startswith(("wait_", "delay_"))}
        print(f"{stats['frames']} frames ({stats['idle_frames']} idle, {stats['skipped_frames']} skipped) in {wall:.2f} s: "
              f"{stats['frames_per_second']:.1f} frames/s (real time needs {stream.fps:g})")
        print(f"wait (last needed sample -> frame out): p50 {ms['wait_p50']:.0f} ms, p95 {ms['wait_p95']:.0f} ms, "
              f"max {ms['wait_max']:.0f} ms")
        print(f"delay (frame's own audio in -> frame out): p50 {ms['delay_p50']:.0f} ms, "
              f"p95 {ms['delay_p95']:.0f} ms, max {ms['delay_max']:.0f} ms")
        if first is not None:
            print(f"first lip-synced frame after {first * 1000:.0f} ms; most frames waiting at once: "
                  f"{stats['max_buffered']} (bound {stats['max_ready']})")
        if args.output:
            print(f"recorded: {args.output}")
    return 0


def _quantize(args: argparse.Namespace) -> int:
    if args.audio is None and args.features is None:
        raise ValueError("give --audio (with --audio-encoder) or --features")
    encoder = args.audio_encoder
    if encoder is None and args.features is None and Path(DEFAULT_ENCODER).is_file():
        encoder = DEFAULT_ENCODER
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    target = None if args.target_psnr <= 0 else args.target_psnr
    keep = [b.strip() for b in args.keep_fp32.split(",") if b.strip()] if args.keep_fp32 else []
    report = quantize(args.model, args.output, template=args.template, audio=args.audio, audio_encoder=encoder,
                             features=args.features, report=args.report, methods=methods, target_psnr=target,
                             calibration=args.calibration, validation=args.validation, heldout=args.heldout,
                             keep_fp32=keep, threads=args.threads, seed=args.seed, tool=args.tool,
                             progress=None if args.quiet else print)
    print(report)
    print(f"report: {args.report or str(args.output) + '.json'}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    models_dir = out / "models"
    for kind, name in (("unet", "unet_328.onnx"), ("audio_encoder", "audio_encoder.onnx")):
        if not (models_dir / name).is_file():
            models.export_onnx(models.random_state_dict(kind), models_dir / name, kind=kind)
    template = synthetic_template(out / "template")
    speech = out / "speech.wav"
    sf.write(speech, synthetic_speech(args.seconds), SAMPLE_RATE, subtype="PCM_16")
    result = generate(speech, template=template, output=out / "demo.mp4", unet=models_dir / "unet_328.onnx",
                      audio_encoder=models_dir / "audio_encoder.onnx", progress=not args.quiet)
    print(result)
    print(f"demo models: {models_dir}/ (fixed random weights: the mouth changes with the audio, "
          "but it is not a trained face)")
    print(f"template:    {template}/ (a drawn face, 50 frames)")
    print(f"audio:       {speech}")
    print(f"video:       {result.output}")
    return 0


def _bench(args: argparse.Namespace) -> int:
    return bench_main(args.args)


DEFAULT_UNET = "./models/unet_328.onnx"
DEFAULT_ENCODER = "./models/audio_encoder.onnx"


def _engine_options(p: argparse.ArgumentParser) -> None:
    """The Pipeline's session and cache options, shared by generate and stream."""
    _runtime_option(p)
    p.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="U-Net precision: fp32 (exact), fp16 (GPUs; OpenVINO on ARM CPUs), bf16 (OpenVINO on CPUs "
                   "with avx512_bf16 or AMX) (default: fp32)")
    p.add_argument("--batch-size", type=int, help="frames per U-Net call, at most (default: 4 on CPU, 16 on GPU)")
    p.add_argument("--providers", help="providers, comma-separated: names or aliases cpu, cuda, tensorrt, "
                   "rocm, coreml, directml (default: best available; one not installed is an error)")
    p.add_argument("--device", type=int, default=0, help="which GPU (default: 0)")
    p.add_argument("--threads", type=int, help="ONNX Runtime threads per U-Net session (default: cores / sessions)")
    p.add_argument("--sessions", type=int, help="parallel U-Net sessions (default: one per core up to 4 on CPU, 1 on GPU)")
    p.add_argument("--cache-mb", type=float, help="decoded template frame cache in MiB (default: 1/4 of free memory)")


def _serve(args: argparse.Namespace) -> int:
    conf = load_config(args.config) if args.config else {"avatars": []}
    avatars = conf["avatars"] + [AvatarSpec.parse(a) for a in args.avatar]
    if not avatars:
        raise ValueError("give at least one --avatar NAME=TEMPLATE_DIR:UNET.onnx (or --config)")
    host = args.host or conf.get("host", "127.0.0.1")
    port = args.port or int(conf.get("port", 8000))
    token_file = args.token_file or conf.get("token_file")
    token = Path(token_file).read_text().strip() if token_file else None
    if token_file and not token:
        raise ValueError(f"{token_file}: the token file is empty")
    check_binding(host, token=token, insecure=args.insecure or bool(conf.get("insecure")))
    max_sessions = args.max_sessions or str(conf.get("max_sessions", "auto"))
    server = AvatarServer(
        avatars, args.audio_encoder or conf.get("audio_encoder") or DEFAULT_ENCODER,
        runtime=args.runtime if args.runtime != DEFAULT_RUNTIME else conf.get("runtime", DEFAULT_RUNTIME),
        providers=_providers(args) or conf.get("providers"),
        precision=args.precision if args.precision != "fp32" else conf.get("precision", "fp32"),
        sessions=args.sessions, threads=args.threads,
        max_sessions=max_sessions if max_sessions == "auto" else int(max_sessions),
        token=token, allowed_origins=args.allowed_origin + list(conf.get("allowed_origins", [])))
    engine = next(iter(server.avatars.values())).engine
    print(f"serving {', '.join(server.avatars)} on http://{host}:{port} ({server.capacity} session(s) at once; "
          f"{engine.runtime} {engine.providers[0]} {engine.precision})", flush=True)
    serve(server, host=host, port=port, log_level="info" if args.verbose else "warning")
    return 0


def _batch(args: argparse.Namespace) -> int:
    result = render_batch(args.jobs, output_dir=args.output_dir, workers=args.workers, retries=args.retries,
                          progress=not args.quiet, ray_address=args.ray, num_cpus=args.num_cpus,
                          num_gpus=args.num_gpus, ship_inputs=args.ship_inputs)
    if not args.quiet and args.json != "-":
        for r in result.results:
            if r.status == "failed":
                print(f"synctalk-fast: {args.jobs}:{r.job}: {r.output}: {r.error}", file=sys.stderr)
        print(result)
    _write_json(args.json, result.to_dict())
    return result.exit_code  # 0 all done or skipped, 1 a job failed; a bad manifest is a ValueError (2)


def _runtime_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runtime", choices=("auto", *RUNTIMES), default=DEFAULT_RUNTIME,
                   help=f"inference runtime; auto: the fastest here for the U-Net, measured once "
                   f"(default: {DEFAULT_RUNTIME})")


def _video_options(p: argparse.ArgumentParser, of: str = "") -> None:
    """H.264 encoding options of a video output."""
    p.add_argument("--crf", type=int, default=20, help=f"H.264 quality{of}, lower is better (default: 20)")
    p.add_argument("--preset", choices=X264_PRESETS, default=DEFAULT_PRESET, metavar="PRESET",
                   help=f"x264 speed preset{of} (default: {DEFAULT_PRESET})")
    p.add_argument("--encoder", choices=("auto", *ENCODERS), default=DEFAULT_VIDEO_ENCODER,
                   help=f"H.264 encoder{of}: libx264 (CPU, all cores), h264_nvenc (NVIDIA hardware encoder), "
                   f"auto (the hardware one where it runs) (default: {DEFAULT_VIDEO_ENCODER})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="synctalk-fast", description="Fast, exact SyncTalk_2D lip-sync inference.")
    parser.add_argument("--version", action="version", version=f"synctalk-fast {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("info", help="version, kernel backend and build, ONNX Runtime providers, encoders")
    p.add_argument("--json", metavar="FILE", help="write the configuration as JSON to FILE (- for stdout)")
    p.set_defaults(func=_info)

    p = sub.add_parser(
        "export",
        help="convert a .pth checkpoint to ONNX (no torch needed)",
        description="Convert a SyncTalk_2D .pth/.pt checkpoint (U-Net or audio encoder) to ONNX with a "
        "dynamic batch dimension. torch is not needed and no pickled code is executed.",
    )
    p.add_argument("--checkpoint", required=True, help=".pth / .pt state dict")
    p.add_argument("--kind", choices=sorted(KINDS), help="network kind (default: from the checkpoint's keys)")
    p.add_argument("--mode", choices=MODES, help="U-Net audio mode (default: from the keys; ave if ambiguous)")
    p.add_argument("-o", "--output", required=True, help="output .onnx file")
    p.add_argument("--json", metavar="FILE", help="write what was exported as JSON to FILE (- for stdout)")
    p.set_defaults(func=_export)

    p = sub.add_parser(
        "demo-models",
        help="write demo ONNX models with fixed random weights",
        description="Write a U-Net and an audio encoder with fixed-seed random weights (no trained "
        "weights are needed to try the pipeline; the output is not a real face).",
    )
    p.add_argument("-o", "--output", default="models", help="folder (default: models/)")
    p.add_argument("--mode", choices=MODES, default="ave", help="U-Net audio mode (default: ave)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.set_defaults(func=_demo_models)

    p = sub.add_parser(
        "generate",
        help="render a lip-synced video or frames",
        description="Render a lip-synced video (MP4 with the speech) or a folder of frames. The Go port's "
        "flags work as before (--model --audio --template --output --mode --start --video --video-path "
        "--audio-file --fps).",
    )
    p.add_argument("--model", default=DEFAULT_UNET, help=f"U-Net ONNX file (default: {DEFAULT_UNET})")
    p.add_argument("--audio", help="speech (WAV, FLAC, MP3, M4A, ...) or a features .bin/.npy")
    p.add_argument("--template", required=True, help="template folder (full_body_img/, landmarks/)")
    p.add_argument("-o", "--output", default="./output/frames",
                   help="an .mp4 file, or a folder for frame_00000.png ... (default: ./output/frames)")
    p.add_argument("--mode", choices=MODES, help="audio feature mode (default: from the model)")
    p.add_argument("--start", type=int, default=0, help="template frame offset (default: 0)")
    p.add_argument("--video", action="store_true", help="also write a video at --video-path (Go port)")
    p.add_argument("--video-path", default="./output/result.mp4", help="video path with --video")
    p.add_argument("--audio-file", help="sound track for the video when --audio is a features file")
    p.add_argument("--fps", type=float, help="frame rate (default: 25; 20 for wenet)")
    p.add_argument("--audio-encoder", help=f"audio encoder ONNX file (default: {DEFAULT_ENCODER} if present)")
    p.add_argument("--features", help="precomputed features (.bin + .bin.json, .npy, or a frames folder)")
    _engine_options(p)
    p.add_argument("--feather", type=int, default=0, help="soft paste band in pixels (default: 0, hard paste)")
    _video_options(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")
    p.add_argument("--json", metavar="FILE", help="write the result (frames, speed, provider, device) as JSON "
                   "to FILE (- for stdout)")
    p.set_defaults(func=_generate)

    p = sub.add_parser(
        "features",
        help="audio -> features files (the Go audio pipeline's `process`)",
        description="Compute AVE audio features: OUTPUT/features.bin + .bin.json, OUTPUT/frames/frame_00000.bin "
        "(each frame's U-Net audio input) and OUTPUT/metadata.json.",
    )
    p.add_argument("--audio", required=True, help="speech file")
    p.add_argument("--audio-encoder", "--model", dest="audio_encoder", default=DEFAULT_ENCODER,
                   help=f"audio encoder ONNX (default: {DEFAULT_ENCODER}; --model is the Go port's spelling)")
    p.add_argument("-o", "--output", default="output", help="output folder (default: output)")
    p.add_argument("--fps", type=float, default=25.0, help="video frame rate, recorded in metadata (default: 25)")
    p.add_argument("--mode", choices=["ave"], default="ave", help="only ave features are computed from audio")
    _runtime_option(p)
    p.add_argument("--providers", help="providers, comma-separated (names or aliases)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")
    p.set_defaults(func=_features)

    p = sub.add_parser(
        "stream",
        help="feed a sound file as a live source through the streaming engine; latency statistics",
        description="Push a sound file into a Stream in small chunks (at wall-clock pace with --realtime, "
        "as a microphone or TTS would), take the frames as they come, and print throughput and latency: "
        "wait (from the arrival of the last sample a frame needs to its emission) and delay (from its own "
        "audio's arrival to its emission). With --output the stream is recorded with its audio.",
    )
    p.add_argument("--audio", required=True, help="speech file (any rate and channel count)")
    p.add_argument("--template", required=True, help="template folder (full_body_img/, landmarks/)")
    p.add_argument("--model", default=DEFAULT_UNET, help=f"U-Net ONNX file (default: {DEFAULT_UNET})")
    p.add_argument("--audio-encoder", help=f"audio encoder ONNX file (default: {DEFAULT_ENCODER} if present)")
    p.add_argument("--realtime", action="store_true", help="push the audio at wall-clock pace")
    p.add_argument("--chunk-ms", type=float, default=20.0, help="chunk length in ms (default: 20)")
    p.add_argument("--speed", type=float, default=1.0,
                   help="with --realtime, feed at this multiple of real time (e.g. 0.5 on a CPU that cannot keep up)")
    p.add_argument("-o", "--output", help="record the stream: an .mp4 (with the audio) or a folder of frames")
    p.add_argument("--idle", action="store_true", help="emit template frames at the frame rate while no speech plays")
    p.add_argument("--max-lag", type=float,
                   help="seconds behind the audio after which frames are emitted unsynced to catch up (default: never)")
    p.add_argument("--start", type=int, default=0, help="template frame offset (default: 0)")
    p.add_argument("--layout", choices=["auto", "throughput", "latency"], default="auto",
                   help="CPU sessions: one per core (throughput) or one on all cores (latency); "
                   "auto measures which keeps up (default)")
    p.add_argument("--json", metavar="FILE", help="write the statistics as JSON to FILE (- for stdout)")
    _engine_options(p)
    _video_options(p, " of --output")
    p.add_argument("-q", "--quiet", action="store_true", help="no summary")
    p.set_defaults(func=_stream)

    p = sub.add_parser(
        "serve",
        help="serve avatars live: speech in over a WebSocket, the person speaking out",
        description="Serve one or more avatars (a template and its U-Net each; the audio encoder is shared) "
        "over WebSocket at /v1/avatars/NAME/stream; /v1/avatars lists them, /metrics has Prometheus metrics. "
        "Listens on 127.0.0.1 unless told otherwise; another address needs --token-file (or --insecure).",
    )
    p.add_argument("--avatar", action="append", default=[], metavar="NAME=TEMPLATE_DIR:UNET.onnx",
                   help="an avatar (repeat for more)")
    p.add_argument("--audio-encoder", help=f"audio encoder ONNX file (default: {DEFAULT_ENCODER})")
    p.add_argument("--config", help="avatars and options from a TOML file ([[avatar]] name, template, unet)")
    p.add_argument("--host", help="address to listen on (default: 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default: 8000)")
    p.add_argument("--token-file", help="file holding the token clients must present")
    p.add_argument("--insecure", action="store_true", help="allow a non-loopback address without a token")
    p.add_argument("--max-sessions", help="sessions at once: auto (what the machine sustains at real time) or N")
    p.add_argument("--allowed-origin", action="append", default=[], help="a browser origin allowed besides the "
                   "server's own (repeat for more)")
    _engine_options(p)
    p.set_defaults(func=_serve)

    p = sub.add_parser(
        "batch",
        help="render many jobs from a manifest on worker processes (resumable)",
        description="Render the jobs of a manifest (.jsonl: one JSON object a line; .csv: a header row) on worker "
        "processes that keep their models loaded. A job has audio (or features), template, unet, audio_encoder, "
        "output (a name under --output-dir) and any generate option by its API name (start, fps, crf, preset, "
        "feather, precision, runtime, ...); relative paths are relative to the manifest. OUTPUT_DIR/results.jsonl "
        "records each job; a second run skips jobs whose output is complete and whose inputs are unchanged. "
        "With --ray the workers are Ray actors, on a local Ray instance or on the cluster at ADDRESS; the inputs "
        "and the output directory must then be on a file system every node shares (or use --ship-inputs). "
        "Exit status: 0 all done or skipped, 1 some job failed, 2 a bad manifest or bad options.",
    )
    p.add_argument("jobs", metavar="JOBS", help="manifest: .jsonl or .csv")
    p.add_argument("--output-dir", required=True, help="where the outputs and results.jsonl go (created if missing)")
    p.add_argument("--workers", type=int, help="worker processes (default: one per template and U-Net, at most one "
                   "per core; one on a GPU)")
    p.add_argument("--retries", type=int, default=2, help="reruns of a job whose worker died (default: 2)")
    p.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                   help="run the workers as Ray actors: on a new local Ray instance, or on the cluster at ADDRESS "
                   "(auto, host:port or ray://host:port); needs synctalk-fast[ray]")
    p.add_argument("--num-cpus", type=float, help="CPUs of each Ray actor (default: the cluster's, shared out)")
    p.add_argument("--num-gpus", type=float, help="GPUs of each Ray actor (default: 1 when the cluster has GPUs)")
    p.add_argument("--ship-inputs", action="store_true", help="with --ray: send each template, network and audio "
                   "file to the cluster once (Ray's object store) instead of reading them from a shared file system")
    p.add_argument("--json", metavar="FILE", help="write the results as JSON to FILE (- for stdout)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")
    p.set_defaults(func=_batch)

    p = sub.add_parser(
        "quantize",
        help="int8 U-Net calibrated on your template and speech, with a fidelity report",
        description="Static int8 quantization (QDQ, per-channel weights) calibrated on inputs drawn from the "
        "template's frames and the speech's features. The calibration method is chosen by measurement on "
        "validation frames; blocks whose quantization hurts most stay in fp32 until --target-psnr holds. "
        "The report (printed, and saved as JSON) compares int8 with fp32 on held-out frames never used for "
        "calibration: PSNR and max/mean level difference over the mouth box and the whole frame, and the "
        "speed of both.",
    )
    p.add_argument("--model", default=DEFAULT_UNET, help=f"fp32 U-Net ONNX file (default: {DEFAULT_UNET})")
    p.add_argument("--template", required=True, help="template folder (full_body_img/, landmarks/)")
    p.add_argument("--audio", help="speech file for the audio inputs (with --audio-encoder)")
    p.add_argument("--audio-encoder", help=f"audio encoder ONNX file (default: {DEFAULT_ENCODER} if present)")
    p.add_argument("--features", help="precomputed features instead of --audio (.bin + .bin.json, .npy)")
    p.add_argument("-o", "--output", required=True, help="int8 model to write (.onnx)")
    p.add_argument("--report", help="JSON report path (default: OUTPUT.json)")
    p.add_argument("--methods", default="MinMax,Percentile,Entropy",
                   help="calibration methods to try, comma-separated (default: all three)")
    p.add_argument("--target-psnr", type=float, default=40.0,
                   help="mouth PSNR vs fp32 to reach, in dB; 0 quantizes every block (default: 40)")
    p.add_argument("--keep-fp32", help="blocks to keep in fp32 in any case, comma-separated (names as in the report)")
    p.add_argument("--calibration", type=int, default=32, help="calibration frames (default: 32)")
    p.add_argument("--validation", type=int, default=8, help="validation frames (default: 8)")
    p.add_argument("--heldout", type=int, default=32, help="held-out frames for the report (default: 32)")
    p.add_argument("--threads", type=int, help="threads of every runtime (default: all cores)")
    p.add_argument("--seed", type=int, default=0, help="frame split seed (default: 0)")
    p.add_argument("--tool", choices=("auto", "onnxruntime", "nncf"), default="auto",
                   help="int8 by ONNX Runtime's quantizer, by NNCF (run on OpenVINO, bf16 where the CPU has it), or "
                   "auto: both where openvino and nncf are installed, the fastest reaching --target-psnr on the "
                   "held-out frames (default: auto); the report says which runtime and precision to run it with")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=_quantize)

    p = sub.add_parser(
        "demo",
        help="see the whole pipeline work: demo models, a drawn template, synthetic speech -> demo.mp4",
        description="Write demo models (fixed random weights), a synthetic template and speech-like audio "
        "into a folder, then render demo.mp4 from them.",
    )
    p.add_argument("-o", "--output", default="synctalk_demo", help="folder (default: ./synctalk_demo)")
    p.add_argument("--seconds", type=float, default=4.0, help="length of the synthetic speech (default: 4)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_demo)

    p = sub.add_parser(
        "bench",
        add_help=False,  # --help goes to the benchmark's own parser
        help="benchmark: pipeline vs U-Net alone, naive ORT loop, PyTorch loop (JSON + PNG)",
        description="See `synctalk-fast bench --help`.",
    )
    p.add_argument("args", nargs=argparse.REMAINDER)
    p.set_defaults(func=_bench)
    for name, command in sub.choices.items():
        if name != "bench":  # -v after the command too; SUPPRESS keeps a -v given before it
            command.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                                 help="log progress details")
    return parser


_GO_FLAG = re.compile(r"-([a-z][a-z0-9-]+)(=.*)?", re.ASCII)


def go_spellings(argv: list[str], parser: argparse.ArgumentParser) -> list[str]:
    """The Go ports' single-dash flags (``-audio x``, ``-output=dir``) as
    ``--audio x``, ``--output=dir``: a single-dash word that is a long option
    of the program or of its command; everything else is left as it is."""
    def long_options(p: argparse.ArgumentParser) -> set[str]:
        return {o for o in p._option_string_actions if o.startswith("--")}

    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    command = next((a for a in argv if a in commands), None)
    known = long_options(parser) | (long_options(commands[command]) if command else set())
    out = []
    for arg in argv:
        m = _GO_FLAG.fullmatch(arg)
        out.append("-" + arg if m and "--" + m.group(1) in known else arg)
    return out


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if "bench" not in argv:
        argv = go_spellings(argv, parser)
    if "bench" in argv and all(a in ("-v", "--verbose") for a in argv[: argv.index("bench")]):
        # the benchmark parses its own options (argparse's REMAINDER cannot pass options through)
        i = argv.index("bench")
        args = parser.parse_args(argv[:i] + ["bench"])
        args.args = argv[i + 1 :]
    else:
        args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s: %(message)s")
    if not hasattr(args, "func"):
        parser.print_help()
        return 0
    try:
        return args.func(args)
    except (Error, ValueError, OSError) as exc:  # bad input: each carries a one-line message for the user
        print(f"synctalk-fast: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("synctalk-fast: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - an internal or runtime failure (ONNX Runtime, CUDA, ...)
        if args.verbose:
            traceback.print_exc()
        message = " ".join(str(exc).split())[:300] or type(exc).__name__
        hint = "" if args.verbose else " (run with -v for the traceback)"
        print(f"synctalk-fast: internal error: {type(exc).__name__}: {message}{hint}", file=sys.stderr)
        return 1
