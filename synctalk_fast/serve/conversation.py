"""The conversation core: one client talking to one avatar, whatever carries it.

A :class:`Conversation` is the part of a session that does not depend on
the transport: the :class:`~synctalk_fast.Stream` on the avatar's engine,
the session's :class:`~.config.Limits` (audio rate, idle time, session
length), barge-in, and the session's metrics (its :class:`~.admission.Seat`).
The WebSocket and the WebRTC transports each feed it audio and commands
and deliver its frames; both therefore apply the same limits.

:class:`Host` is what a transport needs of the server (the avatars, the
admission, the limits, the image pool); :class:`~.app.AvatarServer` is one.

Threads and ownership: a conversation lives on the server's event loop
(every method is called there); its stream runs in its own threads and is
built and closed in the loop's default executor. The conversation owns its
stream and its seat: :meth:`Conversation.close` (idempotent) ends the one
and releases the other.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Coroutine, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from ..engine import Engine
from ..errors import AudioError
from ..stream import Stream, StreamFrame
from ..template import Template
from .admission import Admission, Seat
from .config import AvatarSpec, Limits
from .protocol import Refusal

__all__ = ["Avatar", "Host", "Conversation"]


@dataclass(eq=False)
class Avatar:
    """A served avatar: its spec, its template and its engine."""

    spec: AvatarSpec
    template: Template
    engine: Engine


class Host(Protocol):
    """What a transport needs of the server."""

    limits: Limits
    admission: Admission

    @property
    def image_pool(self) -> Executor:
        """Where frames are encoded as images."""
        ...

    def avatar_for(self, headers: Mapping[str, str], query: Mapping[str, str], name: str) -> Avatar:
        """The avatar a client asks for, once its origin and token pass (:class:`Refusal` otherwise)."""
        ...


class Conversation:
    """One session's stream, limits, barge-in and metrics.

    Parameters
    ----------
    avatar : Avatar
    seat : Seat
        The session's admission (released by :meth:`close`).
    limits : Limits
        Applied for the whole session (a later change of the server's limits
        applies to later sessions).
    start, idle, max_lag : keyword-only
        As for :class:`~synctalk_fast.Stream`.

    Attributes
    ----------
    generation : int
        Interrupts so far: a frame taken from the stream before the latest
        interrupt is stale.
    """

    def __init__(
        self,
        avatar: Avatar,
        seat: Seat,
        limits: Limits,
        *,
        start: int = 0,
        idle: bool = False,
        max_lag: float | None = None,
    ):
        self.avatar, self.seat, self.limits = avatar, seat, limits
        self.name = avatar.spec.name
        self._stream_args: dict[str, Any] = {"start": start, "idle": idle, "max_lag": max_lag}
        self.opened = self.last_heard = time.monotonic()
        self.audio_seconds = 0.0
        self.generation = 0
        self.closing = False  # the client said it has no more to say: no idle timeout while the rest drains
        self._stream: Stream | None = None
        self._closed = False

    @property
    def stream(self) -> Stream:
        if self._stream is None:
            raise RuntimeError("the conversation is not open")
        return self._stream

    async def open(self) -> None:
        """Start the stream (in the default executor: it starts a thread)."""
        avatar, args = self.avatar, self._stream_args
        self._stream = await asyncio.get_running_loop().run_in_executor(
            None, lambda: Stream(avatar.engine, template=avatar.template, layout="throughput", warmup=False, **args)
        )

    # -- client -> stream ---------------------------------------------------------
    def heard(self) -> None:
        """The client said something (any message): the idle clock restarts."""
        self.last_heard = time.monotonic()

    def receive_audio(self, seconds: float) -> None:
        """``seconds`` of audio arrived: at most ``max_audio_rate`` x real time,
        with ``audio_burst`` seconds ahead.

        Raises
        ------
        Refusal
            ``rate_limited``.
        """
        self.heard()
        limits = self.limits
        self.audio_seconds += seconds
        allowed = limits.max_audio_rate * (time.monotonic() - self.opened) + limits.audio_burst
        if self.audio_seconds > allowed:
            raise Refusal("rate_limited", f"audio arrives faster than {limits.max_audio_rate:g} x real time")

    def push_audio(self, chunk: np.ndarray | bytes, *, sample_rate: int, channels: int = 1) -> None:
        """Speech into the stream (see :meth:`Stream.push_audio <synctalk_fast.Stream.push_audio>`).

        Raises
        ------
        Refusal
            ``bad_request``: audio the stream cannot take.
        """
        try:
            self.stream.push_audio(chunk, sample_rate=sample_rate, channels=channels)
        except AudioError as exc:
            raise Refusal("bad_request", str(exc)) from None

    def flush(self) -> Refusal | None:
        """End the utterance; the ``too_short`` notice when it made no frame (the session goes on)."""
        try:
            self.stream.flush()
        except AudioError as exc:
            return Refusal("too_short", str(exc))
        return None

    def interrupt(self) -> None:
        """Barge-in: the stream drops what is pending; frames already taken become stale."""
        self.generation += 1
        self.stream.interrupt()

    async def finish(self) -> None:
        """No more audio: the stream computes the rest, then its frames end."""
        self.closing = True
        stream = self.stream
        await asyncio.get_running_loop().run_in_executor(None, lambda: stream.close(drain=True))

    # -- stream -> client -----------------------------------------------------------
    async def frames(self) -> AsyncIterator[StreamFrame]:
        """The stream's frames until it ends (skipped frames counted)."""
        async for f in self.stream:
            if f.skipped:
                self.seat.skipped()
            yield f

    # -- the session ----------------------------------------------------------------
    async def run(self, *workers: Coroutine[Any, Any, None]) -> None:
        """Run the transport's ``workers`` and the limits' watch until every
        worker has returned or one fails; then :meth:`close`.

        Raises
        ------
        Refusal
            A limit was passed (``idle_timeout``, ``session_too_long``) or a
            worker refused (the transport tells the client and counts it).
        Exception
            What a worker raised.
        """
        tasks = [asyncio.ensure_future(w) for w in workers]
        watch = asyncio.ensure_future(self._watch())
        try:
            pending: set[asyncio.Future[None]] = {*tasks, watch}
            while any(not t.done() for t in tasks):
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for t in done:
                    exc = None if t.cancelled() else t.exception()
                    if exc is not None:
                        raise exc
        finally:
            for t in (*tasks, watch):
                t.cancel()
            await asyncio.gather(*tasks, watch, return_exceptions=True)
            await self.close()

    async def _watch(self) -> None:
        """Raise the limit the session passes first: its length, or a silence of ``idle_seconds``."""
        limits = self.limits
        while True:
            now = time.monotonic()
            end = self.opened + limits.max_session_seconds
            quiet_end = float("inf") if self.closing else self.last_heard + limits.idle_seconds
            if now >= end:
                raise Refusal("session_too_long", f"sessions last at most {limits.max_session_seconds:g} s")
            if now >= quiet_end:
                raise Refusal("idle_timeout", f"no message for {limits.idle_seconds:g} s")
            await asyncio.sleep(min(end, quiet_end) - now)

    async def close(self) -> None:
        """End the stream (pending frames dropped) and release the seat (idempotent)."""
        if self._closed:
            return
        self._closed = True
        try:
            stream = self._stream
            if stream is not None:
                await asyncio.get_running_loop().run_in_executor(None, lambda: stream.close(drain=False))
        finally:
            self.seat.release()
