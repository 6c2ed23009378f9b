"""Many conversations at once against one server, and the ramp that finds how many it holds.

:func:`run_load` opens ``sessions`` clients (:func:`~synctalk_fast.loadtest.client.run_session`),
each with its own plan, and samples the server's ``/metrics`` (resident memory, CPU time) while
they talk. :func:`ramp` runs 1, 2, 3, ... clients until a level does not hold (p95 delay above
:data:`~synctalk_fast.loadtest.client.FLOOR` + :data:`MARGIN`, a frame skipped, dropped or
missing, or a client refused) and reports the largest that held.

Only the protocol and the metrics route are used: nothing of the server is imported.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .client import FLOOR, SessionResult, run_session
from .plan import RATE, speech_plan

__all__ = ["MARGIN", "LoadResult", "RampResult", "endpoints", "run_load", "ramp"]

MARGIN = 0.1  #: seconds: a level holds while its p95 delay stays within FLOOR + MARGIN
_SAMPLE_EVERY = 0.5  # seconds between two reads of the server's metrics


def endpoints(url: str, avatar: str, *, remote: bool = False) -> tuple[str, str]:
    """The avatar's WebSocket URL and the server's HTTP base from ``url``.

    Parameters
    ----------
    url : str
        The server, ``http://HOST:PORT`` (or ``https``, ``ws``, ``wss``; a path is ignored).
    avatar : str
        The avatar's name.
    remote : bool, keyword-only
        Allow a server that is not on this machine (the default refuses: a load test is
        meant for a machine you run).

    Returns
    -------
    (str, str)
        ``ws://HOST:PORT/v1/avatars/NAME/stream`` and ``http://HOST:PORT``.

    Raises
    ------
    ValueError
        A URL that is not one of those, or a remote host without ``remote``.
    """
    parts = urllib.parse.urlsplit(url)
    secure = {"http": False, "ws": False, "https": True, "wss": True}.get(parts.scheme)
    if secure is None or not parts.hostname:
        raise ValueError(f"expected a server URL such as http://127.0.0.1:8000, got {url!r}")
    host = parts.hostname
    if not remote and not _loopback(host):
        raise ValueError(f"{host} is not this machine: pass --remote to load another machine on purpose")
    netloc = parts.netloc.rsplit("@", 1)[-1]
    name = urllib.parse.quote(avatar, safe="")
    return (
        f"{'wss' if secure else 'ws'}://{netloc}/v1/avatars/{name}/stream",
        f"{'https' if secure else 'http'}://{netloc}",
    )


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _get(url: str, token: str | None, timeout: float = 5.0) -> bytes:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (http/https only: endpoints)
        return response.read()


def server_sample(base: str, token: str | None) -> dict[str, float]:
    """The server's resident memory (bytes), CPU time (seconds), open sessions, threads and event
    loop tasks, from ``/metrics``.

    Returns
    -------
    dict
        ``rss``, ``cpu``, ``sessions``, ``threads``, ``tasks``; a figure the server does not export
        is absent.
    """
    from prometheus_client.parser import text_string_to_metric_families

    names = {
        "process_resident_memory_bytes": "rss",
        "process_cpu_seconds_total": "cpu",
        "process_cpu_seconds": "cpu",
        "synctalk_sessions_active": "sessions",
        "synctalk_threads": "threads",
        "synctalk_event_loop_tasks": "tasks",
    }
    out: dict[str, float] = {}
    text = _get(f"{base}/metrics", token).decode("utf-8", "replace")
    for family in text_string_to_metric_families(text):
        key = names.get(family.name)
        if key is not None:
            out[key] = out.get(key, 0.0) + sum(s.value for s in family.samples if not s.name.endswith("_created"))
    return out


def _percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "max": None}
    a = np.asarray(values)
    return {"p50": float(np.percentile(a, 50)), "p95": float(np.percentile(a, 95)), "max": float(a.max())}


@dataclass
class LoadResult:
    """One level: ``sessions`` clients at once.

    Attributes
    ----------
    sessions : int
        Clients opened.
    seconds : float
        Length of each client's plan.
    clients : list of SessionResult
        What each saw, in order.
    server : dict
        ``rss_start``, ``rss_end``, ``rss_peak`` (bytes), ``cpu_seconds`` (used during the level),
        ``cpu_share`` (of one core: cpu seconds per wall second), ``capacity`` (what the server
        admits, from ``/healthz``); a figure the server did not give is None.
    wall : float
        Seconds the level took.
    """

    sessions: int
    seconds: float
    clients: list[SessionResult]
    server: dict[str, Any] = field(default_factory=dict)
    wall: float = 0.0

    def summary(self) -> dict[str, Any]:
        """The level's figures, over every admitted client (JSON-ready)."""
        admitted = [c for c in self.clients if not c.refused]
        delays = [d for c in admitted for d in c.delays]
        waits = [w for c in admitted for w in c.waits]
        frames = sum(c.frames + c.idle_frames for c in admitted)
        fps = [c.fps for c in admitted]
        return {
            "sessions": self.sessions,
            "admitted": len(admitted),
            "refused": len(self.clients) - len(admitted),
            "frames": frames,
            "fps_per_session": {"mean": float(np.mean(fps)) if fps else 0.0, "min": min(fps, default=0.0)},
            "delay": _percentiles(delays),
            "wait": _percentiles(waits),
            "skipped": sum(c.skipped for c in admitted),
            "dropped": sum(c.dropped for c in admitted),
            "missing": sum(c.missing for c in admitted),
            "utterances": sum(c.utterances for c in admitted),
            "flushed": sum(c.flushed for c in admitted),
            "completed": sum(c.completed for c in admitted),
            "interrupted": sum(c.interrupted for c in admitted),
            "errors": sorted({e for c in self.clients for e in c.errors}),
            "bytes_per_frame": sum(c.bytes_received for c in admitted) / frames if frames else None,
            "server": self.server,
            "held": self.held(),
        }

    def held(self) -> bool:
        """Every client admitted, p95 delay within ``FLOOR + MARGIN``, every frame there in time."""
        s = self.clients
        delays = [d for c in s for d in c.delays]
        return (
            bool(s)
            and not any(c.refused for c in s)
            and bool(delays)
            and float(np.percentile(delays, 95)) <= FLOOR + MARGIN
            and not any(c.skipped or c.dropped or c.missing for c in s)
            and all(c.completed == c.flushed for c in s)
        )


