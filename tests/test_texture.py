"""GLCM kernel: agreement with a plain float64 reference and with scikit-image, invariants,
a hand-worked case, threading, strides, tiling, quantization, and every refused input."""

from __future__ import annotations

import math
import threading
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from coalmine.runtime import texture
from coalmine.runtime.bands import GLCM_FEATURES
from coalmine.runtime.bundle import GlcmParams
from coalmine.runtime.texture import (
    FEATURES,
    equal_frequency_edges,
    equal_width_edges,
    glcm_block,
    glcm_features,
    quantize,
)
from rasterio.windows import Window

RTOL, ATOL = 1e-5, 1e-6
OFFSETS = ((0, 1), (1, 1), (1, 0), (1, -1))  # times d: ARCHITECTURE.md's four offsets


# --- an independent, plain float64 reference ---------------------------------------------------


def ref_matrix(img: np.ndarray, y: int, x: int, n_levels: int, w: int, d: int, nodata) -> np.ndarray:
    """Symmetric co-occurrence counts of the (clipped) window around (y, x), built from scratch."""
    h = w // 2
    win = img[max(0, y - h) : y + h + 1, max(0, x - h) : x + h + 1].astype(np.int64)
    m = np.zeros((n_levels, n_levels))
    rows, cols = win.shape
    for dr, dc in OFFSETS:
        dr, dc = dr * d, dc * d
        for r in range(rows):
            for c in range(cols):
                rr, cc = r + dr, c + dc
                if not (0 <= rr < rows and 0 <= cc < cols):
                    continue
                a, b = win[r, c], win[rr, cc]
                if a == nodata or b == nodata:
                    continue
                m[a, b] += 1
                m[b, a] += 1
    return m


def ref_props(m: np.ndarray) -> np.ndarray:
    """The ten features of a count matrix, straight from the definitions."""
    n = m.sum()
    if n == 0:
        return np.full(10, np.nan)
    p = m / n
    i, j = np.indices(p.shape)
    asm = np.sum(p**2)
    nz = p[p > 0]
    mu = np.sum(i * p)
    var = np.sum(p * (i - mu) ** 2)
    corr = 1.0 if var < 1e-15 else np.sum(p * (i - mu) * (j - mu)) / var
    return np.array(
        [
            np.sum(p * (i - j) ** 2),
            np.sum(p * np.abs(i - j)),
            np.sum(p / (1.0 + (i - j) ** 2)),
            asm,
            np.sqrt(asm),
            p.max(),
            -np.sum(nz * np.log(nz)),
            mu,
            var,
            corr,
        ]
    )


def ref_features(img: np.ndarray, n_levels: int, w: int, d: int, nodata=255) -> np.ndarray:
    out = np.empty((10,) + img.shape)
    for y in range(img.shape[0]):
        for x in range(img.shape[1]):
            out[:, y, x] = ref_props(ref_matrix(img, y, x, n_levels, w, d, nodata))
    return out


def random_levels(rng, shape, n_levels, holes=0.1, nodata=255) -> np.ndarray:
    img = rng.integers(0, n_levels, shape).astype(np.uint8)
    img[rng.random(shape) < holes] = nodata
    return img


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


# --- agreement ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "n_levels", "w", "d"),
    [
        ((17, 23), 8, 5, 2),
        ((21, 19), 32, 9, 4),  # SNAP's defaults
        ((13, 11), 16, 3, 1),
        ((15, 14), 5, 7, 6),  # d = W - 1
        ((6, 5), 8, 9, 4),  # image smaller than the window
        ((1, 9), 4, 3, 1),  # a single row: only horizontal pairs
        ((25, 3), 255, 11, 2),  # n_levels at its maximum
    ],
)
def test_matches_float64_reference(shape, n_levels, w, d):
    rng = np.random.default_rng(sum(shape) * 100 + w * 10 + d)
    img = random_levels(rng, shape, n_levels, holes=0.15)
    got = glcm_features(img, n_levels, window=w, distance=d)
    assert got.dtype == np.float32 and got.shape == (10,) + shape
    want = ref_features(img, n_levels, w, d)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL, equal_nan=True)


