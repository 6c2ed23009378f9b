"""The LiveKit Agents plug-in, against stand-ins (no LiveKit server exists here, loopback only).

The generator is driven as ``AvatarRunner`` drives it (``push_audio`` / ``clear_buffer`` /
``async for``); the session is started with a stand-in room and a no-room ``AgentSession``.
"""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

pytest.importorskip("livekit.agents", reason="the livekit extra is not installed")

from livekit import rtc  # noqa: E402
from livekit.agents import Agent, AgentSession  # noqa: E402
from livekit.agents.voice.avatar import AudioSegmentEnd  # noqa: E402

from synctalk_fast.demo import synthetic_speech  # noqa: E402
from synctalk_fast.integrations.livekit import SyncTalkAvatarSession, SyncTalkVideoGenerator  # noqa: E402
from synctalk_fast.template import ping_pong  # noqa: E402

ODD_CHUNKS = (777, 1, 4099, 1234, 333)  # samples (of every channel) per audio frame, cycling
TIMEOUT = 120.0  # seconds: every wait is bounded


def pcm_of(seconds: float, rate: int, channels: int = 1, *, seed: int = 0) -> bytes:
    mono = synthetic_speech(seconds, sample_rate=rate, seed=seed)
    chans = [mono, 0.6 * mono[::-1]][:channels]
    return np.round(np.clip(np.stack(chans, axis=1), -1, 1) * 32767).astype("<i2").tobytes()


