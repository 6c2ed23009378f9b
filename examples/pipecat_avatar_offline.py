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

from pathlib import Path

import _offline_agent as offline_agent  # examples/_offline_agent.py, beside this file
import numpy as np
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
        pcm, rate, step = offline_agent.read_reply(self._wavs.pop(0))
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
            self._write(offline_agent.mono(frame.audio, frame.num_channels))
        elif isinstance(frame, EndFrame) and self._sink is not None:
            if self._image is not None:
                self._write(None)
            self._sink.close()
        await self.push_frame(frame, direction)


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
    return offline_agent.main(__doc__.split("\n")[0], run, argv)


if __name__ == "__main__":
    main()