def test_nodata_none_and_low_nodata_value():
    rng = np.random.default_rng(7)
    img = rng.integers(0, 6, (12, 13)).astype(np.uint8)
    np.testing.assert_allclose(
        glcm_features(img, 6, 5, 2, nodata=None), ref_features(img, 6, 5, 2, nodata=-1),
        rtol=RTOL, atol=ATOL,
    )
    # Level 0 used as the nodata marker: those pixels form no pair.
    np.testing.assert_allclose(
        glcm_features(img, 6, 5, 2, nodata=0), ref_features(img, 6, 5, 2, nodata=0),
        rtol=RTOL, atol=ATOL, equal_nan=True,
    )


def _skimage_props(win: np.ndarray, n_levels: int, d: int) -> dict[str, float]:
    """Our pooled GLCM through scikit-image: skimage's offset for angle a and distance r is
    (round(r sin a), round(r cos a)), so at distance d the diagonals would be (round(0.707 d), ...)
    — not (d, d). We therefore ask for 0 and pi/2 at distance d and for pi/4 and 3pi/4 at distance
    d*sqrt(2), which gives exactly (0, d), (d, 0), (d, d), (d, -d)."""
    from skimage.feature import graycomatrix, graycoprops

    straight = graycomatrix(win, [d], [0, np.pi / 2], levels=n_levels, symmetric=True)
    diagonal = graycomatrix(
        win, [d * math.sqrt(2)], [np.pi / 4, 3 * np.pi / 4], levels=n_levels, symmetric=True
    )
    counts = straight.sum(axis=(2, 3)) + diagonal.sum(axis=(2, 3))
    p = (counts / counts.sum())[:, :, None, None]
    names = ("contrast", "dissimilarity", "homogeneity", "ASM", "energy", "entropy",
             "mean", "variance", "correlation")
    return {name: float(graycoprops(p, name)[0, 0]) for name in names}


@pytest.mark.parametrize(("n_levels", "w", "d"), [(32, 9, 4), (16, 9, 1), (8, 7, 3), (32, 5, 2)])
def test_agrees_with_scikit_image(n_levels, w, d):
    rng = np.random.default_rng(w * 100 + d)
    img = random_levels(rng, (30, 34), n_levels, holes=0.0)
    got = glcm_features(img, n_levels, window=w, distance=d)
    ours = dict(zip(FEATURES, range(10), strict=True))
    sk_name = {"asm": "ASM", "glcm_mean": "mean", "glcm_variance": "variance"}
    h = w // 2
    # Interior, edge and corner pixels (clipped windows are plain crops for skimage too).
    for y, x in [(h + 3, h + 5), (15, 17), (0, 0), (29, 10), (12, 33)]:
        win = img[max(0, y - h) : y + h + 1, max(0, x - h) : x + h + 1]
        sk = _skimage_props(win, n_levels, d)
        for name, k in ours.items():
            if name == "max_prob":
                continue  # skimage has no max_prob
            np.testing.assert_allclose(
                got[k, y, x], sk[sk_name.get(name, name)], rtol=RTOL, atol=ATOL, err_msg=name
            )


# --- invariants and hand-worked cases -------------------------------------------------------------


def test_reference_matrix_is_symmetric_and_normalises_to_one():
    img = random_levels(np.random.default_rng(3), (11, 11), 8)
    m = ref_matrix(img, 5, 5, 8, 9, 2, 255)
    np.testing.assert_array_equal(m, m.T)
    assert math.isclose((m / m.sum()).sum(), 1.0)


def test_feature_invariants():
    rng = np.random.default_rng(11)
    img = random_levels(rng, (40, 45), 32, holes=0.2)
    f = glcm_features(img, 32, 9, 4)
    ok = ~np.isnan(f[0])
    con, dis, hom, asm, energy, maxp, ent, mean, var, corr = (f[k][ok].astype(np.float64) for k in range(10))
    np.testing.assert_allclose(energy**2, asm, rtol=1e-6)
    # max p^2 <= sum p^2 <= max p * sum p = max p  holds only if P sums to 1.
    assert np.all(maxp**2 <= asm * (1 + 1e-6)) and np.all(asm <= maxp * (1 + 1e-6))
    assert np.all((hom > 0) & (hom <= 1 + 1e-6))
    assert np.all(dis**2 <= con * (1 + 1e-6) + 1e-6)  # Jensen
    assert np.all((mean >= 0) & (mean <= 31)) and np.all(var >= 0) and np.all(ent >= 0)
    assert np.all(np.abs(corr) <= 1 + 1e-5)