async def _monitor(base: str, token: str | None, samples: list[dict[str, float]], stop: asyncio.Event) -> None:
    while True:
        try:
            sample = await asyncio.to_thread(server_sample, base, token)
            sample["at"] = time.monotonic()
            samples.append(sample)
        except (OSError, ValueError):
            pass  # a server without metrics (or a moment it does not answer): figures are absent
        try:
            await asyncio.wait_for(stop.wait(), _SAMPLE_EVERY)
            return
        except TimeoutError:
            pass


def _server_figures(samples: list[dict[str, float]], base: str, token: str | None) -> dict[str, Any]:
    rss = [s["rss"] for s in samples if "rss" in s]
    cpu = [(s["at"], s["cpu"]) for s in samples if "cpu" in s]
    used = cpu[-1][1] - cpu[0][1] if len(cpu) > 1 else None
    share = used / (cpu[-1][0] - cpu[0][0]) if used is not None and cpu[-1][0] > cpu[0][0] else None
    try:
        capacity = json.loads(_get(f"{base}/healthz", token)).get("capacity")
    except (OSError, ValueError):
        capacity = None
    return {
        "rss_start": rss[0] if rss else None,
        "rss_end": rss[-1] if rss else None,
        "rss_peak": max(rss) if rss else None,
        "cpu_seconds": used,
        "cpu_share": share,
        "capacity": capacity,
    }


