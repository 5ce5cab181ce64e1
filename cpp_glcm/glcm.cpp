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

// Per-pair statistics that depend only on the level pair, packed into int64 words so that one add
// updates several sums. Every field's true value is a non-negative sum, so adding and subtracting
// packed words never borrows across fields.
//   kstat: bits 0..12 the pair count (≤ 3660), 13..32 Σ|a−b| (≤ 3660·254 < 2^20),
//          33..62 Σ(a−b)² (≤ 3660·254² < 2^28);
//   lstat: bits 0..23 Σ(a+b) (≤ 3660·508 < 2^24), from bit 24 Σ(a²+b²) (< 2^29).
constexpr int kNpBits = 13, kC1Shift = 13, kC2Shift = 33, kS2Shift = 24;

// A pair of levels is coded in 16 bits as (hi << 8) | lo with lo <= hi; the code also indexes the
// per-thread cell array (65536 entries, of which only lo, hi < L are ever touched). Levels are
// at most 254, so 0xFFFF is free to mark a pair with a nodata pixel.
constexpr std::uint16_t kNoPair = 0xFFFF;
constexpr std::size_t kCells = 65536;

struct Tables {
    // dmlnm[2v + diag]: change of Σ M ln M (fixed point) when a cell of M-value v gains one pair.
    // An off-diagonal cell stands for two equal entries of M and grows by 1 per pair; a diagonal
    // cell is one entry and grows by 2 (the pair is counted in both orders).
    std::vector<std::int64_t> dmlnm;
    std::vector<std::int64_t> mlnm;  // round(v ln v · 2^40) for M-values v (for N ln N)
    std::vector<std::int64_t> hom;   // round(2^40 / (1 + k²)) for k = 0..255

    explicit Tables(std::int64_t vmax) {
        mlnm.resize(static_cast<std::size_t>(vmax) + 3);
        for (std::size_t v = 0; v < mlnm.size(); ++v) {
            const double x = static_cast<double>(v);
            mlnm[v] = v == 0 ? 0 : std::llround(x * std::log(x) * kFixed);
        }
        dmlnm.resize(2 * static_cast<std::size_t>(vmax + 1));
        for (std::int64_t v = 0; v <= vmax; ++v) {
            dmlnm[2 * v] = 2 * (mlnm[v + 1] - mlnm[v]);
            dmlnm[2 * v + 1] = mlnm[v + 2] - mlnm[v];
        }
        hom.resize(256);
        for (int k = 0; k < 256; ++k) hom[k] = std::llround(kFixed / (1.0 + static_cast<double>(k) * k));
    }
};

// The sums that are linear in the pairs (a sum over pairs of a function of the pair alone).
struct Lin {
    std::int64_t kstat = 0;  // packed pair count, Σ|a−b|, Σ(a−b)²
    std::int64_t lstat = 0;  // packed Σ(a+b) (= Σ i·M), Σ(a²+b²) (= Σ i²·M)
    std::int64_t hom = 0;    // Σ over pairs of 1/(1 + (a−b)²), fixed point
    inline void add(const Lin& o) { kstat += o.kstat; lstat += o.lstat; hom += o.hom; }
    inline void sub(const Lin& o) { kstat -= o.kstat; lstat -= o.lstat; hom -= o.hom; }
};

inline Lin lin_of(std::uint32_t code, const std::int64_t* hom) {
    Lin l;
    if (code == kNoPair) return l;
    const std::int64_t lo = code & 0xFF, hi = code >> 8, k = hi - lo;
    l.kstat = 1 | (k << kC1Shift) | ((k * k) << kC2Shift);
    l.lstat = (lo + hi) | ((lo * lo + hi * hi) << kS2Shift);
    l.hom = hom[k];
    return l;
}

// The sums that need the cells: Σ M², Σ M ln M and max M.
struct Sums {
    std::int64_t sumsq = 0;  // Σ M²
    std::int64_t mlnm = 0;   // Σ M ln M, fixed point
    std::int32_t maxv = 0;   // largest M-value of any cell
};

