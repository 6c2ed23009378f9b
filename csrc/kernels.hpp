// The compiled kernels behind the bindings, one table per instruction set,
// chosen once per process: AVX2 + FMA where the CPU has them (x86-64 builds
// with GCC or Clang), the baseline build otherwise. Both produce identical
// results (no reassociation, no contraction); only the speed differs.
#pragma once

#include <cstddef>
#include <cstdint>

namespace synctalk_fast {

struct KernelTable {
    const char* isa;
    void (*mel_spectrogram)(const float* wav, std::size_t n, float* out, int n_threads);
    void (*resize_cubic)(const uint8_t* src, int h, int w, std::ptrdiff_t src_stride, int cn, uint8_t* dst, int dh,
                         int dw, std::ptrdiff_t dst_stride);
    void (*prepare_input)(const uint8_t* img, std::ptrdiff_t stride, int x0, int y0, int x1, int y1, float* out);
    void (*paste_back)(uint8_t* img, std::ptrdiff_t stride, int x0, int y0, int x1, int y1, const float* pred,
                       int feather);
};

const KernelTable& kernel_table_generic();
#ifdef STF_HAVE_AVX2
const KernelTable& kernel_table_avx2();
#endif

// The table in use. SYNCTALK_FAST_ISA=generic|avx2 overrides the choice
// (std::runtime_error for an unknown name or an ISA this CPU lacks).
const KernelTable& kernels();

}  // namespace synctalk_fast
