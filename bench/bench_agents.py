"""The avatar inside a voice agent: first-image latency and frames/s, measured in one run.

Each figure runs a real Pipecat pipeline (``PipelineWorker``: a TTS stand-in -> the
:class:`~synctalk_fast.integrations.pipecat.SyncTalkVideoService` -> a tap):

- ``latency``: from the moment the utterance's first ``TTSAudioRawFrame`` reaches the avatar to
  the moment its first image leaves it, p50 / p95 over ``--utterances`` utterances (after one
  to warm up), for two TTS pacings: ``burst`` (the TTS sends the reply's audio at once, as fast
  TTS services nearly do) and ``real time`` (a 20 ms chunk every 20 ms);
- ``frames/s``: images delivered per second of wall time while the agents speak a
  ``--long``-second reply each: one agent alone, then two agents on one engine at once, and
  offline generation (``Pipeline.frames``) of the same speech on the same engine for the ratio.

Every row is fp32 (ONNX Runtime) and, with OpenVINO installed, bf16 (OpenVINO; exact only on
CPUs with avx512_bf16 or AMX). Speech is 24 kHz mono, as TTS services commonly send it.

Usage: ``python bench/bench_agents.py [--utterances 20] [--seconds 1.2] [--long 8] [--data ../shared/data]``.
With the shared data the face U-Net and the shared template are used; without, random weights
and a synthetic template of the same frame size.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

_root = Path(__file__).resolve().parents[1]
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _root]  # measure the installed package

try:
    from pipecat.frames.frames import (
        EndFrame,
        Frame,
        OutputImageRawFrame,
        TTSAudioRawFrame,
        TTSStartedFrame,
        TTSStoppedFrame,
    )
    from pipecat.pipeline.pipeline import Pipeline as PipecatPipeline
    from pipecat.pipeline.worker import PipelineWorker
    from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
    from pipecat.workers.runner import WorkerRunner
except ImportError:
    sys.exit('bench_agents.py needs Pipecat: pip install "synctalk-fast[pipecat]"')

from _material import material  # noqa: E402

import synctalk_fast as stf  # noqa: E402
from synctalk_fast._util.system import cpu_cores, cpu_name  # noqa: E402
from synctalk_fast.demo import synthetic_speech  # noqa: E402
from synctalk_fast.integrations.pipecat import SyncTalkVideoService  # noqa: E402

RATE = 24000  # the TTS's sample rate
CHUNK = RATE // 50  # 20 ms, as TTS services send it
TIMEOUT = 600.0  # seconds: any one reply


class Tap(FrameProcessor):
    """Stamps what crosses it: the first TTS audio of each utterance (before the avatar) or the
    first image (after it); counts images; ``done`` is set at each ``TTSStoppedFrame``."""

    def __init__(self, kind: type[Frame]):
        super().__init__()
        self.kind = kind
        self.first: float | None = None
        self.images = 0
        self.done = asyncio.Event()

    def reset(self) -> None:
        self.first, self.images = None, 0
        self.done.clear()

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, self.kind) and self.first is None:
            self.first = time.perf_counter()
        if isinstance(frame, OutputImageRawFrame):
            self.images += 1
        if isinstance(frame, TTSStoppedFrame):
            self.done.set()
        await self.push_frame(frame, direction)


class Agent:
    """One agent's pipeline: TTS audio in, through the avatar, out to a tap."""

    def __init__(self, engine: stf.Engine, template: stf.Template, name: str):
        self.before, self.after = Tap(TTSAudioRawFrame), Tap(OutputImageRawFrame)
        avatar = SyncTalkVideoService(engine, template=template, name=name)
        self.worker = PipelineWorker(PipecatPipeline([self.before, avatar, self.after]))

    async def say(self, pcm: bytes, *, real_time: bool) -> tuple[float, int]:
        """One reply; returns (seconds from its first audio at the avatar to its first image, images)."""
        self.before.reset()
        self.after.reset()
        await self.worker.queue_frame(TTSStartedFrame())
        start, step = time.perf_counter(), 2 * CHUNK
        for i in range(0, len(pcm), step):
            if real_time:
                await asyncio.sleep(max(0.0, start + i / (2 * RATE) - time.perf_counter()))
            await self.worker.queue_frame(TTSAudioRawFrame(audio=pcm[i : i + step], sample_rate=RATE, num_channels=1))
        await self.worker.queue_frame(TTSStoppedFrame())
        await asyncio.wait_for(self.after.done.wait(), TIMEOUT)
        assert self.before.first is not None and self.after.first is not None
        return self.after.first - self.before.first, self.after.images


