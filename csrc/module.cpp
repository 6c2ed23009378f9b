#include <pybind11/pybind11.h>

#include "bindings.hpp"

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

static py::dict build_info() {
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
    d["cplusplus"] = static_cast<long>(__cplusplus);
    return d;
}

PYBIND11_MODULE(_core, m) {
    m.doc() = "synctalk_fast compiled kernels (private; use the synctalk_fast API)";
    m.def("build_info", &build_info, "Compiler, flags and target of this build.");
    bind_audio(m);
    bind_image(m);
}
