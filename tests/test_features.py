"""Per-frame audio windows: numerics §1.8-1.9, against a direct restatement."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import DATA, needs_data

import synctalk_fast as stf

SHAPES = {"ave": (32, 16, 16), "hubert": (32, 32, 32), "wenet": (256, 16, 32)}


def reference_window(features: np.ndarray, index: int) -> np.ndarray:
    """SyncTalk_2D's get_audio_features: rows index-8 .. index+7, zeros outside."""
    left, right = index - 8, index + 8
    rows = [features[r] if 0 <= r < len(features) else np.zeros_like(features[0]) for r in range(left, right)]
    return np.stack(rows)


@pytest.mark.parametrize("mode", list(SHAPES))
@pytest.mark.parametrize("n_rows", [1, 5, 40])
def test_feature_windows_match_reference(mode, n_rows):
    dim = int(np.prod(SHAPES[mode])) // 16
    feats = np.random.default_rng(n_rows).standard_normal((n_rows, dim)).astype(np.float32)
    got = stf.feature_windows(feats, mode=mode)
    assert got.shape == (n_rows,) + SHAPES[mode] and got.dtype == np.float32 and got.flags.c_contiguous
    for i in range(n_rows):
        assert np.array_equal(got[i], reference_window(feats, i).reshape(SHAPES[mode]))


def test_feature_windows_range():
    feats = np.random.default_rng(0).standard_normal((30, 512)).astype(np.float32)
    full = stf.feature_windows(feats)
    assert np.array_equal(stf.feature_windows(feats, start=7, stop=19), full[7:19])
    assert stf.feature_windows(feats, start=4, stop=4).shape == (0, 32, 16, 16)
    with pytest.raises(stf.FeatureError):
        stf.feature_windows(feats, start=5, stop=31)


def test_feature_windows_errors():
    with pytest.raises(stf.FeatureError, match="needs 2048"):
        stf.feature_windows(np.zeros((4, 512), np.float32), mode="hubert")
    with pytest.raises(stf.FeatureError, match="unknown mode"):
        stf.feature_windows(np.zeros((4, 512), np.float32), mode="wav2vec")
    with pytest.raises(stf.FeatureError):
        stf.feature_windows(np.zeros(512, np.float32))


def test_pad_embeddings():
    emb = np.arange(12, dtype=np.float32).reshape(3, 4)
    got = stf.pad_embeddings(emb)
    assert np.array_equal(got, np.stack([emb[0], emb[0], emb[1], emb[2], emb[2]]))
    with pytest.raises(stf.FeatureError):
        stf.pad_embeddings(np.zeros((0, 512), np.float32))


@needs_data
def test_real_go_port_features_window():
    meta = json.loads((DATA / "features" / "sanders_ave.bin.json").read_text())
    feats = np.fromfile(DATA / "features" / "sanders_ave.bin", dtype="<f4").reshape(meta["shape"])
    got = stf.feature_windows(feats, start=100, stop=104)
    for j, i in enumerate(range(100, 104)):
        assert np.array_equal(got[j], reference_window(feats, i).reshape(32, 16, 16))