def test_all_nodata_window_gives_nan_and_constant_window_gives_correlation_one():
    img = np.full((20, 20), 7, np.uint8)
    img[:, :10] = 255  # left half nodata
    f = glcm_features(img, 8, window=5, distance=2)
    assert np.all(np.isnan(f[:, :, :8]))  # windows reach only nodata
    right = f[:, :, 12:]
    np.testing.assert_array_equal(right[FEATURES.index("correlation")], 1.0)
    np.testing.assert_array_equal(right[FEATURES.index("contrast")], 0.0)
    np.testing.assert_array_equal(right[FEATURES.index("asm")], 1.0)
    np.testing.assert_array_equal(right[FEATURES.index("entropy")], 0.0)
    np.testing.assert_array_equal(right[FEATURES.index("glcm_mean")], 7.0)


def test_window_without_pairs_is_nan():
    # A 1x1 image has no pair at all; a 2x2 image with d=2 neither.
    assert np.all(np.isnan(glcm_features(np.zeros((1, 1), np.uint8), 4, 3, 1)))
    assert np.all(np.isnan(glcm_features(np.zeros((2, 2), np.uint8), 4, 5, 2)))


HAND = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [0, 2, 2, 2], [2, 2, 3, 3]], np.uint8)


def test_hand_worked_4x4():
    # W=7 covers the whole 4x4 image from every pixel. Pairs at d=1, counted by hand:
    # (0,1): 12, (1,0): 12, (1,1): 9, (1,-1): 9 -> 42 pairs, M sums to 84. Unordered counts:
    # {0,0} 8, {0,1} 4, {1,1} 6, {0,2} 6, {2,2} 6, {1,2} 5, {2,3} 6, {3,3} 1, so
    # M = [[16,4,6,0],[4,12,5,0],[6,5,12,6],[0,0,6,2]], row sums 26, 21, 29, 8.
    m = np.array([[16, 4, 6, 0], [4, 12, 5, 0], [6, 5, 12, 6], [0, 0, 6, 2]], float)
    mlnm = sum(v * math.log(v) for v in m.ravel() if v)
    want = {
        "contrast": 78 / 84,
        "dissimilarity": 54 / 84,
        "homogeneity": (42 + 2 * (4 / 2 + 6 / 5 + 5 / 2 + 6 / 2)) / 84,
        "asm": 774 / 84**2,
        "energy": math.sqrt(774) / 84,
        "max_prob": 16 / 84,
        "entropy": math.log(84) - mlnm / 84,
        "glcm_mean": 103 / 84,
        "glcm_variance": 6947 / 84**2,
        "correlation": 3671 / 6947,
    }
    f = glcm_features(HAND, 4, window=7, distance=1)
    for k, name in enumerate(FEATURES):
        np.testing.assert_array_max_ulp(f[k], np.full((4, 4), want[name], np.float32), maxulp=1)
    # The same window through the reference (checks the hand count, too).
    np.testing.assert_array_equal(ref_matrix(HAND, 1, 1, 4, 7, 1, 255), m)


def test_hand_worked_corner_window_is_clipped():
    # W=3 at (0,0): the window is the 2x2 block of zeros: 2 horizontal, 2 vertical and one pair on
    # each diagonal, all (0,0) -> P = [[1]]: contrast 0, asm 1, entropy 0, correlation 1.
    f = glcm_features(HAND, 4, window=3, distance=1)[:, 0, 0]
    np.testing.assert_array_equal(f, np.array([0, 0, 1, 1, 1, 1, 0, 0, 0, 1], np.float32))


# --- threads, strides, tiling ---------------------------------------------------------------------


def test_bit_identical_for_any_thread_count():
    img = random_levels(np.random.default_rng(5), (203, 157), 32, holes=0.05)
    one = glcm_features(img, 32, 9, 4, threads=1)
    for t in (2, 3, 8, 500):
        assert same_bits(glcm_features(img, 32, 9, 4, threads=t), one), t
    assert same_bits(glcm_features(img, 32, 9, 4), one)