async def _level(
    ws_url: str, base: str, plans: list, *, stagger: float, token: str | None, **session: Any
) -> LoadResult:
    samples: list[dict[str, float]] = []
    stop = asyncio.Event()
    monitor = asyncio.create_task(_monitor(base, token, samples, stop))
    t0 = time.monotonic()

    async def client(k: int) -> SessionResult:
        await asyncio.sleep(k * stagger)  # clients do not all start speaking in the same 20 ms
        return await run_session(ws_url, plans[k], session=k, token=token, **session)

    try:
        clients = await asyncio.gather(*(client(k) for k in range(len(plans))))
    finally:
        stop.set()
        await monitor
    seconds = sum(u.sent / RATE + u.pause for u in plans[0]) if plans else 0.0
    server = await asyncio.to_thread(_server_figures, samples, base, token)
    return LoadResult(len(plans), seconds, list(clients), server, time.monotonic() - t0)


def run_load(
    url: str,
    *,
    avatar: str,
    sessions: int,
    seconds: float,
    speech: np.ndarray,
    image_format: str = "jpeg",
    max_lag: float | None = None,
    token: str | None = None,
    seed: int = 0,
    stagger: float = 0.2,
    remote: bool = False,
) -> LoadResult:
    """``sessions`` clients talking at once for about ``seconds`` each.

    Parameters
    ----------
    url : str
        The server (see :func:`endpoints`).
    avatar : str, keyword-only
        The avatar every client talks to.
    sessions : int, keyword-only
        Clients, at least 1.
    seconds : float, keyword-only
        Each client's plan fills this much time (:func:`~synctalk_fast.loadtest.plan.speech_plan`).
    speech : np.ndarray, keyword-only
        Mono speech at 16 kHz the utterances are cut from (int16, or float in [-1, 1]).
    image_format, max_lag, token : keyword-only
        See :func:`~synctalk_fast.loadtest.client.run_session`.
    seed : int, keyword-only
        Client ``k`` plans with seed ``seed + k``.
    stagger : float, keyword-only
        Seconds between two clients' starts.
    remote : bool, keyword-only
        Allow a server on another machine.

    Returns
    -------
    LoadResult
    """
    if sessions < 1 or seconds <= 0:
        raise ValueError("sessions must be at least 1 and seconds above 0")
    ws_url, base = endpoints(url, avatar, remote=remote)
    plans = [speech_plan(speech, seconds=seconds, seed=seed + k) for k in range(sessions)]
    return asyncio.run(
        _level(ws_url, base, plans, stagger=stagger, token=token, image_format=image_format, max_lag=max_lag)
    )


@dataclass
class RampResult:
    """The levels of a ramp, and the largest that held (0: not even one client)."""

    levels: list[LoadResult]
    held: int

    def summary(self) -> dict[str, Any]:
        """JSON-ready: ``held``, ``floor``, ``margin`` and each level's :meth:`LoadResult.summary`."""
        return {"held": self.held, "floor": FLOOR, "margin": MARGIN, "levels": [r.summary() for r in self.levels]}


def ramp(
    url: str,
    *,
    max_sessions: int = 32,
    on_level: Callable[[LoadResult], None] | None = None,
    **load: Any,
) -> RampResult:
    """Run 1, 2, 3, ... clients (:func:`run_load`) until a level does not hold or ``max_sessions``.

    Parameters
    ----------
    url : str
        The server.
    max_sessions : int, keyword-only
        The last level tried.
    on_level : callable, optional, keyword-only
        Called with each level's result as it ends (progress).
    **load
        :func:`run_load`'s keywords but ``sessions``.

    Returns
    -------
    RampResult
    """
    levels: list[LoadResult] = []
    for n in range(1, max_sessions + 1):
        level = run_load(url, sessions=n, **load)
        levels.append(level)
        if on_level is not None:
            on_level(level)
        if not level.held():
            break
    return RampResult(levels, max((r.sessions for r in levels if r.held()), default=0))