def audio_frames(pcm: bytes, rate: int, channels: int = 1, sizes=ODD_CHUNKS) -> list[rtc.AudioFrame]:
    width, i, out, k = 2 * channels, 0, [], 0
    while i < len(pcm):
        n = sizes[k % len(sizes)] * width
        piece = pcm[i : i + n]
        out.append(rtc.AudioFrame(piece, rate, channels, len(piece) // width))
        i, k = i + n, k + 1
    return out


def frame_bytes(k: int, rate: int, channels: int) -> int:
    return ((k + 1) * rate // 25 - k * rate // 25) * 2 * channels


def bgr(frame: rtc.VideoFrame) -> np.ndarray:
    assert frame.type == rtc.VideoBufferType.RGB24
    return np.frombuffer(bytes(frame.data), np.uint8).reshape(frame.height, frame.width, 3)[..., ::-1]


def assert_speech(items, pcm: bytes, rate: int, channels: int, want):
    """``items``: video, audio, video, audio, ...; images equal ``want``, audio joins up to ``pcm``."""
    videos, audios = items[0::2], items[1::2]
    assert all(isinstance(v, rtc.VideoFrame) for v in videos) and len(videos) == len(audios)
    assert all(isinstance(a, rtc.AudioFrame) for a in audios)
    if want is not None:
        assert len(videos) == len(want)
        for got, w in zip(videos, want):
            np.testing.assert_array_equal(bgr(got), w)
    assert all((a.sample_rate, a.num_channels) == (rate, channels) for a in audios)
    sizes = [len(bytes(a.data)) for a in audios]
    assert sizes[:-1] == [frame_bytes(k, rate, channels) for k in range(len(sizes) - 1)]
    assert b"".join(bytes(a.data) for a in audios) == pcm


async def take(it, until, out: list):
    """Append items of ``it`` to ``out`` until ``until(out)``, bounded in time."""

    async def loop():
        while not until(out):
            out.append(await anext(it))

    await asyncio.wait_for(loop(), TIMEOUT)
    return out


def ends(items) -> int:
    return sum(isinstance(x, AudioSegmentEnd) for x in items)


@pytest.mark.parametrize("rate, channels", [(24000, 1), (48000, 2)], ids=["24k-mono", "48k-stereo"])
def test_generator_frames_are_offline_frames_and_audio_leaves_as_it_came(engine, tpl, offline, rate, channels):
    pcm = pcm_of(0.5, rate, channels)
    want = offline(pcm, rate, channels)

    async def main():
        gen = SyncTalkVideoGenerator(engine, template=tpl, idle=False)
        it = aiter(gen)
        try:
            for frame in audio_frames(pcm, rate, channels):
                await gen.push_audio(frame)
            await gen.push_audio(AudioSegmentEnd())
            return await take(it, lambda out: ends(out) == 1, [])
        finally:
            await gen.aclose()
            await it.aclose()

    items = asyncio.run(main())
    assert isinstance(items[-1], AudioSegmentEnd)
    assert_speech(items[:-1], pcm, rate, channels, want)


def test_clear_buffer_mid_utterance_then_a_new_one_completes(engine, tpl, offline):
    """Nothing of the cleared utterance after clear_buffer (no AudioSegmentEnd of it); the next
    one continues the template sweep and ends with its own AudioSegmentEnd."""
    rate = 24000
    long, nxt = pcm_of(1.2, rate, seed=1), pcm_of(0.45, rate, seed=2)

    async def main():
        gen = SyncTalkVideoGenerator(engine, template=tpl, idle=False)
        it = aiter(gen)
        try:
            for frame in audio_frames(long, rate):  # no AudioSegmentEnd: its last frames wait for it
                await gen.push_audio(frame)
            # stop right after a video frame, as a runner would be when the clear comes
            before = await take(it, lambda out: sum(isinstance(x, rtc.VideoFrame) for x in out) == 2, [])
            gen.clear_buffer()
            for frame in audio_frames(nxt, rate):
                await gen.push_audio(frame)
            await gen.push_audio(AudioSegmentEnd())
            after = await take(it, lambda out: ends(out) == 1, [])
            return before, after
        finally:
            await gen.aclose()
            await it.aclose()

    before, after = asyncio.run(main())
    shown = 2
    assert [type(x) for x in before] == [rtc.VideoFrame, rtc.AudioFrame, rtc.VideoFrame]
    spoken = long[: frame_bytes(0, rate, 1)]
    assert_speech(before[:2], spoken, rate, 1, offline(long, rate, count=1))
    np.testing.assert_array_equal(bgr(before[2]), offline(long, rate, count=2)[1])
    assert isinstance(after[-1], AudioSegmentEnd) and ends(after) == 1
    assert_speech(after[:-1], nxt, rate, 1, offline(nxt, rate, first=shown))


def test_idle_frames_are_paced_and_speech_continues_the_sweep(engine, tpl):
    rate = 16000
    pcm = pcm_of(0.3, rate, seed=3)

    async def main():
        gen = SyncTalkVideoGenerator(engine, template=tpl, idle=True, max_lag=0.0)  # max_lag 0: no U-Net
        it = aiter(gen)
        try:
            t0 = time.perf_counter()
            idle = await take(it, lambda out: time.perf_counter() - t0 > 0.5, [])
            elapsed = time.perf_counter() - t0
            for frame in audio_frames(pcm, rate):
                await gen.push_audio(frame)
            await gen.push_audio(AudioSegmentEnd())
            rest = await take(it, lambda out: ends(out) == 1, [])
            return idle, elapsed, rest
        finally:
            await gen.aclose()
            await it.aclose()

    idle, elapsed, rest = asyncio.run(main())
    assert all(isinstance(x, rtc.VideoFrame) for x in idle)
    assert 5 <= len(idle) <= elapsed * 25 + 2  # real time: about 25 frames/s, never faster
    videos = idle + [x for x in rest if isinstance(x, rtc.VideoFrame)]
    for pos, v in enumerate(videos):  # one sweep: idle, then speech, no gap, no repeat
        np.testing.assert_array_equal(bgr(v), tpl.frame(int(ping_pong(len(tpl), 1, first=pos)[0])))
    speech = rest[next(i for i, x in enumerate(rest) if isinstance(x, rtc.AudioFrame)) - 1 : -1]
    assert_speech(speech, pcm, rate, 1, None)


# --- the session: QueueAudioOutput + AvatarRunner, a stand-in room -----------------------------


class _Publication:
    def __init__(self, track):
        self.track = track

    async def wait_for_subscription(self) -> None:
        return None


class _LocalParticipant:
    def __init__(self):
        self.published: list = []

    async def publish_track(self, track, options=None):
        self.published.append(track)
        return _Publication(track)


class StandInRoom:
    """What AvatarRunner uses of an ``rtc.Room``: a connected room that accepts tracks."""

    name = "stand-in"

    def __init__(self):
        self.local_participant = _LocalParticipant()

    def isconnected(self) -> bool:
        return True

    def on(self, event, callback=None):
        return callback

    def off(self, event, callback=None) -> None:
        return None


async def audio_stream(frames):
    for frame in frames:
        yield frame


def test_session_say_and_interrupt(engine, tpl):
    """``session.say(..., audio=...)`` reaches the generator through the agent's audio output,
    its playback finishes once; after ``session.interrupt()`` once, with ``interrupted=True``."""
    rate = 24000
    first, second = pcm_of(0.5, rate, seed=4), pcm_of(3.0, rate, seed=5)

    async def main():
        avatar = SyncTalkAvatarSession(engine, template=tpl, max_lag=0.0, sample_rate=rate)
        session = AgentSession()
        room = StandInRoom()
        finished = []
        await avatar.start(session, room=room)
        assert avatar.audio_output is not None and session.output.audio is avatar.audio_output
        avatar.audio_output.on("playback_finished", lambda ev: finished.append(ev))
        await session.start(agent=Agent(instructions="say what you are given"))
        try:
            handle = session.say("first", audio=audio_stream(audio_frames(first, rate, sizes=(480,))))
            await asyncio.wait_for(handle.wait_for_playout(), TIMEOUT)
            await asyncio.sleep(0.3)
            assert [ev.interrupted for ev in finished] == [False]
            assert avatar.generator is not None and avatar.generator.stats()["frames"] > 0

            handle = session.say("second", audio=audio_stream(audio_frames(second, rate, sizes=(480,))))
            await asyncio.sleep(1.0)
            await asyncio.wait_for(session.interrupt(), TIMEOUT)
            await asyncio.wait_for(handle.wait_for_playout(), TIMEOUT)
            await asyncio.sleep(0.5)  # a stale AudioSegmentEnd would fire a second event here
            return finished, len(room.local_participant.published)
        finally:
            await session.aclose()
            await avatar.aclose()

    finished, published = asyncio.run(main())
    assert [ev.interrupted for ev in finished] == [False, True]
    assert finished[0].playback_position == pytest.approx(0.5, abs=0.05)
    assert published == 2  # the avatar's audio and video tracks