def test_concurrent_calls_from_python_threads():
    rng = np.random.default_rng(9)
    imgs = [random_levels(rng, (120, 130), 16) for _ in range(6)]
    alone = [glcm_features(im, 16, 7, 2, threads=1) for im in imgs]
    barrier = threading.Barrier(6)

    def work(k):
        barrier.wait()
        return glcm_features(imgs[k], 16, 7, 2, threads=2)

    with ThreadPoolExecutor(6) as pool:
        together = list(pool.map(work, range(6)))
    assert all(same_bits(a, b) for a, b in zip(alone, together, strict=True))


def test_gil_is_released_during_the_loop():
    # While a worker thread is inside the kernel, this thread must keep running: with the GIL
    # held, no timestamp of ours could fall strictly inside the worker's call.
    img = random_levels(np.random.default_rng(21), (500, 500), 32, holes=0.0)
    span: list[float] = []

    def work():
        t0 = time.perf_counter()
        glcm_features(img, 32, 9, 4, threads=1)
        span.extend([t0, time.perf_counter()])

    worker = threading.Thread(target=work)
    stamps = []
    worker.start()
    while worker.is_alive():
        stamps.append(time.perf_counter())
        time.sleep(0.001)
    worker.join()
    t0, t1 = span
    margin = 0.1 * (t1 - t0)
    inside = [t for t in stamps if t0 + margin < t < t1 - margin]
    assert len(inside) >= 3, (t1 - t0, len(stamps))


def test_strided_input_gives_same_result():
    base = random_levels(np.random.default_rng(13), (60, 90), 8)
    for view in (base[::2, ::3], base.T, base[::-1, ::-1], np.asfortranarray(base), base[5:40, 7:80]):
        assert not view.flags.c_contiguous or view.base is not None
        assert same_bits(glcm_features(view, 8, 5, 2), glcm_features(np.ascontiguousarray(view), 8, 5, 2))


def test_strided_input_is_not_copied():
    base = np.zeros((500, 1500), np.uint8)
    view = base[:, ::3]  # 500 x 500, a copy would take 250 kB
    out_bytes = 10 * 500 * 500 * 4
    tracemalloc.start()
    try:
        glcm_features(view, 4, 3, 1, threads=1)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # The output is traced (so a copy of the input would be too) and nothing else was allocated.
    assert out_bytes <= peak < out_bytes + 125_000


def test_block_equals_slice_of_whole_raster():
    img = random_levels(np.random.default_rng(17), (57, 61), 16, holes=0.1)
    w, d = 7, 3
    whole = glcm_features(img, 16, w, d)
    blocks = [
        (0, 0, 10, 12),  # corner
        (47, 49, 10, 12),  # opposite corner
        (0, 20, 8, 15),  # top edge
        (30, 0, 9, 5),  # left edge
        (20, 25, 11, 13),  # interior
        (0, 0, 57, 61),  # the whole raster
        (56, 60, 1, 1),  # last pixel
        Window(col_off=33, row_off=14, width=20, height=30),
    ]
    for b in blocks:
        r, c, hgt, wid = (b.row_off, b.col_off, b.height, b.width) if isinstance(b, Window) else b
        got = glcm_block(img, b, 16, window_size=w, distance=d)
        assert same_bits(got, np.ascontiguousarray(whole[:, r : r + hgt, c : c + wid])), b


def test_block_reads_only_block_plus_halo():
    img = random_levels(np.random.default_rng(19), (80, 80), 8)
    halo = texture.glcm_halo(9, 4)
    assert halo == GlcmParams(window=9, distance=4).halo == 8
    poisoned = img.copy()
    # Values outside block + halo would be refused if they were read.
    poisoned[:20 - halo - 1, :] = 200
    poisoned[:, 50 + halo + 1 :] = 200
    assert same_bits(
        glcm_block(poisoned, (20, 10, 15, 40), 8), glcm_block(img, (20, 10, 15, 40), 8)
    )


# --- quantization and edges -----------------------------------------------------------------------


