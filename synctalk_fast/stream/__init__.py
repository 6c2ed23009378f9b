"""Streaming: audio chunks in, lip-synced frames out, as soon as each frame can be computed.

- :mod:`.frame`: :class:`StreamFrame`, what a stream hands out;
- :mod:`.convert`: chunks of any rate and layout -> 16 kHz mono;
- :mod:`.utterance`: utterances and jobs (the bookkeeping between audio and frames);
- :mod:`.state`: the state the stream's threads share, its lock, generations and wake-ups;
- :mod:`.features`: the feature thread (new audio -> features -> jobs);
- :mod:`.work`: the stream as the engine's work source (jobs -> U-Net -> frames, ``max_lag``);
- :mod:`.emit`: the consumer's side (order, idle pacing, thread and asyncio waiting, stats);
- :mod:`.core`: :class:`Stream`, which ties them together;
- :mod:`.replay`: a sound file played into a stream as a live source would.
"""

from .core import Stream
from .frame import StreamFrame

__all__ = ["Stream", "StreamFrame"]
