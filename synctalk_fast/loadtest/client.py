"""One simulated conversation: a client of the public WebSocket protocol, timing every frame.

The client sends its plan's utterances as a live source does (20 ms messages, each when its
audio "has happened", at real time), flushes or interrupts each, pauses, and at the end sends
``close``; meanwhile it receives frames and times each against the moment its audio was sent:

- ``delay``: from sending the frame's own audio (frame ``k`` of an utterance shows samples
  ``640 k ..``) to receiving the frame; it includes the model's context (``frame_need``: 0.45 s
  for the first frame), so its floor is :data:`FLOOR`;
- ``wait``: from sending the last sample the frame needs (or the flush, for the frames the
  utterance's end decides) to receiving it: compute, queueing and transport.

Only the protocol is used: nothing of the server is imported.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

from ..live_features import frame_need
from .plan import CHUNK, RATE, PlannedUtterance

__all__ = ["FLOOR", "SessionResult", "run_session"]

FLOOR = frame_need(0) / RATE  #: seconds: the first frame of an utterance needs this much of its audio
_FRAME = RATE // 25  # samples a frame shows


@dataclass
class SessionResult:
    """What one client saw.

    Attributes
    ----------
    session : int
        The client's number in its run.
    frames : int
        Speech frames received.
    idle_frames, skipped, dropped : int
        Idle frames; frames the server marked ``skipped`` (sent unsynced under ``max_lag``);
        frames never received (gaps in ``index``: the server dropped them for a slow reader).
    delays, waits : list of float
        Seconds, per speech frame (see the module's docstring).
    utterances, flushed, completed, interrupted : int
        Utterances sent; of them flushed; of those, ended by ``utterance_end``; interrupted.
    missing : int
        Frames an ``utterance_end`` announced that did not arrive.
    errors : list of str
        Error codes the server sent.
    refused : bool
        The server refused the session (``server_full``).
    close_code : int or None
        How the socket closed.
    seconds : float
        From the first audio sent to the socket's close.
    bytes_received : int
        Image bytes received.
    images : list of (dict, bytes), optional
        Each frame's header and image, when the session was asked to keep them.
    """

    session: int
    frames: int = 0
    idle_frames: int = 0
    skipped: int = 0
    dropped: int = 0
    delays: list[float] = field(default_factory=list)
    waits: list[float] = field(default_factory=list)
    utterances: int = 0
    flushed: int = 0
    completed: int = 0
    interrupted: int = 0
    missing: int = 0
    errors: list[str] = field(default_factory=list)
    refused: bool = False
    close_code: int | None = None
    seconds: float = 0.0
    bytes_received: int = 0
    images: list[tuple[dict[str, Any], bytes]] | None = None

    @property
    def fps(self) -> float:
        """Speech and idle frames received per second of the session."""
        return (self.frames + self.idle_frames) / self.seconds if self.seconds > 0 else 0.0


class _Sent:
    """When each part of each utterance left the client (``time.monotonic()``)."""

    def __init__(self, plan: list[PlannedUtterance]):
        self.plan = plan
        self.chunks: list[list[float]] = [[] for _ in plan]  # per utterance, per chunk
        self.ended: list[float | None] = [None] * len(plan)  # flush or interrupt

    def at(self, u: int, sample: int) -> float | None:
        """When sample ``sample`` of utterance ``u`` had been sent (the flush, past its end)."""
        c = sample // CHUNK
        if c < len(self.chunks[u]):
            return self.chunks[u][c]
        return self.ended[u]


async def _send(ws: Any, plan: list[PlannedUtterance], sent: _Sent, result: SessionResult) -> None:
    clock = time.monotonic()  # when the audio being sent "happened"
    for u, utt in enumerate(plan):
        for c in range(0, utt.sent, CHUNK):
            piece = utt.samples[c : min(c + CHUNK, utt.sent)]
            clock += len(piece) / RATE
            await asyncio.sleep(max(0.0, clock - time.monotonic()))
            await ws.send(piece.astype("<i2").tobytes())
            sent.chunks[u].append(time.monotonic())
        await ws.send(json.dumps({"type": "flush" if utt.interrupt_at is None else "interrupt"}))
        sent.ended[u] = time.monotonic()
        result.utterances += 1
        result.flushed += utt.interrupt_at is None
        result.interrupted += utt.interrupt_at is not None
        clock += utt.pause
        await asyncio.sleep(max(0.0, clock - time.monotonic()))
    await ws.send(json.dumps({"type": "close"}))


def _on_frame(header: dict[str, Any], image: bytes, sent: _Sent, seen: dict[int, int], result: SessionResult) -> None:
    now = time.monotonic()
    result.bytes_received += len(image)
    if result.images is not None:
        result.images.append((header, image))
    result.skipped += bool(header.get("skipped"))
    if header.get("idle"):
        result.idle_frames += 1
        return
    u = int(header["utterance"])
    k = seen[u] = seen.get(u, -1) + 1
    result.frames += 1
    if not 0 <= u < len(sent.plan):
        return
    own, need = sent.at(u, k * _FRAME), sent.at(u, min(frame_need(k), sent.plan[u].sent) - 1)
    if own is not None:
        result.delays.append(now - own)
    if need is not None:
        result.waits.append(now - need)


async def _receive(ws: Any, sent: _Sent, result: SessionResult) -> None:
    header: dict[str, Any] | None = None
    seen: dict[int, int] = {}  # frames received per utterance, less one
    next_index = 0
    async for message in ws:
        if isinstance(message, bytes):
            if header is not None:
                _on_frame(header, message, sent, seen, result)
                header = None
            continue
        msg = json.loads(message)
        kind = msg.get("type")
        if kind == "frame":
            header = msg
            index = int(msg.get("index", next_index))
            result.dropped += max(0, index - next_index)
            next_index = index + 1
        elif kind == "utterance_end":
            result.completed += 1
            result.missing += max(0, int(msg.get("frames", 0)) - seen.get(int(msg["utterance"]), -1) - 1)
        elif kind == "error":
            result.errors.append(str(msg.get("code")))
            result.refused |= msg.get("code") == "server_full"


async def run_session(
    url: str,
    plan: list[PlannedUtterance],
    *,
    session: int = 0,
    image_format: str = "jpeg",
    max_lag: float | None = None,
    token: str | None = None,
    timeout: float = 60.0,
    keep_images: bool = False,
) -> SessionResult:
    """Hold one conversation with a server and time its frames.

    Parameters
    ----------
    url : str
        The avatar's stream, ``ws://HOST:PORT/v1/avatars/NAME/stream``.
    plan : list of PlannedUtterance
        What the client says (:func:`~synctalk_fast.loadtest.plan.speech_plan`).
    session : int, keyword-only
        The client's number (kept in the result).
    image_format : {"jpeg", "png", "raw"}, keyword-only
        The frames' format, asked in the start message.
    max_lag : float, optional, keyword-only
        Asked in the start message (frames later than this come ``skipped``).
    token : str, optional, keyword-only
        The server's token (sent as a bearer header).
    timeout : float, keyword-only
        Seconds the session may take beyond its plan's length (connection, the last frames).
    keep_images : bool, keyword-only
        Keep every frame's header and image (:attr:`SessionResult.images`).

    Returns
    -------
    SessionResult
        Also when the server refused or closed the session (``refused``, ``errors``,
        ``close_code``); a connection that cannot be opened raises ``OSError``.
    """
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    result, sent = SessionResult(session, images=[] if keep_images else None), _Sent(plan)
    start: dict[str, Any] = {"type": "start", "sample_rate": RATE, "channels": 1, "format": image_format}
    if max_lag is not None:
        start["max_lag"] = max_lag
    headers = {"Authorization": f"Bearer {token}"} if token else None
    length = sum(u.sent / RATE + u.pause for u in plan)
    t0 = time.monotonic()
    ws: Any = None
    try:
        async with asyncio.timeout(length + timeout):
            async with connect(url, max_size=None, additional_headers=headers, open_timeout=timeout) as ws:
                try:
                    await ws.send(json.dumps(start))
                except ConnectionClosed:  # refused at once: its error message is still to be read
                    pass
                t0 = time.monotonic()
                sender = asyncio.create_task(_send(ws, plan, sent, result))
                try:
                    await _receive(ws, sent, result)
                finally:
                    sender.cancel()
                    try:
                        await sender
                    except (asyncio.CancelledError, ConnectionClosed):
                        pass
    except ConnectionClosed:  # closed with an error code (a refusal, a fault): kept below
        pass
    result.seconds = time.monotonic() - t0
    result.close_code = ws.close_code if ws is not None else None
    return result
