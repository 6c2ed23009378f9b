"""The WebSocket transport: ``/v1/avatars/{name}/stream`` (the protocol is
in :mod:`.protocol`).

A session is a :class:`~.conversation.Conversation` and three tasks on the
event loop: a receiver (client messages -> the conversation), a pump (its
frames -> images encoded in the server's image pool -> the send queue) and
a writer (the send queue -> the socket). The send queue is bounded: a
client that cannot keep up loses frames (counted), never delays the others.

Threads and ownership: everything here runs on the server's event loop,
which owns the socket and the send queue; images are encoded in the
server's pool.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from ..stream import StreamFrame
from .conversation import Conversation, Host
from .protocol import Refusal, Start, encode_image, frame_header, parse_start, utterance_end

__all__ = ["websocket_endpoint"]

log = logging.getLogger(__name__)

#: The send queue's items: (text, image bytes or None, the frame or None); text None ends the writer.
_Item = tuple[str | None, bytes | None, StreamFrame | None]
_END: _Item = (None, None, None)


class _Disconnected(Exception):
    """The client went away."""


def _gone(exc: BaseException) -> bool:
    """Whether ``exc`` says the client went away (a send on a closed socket)."""
    from starlette.websockets import WebSocketDisconnect

    return isinstance(exc, (_Disconnected, WebSocketDisconnect, ConnectionError)) or (
        isinstance(exc, OSError) and "disconnect" in type(exc).__name__.lower()
    )


async def websocket_endpoint(host: Host, ws: Any) -> None:
    """One WebSocket session on ``host``, from the handshake to the close.

    Refusals (a bad client, a full server, a bad start message, a passed
    limit) are sent as an error message, then the socket closes with the
    code's close code; an internal fault ends this session only (1011).
    """
    name = ws.path_params["name"]
    await ws.accept()
    seat = None
    try:
        avatar = host.avatar_for(ws.headers, ws.query_params, name)
        seat = host.admission.admit(name)
        limits = host.limits
        start = await _start_message(ws, limits.start_timeout)
        conversation = Conversation(avatar, seat, limits, start=start.start, idle=start.idle, max_lag=start.max_lag)
        await _Session(host, ws, conversation, start).run()
    except _Disconnected:
        pass
    except Refusal as exc:
        host.admission.refused(name, exc.code)
        await _send_error(ws, exc)
    except Exception as exc:  # noqa: BLE001 - an internal fault ends this session only
        log.exception("session on %s failed", name)
        await _send_error(ws, Refusal.internal(exc))
    finally:
        if seat is not None:
            seat.release()


async def _start_message(ws: Any, timeout: float) -> Start:
    try:
        message = await asyncio.wait_for(ws.receive(), timeout)
    except TimeoutError:
        raise Refusal("bad_request", f"no start message within {timeout:g} s") from None
    if message.get("type") == "websocket.disconnect":
        raise _Disconnected
    text = message.get("text")
    if text is None:
        raise Refusal("bad_request", "the first message must be the start message (text JSON)")
    return parse_start(text)


async def _send_error(ws: Any, refusal: Refusal) -> None:
    """The refusal's error message, then the close."""
    try:
        await ws.send_text(json.dumps(refusal.to_message()))
        await ws.close(refusal.close_code, reason=refusal.code)
    except Exception:  # noqa: BLE001 - the client is gone already
        pass


class _Session:
    """One conversation over one socket: a receiver, a frame pump and a writer."""

    def __init__(self, host: Host, ws: Any, conversation: Conversation, start: Start):
        self.host, self.ws, self.conversation, self.start = host, ws, conversation, start
        self.queue: asyncio.Queue[_Item] = asyncio.Queue(conversation.limits.send_queue)

    async def run(self) -> None:
        await self.conversation.open()
        try:
            await self.conversation.run(self._receive(), self._pump(), self._write())
        except Exception as exc:
            if _gone(exc):
                raise _Disconnected from exc
            raise
        await self.ws.close(1000)

    # client -> conversation
    async def _receive(self) -> None:
        conversation, start = self.conversation, self.start
        while True:
            message = await self.ws.receive()
            conversation.heard()
            if message.get("type") == "websocket.disconnect":
                raise _Disconnected
            data = message.get("bytes")
            if data is not None:
                conversation.receive_audio(len(data) / start.bytes_per_second)
                conversation.push_audio(data, sample_rate=start.sample_rate, channels=start.channels)
                continue
            await self._command(message.get("text") or "")
            if conversation.closing:
                return

    async def _command(self, text: str) -> None:
        try:
            msg = json.loads(text)
            kind = msg.get("type") if isinstance(msg, dict) else None
        except ValueError:
            kind = None
        if kind == "flush":
            notice = self.conversation.flush()
            if notice is not None:  # too short to make a frame: the session goes on
                await self._send_json(notice.to_message())
        elif kind == "interrupt":
            self.conversation.interrupt()
            self._drop_queued_frames()
        elif kind == "close":
            await self.conversation.finish()
        elif kind == "start":
            await self._send_json(Refusal("bad_request", "the session has started").to_message())
        else:
            await self._send_json(
                Refusal(
                    "bad_request", f"unknown message {text[:80]!r}; expected flush, interrupt or close"
                ).to_message()
            )

    def _drop_queued_frames(self) -> None:
        """Frames already made are stale after an interrupt; messages stay."""
        kept = []
        while not self.queue.empty():
            item = self.queue.get_nowait()
            if item[1] is None:
                kept.append(item)
        for item in kept:
            self.queue.put_nowait(item)

    async def _send_json(self, message: dict[str, Any]) -> None:
        await self.queue.put((json.dumps(message), None, None))

    # conversation -> queue
    async def _pump(self) -> None:
        loop = asyncio.get_running_loop()
        conversation, fmt = self.conversation, self.start.format
        async for f in conversation.frames():
            generation = conversation.generation
            if self.queue.full():
                conversation.seat.dropped()
            else:
                payload = await loop.run_in_executor(self.host.image_pool, encode_image, f.image, fmt)
                if generation != conversation.generation:
                    continue  # made before the barge-in
                if self.queue.full():
                    conversation.seat.dropped()
                else:
                    self.queue.put_nowait((json.dumps(frame_header(f, fmt)), payload, f))
            if f.last:
                await self._send_json(utterance_end(f))
        await self.queue.put(_END)  # the stream ended (closed and drained)

    # queue -> client
    async def _write(self) -> None:
        seat = self.conversation.seat
        while True:
            text, payload, f = await self.queue.get()
            if text is None:
                return
            await self.ws.send_text(text)
            if payload is not None and f is not None:
                await self.ws.send_bytes(payload)
                seat.sent(f)
