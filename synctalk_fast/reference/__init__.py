"""The SyncTalk_2D reference computations, restated: test oracles and the
benchmark's baselines. Nothing in the pipeline imports this package.

Written the way the reference Python code does them (scipy.signal.lfilter
+ librosa for audio; numpy + cv2 for frames, one frame at a time; PyTorch
networks in :mod:`synctalk_fast.reference.torch_nets`), never from this
package's kernels. The numpy backend is tested against these, not used as
one. librosa, scipy and torch are imported on use (test / bench extras).
"""

from __future__ import annotations

import cv2
import numpy as np


def reference_mel(wav: np.ndarray) -> np.ndarray:
    """numerics §1.2-1.5 as the Wav2Lip/SyncTalk audio.py computes it (float64)."""
    import librosa
    import scipy.signal

    y = scipy.signal.lfilter([1, -0.97], [1], wav)  # float64, like the reference
    D = librosa.stft(y=y, n_fft=800, hop_length=200, win_length=800)
    basis = librosa.filters.mel(sr=16000, n_fft=800, n_mels=80, fmin=55, fmax=7600)
    S = 20 * np.log10(np.maximum(np.exp(-100 / 20 * np.log(10)), np.dot(basis, np.abs(D)))) - 20
    return np.clip((2 * 4) * ((S - -100) / 100) - 4, -4, 4)


def reference_prepare(img: np.ndarray, box) -> np.ndarray:
    """numerics §3.1-3.4: the reference's crop, resize, window, mask, /255."""
    xmin, ymin, xmax, ymax = box
    crop_img = img[ymin:ymax, xmin:xmax]
    crop_img = cv2.resize(crop_img, (328, 328), interpolation=cv2.INTER_CUBIC)
    img_real_ex = crop_img[4:324, 4:324].copy()
    img_real_ex_ori = img_real_ex.copy()
    img_masked = cv2.rectangle(img_real_ex_ori, (5, 5, 310, 305), (0, 0, 0), -1)
    img_masked = img_masked.transpose(2, 0, 1).astype(np.float32)
    img_real_ex = img_real_ex.transpose(2, 0, 1).astype(np.float32)
    return np.concatenate([img_real_ex / 255.0, img_masked / 255.0], axis=0)


def reference_paste(img: np.ndarray, box, pred_chw: np.ndarray) -> np.ndarray:
    """numerics §3.6-3.7: truncation to uint8, into the 328 crop, resize back, paste."""
    img = img.copy()
    xmin, ymin, xmax, ymax = box
    crop_img = img[ymin:ymax, xmin:xmax]
    h, w = crop_img.shape[:2]
    crop_img = cv2.resize(crop_img, (328, 328), interpolation=cv2.INTER_CUBIC)
    crop_img_ori = crop_img.copy()
    pred = pred_chw.transpose(1, 2, 0) * 255
    pred = np.array(pred, dtype=np.uint8)
    crop_img_ori[4:324, 4:324] = pred
    crop_img_ori = cv2.resize(crop_img_ori, (w, h), interpolation=cv2.INTER_CUBIC)
    img[ymin:ymax, xmin:xmax] = crop_img_ori
    return img


def reference_box(lms: np.ndarray) -> tuple[int, int, int, int]:
    """numerics §2: the crop box from int32 landmarks [110, 2] (points 1, 31, 52)."""
    xmin, ymin, xmax = int(lms[1][0]), int(lms[52][1]), int(lms[31][0])
    return xmin, ymin, xmax, ymin + (xmax - xmin)


def reference_landmarks(path) -> np.ndarray:
    """A ``.lms`` file as the reference reads it: float32 truncated to int32."""
    with open(path, encoding="utf-8") as f:
        return np.array([ln.split() for ln in f.read().splitlines() if ln.strip()], dtype=np.float32).astype(np.int32)


def reference_indices(n_template: int, n_frames: int):
    """numerics §2: the template frame of each output frame, by the reference's loop."""
    idx, step = 0, 0
    for _ in range(n_frames):
        if idx > n_template - 2:
            step = -1
        if idx < 1:
            step = 1
        idx += step
        yield idx


def reference_audio_window(feats: np.ndarray, i: int) -> np.ndarray:
    """numerics §1.9 (ave): rows i-8 .. i+7 of the features, zeros outside, as [1, 32, 16, 16]."""
    rows = [feats[r] if 0 <= r < len(feats) else np.zeros_like(feats[0]) for r in range(i - 8, i + 8)]
    return np.stack(rows).reshape(1, 32, 16, 16).astype(np.float32)