def test_quantize_counts_edges_at_or_below():
    edges = [-15.0, -5.0, 0.0]
    db = np.array([[-40.0, -15.0, -14.9], [-5.0, 0.0, 99.0], [np.nan, -np.inf, np.inf]], np.float32)
    np.testing.assert_array_equal(
        quantize(db, edges), np.array([[0, 1, 1], [2, 3, 3], [255, 0, 3]], np.uint8)
    )


def test_quantize_large_input_in_chunks(monkeypatch):
    monkeypatch.setattr(texture, "_QUANTIZE_CHUNK", 7)
    db = np.linspace(-30, 10, 101).reshape(101, 1)
    e = equal_width_edges(-25, 5, 32)
    np.testing.assert_array_equal(quantize(db, e)[:, 0], np.searchsorted(e, db[:, 0], side="right"))


def test_equal_width_edges():
    e = equal_width_edges(-25.0, 5.0, 32)
    assert e.shape == (31,) and e.dtype == np.float64
    np.testing.assert_allclose(np.diff(e), 30 / 32)
    assert e[0] == -25 + 30 / 32 and e[-1] == 5 - 30 / 32
    # The bundle's default edges come from here (one home for the formula).
    assert GlcmParams().with_default_edges().edges == tuple(e)


def test_equal_frequency_edges_split_evenly():
    s = np.random.default_rng(1).normal(-12, 4, 100_000)
    s[:10] = np.nan
    e = equal_frequency_edges(s, 8)
    assert e.shape == (7,)
    share = np.bincount(quantize(s[10:], e), minlength=8) / s[10:].size
    np.testing.assert_allclose(share, 1 / 8, atol=1e-3)


def test_equal_frequency_edges_stay_increasing_with_ties():
    e = equal_frequency_edges([1.0] * 50 + [2.0] * 50, 5)
    assert np.all(np.diff(e) > 0)
    assert quantize(np.array([1.0, 2.0]), e).tolist() == [1, 3]  # edges 1, 1+ulp, 2, 2+ulp


def test_features_constant_matches_bands_module():
    assert FEATURES == GLCM_FEATURES and len(FEATURES) == 10


def test_compiled_kernel_feature_count_and_order_equal_the_band_layout():
    from coalmine.runtime import _glcm

    assert _glcm.N_FEATURES == len(GLCM_FEATURES)
    assert _glcm.FEATURES == GLCM_FEATURES
    out = _glcm.features(np.zeros((5, 5), np.uint8), 4, 3, 1, None)
    assert out.shape[0] == len(GLCM_FEATURES)


# --- refused input: one test each, checking the message -------------------------------------------

GOOD = np.zeros((8, 8), np.uint8)


def test_refuses_non_array():
    with pytest.raises(TypeError, match=r"levels must be a NumPy array of uint8 levels, got list"):
        glcm_features([[0, 1], [1, 0]], 4)


def test_refuses_non_uint8():
    with pytest.raises(TypeError, match=r"uint8 array of quantized levels, got dtype float32.*quantize"):
        glcm_features(GOOD.astype(np.float32), 4)


def test_refuses_non_2d():
    with pytest.raises(ValueError, match=r"levels must be a 2-D array .* got 3 dimensions"):
        glcm_features(np.zeros((2, 8, 8), np.uint8), 4)


@pytest.mark.parametrize("w", [8, 1, 33])
def test_refuses_bad_window(w):
    with pytest.raises(ValueError, match=rf"window must be an odd number from 3 to 31 .*got {w}\."):
        glcm_features(GOOD, 4, window=w, distance=1)


@pytest.mark.parametrize("d", [0, 9])
def test_refuses_bad_distance(d):
    with pytest.raises(ValueError, match=rf"distance must be from 1 to window - 1 = 8 .*got {d}\."):
        glcm_features(GOOD, 4, window=9, distance=d)


@pytest.mark.parametrize("n", [1, 256])
def test_refuses_bad_n_levels(n):
    with pytest.raises(ValueError, match=rf"n_levels must be from 2 to 255 .*got {n}\."):
        glcm_features(GOOD, n)


