"""Fixed-seed random weights shaped like real checkpoints (no trained weights
exist here; tests, demos and benchmarks use these)."""

from __future__ import annotations

import functools

import numpy as np

from ..runtime import cpu_session
from ..shapes import AUDIO_SHAPES, IMAGE_SHAPE, MEL_SHAPE
from .networks import batch_statistics, build_unet, residual_blocks, state_dict_spec

__all__ = ["random_state_dict"]

LOGIT_STD = 1.5  # sigmoid(N(0, 1.5)): outputs spread over 0..1, rarely saturated


def _init(spec: dict[str, tuple[int, ...]], residual: list[str], rng: np.random.Generator) -> dict[str, np.ndarray]:
    state = {}
    for key, shape in spec.items():
        leaf = key.rsplit(".", 1)[-1]
        if leaf == "num_batches_tracked":
            state[key] = np.array(10000, dtype=np.int64)
        elif leaf == "running_mean":
            state[key] = rng.normal(0.0, 0.1, shape).astype(np.float32)
        elif leaf == "running_var":
            state[key] = rng.uniform(0.5, 1.5, shape).astype(np.float32)
        elif leaf == "weight" and len(shape) == 1:  # BatchNorm gamma
            state[key] = rng.uniform(0.6, 1.0, shape).astype(np.float32)
        elif leaf == "bias":
            state[key] = rng.normal(0.0, 0.05, shape).astype(np.float32)
        else:  # convolution: He-normal keeps activations O(1) through ReLUs
            fan_in = int(np.prod(shape[1:]))
            state[key] = rng.normal(0.0, np.sqrt(2.0 / fan_in), shape).astype(np.float32)
    # Damp the last BatchNorm of each residual branch (x + 0.1 f(x)), as
    # training tends to leave them: the stack keeps its scale, and the
    # network's float32 rounding stays small (about 4e-5 on the output,
    # against 2e-4 with undamped branches), so float32 implementations can be
    # compared at 1e-4.
    for prefix in residual:
        for bn in (f"{prefix}.conv.7.weight", f"{prefix}.1.weight"):  # U-Net blocks, encoder blocks
            if bn in state:
                state[bn] = (state[bn] * np.float32(0.1)).astype(state[bn].dtype)
    return state


def _sample_inputs(kind: str, mode: str, rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """Inputs shaped and scaled like real ones: smooth BGR frames in 0..1 with
    the masked copy in channels 3-5 (numerics §3.3), N(0, 1) audio features, mel
    values in [-4, 4]."""
    import cv2

    if kind == "audio_encoder":
        return {"mel": np.clip(rng.normal(-1.0, 1.5, (n, *MEL_SHAPE)), -4, 4).astype(np.float32)}
    side = IMAGE_SHAPE[1]
    frames = []
    for _ in range(n):
        coarse = rng.uniform(0.0, 1.0, (side // 16, side // 16, 3)).astype(np.float32)
        real = cv2.resize(coarse, (side, side), interpolation=cv2.INTER_CUBIC).clip(0, 1).transpose(2, 0, 1)
        masked = real.copy()
        masked[:, 5:310, 5:315] = 0.0
        frames.append(np.concatenate([real, masked]))
    audio = rng.normal(0.0, 1.0, (n, *AUDIO_SHAPES[mode])).astype(np.float32)
    return {"image": np.stack(frames).astype(np.float32), "audio": audio}


def _calibrate_output(state: dict[str, np.ndarray], mode: str, rng: np.random.Generator) -> None:
    """Rescale outc (the 1x1 conv before the sigmoid) so that the logits of a
    random frame have mean 0 and std LOGIT_STD: w' = k w, b' = k (b - m)."""
    model = build_unet(state, mode=mode)
    p = cpu_session(model.SerializeToString()).run(_sample_inputs("unet", mode, rng, 1))[0].astype(np.float64)
    p = np.clip(p, 1e-6, 1 - 1e-6)
    logits = np.log(p / (1 - p))
    # Rounded so that ONNX Runtime's last-bit differences between CPUs do not
    # change the weights.
    k = float(f"{LOGIT_STD / max(logits.std(), 1e-6):.3g}")
    m = float(f"{logits.mean():.3g}")
    state["outc.conv.weight"] = (state["outc.conv.weight"] * k).astype(np.float32)
    state["outc.conv.bias"] = ((state["outc.conv.bias"].astype(np.float64) - m) * k).astype(np.float32)


def random_state_dict(kind: str, *, mode: str = "ave", seed: int = 0) -> dict[str, np.ndarray]:
    """Random weights for every key of a checkpoint, from a fixed seed.

    Parameters
    ----------
    kind : {"unet", "audio_encoder"}
    mode : {"ave", "hubert", "wenet"}, keyword-only
        U-Net audio branch (ignored for the encoder).
    seed : int, keyword-only

    Returns
    -------
    dict of str to np.ndarray
        Exactly the keys and shapes of :func:`state_dict_spec` (float32;
        ``num_batches_tracked`` int64 scalars), BatchNorm statistics
        included: running statistics are measured on synthetic inputs shaped
        like real ones, and the U-Net's last convolution is scaled so that
        its sigmoid outputs are spread over 0..1 rather than saturated (a few
        ONNX Runtime passes on the CPU, about two seconds).
    """
    return {k: v.copy() for k, v in _random_state_dict(kind, "ave" if kind == "audio_encoder" else mode, seed).items()}


@functools.lru_cache(maxsize=8)
def _random_state_dict(kind: str, mode: str, seed: int) -> dict[str, np.ndarray]:
    spec = state_dict_spec(kind, mode=mode)
    rng = np.random.default_rng(seed)
    state = _init(spec, residual_blocks(kind, mode=mode), rng)
    # Running statistics from data, as training would leave them: every
    # BatchNorm then sees normalised activations, so no path of the network
    # fades out (with made-up statistics the audio branch barely reaches the
    # output).
    # The encoder ends at 1 x 1 pixels: its statistics need many windows.
    n = 2 if kind == "unet" else 256
    stats = batch_statistics(state, _sample_inputs(kind, mode, rng, n), kind=kind, mode=mode)
    for bn, (mean, var) in stats.items():
        state[f"{bn}.running_mean"] = mean.astype(np.float32)
        state[f"{bn}.running_var"] = var.astype(np.float32)
    if kind == "unet":
        _calibrate_output(state, mode, rng)
    return state
