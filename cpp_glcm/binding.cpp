// Scaffold: replaced by the GLCM kernel work (issue 2).
#include <pybind11/pybind11.h>
#include "glcm.hpp"
PYBIND11_MODULE(_glcm, m) { m.attr("N_FEATURES") = coalmine::glcm::kFeatures; }