def test_refuses_level_out_of_range():
    img = GOOD.copy()
    img[3, 5] = 40
    with pytest.raises(ValueError, match=r"levels\[3, 5\] is 40, but levels must lie in 0\.\.31 \(n_levels=32\)"):
        glcm_features(img, 32)


def test_refuses_nodata_out_of_range():
    with pytest.raises(ValueError, match=r"nodata must be a uint8 value from 0 to 255 or None, got 300"):
        glcm_features(GOOD, 4, nodata=300)


def test_refuses_bad_threads():
    with pytest.raises(ValueError, match=r"threads must be at least 1 .*got 0"):
        glcm_features(GOOD, 4, threads=0)


def test_refuses_non_integer_parameter():
    with pytest.raises(TypeError, match=r"window must be an integer, got 9\.0 of type float"):
        glcm_features(GOOD, 4, window=9.0)


def test_block_refuses_block_outside_raster():
    with pytest.raises(ValueError, match=r"block \(row_off=4, col_off=0, height=5, width=8\) does not lie inside the 8 x 8"):
        glcm_block(GOOD, (4, 0, 5, 8), 4)


def test_block_refuses_bad_window_type():
    with pytest.raises(TypeError, match=r"window must be a rasterio.windows.Window or a tuple"):
        glcm_block(GOOD, "0,0,4,4", 4)


def test_block_refuses_fractional_window():
    with pytest.raises(ValueError, match=r"window height must be a whole number of pixels, got 2\.5"):
        glcm_block(GOOD, Window(0, 0, 4, 2.5), 4)


def test_quantize_refuses_unsorted_edges():
    with pytest.raises(ValueError, match=r"edges must be strictly increasing, but edges\[1\] = 2\.0 and edges\[2\] = 2\.0"):
        quantize(np.zeros(3), [1.0, 2.0, 2.0])


def test_quantize_refuses_non_finite_edges():
    with pytest.raises(ValueError, match=r"edges must be finite numbers"):
        quantize(np.zeros(3), [1.0, np.nan])


def test_quantize_refuses_too_many_edges():
    with pytest.raises(ValueError, match=r"edges must hold from 1 to 254 thresholds .*got 255"):
        quantize(np.zeros(3), np.arange(255.0))


def test_quantize_refuses_non_numeric():
    with pytest.raises(TypeError, match=r"db must be a real-valued array, got dtype <U1"):
        quantize(np.array(["a"]), [1.0])


def test_equal_width_refuses_empty_range():
    with pytest.raises(ValueError, match=r"range must be finite with lo < hi, got lo=5\.0, hi=5\.0"):
        equal_width_edges(5.0, 5.0, 8)


def test_equal_frequency_refuses_no_finite_samples():
    with pytest.raises(ValueError, match=r"samples holds no finite value"):
        equal_frequency_edges([np.nan, np.inf], 8)


# --- the limits themselves are accepted, one step past them refused, each message names its value --


def test_limits_are_accepted():
    img = random_levels(np.random.default_rng(23), (40, 40), 255, holes=0.0)
    for n in (2, 255):
        assert glcm_features(np.minimum(img, n - 1).astype(np.uint8), n, window=3, distance=1).shape == (10, 40, 40)
    assert glcm_features(GOOD, 4, window=31, distance=30).shape == (10, *GOOD.shape)
    assert glcm_features(GOOD, 4, nodata=255).shape == (10, *GOOD.shape)
    assert quantize(np.array([0.5, 300.0]), np.arange(254.0)).tolist() == [1, 254]  # 254 thresholds
    assert quantize(np.array([0.5, 3.0]), [1.0]).tolist() == [0, 1]  # a single threshold
    assert quantize(np.array([1, 5], dtype=np.int16), [2.0]).tolist() == [0, 1]  # integer dB counts too
    with pytest.raises(ValueError, match=r"nodata must be a uint8 value from 0 to 255 or None, got 256"):
        glcm_features(GOOD, 4, nodata=256)