// One pair entering (Add) or leaving the window. `cell` holds the M-value of every cell, `hist` the
// number of cells holding each M-value (count of counts, for the maximum).
template <bool Add>
inline void step(Sums& s, std::int32_t* cell, std::int32_t* hist, const std::int64_t* dmlnm,
                 std::uint32_t code) {
    if (code == kNoPair) return;
    const std::int32_t diag = ((code ^ (code >> 8)) & 0xFF) == 0;
    const std::int32_t old = cell[code];
    if (Add) {
        const std::int32_t nw = old + 1 + diag;
        cell[code] = nw;
        --hist[old];
        ++hist[nw];
        // With j = 2·old + diag: w·(nw² − old²) = 2j + 2 for w = 2 (off-diagonal, +1) and for
        // w = 1 (diagonal, +2) alike.
        const std::int64_t j = 2 * static_cast<std::int64_t>(old) + diag;
        s.sumsq += 2 * j + 2;
        s.mlnm += dmlnm[j];
        s.maxv = nw > s.maxv ? nw : s.maxv;
    } else {
        const std::int32_t nw = old - 1 - diag;
        cell[code] = nw;
        ++hist[nw];
        const std::int32_t left = --hist[old];
        const std::int64_t j = 2 * static_cast<std::int64_t>(nw) + diag;
        s.sumsq -= 2 * j + 2;
        s.mlnm -= dmlnm[j];
        if (old == s.maxv && left == 0) {
            // The maximum can only fall; walk down to the next value still held by a cell.
            while (s.maxv > 0 && hist[s.maxv] == 0) --s.maxv;
        }
    }
}

// Write the ten features of a window into out[f * plane].
void emit(const Lin& l, const Sums& s, const Tables& t, float* out, std::size_t plane) {
    const std::int64_t np = l.kstat & ((std::int64_t{1} << kNpBits) - 1);  // unordered pairs
    if (np == 0) {
        const float nan = std::numeric_limits<float>::quiet_NaN();
        for (int f = 0; f < kFeatures; ++f) out[f * plane] = nan;
        return;
    }
    const std::int64_t c1 = (l.kstat >> kC1Shift) & ((std::int64_t{1} << (kC2Shift - kC1Shift)) - 1);
    const std::int64_t c2 = l.kstat >> kC2Shift;
    const std::int64_t s1 = l.lstat & ((std::int64_t{1} << kS2Shift) - 1);
    const std::int64_t s2 = l.lstat >> kS2Shift;
    const std::int64_t n = 2 * np;  // entries of M: each pair counted in both orders
    const double dn = static_cast<double>(n);
    const double inv_np = 1.0 / static_cast<double>(np);
    const double inv_n = 0.5 * inv_np;
    const double asm_ = static_cast<double>(s.sumsq) * (inv_n * inv_n);
    // −Σ p ln p = (N ln N − Σ M ln M) / N, both terms from the same fixed-point table, so the
    // difference is exact integer arithmetic (a constant window gives exactly 0).
    const double entropy = static_cast<double>(t.mlnm[n] - s.mlnm) * (kInvFixed * inv_n);
    // N²·variance and N²·covariance are exact integers: no cancellation. Because M is symmetric,
    // Σ ij·M = Σ i²·M − Σ (i−j)²·M / 2, so covariance = variance − contrast / 2.
    const std::int64_t var_n2 = s2 * n - s1 * s1;
    const double corr =
        var_n2 == 0 ? 1.0 : 1.0 - static_cast<double>(c2) * dn / static_cast<double>(var_n2);
    out[kContrast * plane] = static_cast<float>(static_cast<double>(c2) * inv_np);
    out[kDissimilarity * plane] = static_cast<float>(static_cast<double>(c1) * inv_np);
    out[kHomogeneity * plane] = static_cast<float>(static_cast<double>(l.hom) * (kInvFixed * inv_np));
    out[kAsm * plane] = static_cast<float>(asm_);
    out[kEnergy * plane] = static_cast<float>(std::sqrt(asm_));
    out[kMaxProb * plane] = static_cast<float>(static_cast<double>(s.maxv) * inv_n);
    out[kEntropy * plane] = static_cast<float>(entropy);
    out[kGlcmMean * plane] = static_cast<float>(static_cast<double>(s1) * inv_n);
    out[kGlcmVariance * plane] = static_cast<float>(static_cast<double>(var_n2) * (inv_n * inv_n));
    out[kCorrelation * plane] = static_cast<float>(corr);
}

