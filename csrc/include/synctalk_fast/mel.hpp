// Log-mel spectrogram of numerics section 1.2-1.5 (the SyncTalk_2D / Wav2Lip
// audio front end) in one pass per STFT frame: pre-emphasis, zero-padded
// centring, periodic Hann, real FFT, magnitude, Slaney mel filterbank, dB,
// normalisation. Arithmetic is double, like the reference (scipy.lfilter
// promotes to float64); only the result is float32.
#pragma once

#include "synctalk_fast/isa.hpp"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <thread>
#include <vector>

#include "synctalk_fast/fft.hpp"

namespace synctalk_fast {
inline namespace STF_ISA_NS {
namespace mel {

constexpr int kSampleRate = 16000;
constexpr int kNFFT = 800;
constexpr int kHop = 200;
constexpr int kBins = kNFFT / 2 + 1;  // 401
constexpr int kMels = 80;
constexpr double kFMin = 55.0;
constexpr double kFMax = 7600.0;
constexpr double kPreemphasis = 0.97;

// Number of STFT frames for n samples (centred): 1 + n // hop.
inline std::size_t num_frames(std::size_t n) { return 1 + n / kHop; }

// Slaney mel scale, as librosa.hz_to_mel / mel_to_hz with htk=False.
inline double hz_to_mel(double f) {
    const double f_sp = 200.0 / 3, min_log_hz = 1000.0, min_log_mel = (min_log_hz - 0.0) / f_sp;
    const double logstep = std::log(6.4) / 27.0;
    if (f >= min_log_hz) return min_log_mel + std::log(f / min_log_hz) / logstep;
    return (f - 0.0) / f_sp;
}
inline double mel_to_hz(double m) {
    const double f_sp = 200.0 / 3, min_log_hz = 1000.0, min_log_mel = (min_log_hz - 0.0) / f_sp;
    const double logstep = std::log(6.4) / 27.0;
    if (m >= min_log_mel) return min_log_hz * std::exp(logstep * (m - min_log_mel));
    return 0.0 + f_sp * m;
}

// librosa.filters.mel(sr=16000, n_fft=800, n_mels=80, fmin=55, fmax=7600):
// row-major [80][401], the float32 values librosa returns, widened to double.
// Follows librosa's operation order so every weight rounds to the same float.
inline std::vector<double> filterbank() {
    const int n_pts = kMels + 2;
    // np.linspace(min_mel, max_mel, n_pts): arange * step + start, last = stop.
    const double min_mel = hz_to_mel(kFMin), max_mel = hz_to_mel(kFMax);
    const double step = (max_mel - min_mel) / (n_pts - 1);
    std::vector<double> mel_f(n_pts);
    for (int i = 0; i < n_pts; ++i) mel_f[i] = mel_to_hz(i == n_pts - 1 ? max_mel : i * step + min_mel);
    // np.fft.rfftfreq(800, d=1/16000): k * (1 / (n * d)).
    const double val = 1.0 / (kNFFT * (1.0 / kSampleRate));
    std::vector<double> w(static_cast<std::size_t>(kMels) * kBins);
    for (int i = 0; i < kMels; ++i) {
        const double fdiff_lo = mel_f[i + 1] - mel_f[i], fdiff_hi = mel_f[i + 2] - mel_f[i + 1];
        const double enorm = 2.0 / (mel_f[i + 2] - mel_f[i]);
        for (int k = 0; k < kBins; ++k) {
            const double f = k * val;
            const double lower = -(mel_f[i] - f) / fdiff_lo;
            const double upper = (mel_f[i + 2] - f) / fdiff_hi;
            const float tri = static_cast<float>(std::max(0.0, std::min(lower, upper)));
            w[static_cast<std::size_t>(i) * kBins + k] =
                static_cast<float>(static_cast<double>(tri) * enorm);
        }
    }
    return w;
}

// Immutable tables shared by all calls (and threads): window, FFT plan, and
// the filterbank stored as one contiguous run of non-zero weights per mel.
class MelPlan {
  public:
    MelPlan() : fft_(kNFFT), window_(kNFFT) {
        for (int i = 0; i < kNFFT; ++i)
            window_[i] = 0.5 - 0.5 * std::cos(2.0 * detail::kPi * i / kNFFT);
        const std::vector<double> fb = filterbank();
        for (int m = 0; m < kMels; ++m) {
            const double* row = fb.data() + static_cast<std::size_t>(m) * kBins;
            int lo = 0, hi = kBins;
            while (lo < kBins && row[lo] == 0.0) ++lo;
            while (hi > lo && row[hi - 1] == 0.0) --hi;
            band_begin_.push_back(lo);
            band_end_.push_back(hi);
            band_ofs_.push_back(weights_.size());
            weights_.insert(weights_.end(), row + lo, row + hi);
        }
    }

    static const MelPlan& instance() {
        static const MelPlan plan;  // thread-safe initialisation (C++11 magic static)
        return plan;
    }

    // Pre-emphasised samples j in [j0, j0 + len) with the centring zeros:
    // y[j] = x[j] - 0.97 x[j - 1], y[0] = x[0], zero outside [0, n)
    // (numerics section 1.2-1.3).
    static std::vector<double> preemphasis(const float* wav, std::size_t n, std::ptrdiff_t j0, std::size_t len) {
        std::vector<double> y(len, 0.0);
        const auto sn = static_cast<std::ptrdiff_t>(n);
        for (std::ptrdiff_t j = std::max<std::ptrdiff_t>(j0, 0); j < std::min<std::ptrdiff_t>(j0 + len, sn); ++j)
            y[j - j0] = j == 0 ? static_cast<double>(wav[0])
                               : static_cast<double>(wav[j]) - kPreemphasis * static_cast<double>(wav[j - 1]);
        return y;
    }

    // wav: n samples; out: [80][num_frames(n)] float32. Frames [t0, t1), in
    // blocks so that the double-precision scratch stays small (~3 MB) however
    // long the audio is.
    void compute(const float* wav, std::size_t n, float* out, std::size_t t0, std::size_t t1) const {
        constexpr std::size_t kBlock = 2048;
        for (std::size_t a = t0; a < t1; a += kBlock) {
            const std::size_t b = std::min(t1, a + kBlock);
            const std::ptrdiff_t j0 = static_cast<std::ptrdiff_t>(a * kHop) - kNFFT / 2;
            const std::vector<double> y = preemphasis(wav, n, j0, (b - a - 1) * kHop + kNFFT);
            compute_frames(y.data(), num_frames(n), out, a, b);
        }
    }

    // y: pre-emphasised padded samples from frame t0's first sample on;
    // out: [80][T] float32, row stride T. Frames [t0, t1) are computed
    // kLanes at a time (frame t + l in lane l of f64xN; each lane's
    // arithmetic is that of one frame; lanes past t1 repeat the last frame).
    void compute_frames(const double* y, std::size_t T, float* out, std::size_t t0, std::size_t t1) const {
        std::vector<f64xN> frame(kNFFT), spec_re(kBins), spec_im(kBins), mag(kBins), work(fft_.work_size());
        for (std::size_t t = t0; t < t1; t += kLanes) {
            const std::size_t lanes = std::min<std::size_t>(kLanes, t1 - t);
            const double* ys[kLanes];
            for (std::size_t l = 0; l < kLanes; ++l) ys[l] = y + (t - t0 + std::min(l, lanes - 1)) * kHop;
            for (int i = 0; i < kNFFT; ++i)
                for (int l = 0; l < kLanes; ++l) frame[i][l] = ys[l][i] * window_[i];
            fft_.forward(frame.data(), spec_re.data(), spec_im.data(), work.data());
            // |X| without hypot's overflow guards (no overflow below 1e150), lane by lane.
            const double* re = reinterpret_cast<const double*>(spec_re.data());
            const double* im = reinterpret_cast<const double*>(spec_im.data());
            double* mg = reinterpret_cast<double*>(mag.data());
            for (int k = 0; k < kLanes * kBins; ++k) mg[k] = std::sqrt(re[k] * re[k] + im[k] * im[k]);
            for (int m = 0; m < kMels; ++m) {
                const double* w = weights_.data() + band_ofs_[m];
                f64xN acc = f64xN{};
                for (int k = band_begin_[m]; k < band_end_[m]; ++k) acc += *w++ * mag[k];
                float* row = out + static_cast<std::size_t>(m) * T + t;
                for (std::size_t l = 0; l < lanes; ++l) row[l] = normalised_db(acc[l]);
            }
        }
    }

    // numerics section 1.5: clip(8 * (20 log10(max(1e-5, M)) - 20 + 100) / 100 - 4, -4, 4).
    static float normalised_db(double acc) {
        if (acc < 0.99e-4) return -4.0f;  // S < -100 dB: clipped whatever the log says
        if (acc > 10.01) return 4.0f;     // S > 0 dB: clipped
        const double min_level = 1e-5;    // exp(-100 / 20 * ln 10), unreachable past the test above
        const double S = 20.0 * std::log10(std::max(min_level, acc)) - 20.0;
        return static_cast<float>(std::min(4.0, std::max(-4.0, 8.0 * ((S + 100.0) / 100.0) - 4.0)));
    }

  private:
    RealFFT<f64xN> fft_;
    std::vector<double> window_;
    std::vector<int> band_begin_, band_end_;
    std::vector<std::size_t> band_ofs_;
    std::vector<double> weights_;
};

// Whole spectrogram: out must hold 80 * num_frames(n) floats. Frames are
// independent, so they are split over n_threads threads (<= 0: hardware
// concurrency); short inputs run on the calling thread.
inline void spectrogram(const float* wav, std::size_t n, float* out, int n_threads) {
    const MelPlan& plan = MelPlan::instance();
    const std::size_t T = num_frames(n);
    std::size_t threads = n_threads > 0 ? static_cast<std::size_t>(n_threads)
                                        : std::max(1u, std::thread::hardware_concurrency());
    threads = std::min<std::size_t>({threads, 16, std::max<std::size_t>(1, T / 256)});
    if (threads <= 1) {
        plan.compute(wav, n, out, 0, T);
        return;
    }
    std::vector<std::thread> pool;
    const std::size_t chunk = (T + threads - 1) / threads;
    for (std::size_t i = 1; i < threads; ++i) {
        const std::size_t a = std::min(T, i * chunk), b = std::min(T, a + chunk);
        pool.emplace_back([&plan, wav, n, out, a, b] { plan.compute(wav, n, out, a, b); });
    }
    plan.compute(wav, n, out, 0, std::min(T, chunk));
    for (auto& th : pool) th.join();
}

}  // namespace mel
}  // namespace STF_ISA_NS
}  // namespace synctalk_fast