@pytest.mark.parametrize("call,error,message", [
    (lambda: quantize(np.zeros(3), [2.0, 1.0]), ValueError,
     r"edges must be strictly increasing, but edges\[0\] = 2\.0 and edges\[1\] = 1\.0\.$"),
    (lambda: quantize(np.zeros(3), [[1.0, 2.0]]), ValueError,
     r"^edges must be a 1-D sequence of thresholds, got 2 dimensions\.$"),
    (lambda: quantize(np.zeros(3), [np.inf]), ValueError, r"^edges must be finite numbers; found NaN or infinity\.$"),
    (lambda: equal_width_edges(0.0, 1.0, 1), ValueError, r"^levels must be from 2 to 255 "),
    (lambda: equal_frequency_edges([1.0, 2.0], 2.0), TypeError, r"^levels must be an integer, got 2\.0"),
    (lambda: equal_frequency_edges([np.nan], 4), ValueError,
     r"^samples holds no finite value; equal-frequency edges need data\.$"),
    (lambda: glcm_features(GOOD, 4, distance=2.0), TypeError, r"^distance must be an integer, got 2\.0"),
    (lambda: glcm_features(GOOD, 4, nodata=1.0), TypeError, r"^nodata must be an integer, got 1\.0"),
    (lambda: glcm_features(GOOD, 4, threads=2.0), TypeError, r"^threads must be an integer, got 2\.0"),
    (lambda: glcm_features(GOOD.tolist(), 4), TypeError,
     r"got list; make one with coalmine\.runtime\.texture\.quantize\.$"),
    (lambda: glcm_features(GOOD.astype(np.float32), 4), TypeError,
     r"quantize dB values with coalmine\.runtime\.texture\.quantize first\.$"),
    (lambda: texture.glcm_halo(9.0), TypeError, r"^window must be an integer, got 9\.0"),
    (lambda: texture.glcm_halo(9, 4.0), TypeError, r"^distance must be an integer, got 4\.0"),
    (lambda: glcm_block(GOOD, "abcd", 4), TypeError,
     r"^window must be a rasterio\.windows\.Window or a tuple \(row_off, col_off, height, width\), got 'abcd'\.$"),
    (lambda: glcm_block(GOOD, (True, 0, 4, 4), 4), ValueError, r"^window row_off must be a whole number of pixels, got True"),
    (lambda: glcm_block(GOOD, (0, 0.5, 4, 4), 4), ValueError, r"^window col_off must be a whole number"),
    (lambda: glcm_block(GOOD, (0, 0, 4.5, 4), 4), ValueError, r"^window height must be a whole number"),
    (lambda: glcm_block(GOOD, (0, 0, 4, 4.5), 4), ValueError, r"^window width must be a whole number"),
])
def test_refusals_name_the_argument(call, error, message):
    with pytest.raises(error, match=message):
        call()


@pytest.mark.parametrize("block", [(-1, 0, 2, 2), (0, -1, 2, 2), (0, 0, -1, 2), (0, 0, 2, -1), (0, 4, 2, 5), (7, 0, 2, 2)])
def test_block_refuses_any_side_outside_the_raster(block):
    with pytest.raises(ValueError, match=r"does not lie inside the 8 x 8"):
        glcm_block(GOOD, block, 4)


def test_empty_block_and_defaults():
    assert glcm_block(GOOD, (2, 1, 0, 3), 4).shape == (10, 0, 3)
    assert glcm_block(GOOD, (2, 1, 3, 0), 4).shape == (10, 3, 0)
    img = random_levels(np.random.default_rng(29), (30, 30), 16)
    # the study's 9 x 9 window at distance 4, both for a whole raster and for a block
    assert same_bits(glcm_features(img, 16), glcm_features(img, 16, window=9, distance=4))
    assert same_bits(glcm_block(img, (5, 6, 10, 12), 16), glcm_block(img, (5, 6, 10, 12), 16, window_size=9, distance=4))
    assert texture.glcm_halo() == 9 // 2 + 4


def test_block_of_a_wide_window_equals_the_whole_raster():
    # 31 px at distance 1: the halo must be 15 + 1 px (a third of the window would be 11)
    img = random_levels(np.random.default_rng(31), (70, 70), 8, holes=0.05)
    whole = glcm_features(img, 8, window=31, distance=1)
    got = glcm_block(img, (30, 30, 10, 10), 8, window_size=31, distance=1)
    assert same_bits(got, np.ascontiguousarray(whole[:, 30:40, 30:40]))
