// One bind_<area>() per area; module.cpp only calls them.
#pragma once

#include <pybind11/pybind11.h>

void bind_info(pybind11::module_& m);
void bind_audio(pybind11::module_& m);
void bind_image(pybind11::module_& m);
