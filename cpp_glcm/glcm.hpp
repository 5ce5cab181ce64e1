// GLCM texture kernel: the ten omnidirectional grey-level co-occurrence features of every pixel,
// computed in a sliding window. Plain C++17, no Python headers (the binding lives in binding.cpp).
//
// Conventions (../shared/ARCHITECTURE.md, section GLCM): offsets (0,d), (d,d), (d,0), (d,-d), each
// pair counted in both orders and all four pooled into one matrix normalised to sum 1. A pair counts
// only when both pixels lie inside the window (clipped at the raster edge, never padded) and neither
// is nodata.
#pragma once

#include <cstddef>
#include <cstdint>

namespace coalmine {
namespace glcm {

//! The ten features, in output order. Their names are coalmine.runtime.bands.GLCM_FEATURES (the one
//! home of the band layout); the binding exports kFeatureNames so a test can hold the two equal.
enum Feature : int {
    kContrast,
    kDissimilarity,
    kHomogeneity,
    kAsm,
    kEnergy,
    kMaxProb,
    kEntropy,
    kGlcmMean,
    kGlcmVariance,
    kCorrelation,
    kFeatures  // the count
};
constexpr const char* kFeatureNames[kFeatures] = {
    "contrast", "dissimilarity", "homogeneity", "asm", "energy",
    "max_prob", "entropy", "glcm_mean", "glcm_variance", "correlation",
};
constexpr int kMinWindow = 3;
constexpr int kMaxWindow = 31;
constexpr int kMinLevels = 2;
constexpr int kMaxLevels = 255;
//! Pass as `nodata` when no level value means "no data".
constexpr int kNoNodata = -1;

//! A read-only 2-D uint8 raster with arbitrary (even negative) byte strides.
struct Raster {
    const std::uint8_t* data = nullptr;
    std::ptrdiff_t rows = 0;
    std::ptrdiff_t cols = 0;
    std::ptrdiff_t row_stride = 0;  // bytes between rows
    std::ptrdiff_t col_stride = 1;  // bytes between columns
};

struct Params {
    int n_levels = 32;
    int window = 9;
    int distance = 4;
    int nodata = 255;  // 0..255, or kNoNodata
    int threads = 1;   // >= 1
};

//! The part of the raster whose features are wanted (the window around each pixel may reach
//! outside it, into the rest of the raster).
struct Region {
    std::ptrdiff_t row_off = 0;
    std::ptrdiff_t col_off = 0;
    std::ptrdiff_t height = 0;
    std::ptrdiff_t width = 0;
};

//! Throw std::invalid_argument (with a full-sentence message) if the parameters are out of range.
void check_params(const Params& p);

//! Throw std::invalid_argument if the region does not lie inside the raster.
void check_region(const Raster& r, const Region& g);

//! Throw std::invalid_argument naming the first pixel (row-major) whose value is neither a level
//! below n_levels nor nodata. Scans with `threads` threads.
void check_levels(const Raster& r, const Params& p);

//! Compute the features of every pixel of `region` into `out`, a C-contiguous float32 array of
//! shape (kFeatures, region.height, region.width). Validates the parameters and the level values
//! first. The result is a function of the window contents only (all running state is integer),
//! so it is bit-identical for any thread count and for any region that contains the pixel.
void compute(const Raster& raster, const Region& region, const Params& params, float* out);

//! Number of hardware threads (at least 1).
int hardware_threads();

}  // namespace glcm
}  // namespace coalmine