// Pixel access through precomputed row pointers (arbitrary strides).
struct Pixels {
    std::vector<const std::uint8_t*> row;
    std::ptrdiff_t cs = 1;
    inline int at(std::ptrdiff_t r, std::ptrdiff_t c) const { return row[r][c * cs]; }
};

enum Kind { kH = 0, kV = 1, kD = 2, kA = 3 };
constexpr int kKinds = 4;

// The pair codes of the rows a window spans, for the four offsets, each pair stored at its anchor
// pixel: (0,d) at its left pixel, (d,0), (d,d) and (d,−d) at their upper pixel. Column-major with
// 2n slots per column for a ring of n rows: row r goes to slots r % n and r % n + n, so the n most
// recent rows are always contiguous from slot (first row) % n, and a column of a window is one
// contiguous run.
class PairCodes {
public:
    PairCodes(const Pixels& px, int ring_rows, int d, int nodata, std::ptrdiff_t col_a,
              std::ptrdiff_t col_b, std::ptrdiff_t row_b)
        : px_(px), w_(ring_rows), d_(d), nodata_(nodata), ca_(col_a), cb_(col_b), rb_(row_b),
          stride_(2 * static_cast<std::ptrdiff_t>(ring_rows)) {
        for (auto& k : codes_) k.assign(static_cast<std::size_t>((cb_ - ca_) * stride_), kNoPair);
    }

    // Compute the codes anchored on row r (rows must be loaded in increasing order; codes only
    // pair pixels inside columns [col_a, col_b) and rows below row_b).
    void load_row(std::ptrdiff_t r) {
        const std::ptrdiff_t s0 = r % w_, s1 = s0 + w_;
        const bool below = r + d_ < rb_;
        for (std::ptrdiff_t c = ca_; c < cb_; ++c) {
            const int a = px_.at(r, c);
            const std::size_t o = static_cast<std::size_t>((c - ca_) * stride_);
            const std::uint16_t h = c + d_ < cb_ ? code(a, px_.at(r, c + d_)) : kNoPair;
            const std::uint16_t v = below ? code(a, px_.at(r + d_, c)) : kNoPair;
            const std::uint16_t dd = below && c + d_ < cb_ ? code(a, px_.at(r + d_, c + d_)) : kNoPair;
            const std::uint16_t ad = below && c - d_ >= ca_ ? code(a, px_.at(r + d_, c - d_)) : kNoPair;
            codes_[kH][o + s0] = codes_[kH][o + s1] = h;
            codes_[kV][o + s0] = codes_[kV][o + s1] = v;
            codes_[kD][o + s0] = codes_[kD][o + s1] = dd;
            codes_[kA][o + s0] = codes_[kA][o + s1] = ad;
        }
    }

    // Codes of `kind` anchored in column c on rows r0, r0+1, ... (contiguous).
    const std::uint16_t* column(int kind, std::ptrdiff_t c, std::ptrdiff_t r0) const {
        return codes_[kind].data() + (c - ca_) * stride_ + r0 % w_;
    }
    // Codes of `kind` anchored on row r: element i (column col_a + i) at [i * stride()].
    const std::uint16_t* row(int kind, std::ptrdiff_t r) const {
        return codes_[kind].data() + r % w_;
    }
    std::ptrdiff_t stride() const { return stride_; }
    std::ptrdiff_t cols() const { return cb_ - ca_; }

private:
    inline std::uint16_t code(int a, int b) const {
        if (a == nodata_ || b == nodata_) return kNoPair;
        const int lo = a < b ? a : b, hi = a ^ b ^ lo;
        return static_cast<std::uint16_t>((hi << 8) | lo);
    }

    const Pixels& px_;
    const std::ptrdiff_t w_, d_;  // ring rows, distance
    const int nodata_;
    const std::ptrdiff_t ca_, cb_, rb_, stride_;
    std::vector<std::uint16_t> codes_[kKinds];
};

