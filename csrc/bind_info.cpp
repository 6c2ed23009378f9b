#include <pybind11/pybind11.h>

#include <string>

#include "bindings.hpp"
#include "kernels.hpp"

namespace py = pybind11;

#ifndef STF_VERSION
#define STF_VERSION "unknown"
#endif
#ifndef STF_COMPILE_FLAGS
#define STF_COMPILE_FLAGS ""
#endif
#ifndef STF_SYSTEM_PROCESSOR
#define STF_SYSTEM_PROCESSOR ""
#endif

namespace {

py::dict build_info() {
    py::dict d;
    d["version"] = STF_VERSION;
#if defined(__clang__)
    d["compiler"] = "clang " __clang_version__;
#elif defined(__GNUC__)
    d["compiler"] = "gcc " __VERSION__;
#elif defined(_MSC_VER)
    d["compiler"] = "msvc " + std::to_string(_MSC_VER);
#else
    d["compiler"] = "unknown";
#endif
    d["flags"] = STF_COMPILE_FLAGS;
    d["processor"] = STF_SYSTEM_PROCESSOR;
#ifdef STF_HAVE_AVX2
    d["isa_builds"] = "generic, avx2";
#else
    d["isa_builds"] = "generic";
#endif
    d["isa"] = synctalk_fast::kernels().isa;
    return d;
}

}  // namespace

void bind_info(py::module_& m) {
    synctalk_fast::kernels();  // choose the kernels now: a bad SYNCTALK_FAST_ISA fails the import, not a call
    m.def("build_info", &build_info, "Compiler, flags, target and kernel instruction set of this build.");
    m.def("isa", [] { return std::string(synctalk_fast::kernels().isa); },
          "Instruction set of the kernels in use: 'avx2' or 'generic'.");
}
