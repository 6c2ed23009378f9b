"""What the offline agent examples share: the demo's material and the command line.

``pipecat_avatar_offline.py`` and ``livekit_avatar_offline.py`` each give :func:`main` their
``run(engine, template, wavs, output) -> frames``: the agent's wiring, which is all that differs.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

import numpy as np
import soundfile as sf

import synctalk_fast as stf
from synctalk_fast import models
from synctalk_fast.demo import DEMO_UNET, synthetic_speech, synthetic_template

Run = Callable[[stf.Engine, Path, list[Path], Path], Awaitable[int]]

TRACK_RATE = 24000  # the demo replies' rate: a common TTS rate


def demo_material(folder: Path) -> tuple[Path, Path, Path, list[Path]]:
    """The demo U-Net, its audio encoder, a drawn face, and two replies at 24 kHz, mono and stereo."""
    encoder = models.demo_audio_encoder(folder / "audio_encoder.onnx")
    template = synthetic_template(folder / "template")
    wavs = []
    for k, channels in enumerate([1, 2]):
        speech = synthetic_speech(1.2, sample_rate=TRACK_RATE, seed=k)
        wavs.append(folder / f"reply{k}.wav")
        sf.write(wavs[-1], np.stack([speech] * channels, axis=1), TRACK_RATE, subtype="PCM_16")
    return DEMO_UNET, encoder, template, wavs


def read_reply(wav: Path) -> tuple[np.ndarray, int, int]:
    """A reply as a TTS would speak it: int16 ``[n, channels]``, its rate, and 20 ms in samples."""
    pcm, rate = sf.read(wav, dtype="int16", always_2d=True)
    return pcm, rate, rate // 50


def mono(pcm: bytes, channels: int) -> np.ndarray:
    """int16 interleaved PCM -> float32 mono in [-1, 1) (what the MP4 sink's track takes)."""
    return np.frombuffer(pcm, "<i2").reshape(-1, channels).mean(axis=1, dtype=np.float32) / 32768.0


def main(description: str, run: Run, argv: list[str] | None = None) -> Path:
    """Parse the command line, make the engine, ``run`` the agent, report the video written."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("-o", "--output", type=Path, default=Path("avatar.mp4"))
    ap.add_argument("--unet", type=Path, help="U-Net ONNX (default: the demo's)")
    ap.add_argument("--audio-encoder", type=Path, help="audio encoder ONNX (with --unet)")
    ap.add_argument("--template", type=Path, help="template folder (with --unet)")
    ap.add_argument("--wav", type=Path, action="append", help="a reply the TTS speaks (repeat for more)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        unet, encoder, template, wavs = demo_material(Path(tmp)) if args.unet is None else (None, None, None, [])
        unet, encoder = args.unet or unet, args.audio_encoder or encoder
        template, wavs = args.template or template, args.wav or wavs
        if encoder is None or template is None or not wavs:
            ap.error("--unet needs --audio-encoder, --template and at least one --wav")
        engine = stf.Engine(unet, encoder)
        try:
            frames = asyncio.run(run(engine, template, wavs, args.output))
        finally:
            engine.close()
    print(f"{args.output}: {frames} frames ({frames / 25:.2f} s) from {len(wavs)} replies")
    return args.output
