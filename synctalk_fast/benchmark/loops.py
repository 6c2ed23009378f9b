"""The loops the pipeline replaces: numerics §3 one frame at a time, on ONNX Runtime or PyTorch.

Each builder returns ``loop(n)``, which renders ``n`` frames to memory and
discards them; the network is warmed up by the builder, outside the timings.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..models import resolve_model
from ..reference import (
    reference_audio_window,
    reference_box,
    reference_indices,
    reference_landmarks,
    reference_paste,
    reference_prepare,
)
from ..runtime import SessionRequest, default_threads, get_runtime

__all__ = ["Loop", "UNetCall", "reference_loop", "naive_loop", "torch_loop"]

#: ``loop(n)``: render ``n`` frames.
Loop = Callable[[int], None]
#: ``unet(image [1, 6, 320, 320], audio [1, ...]) -> pred [1, 3, 320, 320]``, float32.
UNetCall = Callable[[np.ndarray, np.ndarray], np.ndarray]


def reference_loop(template: Path, feats: np.ndarray, unet: UNetCall) -> Loop:
    """numerics §3 one frame at a time, as the reference and the Go ports run it.

    imread, landmarks, crop + cv2.resize + mask, the U-Net at batch 1,
    cv2.resize back and paste.

    Parameters
    ----------
    template : Path
        Template folder (``full_body_img/N.jpg``, ``landmarks/N.lms``).
    feats : np.ndarray
        float32 ``[frames, 512]`` AVE features.
    unet : callable
        The U-Net at batch 1 (see :data:`UNetCall`); called once here to warm it up.
    """
    n_tpl = len(list((template / "full_body_img").glob("*.jpg")))

    def loop(n: int) -> None:
        for i, idx in enumerate(reference_indices(n_tpl, n)):
            img = cv2.imread(str(template / "full_body_img" / f"{idx}.jpg"))
            if img is None:
                raise OSError(f"cannot read {template / 'full_body_img' / f'{idx}.jpg'}")
            box = reference_box(reference_landmarks(template / "landmarks" / f"{idx}.lms"))
            pred = unet(reference_prepare(img, box)[None], reference_audio_window(feats, i))
            reference_paste(img, box, pred[0])

    loop(1)
    return loop


def naive_loop(unet_path: Path, template: Path, feats: np.ndarray, providers: Sequence[str]) -> Loop:
    """The reference loop on ONNX Runtime with its default session options."""
    sess: Any = get_runtime().open(
        str(unet_path), providers=list(providers), request=SessionRequest(threads=0, plain=True)
    )
    names = resolve_model(unet_path).roles.inputs  # role -> graph input name
    return reference_loop(
        template, feats, lambda image, audio: sess.run({names["image"]: image, names["audio"]: audio})[0]
    )


def torch_loop(state: dict[str, np.ndarray], template: Path, feats: np.ndarray) -> Loop:
    """The PyTorch reference: the same loop with the torch U-Net (CPU, all cores, inference mode).

    Needs torch (the ``bench`` extra), imported here only.
    """
    import torch

    from ..reference.torch_nets import UNet, load_numpy_state

    torch.set_num_threads(default_threads())
    net = load_numpy_state(UNet("ave"), state)

    def unet(image: np.ndarray, audio: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return net(torch.from_numpy(image), torch.from_numpy(audio)).numpy()

    return reference_loop(template, feats, unet)