// Per column, the linear sums of one kind of pair over a range of anchor rows [lo, hi). When the
// window moves down, rows leaving the range are subtracted (before the ring overwrites them) and
// rows entering are added, so a column event costs one Lin add instead of one per pair.
struct ColumnSums {
    std::ptrdiff_t lo = 0, hi = 0;
    std::vector<Lin> col;

    // Drop the rows of [lo, hi) outside [nlo, nhi). Call before the ring loads new rows.
    void shrink(const PairCodes& codes, int kind, std::ptrdiff_t nlo, std::ptrdiff_t nhi,
                const std::int64_t* hom) {
        for (std::ptrdiff_t r = lo; r < hi; ++r)
            if (r < nlo || r >= nhi) apply_row<false>(codes, kind, r, hom);
    }
    // Add the rows of [nlo, nhi) not yet in [lo, hi); the range becomes [nlo, nhi).
    void grow(const PairCodes& codes, int kind, std::ptrdiff_t nlo, std::ptrdiff_t nhi,
              const std::int64_t* hom) {
        for (std::ptrdiff_t r = nlo; r < nhi; ++r)
            if (r < lo || r >= hi) apply_row<true>(codes, kind, r, hom);
        lo = nlo;
        hi = nhi;
    }

private:
    template <bool Add>
    void apply_row(const PairCodes& codes, int kind, std::ptrdiff_t r, const std::int64_t* hom) {
        const std::uint16_t* p = codes.row(kind, r);
        const std::ptrdiff_t st = codes.stride();
        for (std::size_t i = 0; i < col.size(); ++i) {
            const Lin l = lin_of(p[static_cast<std::ptrdiff_t>(i) * st], hom);
            if (Add) col[i].add(l); else col[i].sub(l);
        }
    }
};

// The state of one sliding window: its cells, count of counts, running sums, and the column sums
// of its current rows.
struct WindowState {
    std::vector<std::int32_t> cell;
    std::vector<std::int32_t> hist;
    Sums s;
    Lin lin;
    ColumnSums cs[kKinds];
    WindowState(std::int64_t vmax, std::ptrdiff_t cols)
        : cell(kCells, 0), hist(static_cast<std::size_t>(vmax) + 3, 0) {
        for (auto& c : cs) c.col.assign(static_cast<std::size_t>(cols), Lin());
    }
    void clear(int levels) {
        for (int hi = 0; hi < levels; ++hi) std::fill_n(cell.begin() + (hi << 8), levels, 0);
        std::fill(hist.begin(), hist.end(), 0);
        s = Sums();
        lin = Lin();
    }
};

// Apply the na codes at pa to window A and the nb codes at pb to window B. The two windows are
// interleaved pair by pair: each window's updates form a chain through memory (cell, then count of
// counts), and two independent chains let the processor overlap them.
template <bool Add, bool Two>
inline void apply(WindowState& A, const std::uint16_t* pa, std::ptrdiff_t na, WindowState& B,
                  const std::uint16_t* pb, std::ptrdiff_t nb, const std::int64_t* dmlnm) {
    Sums sa = A.s;
    std::int32_t* ca = A.cell.data();
    std::int32_t* ha = A.hist.data();
    std::ptrdiff_t i = 0;
    if (Two) {
        Sums sb = B.s;
        std::int32_t* cb = B.cell.data();
        std::int32_t* hb = B.hist.data();
        const std::ptrdiff_t m = na < nb ? na : nb;
        for (; i < m; ++i) {
            step<Add>(sa, ca, ha, dmlnm, pa[i]);
            step<Add>(sb, cb, hb, dmlnm, pb[i]);
        }
        for (std::ptrdiff_t j = i; j < nb; ++j) step<Add>(sb, cb, hb, dmlnm, pb[j]);
        B.s = sb;
    }
    for (; i < na; ++i) step<Add>(sa, ca, ha, dmlnm, pa[i]);
    A.s = sa;
}

