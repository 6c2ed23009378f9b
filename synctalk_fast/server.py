"""The live avatar server: speech in over a WebSocket, the person speaking out.

One :class:`AvatarServer` serves several avatars (a SyncTalk_2D U-Net
belongs to one person: each avatar is a template and its U-Net, the audio
encoder is shared). Every conversation is a :class:`~synctalk_fast.Stream`
on its avatar's :class:`~synctalk_fast.Engine`, so all sessions of an avatar
share its sessions and are batched together.

WebSocket protocol, ``/v1/avatars/{name}/stream`` (a fixed contract):

- client -> server, text: ``{"type": "start", "sample_rate": 16000,
  "channels": 1, "format": "jpeg"}`` first (``format``: ``jpeg``, ``png``
  (lossless) or ``raw`` (BGR24 bytes, height x width x 3); optional
  ``"idle": true``, ``"max_lag": 0.5``, ``"start": 0``), then ``{"type":
  "flush"}`` (end of an utterance), ``{"type": "interrupt"}`` (barge-in),
  ``{"type": "close"}``;
- client -> server, binary: little-endian int16 PCM at the announced rate,
  interleaved when ``channels`` is 2, any chunk size;
- server -> client: per frame a text message ``{"type": "frame", "index",
  "time", "utterance", "idle", "skipped", "width", "height", "format"}``
  immediately followed by one binary message with the image; after the
  last frame of a flushed utterance ``{"type": "utterance_end",
  "utterance", "frames"}``; on a problem ``{"type": "error", "code",
  "message"}``, then the socket closes if the session cannot go on (1008 a
  bad request, 1013 the server is full, 1011 an internal fault).

Frames are exactly those of :class:`~synctalk_fast.Stream` (``png`` and
``raw``: byte-identical to offline generation of the same audio).

Threads and ownership: the event loop owns the sockets and the per-session
send queues; streams and engines run in their own threads; image encoding
runs in a small pool shared by the sessions. A session's send queue is
bounded: a client that cannot keep up loses frames (counted), never delays
the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import json
import logging
import math
import os
import threading
import time
import tomllib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from ._util.system import cpu_cores
from .engine import Engine
from .errors import AudioError
from .models.session import ModelSession
from .runtime import DEFAULT_RUNTIME
from .shapes import AUDIO_SHAPES, FPS, IMAGE_SHAPE
from .stream import Stream, StreamFrame
from .template import Template
from . import webrtc

__all__ = ["AvatarSpec", "Limits", "AvatarServer", "check_binding", "load_config", "FORMATS", "CLOSE_CODES"]

log = logging.getLogger(__name__)

#: Image formats a client may ask for -> OpenCV's encoder suffix (None: raw BGR24 bytes).
FORMATS = {"jpeg": ".jpg", "png": ".png", "raw": None}
#: Why a socket closes -> its WebSocket close code.
CLOSE_CODES = {"bad_request": 1008, "unauthorized": 1008, "unknown_avatar": 1008, "forbidden_origin": 1008,
               "rate_limited": 1008, "idle_timeout": 1008, "session_too_long": 1008, "server_full": 1013,
               "internal": 1011}
_JPEG_QUALITY = 90
_PAGE = Path(__file__).with_name("static") / "index.html"  # the browser page, shipped in the wheel
#: The HTTP status of a refusal before a WebRTC session starts.
_HTTP_STATUS = {"forbidden_origin": 403, "unauthorized": 401, "unknown_avatar": 404}
_START_KEYS = {"type", "sample_rate", "channels", "format", "idle", "max_lag", "start"}


@dataclass(frozen=True)
class AvatarSpec:
    """One avatar: a name clients use, its template folder and its U-Net file."""

    name: str
    template: Path
    unet: Path

    @classmethod
    def parse(cls, text: str) -> AvatarSpec:
        """``NAME=TEMPLATE_DIR:UNET.onnx`` (the command line's ``--avatar``)."""
        name, sep, rest = text.partition("=")
        template, colon, unet = rest.rpartition(":")
        if not (sep and colon and name.strip() and template and unet):
            raise ValueError(f"--avatar {text!r}: expected NAME=TEMPLATE_DIR:UNET.onnx")
        return cls(name.strip(), Path(template), Path(unet))


@dataclass(frozen=True)
class Limits:
    """What one session may do.

    Attributes
    ----------
    max_message_bytes : int
        Largest WebSocket message accepted (larger closes the socket, 1009).
    max_audio_rate : float
        Audio faster than this many times real time, over ``audio_burst``
        seconds, is refused (``rate_limited``).
    audio_burst : float
        Seconds of audio a client may send ahead at once.
    max_session_seconds : float
        Longest session.
    idle_seconds : float
        A session with no message for this long is closed.
    start_timeout : float
        Seconds to send the ``start`` message.
    send_queue : int
        Frames waiting for a slow client, at most; more are dropped and counted.
    """

    max_message_bytes: int = 1 << 20
    max_audio_rate: float = 4.0
    audio_burst: float = 10.0
    max_session_seconds: float = 3600.0
    idle_seconds: float = 300.0
    start_timeout: float = 10.0
    send_queue: int = 50


def check_binding(host: str, *, token: str | None, insecure: bool = False) -> None:
    """Refuse to listen beyond this machine without a token.

    Raises
    ------
    ValueError
        ``host`` is not a loopback address, no token is set and ``insecure``
        was not given on purpose.
    """
    if token or insecure:
        return
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(f"listening on {host} needs a token (--token-file); to serve without one on purpose, "
                         f"add --insecure")


def load_config(path: str | os.PathLike) -> dict:
    """Read an avatars TOML file: top-level server options and ``[[avatar]]``
    tables with ``name``, ``template``, ``unet``; relative paths resolve
    against the file's folder.

    Raises
    ------
    ValueError
        Unreadable TOML, an avatar without its three keys, or an unknown key.
    """
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"{path}: {exc}") from None
    known = {"avatar", "audio_encoder", "host", "port", "max_sessions", "token_file", "insecure", "runtime",
             "providers", "precision", "allowed_origins"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{path}: unknown key(s) {', '.join(unknown)}; expected {', '.join(sorted(known))}")
    base = path.parent
    avatars = []
    for k, table in enumerate(data.pop("avatar", []), 1):
        if set(table) != {"name", "template", "unet"}:
            raise ValueError(f"{path}: avatar {k} needs exactly name, template and unet (got {', '.join(table)})")
        avatars.append(AvatarSpec(str(table["name"]), base / table["template"], base / table["unet"]))
    for key in ("audio_encoder", "token_file"):
        if key in data:
            data[key] = base / data[key]
    data["avatars"] = avatars
    return data


@dataclass(eq=False)
class _Avatar:
    spec: AvatarSpec
    template: Template
    engine: Engine


class _Metrics:
    """The server's Prometheus metrics, in a registry of its own."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        r = self.registry
        self.active = Gauge("synctalk_sessions_active", "Sessions now open", ["avatar"], registry=r)
        self.sessions = Counter("synctalk_sessions", "Sessions by outcome", ["avatar", "outcome"], registry=r)
        self.frames = Counter("synctalk_frames_sent", "Frames sent", ["avatar"], registry=r)
        self.dropped = Counter("synctalk_frames_dropped", "Frames a slow client could not take", ["avatar"],
                               registry=r)
        self.skipped = Counter("synctalk_frames_skipped", "Frames sent unsynced to catch up (max_lag)", ["avatar"],
                               registry=r)
        self.delay = Histogram("synctalk_frame_delay_seconds", "From a frame's own audio arriving to its sending",
                               buckets=(0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0), registry=r)
        self.capacity = Gauge("synctalk_capacity_sessions", "Sessions admitted at most", registry=r)

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


def _require_extra() -> None:
    missing = []
    for module in ("starlette", "uvicorn", "prometheus_client", "websockets"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise ValueError(f"the server needs {', '.join(missing)}: pip install 'synctalk-fast[serve]'")


class _Refusal(Exception):
    """A session that cannot go on: its error code and message."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


class AvatarServer:
    """Serves avatars to WebSocket clients; :attr:`app` is the ASGI application.

    Parameters
    ----------
    avatars : sequence of AvatarSpec
        The avatars (names must differ).
    audio_encoder : str or os.PathLike
        The AVE audio encoder, shared by every avatar.
    runtime, providers, precision, sessions, threads : keyword-only
        As for :class:`~synctalk_fast.Engine` (each avatar's engine).
    max_sessions : "auto" or int, keyword-only
        Sessions open at once, at most. "auto" measures the U-Net and admits
        what it sustains at real time (at least one).
    token : str, optional, keyword-only
        Clients must present it (``?token=`` or ``Authorization: Bearer``);
        compared in constant time.
    allowed_origins : sequence of str, keyword-only
        Browser origins allowed besides the server's own.
    limits : Limits, keyword-only

    Raises
    ------
    ValueError
        Duplicate avatar names, a bad ``max_sessions``.
    synctalk_fast.errors.Error
        A template or model that cannot be used (the message names it).
    """

    def __init__(self, avatars: Sequence[AvatarSpec], audio_encoder: str | os.PathLike, *,
                 runtime: str = DEFAULT_RUNTIME, providers: Sequence[str] | None = None, precision: str = "fp32",
                 sessions: int | None = None, threads: int | None = None, max_sessions: str | int = "auto",
                 token: str | None = None, allowed_origins: Sequence[str] = (), limits: Limits = Limits()):
        _require_extra()
        names = [a.name for a in avatars]
        if not avatars:
            raise ValueError("give at least one avatar")
        if len(set(names)) != len(names):
            raise ValueError(f"avatar names must differ: {', '.join(names)}")
        if max_sessions != "auto" and (isinstance(max_sessions, bool) or int(max_sessions) < 1):
            raise ValueError(f"max_sessions must be 'auto' or an integer >= 1, got {max_sessions!r}")
        self.limits = limits
        self.token = token or None
        self.allowed_origins = {o.rstrip("/") for o in allowed_origins}
        self.metrics = _Metrics()
        first = Engine(avatars[0].unet, audio_encoder, runtime=runtime, providers=providers, precision=precision,
                       sessions=sessions, threads=threads)
        encoder: ModelSession = first.encoder
        self.avatars: dict[str, _Avatar] = {avatars[0].name: _Avatar(avatars[0], Template(avatars[0].template), first)}
        for spec in avatars[1:]:
            engine = Engine(spec.unet, encoder, runtime=first.runtime, providers=first.providers,
                            precision=precision, sessions=sessions, threads=threads)
            self.avatars[spec.name] = _Avatar(spec, Template(spec.template), engine)
        for avatar in self.avatars.values():
            if avatar.engine.mode != "ave":
                raise ValueError(f"avatar {avatar.spec.name}: live speech needs an ave U-Net, not {avatar.engine.mode}")
            avatar.engine.warmup("throughput")
        self.capacity = self.measure_capacity() if max_sessions == "auto" else int(max_sessions)
        self.metrics.capacity.set(self.capacity)
        self._active = 0
        self._lock = threading.Lock()
        self._rtc: set = set()  # open WebRTC sessions
        self._encoders = ThreadPoolExecutor(max(2, cpu_cores()), thread_name_prefix="synctalk-image")
        self.app = self._build_app()

    # -- capacity -------------------------------------------------------------------
    def measure_capacity(self, seconds: float = 2.0) -> int:
        """Sessions the first avatar's engine sustains at real time: its
        U-Net frames/s (every session busy, full batches) over the frame
        rate, with a quarter kept for the audio encoder and the images."""
        engine = next(iter(self.avatars.values())).engine
        b = engine.batch_size
        image = np.zeros((b, *IMAGE_SHAPE), np.float32)
        audio = np.zeros((b, *AUDIO_SHAPES["ave"]), np.float32)
        done = [0] * len(engine.sessions)
        deadline = time.perf_counter() + seconds

        def work(k: int) -> None:
            while time.perf_counter() < deadline:
                engine.infer(image, audio, session=k)
                done[k] += b

        t0 = time.perf_counter()
        threads = [threading.Thread(target=work, args=(k,)) for k in range(len(engine.sessions))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        fps = sum(done) / (time.perf_counter() - t0)
        capacity = max(1, int(fps / (FPS["ave"] * 1.25)))
        log.info("capacity: the U-Net makes %.1f frames/s here: %d session(s) at real time", fps, capacity)
        return capacity

    # -- admission and checks ---------------------------------------------------------
    def _admit(self) -> bool:
        with self._lock:
            if self._active >= self.capacity:
                return False
            self._active += 1
            return True

    def _release(self) -> None:
        with self._lock:
            self._active -= 1

    @property
    def active_sessions(self) -> int:
        return self._active

    def _token_ok(self, headers, query) -> bool:
        if self.token is None:
            return True
        given = query.get("token")
        auth = headers.get("authorization", "")
        if given is None and auth.lower().startswith("bearer "):
            given = auth[7:].strip()
        return given is not None and hmac.compare_digest(given.encode(), self.token.encode())

    def _client_avatar(self, headers, query, name: str) -> _Avatar:
        """The avatar a client asks for, once its origin and token pass (``_Refusal`` otherwise)."""
        if not self._origin_ok(headers):
            raise _Refusal("forbidden_origin", f"origin {headers.get('origin')} is not allowed")
        if not self._token_ok(headers, query):
            raise _Refusal("unauthorized", "a valid token is required (?token= or Authorization: Bearer)")
        avatar = self.avatars.get(name)
        if avatar is None:
            raise _Refusal("unknown_avatar", f"no avatar {name!r}; avatars: {', '.join(self.avatars)}")
        return avatar

    def _origin_ok(self, headers) -> bool:
        origin = headers.get("origin")
        if origin is None:  # not a browser
            return True
        origin = origin.rstrip("/")
        host = headers.get("host", "")
        return origin in self.allowed_origins or origin.split("://", 1)[-1] == host

    # -- the application ------------------------------------------------------------------
    def _build_app(self):
        from starlette.applications import Starlette
        from starlette.responses import HTMLResponse, JSONResponse, Response
        from starlette.routing import Route, WebSocketRoute

        async def avatars(request):
            if not self._token_ok(request.headers, request.query_params):
                return JSONResponse({"error": "unauthorized"}, status_code=401)
            return JSONResponse([{"name": a.spec.name, "width": a.template.size[0], "height": a.template.size[1],
                                  "frames": len(a.template), "fps": FPS["ave"]} for a in self.avatars.values()])

        async def health(request):
            return JSONResponse({"status": "ok", "sessions": self._active, "capacity": self.capacity})

        async def metrics(request):
            if not self._token_ok(request.headers, request.query_params):
                return JSONResponse({"error": "unauthorized"}, status_code=401)
            from prometheus_client import CONTENT_TYPE_LATEST

            return Response(self.metrics.render(), media_type=CONTENT_TYPE_LATEST)

        async def admission(request):
            """Whether a session would be admitted now (HTTP 503 with the reason when full)."""
            name = request.path_params["name"]
            if name not in self.avatars:
                return JSONResponse({"error": "unknown_avatar"}, status_code=404)
            if self._active >= self.capacity:
                return JSONResponse({"error": "server_full", "message": self._full_message()}, status_code=503)
            return JSONResponse({"sessions": self._active, "capacity": self.capacity})

        async def page(request):
            return HTMLResponse(_PAGE.read_text(encoding="utf-8"))

        async def webrtc(request):
            return await self._webrtc(request)

        routes = [
            Route("/", page),
            Route("/v1/avatars/{name}/webrtc", webrtc, methods=["POST"]),
            Route("/v1/avatars", avatars),
            Route("/v1/avatars/{name}", admission),
            Route("/healthz", health),
            Route("/metrics", metrics),
            WebSocketRoute("/v1/avatars/{name}/stream", self._websocket),
        ]
        @contextlib.asynccontextmanager
        async def lifespan(app):
            yield
            await self.close()

        return Starlette(routes=routes, lifespan=lifespan)

    async def _webrtc(self, request):
        """An SDP offer in, the answer out; the session lives until the peer connection ends."""
        from starlette.responses import JSONResponse

        name = request.path_params["name"]

        def refuse(code: str, message: str, status: int):
            self.metrics.sessions.labels(name, code).inc()
            return JSONResponse({"type": "error", "code": code, "message": message}, status_code=status)

        if not webrtc.available():
            return refuse("unavailable", "WebRTC needs aiortc: pip install 'synctalk-fast[serve]'", 501)
        try:
            avatar = self._client_avatar(request.headers, request.query_params, name)
        except _Refusal as exc:
            return refuse(exc.code, str(exc), _HTTP_STATUS[exc.code])
        body = await request.body()
        if len(body) > self.limits.max_message_bytes:
            return refuse("bad_request", "the offer is too large", 413)
        try:
            offer = json.loads(body)
        except ValueError:
            return refuse("bad_request", "the body must be JSON {\"sdp\", \"type\": \"offer\"}", 400)
        if not self._admit():
            return refuse("server_full", self._full_message(), 503)
        self.metrics.sessions.labels(name, "admitted").inc()
        self.metrics.active.labels(name).inc()

        def closed() -> None:
            self._rtc.discard(session)
            self._release()
            self.metrics.active.labels(name).dec()

        def sent(f) -> None:
            self.metrics.frames.labels(name).inc()

        session = webrtc.WebRtcSession(avatar.engine, avatar.template, on_frame=sent, on_close=closed)
        self._rtc.add(session)
        try:
            answer = await session.answer(offer)
        except ValueError as exc:
            await session.close()
            return JSONResponse({"type": "error", "code": "bad_request", "message": str(exc)}, status_code=400)
        except Exception as exc:  # noqa: BLE001 - this session only
            log.exception("WebRTC session on %s failed", name)
            await session.close()
            return JSONResponse({"type": "error", "code": "internal", "message": str(exc)[:300]}, status_code=500)
        asyncio.get_running_loop().call_later(self.limits.max_session_seconds,
                                              lambda: asyncio.ensure_future(session.close()))
        return JSONResponse(answer)

    def _full_message(self) -> str:
        return (f"the server is full: {self._active} of {self.capacity} sessions are open "
                f"(what this machine sustains at real time); try again later")

    async def close(self) -> None:
        """End the WebRTC sessions and the image pool (the ASGI app's shutdown)."""
        await asyncio.gather(*(s.close() for s in list(self._rtc)), return_exceptions=True)
        self._encoders.shutdown(wait=False, cancel_futures=True)

    # -- one WebSocket session ---------------------------------------------------------------
    async def _websocket(self, ws) -> None:
        name = ws.path_params["name"]
        await ws.accept()
        admitted = False
        try:
            avatar = self._client_avatar(ws.headers, ws.query_params, name)
            if not self._admit():
                raise _Refusal("server_full", self._full_message())
            admitted = True
            self.metrics.sessions.labels(name, "admitted").inc()
            self.metrics.active.labels(name).inc()
            start = await self._start_message(ws)
            await _Session(self, ws, avatar, start).run()
        except _Disconnected:
            pass
        except _Refusal as exc:
            if not admitted or exc.code != "server_full":
                self.metrics.sessions.labels(name, exc.code).inc()
            await _send_error(ws, exc.code, str(exc), close=True)
        except Exception as exc:  # noqa: BLE001 - an internal fault ends this session only
            log.exception("session on %s failed", name)
            await _send_error(ws, "internal", " ".join(str(exc).split())[:300] or type(exc).__name__, close=True)
        finally:
            if admitted:
                self._release()
                self.metrics.active.labels(name).dec()

    async def _start_message(self, ws) -> dict:
        try:
            message = await asyncio.wait_for(ws.receive(), self.limits.start_timeout)
        except asyncio.TimeoutError:
            raise _Refusal("bad_request", f"no start message within {self.limits.start_timeout:g} s") from None
        if message.get("type") == "websocket.disconnect":
            raise _Disconnected
        text = message.get("text")
        if text is None:
            raise _Refusal("bad_request", "the first message must be the start message (text JSON)")
        return parse_start(text)


class _Disconnected(Exception):
    """The client went away."""


def _gone(exc: BaseException) -> bool:
    """Whether ``exc`` says the client went away (a send on a closed socket)."""
    from starlette.websockets import WebSocketDisconnect

    return isinstance(exc, (_Disconnected, WebSocketDisconnect, ConnectionError)) or (
        isinstance(exc, OSError) and "disconnect" in type(exc).__name__.lower())


def parse_start(text: str) -> dict:
    """The validated start message, with defaults filled in.

    Raises
    ------
    _Refusal
        ``bad_request`` with a one-line reason.
    """
    try:
        msg = json.loads(text)
    except ValueError:
        raise _Refusal("bad_request", "the start message is not JSON") from None
    if not isinstance(msg, dict) or msg.get("type") != "start":
        raise _Refusal("bad_request", 'the first message must be {"type": "start", ...}')
    unknown = sorted(set(msg) - _START_KEYS)
    if unknown:
        raise _Refusal("bad_request", f"unknown start key(s): {', '.join(unknown)}")
    rate, channels, fmt = msg.get("sample_rate", 16000), msg.get("channels", 1), msg.get("format", "jpeg")
    if isinstance(rate, bool) or not isinstance(rate, int) or not 8000 <= rate <= 192000:
        raise _Refusal("bad_request", f"sample_rate must be an integer in 8000..192000, got {rate!r}")
    if channels not in (1, 2) or isinstance(channels, bool):
        raise _Refusal("bad_request", f"channels must be 1 or 2, got {channels!r}")
    if fmt not in FORMATS:
        raise _Refusal("bad_request", f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    idle, lag, first = msg.get("idle", False), msg.get("max_lag"), msg.get("start", 0)
    if not isinstance(idle, bool):
        raise _Refusal("bad_request", f"idle must be true or false, got {idle!r}")
    if lag is not None and (isinstance(lag, bool) or not isinstance(lag, (int, float)) or not 0 <= lag <= 60):
        raise _Refusal("bad_request", f"max_lag must be seconds in 0..60, got {lag!r}")
    if isinstance(first, bool) or not isinstance(first, int) or first < 0:
        raise _Refusal("bad_request", f"start must be a template frame number >= 0, got {first!r}")
    return {"sample_rate": rate, "channels": channels, "format": fmt, "idle": idle, "max_lag": lag, "start": first}


async def _send_error(ws, code: str, message: str, *, close: bool) -> None:
    try:
        await ws.send_text(json.dumps({"type": "error", "code": code, "message": message}))
        if close:
            await ws.close(CLOSE_CODES.get(code, 1011), reason=code)
    except Exception:  # noqa: BLE001 - the client is gone already
        pass


def encode_image(image: np.ndarray, fmt: str) -> bytes:
    """A BGR uint8 ``[H, W, 3]`` frame as the client asked (see :data:`FORMATS`)."""
    suffix = FORMATS[fmt]
    if suffix is None:
        return np.ascontiguousarray(image).tobytes()
    params = [cv2.IMWRITE_JPEG_QUALITY, _JPEG_QUALITY] if fmt == "jpeg" else [cv2.IMWRITE_PNG_COMPRESSION, 1]
    ok, data = cv2.imencode(suffix, image, params)
    if not ok:
        raise RuntimeError(f"{fmt} encoding failed")
    return data.tobytes()


@dataclass(eq=False)
class _Session:
    """One conversation: a stream, a receiver, a frame pump and a writer (all on the event loop)."""

    server: AvatarServer
    ws: Any
    avatar: _Avatar
    start: dict
    queue: asyncio.Queue = field(init=False)
    stream: Stream | None = None
    audio_seconds: float = 0.0
    dropped: int = 0  # frames the client could not take
    interrupts: int = 0  # frames taken from the stream before the latest interrupt are stale
    closing: bool = False

    def __post_init__(self) -> None:
        self.queue = asyncio.Queue(self.server.limits.send_queue)
        self.name = self.avatar.spec.name
        self.opened = time.monotonic()
        self.bytes_per_second = 2 * self.start["channels"] * self.start["sample_rate"]

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        s = self.start
        self.stream = await loop.run_in_executor(None, lambda: Stream(
            self.avatar.engine, template=self.avatar.template, start=s["start"], idle=s["idle"],
            max_lag=s["max_lag"], layout="throughput", warmup=False))
        tasks = [asyncio.create_task(self._receive()), asyncio.create_task(self._pump()),
                 asyncio.create_task(self._write())]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for t in done:
                exc = t.exception()
                if exc is not None and _gone(exc):
                    raise _Disconnected from exc
                if exc is not None:
                    raise exc
        except _Disconnected:
            return
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            stream = self.stream
            await loop.run_in_executor(None, lambda: stream.close(drain=False))
        await self.ws.close(1000)

    # client -> server
    async def _receive(self) -> None:
        limits = self.server.limits
        stream = self.stream
        while True:
            left = limits.max_session_seconds - (time.monotonic() - self.opened)
            if left <= 0:
                raise _Refusal("session_too_long", f"sessions last at most {limits.max_session_seconds:g} s")
            try:
                message = await asyncio.wait_for(self.ws.receive(), min(limits.idle_seconds, left))
            except asyncio.TimeoutError:
                if limits.max_session_seconds - (time.monotonic() - self.opened) <= 0:
                    continue
                raise _Refusal("idle_timeout", f"no message for {limits.idle_seconds:g} s") from None
            if message.get("type") == "websocket.disconnect":
                raise _Disconnected
            data = message.get("bytes")
            if data is not None:
                self._check_rate(len(data))
                try:
                    stream.push_audio(data, sample_rate=self.start["sample_rate"], channels=self.start["channels"])
                except AudioError as exc:
                    raise _Refusal("bad_request", str(exc)) from None
                continue
            await self._command(message.get("text") or "")
            if self.closing:
                return

    def _check_rate(self, nbytes: int) -> None:
        """At most ``max_audio_rate`` x real time, with ``audio_burst`` seconds ahead."""
        limits = self.server.limits
        self.audio_seconds += nbytes / self.bytes_per_second
        allowed = limits.max_audio_rate * (time.monotonic() - self.opened) + limits.audio_burst
        if self.audio_seconds > allowed:
            raise _Refusal("rate_limited", f"audio arrives faster than {limits.max_audio_rate:g} x real time")

    async def _command(self, text: str) -> None:
        try:
            msg = json.loads(text)
            kind = msg.get("type") if isinstance(msg, dict) else None
        except ValueError:
            kind = None
        stream = self.stream
        if kind == "flush":
            try:
                stream.flush()
            except AudioError as exc:  # too short to make a frame: the session goes on
                await self._send_json({"type": "error", "code": "too_short", "message": str(exc)})
        elif kind == "interrupt":
            self.interrupts += 1
            stream.interrupt()
            kept = []
            while not self.queue.empty():  # frames already made are stale too; messages stay
                item = self.queue.get_nowait()
                if item[1] is None:
                    kept.append(item)
            for item in kept:
                self.queue.put_nowait(item)
        elif kind == "close":
            self.closing = True
            await asyncio.get_running_loop().run_in_executor(None, lambda: stream.close(drain=True))
        elif kind == "start":
            await self._send_json({"type": "error", "code": "bad_request", "message": "the session has started"})
        else:
            await self._send_json({"type": "error", "code": "bad_request",
                                   "message": f"unknown message {text[:80]!r}; expected flush, interrupt or close"})

    async def _send_json(self, message: dict) -> None:
        await self.queue.put((json.dumps(message), None, None))

    # stream -> queue
    async def _pump(self) -> None:
        loop = asyncio.get_running_loop()
        fmt = self.start["format"]
        metrics, name = self.server.metrics, self.name
        async for f in self.stream:
            interrupts = self.interrupts
            if f.skipped:
                metrics.skipped.labels(name).inc()
            if self.queue.full():
                self._drop()
            else:
                payload = await loop.run_in_executor(self.server._encoders, encode_image, f.image, fmt)
                if interrupts != self.interrupts:
                    continue  # made before the barge-in
                if self.queue.full():
                    self._drop()
                else:
                    self.queue.put_nowait((self._header(f, fmt), payload, f))
            if f.last:
                await self.queue.put((json.dumps({"type": "utterance_end", "utterance": f.utterance,
                                                  "frames": f.frame + 1}), None, None))
        await self.queue.put((None, None, None))  # the stream ended (closed and drained)

    def _drop(self) -> None:
        self.dropped += 1
        self.server.metrics.dropped.labels(self.name).inc()

    @staticmethod
    def _header(f: StreamFrame, fmt: str) -> str:
        h, w = f.image.shape[:2]
        return json.dumps({"type": "frame", "index": f.index, "time": round(f.time, 6), "utterance": f.utterance,
                           "idle": f.idle, "skipped": f.skipped, "width": w, "height": h, "format": fmt})

    # queue -> client
    async def _write(self) -> None:
        metrics, name = self.server.metrics, self.name
        while True:
            text, payload, f = await self.queue.get()
            if text is None:
                return
            await self.ws.send_text(text)
            if payload is not None:
                await self.ws.send_bytes(payload)
                metrics.frames.labels(name).inc()
                if not f.idle and not math.isnan(f.audio_in):
                    metrics.delay.observe(time.perf_counter() - f.audio_in)


def serve(server: AvatarServer, *, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info") -> None:
    """Run ``server`` with uvicorn until interrupted."""
    import uvicorn

    uvicorn.run(server.app, host=host, port=port, log_level=log_level, ws_max_size=server.limits.max_message_bytes)
