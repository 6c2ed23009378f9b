"""Who gets a session: client checks (origin, token), admission up to the
server's capacity, and the Prometheus metrics of every session, in one
path that the WebSocket and the WebRTC transports both take.

- :class:`Admission` checks a client, admits it to a :class:`Seat` or
  refuses it (``server_full``), and counts each session's outcome;
- a :class:`Seat` is one admitted session's hold on the capacity and its
  metrics (frames sent, dropped, skipped); releasing it is idempotent;
- :func:`measure_capacity` is the number of sessions an engine sustains
  at real time along a session's whole path (features, encoder, U-Net,
  paste, image encoding), bounded by the U-Net alone (the package's one
  timer and real-time margin, :mod:`synctalk_fast.models.timing`).

Threads: :class:`Admission` and :class:`Seat` may be used from any thread
(one lock guards the count); the metrics are Prometheus' own thread-safe
objects, in a registry of the server's own.
"""

from __future__ import annotations

import hmac
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping

from ..demo import synthetic_speech
from ..engine import Engine
from ..models.timing import frames_per_second, realtime_streams, unet_feeds
from ..shapes import FPS
from ..stream import Stream, StreamFrame
from ..template import Template
from .protocol import Refusal, encode_image

__all__ = ["Metrics", "Admission", "Seat", "measure_capacity", "session_frames_per_second", "unet_capacity"]

log = logging.getLogger(__name__)


class Metrics:
    """The server's Prometheus metrics, in a registry of its own."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

        self.registry = CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)  # process_resident_memory_bytes, process_cpu_seconds_total (Linux)
        self.active = Gauge("synctalk_sessions_active", "Sessions now open", ["avatar"], registry=r)
        self.sessions = Counter("synctalk_sessions", "Sessions by outcome", ["avatar", "outcome"], registry=r)
        self.frames = Counter("synctalk_frames_sent", "Frames sent", ["avatar"], registry=r)
        self.dropped = Counter("synctalk_frames_dropped", "Frames a slow client could not take", ["avatar"], registry=r)
        self.skipped = Counter(
            "synctalk_frames_skipped", "Frames sent unsynced to catch up (max_lag)", ["avatar"], registry=r
        )
        self.delay = Histogram(
            "synctalk_frame_delay_seconds",
            "From a frame's own audio arriving to its sending",
            buckets=(0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0),
            registry=r,
        )
        self.capacity = Gauge("synctalk_capacity_sessions", "Sessions admitted at most", registry=r)
        self.threads = Gauge("synctalk_threads", "Threads of the server process", registry=r)
        self.threads.set_function(threading.active_count)
        self.tasks = Gauge("synctalk_event_loop_tasks", "Tasks of the server's event loop", registry=r)

    def render(self) -> bytes:
        """The metrics in Prometheus' text format (called on the event loop: it counts its tasks)."""
        import asyncio

        from prometheus_client import generate_latest

        try:
            self.tasks.set(len(asyncio.all_tasks()))
        except RuntimeError:  # no running loop (a caller outside the server)
            pass
        return generate_latest(self.registry)


def unet_capacity(engine: Engine, seconds: float = 2.0) -> tuple[int, float]:
    """Sessions the U-Net alone sustains at real time: its frames/s with every session busy on
    full batches (:func:`~synctalk_fast.models.timing.frames_per_second`) over the frame rate
    with the real-time margin (:func:`~synctalk_fast.models.timing.realtime_streams`); at least 1.

    Returns
    -------
    (int, float)
        The sessions, and the U-Net's frames/s.
    """
    batch = engine.batch_size

    def run(k: int) -> Callable[[], int]:
        feeds = unet_feeds(engine.sessions[k].item_shapes, batch)

        def once() -> int:
            engine.infer(feeds["image"], feeds["audio"], session=k)
            return batch

        return once

    fps = frames_per_second([run(k) for k in range(len(engine.sessions))], seconds=seconds)
    return realtime_streams(fps, FPS["ave"]), fps


