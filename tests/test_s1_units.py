"""Sentinel-1 units at the boundaries of their rules (coalmine.runtime.preprocess.s1.detect_units),
by hand: 1 % negative values, a median of exactly 2 (MAX_LINEAR_MEDIAN), integer medians of 1 and
100, and what a zero or negative linear value becomes."""

from __future__ import annotations

import numpy as np
import pytest
from coalmine.runtime.errors import UnitsError
from coalmine.runtime.preprocess.s1 import MAX_LINEAR_MEDIAN, detect_units


def values(median: float, n_negative: int, n: int = 100) -> np.ndarray:
    """n values with the given median (the middle pair both equal it) and n_negative below 0."""
    v = np.full(n, median, np.float64)
    v[:n_negative] = -1.0
    v[n - 10:] = median * 2 + 1  # some spread above the median
    return v


def test_one_percent_negative_is_db_and_less_is_linear():
    assert MAX_LINEAR_MEDIAN == 2.0
    assert detect_units(values(0.05, 1), "float32", "auto", "vv.tif") == "db"  # exactly 1 %
    assert detect_units(values(0.05, 0, n=101), "float32", "auto", "vv.tif") == "linear"
    with pytest.raises(UnitsError, match=r"^--s1 vv\.tif was declared linear but 1% of its values are negative, "
                       r"which linear power cannot be; it looks like dB: pass --s1-units db \(or auto\)$"):
        detect_units(values(0.05, 1), "float32", "linear", "vv.tif")


def test_a_median_of_exactly_two_is_not_raw_numbers_and_not_db():
    # at the limit: still linear power (raw digital numbers lie above it)
    assert detect_units(values(2.0, 0), "float32", "auto", "vv.tif") == "linear"
    with pytest.raises(UnitsError, match=r"does not hold sigma0: its values are float32 with median 2\.001"):
        detect_units(values(2.001, 0), "float32", "auto", "vv.tif")
    # declared dB: a median of 2 with nothing negative is not linear power below the limit...
    assert detect_units(values(2.0, 0), "float32", "db", "vv.tif") == "db"
    # ... but one just below it is, and the message says how much is >= 0
    with pytest.raises(UnitsError, match=(r"^--s1 vv\.tif was declared dB but 100% of its values are >= 0 "
                                          r"\(median 1\.99\), which is linear power, not dB \(sigma0 in dB is mostly "
                                          r"-25\.\.\+5\); pass --s1-units linear \(or auto\)$")):
        detect_units(values(1.99, 0), "float32", "db", "vv.tif")
    # 1 % negative with a small median declared dB is accepted (sigma0 in dB can sit near 0)
    assert detect_units(values(1.0, 1), "float32", "db", "vv.tif") == "db"


def test_integer_rasters_at_their_limits():
    # integers with a median of 1 are not digital numbers; above 1 they are
    assert detect_units(values(1.0, 0), "uint16", "auto", "vv.tif") == "linear"
    with pytest.raises(UnitsError, match=r"its values are int16 with median 2 \(linear sigma0"):
        detect_units(values(2.0, 0), "int16", "auto", "vv.tif")  # a float raster with median 2 passes
    # declared dB: integer values around 100 are still read as dB, above 100 they are raw numbers
    assert detect_units(values(100.0, 1), "int16", "db", "vv.tif") == "db"
    with pytest.raises(UnitsError, match=r"^--s1 vv\.tif holds integer values around 101: raw GRD digital numbers"):
        detect_units(values(101.0, 1), "int16", "db", "vv.tif")
    # one percent negative integers are not digital numbers
    assert detect_units(values(5.0, 1), "int16", "auto", "vv.tif") == "db"


def test_zero_or_negative_linear_power_is_nodata(tmp_path):
    import rasterio
    from coalmine.runtime.bundle import S1Params
    from coalmine.runtime.preprocess.s1 import open_s1
    from coalmine.runtime.raster import Grid
    from factories import DEFAULT_TRANSFORM, UTM50S
    from rasterio.windows import Window

    a = np.full((20, 20), 0.05, np.float32)
    a[5, 5], a[6, 6] = 0.0, -0.01
    with rasterio.open(tmp_path / "vv.tif", "w", driver="GTiff", dtype="float32", count=1, height=20, width=20,
                       crs=UTM50S, transform=DEFAULT_TRANSFORM) as ds:
        ds.write(a, 1)
    grid = Grid(UTM50S, DEFAULT_TRANSFORM, 20, 20)
    r = open_s1(tmp_path / "vv.tif", grid, S1Params(units="linear"))
    try:
        p = r.read_power(Window(0, 0, 20, 20))
    finally:
        r.close()
    assert np.isnan(p[5, 5]) and np.isnan(p[6, 6])  # no log of 0 or of a negative power later
    assert np.isfinite(np.delete(p.ravel(), [5 * 20 + 5, 6 * 20 + 6])).all()


def test_dem_and_orbit_are_refused_for_a_calibrated_raster(tmp_path):
    import rasterio
    from coalmine.runtime.bundle import S1Params
    from coalmine.runtime.errors import UsageError
    from coalmine.runtime.preprocess.s1 import open_s1
    from coalmine.runtime.raster import Grid
    from factories import DEFAULT_TRANSFORM, UTM50S

    vv = tmp_path / "vv.tif"
    with rasterio.open(vv, "w", driver="GTiff", dtype="float32", count=1, height=4, width=4, crs=UTM50S,
                       transform=DEFAULT_TRANSFORM) as ds:
        ds.write(np.full((1, 4, 4), 0.05, np.float32))
    grid = Grid(UTM50S, DEFAULT_TRANSFORM, 4, 4)
    tail = (rf" to a Sentinel-1 GRD product \(SAFE folder or zip\), but --s1 {vv} is a raster that was geocoded "
            r"where it was made; drop ")
    with pytest.raises(UsageError, match=r"^--dem applies" + tail + r"--dem or give the GRD product$"):
        open_s1(vv, grid, S1Params(), dem=tmp_path / "dem.tif")
    with pytest.raises(UsageError, match=r"^--orbit applies" + tail + r"--orbit or give the GRD product$"):
        open_s1(vv, grid, S1Params(), orbit=tmp_path / "orbits")
    with pytest.raises(UsageError, match=r"^--dem and --orbit apply" + tail + r"--dem and --orbit or give the GRD product$"):
        open_s1(vv, grid, S1Params(), dem=tmp_path / "dem.tif", orbit=tmp_path / "orbits")


def test_the_declared_db_refusal_counts_the_share_of_values_at_or_above_zero():
    # 9 of 1000 values negative (0.9 %, under the 1 % of dB) and a median of 0.05: 99 % are >= 0
    with pytest.raises(UnitsError, match=r"was declared dB but 99% of its values are >= 0 \(median 0\.05\)"):
        detect_units(values(0.05, 9, n=1000), "float32", "db", "vv.tif")
