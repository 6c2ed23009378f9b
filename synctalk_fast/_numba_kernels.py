"""Numba twins of the compiled kernels in ``synctalk_fast._core``.

Same names, signatures, results and ValueErrors as the C++ core. ``rfft`` and
``mel_spectrogram`` repeat ``fft.hpp`` / ``mel.hpp`` operation for operation
in float64; ``resize_cubic``, ``prepare_input`` and ``paste_back`` are
bit-exact with ``resize.hpp`` / ``frame.hpp``, i.e. with OpenCV's INTER_CUBIC
under ``cv2.setUseOptimized(False)``.

Layout: images are C-contiguous HWC uint8 (frames BGR); the kernels see them
as 2-D ``[H, W * C]`` rows. Network tensors are C-contiguous CHW float32.

Ownership: inputs are converted like pybind11's ``c_style | forcecast`` (a
copy only when needed) and only read. ``prepare_input``'s ``out`` and
``paste_back``'s ``frame`` are written in place, so they must already be
writable C-contiguous arrays of the exact dtype and shape. Per-size tables
(FFT plans, cubic taps, Hann window, mel bands) are built once, cached and
read-only, so threads share them safely.

GIL: every kernel is ``njit(nogil=True)``; the wrappers hold the GIL only to
validate and look up tables, so frames may be processed from worker threads
in parallel. No kernel uses fastmath: like the C++ build
(``-ffp-contract=off``) nothing fuses multiply-adds, which the bit-exact
paths rely on.
"""

from __future__ import annotations

import functools
import math
import operator

import numba
import numpy as np

from ._filters import HOP, MIN_LEVEL, N_FFT, N_MELS, PREEMPHASIS, mel_filterbank
from ._validate import check_box, check_frame, check_writable

__all__ = ["mel_filterbank", "mel_spectrogram", "paste_back", "prepare_input", "resize_cubic", "rfft"]

_njit = numba.njit(nogil=True, cache=True)

_CROP = 328
_INNER = 320
_BORDER = 4
_MASK_X0, _MASK_X1, _MASK_Y0, _MASK_Y1 = 5, 315, 5, 310


# ---------------------------------------------------------------- FFT (fft.hpp)


@_njit
def _cmul(a, b):
    return complex(a.real * b.real - a.imag * b.imag, a.real * b.imag + a.imag * b.real)


@_njit
def _neg_i(a):
    return complex(a.imag, -a.real)


@_njit
def _scale(s, a):
    return complex(s * a.real, s * a.imag)


@_njit
def _unit_root(k, n):
    a = -2.0 * np.pi * k / n
    return complex(math.cos(a), math.sin(a))


@_njit
def _radix2(a, b, tw, L, S):
    step = S * L
    for j in range(S):
        for k in range(L):
            i = j * L + k
            o = j * 2 * L + k
            a0 = a[i]
            a1 = _cmul(a[i + step], tw[k])
            b[o] = a0 + a1
            b[o + L] = a0 - a1


@_njit
def _radix3(a, b, tw, L, S):
    s = 0.86602540378443864676
    step = S * L
    for j in range(S):
        for k in range(L):
            i = j * L + k
            o = j * 3 * L + k
            a0 = a[i]
            a1 = _cmul(a[i + step], tw[2 * k])
            a2 = _cmul(a[i + 2 * step], tw[2 * k + 1])
            t = a1 + a2
            m = a0 - _scale(0.5, t)
            d = _neg_i(_scale(s, a1 - a2))
            b[o] = a0 + t
            b[o + L] = m + d
            b[o + 2 * L] = m - d


@_njit
def _radix4(a, b, tw, L, S):
    step = S * L
    for j in range(S):
        for k in range(L):
            i = j * L + k
            o = j * 4 * L + k
            a0 = a[i]
            a1 = _cmul(a[i + step], tw[3 * k])
            a2 = _cmul(a[i + 2 * step], tw[3 * k + 1])
            a3 = _cmul(a[i + 3 * step], tw[3 * k + 2])
            t0 = a0 + a2
            t1 = a0 - a2
            t2 = a1 + a3
            t3 = _neg_i(a1 - a3)
            b[o] = t0 + t2
            b[o + L] = t1 + t3
            b[o + 2 * L] = t0 - t2
            b[o + 3 * L] = t1 - t3