def session_frames_per_second(
    engine: Engine, template: Template, sessions: int, *, seconds: float = 2.0, image_format: str = "jpeg"
) -> float:
    """Frames/s ``sessions`` conversations make together along a session's whole path: each a
    :class:`~synctalk_fast.Stream` on ``engine`` (features, audio encoder, the U-Net batched as
    the sessions' frames meet, paste) whose frames are encoded as a client asked
    (:func:`~.protocol.encode_image`), each in a thread of its own as the server's sessions are.

    The streams are fed speech faster than real time, so the engine is never idle; frames are
    counted from the first one of any stream (start-up excluded) for ``seconds``.
    """
    speech = synthetic_speech(max(4.0, 3 * seconds), seed=0)
    streams = [Stream(engine, template=template, start=7 * k) for k in range(sessions)]
    counts = [0] * sessions
    end: list[float] = []  # the counting window's end, set by the first frame of any stream
    lock = threading.Lock()

    def consume(k: int) -> None:
        stream = streams[k]
        for _ in range(100):  # bounded: far more utterances than the window needs
            stream.push_audio(speech)
            stream.flush()
            for f in stream.frames():
                encode_image(f.image, image_format)
                with lock:
                    if not end:
                        end.append(time.perf_counter() + seconds)
                    elif time.perf_counter() < end[0]:
                        counts[k] += 1
                    else:
                        return

    threads = [threading.Thread(target=consume, args=(k,), name=f"synctalk-capacity-{k}") for k in range(sessions)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        for stream in streams:
            stream.close(drain=False)
    return sum(counts) / seconds


def measure_capacity(
    engine: Engine, template: Template | None = None, seconds: float = 2.0, *, image_format: str = "jpeg"
) -> int:
    """Sessions ``engine`` sustains at real time, at least 1.

    With a ``template``, the whole per-session cost is measured: the U-Net alone bounds the
    answer (:func:`unet_capacity`), and that many sessions run their whole path at once
    (:func:`session_frames_per_second`: features, encoder, the U-Net at the batches they form,
    paste, image encoding); their frames/s over the frame rate with the real-time margin is
    the capacity. Without one, the U-Net alone.
    """
    bound, unet_fps = unet_capacity(engine, seconds)
    if template is None:
        log.info("capacity: the U-Net makes %.1f frames/s here: %d session(s) at real time", unet_fps, bound)
        return bound
    fps = session_frames_per_second(engine, template, bound, seconds=seconds, image_format=image_format)
    capacity = min(bound, realtime_streams(fps, FPS["ave"]))
    log.info(
        "capacity: the U-Net alone makes %.1f frames/s (%d session(s)); %d session(s) along their whole path "
        "make %.1f frames/s: %d session(s) at real time",
        unet_fps,
        bound,
        bound,
        fps,
        capacity,
    )
    return capacity


class Admission:
    """Client checks, admission up to ``capacity`` and the session outcomes.

    Parameters
    ----------
    capacity : int
        Sessions open at once, at most.
    token : str, optional
        Clients must present it (``?token=`` or ``Authorization: Bearer``);
        compared in constant time. May be changed while serving.
    allowed_origins : iterable of str
        Browser origins allowed besides the server's own.
    """

    def __init__(self, capacity: int, *, token: str | None = None, allowed_origins: Iterable[str] = ()):
        self.metrics = Metrics()
        self.set_capacity(capacity)
        self.token = token or None
        self.allowed_origins = {o.rstrip("/") for o in allowed_origins}
        self._active = 0
        self._lock = threading.Lock()

    def set_capacity(self, capacity: int) -> None:
        """Admit up to ``capacity`` sessions from now on (those open stay)."""
        self.capacity = int(capacity)
        self.metrics.capacity.set(self.capacity)

    @property
    def active(self) -> int:
        """Sessions open now."""
        return self._active

    # -- the client -------------------------------------------------------------
    def token_ok(self, headers: Mapping[str, str], query: Mapping[str, str]) -> bool:
        """Whether the request carries the token (always, without one)."""
        if self.token is None:
            return True
        given = query.get("token")
        auth = headers.get("authorization", "")
        if given is None and auth.lower().startswith("bearer "):
            given = auth[7:].strip()
        return given is not None and hmac.compare_digest(given.encode(), self.token.encode())

    def origin_ok(self, headers: Mapping[str, str]) -> bool:
        """Whether a browser's origin is the server's own or an allowed one (not a browser: yes)."""
        origin = headers.get("origin")
        if origin is None:
            return True
        origin = origin.rstrip("/")
        return origin in self.allowed_origins or origin.split("://", 1)[-1] == headers.get("host", "")

    def check_client(self, headers: Mapping[str, str], query: Mapping[str, str]) -> None:
        """Raise :class:`Refusal` (``forbidden_origin``, ``unauthorized``) unless the client may connect."""
        if not self.origin_ok(headers):
            raise Refusal("forbidden_origin", f"origin {headers.get('origin')} is not allowed")
        if not self.token_ok(headers, query):
            raise Refusal("unauthorized", "a valid token is required (?token= or Authorization: Bearer)")

    # -- sessions ---------------------------------------------------------------
    def full_message(self) -> str:
        return (
            f"the server is full: {self._active} of {self.capacity} sessions are open "
            f"(what this machine sustains at real time); try again later"
        )

    def is_full(self) -> bool:
        return self._active >= self.capacity

    def admit(self, avatar: str) -> Seat:
        """A seat for a session on ``avatar``.

        Raises
        ------
        Refusal
            ``server_full``: ``capacity`` sessions are open.
        """
        with self._lock:
            if self._active >= self.capacity:
                raise Refusal("server_full", self.full_message())
            self._active += 1
        self.metrics.sessions.labels(avatar, "admitted").inc()
        self.metrics.active.labels(avatar).inc()
        return Seat(self, avatar)

    def refused(self, avatar: str, code: str) -> None:
        """Count a session refused or ended with error ``code`` (before or after admission)."""
        self.metrics.sessions.labels(avatar, code).inc()

    def _release(self, avatar: str) -> None:
        with self._lock:
            self._active -= 1
        self.metrics.active.labels(avatar).dec()


class Seat:
    """One admitted session: its hold on the capacity and its metrics."""

    def __init__(self, admission: Admission, avatar: str):
        self.admission, self.avatar = admission, avatar
        self._released = False
        self._lock = threading.Lock()
        m = admission.metrics
        self._frames, self._dropped, self._skipped = (c.labels(avatar) for c in (m.frames, m.dropped, m.skipped))

    @property
    def released(self) -> bool:
        return self._released

    def release(self) -> None:
        """Give the seat back (idempotent)."""
        with self._lock:
            if self._released:
                return
            self._released = True
        self.admission._release(self.avatar)

    def refused(self, code: str) -> None:
        """The session ends with error ``code``."""
        self.admission.refused(self.avatar, code)

    def sent(self, f: StreamFrame) -> None:
        """A frame reached the client's transport: counted, and its delay from its own audio observed."""
        self._frames.inc()
        if not f.idle and not math.isnan(f.audio_in):
            self.admission.metrics.delay.observe(time.perf_counter() - f.audio_in)

    def dropped(self) -> None:
        """A frame the client could not take."""
        self._dropped.inc()

    def skipped(self) -> None:
        """A frame sent unsynced to catch up (``max_lag``)."""
        self._skipped.inc()

    def __repr__(self) -> str:
        return f"Seat(avatar={self.avatar!r}, released={self._released})"
