// Mixed-radix (2, 3, 4, 5) FFT in double precision.
//
// Plain C++17, no Python: the complex transform is a Stockham autosort
// (out-of-place, no bit reversal); the real transform of an even length n
// packs the input into a complex transform of n/2 points. Plans are
// immutable after construction, so one plan may be shared by many threads;
// each call brings its own scratch buffers.
#pragma once

#include <algorithm>
#include <cmath>
#include <complex>
#include <cstddef>
#include <stdexcept>
#include <string>
#include <vector>

namespace synctalk_fast {

using cplx = std::complex<double>;

namespace detail {

// Plain complex product: std::complex's operator* checks for inf/NaN, which
// this code never produces, at several times the cost.
inline cplx cmul(cplx a, cplx b) {
    return {a.real() * b.real() - a.imag() * b.imag(),
            a.real() * b.imag() + a.imag() * b.real()};
}
// -i * a
inline cplx mul_neg_i(cplx a) { return {a.imag(), -a.real()}; }

constexpr double kPi = 3.14159265358979323846;

// exp(-2 pi i k / n), computed directly (no recurrence) for full accuracy.
inline cplx unit_root(std::size_t k, std::size_t n) {
    const double a = -2.0 * kPi * static_cast<double>(k) / static_cast<double>(n);
    return {std::cos(a), std::sin(a)};
}

}  // namespace detail

// Complex forward DFT (sign -1, unnormalised) of a fixed length whose prime
// factors are 2, 3 and 5.
class ComplexFFT {
  public:
    explicit ComplexFFT(std::size_t n) : n_(n) {
        if (n == 0) throw std::invalid_argument("FFT length must be positive");
        std::size_t rest = n;
        std::vector<int> radices;
        for (int p : {4, 2, 3, 5}) {
            while (rest % p == 0) {
                radices.push_back(p);
                rest /= p;
            }
        }
        if (rest != 1)
            throw std::invalid_argument("FFT length " + std::to_string(n) +
                                        " has a prime factor other than 2, 3, 5");
        // Stage s combines p sub-transforms of length L into one of L * p.
        std::size_t L = 1;
        for (int p : radices) {
            Stage st{p, L, n / (L * p), twiddles_.size()};
            const std::size_t Lp = L * p;
            for (std::size_t k1 = 0; k1 < L; ++k1)
                for (int r = 1; r < p; ++r) twiddles_.push_back(detail::unit_root(r * k1, Lp));
            stages_.push_back(st);
            L = Lp;
        }
    }

    std::size_t size() const { return n_; }

    // in: n values (not modified), out: n values, work: n values of scratch.
    // in may alias out; work must not alias either.
    void forward(const cplx* in, cplx* out, cplx* work) const {
        if (stages_.empty()) {  // n == 1
            out[0] = in[0];
            return;
        }
        // Ping-pong between out and work so that the last stage lands in out.
        cplx* bufs[2] = {out, work};
        int dst = (stages_.size() % 2 == 1) ? 0 : 1;
        const cplx* src = in;
        if (in == bufs[dst]) {  // the first stage would overwrite its own input
            std::copy(in, in + n_, work);
            src = work;
        }
        for (const Stage& st : stages_) {
            run_stage(st, src, bufs[dst]);
            src = bufs[dst];
            dst ^= 1;
        }
    }

  private:
    struct Stage {
        int p;               // radix
        std::size_t L;       // length of the sub-transforms combined
        std::size_t S;       // number of output sub-transforms (n / (L * p))
        std::size_t tw_ofs;  // twiddles W_{Lp}^{r k1}, (p - 1) per k1
    };

    // Layout invariant: before a stage, a[j * L + k] holds bin k of the DFT of
    // the subsequence x[j], x[j + S*p], ...; after it b[j * L*p + k] does the
    // same for length L*p and j < S.
    void run_stage(const Stage& st, const cplx* a, cplx* b) const {
        const std::size_t L = st.L, S = st.S, Lp = L * st.p;
        const cplx* tw = twiddles_.data() + st.tw_ofs;
        for (std::size_t j = 0; j < S; ++j) {
            const cplx* in = a + j * L;
            cplx* out = b + j * Lp;
            const std::size_t step = S * L;  // distance between the p inputs
            switch (st.p) {
                case 2: radix2(in, out, tw, L, step); break;
                case 3: radix3(in, out, tw, L, step); break;
                case 4: radix4(in, out, tw, L, step); break;
                default: radix5(in, out, tw, L, step); break;
            }
        }
    }

    static void radix2(const cplx* in, cplx* out, const cplx* tw, std::size_t L, std::size_t step) {
        for (std::size_t k = 0; k < L; ++k) {
            const cplx a0 = in[k], a1 = detail::cmul(in[k + step], tw[k]);
            out[k] = a0 + a1;
            out[k + L] = a0 - a1;
        }
    }

