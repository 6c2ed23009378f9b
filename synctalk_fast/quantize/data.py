"""The U-Net inputs quantization measures with: the user's template frames
paired with rows of the user's speech features, split into calibration,
validation and held-out sets (disjoint frames).

:class:`FrameData` owns the split and the prepared network inputs of each
set (made once, through the engine's own prepare step, so they are exactly
what the pipeline feeds the U-Net); :class:`Feeds` is a set's inputs by graph
input name, the form every tool consumes. Single-threaded; arrays are
never changed after they are made.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..engine import Engine, StepBatch
from ..errors import FeatureError, TemplateError
from ..features import feature_windows, load_features
from ..frames import Box
from ..shapes import MODES
from ..template import Template

__all__ = ["Feeds", "FrameData", "split", "speech_features", "SETS"]

#: The frame sets, in the order the random split draws them.
SETS = ("heldout", "calibration", "validation")


class Feeds:
    """Batches of the U-Net's two inputs, by graph input name.

    Parameters
    ----------
    names : mapping
        ``{"image": graph input name, "audio": graph input name}``.
    images : np.ndarray
        float32 ``[N, 6, 320, 320]``.
    audio : np.ndarray
        float32 ``[N, C, H, W]`` (the mode's audio window).
    """

    def __init__(self, names: Mapping[str, str], images: np.ndarray, audio: np.ndarray):
        self.names, self.images, self.audio = dict(names), images, audio

    def __len__(self) -> int:
        return len(self.images)

    def batch(self, i: int, n: int = 1) -> dict[str, np.ndarray]:
        """Items ``i`` to ``i + n`` as a runtime feed (graph input name -> array)."""
        return {self.names["image"]: self.images[i : i + n], self.names["audio"]: self.audio[i : i + n]}

    def head(self, n: int) -> Feeds:
        """The first ``n`` items."""
        return Feeds(self.names, self.images[:n], self.audio[:n])


def split(n: int, sizes: Mapping[str, int], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Disjoint random sets of ``n`` frame indices (sorted int arrays), of
    ``sizes`` each; scaled down (each >= 1) when they add up to more than ``n``.

    Raises
    ------
    TemplateError
        Fewer frames than sets.
    """
    want = sum(sizes.values())
    if n < len(sizes):
        raise TemplateError(f"quantization needs at least {len(sizes)} template frames, the template has {n}")
    if want > n:
        scaled = {k: max(1, int(v * n / want)) for k, v in sizes.items()}
        while sum(scaled.values()) > n:
            big = max(scaled, key=lambda k: scaled[k])
            scaled[big] -= 1
        sizes = scaled
    perm = rng.permutation(n)
    out, at = {}, 0
    for name, size in sizes.items():
        out[name] = np.sort(perm[at : at + size])
        at += size
    return out


def speech_features(
    features: Any, audio: Any, audio_encoder: Any, mode: str, threads: int | None
) -> tuple[np.ndarray, bool]:
    """The speech's features: ``features`` (file or array, any mode), or
    ``audio`` run through ``audio_encoder`` (ave only).

    Returns
    -------
    rows : np.ndarray
        float32 ``[F, D]``.
    windowed : bool
        Each row is already a frame's whole audio input (see :func:`~synctalk_fast.load_features`).

    Raises
    ------
    FeatureError
        Neither source given, audio for a non-ave model, or audio without an encoder.
    """
    if features is not None:
        return load_features(features, mode=mode)
    if audio is None:
        raise FeatureError("quantize needs the speech's features: audio=... with audio_encoder=..., or features=...")
    if mode != "ave":
        raise FeatureError(f"{mode} models take precomputed features (features=...), not audio")
    if audio_encoder is None:
        raise FeatureError("computing features from audio needs audio_encoder=...; or pass features=...")
    encoder = Engine(audio_encoder=audio_encoder, providers=["cpu"], threads=threads)
    return encoder.audio_features(audio), False


class FrameData:
    """The template's frames split into sets, each frame paired with a random
    feature row, and the U-Net inputs of each set.

    Parameters
    ----------
    engine : Engine
        The fp32 U-Net's engine: its prepare and paste steps make the inputs and frames.
    template : Template
    rows : np.ndarray
        float32 ``[F, D]`` speech features; ``windowed`` as :func:`speech_features` says.
    sizes : mapping
        Set name (:data:`SETS`) -> frames wanted (scaled down for a short template).
    seed : int
        Seed of the split and the pairing.

    Attributes
    ----------
    sets, pairing : dict of str to np.ndarray
        Set name -> template frame indices, and the feature row of each.
    """

    def __init__(
        self, engine: Engine, template: Template, rows: np.ndarray, windowed: bool, sizes: Mapping[str, int], seed: int
    ):
        self.engine, self.template, self._rows, self._windowed = engine, template, rows, windowed
        self._mode = str(engine.mode)
        rng = np.random.default_rng(seed)
        self.sets = split(len(template), {k: sizes[k] for k in SETS}, rng)
        self.pairing = {k: rng.integers(0, rows.shape[0], len(v)) for k, v in self.sets.items()}
        self._prepared: dict[str, StepBatch] = {}

    def _windows(self, name: str) -> np.ndarray:
        rows, mode = self._rows, self._mode
        return np.concatenate(
            [
                rows[r : r + 1].reshape(1, *MODES[mode])
                if self._windowed
                else feature_windows(rows, mode=mode, start=int(r), stop=int(r) + 1)
                for r in self.pairing[name]
            ]
        )

    def feeds(self, name: str) -> Feeds:
        """The U-Net inputs of set ``name`` (prepared on first use)."""
        if name not in self._prepared:
            items = [(self.template, int(k)) for k in self.sets[name]]
            self._prepared[name] = self.engine.prepare(items, self._windows(name))
        batch = self._prepared[name]
        return Feeds(self.engine.unet.inputs, batch.images, batch.audio)

    def paste(self, name: str, preds: np.ndarray) -> list[np.ndarray]:
        """The frames of set ``name`` with U-Net predictions ``preds`` (float32
        ``[N, 3, 320, 320]``) pasted: BGR uint8 ``[H, W, 3]`` each."""
        batch = self._prepared[name]
        return list(self.engine.paste(StepBatch(batch.frames, batch.images, batch.audio, preds)))

    def boxes(self, name: str) -> list[Box]:
        """The mouth boxes of set ``name``'s frames."""
        return [self.template.box(int(k)) for k in self.sets[name]]

    def indices(self) -> tuple[dict[str, list[int]], dict[str, list[int]]]:
        """The frames of each set and their feature rows, as lists for the report."""
        return (
            {k: [int(i) for i in v] for k, v in self.sets.items()},
            {k: [int(i) for i in v] for k, v in self.pairing.items()},
        )


def template_of(template: Template | str | os.PathLike[str], cache_mb: float | None = None) -> Template:
    """``template`` as a :class:`Template` (a folder is opened with ``cache_mb``)."""
    return template if isinstance(template, Template) else Template(template, cache_mb=cache_mb)
