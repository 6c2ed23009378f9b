"""A LiveKit agent's avatar, offline: a scripted TTS -> SyncTalkVideoGenerator -> an MP4. No server, no cloud key.

::

    pip install "synctalk-fast[livekit]"
    python examples/livekit_avatar_offline.py -o avatar.mp4
    python examples/livekit_avatar_offline.py -o avatar.mp4 --unet unet.onnx --audio-encoder audio_encoder.onnx \\
        --template dataset/May --wav reply1.wav --wav reply2.wav

In a live agent, ``SyncTalkAvatarSession.start(session, room)`` puts the generator behind the
agent's audio output, and LiveKit's ``AvatarRunner`` drives it: the agent's speech goes in with
``push_audio`` (``rtc.AudioFrame``\\ s, then ``AudioSegmentEnd``), and everything the generator
yields goes to the room. Here the two sides of the runner are played by:

- ``ScriptedTTS``, the agent's speech: each text it is given is "spoken" as the next WAV file, in
  20 ms ``rtc.AudioFrame``\\ s at the file's own rate and channel count, then ``AudioSegmentEnd``;
- ``Mp4Recorder``, the room: each ``rtc.VideoFrame`` the generator yields, with the
  ``rtc.AudioFrame`` that follows it, into the package's MP4 sink, until every reply has ended.

Without ``--unet`` it runs the package's demo: the demo U-Net, a drawn face and synthetic speech.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import _offline_agent as offline_agent  # examples/_offline_agent.py, beside this file
import numpy as np
from livekit import rtc
from livekit.agents.voice.avatar import AudioSegmentEnd

import synctalk_fast as stf
from synctalk_fast.integrations.livekit import SyncTalkVideoGenerator


class ScriptedTTS:
    """A TTS stand-in: the n-th text is spoken as the n-th WAV file (int16 PCM, any rate and
    channel count), in 20 ms frames."""

    def __init__(self, wavs: list[Path]):
        self._wavs = list(wavs)

    async def speak(self, text: str) -> AsyncIterator[rtc.AudioFrame]:
        pcm, rate, step = offline_agent.read_reply(self._wavs.pop(0))
        for i in range(0, len(pcm), step):
            chunk = np.ascontiguousarray(pcm[i : i + step])
            yield rtc.AudioFrame(chunk.tobytes(), rate, pcm.shape[1], len(chunk))


class Mp4Recorder:
    """A room stand-in: each video frame with the audio frame that follows it, into an MP4."""

    def __init__(self, path: Path):
        self._path = path
        self._sink: stf.Mp4Sink | None = None
        self._image: np.ndarray | None = None  # BGR, waiting for its audio
        self._rate = 0
        self.frames = 0

    def _flush(self, audio: rtc.AudioFrame | None) -> None:
        """Write the waiting image with ``audio`` (mixed to mono), or 40 ms of silence."""
        if self._image is None:
            return
        if self._sink is None:  # the track's rate is the first reply's (one TTS voice per agent)
            self._rate = audio.sample_rate if audio is not None else offline_agent.TRACK_RATE
            self._sink = stf.Mp4Sink(self._path, fps=25, frame_audio=True, sample_rate=self._rate)
        if audio is None:
            samples = np.zeros(self._rate // 25, np.float32)
        else:
            samples = offline_agent.mono(bytes(audio.data), audio.num_channels)
        self._sink.write(self._image, samples)
        self._image, self.frames = None, self.frames + 1

    async def record(self, generator: SyncTalkVideoGenerator, replies: int) -> None:
        """Take what the generator yields until ``replies`` utterances have ended."""
        ended = 0
        async for item in generator:
            if isinstance(item, rtc.VideoFrame):
                self._flush(None)  # an image without audio: the end of a short reply
                rgb = np.frombuffer(bytes(item.data), np.uint8).reshape(item.height, item.width, 3)
                self._image = np.ascontiguousarray(rgb[..., ::-1])
            elif isinstance(item, rtc.AudioFrame):
                self._flush(item)
            elif isinstance(item, AudioSegmentEnd):
                self._flush(None)
                ended += 1
                if ended == replies:
                    break

    def close(self) -> None:
        if self._sink is not None:
            self._sink.close()


async def run(engine: stf.Engine, template: Path, wavs: list[Path], output: Path) -> int:
    # The constructor warms the engine up: off the event loop, as SyncTalkAvatarSession makes it.
    generator = await asyncio.to_thread(SyncTalkVideoGenerator, engine, template=template, idle=False)
    tts, recorder = ScriptedTTS(wavs), Mp4Recorder(output)
    recording = asyncio.create_task(recorder.record(generator, len(wavs)))
    try:
        for k in range(len(wavs)):  # the agent speaks its replies, as the runner's audio task feeds them
            async for frame in tts.speak(f"reply {k}"):
                await generator.push_audio(frame)
            await generator.push_audio(AudioSegmentEnd())
        await recording
    finally:
        recording.cancel()
        await generator.aclose()
        recorder.close()
    return recorder.frames


def main(argv: list[str] | None = None) -> Path:
    return offline_agent.main(__doc__.split("\n")[0], run, argv)


if __name__ == "__main__":
    main()
