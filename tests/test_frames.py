"""Frame kernels against numpy + cv2 restatements of numerics §2-3."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from helpers import needs_data, read_template_frame
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import synctalk_fast as stf
from synctalk_fast import _backend
from synctalk_fast.reference import reference_paste, reference_prepare

REAL_FRAMES = [0, 137, 261, 522]


def _pred(seed: int) -> np.ndarray:
    # Spread over 0..1 with exact 0 and 1 present, like a sigmoid output.
    p = np.random.default_rng(seed).random((3, 320, 320), dtype=np.float32)
    p[0, 0, :4] = [0.0, 1.0, 0.5, 254.999 / 255]
    return p


def _synthetic_frame(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = cv2.resize(rng.integers(0, 256, (h // 8 + 2, w // 8 + 2, 3), dtype=np.uint8), (w, h))
    return np.clip(base.astype(int) + rng.integers(-20, 21, (h, w, 3)), 0, 255).astype(np.uint8)


# Edge cases on a 720 x 1280 frame: (name, box before clipping).
EDGE_BOXES = [
    ("touch_left", (0, 300, 182, 482)),
    ("touch_top", (500, 0, 682, 182)),
    ("touch_right", (1098, 300, 1280, 482)),
    ("touch_bottom", (500, 538, 682, 720)),
    ("past_right", (1200, 300, 1382, 482)),
    ("past_bottom", (500, 650, 682, 832)),
    ("past_left", (-40, 300, 142, 482)),
    ("corner_past_both", (1250, 700, 1310, 760)),
    ("box_8px", (600, 300, 608, 308)),
    ("box_600px", (300, 60, 900, 660)),
    ("odd_sizes", (401, 203, 458, 260)),
    ("box_1px", (10, 10, 11, 11)),
]


# --- crop_box --------------------------------------------------------------


@needs_data
def test_crop_box_from_real_landmarks():
    img, lms = read_template_frame(0)
    x0, y0, x1, y1 = stf.crop_box(lms)
    assert (x0, x1, y0) == (lms[1, 0], lms[31, 0], lms[52, 1])
    assert y1 - y0 == x1 - x0 > 100
    assert stf.crop_box(lms, frame_shape=img.shape) == (x0, y0, x1, y1)


def test_crop_box_truncates_and_clips():
    lms = np.zeros((110, 2), np.float32)
    lms[1] = (100.9, 0)
    lms[31] = (300.7, 0)
    lms[52] = (0, 650.99)
    assert stf.crop_box(lms) == (100, 650, 300, 850)
    assert stf.crop_box(lms, frame_shape=(720, 1280, 3)) == (100, 650, 300, 720)
    lms[1, 0] = -3.7  # truncation toward zero, then clipped at 0
    assert stf.crop_box(lms, frame_shape=(720, 1280)) == (0, 650, 300, 720)


@pytest.mark.parametrize(
    "left,right,top,shape",
    [(300, 300, 10, None), (300, 200, 10, None), (2000, 2100, 10, (720, 1280)), (10, 50, 900, (720, 1280))],
)
def test_crop_box_degenerate_or_outside_is_an_error(left, right, top, shape):
    lms = np.zeros((110, 2), np.float32)
    lms[1, 0], lms[31, 0], lms[52, 1] = left, right, top
    with pytest.raises(stf.BoxError):
        stf.crop_box(lms, frame_shape=shape)


def test_crop_box_needs_enough_points():
    with pytest.raises(stf.BoxError):
        stf.crop_box(np.zeros((40, 2)))


# --- prepare_input / paste_back vs the reference -------------------------


def _check_against_reference(img, box, seed, exact):
    clipped = stf.clip_box(box, frame_shape=img.shape)
    got = stf.prepare_input(img, box)
    want = reference_prepare(img, clipped)
    assert got.shape == (6, 320, 320) and got.dtype == np.float32 and got.flags.c_contiguous
    diff = np.abs(got - want).max()
    pred = _pred(seed)
    pasted = stf.paste_back(img, box, pred)
    ref = reference_paste(img, clipped, pred)
    assert pasted.dtype == np.uint8 and pasted.shape == img.shape
    pdiff = np.abs(pasted.astype(int) - ref)
    x0, y0, x1, y1 = clipped
    outside = np.ones(img.shape[:2], bool)
    outside[y0:y1, x0:x1] = False
    assert np.array_equal(pasted[outside], img[outside])  # untouched outside the box
    if exact:
        assert diff == 0 and pdiff.max() == 0
    else:  # default OpenCV takes SIMD/IPP paths: 1 level per resize (numerics §3)
        assert diff <= 1 / 255 + 1e-7
        assert pdiff.max() <= 2 and pdiff.mean() <= 0.05


@needs_data
@pytest.mark.parametrize("k", REAL_FRAMES)
def test_real_frames_exact_vs_scalar_opencv(backend, scalar_cv2, k):
    img, lms = read_template_frame(k)
    _check_against_reference(img, stf.crop_box(lms, frame_shape=img.shape), k, exact=True)


@needs_data
@pytest.mark.parametrize("k", REAL_FRAMES)
def test_real_frames_vs_default_opencv(backend, k):
    img, lms = read_template_frame(k)
    _check_against_reference(img, stf.crop_box(lms, frame_shape=img.shape), k, exact=backend == "numpy")


@pytest.mark.parametrize("name,box", EDGE_BOXES, ids=[b[0] for b in EDGE_BOXES])
def test_edge_boxes_exact_vs_scalar_opencv(backend, scalar_cv2, name, box):
    _check_against_reference(_synthetic_frame(720, 1280, seed=len(name)), box, len(name), exact=True)


@pytest.mark.parametrize("size", [(8, 9), (182, 182), (328, 328), (57, 91), (600, 601), (3, 700)])
def test_resize_cubic_bit_exact_vs_scalar_opencv(backend, scalar_cv2, size):
    src = _synthetic_frame(97, 131, seed=size[0])
    for s in (src, np.ascontiguousarray(src[:, :, 1])):
        got = _backend.kernels.resize_cubic(s, size[1], size[0])
        assert np.array_equal(got, cv2.resize(s, (size[1], size[0]), interpolation=cv2.INTER_CUBIC))


def test_box_fully_outside_is_an_error(backend):
    img = _synthetic_frame(64, 64)
    with pytest.raises(stf.BoxError):
        stf.prepare_input(img, (70, 0, 90, 20))
    with pytest.raises(stf.BoxError):
        stf.paste_back(img, (10, 10, 10, 30), _pred(0))


# --- out=, in-place, feather ---------------------------------------------


def test_prepare_input_writes_into_a_batch_slot(backend):
    img = _synthetic_frame(200, 300)
    batch = np.full((3, 6, 320, 320), 7.0, np.float32)
    res = stf.prepare_input(img, (50, 20, 150, 120), out=batch[1])
    assert res is batch[1] or np.shares_memory(res, batch)
    assert np.array_equal(batch[1], stf.prepare_input(img, (50, 20, 150, 120)))
    assert (batch[0] == 7).all() and (batch[2] == 7).all()


def test_paste_back_out_and_in_place(backend):
    img = _synthetic_frame(200, 300)
    box, pred = (50, 20, 150, 120), _pred(3)
    want = stf.paste_back(img, box, pred)
    assert not np.array_equal(want, img)  # frame itself untouched, a new array returned
    assert np.array_equal(img, _synthetic_frame(200, 300))
    out = np.zeros_like(img)
    assert stf.paste_back(img, box, pred, out=out) is out and np.array_equal(out, want)
    inplace = img.copy()
    assert stf.paste_back(inplace, box, pred, out=inplace) is inplace and np.array_equal(inplace, want)


@pytest.mark.parametrize("k", [1, 4, 12])
def test_feather_blend(backend, scalar_cv2, k):
    img = _synthetic_frame(240, 320)
    box, pred = (40, 30, 200, 190), _pred(k)
    hard = stf.paste_back(img, box, pred).astype(int)
    soft = stf.paste_back(img, box, pred, feather=k).astype(int)
    x0, y0, x1, y1 = box
    h, w = y1 - y0, x1 - x0
    d = np.minimum(
        np.minimum.outer(np.minimum(np.arange(h), np.arange(h)[::-1]), np.minimum(np.arange(w), np.arange(w)[::-1])), k
    )
    a = (d + 1)[:, :, None]
    old = img[y0:y1, x0:x1].astype(int)
    expected = (hard[y0:y1, x0:x1] * a + old * (k + 1 - a) + (k + 1) // 2) // (k + 1)
    assert np.array_equal(soft[y0:y1, x0:x1], expected)
    assert np.array_equal(soft[y0 + k : y1 - k, x0 + k : x1 - k], hard[y0 + k : y1 - k, x0 + k : x1 - k])
    assert np.array_equal(stf.paste_back(img, box, pred, feather=0), hard)
    with pytest.raises(ValueError):
        stf.paste_back(img, box, pred, feather=-1)


# --- shapes, dtypes and strides ------------------------------------------


@pytest.mark.parametrize(
    "frame",
    [np.zeros((64, 64), np.uint8), np.zeros((64, 64, 4), np.uint8), np.zeros((64, 64, 3), np.float32)],
    ids=["gray", "bgra", "float"],
)
def test_bad_frames_are_value_errors(backend, frame):
    with pytest.raises(ValueError):
        stf.prepare_input(frame, (0, 0, 32, 32))
    with pytest.raises(ValueError):
        stf.paste_back(frame, (0, 0, 32, 32), _pred(0))


def test_bad_pred_and_out_are_value_errors(backend):
    img = _synthetic_frame(64, 64)
    with pytest.raises(ValueError):
        stf.paste_back(img, (0, 0, 32, 32), np.zeros((320, 320, 3), np.float32))
    for out in [
        np.zeros((6, 320, 320), np.float64),
        np.zeros((6, 320, 321), np.float32),
        np.zeros((6, 320, 640), np.float32)[:, :, ::2],
    ]:
        with pytest.raises(ValueError):
            stf.prepare_input(img, (0, 0, 32, 32), out=out)
    with pytest.raises(ValueError):
        stf.paste_back(img, (0, 0, 32, 32), _pred(0), out=np.zeros((64, 64, 3), np.float32))


def test_kernel_in_place_buffers_must_be_contiguous(backend):
    img = _synthetic_frame(64, 64)
    with pytest.raises(ValueError):
        _backend.kernels.paste_back(np.zeros((64, 128, 3), np.uint8)[:, ::2], 0, 0, 32, 32, _pred(0), 0)
    with pytest.raises(ValueError):
        _backend.kernels.prepare_input(img, 0, 0, 32, 32, np.zeros((6, 320, 320), np.float32).T)
    with pytest.raises(ValueError):  # box outside the frame, at the kernel level
        _backend.kernels.prepare_input(img, 0, 0, 65, 32, np.zeros((6, 320, 320), np.float32))


@st.composite
def _strided_case(draw):
    h = draw(st.integers(9, 48))
    w = draw(st.integers(9, 48))
    sy = draw(st.sampled_from([1, 2, -1]))
    sx = draw(st.sampled_from([1, 3, -1]))
    order = draw(st.sampled_from(["C", "F"]))
    x0 = draw(st.integers(0, w - 2))
    y0 = draw(st.integers(0, h - 2))
    x1 = draw(st.integers(x0 + 1, w + 5))
    y1 = draw(st.integers(y0 + 1, h + 5))
    seed = draw(st.integers(0, 2**16))
    return h, w, sy, sx, order, (x0, y0, x1, y1), seed


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=_strided_case())
def test_non_contiguous_frames_read_correctly(backend, case):
    h, w, sy, sx, order, box, seed = case
    big = np.asarray(_synthetic_frame(h * abs(sy), w * abs(sx), seed=seed), order=order)
    view = big[::sy, ::sx]
    dense = np.ascontiguousarray(view)
    assert np.array_equal(stf.prepare_input(view, box), stf.prepare_input(dense, box))
    pred = _pred(seed)
    assert np.array_equal(stf.paste_back(view, box, pred), stf.paste_back(dense, box, pred))


def test_one_landmark_parser_for_files_and_templates(tmp_path, template_dir):
    """load_landmarks is the parser templates use: same values, same errors (with line numbers)."""
    import shutil

    from synctalk_fast import Template, load_landmarks
    from synctalk_fast.errors import TemplateError

    good = tmp_path / "good.lms"
    good.write_text("1.9 2.5\n-3.7 4\n\n")
    assert load_landmarks(good).tolist() == [[1, 2], [-3, 4]]
    with pytest.raises(TemplateError, match="expected 3"):
        load_landmarks(good, points=3)
    bad = tmp_path / "bad.lms"
    bad.write_text("1 2\n3 x\n")
    with pytest.raises(TemplateError, match=r"bad.lms:2: expected two numbers"):
        load_landmarks(bad)
    (tmp_path / "nan.lms").write_text("1 2\nnan 3\n")
    with pytest.raises(TemplateError, match=r"nan.lms:2: landmark is not a finite number"):
        load_landmarks(tmp_path / "nan.lms")
    (tmp_path / "empty.lms").write_text("\n")
    with pytest.raises(ValueError, match="no landmarks"):
        load_landmarks(tmp_path / "empty.lms")

    tpl = Template(template_dir)
    assert np.array_equal(tpl.landmarks[0], load_landmarks(template_dir / "landmarks" / "0.lms", points=110))
    broken = tmp_path / "tpl"
    shutil.copytree(template_dir, broken)
    lines = (broken / "landmarks" / "1.lms").read_text().splitlines()
    lines[4] = "12 abc"
    (broken / "landmarks" / "1.lms").write_text("\n".join(lines) + "\n")
    with pytest.raises(TemplateError, match=r"1.lms:5: expected two numbers"):
        Template(broken)
