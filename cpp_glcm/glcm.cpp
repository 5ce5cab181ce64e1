// GLCM texture kernel: incremental sliding window with integer running state.
//
// Why integer state: every running quantity is an exact integer (counts, sums of integer functions
// of the level pair, and fixed-point sums for the two non-integer ones, c·ln c and 1/(1+k²)), so
// the features of a pixel depend only on its window's contents, never on the order in which pairs
// were added and removed. That makes results bit-identical for any thread count and for any block
// (+ halo) that contains the pixel, and free of drift along long rows.
//
// Why only one triangle: each pair (a, b) is counted in both orders, so the matrix M is symmetric.
// We keep one cell per unordered level pair: an off-diagonal cell stands for two equal entries of M
// (weight 2, +1 per pair), a diagonal cell for one entry that grows by 2 per pair. One pair is thus
// one cell update instead of two.
#include "glcm.hpp"

#include <algorithm>
#include <cmath>
#include <exception>
#include <limits>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace coalmine {
namespace glcm {

namespace {

// Fixed-point scale for the two real-valued running sums (2^40). The largest sum, Σ M ln M over a
// 31×31 window at d=1, is below 2^17, so the scaled sums stay far inside int64, and the rounding
// error (≤ 2^-41 per cell) is many orders below float32 resolution.
constexpr double kFixed = 1099511627776.0;
constexpr double kInvFixed = 1.0 / kFixed;

// The most pairs one window can hold, over all four offsets.
std::int64_t max_pairs(int w, int d) {
    const std::int64_t a = w, b = w - d;
    return 2 * a * b + 2 * b * b;
}

struct Tables {
    int L = 0;
    std::vector<std::int64_t> mlnm;   // round(v ln v · 2^40) for M-values v = 0..vmax
    std::vector<std::int64_t> hom;    // round(2^40 / (1 + k²)) for k = 0..L-1
    std::vector<std::int32_t> sq;     // a² for a = 0..L-1

    Tables(int levels, std::int64_t vmax) : L(levels) {
        mlnm.resize(static_cast<std::size_t>(vmax) + 3);
        mlnm[0] = 0;
        for (std::size_t v = 1; v < mlnm.size(); ++v) {
            const double x = static_cast<double>(v);
            mlnm[v] = std::llround(x * std::log(x) * kFixed);
        }
        hom.resize(L);
        sq.resize(L);
        for (int k = 0; k < L; ++k) {
            hom[k] = std::llround(kFixed / (1.0 + static_cast<double>(k) * k));
            sq[k] = k * k;
        }
    }
};

// The co-occurrence state of one window plus all running sums the ten features need.
class Window {
public:
    Window(const Tables& t, std::int64_t vmax)
        : t_(t),
          L_(t.L),
          cell_(static_cast<std::size_t>(t.L) * t.L, 0),
          hist_(static_cast<std::size_t>(vmax) + 3, 0) {}

    void clear() {
        std::fill(cell_.begin(), cell_.end(), 0);
        std::fill(hist_.begin(), hist_.end(), 0);
        maxv_ = 0;
        np_ = s1_ = s2_ = c1_ = c2_ = sumsq_ = mlnm_ = hom_ = 0;
    }

    template <bool Add>
    inline void pair(int a, int b) {
        if (a > b) std::swap(a, b);
        const int k = b - a;
        const bool diag = (k == 0);
        const int inc = diag ? 2 : 1;     // change of the M entry
        const std::int64_t w = diag ? 1 : 2;  // how many entries of M the cell stands for
        std::int32_t& c = cell_[static_cast<std::size_t>(a) * L_ + b];
        const std::int32_t old = c;
        const std::int32_t nw = Add ? old + inc : old - inc;
        c = nw;
        sumsq_ += w * (static_cast<std::int64_t>(nw) * nw - static_cast<std::int64_t>(old) * old);
        mlnm_ += w * (t_.mlnm[nw] - t_.mlnm[old]);
        --hist_[old];
        ++hist_[nw];
        const std::int64_t sgn = Add ? 1 : -1;
        np_ += sgn;
        s1_ += sgn * (a + b);
        s2_ += sgn * (t_.sq[a] + t_.sq[b]);
        c1_ += sgn * k;
        c2_ += sgn * t_.sq[k];
        hom_ += sgn * t_.hom[k];
        if (Add) {
            if (nw > maxv_) maxv_ = nw;
        } else if (old == maxv_ && hist_[old] == 0) {
            // The maximum can only fall; walk down to the next value still held by a cell.
            while (maxv_ > 0 && hist_[maxv_] == 0) --maxv_;
        }
    }

