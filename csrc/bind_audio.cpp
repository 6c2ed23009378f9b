#include <pybind11/complex.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <memory>
#include <string>
#include <vector>

#include "bindings.hpp"
#include "kernels.hpp"
#include "synctalk_fast/fft.hpp"
#include "synctalk_fast/mel.hpp"

namespace py = pybind11;
namespace stf = synctalk_fast;

namespace {

using f32_in = py::array_t<float, py::array::c_style | py::array::forcecast>;
using f64_in = py::array_t<double, py::array::c_style | py::array::forcecast>;

py::array_t<std::complex<double>> rfft(const f64_in& x) {
    if (x.ndim() != 1) throw py::value_error("rfft: x must be 1-D, got ndim=" + std::to_string(x.ndim()));
    const std::size_t n = static_cast<std::size_t>(x.shape(0));
    if (n == 0) throw py::value_error("rfft: x must not be empty");
    std::unique_ptr<stf::RealFFT<double>> plan;
    try {
        plan = std::make_unique<stf::RealFFT<double>>(n);
    } catch (const std::invalid_argument& e) {
        throw py::value_error(std::string("rfft: ") + e.what());
    }
    const std::size_t bins = plan->bins();
    py::array_t<std::complex<double>> out(static_cast<py::ssize_t>(bins));
    const double* src = x.data();
    auto* dst = out.mutable_data();
    {
        py::gil_scoped_release release;  // pure C++ on buffers we own or hold
        std::vector<double> re(bins), im(bins), work(plan->work_size());
        plan->forward(src, re.data(), im.data(), work.data());
        for (std::size_t k = 0; k < bins; ++k) dst[k] = {re[k], im[k]};
    }
    return out;
}

py::array_t<float> mel_spectrogram(const f32_in& wav, int n_threads) {
    if (wav.ndim() != 1)
        throw py::value_error("mel_spectrogram: wav must be 1-D float32 [n], got ndim=" + std::to_string(wav.ndim()));
    const std::size_t n = static_cast<std::size_t>(wav.shape(0));
    const std::size_t T = stf::mel::num_frames(n);
    py::array_t<float> out({static_cast<py::ssize_t>(stf::mel::kMels), static_cast<py::ssize_t>(T)});
    const float* src = wav.data();
    float* dst = out.mutable_data();
    {
        py::gil_scoped_release release;  // long pure C++ loop; buffers stay referenced by this frame
        stf::kernels().mel_spectrogram(src, n, dst, n_threads);
    }
    return out;
}

py::array_t<float> mel_filterbank() {
    const std::vector<double> fb = stf::mel::filterbank();
    py::array_t<float> out({stf::mel::kMels, stf::mel::kBins});
    float* dst = out.mutable_data();
    for (std::size_t i = 0; i < fb.size(); ++i) dst[i] = static_cast<float>(fb[i]);
    return out;
}

}  // namespace

void bind_audio(py::module_& m) {
    m.def("rfft", &rfft, py::arg("x"),
          "Real FFT of a float64 [n] signal (n with prime factors 2, 3, 5) -> complex128 [n//2 + 1].");
    m.def("mel_spectrogram", &mel_spectrogram, py::arg("wav"), py::arg("n_threads") = 0,
          "numerics section 1.2-1.5 log-mel of float32 [n] audio at 16 kHz -> float32 [80, 1 + n//200].");
    m.def("mel_filterbank", &mel_filterbank,
          "librosa.filters.mel(sr=16000, n_fft=800, n_mels=80, fmin=55, fmax=7600) -> float32 [80, 401].");
}
