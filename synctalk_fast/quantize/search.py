"""The block-sensitivity search: which blocks stay in floating point so that
an int8 model reaches the target PSNR on the validation frames.

Tool-independent: a tool supplies ``score(float_blocks, only)``, the
validation mouth PSNR of its model with ``float_blocks`` in floating point
(or, with ``only``, with that block alone int8). The search measures every
block's sensitivity (that block alone int8), ranks them, and keeps the
fewest most sensitive in floating point by binary search over the ranking.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

__all__ = ["HEADROOM", "Found", "search_fp32_blocks", "keep_float_blocks"]

#: The search aims this far above target_psnr on the validation frames: a few
#: frames misjudge the PSNR over the whole template (the face U-Net, NNCF, 3
#: blocks in bf16: 40.7 dB on 8 validation frames, 40.2 dB on 247 other
#: frames, 39.7 dB on the 32 held-out ones; one more block: 41.5 dB on the 247).
HEADROOM = 1.0

#: ``score(float_blocks, only)`` -> validation mouth PSNR (dB).
Score = Callable[[list[str], str | None], float]


@dataclass
class Found:
    """What the search settled on for one candidate.

    Attributes
    ----------
    float_blocks : list of str
        ``keep_fp32``, then the most sensitive blocks the target needs.
    sensitivity : dict of str to float
        Block -> validation PSNR with only that block int8 (empty when no search was needed).
    validation_psnr : float
        The validation mouth PSNR with ``float_blocks`` in floating point.
    """

    float_blocks: list[str]
    validation_psnr: float
    sensitivity: dict[str, float] = field(default_factory=dict)


def search_fp32_blocks(
    ranking: Sequence[str], score: Callable[[list[str]], float], target: float
) -> tuple[list[str], float]:
    """The fewest most-sensitive blocks to keep in fp32 for ``score >= target``.

    Binary search on the number kept (fidelity grows with it, up to noise).
    Keeping every block (no int8 left) is the last resort.

    Parameters
    ----------
    ranking : sequence of str
        Blocks, most sensitive first.
    score : callable
        ``score(fp32_blocks)``: the fidelity of the model with those blocks in fp32.
    target : float
        The fidelity to reach.

    Returns
    -------
    blocks : list of str
        A prefix of ``ranking``.
    score : float
        Their score (``inf`` when every block is kept without measuring).
    """
    lo, hi = 0, len(ranking)  # score(ranking[:hi]) >= target is assumed (all fp32)
    scores: dict[int, float] = {}
    while lo < hi:
        mid = (lo + hi) // 2
        scores[mid] = score(list(ranking[:mid]))
        if scores[mid] >= target:
            hi = mid
        else:
            lo = mid + 1
    if lo not in scores:
        scores[lo] = score(list(ranking[:lo])) if lo < len(ranking) else math.inf
    return list(ranking[:lo]), scores[lo]


def keep_float_blocks(
    label: str,
    full: float,
    score: Score,
    *,
    blocks: Sequence[str],
    keep_fp32: Sequence[str],
    target_psnr: float | None,
    say: Callable[[str], None],
) -> Found:
    """Blocks to keep in floating point for ``target_psnr`` (plus
    :data:`HEADROOM`) on the validation frames: ``keep_fp32``, then the most
    sensitive ones.

    Parameters
    ----------
    label : str
        The tool, for progress lines.
    full : float
        The validation mouth PSNR with only ``keep_fp32`` in floating point.
    score : callable
        ``score(float_blocks, only)`` (see the module docstring).
    blocks : sequence of str
        Every block, in graph order.
    keep_fp32 : sequence of str
        Blocks in floating point in any case.
    target_psnr : float or None
        None: no search, ``keep_fp32`` only.
    say : callable
        Progress lines.
    """
    kept = list(keep_fp32)
    aim = None if target_psnr is None else target_psnr + HEADROOM
    if aim is None or full >= aim:
        return Found(kept, full)
    say(
        f"  {label}: below {aim:g} dB ({target_psnr:g} dB + {HEADROOM:g} dB headroom): measuring each "
        "block's sensitivity ..."
    )
    sensitivity = {b: score([], b) for b in blocks if b not in keep_fp32}
    ranking = sorted(sensitivity, key=lambda b: sensitivity[b])
    say(f"  {label}: most sensitive: " + ", ".join(f"{b} {sensitivity[b]:.1f} dB" for b in ranking[:5]))
    extra, best = search_fp32_blocks(ranking, lambda fb: score(kept + fb, None), aim)
    kept += extra
    say(f"  {label}: {len(kept)} of {len(blocks)} blocks kept in floating point -> validation mouth PSNR {best:.2f} dB")
    return Found(kept, best, sensitivity)