    static void radix3(const cplx* in, cplx* out, const cplx* tw, std::size_t L, std::size_t step) {
        const double s = 0.86602540378443864676;  // sin(2 pi / 3)
        for (std::size_t k = 0; k < L; ++k) {
            const cplx a0 = in[k];
            const cplx a1 = detail::cmul(in[k + step], tw[2 * k]);
            const cplx a2 = detail::cmul(in[k + 2 * step], tw[2 * k + 1]);
            const cplx t = a1 + a2, m = a0 - 0.5 * t, d = detail::mul_neg_i(s * (a1 - a2));
            out[k] = a0 + t;
            out[k + L] = m + d;
            out[k + 2 * L] = m - d;
        }
    }

    static void radix4(const cplx* in, cplx* out, const cplx* tw, std::size_t L, std::size_t step) {
        for (std::size_t k = 0; k < L; ++k) {
            const cplx a0 = in[k];
            const cplx a1 = detail::cmul(in[k + step], tw[3 * k]);
            const cplx a2 = detail::cmul(in[k + 2 * step], tw[3 * k + 1]);
            const cplx a3 = detail::cmul(in[k + 3 * step], tw[3 * k + 2]);
            const cplx t0 = a0 + a2, t1 = a0 - a2, t2 = a1 + a3, t3 = detail::mul_neg_i(a1 - a3);
            out[k] = t0 + t2;
            out[k + L] = t1 + t3;
            out[k + 2 * L] = t0 - t2;
            out[k + 3 * L] = t1 - t3;
        }
    }

    static void radix5(const cplx* in, cplx* out, const cplx* tw, std::size_t L, std::size_t step) {
        const double c1 = 0.30901699437494742410, c2 = -0.80901699437494742410;  // cos(2pi/5), cos(4pi/5)
        const double s1 = 0.95105651629515357212, s2 = 0.58778525229247312917;   // sin(2pi/5), sin(4pi/5)
        for (std::size_t k = 0; k < L; ++k) {
            const cplx a0 = in[k];
            const cplx a1 = detail::cmul(in[k + step], tw[4 * k]);
            const cplx a2 = detail::cmul(in[k + 2 * step], tw[4 * k + 1]);
            const cplx a3 = detail::cmul(in[k + 3 * step], tw[4 * k + 2]);
            const cplx a4 = detail::cmul(in[k + 4 * step], tw[4 * k + 3]);
            const cplx t1 = a1 + a4, t2 = a2 + a3, d1 = a1 - a4, d2 = a2 - a3;
            const cplx m1 = a0 + c1 * t1 + c2 * t2, m2 = a0 + c2 * t1 + c1 * t2;
            const cplx n1 = detail::mul_neg_i(s1 * d1 + s2 * d2);
            const cplx n2 = detail::mul_neg_i(s2 * d1 - s1 * d2);
            out[k] = a0 + t1 + t2;
            out[k + L] = m1 + n1;
            out[k + 2 * L] = m2 + n2;
            out[k + 3 * L] = m2 - n2;
            out[k + 4 * L] = m1 - n1;
        }
    }

    std::size_t n_;
    std::vector<Stage> stages_;
    std::vector<cplx> twiddles_;
};

// Real forward DFT of length n (factors 2, 3, 5): n/2 + 1 bins, the same
// values as numpy.fft.rfft. Even n runs a complex transform of n/2 points.
class RealFFT {
  public:
    explicit RealFFT(std::size_t n)
        : n_(n), half_(n % 2 == 0), cfft_(half_ ? n / 2 : n) {
        if (half_) {
            post_.resize(n / 2 + 1);
            for (std::size_t k = 0; k <= n / 2; ++k) post_[k] = detail::unit_root(k, n);
        }
    }

    std::size_t size() const { return n_; }
    std::size_t bins() const { return n_ / 2 + 1; }
    // Scratch each call needs, in complex values.
    std::size_t work_size() const { return 2 * cfft_.size(); }

    // x: n reals; X: n/2 + 1 bins; work: work_size() values.
    void forward(const double* x, cplx* X, cplx* work) const {
        const std::size_t m = cfft_.size();
        cplx* z = work;
        cplx* scratch = work + m;
        if (!half_) {
            for (std::size_t i = 0; i < m; ++i) z[i] = {x[i], 0.0};
            cfft_.forward(z, z, scratch);
            for (std::size_t k = 0; k < bins(); ++k) X[k] = z[k];
            return;
        }
        for (std::size_t i = 0; i < m; ++i) z[i] = {x[2 * i], x[2 * i + 1]};
        cfft_.forward(z, z, scratch);
        // Split Z into the transforms of the even and odd samples:
        // E_k = (Z_k + conj Z_{m-k}) / 2, O_k = -i (Z_k - conj Z_{m-k}) / 2,
        // X_k = E_k + W_n^k O_k for k = 0..m (Z_m = Z_0).
        for (std::size_t k = 0; k <= m; ++k) {
            const cplx zk = z[k % m], zc = std::conj(z[(m - k) % m]);
            const cplx e = 0.5 * (zk + zc), o = detail::mul_neg_i(0.5 * (zk - zc));
            X[k] = e + detail::cmul(post_[k], o);
        }
    }

  private:
    std::size_t n_;
    bool half_;
    ComplexFFT cfft_;
    std::vector<cplx> post_;
};

}  // namespace synctalk_fast
