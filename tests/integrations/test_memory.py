"""Memory and threads stay flat over 100 utterances, through each framework's own machinery.

Each plug-in runs 100 short replies one after the other on the shared test engine, with
``max_lag=0`` (every frame goes the stream's whole way, features, jobs, engine workers, delivery,
but as its template frame: no U-Net, so 100 replies take seconds); what leaves is dropped at
once, so the figure is the plug-in's and the stream's own. The resident set size after reply 100 may exceed the one after reply 20 by no
more than :data:`GROWTH` (allocator noise; a leak of one 320x240 image per reply is 23 MB).
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading

import numpy as np
import pytest

from synctalk_fast.demo import synthetic_speech

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/statm")

REPLIES, FIRST = 100, 20
GROWTH = 8 * 2**20  # bytes
RATE = 24000
TIMEOUT = 300.0


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def pcm_of(seed: int) -> bytes:
    """0.3 s of speech-like 24 kHz mono int16: 6 frames, the last one carrying the rest."""
    speech = synthetic_speech(0.3, sample_rate=RATE, seed=seed)
    return np.round(np.clip(speech, -1, 1) * 32767).astype("<i2").tobytes()


def assert_flat(sizes: list[int], threads: list[int]) -> None:
    """RSS and thread count after each reply: flat from reply ``FIRST`` on."""
    assert len(sizes) == len(threads) == REPLIES
    assert threads[-1] == threads[FIRST - 1], (
        f"threads: {threads[FIRST - 1]} after reply {FIRST}, {threads[-1]} after {REPLIES}"
    )
    grown = sizes[-1] - sizes[FIRST - 1]
    print(f"RSS: {sizes[FIRST - 1] / 2**20:.1f} MiB after reply {FIRST}, {sizes[-1] / 2**20:.1f} MiB after {REPLIES}")
    assert grown <= GROWTH, f"RSS grew {grown / 2**20:.1f} MiB from reply {FIRST} to reply {REPLIES}"


def test_pipecat_service_memory_is_flat(engine, tpl):
    pytest.importorskip("pipecat", reason="the pipecat extra is not installed")
    from pipecat.frames.frames import (
        EndFrame,
        Frame,
        OutputImageRawFrame,
        TTSAudioRawFrame,
        TTSStartedFrame,
        TTSStoppedFrame,
    )
    from pipecat.pipeline.pipeline import Pipeline
    from pipecat.pipeline.worker import PipelineWorker
    from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
    from pipecat.workers.runner import WorkerRunner

    from synctalk_fast.integrations.pipecat import SyncTalkVideoService

    class Drain(FrameProcessor):
        """Drops images and audio; at each TTSStoppedFrame, notes the RSS and wakes the feeder."""

        def __init__(self):
            super().__init__()
            self.sizes: list[int] = []
            self.threads: list[int] = []
            self.images = 0
            self.stopped = asyncio.Event()

        async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
            await super().process_frame(frame, direction)
            if isinstance(frame, OutputImageRawFrame):
                self.images += 1
                return
            if isinstance(frame, TTSAudioRawFrame):
                return
            if isinstance(frame, TTSStoppedFrame):
                self.sizes.append(rss())
                self.threads.append(threading.active_count())
                self.stopped.set()
            await self.push_frame(frame, direction)

    async def main() -> Drain:
        drain = Drain()
        worker = PipelineWorker(Pipeline([SyncTalkVideoService(engine, template=tpl, max_lag=0.0), drain]))
        runner = WorkerRunner(handle_sigint=False)
        await runner.add_workers(worker)
        running = asyncio.create_task(runner.run())
        for k in range(REPLIES):
            drain.stopped.clear()
            pcm = pcm_of(k)
            chunks = [
                TTSAudioRawFrame(audio=pcm[i : i + 960], sample_rate=RATE, num_channels=1)
                for i in range(0, len(pcm), 960)
            ]
            await worker.queue_frames([TTSStartedFrame(), *chunks, TTSStoppedFrame()])
            await asyncio.wait_for(drain.stopped.wait(), TIMEOUT)
        await worker.queue_frame(EndFrame())
        await asyncio.wait_for(running, TIMEOUT)
        return drain

    drain = asyncio.run(main())
    assert drain.images == REPLIES * 6
    assert_flat(drain.sizes, drain.threads)


def test_livekit_generator_memory_is_flat(engine, tpl):
    pytest.importorskip("livekit.agents", reason="the livekit extra is not installed")
    from livekit import rtc
    from livekit.agents.voice.avatar import AudioSegmentEnd

    from synctalk_fast.integrations.livekit import SyncTalkVideoGenerator

    async def main() -> tuple[list[int], list[int], int]:
        gen = await asyncio.to_thread(SyncTalkVideoGenerator, engine, template=tpl, idle=False, max_lag=0.0)
        items, sizes, threads, videos = aiter(gen), [], [], 0
        try:
            for k in range(REPLIES):
                pcm = pcm_of(k)
                for i in range(0, len(pcm), 960):
                    await gen.push_audio(rtc.AudioFrame(pcm[i : i + 960], RATE, 1, len(pcm[i : i + 960]) // 2))
                await gen.push_audio(AudioSegmentEnd())
                while not isinstance(item := await asyncio.wait_for(anext(items), TIMEOUT), AudioSegmentEnd):
                    videos += isinstance(item, rtc.VideoFrame)
                sizes.append(rss())
                threads.append(threading.active_count())
        finally:
            await gen.aclose()
            await items.aclose()
        return sizes, threads, videos

    sizes, threads, videos = asyncio.run(main())
    assert videos == REPLIES * 6
    assert_flat(sizes, threads)
