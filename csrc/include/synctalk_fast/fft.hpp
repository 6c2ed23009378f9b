// Mixed-radix (2, 3, 4, 5) FFT in double precision.
//
// Plain C++17, no Python: the complex transform is a Stockham autosort
// (out-of-place, no bit reversal) on split real/imaginary arrays; the real
// transform of an even length n packs the input into a complex transform of
// n/2 points. The value type T is double, or f64xN: kLanes independent
// transforms side by side in SIMD lanes, the same arithmetic per lane. Plans are immutable after construction, so one plan
// may be shared by many threads; each call brings its own scratch buffers.
#pragma once

#include "synctalk_fast/isa.hpp"

#include <algorithm>
#include <cmath>
#include <complex>
#include <cstddef>
#include <stdexcept>
#include <string>
#include <vector>

#if defined(__GNUC__) || defined(__clang__) || defined(_MSC_VER)
#define STF_RESTRICT __restrict
#else
#define STF_RESTRICT
#endif

namespace synctalk_fast {
inline namespace STF_ISA_NS {

using cplx = std::complex<double>;

// kLanes doubles operated on lane-wise (one transform per lane); doubles
// broadcast in mixed expressions. One SIMD register: 4 lanes with AVX, 2 with
// SSE2 / NEON (each ISA build has its own copy, see isa.hpp).
#if defined(__AVX__)
constexpr int kLanes = 4;
#else
constexpr int kLanes = 2;
#endif
#if defined(__GNUC__) || defined(__clang__)
typedef double f64xN __attribute__((vector_size(8 * kLanes)));
#else
struct f64xN {
    double v[kLanes];
    double& operator[](int i) { return v[i]; }
    double operator[](int i) const { return v[i]; }
#define STF_LANEWISE(expr)              \
    f64xN r;                            \
    for (int i = 0; i < kLanes; ++i) r.v[i] = expr; \
    return r;
    friend f64xN operator+(f64xN a, f64xN b) { STF_LANEWISE(a.v[i] + b.v[i]) }
    friend f64xN operator-(f64xN a, f64xN b) { STF_LANEWISE(a.v[i] - b.v[i]) }
    friend f64xN operator*(f64xN a, f64xN b) { STF_LANEWISE(a.v[i] * b.v[i]) }
    friend f64xN operator*(double a, f64xN b) { STF_LANEWISE(a * b.v[i]) }
    friend f64xN operator*(f64xN a, double b) { STF_LANEWISE(a.v[i] * b) }
    friend f64xN operator-(f64xN a) { STF_LANEWISE(-a.v[i]) }
#undef STF_LANEWISE
    f64xN& operator+=(f64xN b) { return *this = *this + b; }
};
#endif

namespace detail {

constexpr double kPi = 3.14159265358979323846;

// exp(-2 pi i k / n), computed directly (no recurrence) for full accuracy.
inline cplx unit_root(std::size_t k, std::size_t n) {
    const double a = -2.0 * kPi * static_cast<double>(k) / static_cast<double>(n);
    return {std::cos(a), std::sin(a)};
}

inline std::size_t checked_length(std::size_t n) {
    std::size_t rest = n;
    for (std::size_t p : {2, 3, 5})
        while (rest > 1 && rest % p == 0) rest /= p;
    if (n == 0 || rest != 1)
        throw std::invalid_argument("FFT length " + std::to_string(n) + " has a prime factor other than 2, 3, 5");
    return n;
}

// p-point forward DFT of (xr, xi) written to or[q * L], oi[q * L].
template <int P, typename T>
inline void butterfly(const T* xr, const T* xi, T* or_, T* oi, std::size_t L) {
    if constexpr (P == 2) {
        or_[0] = xr[0] + xr[1], oi[0] = xi[0] + xi[1];
        or_[L] = xr[0] - xr[1], oi[L] = xi[0] - xi[1];
    } else if constexpr (P == 3) {
        const double s = 0.86602540378443864676;  // sin(2 pi / 3)
        const T tr = xr[1] + xr[2], ti = xi[1] + xi[2];
        const T mr = xr[0] - 0.5 * tr, mi = xi[0] - 0.5 * ti;
        const T dr = s * (xi[1] - xi[2]), di = -(s * (xr[1] - xr[2]));  // -i s (x1 - x2)
        or_[0] = xr[0] + tr, oi[0] = xi[0] + ti;
        or_[L] = mr + dr, oi[L] = mi + di;
        or_[2 * L] = mr - dr, oi[2 * L] = mi - di;
    } else if constexpr (P == 4) {
        const T t0r = xr[0] + xr[2], t0i = xi[0] + xi[2], t1r = xr[0] - xr[2], t1i = xi[0] - xi[2];
        const T t2r = xr[1] + xr[3], t2i = xi[1] + xi[3];
        const T t3r = xi[1] - xi[3], t3i = -(xr[1] - xr[3]);  // -i (x1 - x3)
        or_[0] = t0r + t2r, oi[0] = t0i + t2i;
        or_[L] = t1r + t3r, oi[L] = t1i + t3i;
        or_[2 * L] = t0r - t2r, oi[2 * L] = t0i - t2i;
        or_[3 * L] = t1r - t3r, oi[3 * L] = t1i - t3i;
    } else {
        const double c1 = 0.30901699437494742410, c2 = -0.80901699437494742410;  // cos(2pi/5), cos(4pi/5)
        const double s1 = 0.95105651629515357212, s2 = 0.58778525229247312917;   // sin(2pi/5), sin(4pi/5)
        const T t1r = xr[1] + xr[4], t1i = xi[1] + xi[4], t2r = xr[2] + xr[3], t2i = xi[2] + xi[3];
        const T d1r = xr[1] - xr[4], d1i = xi[1] - xi[4], d2r = xr[2] - xr[3], d2i = xi[2] - xi[3];
        const T m1r = xr[0] + c1 * t1r + c2 * t2r, m1i = xi[0] + c1 * t1i + c2 * t2i;
        const T m2r = xr[0] + c2 * t1r + c1 * t2r, m2i = xi[0] + c2 * t1i + c1 * t2i;
        // n = -i (s d): (s d).imag, -(s d).real
        const T n1r = s1 * d1i + s2 * d2i, n1i = -(s1 * d1r + s2 * d2r);
        const T n2r = s2 * d1i - s1 * d2i, n2i = -(s2 * d1r - s1 * d2r);
        or_[0] = xr[0] + t1r + t2r, oi[0] = xi[0] + t1i + t2i;
        or_[L] = m1r + n1r, oi[L] = m1i + n1i;
        or_[2 * L] = m2r + n2r, oi[2 * L] = m2i + n2i;
        or_[3 * L] = m2r - n2r, oi[3 * L] = m2i - n2i;
        or_[4 * L] = m1r - n1r, oi[4 * L] = m1i - n1i;
    }
}

}  // namespace detail

// Complex forward DFT (sign -1, unnormalised) of a fixed length whose prime
// factors are 2, 3 and 5, on split real/imaginary arrays of T.
template <typename T>
class ComplexFFT {
  public:
    explicit ComplexFFT(std::size_t n) : n_(detail::checked_length(n)) {
        std::size_t rest = n;
        std::size_t L = 1;
        for (int p : {4, 2, 3, 5}) {
            for (; rest % p == 0; rest /= p) {
                // Stage combining p sub-transforms of length L into one of
                // L * p; twiddles W_{Lp}^{r k} stored as [r - 1][k].
                stages_.push_back({p, L, n / (L * p), tw_re_.size()});
                for (int r = 1; r < p; ++r)
                    for (std::size_t k = 0; k < L; ++k) {
                        const cplx w = detail::unit_root(r * k, L * p);
                        tw_re_.push_back(w.real());
                        tw_im_.push_back(w.imag());
                    }
                L *= p;
            }
        }
    }

    std::size_t size() const { return n_; }

    // in: n values (not modified), out: n values, work: n values of scratch
    // (each as separate real and imaginary arrays). in may alias out; work
    // must not alias either.
    void forward(const T* in_re, const T* in_im, T* out_re, T* out_im, T* work_re, T* work_im) const {
        if (stages_.empty()) {  // n == 1
            out_re[0] = in_re[0], out_im[0] = in_im[0];
            return;
        }
        // Ping-pong between out and work so that the last stage lands in out.
        T* bre[2] = {out_re, work_re};
        T* bim[2] = {out_im, work_im};
        int dst = (stages_.size() % 2 == 1) ? 0 : 1;
        const T *sre = in_re, *sim = in_im;
        if (in_re == bre[dst] || in_im == bim[dst]) {  // the first stage would overwrite its input
            std::copy(in_re, in_re + n_, work_re);
            std::copy(in_im, in_im + n_, work_im);
            sre = work_re, sim = work_im;
        }
        for (const Stage& st : stages_) {
            switch (st.p) {
                case 2: stage<2>(st, sre, sim, bre[dst], bim[dst]); break;
                case 3: stage<3>(st, sre, sim, bre[dst], bim[dst]); break;
                case 4: stage<4>(st, sre, sim, bre[dst], bim[dst]); break;
                default: stage<5>(st, sre, sim, bre[dst], bim[dst]); break;
            }
            sre = bre[dst], sim = bim[dst];
            dst ^= 1;
        }
    }

  private:
    struct Stage {
        int p;               // radix
        std::size_t L;       // length of the sub-transforms combined
        std::size_t S;       // number of output sub-transforms (n / (L * p))
        std::size_t tw_ofs;  // first twiddle of this stage
    };

    // Layout invariant: before a stage, a[j * L + k] holds bin k of the DFT of
    // the subsequence x[j], x[j + S*p], ...; after it b[j * L*p + k] does the
    // same for length L*p and j < S. Output j takes its p inputs from
    // a[(j + r*S) * L + k], twiddled by W_{Lp}^{r k}. The first stage (L == 1)
    // has unit twiddles and skips the products.
    template <int P>
    void stage(const Stage& st, const T* STF_RESTRICT ar, const T* STF_RESTRICT ai, T* STF_RESTRICT br,
               T* STF_RESTRICT bi) const {
        const std::size_t L = st.L, S = st.S, step = S * L;
        T xr[P], xi[P];
        if (L == 1) {
            for (std::size_t j = 0; j < S; ++j) {
                for (int r = 0; r < P; ++r) xr[r] = ar[j + r * step], xi[r] = ai[j + r * step];
                detail::butterfly<P>(xr, xi, br + j * P, bi + j * P, 1);
            }
            return;
        }
        const double* STF_RESTRICT twr = tw_re_.data() + st.tw_ofs;
        const double* STF_RESTRICT twi = tw_im_.data() + st.tw_ofs;
        for (std::size_t j = 0; j < S; ++j) {
            const T *inr = ar + j * L, *ini = ai + j * L;
            T *outr = br + j * L * P, *outi = bi + j * L * P;
            for (std::size_t k = 0; k < L; ++k) {
                xr[0] = inr[k], xi[0] = ini[k];
                for (int r = 1; r < P; ++r) {
                    const T vr = inr[k + r * step], vi = ini[k + r * step];
                    const double wr = twr[(r - 1) * L + k], wi = twi[(r - 1) * L + k];
                    xr[r] = vr * wr - vi * wi;
                    xi[r] = vr * wi + vi * wr;
                }
                detail::butterfly<P>(xr, xi, outr + k, outi + k, L);
            }
        }
    }

    std::size_t n_;
    std::vector<Stage> stages_;
    std::vector<double> tw_re_, tw_im_;
};

// Real forward DFT of length n (factors 2, 3, 5): n/2 + 1 bins, the same
// values as numpy.fft.rfft. Even n runs a complex transform of n/2 points.
template <typename T>
class RealFFT {
  public:
    explicit RealFFT(std::size_t n)
        : n_(detail::checked_length(n)), half_(n % 2 == 0), cfft_(half_ ? n / 2 : n) {
        if (half_)
            for (std::size_t k = 0; k <= n / 2; ++k) {
                const cplx w = detail::unit_root(k, n);
                post_re_.push_back(w.real());
                post_im_.push_back(w.imag());
            }
    }

    std::size_t size() const { return n_; }
    std::size_t bins() const { return n_ / 2 + 1; }
    // Scratch each call needs, in values of T.
    std::size_t work_size() const { return 4 * cfft_.size(); }

    // x: n reals; (Xr, Xi): n/2 + 1 bins; work: work_size() values.
    void forward(const T* x, T* Xr, T* Xi, T* work) const {
        const std::size_t m = cfft_.size();
        T *zr = work, *zi = work + m, *wr = work + 2 * m, *wi = work + 3 * m;
        if (!half_) {
            std::fill(zi, zi + m, T{});
            cfft_.forward(x, zi, zr, zi, wr, wi);
            std::copy(zr, zr + bins(), Xr);
            std::copy(zi, zi + bins(), Xi);
            return;
        }
        for (std::size_t i = 0; i < m; ++i) zr[i] = x[2 * i], zi[i] = x[2 * i + 1];
        cfft_.forward(zr, zi, zr, zi, wr, wi);
        // Split Z into the transforms of the even and odd samples:
        // E_k = (Z_k + conj Z_{m-k}) / 2, O_k = -i (Z_k - conj Z_{m-k}) / 2,
        // X_k = E_k + W_n^k O_k for k = 0..m (Z_m = Z_0).
        Xr[0] = zr[0] + zi[0], Xi[0] = T{};
        Xr[m] = zr[0] - zi[0], Xi[m] = T{};
        for (std::size_t k = 1; k < m; ++k) {
            const T er = 0.5 * (zr[k] + zr[m - k]), ei = 0.5 * (zi[k] - zi[m - k]);
            const T orr = 0.5 * (zi[k] + zi[m - k]), oi = -(0.5 * (zr[k] - zr[m - k]));
            Xr[k] = er + (post_re_[k] * orr - post_im_[k] * oi);
            Xi[k] = ei + (post_re_[k] * oi + post_im_[k] * orr);
        }
    }

  private:
    std::size_t n_;
    bool half_;
    ComplexFFT<T> cfft_;
    std::vector<double> post_re_, post_im_;
};

}  // namespace STF_ISA_NS
}  // namespace synctalk_fast
