"""Stage 2: per-frame audio features -> the U-Net's audio input.

numerics §1.8-1.9. ``ave`` features are the audio encoder's 512-float embeddings
(padded by :func:`pad_embeddings`); ``hubert`` and ``wenet`` features are
precomputed per video frame by models outside this package.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import TypeAlias

import numpy as np

from .errors import FeatureError
from .shapes import CONTEXT, FPS, MODE_TABLE, MODES

__all__ = [
    "FeaturesLike",
    "MODES",
    "FPS",
    "pad_embeddings",
    "feature_windows",
    "row_size",
    "window_size",
    "load_features",
    "save_features",
    "FeatureError",
]


def _mode(mode: str):
    try:
        return MODE_TABLE[mode]
    except KeyError:
        raise FeatureError(f"unknown mode {mode!r}; expected one of {', '.join(MODE_TABLE)}") from None


def _mode_shape(mode: str) -> tuple[int, int, int]:
    return _mode(mode).audio_shape


def pad_embeddings(embeddings: np.ndarray) -> np.ndarray:
    """Repeat the first and last encoder embedding once (numerics §1.8).

    Parameters
    ----------
    embeddings : np.ndarray
        float32 ``[n, D]`` audio encoder outputs, ``n >= 1``.

    Returns
    -------
    np.ndarray
        float32 ``[n + 2, D]``: ``[e0, e0, e1, ..., e(n-1), e(n-1)]``; the
        video has exactly ``n + 2`` frames.
    """
    emb = np.asarray(embeddings, dtype=np.float32)
    if emb.ndim != 2 or emb.shape[0] == 0:
        raise FeatureError(f"embeddings must be [n >= 1, D], got shape {emb.shape}")
    return np.ascontiguousarray(np.concatenate([emb[:1], emb, emb[-1:]]))


def feature_windows(features: np.ndarray, *, mode: str = "ave", start: int = 0, stop: int | None = None) -> np.ndarray:
    """The U-Net audio input of video frames ``start .. stop - 1`` (numerics §1.9).

    Frame ``i`` takes feature rows ``i - 8 .. i + 7`` (rows outside the
    array are zeros) and reshapes the ``16 x D`` block row-major to the
    mode's ``[C, H, W]``.

    Parameters
    ----------
    features : np.ndarray
        float32 ``[F, D]``, one row per video frame (for ``ave`` the output of
        :func:`pad_embeddings`). ``16 * D`` must equal ``C * H * W`` of the
        mode: D = 512 (ave), 2048 (hubert) or 8192 (wenet).
    mode : {"ave", "hubert", "wenet"}, keyword-only
    start, stop : int, keyword-only
        Range of video frames, default all ``F``.

    Returns
    -------
    np.ndarray
        float32 ``[stop - start, C, H, W]``, C-contiguous: ``[N, 32, 16, 16]``
        (ave), ``[N, 32, 32, 32]`` (hubert), ``[N, 256, 16, 32]`` (wenet).
    """
    shape = _mode_shape(mode)
    feats = np.asarray(features, dtype=np.float32)
    if feats.ndim != 2:
        raise FeatureError(f"features must be 2-D [frames, D], got shape {feats.shape}")
    n_rows, dim = feats.shape
    if CONTEXT * dim != shape[0] * shape[1] * shape[2]:
        need = shape[0] * shape[1] * shape[2] // CONTEXT
        raise FeatureError(f"mode {mode!r} needs {need} floats per feature row, got {dim}")
    stop = n_rows if stop is None else stop
    if not 0 <= start <= stop <= n_rows:
        raise FeatureError(f"frame range [{start}, {stop}) is not inside [0, {n_rows})")
    # Only rows start - 8 .. stop + 7 are read: copy them into a zero block,
    # then windows[j] = block[j : j + 16] = feature rows start + j - 8 .. + 7.
    lo, hi = start - CONTEXT // 2, stop + CONTEXT // 2
    block = np.zeros((hi - lo, dim), dtype=np.float32)
    block[max(lo, 0) - lo : min(hi, n_rows) - lo] = feats[max(lo, 0) : min(hi, n_rows)]
    windows = np.lib.stride_tricks.sliding_window_view(block, CONTEXT, axis=0).transpose(0, 2, 1)
    return np.ascontiguousarray(windows[: stop - start]).reshape((stop - start,) + shape)


def window_size(mode: str) -> int:
    """Floats in one frame's U-Net audio input: C * H * W of the mode."""
    return _mode(mode).window_size


def row_size(mode: str) -> int:
    """Floats in one per-frame feature row: window_size / 16."""
    return _mode(mode).row_size


def _read_frame_bins(folder: Path) -> np.ndarray:
    files = sorted(folder.glob("frame_*.bin"))
    if not files:
        raise FeatureError(f"{folder}: no frame_*.bin files")
    out = []
    for f in files:
        data = f.read_bytes()
        if len(data) < 4:
            raise FeatureError(f"{f}: truncated frame file")
        (length,) = struct.unpack("<I", data[:4])
        if len(data) != 4 + 4 * length:
            raise FeatureError(f"{f}: header says {length} floats, file holds {(len(data) - 4) / 4:g}")
        out.append(np.frombuffer(data, dtype="<f4", offset=4))
    if len({a.size for a in out}) != 1:
        raise FeatureError(f"{folder}: frame files of different sizes")
    return np.stack(out)


