// pybind11 binding of the GLCM kernel: the only file that sees Python.
//
// Arrays are taken as they are (no forcecast, no copy: any strides, including negative ones);
// arguments are checked with the GIL held, the loop runs with it released.
// std::invalid_argument becomes ValueError (pybind11's standard translation).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <optional>
#include <stdexcept>
#include <string>
#include <tuple>

#include "glcm.hpp"

namespace py = pybind11;
namespace g = coalmine::glcm;

namespace {

g::Raster as_raster(const py::array& levels) {
    if (!levels.dtype().is(py::dtype::of<std::uint8_t>())) {
        throw py::type_error("levels must be a uint8 array of quantized levels, got dtype " +
                             std::string(py::str(levels.dtype())) + ".");
    }
    if (levels.ndim() != 2) {
        throw std::invalid_argument("levels must be a 2-D array (rows, cols), got " +
                                    std::to_string(levels.ndim()) + " dimensions.");
    }
    g::Raster r;
    r.data = static_cast<const std::uint8_t*>(levels.data());
    r.rows = levels.shape(0);
    r.cols = levels.shape(1);
    r.row_stride = levels.strides(0);
    r.col_stride = levels.strides(1);
    return r;
}

py::array_t<float> features(const py::array& levels, int n_levels, int window, int distance,
                            std::optional<int> nodata, std::optional<int> threads,
                            std::optional<std::tuple<py::ssize_t, py::ssize_t, py::ssize_t, py::ssize_t>> region) {
    const g::Raster r = as_raster(levels);
    g::Params p;
    p.n_levels = n_levels;
    p.window = window;
    p.distance = distance;
    p.nodata = nodata ? *nodata : g::kNoNodata;
    p.threads = threads ? *threads : g::hardware_threads();
    g::check_params(p);
    g::Region reg{0, 0, r.rows, r.cols};
    if (region) std::tie(reg.row_off, reg.col_off, reg.height, reg.width) = *region;
    g::check_region(r, reg);
    py::array_t<float> out({static_cast<py::ssize_t>(g::kFeatures), reg.height, reg.width});
    float* dst = out.mutable_data();
    {
        // `levels` and `out` stay referenced by this frame while the GIL is released.
        py::gil_scoped_release release;
        g::compute(r, reg, p, dst);
    }
    return out;
}

void check_levels(const py::array& levels, int n_levels, std::optional<int> nodata,
                  std::optional<int> threads) {
    const g::Raster r = as_raster(levels);
    g::Params p;
    p.n_levels = n_levels;
    p.nodata = nodata ? *nodata : g::kNoNodata;
    p.threads = threads ? *threads : g::hardware_threads();
    g::check_params(p);
    py::gil_scoped_release release;
    g::check_levels(r, p);
}

}  // namespace

PYBIND11_MODULE(_glcm, m) {
    m.doc() = "Private compiled GLCM kernel; use coalmine.runtime.texture instead.";
    m.attr("N_FEATURES") = static_cast<int>(g::kFeatures);
    py::tuple names(static_cast<py::size_t>(g::kFeatures));
    for (int f = 0; f < g::kFeatures; ++f) names[static_cast<py::size_t>(f)] = py::str(g::kFeatureNames[f]);
    m.attr("FEATURES") = names;
    m.attr("MIN_WINDOW") = g::kMinWindow;
    m.attr("MAX_WINDOW") = g::kMaxWindow;
    m.attr("MIN_LEVELS") = g::kMinLevels;
    m.attr("MAX_LEVELS") = g::kMaxLevels;
    m.def("features", &features, py::arg("levels"), py::arg("n_levels"), py::arg("window"),
          py::arg("distance"), py::arg("nodata"), py::arg("threads") = py::none(),
          py::arg("region") = py::none(),
          "Ten GLCM features (float32, shape (10, h, w)) of the pixels of `region` "
          "(row_off, col_off, height, width; default: the whole raster).");
    m.def("check_levels", &check_levels, py::arg("levels"), py::arg("n_levels"),
          py::arg("nodata"), py::arg("threads") = py::none(),
          "Raise ValueError naming the first pixel that is neither a level below n_levels nor nodata.");
    m.def("hardware_threads", &g::hardware_threads, "Number of hardware threads (at least 1).");
}
