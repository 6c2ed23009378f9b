// The two per-frame image kernels of numerics section 3, each fused into one pass:
//   prepare_input: crop -> bicubic 328x328 -> inner 320 window -> masked copy
//                  -> /255 -> CHW float32 [6][320][320]
//   paste_back:    pred float32 [3][320][320] -> uint8 (truncation) -> into
//                  the 328 crop -> bicubic back to the box size -> frame.
// Frames are BGR uint8 HWC with a row stride in bytes. Boxes are half-open
// [x0, x1) x [y0, y1) and already clipped to the frame (callers check).
#pragma once

#include "synctalk_fast/isa.hpp"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "synctalk_fast/resize.hpp"

namespace synctalk_fast {
inline namespace STF_ISA_NS {
namespace frame {

constexpr int kCrop = 328;   // side of the resized crop
constexpr int kInner = 320;  // network input side: crop[4:324, 4:324]
constexpr int kBorder = 4;
// cv2.rectangle(real, (5, 5, 310, 305), 0, -1): x in [5, 314], y in [5, 309].
constexpr int kMaskX0 = 5, kMaskX1 = 315, kMaskY0 = 5, kMaskY1 = 310;
constexpr std::size_t kPlane = static_cast<std::size_t>(kInner) * kInner;

struct Box {
    int x0, y0, x1, y1;
    int width() const { return x1 - x0; }
    int height() const { return y1 - y0; }
};

// value / 255 in float32, as numpy computes float32(v) / 255.0.
inline const float* unit_lut() {
    static const std::vector<float> lut = [] {
        std::vector<float> t(256);
        for (int v = 0; v < 256; ++v) t[v] = static_cast<float>(v) / 255.0f;
        return t;
    }();
    return lut.data();
}

// out: [6][320][320] float32, fully written.
inline void prepare_input(const uint8_t* img, std::ptrdiff_t stride, Box b, float* out) {
    const uint8_t* crop = img + b.y0 * stride + b.x0 * 3;
    const CubicTaps tx(b.width(), kCrop), ty(b.height(), kCrop);
    const int d0 = kBorder, d1 = kBorder + kInner;
    const HorizontalRows rows(crop, stride, 3, tx, d0, d1, ty.first_source(d0), ty.last_source(d1));
    const float* lut = unit_lut();
    uint8_t line[kInner * 3];
    for (int y = 0; y < kInner; ++y) {
        vresize_row(rows, ty, d0 + y, kCrop * 3, line);
        const bool mask_row = y >= kMaskY0 && y < kMaskY1;
        for (int c = 0; c < 3; ++c) {
            float* real = out + c * kPlane + static_cast<std::size_t>(y) * kInner;
            float* masked = real + 3 * kPlane;
            for (int x = 0; x < kInner; ++x) real[x] = lut[line[3 * x + c]];
            std::copy(real, real + kInner, masked);
            if (mask_row) std::fill(masked + kMaskX0, masked + kMaskX1, 0.0f);
        }
    }
}

// pred [3][320][320] float -> uint8 as numpy's astype(uint8) of out * 255
// (float32 product, truncation toward zero; clamped, since a network need
// not end in a sigmoid).
inline uint8_t pred_to_u8(float v) {
    float s = v * 255.0f;
    s = s > 0.0f ? s : 0.0f;  // NaN -> 0 as well
    s = s < 255.0f ? s : 255.0f;
    return static_cast<uint8_t>(static_cast<int>(s));
}

// Writes the prediction into the frame at the box, in place. feather = 0 is
// the reference's hard paste; feather = k > 0 blends the k outermost pixels
// of the box with the original frame, weight (d + 1) / (k + 1) for a pixel
// d pixels inside the box border (integer arithmetic, rounded).
inline void paste_back(uint8_t* img, std::ptrdiff_t stride, Box b, const float* pred, int feather) {
    const int w = b.width(), h = b.height();
    uint8_t* crop = img + b.y0 * stride + b.x0 * 3;
    const std::ptrdiff_t cstride = kCrop * 3;
    std::unique_ptr<uint8_t[]> C(new uint8_t[static_cast<std::size_t>(kCrop) * cstride]);  // fully written below

    // 1. The 4-pixel ring of the 328 crop comes from resizing the original
    //    crop; only the ring is computed (rows 0-3, 324-327 fully, and
    //    columns 0-3, 324-327 of the other rows).
    {
        const CubicTaps tx(w, kCrop), ty(h, kCrop);
        const int bands[2][2] = {{0, kBorder}, {kCrop - kBorder, kCrop}};
        for (const auto& band : bands) {  // full-width rows
            const HorizontalRows rows(crop, stride, 3, tx, 0, kCrop, ty.first_source(band[0]),
                                      ty.last_source(band[1]));
            for (int y = band[0]; y < band[1]; ++y) vresize_row(rows, ty, y, kCrop * 3, &C[y * cstride]);
        }
        for (const auto& band : bands) {  // side columns of the inner rows
            const HorizontalRows rows(crop, stride, 3, tx, band[0], band[1], ty.first_source(kBorder),
                                      ty.last_source(kCrop - kBorder));
            for (int y = kBorder; y < kCrop - kBorder; ++y)
                vresize_row(rows, ty, y, kCrop * 3, &C[y * cstride + band[0] * 3]);
        }
    }
    // 2. The prediction fills the inner 320 x 320 (CHW -> HWC).
    for (int y = 0; y < kInner; ++y) {
        uint8_t* dst = &C[(y + kBorder) * cstride + kBorder * 3];
        const float *p0 = pred + static_cast<std::size_t>(y) * kInner, *p1 = p0 + kPlane, *p2 = p1 + kPlane;
        for (int x = 0; x < kInner; ++x) {
            dst[3 * x] = pred_to_u8(p0[x]);
            dst[3 * x + 1] = pred_to_u8(p1[x]);
            dst[3 * x + 2] = pred_to_u8(p2[x]);
        }
    }
    // 3. Resize back to the box and write (the original crop is no longer read).
    const CubicTaps tx(kCrop, w), ty(kCrop, h);
    const HorizontalRows rows(C.get(), cstride, 3, tx, 0, w, ty.first_source(0), ty.last_source(h));
    std::vector<uint8_t> line(static_cast<std::size_t>(w) * 3);
    for (int y = 0; y < h; ++y) {
        uint8_t* dst = crop + y * stride;
        if (feather <= 0) {
            vresize_row(rows, ty, y, line.size(), dst);
            continue;
        }
        vresize_row(rows, ty, y, line.size(), line.data());
        const int k1 = feather + 1, dy = std::min(y, h - 1 - y);
        for (int x = 0; x < w; ++x) {
            const int a = std::min(std::min(dy, std::min(x, w - 1 - x)) + 1, k1);
            for (int c = 0; c < 3; ++c) {
                const int v = line[3 * x + c] * a + dst[3 * x + c] * (k1 - a);
                dst[3 * x + c] = static_cast<uint8_t>((v + k1 / 2) / k1);
            }
        }
    }
}

}  // namespace frame
}  // namespace STF_ISA_NS
}  // namespace synctalk_fast