def load_features(source, *, mode: str = "ave") -> tuple[np.ndarray, bool]:
    """Read precomputed audio features.

    Parameters
    ----------
    source : np.ndarray, str or os.PathLike
        An array; a ``.npy`` file; a raw little-endian float32 ``.bin`` with its
        ``.bin.json`` sidecar (``{"num_frames", "feature_size", "shape"}``, the
        Go ports' format); or a folder of the Go audio pipeline's per-frame
        ``frame_00000.bin`` files (``[uint32 length][float32 * length]``), or
        that pipeline's output folder holding ``frames/``.
    mode : {"ave", "hubert", "wenet"}, keyword-only

    Returns
    -------
    features : np.ndarray
        float32 ``[F, D]``, C-contiguous.
    windowed : bool
        True when each row is already a frame's whole U-Net audio input
        (``D == window_size(mode)``, e.g. 8192 for ave: the Go pipeline's
        frame files); False for per-frame rows (``D == row_size(mode)``)
        that :func:`feature_windows` still has to window.

    Raises
    ------
    FeatureError
        Unreadable file, inconsistent sidecar, or a row size that fits
        neither form for the mode.
    """
    if isinstance(source, np.ndarray):
        arr, name = source, "features"
    else:
        path = Path(source)
        name = str(path)
        try:
            if path.is_dir():
                arr = _read_frame_bins(path / "frames" if (path / "frames").is_dir() else path)
            elif path.suffix == ".npy":
                arr = np.load(path, allow_pickle=False)
            elif path.suffix == ".bin":
                meta_path = path.with_name(path.name + ".json")
                raw = np.fromfile(path, dtype="<f4")
                if meta_path.is_file():
                    meta = json.loads(meta_path.read_text())
                    shape = [int(v) for v in meta.get("shape") or [meta["num_frames"], meta["feature_size"]]]
                    if int(np.prod(shape)) != raw.size:
                        raise FeatureError(f"{path}: {raw.size} floats, but {meta_path.name} says shape {shape}")
                    arr = raw.reshape(shape[0], -1)
                else:
                    arr = raw.reshape(-1, row_size(mode)) if raw.size % row_size(mode) == 0 else raw[None]
            elif not path.exists():
                raise FeatureError(f"{path}: features file not found")
            else:
                raise FeatureError(
                    f"{path}: unknown features format (expected .npy, .bin + .bin.json, or a frames folder)"
                )
        except FeatureError:
            raise
        except (OSError, ValueError, KeyError) as exc:
            raise FeatureError(f"{path}: cannot read features ({exc})") from None
    arr = np.asarray(arr, dtype=np.float32)
    if arr.ndim > 2:
        arr = arr.reshape(arr.shape[0], -1)
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise FeatureError(f"{name}: features must be [frames, size], got shape {list(arr.shape)}")
    if not np.isfinite(arr).all():
        raise FeatureError(f"{name}: features contain NaN or infinite values")
    if arr.shape[1] == row_size(mode):
        return np.ascontiguousarray(arr), False
    if arr.shape[1] == window_size(mode):
        return np.ascontiguousarray(arr), True
    raise FeatureError(
        f"{name}: {arr.shape[1]} floats per frame do not fit mode {mode!r} "
        f"(expected {row_size(mode)} per feature row or {window_size(mode)} per frame window)"
    )


def save_features(
    features: np.ndarray,
    folder: str | os.PathLike,
    *,
    mode: str = "ave",
    fps: float | None = None,
    metadata: dict | None = None,
) -> Path:
    """Write features as the Go audio pipeline does.

    ``folder/features.bin`` + ``features.bin.json`` (the rows),
    ``folder/frames/frame_00000.bin`` ... (each frame's U-Net audio window,
    ``[uint32 length][float32 * length]``) and ``folder/metadata.json``.

    Parameters
    ----------
    features : np.ndarray
        float32 ``[F, D]`` per-frame rows (``D == row_size(mode)``).
    folder : str or os.PathLike
    mode : {"ave", "hubert", "wenet"}, keyword-only
    fps : float, optional, keyword-only
        Recorded in the metadata (default: the mode's frame rate).
    metadata : dict, optional, keyword-only
        Extra entries for ``metadata.json``.

    Returns
    -------
    Path
        ``folder``.
    """
    feats = np.ascontiguousarray(features, dtype="<f4")
    if feats.ndim != 2 or feats.shape[1] != row_size(mode):
        raise FeatureError(f"features must be [frames, {row_size(mode)}] for mode {mode!r}, got {list(feats.shape)}")
    folder = Path(folder)
    frames_dir = folder / "frames"
    frames_dir.mkdir(parents=True, exist_ok=True)
    feats.tofile(folder / "features.bin")
    (folder / "features.bin.json").write_text(
        json.dumps(
            {"num_frames": int(feats.shape[0]), "feature_size": int(feats.shape[1]), "shape": list(feats.shape)},
            indent=2,
        )
    )
    step = 256
    for start in range(0, feats.shape[0], step):
        windows = feature_windows(feats, mode=mode, start=start, stop=min(start + step, feats.shape[0]))
        for j, w in enumerate(windows):
            flat = w.reshape(-1).astype("<f4")
            with open(frames_dir / f"frame_{start + j:05d}.bin", "wb") as f:
                f.write(struct.pack("<I", flat.size))
                f.write(flat.tobytes())
    meta = {
        "mode": mode,
        "fps": fps if fps is not None else FPS[mode],
        "num_frames": int(feats.shape[0]),
        "feature_size": int(feats.shape[1]),
        "window_shape": list(_mode_shape(mode)),
        **(metadata or {}),
    }
    (folder / "metadata.json").write_text(json.dumps(meta, indent=2))
    return folder


#: Precomputed features the API accepts: an array, or a file / folder :func:`load_features` reads.
FeaturesLike: TypeAlias = np.ndarray | str | os.PathLike[str]
