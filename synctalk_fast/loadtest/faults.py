"""Misbehaving clients, and the soak that runs them beside well-behaved ones.

Each fault client repeats one misbehaviour until its deadline (every loop is bounded in count
and time): :data:`FAULTS` names them. :func:`soak` keeps ``good`` well-behaved clients (lossless
frames kept, for the caller's exactness check) and ``faulty`` fault clients going for
``seconds``, then reports what the server looks like afterwards: its memory after warm-up and at
the end, threads, event-loop tasks and open sessions once every client has left, and how soon a
slot freed by a closing client admits the next one.

Only the protocol, ``/metrics`` and ``/v1/avatars/NAME`` are used: nothing of the server is imported.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .client import SessionResult, run_session
from .plan import CHUNK, RATE, pcm16, speech_plan
from .run import _get, endpoints, server_sample

__all__ = ["FAULTS", "SoakResult", "soak", "slot_free_seconds"]

_MAX_ROUNDS = 10_000  # a fault client's loop is bounded in count as well as in time


@dataclass
class _Fault:
    """What one fault client did."""

    rounds: int = 0
    refused: int = 0
    closes: dict[int, int] = field(default_factory=dict)


async def _connect(url: str, token: str | None, **kwargs: Any) -> Any:
    from websockets.asyncio.client import connect

    headers = {"Authorization": f"Bearer {token}"} if token else None
    return await connect(url, max_size=None, additional_headers=headers, open_timeout=20, **kwargs)


async def _speak(ws: Any, pcm: np.ndarray, seconds: float) -> None:
    """Up to ``seconds`` of ``pcm`` at real time in 20 ms messages."""
    clock = time.monotonic()
    for c in range(0, min(len(pcm), int(seconds * RATE)), CHUNK):
        clock += CHUNK / RATE
        await asyncio.sleep(max(0.0, clock - time.monotonic()))
        await ws.send(pcm[c : c + CHUNK].tobytes())


async def _drain(ws: Any, seconds: float) -> None:
    """Read (and drop) what the server sends for ``seconds``, or until it closes (however)."""
    from websockets.exceptions import ConnectionClosed

    try:
        async with asyncio.timeout(seconds):
            async for _ in ws:
                pass
    except (TimeoutError, ConnectionClosed):
        pass


async def disconnect_mid_utterance(ws: Any, pcm: np.ndarray, rng: np.random.Generator, start: str) -> None:
    """Speak, then drop the connection without a close handshake."""
    await ws.send(start)
    reader = asyncio.create_task(_drain(ws, 30))
    await _speak(ws, pcm, rng.uniform(0.5, 1.5))
    reader.cancel()
    ws.transport.abort()


async def interrupt_at_random(ws: Any, pcm: np.ndarray, rng: np.random.Generator, start: str) -> None:
    """Speak in bursts, interrupting at random moments, then close properly."""
    await ws.send(start)
    reader = asyncio.create_task(_drain(ws, 60))
    for _ in range(int(rng.integers(2, 5))):
        await _speak(ws, pcm[int(rng.integers(0, len(pcm) // 2)) :], rng.uniform(0.3, 1.0))
        await ws.send(json.dumps({"type": "interrupt"}))
    await ws.send(json.dumps({"type": "close"}))
    await reader


async def malformed_then_oversized(ws: Any, pcm: np.ndarray, rng: np.random.Generator, start: str) -> None:
    """Bad text messages (each answered, the session goes on), then a message over the limit."""
    await ws.send(start)
    reader = asyncio.create_task(_drain(ws, 30))
    for bad in ("{not json", json.dumps({"type": "dance"}), json.dumps({"type": "start"}), "[]"):
        await ws.send(bad)
    await _speak(ws, pcm, 0.3)
    await ws.send(bytes(2 * 2**20))  # 2 MiB: the server closes (1009)
    await reader


async def stop_reading(ws: Any, pcm: np.ndarray, rng: np.random.Generator, start: str) -> None:
    """Speak and never read (the client's small queue fills, then TCP pushes back), then close."""
    await ws.send(start)
    await _speak(ws, pcm, rng.uniform(2.0, 4.0))
    await ws.send(json.dumps({"type": "flush"}))
    await asyncio.sleep(rng.uniform(1.0, 2.0))


async def reconnect_at_once(ws: Any, pcm: np.ndarray, rng: np.random.Generator, start: str) -> None:
    """Speak a little and close; the loop reconnects at once."""
    await ws.send(start)
    await _speak(ws, pcm, rng.uniform(0.1, 0.5))
    await ws.send(json.dumps({"type": "close"}))
    await _drain(ws, 10)


#: The misbehaviours, by name: each ``(ws, pcm, rng, start)`` on an open connection, ``start``
#: being the start message to send.
FAULTS: dict[str, Callable[[Any, np.ndarray, np.random.Generator, str], Awaitable[None]]] = {
    "disconnect_mid_utterance": disconnect_mid_utterance,
    "interrupt_at_random": interrupt_at_random,
    "malformed_then_oversized": malformed_then_oversized,
    "stop_reading": stop_reading,
    "reconnect_at_once": reconnect_at_once,
}


async def _fault_client(
    url: str, token: str | None, name: str, pcm: np.ndarray, seed: int, deadline: float, start: str
) -> _Fault:
    from websockets.exceptions import ConnectionClosed, InvalidStatus

    act, rng, out = FAULTS[name], np.random.default_rng(seed), _Fault()
    while time.monotonic() < deadline and out.rounds < _MAX_ROUNDS:
        out.rounds += 1
        ws = None
        try:
            # stop_reading's client must not read for it: a small queue makes TCP push back
            ws = await _connect(url, token, max_queue=4 if name == "stop_reading" else 16)
            async with asyncio.timeout(max(1.0, deadline - time.monotonic() + 30)):
                await act(ws, pcm, rng, start)
        except (ConnectionClosed, InvalidStatus, OSError, TimeoutError):
            pass
        finally:
            if ws is not None:
                if ws.close_code is None:
                    await ws.close()
                code = int(ws.close_code or 0)  # a plain int (JSON), 0 for none
                out.closes[code] = out.closes.get(code, 0) + 1
                out.refused += ws.close_code == 1013
        if name != "reconnect_at_once":
            await asyncio.sleep(float(rng.uniform(0.05, 0.3)))
    return out


async def slot_free_seconds(url: str, base: str, avatar: str, token: str | None, capacity: int) -> float:
    """Fill the server's ``capacity`` slots, drop one connection, and time until ``GET
    /v1/avatars/NAME`` admits again (it answers 503 while full)."""
    from urllib.parse import quote

    status = f"{base}/v1/avatars/{quote(avatar, safe='')}"
    held = [await _connect(url, token) for _ in range(capacity)]
    try:
        for ws in held:
            await ws.send(json.dumps({"type": "start"}))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # every slot taken: 503
            try:
                await asyncio.to_thread(_get, status, token)
            except urllib.error.HTTPError as exc:
                if exc.code == 503:
                    break
            await asyncio.sleep(0.02)
        t0 = time.monotonic()
        held[0].transport.abort()
        while time.monotonic() - t0 < 10:
            try:
                await asyncio.to_thread(_get, status, token)
                return time.monotonic() - t0
            except urllib.error.HTTPError:
                await asyncio.sleep(0.005)
        return float("inf")
    finally:
        for ws in held[1:]:
            await ws.close()


@dataclass
class SoakResult:
    """A soak's outcome.

    Attributes
    ----------
    good : list of SessionResult
        The well-behaved clients (images kept).
    faults : dict
        Per fault client: ``name``, ``rounds``, ``refused`` and close codes seen.
    server : dict
        ``rss_warm`` (after the first fifth), ``rss_end`` (bytes), ``rss_growth``; once every
        client has left: ``threads``, ``tasks``, ``sessions``, and the same at the start
        (``threads_start``, ``tasks_start``); ``slot_free_seconds``.
    """

    good: list[SessionResult]
    faults: list[dict[str, Any]]
    server: dict[str, Any]


async def _settled(base: str, token: str | None, seconds: float = 10.0) -> dict[str, float]:
    """The server's figures once no session is open (waiting up to ``seconds``)."""
    deadline = time.monotonic() + seconds
    sample: dict[str, float] = {}
    while time.monotonic() < deadline:
        sample = await asyncio.to_thread(server_sample, base, token)
        if not sample.get("sessions"):
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.5)  # tasks of the last close finish
    return await asyncio.to_thread(server_sample, base, token)