@_njit
def _radix5(a, b, tw, L, S):
    c1, c2 = 0.30901699437494742410, -0.80901699437494742410
    s1, s2 = 0.95105651629515357212, 0.58778525229247312917
    step = S * L
    for j in range(S):
        for k in range(L):
            i = j * L + k
            o = j * 5 * L + k
            a0 = a[i]
            a1 = _cmul(a[i + step], tw[4 * k])
            a2 = _cmul(a[i + 2 * step], tw[4 * k + 1])
            a3 = _cmul(a[i + 3 * step], tw[4 * k + 2])
            a4 = _cmul(a[i + 4 * step], tw[4 * k + 3])
            t1 = a1 + a4
            t2 = a2 + a3
            d1 = a1 - a4
            d2 = a2 - a3
            m1 = a0 + _scale(c1, t1) + _scale(c2, t2)
            m2 = a0 + _scale(c2, t1) + _scale(c1, t2)
            n1 = _neg_i(_scale(s1, d1) + _scale(s2, d2))
            n2 = _neg_i(_scale(s2, d1) - _scale(s1, d2))
            b[o] = a0 + t1 + t2
            b[o + L] = m1 + n1
            b[o + 2 * L] = m2 + n2
            b[o + 3 * L] = m2 - n2
            b[o + 4 * L] = m1 - n1


@_njit
def _cfft(z, work, radices, tw):
    """Stockham complex FFT of z in place (work: scratch of the same size)."""
    n = z.size
    src, dst = z, work
    L = 1
    ofs = 0
    for p in radices:
        S = n // (L * p)
        t = tw[ofs : ofs + L * (p - 1)]
        if p == 2:
            _radix2(src, dst, t, L, S)
        elif p == 3:
            _radix3(src, dst, t, L, S)
        elif p == 4:
            _radix4(src, dst, t, L, S)
        else:
            _radix5(src, dst, t, L, S)
        ofs += L * (p - 1)
        L *= p
        src, dst = dst, src
    if radices.size % 2 == 1:
        z[:] = work


