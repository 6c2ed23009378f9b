"""``async for f in stream``: woken by the stream's threads, no thread of its own."""

from __future__ import annotations

import asyncio
import random
import threading
import time

import numpy as np
import pytest

import synctalk_fast as stf
from synctalk_fast.demo import synthetic_speech
from synctalk_fast.template import ping_pong

CONSUMERS = 16


@pytest.fixture(scope="module")
def speech():
    """0.5 s of speech-like sound at 16 kHz (13 frames)."""
    return synthetic_speech(0.5)


@pytest.fixture(scope="module")
def sync_frames(pipe, tpl, speech):
    """What the thread consumer (``frames()``) gets for ``speech``."""
    with stf.Stream(pipe, template=tpl, layout="throughput") as stream:
        stream.push_audio(speech)
        stream.flush()
        return list(stream.frames())


def assert_identical(got, want):
    assert [f.index for f in got] == list(range(len(want)))
    for f, w in zip(got, want):
        assert (f.utterance, f.frame, f.skipped) == (w.utterance, w.frame, w.skipped)
        np.testing.assert_array_equal(f.image, w.image)
        np.testing.assert_array_equal(f.audio, w.audio)


def _executor_threads(names):
    return sorted(n for n in names if n.startswith(("asyncio_", "ThreadPoolExecutor")))


def test_sixteen_async_consumers_on_one_engine_add_no_threads(pipe, tpl, speech, sync_frames):
    engine = pipe.engine
    before = {t.name for t in threading.enumerate()}
    count_before = threading.active_count()
    streams = [stf.Stream(engine, template=tpl, layout="throughput", warmup=False) for _ in range(CONSUMERS)]
    names: set[str] = set()
    peak = 0

    async def feed(stream, k):
        for i in range(0, len(speech), 800 + 80 * k):  # each its own chunking
            stream.push_audio(speech[i : i + 800 + 80 * k])
            await asyncio.sleep(0.002)
        stream.flush()
        stream.close()

    async def consume(stream):
        return [f async for f in stream]

    async def watch(done):
        nonlocal peak
        while not done.is_set():
            names.update(t.name for t in threading.enumerate())
            peak = max(peak, threading.active_count())
            await asyncio.sleep(0.005)

    async def main():
        done = asyncio.Event()
        watcher = asyncio.create_task(watch(done))
        try:
            results = await asyncio.gather(*(consume(s) for s in streams), *(feed(s, k) for k, s in enumerate(streams)))
        finally:
            done.set()
            await watcher
        return results[:CONSUMERS]

    try:
        results = asyncio.run(main())
    finally:
        for s in streams:
            s.close(drain=False)
    assert _executor_threads(names - before) == []
    # the streams' feature threads and the engine's workers, nothing per consumer
    assert peak - count_before <= CONSUMERS + len(engine.sessions)
    assert len(names - before) <= CONSUMERS + len(engine.sessions)
    for got in results:
        assert_identical(got, sync_frames)
    assert all(s.stats()["frames"] == len(sync_frames) for s in streams)


def test_cancelled_waits_lose_no_frame(pipe, tpl, speech, sync_frames):
    """A consumer cancelled again and again while it waits still gets every frame, once, in order."""
    stream = stf.Stream(pipe, template=tpl, layout="throughput", warmup=False)

    def feeder():
        for i in range(0, len(speech), 320):
            time.sleep(0.004)
            stream.push_audio(speech[i : i + 320])
        stream.close()

    async def main():
        rng = random.Random(3)
        got, cancels, agen = [], 0, None
        threading.Thread(target=feeder).start()
        while True:
            agen = agen or stream.__aiter__()
            task = asyncio.ensure_future(anext(agen, None))
            await asyncio.sleep(rng.uniform(0, 0.01))
            task.cancel()
            try:
                f = await task
            except asyncio.CancelledError:
                cancels += 1
                agen = None  # the cancelled generator is closed: iterate anew
                continue
            if f is None:
                return got, cancels
            got.append(f)

    got, cancels = asyncio.run(main())
    assert cancels > 0
    assert_identical(got, sync_frames)
    assert stream.stats()["frames"] == len(sync_frames)


def test_async_idle_frames_are_paced_without_a_thread(pipe, tpl, speech, sync_frames):
    """Idle frames come at the frame rate from the event loop's timer, then the speech, then idle again."""
    stream = stf.Stream(pipe, template=tpl, idle=True, layout="throughput", warmup=False)
    n = len(sync_frames)

    async def control():
        await asyncio.sleep(0.3)  # ~7 idle frames
        stream.push_audio(speech)
        stream.flush()
        while stream.stats()["frames"] < n:
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)
        stream.close()

    async def main():
        before = {t.name for t in threading.enumerate()}
        got = (await asyncio.gather(consume(), control()))[0]
        return got, {t.name for t in threading.enumerate()} - before

    async def consume():
        return [f async for f in stream]

    got, new_threads = asyncio.run(main())
    assert _executor_threads(new_threads) == []
    assert [f.index for f in got] == list(range(len(got)))
    speech_frames = [f for f in got if not f.idle]
    p0 = speech_frames[0].index
    before, after = got[:p0], got[p0 + len(speech_frames) :]
    assert len(before) >= 3 and len(after) >= 2 and all(f.idle for f in before + after)
    assert len(speech_frames) == n
    for f in before + after:
        k = int(ping_pong(len(tpl), 1, first=f.index)[0])
        np.testing.assert_array_equal(f.image, tpl.frame(k))
    gaps = np.diff([f.emitted for f in before])
    assert gaps.min() >= 0.9 / 25


def test_async_consumer_gets_the_stream_error(model_dir, tpl, speech):
    """A failure in the stream's threads wakes the waiting consumer, which raises it."""
    engine = stf.Engine(model_dir / "unet_328.onnx", model_dir / "audio_encoder.onnx", sessions=1, threads=1)

    def broken(mel):
        raise RuntimeError("encoder exploded")

    engine.encode = broken  # type: ignore[method-assign]
    stream = stf.Stream(engine, template=tpl, warmup=False)

    async def main():
        async def push_later():
            await asyncio.sleep(0.05)
            stream.push_audio(speech)

        task = asyncio.create_task(push_later())
        try:
            return [f async for f in stream]
        finally:
            await task

    with pytest.raises(RuntimeError, match="encoder exploded"):
        asyncio.run(asyncio.wait_for(main(), 30))
    stream.close(drain=False)
    engine.close()
