#include <cstdlib>
#include <stdexcept>
#include <string>

#include "kernels.hpp"

namespace synctalk_fast {
namespace {

bool cpu_has_avx2() {
#if defined(STF_HAVE_AVX2)
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return false;
#endif
}

const KernelTable& choose() {
    const char* env = std::getenv("SYNCTALK_FAST_ISA");
    const std::string want = env ? env : "";
    if (want == "generic") return kernel_table_generic();
    if (want == "avx2" || want.empty()) {
#if defined(STF_HAVE_AVX2)
        if (cpu_has_avx2()) return kernel_table_avx2();
#endif
        if (want.empty()) return kernel_table_generic();
        throw std::runtime_error("SYNCTALK_FAST_ISA=avx2, but this build or CPU has no AVX2 + FMA kernels");
    }
    throw std::runtime_error("SYNCTALK_FAST_ISA='" + want + "' is not one of generic, avx2");
}

}  // namespace

const KernelTable& kernels() {
    static const KernelTable& table = choose();  // once per process (thread-safe static)
    return table;
}

}  // namespace synctalk_fast