async def _soak(
    url: str,
    base: str,
    avatar: str,
    *,
    seconds: float,
    good: int,
    faulty: int,
    speech: np.ndarray,
    token: str | None,
    fault_max_lag: float | None,
    good_plan: dict[str, Any],
) -> SoakResult:
    speech = pcm16(speech)
    start = await asyncio.to_thread(server_sample, base, token)
    deadline = time.monotonic() + seconds
    plans = [speech_plan(speech, seconds=seconds, seed=k, **good_plan, interrupt_share=0.0) for k in range(good)]
    good_tasks = [
        asyncio.create_task(run_session(url, plans[k], session=k, image_format="png", token=token, keep_images=True))
        for k in range(good)
    ]
    await asyncio.sleep(1.0)  # the well-behaved clients are admitted before the faults crowd in
    names = list(FAULTS)
    start_msg: dict[str, Any] = {"type": "start", "format": "jpeg"}
    if fault_max_lag is not None:
        start_msg["max_lag"] = fault_max_lag
    fault_tasks = [
        asyncio.create_task(
            _fault_client(url, token, names[k % len(names)], speech, 1000 + k, deadline, json.dumps(start_msg))
        )
        for k in range(faulty)
    ]
    await asyncio.sleep(seconds / 5)
    warm = await asyncio.to_thread(server_sample, base, token)
    good_results = await asyncio.gather(*good_tasks)
    fault_results = await asyncio.gather(*fault_tasks)
    end = await _settled(base, token)
    capacity = json.loads(await asyncio.to_thread(_get, f"{base}/healthz", token)).get("capacity", 1)
    slot = await slot_free_seconds(url, base, avatar, token, int(capacity))
    final = await _settled(base, token)
    server = {
        "rss_warm": warm.get("rss"),
        "rss_end": end.get("rss"),
        "rss_growth": end["rss"] - warm["rss"] if "rss" in end and "rss" in warm else None,
        "threads_start": start.get("threads"),
        "tasks_start": start.get("tasks"),
        "threads": final.get("threads"),
        "tasks": final.get("tasks"),
        "sessions": final.get("sessions"),
        "slot_free_seconds": slot,
    }
    faults = [
        {"name": names[k % len(names)], "rounds": f.rounds, "refused": f.refused, "closes": f.closes}
        for k, f in enumerate(fault_results)
    ]
    return SoakResult(list(good_results), faults, server)


