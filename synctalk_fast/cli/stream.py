"""``synctalk-fast stream``: a sound file fed to a Stream as a live source; throughput and latency."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from ..engine import EngineOptions
from ..engine.layout import LAYOUTS
from ..engine.options import add_arguments
from ..pipeline import Pipeline
from ..stream.replay import replay
from .common import DEFAULT_ENCODER, DEFAULT_UNET, add_json, add_quiet, add_video_options, default_encoder, write_json

__all__ = ["add_parser", "run"]


def run(args: argparse.Namespace) -> int:
    """Replay ``--audio`` into a stream and report its statistics."""
    pipe = Pipeline(
        args.model, audio_encoder=default_encoder(args.audio_encoder), options=EngineOptions.from_args(args)
    )
    stream = pipe.stream(args.template, start=args.start, idle=args.idle, max_lag=args.max_lag, layout=args.layout)
    engine = pipe.engine
    if not args.quiet:
        mode = (
            ("real time" if args.speed == 1 else f"{args.speed:g} x real time")
            if args.realtime
            else "as fast as possible"
        )
        print(
            f"streaming {args.audio} in {args.chunk_ms:g} ms chunks, {mode}; {engine.runtime} "
            f"{engine.providers[0]} {engine.precision}, {len(stream.unets)} U-Net session(s) ({stream.layout} "
            f"layout), batch <= {pipe.batch_size}"
        )
    stats = replay(
        stream,
        args.audio,
        chunk_ms=args.chunk_ms,
        realtime=args.realtime,
        speed=args.speed,
        output=args.output,
        crf=args.crf,
        preset=args.preset,
        encoder=args.encoder,
    )
    stats.update(engine.describe())
    write_json(args.json, stats)
    if not args.quiet:
        _summary(stats, fps=stream.fps, output=args.output)
    return 0


def _summary(stats: Mapping[str, Any], *, fps: float, output: str | None) -> None:
    wall, first = stats["wall_seconds"], stats["first_frame_seconds"]
    ms = {k: v * 1000 for k, v in stats.items() if k.startswith(("wait_", "delay_"))}
    print(
        f"{stats['frames']} frames ({stats['idle_frames']} idle, {stats['skipped_frames']} skipped) in {wall:.2f} s: "
        f"{stats['frames_per_second']:.1f} frames/s (real time needs {fps:g})"
    )
    print(
        f"wait (last needed sample -> frame out): p50 {ms['wait_p50']:.0f} ms, p95 {ms['wait_p95']:.0f} ms, "
        f"max {ms['wait_max']:.0f} ms"
    )
    print(
        f"delay (frame's own audio in -> frame out): p50 {ms['delay_p50']:.0f} ms, "
        f"p95 {ms['delay_p95']:.0f} ms, max {ms['delay_max']:.0f} ms"
    )
    if first is not None:
        print(
            f"first lip-synced frame after {first * 1000:.0f} ms; most frames waiting at once: "
            f"{stats['max_buffered']} (bound {stats['max_ready']})"
        )
    if output:
        print(f"recorded: {output}")


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add the ``stream`` command to ``sub``."""
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
    p.add_argument(
        "--speed",
        type=float,
        default=1.0,
        help="with --realtime, feed at this multiple of real time (e.g. 0.5 on a CPU that cannot keep up)",
    )
    p.add_argument("-o", "--output", help="record the stream: an .mp4 (with the audio) or a folder of frames")
    p.add_argument("--idle", action="store_true", help="emit template frames at the frame rate while no speech plays")
    p.add_argument(
        "--max-lag",
        type=float,
        help="seconds behind the audio after which frames are emitted unsynced to catch up (default: never)",
    )
    p.add_argument("--start", type=int, default=0, help="template frame offset (default: 0)")
    p.add_argument(
        "--layout",
        choices=LAYOUTS,
        default="auto",
        help="CPU sessions: one per core (throughput) or one on all cores (latency); "
        "auto measures which keeps up (default)",
    )
    add_json(p, "the statistics")
    add_arguments(p)
    add_video_options(p, " of --output")
    add_quiet(p, "no summary")
    p.set_defaults(func=run)
