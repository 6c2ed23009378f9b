#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>

#include "bindings.hpp"
#include "kernels.hpp"

namespace py = pybind11;
namespace stf = synctalk_fast;

namespace {

using u8_in = py::array_t<uint8_t, py::array::c_style | py::array::forcecast>;
using f32_in = py::array_t<float, py::array::c_style | py::array::forcecast>;

std::string shape_str(const py::array& a) {
    std::string s = "(";
    for (py::ssize_t i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
    return s + (a.ndim() == 1 ? ",)" : ")");
}

void check_frame(const char* fn, const py::array& f) {
    if (f.ndim() != 3 || f.shape(2) != 3)
        throw py::value_error(std::string(fn) + ": frame must be uint8 [H, W, 3] (BGR), got shape " + shape_str(f));
}

void check_box(const char* fn, const py::array& f, int x0, int y0, int x1, int y1) {
    const auto H = static_cast<int>(f.shape(0)), W = static_cast<int>(f.shape(1));
    if (!(0 <= x0 && x0 < x1 && x1 <= W && 0 <= y0 && y0 < y1 && y1 <= H))
        throw py::value_error(std::string(fn) + ": box (" + std::to_string(x0) + ", " + std::to_string(y0) + ", " +
                              std::to_string(x1) + ", " + std::to_string(y1) + ") is empty or not inside the " +
                              std::to_string(W) + "x" + std::to_string(H) + " frame");
}

// Output buffers are written in place, so they must be exactly the layout
// the kernel writes: no silent conversion into a temporary copy.
template <typename T>
void check_writable(const char* fn, const char* what, const py::array& a, std::initializer_list<py::ssize_t> shape) {
    if (!py::isinstance<py::array_t<T>>(a) || !(a.flags() & py::array::c_style) || !a.writeable())
        throw py::value_error(std::string(fn) + ": " + what + " must be a writable C-contiguous " +
                              (sizeof(T) == 1 ? "uint8" : "float32") + " array");
    bool ok = static_cast<std::size_t>(a.ndim()) == shape.size();
    py::ssize_t i = 0;
    for (auto s : shape) {  // s < 0: any size
        ok = ok && (s < 0 || a.shape(i) == s);
        ++i;
    }
    if (!ok) throw py::value_error(std::string(fn) + ": " + what + " has shape " + shape_str(a));
}

py::array_t<uint8_t> resize_cubic(const u8_in& src, int width, int height) {
    if (src.ndim() != 2 && src.ndim() != 3)
        throw py::value_error("resize_cubic: src must be uint8 [H, W] or [H, W, C], got shape " + shape_str(src));
    if (width <= 0 || height <= 0 || src.shape(0) == 0 || src.shape(1) == 0)
        throw py::value_error("resize_cubic: sizes must be positive");
    const int h = static_cast<int>(src.shape(0)), w = static_cast<int>(src.shape(1));
    const int cn = src.ndim() == 3 ? static_cast<int>(src.shape(2)) : 1;
    std::vector<py::ssize_t> shape = {height, width};
    if (src.ndim() == 3) shape.push_back(cn);
    py::array_t<uint8_t> out(shape);
    const uint8_t* s = src.data();
    uint8_t* d = out.mutable_data();
    {
        py::gil_scoped_release release;  // pure C++ on held buffers
        stf::kernels().resize_cubic(s, h, w, static_cast<std::ptrdiff_t>(w) * cn, cn, d, height, width,
                                    static_cast<std::ptrdiff_t>(width) * cn);
    }
    return out;
}

void prepare_input(const u8_in& frame, int x0, int y0, int x1, int y1, const py::array& out) {
    check_frame("prepare_input", frame);
    check_box("prepare_input", frame, x0, y0, x1, y1);
    check_writable<float>("prepare_input", "out", out, {6, 320, 320});
    const uint8_t* src = frame.data();
    float* dst = static_cast<float*>(const_cast<void*>(out.data()));
    const std::ptrdiff_t stride = frame.strides(0);
    {
        py::gil_scoped_release release;  // frames are prepared from worker threads in parallel
        stf::kernels().prepare_input(src, stride, x0, y0, x1, y1, dst);
    }
}

void paste_back(const py::array& frame, int x0, int y0, int x1, int y1, const f32_in& pred, int feather) {
    check_writable<uint8_t>("paste_back", "frame", frame, {-1, -1, 3});
    check_box("paste_back", frame, x0, y0, x1, y1);
    if (pred.ndim() != 3 || pred.shape(0) != 3 || pred.shape(1) != 320 || pred.shape(2) != 320)
        throw py::value_error("paste_back: pred must be float32 [3, 320, 320], got shape " + shape_str(pred));
    if (feather < 0) throw py::value_error("paste_back: feather must be >= 0");
    uint8_t* img = static_cast<uint8_t*>(const_cast<void*>(frame.data()));
    const float* p = pred.data();
    const std::ptrdiff_t stride = frame.strides(0);
    {
        py::gil_scoped_release release;  // frames are pasted from worker threads in parallel
        stf::kernels().paste_back(img, stride, x0, y0, x1, y1, p, feather);
    }
}

}  // namespace

void bind_image(py::module_& m) {
    m.def("resize_cubic", &resize_cubic, py::arg("src"), py::arg("width"), py::arg("height"),
          "cv2.resize(src, (width, height), interpolation=INTER_CUBIC), bit-exact with OpenCV's scalar path.");
    m.def("prepare_input", &prepare_input, py::arg("frame"), py::arg("x0"), py::arg("y0"), py::arg("x1"),
          py::arg("y1"), py::arg("out"),
          "numerics section 3.1-3.4: BGR uint8 [H, W, 3] frame and box -> out float32 [6, 320, 320] (written in place).");
    m.def("paste_back", &paste_back, py::arg("frame"), py::arg("x0"), py::arg("y0"), py::arg("x1"), py::arg("y1"),
          py::arg("pred"), py::arg("feather") = 0,
          "numerics section 3.6-3.7: paste pred float32 [3, 320, 320] into the BGR uint8 frame at the box, in place.");
}
