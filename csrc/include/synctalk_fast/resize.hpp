// Bicubic resize of uint8 images, bit-exact with OpenCV's cv::resize
// (INTER_CUBIC) generic path, i.e. with cv::setUseOptimized(false) (docs/numerics.md
// section 3.8): per-axis taps with int16 weights (scale 2048) and an int32
// horizontal pass. The vertical pass is OpenCV's VResizeCubicVec_32s8u for
// every whole 8-value chunk of a destination row (float32 multiply-adds of
// the sums with weight / 2^22, round half to even) and the integer
// (sum + 2^21) >> 22 for the row's tail; both are reproduced here, which
// removes the 1-level disagreements a pure integer emulation has at ties.
//
// Images are interleaved (HWC) uint8 with an explicit row stride in bytes.
#pragma once

#include "synctalk_fast/isa.hpp"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

namespace synctalk_fast {
inline namespace STF_ISA_NS {

// Four taps per output index along one axis: clamped source indices and
// fixed-point weights. Built once per (src, dst) pair.
struct CubicTaps {
    std::vector<int> idx;    // 4 * dst
    std::vector<int16_t> w;  // 4 * dst

    CubicTaps() = default;
    CubicTaps(int src, int dst) : idx(4 * static_cast<std::size_t>(dst)), w(4 * static_cast<std::size_t>(dst)) {
        // OpenCV: inv_scale = dst / src, scale = 1 / inv_scale (not src / dst).
        const double scale = 1.0 / (static_cast<double>(dst) / src);
        const float A = -0.75f;
        for (int d = 0; d < dst; ++d) {
            float fx = static_cast<float>((d + 0.5) * scale - 0.5);
            const int sx = static_cast<int>(std::floor(fx));
            fx -= static_cast<float>(sx);
            float c[4];
            c[0] = ((A * (fx + 1) - 5 * A) * (fx + 1) + 8 * A) * (fx + 1) - 4 * A;
            c[1] = ((A + 2) * fx - (A + 3)) * fx * fx + 1;
            c[2] = ((A + 2) * (1 - fx) - (A + 3)) * (1 - fx) * (1 - fx) + 1;
            c[3] = 1.f - c[0] - c[1] - c[2];
            for (int k = 0; k < 4; ++k) {
                // saturate_cast<short>(float): round half to even, then clamp.
                const long r = std::lrint(c[k] * 2048.0f);
                w[4 * d + k] = static_cast<int16_t>(std::min<long>(32767, std::max<long>(-32768, r)));
                idx[4 * d + k] = std::min(src - 1, std::max(0, sx - 1 + k));
            }
        }
    }

    // Smallest and largest source index read by outputs [d0, d1).
    int first_source(int d0) const { return idx[4 * static_cast<std::size_t>(d0)]; }
    int last_source(int d1) const { return idx[4 * static_cast<std::size_t>(d1) - 1]; }
};

// Horizontal pass of one row: dst[(d - d0) * cn + c] for outputs [d0, d1).
// CN > 0 fixes the channel count at compile time (unrolled); 0 reads cn.
template <int CN = 0>
inline void hresize_row(const uint8_t* src, int cn, const CubicTaps& tx, int d0, int d1, int32_t* dst) {
    const int C = CN > 0 ? CN : cn;
    for (int d = d0; d < d1; ++d) {
        const int* ix = &tx.idx[4 * static_cast<std::size_t>(d)];
        const int16_t* w = &tx.w[4 * static_cast<std::size_t>(d)];
        const uint8_t *s0 = src + ix[0] * C, *s1 = src + ix[1] * C, *s2 = src + ix[2] * C, *s3 = src + ix[3] * C;
        for (int c = 0; c < C; ++c) dst[c] = s0[c] * w[0] + s1[c] * w[1] + s2[c] * w[2] + s3[c] * w[3];
        dst += C;
    }
}

// Vertical pass: one output value from four horizontal sums, integer path.
inline uint8_t vresize_value(int32_t s0, int32_t s1, int32_t s2, int32_t s3, const int16_t* w) {
    const int32_t v = (s0 * w[0] + s1 * w[1] + s2 * w[2] + s3 * w[3] + (1 << 21)) >> 22;
    return static_cast<uint8_t>(std::min(255, std::max(0, v)));
}

// Vertical pass, float path of OpenCV's SIMD kernel: muladd nesting
// s0*b0 + (s1*b1 + (s2*b2 + s3*b3)), unfused (the build sets
// -ffp-contract=off), rounded half to even by the 1.5 * 2^23 trick.
inline uint8_t vresize_value_f32(int32_t s0, int32_t s1, int32_t s2, int32_t s3, const float* b) {
    float r = static_cast<float>(s3) * b[3];
    r = static_cast<float>(s2) * b[2] + r;
    r = static_cast<float>(s1) * b[1] + r;
    r = static_cast<float>(s0) * b[0] + r;
    const float magic = 12582912.0f;  // |r| < 2^22, so r + magic has no fraction bits left
    const int v = static_cast<int>((r + magic) - magic);
    return static_cast<uint8_t>(std::min(255, std::max(0, v)));
}

// Horizontal sums of a band of source rows, cached so each row is filtered
// once however many output rows read it. Values of destination columns
// [d0, d1) are cached, i.e. row values [d0 * cn, d1 * cn).
class HorizontalRows {
  public:
    // Rows [r0, r1] of the source image, output columns [d0, d1).
    HorizontalRows(const uint8_t* src, std::ptrdiff_t src_stride, int cn, const CubicTaps& tx, int d0, int d1,
                   int r0, int r1)
        : r0_(r0), first_(static_cast<std::size_t>(d0) * cn), width_(static_cast<std::size_t>(d1 - d0) * cn),
          buf_(new int32_t[width_ * static_cast<std::size_t>(r1 - r0 + 1)]) {  // every value is written below
        for (int r = r0; r <= r1; ++r) {
            if (cn == 3)
                hresize_row<3>(src + r * src_stride, 3, tx, d0, d1, row(r));
            else
                hresize_row(src + r * src_stride, cn, tx, d0, d1, row(r));
        }
    }
    int32_t* row(int r) { return buf_.get() + static_cast<std::size_t>(r - r0_) * width_; }
    const int32_t* row(int r) const { return buf_.get() + static_cast<std::size_t>(r - r0_) * width_; }
    std::size_t first_value() const { return first_; }
    std::size_t width() const { return width_; }

  private:
    int r0_;
    std::size_t first_, width_;
    std::unique_ptr<int32_t[]> buf_;
};

// Vertical pass for output row d over all cached values, to dst. row_values
// is the destination's full row length (width * cn): OpenCV's float path
// covers its first row_values / 8 * 8 values, the integer path the rest.
inline void vresize_row(const HorizontalRows& h, const CubicTaps& ty, int d, std::size_t row_values, uint8_t* dst) {
    const int* iy = &ty.idx[4 * static_cast<std::size_t>(d)];
    const int16_t* w = &ty.w[4 * static_cast<std::size_t>(d)];
    const int32_t *s0 = h.row(iy[0]), *s1 = h.row(iy[1]), *s2 = h.row(iy[2]), *s3 = h.row(iy[3]);
    const float scale = 1.0f / (2048 * 2048);
    const float b[4] = {w[0] * scale, w[1] * scale, w[2] * scale, w[3] * scale};
    const std::size_t n = h.width(), vec_end = row_values / 8 * 8;
    const std::size_t n_float = vec_end > h.first_value() ? std::min(n, vec_end - h.first_value()) : 0;
    std::size_t i = 0;
    for (; i < n_float; ++i) dst[i] = vresize_value_f32(s0[i], s1[i], s2[i], s3[i], b);
    for (; i < n; ++i) dst[i] = vresize_value(s0[i], s1[i], s2[i], s3[i], w);
}

// Full resize of an h x w x cn image to dh x dw x cn.
inline void resize_cubic(const uint8_t* src, int h, int w, std::ptrdiff_t src_stride, int cn, uint8_t* dst, int dh,
                         int dw, std::ptrdiff_t dst_stride) {
    const CubicTaps tx(w, dw), ty(h, dh);
    const HorizontalRows rows(src, src_stride, cn, tx, 0, dw, ty.first_source(0), ty.last_source(dh));
    for (int d = 0; d < dh; ++d) vresize_row(rows, ty, d, static_cast<std::size_t>(dw) * cn, dst + d * dst_stride);
}

}  // namespace STF_ISA_NS
}  // namespace synctalk_fast