async def with_agents(engine: stf.Engine, template: stf.Template, n: int, body):
    """Run ``body(agents)`` with ``n`` agents' pipelines running on one engine."""
    agents = [Agent(engine, template, f"avatar{k}") for k in range(n)]
    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(*(a.worker for a in agents))
    running = asyncio.create_task(runner.run())
    try:
        return await body(agents)
    finally:
        for a in agents:
            await a.worker.queue_frame(EndFrame())
        await asyncio.wait_for(running, TIMEOUT)


def pcm_of(seconds: float, seed: int) -> bytes:
    speech = synthetic_speech(seconds, sample_rate=RATE, seed=seed)
    return np.round(np.clip(speech, -1, 1) * 32767).astype("<i2").tobytes()


def latencies(engine, template, utterances: int, seconds: float, *, real_time: bool) -> list[float]:
    async def body(agents):
        (agent,) = agents
        await agent.say(pcm_of(seconds, 999), real_time=real_time)  # warm-up, not counted
        return [(await agent.say(pcm_of(seconds, k), real_time=real_time))[0] for k in range(utterances)]

    return asyncio.run(with_agents(engine, template, 1, body))


def frames_per_second(engine, template, agents: int, seconds: float) -> float:
    async def body(all_agents):
        await asyncio.gather(*(a.say(pcm_of(0.5, 998), real_time=False) for a in all_agents))  # warm-up
        t0 = time.perf_counter()
        done = await asyncio.gather(*(a.say(pcm_of(seconds, k), real_time=False) for k, a in enumerate(all_agents)))
        return sum(images for _, images in done) / (time.perf_counter() - t0)

    return asyncio.run(with_agents(engine, template, agents, body))


def offline_frames_per_second(engine, template, seconds: float, work: Path) -> float:
    import soundfile as sf

    wav = work / "long.wav"
    sf.write(wav, np.frombuffer(pcm_of(seconds, 0), "<i2"), RATE, subtype="PCM_16")
    pipe = stf.Pipeline(engine)
    feats = pipe.audio_features(wav)
    for _ in pipe.frames(feats[:16], template):  # warm-up
        pass
    t0 = time.perf_counter()
    n = sum(1 for _ in pipe.frames(feats, template))
    return n / (time.perf_counter() - t0)


def precisions() -> list[dict[str, str]]:
    rows = [{"runtime": "onnxruntime", "precision": "fp32"}]
    try:
        import openvino  # noqa: F401

        rows.append({"runtime": "openvino", "precision": "bf16"})
    except ImportError:
        print("openvino is not installed: no bf16 row")
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--utterances", type=int, default=20)
    p.add_argument("--seconds", type=float, default=1.2, help="seconds of each reply of the latency rows")
    p.add_argument("--long", type=float, default=8.0, help="seconds of each agent's reply of the frames/s rows")
    p.add_argument("--data", default=str(_root.parent / "shared" / "data"))
    args = p.parse_args()
    print(f"machine: {cpu_name()}, {cpu_cores()} cores; synctalk-fast {stf.__version__}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        template_dir, unet, encoder, _, what = material(Path(args.data), work)
        template = stf.Template(template_dir)
        width, height = template.size
        print(f"{what}: {len(template)} frames of {width}x{height}; TTS audio 24 kHz mono", flush=True)
        for opts in precisions():
            engine = stf.Engine(unet, encoder, **opts)  # type: ignore[arg-type]
            label = f"{opts['precision']} ({opts['runtime']}, batch {engine.options.batch_size or 'auto'})"
            try:
                for real_time in (False, True):
                    lat = latencies(engine, template, args.utterances, args.seconds, real_time=real_time)
                    q = statistics.quantiles(lat, n=20)
                    pacing = "real time" if real_time else "burst"
                    print(
                        f"{label}: latency, {pacing:9s}: p50 {1000 * statistics.median(lat):6.0f} ms, "
                        f"p95 {1000 * q[18]:6.0f} ms ({len(lat)} utterances of {args.seconds} s)",
                        flush=True,
                    )
                offline = offline_frames_per_second(engine, template, args.long, work)
                one = frames_per_second(engine, template, 1, args.long)
                two = frames_per_second(engine, template, 2, args.long)
                print(
                    f"{label}: frames/s: offline {offline:.1f}; one agent {one:.1f} ({one / offline:.2f}x offline); "
                    f"two agents on one engine {two:.1f} in all ({two / offline:.2f}x offline, "
                    f"{two / 2:.1f} each)",
                    flush=True,
                )
            finally:
                engine.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
