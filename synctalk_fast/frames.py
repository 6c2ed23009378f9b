"""Stage 3: template frame + landmarks -> network input; prediction -> frame.

numerics §2 and §3. Frames are BGR uint8 ``[H, W, 3]`` as OpenCV reads
them; boxes are ``(x0, y0, x1, y1)``, half-open, in pixels.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from . import _backend
from .errors import BoxError, TemplateError
from .shapes import IMAGE_SHAPE

__all__ = ["Box", "BoxError", "load_landmarks", "crop_box", "clip_box", "prepare_input", "paste_back", "INPUT_SHAPE"]

Box = tuple[int, int, int, int]
INPUT_SHAPE = IMAGE_SHAPE  # the name this module has always used
# Landmark points of the mouth box (0-based): left x, right x, top y.
_LEFT, _RIGHT, _TOP = 1, 31, 52


def load_landmarks(path: str | os.PathLike[str], *, points: int | None = None) -> np.ndarray:
    """Read a ``.lms`` file: one ``"x y"`` pair of numbers per line.

    The one landmark parser of the package (templates use it too).

    Parameters
    ----------
    path : str or os.PathLike
    points : int, optional, keyword-only
        The number of points the file must have (a template's 110); any
        number when None.

    Returns
    -------
    np.ndarray
        int32 ``[points, 2]``, each value parsed as float32 and truncated
        toward zero, exactly as the reference converts them.

    Raises
    ------
    TemplateError
        (a ``ValueError``) An unreadable file, a line that is not two finite
        numbers (named with its line number), or the wrong number of points.
    """
    name = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise TemplateError(f"{name}: cannot read landmarks ({exc})") from None
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise TemplateError(f"{name}: no landmarks in the file")
    try:  # fast path; the line-by-line parse below only runs to report an error
        pts = np.array(text.split(), dtype=np.float32).reshape(len(lines), 2)
        if np.isfinite(pts).all() and (points is None or len(lines) == points):
            return pts.astype(np.int32)
    except ValueError:
        pass
    if points is not None and len(lines) != points:
        raise TemplateError(f"{name}: {len(lines)} landmark lines, expected {points}")
    pts = np.empty((len(lines), 2), dtype=np.float32)
    for i, line in enumerate(lines):
        parts = line.split()
        try:
            if len(parts) != 2:
                raise ValueError
            pts[i] = (float(parts[0]), float(parts[1]))
        except ValueError:
            raise TemplateError(f"{name}:{i + 1}: expected two numbers 'x y', got {line.strip()[:40]!r}") from None
        if not np.isfinite(pts[i]).all():
            raise TemplateError(f"{name}:{i + 1}: landmark is not a finite number ({line.strip()[:40]})")
    return pts.astype(np.int32)


def clip_box(box: Sequence[int], *, frame_shape: Sequence[int]) -> Box:
    """Cut a box to the frame, as numpy slicing ``img[y0:y1, x0:x1]`` does.

    A start below zero is clipped to 0 (numpy would wrap it around, which
    the reference never meant; it yields an empty or wrong crop there).

    Raises
    ------
    BoxError
        The clipped box is empty (zero width/height or fully outside).
    """
    x0, y0, x1, y1 = (int(v) for v in box)
    h, w = int(frame_shape[0]), int(frame_shape[1])
    cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if cx0 >= cx1 or cy0 >= cy1:
        raise BoxError(f"crop box {(x0, y0, x1, y1)} is empty or outside the {w}x{h} frame")
    return cx0, cy0, cx1, cy1


def crop_box(landmarks: np.ndarray, *, frame_shape: Sequence[int] | None = None) -> Box:
    """Mouth crop box of one template frame (numerics §2).

    ``x0 = p[1].x``, ``x1 = p[31].x``, ``y0 = p[52].y``, ``y1 = y0 + (x1 - x0)``:
    a square box, landmarks truncated toward zero through float32 first.

    Parameters
    ----------
    landmarks : np.ndarray
        ``[points >= 53, 2]`` x, y pairs (float or int), e.g. from
        :func:`load_landmarks`.
    frame_shape : (H, W[, C]), optional, keyword-only
        When given, the box is cut to the frame like numpy slicing
        (:func:`clip_box`), the size the reference pastes back.

    Returns
    -------
    tuple of int
        ``(x0, y0, x1, y1)``.

    Raises
    ------
    BoxError
        Width ``x1 - x0 <= 0``, or (with ``frame_shape``) nothing inside the frame.
    """
    lms = np.asarray(landmarks)
    if lms.ndim != 2 or lms.shape[1] != 2 or lms.shape[0] <= _TOP:
        raise BoxError(f"landmarks must be [points >= {_TOP + 1}, 2], got shape {lms.shape}")
    if lms.dtype.kind == "f":
        lms = lms.astype(np.float32).astype(np.int32)
    x0, x1, y0 = int(lms[_LEFT, 0]), int(lms[_RIGHT, 0]), int(lms[_TOP, 1])
    width = x1 - x0
    if width <= 0:
        raise BoxError(f"degenerate crop box: landmark 31 x ({x1}) is not right of landmark 1 x ({x0})")
    box = (x0, y0, x1, y0 + width)
    return clip_box(box, frame_shape=frame_shape) if frame_shape is not None else box


def _frame(frame: np.ndarray, fn: str) -> np.ndarray:
    arr = np.asarray(frame)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"{fn}: frame must be BGR uint8 [H, W, 3], got {arr.dtype} {arr.shape}")
    return arr


def prepare_input(frame: np.ndarray, box: Sequence[int], *, out: np.ndarray | None = None) -> np.ndarray:
    """Network image input of one frame (numerics §3.1-3.4), fused in one pass.

    crop -> bicubic 328 x 328 (OpenCV INTER_CUBIC semantics) -> inner
    ``[4:324, 4:324]`` -> masked copy -> / 255 -> CHW.

    Parameters
    ----------
    frame : np.ndarray
        BGR uint8 ``[H, W, 3]`` (any strides; non-contiguous is copied).
    box : (x0, y0, x1, y1)
        Crop box; cut to the frame as :func:`clip_box` does.
    out : np.ndarray, optional, keyword-only
        float32 ``[6, 320, 320]`` C-contiguous destination, e.g. ``batch[i]``
        of a ``[B, 6, 320, 320]`` array, written in place.

    Returns
    -------
    np.ndarray
        float32 ``[6, 320, 320]`` (``out`` when given): channels 0-2 the BGR
        crop, 3-5 the same with the mouth rectangle x 5..314, y 5..309 zeroed.
    """
    arr = _frame(frame, "prepare_input")
    x0, y0, x1, y1 = clip_box(box, frame_shape=arr.shape)
    if out is None:
        out = np.empty(INPUT_SHAPE, dtype=np.float32)
    _backend.kernels.prepare_input(arr, x0, y0, x1, y1, out)
    return out


def paste_back(
    frame: np.ndarray,
    box: Sequence[int],
    pred: np.ndarray,
    *,
    out: np.ndarray | None = None,
    feather: int = 0,
) -> np.ndarray:
    """Put a network prediction back into its frame (numerics §3.6-3.7).

    ``uint8(pred * 255)`` by truncation -> into the 328 crop (whose 4-pixel
    border is the resized original) -> bicubic back to the box size -> paste.

    Parameters
    ----------
    frame : np.ndarray
        The template frame, BGR uint8 ``[H, W, 3]``; not modified unless it is
        also ``out``.
    box : (x0, y0, x1, y1)
        The crop box the input was prepared with; cut to the frame.
    pred : np.ndarray
        float32 ``[3, 320, 320]`` U-Net output in 0..1 (BGR).
    out : np.ndarray, optional, keyword-only
        uint8 ``[H, W, 3]`` C-contiguous destination; may be ``frame`` itself
        to paste in place.
    feather : int, keyword-only
        0 (default) is the reference's hard paste. ``k > 0`` blends the ``k``
        outermost pixels of the box with the original frame, weight rising
        linearly inward, which hides a visible box edge.

    Returns
    -------
    np.ndarray
        uint8 ``[H, W, 3]``: the frame with the box replaced (``out`` if given).
    """
    arr = _frame(frame, "paste_back")
    x0, y0, x1, y1 = clip_box(box, frame_shape=arr.shape)
    feather = int(feather)
    if feather < 0:
        raise ValueError(f"paste_back: feather must be >= 0, got {feather}")
    if out is None:
        out = np.array(arr, dtype=np.uint8, order="C", copy=True)
    elif out is not arr:
        if not (isinstance(out, np.ndarray) and out.shape == arr.shape and out.dtype == np.uint8):
            raise ValueError(f"paste_back: out must be uint8 {arr.shape}")
        np.copyto(out, arr)
    _backend.kernels.paste_back(out, x0, y0, x1, y1, pred, feather)
    return out
