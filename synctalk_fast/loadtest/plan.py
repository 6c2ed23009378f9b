"""What each simulated client says: utterances cut from speech, pauses between them, some interrupted.

A plan is deterministic given its seed, so a run can be repeated and two levels of a ramp
differ only in how many clients speak at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["CHUNK", "RATE", "PlannedUtterance", "pcm16", "speech_plan"]

RATE = 16000  #: the sample rate the clients announce (the protocol's default)
CHUNK = RATE // 50  #: samples per message: 20 ms, as a live source sends


@dataclass(frozen=True)
class PlannedUtterance:
    """One utterance of a client.

    Attributes
    ----------
    samples : np.ndarray
        int16 mono PCM at :data:`RATE`, ``[n]``.
    interrupt_at : int or None
        Samples sent before the client interrupts it; None: it is sent whole and flushed.
    pause : float
        Seconds the client stays silent after it.
    """

    samples: np.ndarray
    interrupt_at: int | None
    pause: float

    @property
    def sent(self) -> int:
        """Samples the client sends of it."""
        return len(self.samples) if self.interrupt_at is None else self.interrupt_at


def pcm16(speech: np.ndarray) -> np.ndarray:
    """Speech as the clients send it: int16 PCM as it is; float samples in [-1, 1] (as
    :func:`~synctalk_fast.load_audio` gives them) rounded to int16."""
    if speech.dtype == np.int16:
        return speech
    return np.round(np.clip(speech, -1.0, 1.0) * 32767).astype(np.int16)


def speech_plan(
    speech: np.ndarray,
    *,
    seconds: float,
    seed: int = 0,
    interrupt_share: float = 0.2,
    length: tuple[float, float] = (1.5, 4.0),
    pause: tuple[float, float] = (0.3, 1.2),
) -> list[PlannedUtterance]:
    """Utterances cut from ``speech`` (taken in turn, wrapping around) that fill ``seconds``.

    Parameters
    ----------
    speech : np.ndarray
        Mono speech at :data:`RATE`, ``[n]``, at least one chunk long: int16 PCM, or float
        samples in [-1, 1] (:func:`pcm16`).
    seconds : float, keyword-only
        Wall time the plan fills (speech and pauses), at least; its last utterance may end later.
    seed : int, keyword-only
        The plan's random choices (each client of a run gets its own).
    interrupt_share : float, keyword-only
        Share of utterances interrupted, at 30 to 80 % of their length.
    length, pause : (float, float), keyword-only
        Ranges of an utterance's length and of the pause after it, seconds.

    Returns
    -------
    list of PlannedUtterance
        At least one.
    """
    if speech.ndim != 1 or len(speech) < CHUNK:
        raise ValueError(f"the speech must be mono and at least {CHUNK / RATE:.2f} s long")
    speech = pcm16(speech)
    rng = np.random.default_rng(seed)
    plan: list[PlannedUtterance] = []
    at, total = int(rng.integers(0, len(speech))), 0.0
    while not plan or total < seconds:
        n = min(len(speech), int(rng.uniform(*length) * RATE))
        take = np.take(speech, np.arange(at, at + n), mode="wrap")
        at = (at + n) % len(speech)
        cut = int(n * rng.uniform(0.3, 0.8)) if rng.random() < interrupt_share else None
        utt = PlannedUtterance(take, cut, float(rng.uniform(*pause)))
        plan.append(utt)
        total += utt.sent / RATE + utt.pause
    return plan
