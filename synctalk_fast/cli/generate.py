"""``synctalk-fast generate``, ``features`` and ``demo``: whole utterances to a video, frames or features files."""

from __future__ import annotations

import argparse
from pathlib import Path

import soundfile as sf

from .. import models, pipeline
from .._filters import SAMPLE_RATE
from ..demo import DEMO_ENCODER_SEED, DEMO_SPEECH_SEED, DEMO_UNET, synthetic_speech, synthetic_template
from ..engine import Engine, EngineOptions
from ..engine.options import add_arguments
from ..features import save_features
from .common import DEFAULT_ENCODER, DEFAULT_UNET, add_json, add_quiet, add_video_options, default_encoder, write_json
from .models import MODES

__all__ = ["add_generate", "add_features", "add_demo", "generate", "features", "demo"]


def _is_features(path: str | None) -> bool:
    """A features file or folder (the Go port's ``--audio features.bin``), not a sound file."""
    p = Path(path) if path else None
    return p is not None and (p.suffix in (".bin", ".npy") or p.is_dir())


def generate(args: argparse.Namespace) -> int:
    """Render a video or frames; the engine options are the flags given (over the defaults)."""
    features = args.features
    audio = args.audio
    if _is_features(audio):  # the Go port's --audio features.bin
        features, audio = audio, None
    if args.audio_file:
        audio = args.audio_file
    if audio is None and features is None:
        raise ValueError("give --audio (a sound file or a features .bin) or --features")
    outputs = [args.output]
    if args.video:  # the Go port: frames in --output and a video at --video-path, in one pass
        outputs.append(args.video_path)
    result = pipeline.generate(
        audio,
        output=outputs,
        features=features,
        template=args.template,
        unet=args.model,
        audio_encoder=default_encoder(args.audio_encoder, needed=features is None),
        mode=args.mode,
        options=EngineOptions.from_args(args),
        start=args.start,
        fps=args.fps,
        crf=args.crf,
        preset=args.preset,
        encoder=args.encoder,
        feather=args.feather,
        progress=not args.quiet,
    )
    if not args.quiet and args.json != "-":
        print(result)
    write_json(
        args.json,
        {
            "output": [str(o) for o in outputs],
            "frames": result.frames,
            "fps": result.fps,
            "seconds": result.seconds,
            "frames_per_second": result.frames_per_second,
            "timings": result.timings,
            **result.engine,
        },
    )
    return 0


def features(args: argparse.Namespace) -> int:
    """Audio -> AVE features files (the Go audio pipeline's ``process``)."""
    engine = Engine(audio_encoder=args.audio_encoder, options=EngineOptions.from_args(args))
    feats = engine.audio_features(args.audio, progress=not args.quiet)
    out = save_features(feats, args.output, mode="ave", fps=args.fps, metadata={"audio": str(args.audio)})
    if not args.quiet:
        print(
            f"{out}/: features.bin [{feats.shape[0]}, {feats.shape[1]}] + .bin.json, "
            f"frames/frame_00000.bin .. frame_{feats.shape[0] - 1:05d}.bin, metadata.json"
        )
    return 0


def demo(args: argparse.Namespace) -> int:
    """The demo U-Net, a drawn template and synthetic speech -> ``demo.mp4``."""
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    encoder = models.demo_audio_encoder(out / "models" / "audio_encoder.onnx")
    template = synthetic_template(out / "template")
    speech = out / "speech.wav"
    sf.write(speech, synthetic_speech(args.seconds, seed=DEMO_SPEECH_SEED), SAMPLE_RATE, subtype="PCM_16")
    result = pipeline.generate(
        speech,
        template=template,
        output=out / "demo.mp4",
        unet=DEMO_UNET,
        audio_encoder=encoder,
        progress=not args.quiet,
    )
    print(result)
    print(f"U-Net:         {DEMO_UNET} (int8; trained on drawn faces by tools/train_demo_unet.py)")
    print(f"audio encoder: {encoder} (fixed random weights, seed {DEMO_ENCODER_SEED}: what the U-Net learned to hear)")
    print(f"template:      {template}/ (a drawn face, 50 frames, mouth closed)")
    print(f"audio:         {speech} (synthetic speech the U-Net never heard in training)")
    print(f"video:         {result.output}")
    return 0


def add_generate(sub: argparse._SubParsersAction) -> None:
    """Add the ``generate`` command to ``sub``."""
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
    p.add_argument(
        "-o",
        "--output",
        default="./output/frames",
        help="an .mp4 file, or a folder for frame_00000.png ... (default: ./output/frames)",
    )
    p.add_argument("--mode", choices=MODES, help="audio feature mode (default: from the model)")
    p.add_argument("--start", type=int, default=0, help="template frame offset (default: 0)")
    p.add_argument("--video", action="store_true", help="also write a video at --video-path (Go port)")
    p.add_argument("--video-path", default="./output/result.mp4", help="video path with --video")
    p.add_argument("--audio-file", help="sound track for the video when --audio is a features file")
    p.add_argument("--fps", type=float, help="frame rate (default: 25; 20 for wenet)")
    p.add_argument("--audio-encoder", help=f"audio encoder ONNX file (default: {DEFAULT_ENCODER} if present)")
    p.add_argument("--features", help="precomputed features (.bin + .bin.json, .npy, or a frames folder)")
    add_arguments(p)
    p.add_argument("--feather", type=int, default=0, help="soft paste band in pixels (default: 0, hard paste)")
    add_video_options(p)
    add_quiet(p)
    add_json(p, "the result (frames, speed, provider, device)")
    p.set_defaults(func=generate)


def add_features(sub: argparse._SubParsersAction) -> None:
    """Add the ``features`` command to ``sub``."""
    p = sub.add_parser(
        "features",
        help="audio -> features files (the Go audio pipeline's `process`)",
        description="Compute AVE audio features: OUTPUT/features.bin + .bin.json, OUTPUT/frames/frame_00000.bin "
        "(each frame's U-Net audio input) and OUTPUT/metadata.json.",
    )
    p.add_argument("--audio", required=True, help="speech file")
    p.add_argument(
        "--audio-encoder",
        "--model",
        dest="audio_encoder",
        default=DEFAULT_ENCODER,
        help=f"audio encoder ONNX (default: {DEFAULT_ENCODER}; --model is the Go port's spelling)",
    )
    p.add_argument("-o", "--output", default="output", help="output folder (default: output)")
    p.add_argument("--fps", type=float, default=25.0, help="video frame rate, recorded in metadata (default: 25)")
    p.add_argument("--mode", choices=["ave"], default="ave", help="only ave features are computed from audio")
    add_arguments(p, only=("runtime", "providers", "device_id"))
    add_quiet(p)
    p.set_defaults(func=features)


def add_demo(sub: argparse._SubParsersAction) -> None:
    """Add the ``demo`` command to ``sub``."""
    p = sub.add_parser(
        "demo",
        help="see the whole pipeline work: a drawn face speaks synthetic speech -> demo.mp4",
        description="Render demo.mp4: the package's demo U-Net (trained on drawn faces whose mouth opens with "
        "the loudness of speech) makes a drawn face speak synthetic speech it never heard in training. "
        "The template, the speech and the audio encoder are written into the folder beside the video.",
    )
    p.add_argument("-o", "--output", default="synctalk_demo", help="folder (default: ./synctalk_demo)")
    p.add_argument("--seconds", type=float, default=4.0, help="length of the synthetic speech (default: 4)")
    add_quiet(p, "no progress bars")
    p.set_defaults(func=demo)
