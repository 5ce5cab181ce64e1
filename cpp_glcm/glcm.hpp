// Scaffold: replaced by the GLCM kernel work (issue 2).
#pragma once
#include <cstdint>
#include <cstddef>
namespace coalmine { namespace glcm {
constexpr int kFeatures = 10;
}}