// Anchor rows [lo, hi) of each kind of pair for the window of output row y.
struct AnchorRows {
    std::ptrdiff_t r0, n_all, n_low;  // first row; (0,d) anchors; anchors reaching d rows down
    AnchorRows(std::ptrdiff_t y, std::ptrdiff_t h, std::ptrdiff_t d, std::ptrdiff_t rows) {
        r0 = std::max<std::ptrdiff_t>(0, y - h);
        n_all = std::min<std::ptrdiff_t>(rows - 1, y + h) - r0 + 1;
        n_low = std::max<std::ptrdiff_t>(0, n_all - d);
    }
    std::ptrdiff_t count(int kind) const { return kind == kH ? n_all : n_low; }
};

// Slide the window along output row y (and y + 1 as well when Two), writing features to out.
//
// Moving one column right removes every pair with a pixel in the leaving column c0 and adds every
// pair with a pixel in the entering column c1, where "in the window" means BOTH pixels are: for
// (0,d), (d,d) and (d,−d) the partner of a pixel in column c0 sits in column c0 + d (it must be
// <= c1), that of a pixel in c1 in column c1 − d (>= c0). Windows are clipped to the raster, so
// near its edges a step may only remove or only add a column. The cells see every pair; the
// linear sums take whole column runs from the column sums.
template <bool Two>
void slide_rows(const Region& g, const Params& p, std::ptrdiff_t raster_cols, const Tables& t,
                const PairCodes& codes, std::ptrdiff_t col_a, std::ptrdiff_t y, WindowState& A,
                WindowState& B, const AnchorRows& ar, const AnchorRows& br, float* out) {
    const std::ptrdiff_t h = p.window / 2, d = p.distance;
    const std::size_t plane = static_cast<std::size_t>(g.height) * g.width;
    const std::ptrdiff_t x_begin = g.col_off, x_end = g.col_off + g.width;
    const std::int64_t* dmlnm = t.dmlnm.data();
    const std::ptrdiff_t ra = ar.r0, rb = br.r0;
    const std::ptrdiff_t na = ar.n_all, nb = br.n_all, la = ar.n_low, lb = br.n_low;
    auto col = [&](int kind, std::ptrdiff_t c, std::ptrdiff_t r0) { return codes.column(kind, c, r0); };
    auto lin = [&](WindowState& w, int kind, std::ptrdiff_t c) -> const Lin& {
        return w.cs[kind].col[static_cast<std::size_t>(c - col_a)];
    };
    A.clear(p.n_levels);
    if (Two) B.clear(p.n_levels);
    std::ptrdiff_t c0 = col_a, c1 = col_a - 1;  // the windows' columns [c0, c1], empty
    float* orow = out + static_cast<std::size_t>(y - g.row_off) * g.width - x_begin;
    for (std::ptrdiff_t x = x_begin; x < x_end; ++x) {
        const std::ptrdiff_t want0 = std::max<std::ptrdiff_t>(0, x - h);
        const std::ptrdiff_t want1 = std::min<std::ptrdiff_t>(raster_cols - 1, x + h);
        for (; c0 < want0; ++c0) {  // remove column c0
            apply<false, Two>(A, col(kV, c0, ra), la, B, col(kV, c0, rb), lb, dmlnm);
            A.lin.sub(lin(A, kV, c0));
            if (Two) B.lin.sub(lin(B, kV, c0));
            if (c0 + d <= c1) {
                apply<false, Two>(A, col(kH, c0, ra), na, B, col(kH, c0, rb), nb, dmlnm);
                apply<false, Two>(A, col(kD, c0, ra), la, B, col(kD, c0, rb), lb, dmlnm);
                apply<false, Two>(A, col(kA, c0 + d, ra), la, B, col(kA, c0 + d, rb), lb, dmlnm);
                A.lin.sub(lin(A, kH, c0));
                A.lin.sub(lin(A, kD, c0));
                A.lin.sub(lin(A, kA, c0 + d));
                if (Two) {
                    B.lin.sub(lin(B, kH, c0));
                    B.lin.sub(lin(B, kD, c0));
                    B.lin.sub(lin(B, kA, c0 + d));
                }
            }
        }
        while (c1 < want1) {  // add column c1 + 1
            ++c1;
            apply<true, Two>(A, col(kV, c1, ra), la, B, col(kV, c1, rb), lb, dmlnm);
            A.lin.add(lin(A, kV, c1));
            if (Two) B.lin.add(lin(B, kV, c1));
            if (c1 - d >= c0) {
                apply<true, Two>(A, col(kH, c1 - d, ra), na, B, col(kH, c1 - d, rb), nb, dmlnm);
                apply<true, Two>(A, col(kD, c1 - d, ra), la, B, col(kD, c1 - d, rb), lb, dmlnm);
                apply<true, Two>(A, col(kA, c1, ra), la, B, col(kA, c1, rb), lb, dmlnm);
                A.lin.add(lin(A, kH, c1 - d));
                A.lin.add(lin(A, kD, c1 - d));
                A.lin.add(lin(A, kA, c1));
                if (Two) {
                    B.lin.add(lin(B, kH, c1 - d));
                    B.lin.add(lin(B, kD, c1 - d));
                    B.lin.add(lin(B, kA, c1));
                }
            }
        }
        emit(A.lin, A.s, t, orow + x, plane);
        if (Two) emit(B.lin, B.s, t, orow + g.width + x, plane);
    }
}