def soak(
    url: str,
    *,
    avatar: str,
    seconds: float,
    good: int,
    faulty: int,
    speech: np.ndarray,
    token: str | None = None,
    fault_max_lag: float | None = None,
    good_plan: dict[str, Any] | None = None,
    remote: bool = False,
) -> SoakResult:
    """``good`` well-behaved clients (png frames kept) and ``faulty`` fault clients (cycling
    through :data:`FAULTS`) against one server for ``seconds``, then the server's state.

    Parameters
    ----------
    url : str
        The server (see :func:`~synctalk_fast.loadtest.run.endpoints`).
    avatar : str, keyword-only
    seconds : float, keyword-only
        How long the clients keep going.
    good, faulty : int, keyword-only
        Clients of each kind.
    speech : np.ndarray, keyword-only
        Mono speech at 16 kHz (int16, or float in [-1, 1]).
    token : str, optional, keyword-only
    fault_max_lag : float, optional, keyword-only
        ``max_lag`` the fault clients ask (0: their frames skip the U-Net, so that a small
        machine keeps the well-behaved clients at real time while the faults exercise the
        server's session handling).
    good_plan : dict, optional, keyword-only
        :func:`~synctalk_fast.loadtest.plan.speech_plan` keywords of the well-behaved clients
        (``length``, ``pause``); they never interrupt.
    remote : bool, keyword-only

    Returns
    -------
    SoakResult
    """
    ws_url, base = endpoints(url, avatar, remote=remote)
    return asyncio.run(
        _soak(
            ws_url,
            base,
            avatar,
            seconds=seconds,
            good=good,
            faulty=faulty,
            speech=speech,
            token=token,
            fault_max_lag=fault_max_lag,
            good_plan=good_plan or {},
        )
    )
