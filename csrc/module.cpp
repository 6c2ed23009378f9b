#include <pybind11/pybind11.h>

#include "bindings.hpp"

PYBIND11_MODULE(_core, m) {
    m.doc() = "synctalk_fast compiled kernels (private; use the synctalk_fast API)";
    bind_info(m);
    bind_audio(m);
    bind_image(m);
}
