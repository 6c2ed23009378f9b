"""Nothing blocks the framework's event loop: every network call (the audio encoder, the U-Net)
runs in a thread with no running event loop, and no thread is made per frame."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from synctalk_fast.demo import synthetic_speech
from synctalk_fast.models import ModelSession

RATE = 24000
TIMEOUT = 120.0


def pcm_of(seconds: float, seed: int) -> bytes:
    speech = synthetic_speech(seconds, sample_rate=RATE, seed=seed)
    return np.round(np.clip(speech, -1, 1) * 32767).astype("<i2").tobytes()


@pytest.fixture
def network_calls(monkeypatch):
    """Every ``ModelSession.run`` call, as ``(on an event loop's thread, thread name)``."""
    calls: list[tuple[bool, str]] = []
    run = ModelSession.run

    def recorded(self, *args, **kwargs):
        try:
            asyncio.get_running_loop()
            on_loop = True
        except RuntimeError:
            on_loop = False
        calls.append((on_loop, threading.current_thread().name))
        return run(self, *args, **kwargs)

    monkeypatch.setattr(ModelSession, "run", recorded)
    return calls


def assert_off_the_loop(calls: list[tuple[bool, str]]) -> None:
    assert calls, "no network ran"
    on_loop = sorted({name for on, name in calls if on})
    assert not on_loop, f"network calls on the event loop's thread: {on_loop}"


def test_pipecat_service_computes_off_the_loop(engine, tpl, network_calls):
    pytest.importorskip("pipecat", reason="the pipecat extra is not installed")
    from pipecat.frames.frames import OutputImageRawFrame, TTSAudioRawFrame, TTSStartedFrame, TTSStoppedFrame
    from pipecat.tests.utils import run_test

    from synctalk_fast.integrations.pipecat import SyncTalkVideoService

    service = SyncTalkVideoService(engine, template=tpl)
    sent, threads = [], []
    for k in range(3):
        pcm = pcm_of(0.5, k)
        chunks = [TTSAudioRawFrame(pcm[i : i + 960], RATE, 1) for i in range(0, len(pcm), 960)]
        sent += [TTSStartedFrame(), *chunks, TTSStoppedFrame()]

    async def main():
        probe = asyncio.create_task(count_threads(threads))
        try:
            return await run_test(service, frames_to_send=sent, start_timeout=60.0)
        finally:
            probe.cancel()

    down, _ = asyncio.run(asyncio.wait_for(main(), TIMEOUT))
    assert sum(isinstance(f, OutputImageRawFrame) for f in down) == 3 * 11
    assert_off_the_loop(network_calls)
    assert_no_thread_per_frame(threads, 3 * 11)


def test_livekit_generator_computes_off_the_loop(engine, tpl, network_calls):
    pytest.importorskip("livekit.agents", reason="the livekit extra is not installed")
    from livekit import rtc
    from livekit.agents.voice.avatar import AudioSegmentEnd

    from synctalk_fast.integrations.livekit import SyncTalkVideoGenerator

    threads: list[int] = []

    async def main() -> int:
        gen = await asyncio.to_thread(SyncTalkVideoGenerator, engine, template=tpl, idle=False)
        items, videos = aiter(gen), 0
        probe = asyncio.create_task(count_threads(threads))
        try:
            for k in range(3):
                pcm = pcm_of(0.5, k)
                for i in range(0, len(pcm), 960):
                    await gen.push_audio(rtc.AudioFrame(pcm[i : i + 960], RATE, 1, len(pcm[i : i + 960]) // 2))
                await gen.push_audio(AudioSegmentEnd())
                while not isinstance(item := await asyncio.wait_for(anext(items), TIMEOUT), AudioSegmentEnd):
                    videos += isinstance(item, rtc.VideoFrame)
        finally:
            probe.cancel()
            await gen.aclose()
            await items.aclose()
        return videos

    assert asyncio.run(main()) == 3 * 11
    assert_off_the_loop(network_calls)
    assert_no_thread_per_frame(threads, 3 * 11)


def assert_no_thread_per_frame(threads: list[int], frames: int) -> None:
    """The stream's own threads (features, the engine's workers) and the loop's executor come and
    stay; nothing more is made while ``frames`` frames are (one per reply: the memory test)."""
    assert max(threads) - min(threads) <= 8 < frames, f"threads went from {min(threads)} to {max(threads)}"


async def count_threads(out: list[int]) -> None:
    """``threading.active_count()`` every 10 ms, while the replies run (cancelled after)."""
    while True:
        out.append(threading.active_count())
        await asyncio.sleep(0.01)
