"""The avatar server: its avatars and engines, the Starlette application and its routes.

One :class:`AvatarServer` serves several avatars (a SyncTalk_2D U-Net
belongs to one person: each avatar is a template and its U-Net, the audio
encoder is shared). Every conversation is a :class:`~synctalk_fast.Stream`
on its avatar's :class:`~synctalk_fast.Engine`, so all sessions of an
avatar share its U-Net sessions and are batched together.

Routes: ``/`` (the browser page), ``/v1/avatars`` (the list),
``/v1/avatars/{name}`` (whether a session would be admitted now),
``/v1/avatars/{name}/stream`` (the WebSocket protocol, :mod:`.protocol`,
:mod:`.websocket`), ``POST /v1/avatars/{name}/webrtc`` (:mod:`.webrtc`),
``/healthz``, ``/metrics`` (Prometheus).

Frames are exactly those of :class:`~synctalk_fast.Stream` (``png`` and
``raw``: byte-identical to offline generation of the same audio).

Threads and ownership: the event loop owns the sockets, the peer
connections and the per-session queues; streams and engines run in their
own threads; image encoding runs in a small pool shared by the sessions.
The server owns its engines, its image pool and its open WebRTC sessions
(ended by :meth:`AvatarServer.close`, the application's shutdown).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from .._util.deprecation import renamed
from .._util.system import cpu_cores
from ..engine import Engine, EngineOptions
from ..models.session import ModelSession
from ..shapes import FPS
from ..template import Template
from . import webrtc
from .admission import Admission, Metrics, measure_capacity
from .config import AvatarSpec, Limits, MaxClients, check_max_clients
from .conversation import Avatar
from .protocol import Refusal
from .websocket import websocket_endpoint

__all__ = ["AvatarServer", "serve"]

log = logging.getLogger(__name__)

PAGE = Path(__file__).with_name("static") / "index.html"  # the browser page, shipped in the wheel


def _require_extra() -> None:
    missing = []
    for module in ("starlette", "uvicorn", "prometheus_client", "websockets"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise ValueError(f"the server needs {', '.join(missing)}: pip install 'synctalk-fast[serve]'")


class AvatarServer:
    """Serves avatars to WebSocket and WebRTC clients; :attr:`app` is the ASGI application.

    Parameters
    ----------
    avatars : sequence of AvatarSpec
        The avatars (names must differ).
    audio_encoder : str or os.PathLike
        The AVE audio encoder, shared by every avatar.
    options : EngineOptions, optional, keyword-only
        How each avatar's :class:`~synctalk_fast.Engine` runs (``cache_mb``:
        each template's frame cache).
    max_clients : "auto" or int, keyword-only
        Client sessions open at once, at most. "auto" measures the U-Net and
        admits what it sustains at real time (at least one). (Formerly
        ``max_sessions``, still accepted with a DeprecationWarning;
        ``sessions`` is the engine's U-Net sessions.)
    token : str, optional, keyword-only
        Clients must present it (``?token=`` or ``Authorization: Bearer``);
        compared in constant time.
    allowed_origins : sequence of str, keyword-only
        Browser origins allowed besides the server's own.
    limits : Limits, keyword-only
        What one session may do (both transports).
    **engine_options
        Fields of :class:`~synctalk_fast.engine.EngineOptions` by name
        (``runtime=``, ``providers=``, ``device_id=``, ``precision=``,
        ``batch_size=``, ``sessions=``, ``threads=``, ``cache_mb=``), over ``options``.

    Raises
    ------
    ValueError
        No avatar, duplicate avatar names, a bad ``max_clients``, an avatar
        whose U-Net is not an ave one, the server's extras missing.
    TypeError
        An unknown keyword.
    synctalk_fast.errors.Error
        A template or model that cannot be used (the message names it).
    """

    def __init__(
        self,
        avatars: Sequence[AvatarSpec],
        audio_encoder: str | os.PathLike[str] | ModelSession,
        *,
        options: EngineOptions | None = None,
        max_clients: MaxClients = "auto",
        token: str | None = None,
        allowed_origins: Sequence[str] = (),
        limits: Limits = Limits(),
        **engine_options: Any,
    ):
        _require_extra()
        moved = renamed(
            {k: engine_options.pop(k) for k in ("max_sessions",) if k in engine_options},
            {},
            {"max_sessions": "max_clients"},
            where="AvatarServer",
        )
        if moved and max_clients != "auto":
            raise TypeError("AvatarServer() got both 'max_sessions' and its new name 'max_clients'")
        max_clients = check_max_clients(moved.get("max_clients", max_clients))
        self.options = EngineOptions.merge(options, engine_options, where="AvatarServer")
        names = [a.name for a in avatars]
        if not avatars:
            raise ValueError("give at least one avatar")
        if len(set(names)) != len(names):
            raise ValueError(f"avatar names must differ: {', '.join(names)}")
        self.limits = limits
        self.avatars: dict[str, Avatar] = self._open_avatars(avatars, audio_encoder)
        capacity = self.measure_capacity() if max_clients == "auto" else max_clients
        self.admission = Admission(capacity, token=token, allowed_origins=allowed_origins)
        self.webrtc_sessions: set[webrtc.WebRtcSession] = set()
        self.image_pool = ThreadPoolExecutor(max(2, cpu_cores()), thread_name_prefix="synctalk-image")
        self.app = self._build_app()

    def _open_avatars(
        self,
        specs: Sequence[AvatarSpec],
        audio_encoder: str | os.PathLike[str] | ModelSession,
    ) -> dict[str, Avatar]:
        """Each avatar's template and engine (the first engine's encoder, runtime and providers shared), warmed up."""
        opts = self.options
        first = Engine(specs[0].unet, audio_encoder, options=opts)
        encoder = first.encoder
        shared = first.options.replace(providers=tuple(first.providers))  # "auto" runtime resolved once
        avatars = {specs[0].name: Avatar(specs[0], Template(specs[0].template, cache_mb=opts.cache_mb), first)}
        for spec in specs[1:]:
            engine = Engine(spec.unet, encoder, options=shared)
            avatars[spec.name] = Avatar(spec, Template(spec.template, cache_mb=opts.cache_mb), engine)
        for avatar in avatars.values():
            if avatar.engine.mode != "ave":
                raise ValueError(f"avatar {avatar.spec.name}: live speech needs an ave U-Net, not {avatar.engine.mode}")
            avatar.engine.warmup("throughput", every_size=True)  # memory at its plateau before serving
        return avatars

    # -- capacity and admission -------------------------------------------------------
    def measure_capacity(self, seconds: float = 2.0) -> int:
        """Sessions the first avatar sustains at real time, along a session's whole path with
        JPEG frames (see :func:`~.admission.measure_capacity`)."""
        avatar = next(iter(self.avatars.values()))
        return measure_capacity(avatar.engine, avatar.template, seconds)

    @property
    def capacity(self) -> int:
        """Client sessions admitted at once, at most (may be changed while serving)."""
        return self.admission.capacity

    @capacity.setter
    def capacity(self, value: MaxClients) -> None:
        value = check_max_clients(value, where="capacity")
        self.admission.set_capacity(self.measure_capacity() if value == "auto" else value)

    @property
    def active_sessions(self) -> int:
        """Client sessions open now (both transports)."""
        return self.admission.active

    @property
    def metrics(self) -> Metrics:
        return self.admission.metrics

    @property
    def token(self) -> str | None:
        """The token clients must present (may be changed while serving)."""
        return self.admission.token

    @token.setter
    def token(self, value: str | None) -> None:
        self.admission.token = value or None

    @property
    def allowed_origins(self) -> set[str]:
        return self.admission.allowed_origins

    def avatar_for(self, headers: Mapping[str, str], query: Mapping[str, str], name: str) -> Avatar:
        """The avatar a client asks for, once its origin and token pass.

        Raises
        ------
        Refusal
            ``forbidden_origin``, ``unauthorized`` or ``unknown_avatar``.
        """
        self.admission.check_client(headers, query)
        avatar = self.avatars.get(name)
        if avatar is None:
            raise Refusal("unknown_avatar", f"no avatar {name!r}; avatars: {', '.join(self.avatars)}")
        return avatar

    # -- the application ------------------------------------------------------------------
    def _build_app(self) -> Any:
        from starlette.applications import Starlette
        from starlette.routing import Route, WebSocketRoute

        async def stream(ws: Any) -> None:
            await websocket_endpoint(self, ws)

        @contextlib.asynccontextmanager
        async def lifespan(app: Any) -> AsyncIterator[None]:
            yield
            await self.close()

        routes = [
            Route("/", self._page),
            Route("/v1/avatars/{name}/webrtc", self._webrtc, methods=["POST"]),
            Route("/v1/avatars", self._avatar_list),
            Route("/v1/avatars/{name}", self._admission),
            Route("/healthz", self._health),
            Route("/metrics", self._metrics),
            WebSocketRoute("/v1/avatars/{name}/stream", stream),
        ]
        return Starlette(routes=routes, lifespan=lifespan)

    @staticmethod
    def _refuse(refusal: Refusal) -> Any:
        from starlette.responses import JSONResponse

        return JSONResponse(refusal.http_body(), status_code=refusal.http_status)

    def _check_token(self, request: Any) -> None:
        if not self.admission.token_ok(request.headers, request.query_params):
            raise Refusal("unauthorized", "a valid token is required (?token= or Authorization: Bearer)")

    async def _page(self, request: Any) -> Any:
        from starlette.responses import HTMLResponse

        return HTMLResponse(PAGE.read_text(encoding="utf-8"))

    async def _avatar_list(self, request: Any) -> Any:
        from starlette.responses import JSONResponse

        try:
            self._check_token(request)
        except Refusal as exc:
            return self._refuse(exc)
        return JSONResponse(
            [
                {
                    "name": a.spec.name,
                    "width": a.template.size[0],
                    "height": a.template.size[1],
                    "frames": len(a.template),
                    "fps": FPS["ave"],
                }
                for a in self.avatars.values()
            ]
        )

    async def _health(self, request: Any) -> Any:
        from starlette.responses import JSONResponse

        return JSONResponse({"status": "ok", "sessions": self.active_sessions, "capacity": self.capacity})

    async def _metrics(self, request: Any) -> Any:
        from prometheus_client import CONTENT_TYPE_LATEST
        from starlette.responses import Response

        try:
            self._check_token(request)
        except Refusal as exc:
            return self._refuse(exc)
        return Response(self.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    async def _admission(self, request: Any) -> Any:
        """Whether a session would be admitted now (HTTP 503 with the reason when full)."""
        from starlette.responses import JSONResponse

        name = request.path_params["name"]
        if name not in self.avatars:
            return self._refuse(Refusal("unknown_avatar", f"no avatar {name!r}; avatars: {', '.join(self.avatars)}"))
        if self.admission.is_full():
            return self._refuse(Refusal("server_full", self.admission.full_message()))
        return JSONResponse({"sessions": self.active_sessions, "capacity": self.capacity})

    async def _webrtc(self, request: Any) -> Any:
        """An SDP offer in, the answer out; the session lives until the peer connection ends."""
        from starlette.responses import JSONResponse

        status, body = await webrtc.offer_endpoint(self, request, self.webrtc_sessions)
        return JSONResponse(body, status_code=status)

    async def close(self) -> None:
        """End the WebRTC sessions and the image pool (the ASGI app's shutdown)."""
        await asyncio.gather(*(s.close() for s in list(self.webrtc_sessions)), return_exceptions=True)
        self.image_pool.shutdown(wait=False, cancel_futures=True)


def serve(server: AvatarServer, *, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info") -> None:
    """Run ``server`` with uvicorn on ``host``:``port`` until interrupted."""
    import uvicorn

    uvicorn.run(server.app, host=host, port=port, log_level=log_level, ws_max_size=server.limits.max_message_bytes)