@_njit
def _rfft_into(x, X, z, work, radices, tw, post):
    """X[: n//2 + 1] = rfft(x); z, work: scratch of the complex length."""
    n = x.size
    if n % 2 == 1:
        for i in range(n):
            z[i] = complex(x[i], 0.0)
        _cfft(z, work, radices, tw)
        for k in range(n // 2 + 1):
            X[k] = z[k]
        return
    m = n // 2
    for i in range(m):
        z[i] = complex(x[2 * i], x[2 * i + 1])
    _cfft(z, work, radices, tw)
    for k in range(m + 1):
        zk = z[k % m]
        zm = z[(m - k) % m]
        zc = complex(zm.real, -zm.imag)
        e = _scale(0.5, zk + zc)
        o = _neg_i(_scale(0.5, zk - zc))
        X[k] = e + _cmul(post[k], o)


@_njit
def _fft_tables(radices, n, half):
    m = n // 2 if half else n
    tw = np.empty(m, np.complex128)
    count = 0
    L = 1
    for p in radices:
        Lp = L * p
        for k1 in range(L):
            for r in range(1, p):
                tw[count] = _unit_root(r * k1, Lp)
                count += 1
        L = Lp
    post = np.empty(m + 1 if half else 0, np.complex128)
    for k in range(post.size):
        post[k] = _unit_root(k, n)
    return tw[:count].copy(), post


@functools.lru_cache(maxsize=64)
def _fft_plan(n: int):
    half = n % 2 == 0
    rest = n // 2 if half else n
    radices = []
    for p in (4, 2, 3, 5):
        while rest % p == 0:
            radices.append(p)
            rest //= p
    if rest != 1:
        raise ValueError(f"rfft: FFT length {n} has a prime factor other than 2, 3, 5")
    factors = np.array(radices, dtype=np.int64)
    tw, post = _fft_tables(factors, n, half)
    for a in (factors, tw, post):
        a.flags.writeable = False
    return factors, tw, post


@_njit
def _rfft_kernel(x, radices, tw, post):
    n = x.size
    m = n // 2 if n % 2 == 0 else n
    X = np.empty(n // 2 + 1, np.complex128)
    z = np.empty(m, np.complex128)
    work = np.empty(m, np.complex128)
    _rfft_into(x, X, z, work, radices, tw, post)
    return X


def rfft(x) -> np.ndarray:
    """Real FFT of a float64 [n] signal (n with prime factors 2, 3, 5) -> complex128 [n//2 + 1]."""
    x = np.asarray(x, dtype=np.float64, order="C")
    if x.ndim != 1:
        raise ValueError(f"rfft: x must be 1-D, got ndim={x.ndim}")
    if x.size == 0:
        raise ValueError("rfft: x must not be empty")
    return _rfft_kernel(x, *_fft_plan(x.size))


# ---------------------------------------------------------- log-mel (mel.hpp)


@functools.lru_cache(maxsize=1)
def _mel_plan():
    window = np.array([0.5 - 0.5 * math.cos(2.0 * math.pi * i / N_FFT) for i in range(N_FFT)])
    fb = mel_filterbank().astype(np.float64)
    lo = np.empty(N_MELS, np.int64)
    hi = np.empty(N_MELS, np.int64)
    ofs = np.empty(N_MELS, np.int64)
    weights = []
    count = 0
    for m in range(N_MELS):
        nz = np.flatnonzero(fb[m])
        lo[m], hi[m] = (nz[0], nz[-1] + 1) if nz.size else (fb.shape[1], fb.shape[1])
        ofs[m] = count
        weights.append(fb[m, lo[m] : hi[m]])
        count += hi[m] - lo[m]
    tables = (window, lo, hi, ofs, np.concatenate(weights)) + _fft_plan(N_FFT)
    for a in tables:
        a.flags.writeable = False
    return tables


@_njit
def _mel_kernel(wav, window, lo, hi, ofs, weights, radices, tw, post, min_level):
    n = wav.size
    T = 1 + n // HOP
    out = np.empty((N_MELS, T), np.float32)
    pad = N_FFT // 2
    bins = N_FFT // 2 + 1
    frame = np.empty(N_FFT, np.float64)
    X = np.empty(bins, np.complex128)
    z = np.empty(N_FFT // 2, np.complex128)
    work = np.empty(N_FFT // 2, np.complex128)
    mag = np.empty(bins, np.float64)
    for t in range(T):
        base = t * HOP - pad
        for i in range(N_FFT):
            j = base + i
            y = 0.0
            if j >= 0 and j < n:
                y = np.float64(wav[j])
                if j > 0:
                    y -= PREEMPHASIS * np.float64(wav[j - 1])
            frame[i] = y * window[i]
        _rfft_into(frame, X, z, work, radices, tw, post)
        for k in range(bins):
            mag[k] = math.sqrt(X[k].real * X[k].real + X[k].imag * X[k].imag)
        for m in range(N_MELS):
            acc = 0.0
            w = ofs[m] - lo[m]
            for k in range(lo[m], hi[m]):
                acc += weights[w + k] * mag[k]
            S = 20.0 * math.log10(max(min_level, acc)) - 20.0
            v = 8.0 * ((S + 100.0) / 100.0) - 4.0
            out[m, t] = min(4.0, max(-4.0, v))
    return out


def mel_spectrogram(wav, n_threads: int = 0) -> np.ndarray:
    """numerics §1.2-1.5 log-mel of float32 [n] audio at 16 kHz -> float32 [80, 1 + n//200].

    ``n_threads`` is accepted for signature parity and ignored (one thread).
    """
    operator.index(n_threads)
    wav = np.asarray(wav, dtype=np.float32, order="C")
    if wav.ndim != 1:
        raise ValueError(f"mel_spectrogram: wav must be 1-D float32 [n], got ndim={wav.ndim}")
    return _mel_kernel(wav, *_mel_plan(), MIN_LEVEL)


# ------------------------------------------------------ bicubic (resize.hpp)


@functools.lru_cache(maxsize=1024)
def _cubic_taps(src: int, dst: int):
    """Clamped source indices (int64) and int16 weights, 4 per output, flat."""
    f32 = np.float32
    A, one = f32(-0.75), f32(1)
    scale = 1.0 / (dst / src)
    fx = ((np.arange(dst, dtype=np.float64) + 0.5) * scale - 0.5).astype(np.float32)
    sx = np.floor(fx)
    fx = fx - sx
    fx1, fxm = fx + one, one - fx
    c = np.empty((dst, 4), np.float32)
    c[:, 0] = ((A * fx1 - f32(5) * A) * fx1 + f32(8) * A) * fx1 - f32(4) * A
    c[:, 1] = ((A + f32(2)) * fx - (A + f32(3))) * fx * fx + one
    c[:, 2] = ((A + f32(2)) * fxm - (A + f32(3))) * fxm * fxm + one
    c[:, 3] = one - c[:, 0] - c[:, 1] - c[:, 2]
    w = np.clip(np.rint(c * f32(2048)), -32768, 32767).astype(np.int16).ravel()
    idx = np.clip(sx.astype(np.int64)[:, None] - 1 + np.arange(4), 0, src - 1).ravel()
    idx.flags.writeable = False
    w.flags.writeable = False
    return idx, w


@_njit
def _hrows(src, y0, x0, cn, tx_idx, tx_w, d0, d1, r0, r1):
    """int32 [r1 - r0 + 1, (d1 - d0) * cn]: horizontal sums of source rows
    y0 + [r0, r1] for output columns [d0, d1); source column 0 is x0."""
    out = np.empty((r1 - r0 + 1, (d1 - d0) * cn), np.int32)
    for r in range(r0, r1 + 1):
        row = src[y0 + r]
        o = out[r - r0]
        j = 0
        for d in range(d0, d1):
            i0 = (x0 + tx_idx[4 * d]) * cn
            i1 = (x0 + tx_idx[4 * d + 1]) * cn
            i2 = (x0 + tx_idx[4 * d + 2]) * cn
            i3 = (x0 + tx_idx[4 * d + 3]) * cn
            w0 = np.int64(tx_w[4 * d])
            w1 = np.int64(tx_w[4 * d + 1])
            w2 = np.int64(tx_w[4 * d + 2])
            w3 = np.int64(tx_w[4 * d + 3])
            for c in range(cn):
                o[j] = row[i0 + c] * w0 + row[i1 + c] * w1 + row[i2 + c] * w2 + row[i3 + c] * w3
                j += 1
    return out


@_njit
def _vrow(h, r0, ty_idx, ty_w, d, first, row_values, dst):
    """Output row d from the sums h (rows from r0) into dst. The cached values
    start at value first of a destination row of row_values values: those
    below row_values // 8 * 8 take OpenCV's float32 path, the rest the
    integer one."""
    s0 = h[ty_idx[4 * d] - r0]
    s1 = h[ty_idx[4 * d + 1] - r0]
    s2 = h[ty_idx[4 * d + 2] - r0]
    s3 = h[ty_idx[4 * d + 3] - r0]
    w0 = np.int64(ty_w[4 * d])
    w1 = np.int64(ty_w[4 * d + 1])
    w2 = np.int64(ty_w[4 * d + 2])
    w3 = np.int64(ty_w[4 * d + 3])
    unit = np.float32(1.0 / (1 << 22))
    b0 = np.float32(w0) * unit
    b1 = np.float32(w1) * unit
    b2 = np.float32(w2) * unit
    b3 = np.float32(w3) * unit
    magic = np.float32(12582912.0)
    n = h.shape[1]
    vec_end = row_values // 8 * 8
    n_float = min(n, vec_end - first) if vec_end > first else 0
    for i in range(n_float):
        r = np.float32(s3[i]) * b3
        r = np.float32(s2[i]) * b2 + r
        r = np.float32(s1[i]) * b1 + r
        r = np.float32(s0[i]) * b0 + r
        v = np.int64((r + magic) - magic)
        dst[i] = min(255, max(0, v))
    for i in range(n_float, n):
        v = (s0[i] * w0 + s1[i] * w1 + s2[i] * w2 + s3[i] * w3 + (1 << 21)) >> 22
        dst[i] = min(255, max(0, v))


@_njit
def _resize_kernel(src, cn, tx_idx, tx_w, ty_idx, ty_w, dst):
    dh = dst.shape[0]
    dw = tx_idx.size // 4
    r0 = ty_idx[0]
    h = _hrows(src, 0, 0, cn, tx_idx, tx_w, 0, dw, r0, ty_idx[4 * dh - 1])
    for d in range(dh):
        _vrow(h, r0, ty_idx, ty_w, d, 0, dw * cn, dst[d])


def resize_cubic(src, width: int, height: int) -> np.ndarray:
    """cv2.resize(src, (width, height), interpolation=INTER_CUBIC), bit-exact with OpenCV's scalar path."""
    src = np.asarray(src, dtype=np.uint8, order="C")
    width, height = operator.index(width), operator.index(height)
    if src.ndim not in (2, 3):
        raise ValueError(f"resize_cubic: src must be uint8 [H, W] or [H, W, C], got shape {src.shape}")
    if width <= 0 or height <= 0 or src.shape[0] == 0 or src.shape[1] == 0:
        raise ValueError("resize_cubic: sizes must be positive")
    h, w = src.shape[:2]
    cn = src.shape[2] if src.ndim == 3 else 1
    out = np.empty((height, width * cn), np.uint8)
    _resize_kernel(src.reshape(h, w * cn), cn, *_cubic_taps(w, width), *_cubic_taps(h, height), out)
    return out.reshape((height, width) + src.shape[2:])


# --------------------------------------------------- frame kernels (frame.hpp)


@_njit
def _prepare_kernel(frame, x0, y0, tx_idx, tx_w, ty_idx, ty_w, out):
    d0, d1 = _BORDER, _BORDER + _INNER
    r0 = ty_idx[4 * d0]
    h = _hrows(frame, y0, x0, 3, tx_idx, tx_w, d0, d1, r0, ty_idx[4 * d1 - 1])
    lut = np.empty(256, np.float32)
    for v in range(256):
        lut[v] = np.float32(v) / np.float32(255.0)
    line = np.empty(_INNER * 3, np.uint8)
    for y in range(_INNER):
        _vrow(h, r0, ty_idx, ty_w, d0 + y, d0 * 3, _CROP * 3, line)
        mask_row = y >= _MASK_Y0 and y < _MASK_Y1
        for c in range(3):
            real = out[c, y]
            masked = out[c + 3, y]
            for x in range(_INNER):
                real[x] = lut[line[3 * x + c]]
                masked[x] = real[x]
            if mask_row:
                masked[_MASK_X0:_MASK_X1] = 0.0


@_njit
def _pred_to_u8(v):
    s = v * np.float32(255.0)
    if not (s > 0.0):
        return 0
    if s >= 255.0:
        return 255
    return np.int64(s)


@_njit
def _paste_kernel(frame, x0, y0, w, h, pred, feather, fx_idx, fx_w, fy_idx, fy_w, bx_idx, bx_w, by_idx, by_w):
    row_values = _CROP * 3
    C = np.empty((_CROP, row_values), np.uint8)
    for b0 in (0, _CROP - _BORDER):
        b1 = b0 + _BORDER
        r0 = fy_idx[4 * b0]
        rows = _hrows(frame, y0, x0, 3, fx_idx, fx_w, 0, _CROP, r0, fy_idx[4 * b1 - 1])
        for y in range(b0, b1):
            _vrow(rows, r0, fy_idx, fy_w, y, 0, row_values, C[y])
    r0 = fy_idx[4 * _BORDER]
    for b0 in (0, _CROP - _BORDER):
        rows = _hrows(frame, y0, x0, 3, fx_idx, fx_w, b0, b0 + _BORDER, r0, fy_idx[4 * (_CROP - _BORDER) - 1])
        for y in range(_BORDER, _CROP - _BORDER):
            _vrow(rows, r0, fy_idx, fy_w, y, b0 * 3, row_values, C[y, b0 * 3 : (b0 + _BORDER) * 3])
    for y in range(_INNER):
        dst = C[y + _BORDER]
        for x in range(_INNER):
            for c in range(3):
                dst[3 * (x + _BORDER) + c] = _pred_to_u8(pred[c, y, x])
    r0 = by_idx[0]
    rows = _hrows(C, 0, 0, 3, bx_idx, bx_w, 0, w, r0, by_idx[4 * h - 1])
    line = np.empty(w * 3, np.uint8)
    k1 = feather + 1
    for y in range(h):
        dst = frame[y0 + y, x0 * 3 : (x0 + w) * 3]
        if feather <= 0:
            _vrow(rows, r0, by_idx, by_w, y, 0, w * 3, dst)
            continue
        _vrow(rows, r0, by_idx, by_w, y, 0, w * 3, line)
        dy = min(y, h - 1 - y)
        for x in range(w):
            a = min(min(dy, min(x, w - 1 - x)) + 1, k1)
            for c in range(3):
                v = np.int64(line[3 * x + c]) * a + np.int64(dst[3 * x + c]) * (k1 - a)
                dst[3 * x + c] = (v + k1 // 2) // k1


def prepare_input(frame, x0: int, y0: int, x1: int, y1: int, out: np.ndarray) -> None:
    """numerics §3.1-3.4: BGR uint8 [H, W, 3] frame and box -> out float32 [6, 320, 320] (written in place)."""
    frame = np.asarray(frame, dtype=np.uint8, order="C")
    check_frame("prepare_input", frame)
    x0, y0, x1, y1 = check_box("prepare_input", frame.shape, x0, y0, x1, y1)
    check_writable("prepare_input", "out", out, np.float32, (6, _INNER, _INNER))
    H, W = frame.shape[:2]
    _prepare_kernel(frame.reshape(H, W * 3), x0, y0, *_cubic_taps(x1 - x0, _CROP), *_cubic_taps(y1 - y0, _CROP), out)


def paste_back(frame: np.ndarray, x0: int, y0: int, x1: int, y1: int, pred, feather: int = 0) -> None:
    """numerics §3.6-3.7: paste pred float32 [3, 320, 320] into the BGR uint8 frame at the box, in place."""
    check_writable("paste_back", "frame", frame, np.uint8, (-1, -1, 3))
    x0, y0, x1, y1 = check_box("paste_back", frame.shape, x0, y0, x1, y1)
    pred = np.asarray(pred, dtype=np.float32, order="C")
    if pred.shape != (3, _INNER, _INNER):
        raise ValueError(f"paste_back: pred must be float32 [3, 320, 320], got shape {pred.shape}")
    feather = operator.index(feather)
    if feather < 0:
        raise ValueError("paste_back: feather must be >= 0")
    H, W = frame.shape[:2]
    w, h = x1 - x0, y1 - y0
    _paste_kernel(
        frame.reshape(H, W * 3),
        x0,
        y0,
        w,
        h,
        pred,
        feather,
        *_cubic_taps(w, _CROP),
        *_cubic_taps(h, _CROP),
        *_cubic_taps(_CROP, w),
        *_cubic_taps(_CROP, h),
    )
