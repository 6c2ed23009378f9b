// Compiled once per instruction set: STF_ISA_NS names the copy (generic by
// default; CMake builds it again with STF_ISA_NS=avx2 and -mavx2 -mfma).
#include "kernels.hpp"
#include "synctalk_fast/frame.hpp"
#include "synctalk_fast/mel.hpp"
#include "synctalk_fast/resize.hpp"

#define STF_CAT2(a, b) a##b
#define STF_CAT(a, b) STF_CAT2(a, b)
#define STF_STR2(a) #a
#define STF_STR(a) STF_STR2(a)

namespace synctalk_fast {
namespace {

void mel_spectrogram(const float* wav, std::size_t n, float* out, int n_threads) {
    mel::spectrogram(wav, n, out, n_threads);
}

void prepare_input(const uint8_t* img, std::ptrdiff_t stride, int x0, int y0, int x1, int y1, float* out) {
    frame::prepare_input(img, stride, {x0, y0, x1, y1}, out);
}

void paste_back(uint8_t* img, std::ptrdiff_t stride, int x0, int y0, int x1, int y1, const float* pred, int feather) {
    frame::paste_back(img, stride, {x0, y0, x1, y1}, pred, feather);
}

}  // namespace

const KernelTable& STF_CAT(kernel_table_, STF_ISA_NS)() {
    static const KernelTable table{STF_STR(STF_ISA_NS), &mel_spectrogram, &resize_cubic, &prepare_input, &paste_back};
    return table;
}

}  // namespace synctalk_fast