    // Write the ten features of the current window into out[f * plane].
    void emit(float* out, std::size_t plane) const {
        if (np_ == 0) {
            const float nan = std::numeric_limits<float>::quiet_NaN();
            for (int f = 0; f < kFeatures; ++f) out[f * plane] = nan;
            return;
        }
        const std::int64_t n = 2 * np_;  // entries of M: each pair counted in both orders
        const double dn = static_cast<double>(n);
        const double dnp = static_cast<double>(np_);
        const double asm_ = static_cast<double>(sumsq_) / (dn * dn);
        // -Σ p ln p = (N ln N − Σ M ln M) / N, both terms from the same fixed-point table, so
        // the difference is exact integer arithmetic (a constant window gives exactly 0).
        const double entropy = static_cast<double>(t_.mlnm[n] - mlnm_) * kInvFixed / dn;
        // n²·variance and n²·covariance are exact integers: no cancellation.
        const std::int64_t var_n2 = s2_ * n - s1_ * s1_;
        const double corr =
            var_n2 == 0 ? 1.0
                        : 1.0 - static_cast<double>(c2_) * dn / static_cast<double>(var_n2);
        out[0 * plane] = static_cast<float>(static_cast<double>(c2_) / dnp);
        out[1 * plane] = static_cast<float>(static_cast<double>(c1_) / dnp);
        out[2 * plane] = static_cast<float>(static_cast<double>(hom_) * kInvFixed / dnp);
        out[3 * plane] = static_cast<float>(asm_);
        out[4 * plane] = static_cast<float>(std::sqrt(asm_));
        out[5 * plane] = static_cast<float>(static_cast<double>(maxv_) / dn);
        out[6 * plane] = static_cast<float>(entropy > 0.0 ? entropy : 0.0);
        out[7 * plane] = static_cast<float>(static_cast<double>(s1_) / dn);
        out[8 * plane] = static_cast<float>(static_cast<double>(var_n2) / (dn * dn));
        out[9 * plane] = static_cast<float>(corr);
    }

private:
    const Tables& t_;
    const int L_;
    std::vector<std::int32_t> cell_;  // upper triangle (a <= b) used; M-value of the cell
    std::vector<std::int32_t> hist_;  // number of cells holding each M-value (count of counts)
    std::int32_t maxv_ = 0;           // largest M-value held by any cell
    std::int64_t np_ = 0;             // unordered pairs (M sums to 2·np_)
    std::int64_t s1_ = 0;             // Σ over pairs of a + b      (= Σ i·M)
    std::int64_t s2_ = 0;             // Σ over pairs of a² + b²    (= Σ i²·M)
    std::int64_t c1_ = 0;             // Σ over pairs of |a − b|    (= Σ |i−j|·M / 2)
    std::int64_t c2_ = 0;             // Σ over pairs of (a − b)²   (= Σ (i−j)²·M / 2)
    std::int64_t sumsq_ = 0;          // Σ M²
    std::int64_t mlnm_ = 0;           // Σ M ln M, fixed point
    std::int64_t hom_ = 0;            // Σ over pairs of 1/(1 + (a−b)²), fixed point
};

// Pixel access through precomputed row pointers (arbitrary strides).
struct Pixels {
    std::vector<const std::uint8_t*> row;
    std::ptrdiff_t cs = 1;
    inline int at(std::ptrdiff_t r, std::ptrdiff_t c) const { return row[r][c * cs]; }
};

// Add (or remove) every pair that has one pixel in column c and the other inside the rectangle
// rows [r0, r1] × columns [c0, c1]; the rectangle contains c. The partner column of the horizontal
// and diagonal offsets is pc = c ± d: when removing the leftmost column c = c0 the partners lie at
// c + d (valid if <= c1); when adding the rightmost column c = c1 they lie at c − d (valid if
// >= c0). For the diagonals, (d,d) pairs then sit one way and (d,−d) pairs the other, so both
// "partner d rows below" and "partner d rows above" appear. Vertical pairs lie inside column c.
template <bool Add>
void column_pairs(Window& win, const Pixels& px, std::ptrdiff_t c, std::ptrdiff_t pc, bool pc_ok,
                  std::ptrdiff_t r0, std::ptrdiff_t r1, int d, int nodata) {
    for (std::ptrdiff_t r = r0; r <= r1; ++r) {
        const int a = px.at(r, c);
        if (a == nodata) continue;
        const bool below = r + d <= r1;
        if (below) {
            const int b = px.at(r + d, c);
            if (b != nodata) win.pair<Add>(a, b);
        }
        if (pc_ok) {
            int b = px.at(r, pc);
            if (b != nodata) win.pair<Add>(a, b);
            if (below) {
                b = px.at(r + d, pc);
                if (b != nodata) win.pair<Add>(a, b);
            }
            if (r - d >= r0) {
                b = px.at(r - d, pc);
                if (b != nodata) win.pair<Add>(a, b);
            }
        }
    }
}

// Features of output rows [y_begin, y_end) (raster coordinates) of the region.
void compute_rows(const Raster& ras, const Region& g, const Params& p, const Pixels& px,
                  const Tables& t, std::int64_t vmax, std::ptrdiff_t y_begin, std::ptrdiff_t y_end,
                  float* out) {
    const int h = p.window / 2, d = p.distance, nodata = p.nodata;
    const std::size_t plane = static_cast<std::size_t>(g.height) * g.width;
    Window win(t, vmax);
    const std::ptrdiff_t x_begin = g.col_off, x_end = g.col_off + g.width;
    for (std::ptrdiff_t y = y_begin; y < y_end; ++y) {
        // Each row starts from an empty window; rows are independent, so threads need no sharing.
        win.clear();
        const std::ptrdiff_t r0 = std::max<std::ptrdiff_t>(0, y - h);
        const std::ptrdiff_t r1 = std::min<std::ptrdiff_t>(ras.rows - 1, y + h);
        std::ptrdiff_t c0 = std::max<std::ptrdiff_t>(0, x_begin - h);
        std::ptrdiff_t c1 = c0 - 1;  // rectangle [c0, c1] is empty
        float* orow = out + static_cast<std::size_t>(y - g.row_off) * g.width;
        for (std::ptrdiff_t x = x_begin; x < x_end; ++x) {
            const std::ptrdiff_t want0 = std::max<std::ptrdiff_t>(0, x - h);
            const std::ptrdiff_t want1 = std::min<std::ptrdiff_t>(ras.cols - 1, x + h);
            for (; c0 < want0; ++c0) {
                column_pairs<false>(win, px, c0, c0 + d, c0 + d <= c1, r0, r1, d, nodata);
            }
            while (c1 < want1) {
                ++c1;
                column_pairs<true>(win, px, c1, c1 - d, c1 - d >= c0, r0, r1, d, nodata);
            }
            win.emit(orow + (x - x_begin), plane);
        }
    }
}

// Run fn(i, begin, end) over `n` items split into `threads` contiguous bands; rethrow the first
// exception a worker raised.
template <class Fn>
void parallel_bands(std::ptrdiff_t n, int threads, Fn fn) {
    const int nt = static_cast<int>(std::max<std::ptrdiff_t>(
        1, std::min<std::ptrdiff_t>(threads, n)));
    if (nt == 1) {
        fn(0, 0, n);
        return;
    }
    std::vector<std::thread> pool;
    std::vector<std::exception_ptr> errors(nt);
    pool.reserve(nt);
    for (int i = 0; i < nt; ++i) {
        const std::ptrdiff_t b = n * i / nt, e = n * (i + 1) / nt;
        pool.emplace_back([&, i, b, e] {
            try {
                fn(i, b, e);
            } catch (...) {
                errors[i] = std::current_exception();
            }
        });
    }
    for (auto& th : pool) th.join();
    for (auto& err : errors)
        if (err) std::rethrow_exception(err);
}

Pixels make_pixels(const Raster& r) {
    Pixels px;
    px.cs = r.col_stride;
    px.row.resize(static_cast<std::size_t>(r.rows));
    for (std::ptrdiff_t i = 0; i < r.rows; ++i) px.row[i] = r.data + i * r.row_stride;
    return px;
}

}  // namespace

int hardware_threads() {
    const unsigned n = std::thread::hardware_concurrency();
    return n == 0 ? 1 : static_cast<int>(n);
}

void check_params(const Params& p) {
    if (p.window < kMinWindow || p.window > kMaxWindow || p.window % 2 == 0) {
        throw std::invalid_argument("window must be an odd number from 3 to 31, got " +
                                    std::to_string(p.window) + ".");
    }
    if (p.distance < 1 || p.distance > p.window - 1) {
        throw std::invalid_argument("distance must be from 1 to window - 1 = " +
                                    std::to_string(p.window - 1) + ", got " +
                                    std::to_string(p.distance) + ".");
    }
    if (p.n_levels < kMinLevels || p.n_levels > kMaxLevels) {
        throw std::invalid_argument("n_levels must be from 2 to 255, got " +
                                    std::to_string(p.n_levels) + ".");
    }
    if (p.nodata != kNoNodata && (p.nodata < 0 || p.nodata > 255)) {
        throw std::invalid_argument("nodata must be a uint8 value from 0 to 255 or none, got " +
                                    std::to_string(p.nodata) + ".");
    }
    if (p.threads < 1) {
        throw std::invalid_argument("threads must be at least 1, got " +
                                    std::to_string(p.threads) + ".");
    }
}

void check_region(const Raster& r, const Region& g) {
    if (g.row_off < 0 || g.col_off < 0 || g.height < 0 || g.width < 0 ||
        g.row_off + g.height > r.rows || g.col_off + g.width > r.cols) {
        throw std::invalid_argument(
            "the region (row_off=" + std::to_string(g.row_off) + ", col_off=" +
            std::to_string(g.col_off) + ", height=" + std::to_string(g.height) + ", width=" +
            std::to_string(g.width) + ") does not lie inside the " + std::to_string(r.rows) +
            " x " + std::to_string(r.cols) + " raster.");
    }
}

namespace {
// First invalid pixel (row-major) of rows [r_begin, r_end) × columns [c_begin, c_end), or -1.
std::ptrdiff_t first_invalid(const Pixels& px, std::ptrdiff_t r_begin, std::ptrdiff_t r_end,
                             std::ptrdiff_t c_begin, std::ptrdiff_t c_end, const Params& p,
                             std::ptrdiff_t cols) {
    for (std::ptrdiff_t r = r_begin; r < r_end; ++r) {
        for (std::ptrdiff_t c = c_begin; c < c_end; ++c) {
            const int v = px.at(r, c);
            if (v >= p.n_levels && v != p.nodata) return r * cols + c;
        }
    }
    return -1;
}

void check_levels_in(const Raster& r, const Pixels& px, const Params& p, std::ptrdiff_t r_begin,
                     std::ptrdiff_t r_end, std::ptrdiff_t c_begin, std::ptrdiff_t c_end) {
    const std::ptrdiff_t n = r_end - r_begin;
    if (n <= 0 || c_end <= c_begin) return;
    const int nt = static_cast<int>(std::max<std::ptrdiff_t>(
        1, std::min<std::ptrdiff_t>(p.threads, n)));
    std::vector<std::ptrdiff_t> found(nt, -1);
    parallel_bands(n, nt, [&](int i, std::ptrdiff_t b, std::ptrdiff_t e) {
        found[i] = first_invalid(px, r_begin + b, r_begin + e, c_begin, c_end, p, r.cols);
    });
    for (std::ptrdiff_t f : found) {
        if (f < 0) continue;
        const std::ptrdiff_t row = f / r.cols, col = f % r.cols;
        const int v = px.at(row, col);
        std::string nod = p.nodata == kNoNodata ? std::string("there is no nodata value")
                                                : "nodata is " + std::to_string(p.nodata);
        throw std::invalid_argument(
            "levels[" + std::to_string(row) + ", " + std::to_string(col) + "] is " +
            std::to_string(v) + ", but levels must lie in 0.." + std::to_string(p.n_levels - 1) +
            " (n_levels=" + std::to_string(p.n_levels) + ") and " + nod +
            "; quantize with n_levels levels or pass the right n_levels.");
    }
}
}  // namespace

void check_levels(const Raster& r, const Params& p) {
    check_params(p);
    const Pixels px = make_pixels(r);
    check_levels_in(r, px, p, 0, r.rows, 0, r.cols);
}

void compute(const Raster& raster, const Region& region, const Params& params, float* out) {
    check_params(params);
    check_region(raster, region);
    if (region.height == 0 || region.width == 0) return;
    const Pixels px = make_pixels(raster);
    // Only the pixels the windows of the region reach need checking.
    const int h = params.window / 2;
    check_levels_in(raster, px, params, std::max<std::ptrdiff_t>(0, region.row_off - h),
                    std::min<std::ptrdiff_t>(raster.rows, region.row_off + region.height + h),
                    std::max<std::ptrdiff_t>(0, region.col_off - h),
                    std::min<std::ptrdiff_t>(raster.cols, region.col_off + region.width + h));
    const std::int64_t vmax = 2 * max_pairs(params.window, params.distance);
    const Tables tables(params.n_levels, vmax);
    parallel_bands(region.height, params.threads, [&](int, std::ptrdiff_t b, std::ptrdiff_t e) {
        compute_rows(raster, region, params, px, tables, vmax, region.row_off + b,
                     region.row_off + e, out);
    });
}

}  // namespace glcm
}  // namespace coalmine
