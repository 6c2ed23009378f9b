"""A Pipecat agent's avatar, offline: a scripted TTS -> SyncTalkVideoService -> an MP4. No cloud key.

::

    pip install "synctalk-fast[pipecat]"
    python examples/pipecat_avatar_offline.py -o avatar.mp4
    python examples/pipecat_avatar_offline.py -o avatar.mp4 --unet unet.onnx --audio-encoder audio_encoder.onnx \\
        --template dataset/May --wav reply1.wav --wav reply2.wav

The pipeline is the one of a real agent with the network parts replaced:

- ``ScriptedTTS`` stands in for the TTS service: each ``TextFrame`` it receives is "spoken" as
  the next WAV file, pushed as a TTS service pushes audio (``TTSStartedFrame``, the file's
  samples in 20 ms ``TTSAudioRawFrame``\\ s at the file's own rate and channel count,
  ``TTSStoppedFrame``);
- ``SyncTalkVideoService`` is the avatar, exactly as in a live agent;
- ``Mp4Recorder`` stands in for the output transport: it writes each image with the audio that
  follows it into the package's MP4 sink.

Without ``--unet`` it runs the package's demo: the demo U-Net, a drawn face and synthetic speech.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
from pipecat.frames.frames import (
    EndFrame,
    Frame,
    OutputImageRawFrame,
    TextFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.workers.runner import WorkerRunner

import synctalk_fast as stf
from synctalk_fast import models
from synctalk_fast.demo import DEMO_ENCODER_SEED, DEMO_UNET, synthetic_speech, synthetic_template
from synctalk_fast.integrations.pipecat import SyncTalkVideoService


class ScriptedTTS(FrameProcessor):
    """A TTS stand-in: the n-th ``TextFrame`` is spoken as the n-th WAV file (int16 PCM, any rate
    and channel count), in 20 ms chunks."""

    def __init__(self, wavs: list[Path]):
        super().__init__()
        self._wavs = list(wavs)

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if not (isinstance(frame, TextFrame) and self._wavs):
            await self.push_frame(frame, direction)
            return
        pcm, rate = sf.read(self._wavs.pop(0), dtype="int16", always_2d=True)  # [n, channels]
        step = rate // 50
        await self.push_frame(TTSStartedFrame())
        for i in range(0, len(pcm), step):
            chunk = pcm[i : i + step]
            await self.push_frame(TTSAudioRawFrame(audio=chunk.tobytes(), sample_rate=rate, num_channels=pcm.shape[1]))
        await self.push_frame(TTSStoppedFrame())


class Mp4Recorder(FrameProcessor):
    """An output-transport stand-in: each image, with the audio that follows it, into an MP4."""

    def __init__(self, path: Path):
        super().__init__()
        self._path = path
        self._sink: stf.Mp4Sink | None = None
        self._rate = 0  # the track's sample rate: the TTS's (one rate per session, as TTS services have)
        self._image: np.ndarray | None = None  # BGR, waiting for its audio
        self.frames = 0

    def _write(self, audio: np.ndarray | None) -> None:
        assert self._sink is not None and self._image is not None
        self._sink.write(self._image, audio if audio is not None else np.zeros(self._rate // 25, np.float32))
        self._image = None
        self.frames += 1

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, OutputImageRawFrame):
            if self._image is not None:  # an image without audio (an idle frame): silence
                self._write(None)
            width, height = frame.size
            self._image = np.frombuffer(frame.image, np.uint8).reshape(height, width, 3)[..., ::-1]
        elif isinstance(frame, TTSAudioRawFrame) and self._image is not None:
            if self._sink is None:
                self._rate = frame.sample_rate
                self._sink = stf.Mp4Sink(self._path, fps=25, frame_audio=True, sample_rate=self._rate)
            if frame.sample_rate != self._rate:
                raise ValueError(f"TTS audio at {frame.sample_rate} Hz after {self._rate} Hz")
            pcm = np.frombuffer(frame.audio, "<i2").reshape(-1, frame.num_channels)
            self._write(pcm.mean(axis=1, dtype=np.float32) / 32768.0)
        elif isinstance(frame, EndFrame) and self._sink is not None:
            if self._image is not None:
                self._write(None)
            self._sink.close()
        await self.push_frame(frame, direction)


def demo_material(folder: Path) -> tuple[Path, Path, Path, list[Path]]:
    """The demo U-Net, its audio encoder, a drawn face, and two replies at 24 kHz, mono and stereo."""
    encoder = folder / "audio_encoder.onnx"
    models.export_onnx(models.random_state_dict("audio_encoder", seed=DEMO_ENCODER_SEED), encoder)
    template = synthetic_template(folder / "template")
    wavs = []
    for k, channels in enumerate([1, 2]):
        speech = synthetic_speech(1.2, sample_rate=24000, seed=k)
        wavs.append(folder / f"reply{k}.wav")
        sf.write(wavs[-1], np.stack([speech] * channels, axis=1), 24000, subtype="PCM_16")
    return DEMO_UNET, encoder, template, wavs


async def run(engine: stf.Engine, template: Path, wavs: list[Path], output: Path) -> int:
    recorder = Mp4Recorder(output)
    pipeline = Pipeline([ScriptedTTS(wavs), SyncTalkVideoService(engine, template=template), recorder])
    worker = PipelineWorker(pipeline)
    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    await worker.queue_frames([TextFrame(f"reply {k}") for k in range(len(wavs))] + [EndFrame()])
    await runner.run()
    return recorder.frames


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
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


if __name__ == "__main__":
    main()