// Features of output rows [y_begin, y_end) (raster coordinates) of the region, two rows at a time.
// Each row pair starts from empty windows, so rows are independent and threads share nothing.
void compute_rows(const Raster& ras, const Region& g, const Params& p, const Pixels& px,
                  const Tables& t, std::int64_t vmax, std::ptrdiff_t y_begin, std::ptrdiff_t y_end,
                  float* out) {
    const std::ptrdiff_t h = p.window / 2, d = p.distance;
    // Pixels any window of these output rows can reach.
    const std::ptrdiff_t col_a = std::max<std::ptrdiff_t>(0, g.col_off - h);
    const std::ptrdiff_t col_b = std::min<std::ptrdiff_t>(ras.cols, g.col_off + g.width + h);
    const std::ptrdiff_t row_b = std::min<std::ptrdiff_t>(ras.rows, y_end + h);
    // The ring keeps W + 1 rows: the windows of two consecutive output rows.
    PairCodes codes(px, p.window + 1, p.distance, p.nodata, col_a, col_b, row_b);
    WindowState A(vmax, col_b - col_a), B(vmax, col_b - col_a);
    const std::int64_t* hom = t.hom.data();
    std::ptrdiff_t next_row = std::max<std::ptrdiff_t>(0, y_begin - h);
    for (std::ptrdiff_t y = y_begin; y < y_end; y += 2) {
        const bool two = y + 1 < y_end;
        const AnchorRows ar(y, h, d, ras.rows), br(y + 1, h, d, ras.rows);
        // Column sums follow the windows' rows: drop leaving rows while the ring still has them,
        // load the new rows, then add the entering ones.
        for (int k = 0; k < kKinds; ++k) {
            A.cs[k].shrink(codes, k, ar.r0, ar.r0 + ar.count(k), hom);
            if (two) B.cs[k].shrink(codes, k, br.r0, br.r0 + br.count(k), hom);
        }
        const std::ptrdiff_t last = std::min<std::ptrdiff_t>(ras.rows - 1, y + h + (two ? 1 : 0));
        for (; next_row <= last; ++next_row) codes.load_row(next_row);
        for (int k = 0; k < kKinds; ++k) {
            A.cs[k].grow(codes, k, ar.r0, ar.r0 + ar.count(k), hom);
            if (two) B.cs[k].grow(codes, k, br.r0, br.r0 + br.count(k), hom);
        }
        if (two) {
            slide_rows<true>(g, p, ras.cols, t, codes, col_a, y, A, B, ar, br, out);
        } else {
            slide_rows<false>(g, p, ras.cols, t, codes, col_a, y, A, B, ar, br, out);
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
    const Tables tables(vmax);
    parallel_bands(region.height, params.threads, [&](int, std::ptrdiff_t b, std::ptrdiff_t e) {
        compute_rows(raster, region, params, px, tables, vmax, region.row_off + b,
                     region.row_off + e, out);
    });
}

}  // namespace glcm
}  // namespace coalmine
