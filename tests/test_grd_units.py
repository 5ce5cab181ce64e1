"""The pieces of the GRD reader on small hand-made inputs, each against a value worked out by hand.

Orbit files: which one a folder's choice lands on, the covering rule at its exact boundaries, the
window of state vectors used and every refusal's whole text. Radiometry: LUT interpolation and
sigma0 at pixels computed by hand; the border-noise scan on short lines. Geocoding: a straight,
uniform orbit, for which zero-Doppler time, slant range, line and pixel are a few lines of
arithmetic; the geolocation-grid heights against a bilinear function they must reproduce.
Annotation XML: a minimal product annotation, calibration and noise file written here.

None of it needs ../shared/realdata: the inputs are written by the tests.
"""

from __future__ import annotations

from pathlib import Path, PosixPath

import numpy as np
import pytest
from coalmine.runtime.errors import InputError, InputNotFoundError
from coalmine.runtime.preprocess.s1grd.annotation import (
    Annotation,
    AzimuthNoiseBlock,
    Calibration,
    LineVectors,
    Noise,
)
from coalmine.runtime.preprocess.s1grd.geocoding import (
    GridHeights,
    RangeDoppler,
    geodetic_to_ecef,
    lagrange3,
    quadratic_in_height,
)
from coalmine.runtime.preprocess.s1grd.orbit import (
    Orbit,
    annotation_orbit,
    find_eof,
    read_eof,
)
from coalmine.runtime.preprocess.s1grd.radiometry import (
    Radiometry,
    border_bounds,
    lut_window,
)

#: First line of the made-up product: a whole second, so that file names can state it exactly.
EPOCH = np.datetime64("2021-12-23T05:11:22", "ns")
#: Its last line, seconds after the first (05:11:47).
LAST = 25.0
#: A straight, uniform orbit: S(t) = S0 + V t (a degree-5 fit reproduces it exactly).
S0 = np.array([7.0e6, 0.0, 0.0])
V = np.array([0.0, 7000.0, 0.0])
C = 299_792_458.0


def _ann(**kw) -> Annotation:  # noqa: ANN003
    """A made-up S1B IW GRD annotation: 25 s, straight orbit, a regular geolocation grid."""
    t = np.arange(-60.0, 90.0, 10.0)
    srt = np.array([5e-3, 6e-3, 5e-3, 6e-3])
    line = np.array([0.0, 0.0, 1000.0, 1000.0])
    base = dict(
        mission="S1B", mode="IW", product_type="GRD", polarisation="VV",
        pass_direction="Descending", epoch=EPOCH, last_line_time=LAST, lines=12501, samples=5000,
        azimuth_time_interval=0.002, range_pixel_spacing=10.0, azimuth_pixel_spacing=10.0,
        slant_range_time=5e-3, radar_frequency=5.405e9, incidence_mid_swath=39.0,
        orbit_times=t, orbit_pos=S0 + t[:, None] * V, orbit_vel=np.tile(V, (t.size, 1)),
        # line times carry half the two-way slant range time plus 1 ms
        grid_time=line * 0.002 + 0.5 * srt + 0.001, grid_srt=srt, grid_line=line,
        grid_pixel=np.array([0.0, 4999.0, 0.0, 4999.0]), grid_lat=np.zeros(4),
        grid_lon=np.zeros(4), grid_height=np.zeros(4), grid_incidence=np.zeros(4),
        srgr_times=np.array([0.0, 25.0]), srgr_sr0=np.array([5.9e5, 5.8e5]),
        srgr_coeffs=np.array([[100.0, 1.5, 1e-6], [300.0, 1.7, 3e-6]]),
        grsr_gr0=np.zeros(2), grsr_coeffs=np.zeros((2, 1)),
    )
    base.update(kw)
    return Annotation(**base)


# -- orbit files -----------------------------------------------------------------------------
def _utc(t: float) -> str:
    return str(EPOCH + np.timedelta64(int(round(t * 1e6)), "us"))[:26]


def _eof(path: Path, times, mission: str = "Sentinel-1B", at: float | None = None,  # noqa: ANN001
         edit: dict | None = None) -> Path:
    """An orbit file with state vectors of the straight orbit at ``times`` (s after EPOCH);
    the vector at time ``at`` has the elements in ``edit`` replaced (None: left out)."""
    osv = []
    for t in times:
        p = S0 + t * V
        el = {"UTC": f"UTC={_utc(t)}", "X": repr(float(p[0])), "Y": repr(float(p[1])), "Z": repr(float(p[2]))}
        if t == at:
            el.update(edit or {})
        osv.append("<OSV>" + "".join(f"<{k}>{v}</{k}>" for k, v in el.items() if v is not None) + "</OSV>")
    path.write_text(f"<Earth_Explorer_File><Earth_Explorer_Header><Fixed_Header><Mission>{mission}"
                    "</Mission></Fixed_Header></Earth_Explorer_Header><Data_Block><List_of_OSVs>"
                    f"{''.join(osv)}</List_of_OSVs></Data_Block></Earth_Explorer_File>")
    return path


EVERY_10S = np.arange(-300.0, 330.0, 10.0)
#: Validity exactly from the first line (05:11:22) to the last (05:11:47).
EXACT = "V20211223T051122_20211223T051147"


def _folder(tmp_path: Path, *names: str) -> Path:
    d = tmp_path / "orbits"
    d.mkdir()
    for n in names:
        _eof(d / n, EVERY_10S)
    return d


def test_folder_choice_precise_before_restituted_whatever_the_case_of_the_name(tmp_path) -> None:  # noqa: ANN001
    """A lowercase precise file sorts after an uppercase restituted one by name, yet wins."""
    poe = f"s1b_oper_aux_poeorb_opod_20220112t000000_{EXACT.lower()}.eof"
    res = f"S1B_OPER_AUX_RESORB_OPOD_20211223T080000_{EXACT}.EOF"
    d = _folder(tmp_path, poe, res)
    assert find_eof(d, _ann()).name == poe
    assert read_eof(d, _ann()).source == f"precise orbit file {poe}"


def test_folder_choice_among_precise_files_is_by_name(tmp_path) -> None:  # noqa: ANN001
    a = f"S1B_OPER_AUX_POEORB_OPOD_20220112T000000_{EXACT}.EOF"
    b = "S1B_OPER_AUX_POEORB_OPOD_20220113T000000_V20211222T225942_20211224T005942.EOF"
    assert find_eof(_folder(tmp_path, b, a), _ann()).name == a


def test_folder_covering_rule_at_its_exact_boundaries(tmp_path) -> None:  # noqa: ANN001
    """Validity from the first line's second to the last line's second covers; a second less
    at either end does not."""
    ok = f"S1B_OPER_AUX_RESORB_OPOD_20211223T080000_{EXACT}.EOF"
    late_start = "S1B_OPER_AUX_POEORB_OPOD_20220112T000000_V20211223T051123_20211224T005942.EOF"
    early_stop = "S1B_OPER_AUX_POEORB_OPOD_20220112T000000_V20211222T225942_20211223T051146.EOF"
    d = _folder(tmp_path, ok, late_start, early_stop)
    assert find_eof(d, _ann()).name == ok
    (d / ok).unlink()
    with pytest.raises(InputError) as e:
        find_eof(d, _ann())
    assert str(e.value) == (
        f"--orbit {d} holds no S1B orbit file (…_AUX_POEORB_… or …_AUX_RESORB_….EOF) whose "
        "validity covers the acquisition at 2021-12-23T05:11:22 UTC; add it, or give the file itself")


class _Listed(PosixPath):
    """A folder whose listing comes in a fixed order (a real folder's order is the file system's)."""

    def iterdir(self):  # noqa: ANN201
        return iter(sorted(super().iterdir(), key=lambda p: not p.name.startswith("z")))


def test_folder_files_of_other_satellites_or_names_listed_first_are_skipped(tmp_path) -> None:  # noqa: ANN001
    good = f"S1B_OPER_AUX_POEORB_OPOD_20220112T000000_{EXACT}.EOF"
    d = _folder(tmp_path, good)
    (d / "zz_readme.txt").write_text("orbit files")
    (d / "zzS1A_OPER_AUX_POEORB_OPOD_20220112T000000_V20211222T225942_20211224T005942.EOF"
     ).write_text("")
    _eof(d / "S1A_OPER_AUX_POEORB_OPOD_20220112T000000_V20211222T225942_20211224T005942.EOF",
         EVERY_10S, mission="Sentinel-1A")
    listed = _Listed(d)
    assert next(listed.iterdir()).name.startswith("z")
    assert find_eof(listed, _ann()).name == good


def test_state_vector_window_and_the_smallest_count_accepted(tmp_path) -> None:  # noqa: ANN001
    """Vectors within 60 s of the first/last line are used, both ends included: here exactly 4."""
    f = _eof(tmp_path / "S1B_OPER_AUX_POEORB_x.EOF", [-61.0, -60.0, 0.0, 25.0, 85.0, 86.0])
    orb = read_eof(f, _ann())
    np.testing.assert_array_equal(orb.times, [-60.0, 0.0, 25.0, 85.0])
    assert orb.source == "precise orbit file S1B_OPER_AUX_POEORB_x.EOF"


def test_vectors_exactly_at_the_first_and_last_line_cover(tmp_path) -> None:  # noqa: ANN001
    f = _eof(tmp_path / "S1B_OPER_AUX_RESORB_x.EOF", [0.0, 5.0, 20.0, 25.0])
    orb = read_eof(f, _ann())
    np.testing.assert_array_equal(orb.times, [0.0, 5.0, 20.0, 25.0])
    assert orb.source == "restituted orbit file S1B_OPER_AUX_RESORB_x.EOF"


def _not_covering(p: Path) -> str:
    return (f"--orbit {p} does not cover the acquisition (2021-12-23T05:11:22 UTC, 25 s long); "
            "give the orbit file whose validity period contains it")


@pytest.mark.parametrize("times", [
    [1.0, 5.0, 10.0, 20.0, 30.0, 40.0],  # starts 1 s after the first line
    [-40.0, -30.0, -20.0, -10.0, 0.0, 24.0],  # ends 1 s before the last line
    [-70.0, -60.0, 0.0, 25.0, 86.0, 90.0],  # covers, but only 3 vectors within the window
])
def test_refuses_orbit_file_not_covering_the_acquisition(tmp_path, times) -> None:  # noqa: ANN001
    f = _eof(tmp_path / "S1B_OPER_AUX_POEORB_x.EOF", times)
    with pytest.raises(InputError) as e:
        read_eof(f, _ann())
    assert str(e.value) == _not_covering(f)


def test_a_vector_lacking_a_field_is_skipped(tmp_path) -> None:  # noqa: ANN001
    """A state vector without its time or a coordinate is left out; the others are used."""
    times = [-20.0, -10.0, 0.0, 10.0, 20.0, 30.0]
    for tag in ("UTC", "X", "Z"):
        f = _eof(tmp_path / f"S1B_OPER_AUX_POEORB_{tag}.EOF", times, at=10.0, edit={tag: None})
        np.testing.assert_array_equal(read_eof(f, _ann()).times, [-20.0, -10.0, 0.0, 20.0, 30.0])


def test_refuses_a_vector_that_cannot_be_read(tmp_path) -> None:  # noqa: ANN001
    times = [-20.0, -10.0, 0.0, 10.0, 20.0, 30.0]
    f = _eof(tmp_path / "S1B_OPER_AUX_POEORB_x.EOF", times, at=-10.0, edit={"Y": "7e6 m"})
    with pytest.raises(InputError) as e:
        read_eof(f, _ann())
    assert str(e.value) == (f"--orbit {f}: state vector 2 cannot be read (could not convert string "
                            "to float: '7e6 m'); the file is damaged: download it again")
    f = _eof(tmp_path / "S1B_OPER_AUX_POEORB_y.EOF", times, at=0.0, edit={"UTC": "UTC=23 Dec 2021"})
    with pytest.raises(InputError, match=r"^--orbit .*_y\.EOF: state vector 3 cannot be read \(.*"
                                         r"23 Dec 2021.*\); the file is damaged: download it again$"):
        read_eof(f, _ann())


def test_orbit_file_named_otherwise_is_recorded_as_orbit_file(tmp_path) -> None:  # noqa: ANN001
    f = _eof(tmp_path / "my_orbit.xml", EVERY_10S)
    assert read_eof(f, _ann()).source == "orbit orbit file my_orbit.xml"


def test_orbit_file_refusals_whole_text(tmp_path) -> None:  # noqa: ANN001
    missing = tmp_path / "S1B_OPER_AUX_POEORB_gone.EOF"
    with pytest.raises(InputNotFoundError) as e:
        read_eof(missing, _ann())
    assert str(e.value) == (f"--orbit {missing} does not exist; give a Sentinel-1 orbit file "
                            "(S1?_OPER_AUX_POEORB_*.EOF) or a folder of them")
    junk = tmp_path / "junk.EOF"
    junk.write_text("<a>")
    with pytest.raises(InputError) as e:
        read_eof(junk, _ann())
    assert str(e.value).startswith(f"--orbit {junk} is not an orbit file (XML: ")
    assert str(e.value).endswith("); give the S1?_OPER_AUX_POEORB_*.EOF of the acquisition day, "
                                 "unzipped")
    empty = tmp_path / "empty.EOF"
    empty.write_text("<Earth_Explorer_File><Data_Block><List_of_OSVs/></Data_Block></Earth_Explorer_File>")
    with pytest.raises(InputError) as e:
        read_eof(empty, _ann())
    assert str(e.value) == (f"--orbit {empty} holds no <OSV> state vectors; it is not a Sentinel-1 "
                            "orbit file (S1?_OPER_AUX_POEORB_*.EOF)")
    other = _eof(tmp_path / "S1A.EOF", EVERY_10S, mission="Sentinel-1A")
    with pytest.raises(InputError) as e:
        read_eof(other, _ann())
    assert str(e.value) == (f"--orbit {other} is for Sentinel-1A but the product was acquired by "
                            "S1B; give the S1B orbit file of that day")


def test_orbit_needs_four_vectors() -> None:
    t = np.array([0.0, 10.0, 20.0])
    with pytest.raises(InputError) as e:
        Orbit(t, S0 + t[:, None] * V, "test vectors")
    assert str(e.value) == ("orbit (test vectors) has 3 state vectors around the acquisition; "
                            "at least 4 are needed")


def test_orbit_state_of_a_uniformly_accelerated_track() -> None:
    """Positions p0 + v t + a t^2 / 2 give back v + a t and a (the fit is exact for them)."""
    a = np.array([-8.0, 0.5, 2.0])
    t = np.arange(-60.0, 61.0, 10.0)
    orb = Orbit(t, S0 + t[:, None] * V + 0.5 * t[:, None] ** 2 * a, "test")
    p, v, acc = orb.state(np.array([[3.0]]))
    assert p.shape == (1, 1, 3)
    np.testing.assert_allclose(p[0, 0], S0 + 3.0 * V + 4.5 * a, atol=1e-6)
    np.testing.assert_allclose(v[0, 0], V + 3.0 * a, atol=1e-8)
    np.testing.assert_allclose(acc[0, 0], a, atol=1e-9)
    assert orb.residual_m < 1e-6


@pytest.mark.parametrize("n", [4, 6])
def test_orbit_fit_reproduces_polynomials_up_to_degree_five(n) -> None:  # noqa: ANN001
    """4 vectors determine a cubic, 6 or more a quintic: the fit goes through them, and between
    them gives the polynomial they were taken from."""
    t = np.linspace(-50.0, 50.0, 2 * n)[::2] if n == 4 else np.linspace(-60.0, 60.0, 13)
    deg = 3 if n == 4 else 5
    coef = np.array([[7.0e6, 1.0e3, -2.0e3], [50.0, 7000.0, -10.0], [-4.0, 1.0, 3.0],
                     [1e-3, -2e-3, 5e-4], [2e-6, -1e-6, 3e-6], [4e-9, 2e-9, -1e-9]])[: deg + 1]
    pos = np.polynomial.polynomial.polyval(t, coef).T
    orb = Orbit(t, pos, "test")
    p, _, _ = orb.state(np.array([7.5, -33.0]))
    np.testing.assert_allclose(p, np.polynomial.polynomial.polyval(np.array([7.5, -33.0]), coef).T,
                               atol=1e-5)


def test_annotation_orbit_window_or_all_vectors_when_too_few() -> None:
    orb = annotation_orbit(_ann())  # vectors every 10 s from -60 to 80: all inside -60..85
    np.testing.assert_array_equal(orb.times, np.arange(-60.0, 90.0, 10.0))
    assert orb.source == "annotation state vectors"
    for t, used in (([-100.0, -60.0, 0.0, 40.0, 85.0, 100.0], [-60.0, 0.0, 40.0, 85.0]),  # 4 inside
                    ([-100.0, -60.0, 0.0, 85.0, 100.0], [-100.0, -60.0, 0.0, 85.0, 100.0]),  # 3: all
                    ([-200.0, -100.0, 0.0, 100.0, 200.0], [-200.0, -100.0, 0.0, 100.0, 200.0])):
        t = np.array(t)
        orb = annotation_orbit(_ann(orbit_times=t, orbit_pos=S0 + t[:, None] * V))
        np.testing.assert_array_equal(orb.times, used)


# -- radiometry ------------------------------------------------------------------------------
def test_lut_window_single_vector_and_two_vectors() -> None:
    one = LineVectors(np.array([4]), [np.array([0, 10])], [np.array([1.0, 3.0])])
    out = lut_window(one, np.array([0.0, 9.0]), np.array([0.0, 5.0, 10.0, 15.0]))
    np.testing.assert_array_equal(out, [[1.0, 2.0, 3.0, 3.0]] * 2)
    two = LineVectors(np.array([0, 10]), [np.array([0, 10]), np.array([0, 20])],
                      [np.array([1.0, 3.0]), np.array([5.0, 9.0])])
    out = lut_window(two, np.array([-3.0, 0.0, 5.0, 10.0, 12.0]), np.array([0.0, 10.0, 20.0]))
    # row 5 is halfway: col 10 -> (3 + 7) / 2; rows outside 0..10 take the nearest vector
    np.testing.assert_allclose(out, [[1, 3, 3], [1, 3, 3], [3, 5, 6], [5, 7, 9], [5, 7, 9]])
    three = LineVectors(np.array([0, 10, 30]), two.pixels + [np.array([0, 10, 20])],
                        two.values + [np.array([10.0, 20.0, 40.0])])  # at cols 0, 10, 20: 10, 20, 40
    cols = np.array([0.0, 10.0, 20.0])
    out = lut_window(three, np.array([-3.0, 0.0, 5.0, 10.0, 20.0, 30.0, 40.0]), cols)
    np.testing.assert_allclose(out, [[1, 3, 3], [1, 3, 3], [3, 5, 6], [5, 7, 9], [7.5, 13.5, 24.5],
                                     [10, 20, 40], [10, 20, 40]], rtol=0, atol=1e-12)
    # rows between the 2nd and 3rd vectors only: a quarter and three quarters of the way
    np.testing.assert_allclose(lut_window(three, np.array([15.0, 25.0]), cols),
                               [[6.25, 10.25, 16.75], [8.75, 16.75, 32.25]], rtol=0, atol=1e-12)


def _radiometry(ipf: float = 3.40) -> Radiometry:
    cal = Calibration({"sigmaNought": LineVectors(np.array([0, 100]),
                                                  [np.array([0, 100]), np.array([0, 100])],
                                                  [np.array([100.0, 200.0]), np.array([300.0, 400.0])])})
    rng = LineVectors(np.array([0]), [np.array([0, 100])], [np.array([1000.0, 3000.0])])
    blocks = [AzimuthNoiseBlock("IW1", 0, 49, 0, 49, np.array([0, 49]), np.array([1.0, 1.0])),
              AzimuthNoiseBlock("IW2", 0, 100, 50, 99, np.array([0, 100]), np.array([0.5, 1.5]))]
    return Radiometry(cal, Noise(rng, blocks), ipf)


def test_noise_range_times_azimuth_by_block() -> None:
    r = _radiometry()
    rows = np.array([0.0, 10.0, 49.0, 50.0])
    n = r.noise_window(rows, np.array([0.0, 25.0, 49.0, 50.0, 60.0, 99.0, 100.0]))
    # range LUT: 1000 + 20 * col; azimuth: block IW1 (lines 0..49, cols 0..49) 1, block IW2
    # (lines 0..100, cols 50..99) 0.5 + line / 100, both bounds inclusive; outside every block 0
    rng = np.array([1000.0, 1500.0, 1980.0, 2000.0, 2200.0, 2980.0, 3000.0])
    az = np.array([[1, 1, 1, 0.5, 0.5, 0.5, 0], [1, 1, 1, 0.6, 0.6, 0.6, 0],
                   [1, 1, 1, 0.99, 0.99, 0.99, 0], [0, 0, 0, 1.0, 1.0, 1.0, 0]])
    np.testing.assert_allclose(n, rng * az)
    old = _radiometry(ipf=2.84)  # before IPF 2.90 the range LUT alone
    np.testing.assert_allclose(old.noise_window(np.array([50.0]), np.array([60.0])), [[2200.0]])
    assert not old.azimuth_noise and r.azimuth_noise and _radiometry(ipf=2.90).azimuth_noise


def test_sigma0_at_hand_worked_pixels() -> None:
    r = _radiometry()
    dn = np.array([[100, 0, 30], [200, 50, 300]], dtype=np.uint16)
    out = r.calibrate(dn, 50, 20)
    # A at line 50: halfway between 100 + col and 300 + col, 200 + col; N at line 50, cols
    # 20..22: 0 (block IW1 ends at line 49, IW2 starts at col 50)
    a = 200.0 + np.array([20.0, 21.0, 22.0])
    assert out[0, 0] == pytest.approx(100**2 / a[0] ** 2, rel=1e-6)
    assert np.isnan(out[0, 1])  # DN 0 is no data
    assert out[0, 2] == pytest.approx(900 / a[2] ** 2, rel=1e-6)
    assert out.dtype == np.float32
    # line 51, col 20: A = 0.49 * 120 + 0.51 * 320 = 222, N = 0 too
    assert out[1, 0] == pytest.approx(200**2 / 222.0**2, rel=1e-6)
    # inside block IW1 the noise is subtracted: line 10, col 10: N = 1200, A = 0.9 * 110 +
    # 0.1 * 310 = 130; col 11: N = 1220
    s = r.calibrate(np.array([[40, 30]], dtype=np.uint16), 10, 10)
    assert s[0, 0] == pytest.approx((1600 - 1200) / 130.0**2, rel=1e-6)
    assert s[0, 1] == pytest.approx(1e-5, rel=1e-6)  # 900 - 1220 < 0: the floor, -50 dB


def test_sigma0_border_mask_and_other_luts() -> None:
    r = _radiometry()
    dn = np.full((2, 5), 100, np.uint16)
    dn[0, 2] = 0  # a DN of 0 inside the border is no data too
    out = r.calibrate(dn, 60, 10, border=np.array([[11, 13], [10, 10]]))
    assert np.isnan(out).tolist() == [[True, False, True, False, True],
                                      [False, True, True, True, True]]
    with pytest.raises(ValueError, match=r"the calibration has no gamma LUT \(has \['sigmaNought'\]\)"):
        Radiometry(r_cal(), None, 3.4, lut="gamma")
    assert Radiometry(r_cal(), None, 3.4).noise_window(np.arange(2.0), np.arange(3.0)).tolist() == [[0] * 3] * 2


def r_cal() -> Calibration:
    return Calibration({"sigmaNought": LineVectors(np.array([0]), [np.array([0])], [np.array([1.0])])})


@pytest.mark.parametrize("dn,noise,bounds", [
    ([0, 0, 0, 0], 100.0, (4, -1)),  # no data at all
    ([0, 0, 50, 0], 100.0, (2, 2)),  # one sample, above the noise
    ([0, 0, 50, 50, 50, 0], 0.0, (2, 4)),
    ([0, 10, 50, 50, 0], 100.0, (2, 3)),  # 10^2 = 100 <= 1.5 * 100: noise
    ([0, 5, 5, 50, 0], 100.0, (3, 3)),  # two noisy samples from the near edge
    ([0, 50, 10, 10, 10, 0], 100.0, (1, 1)),  # three from the far edge
    ([0, 30, 50, 30, 0], 600.0, (2, 2)),  # 30^2 = 900 = 1.5 * 600 exactly: still noise
    ([0, 14, 50, 14, 0], 100.0, (1, 3)),  # 14^2 = 196 > 150: signal
    ([0, 39, 50, 39, 0], 1000.0, (1, 3)),  # 39^2 = 1521 > 1500: signal
    ([0, 5, 5, 5, 0], 100.0, (4, 3)),  # all noise: nothing valid
])
def test_border_bounds_by_hand(dn, noise, bounds) -> None:  # noqa: ANN001
    line = np.array(dn, dtype=np.uint16)
    assert border_bounds(line, np.full(line.size, noise)) == bounds


def test_border_scan_stops_after_500_samples() -> None:
    line = np.full(1200, 5, np.uint16)  # all noise: each edge trimmed by at most 500
    line[0] = 0
    assert border_bounds(line, np.full(1200, 100.0)) == (501, 699)


# -- geocoding -------------------------------------------------------------------------------
def test_geodetic_to_ecef_known_points() -> None:
    from pyproj import Transformer

    xyz = geodetic_to_ecef(np.array([0.0, 90.0, 0.0]), np.array([0.0, 0.0, 90.0]),
                           np.array([0.0, 100.0, 0.0]))
    b = 6378137.0 * (1 - 1 / 298.257223563)
    np.testing.assert_allclose(xyz, [[6378137.0, 0, 0], [0, 6378237.0, 0], [0, 0, b]], rtol=0,
                               atol=1e-6)
    lon, lat, h = 13.5, 41.8, 1234.0
    ref = Transformer.from_crs("EPSG:4979", "EPSG:4978", always_xy=True).transform(lon, lat, h)
    np.testing.assert_allclose(geodetic_to_ecef(np.array(lon), np.array(lat), np.array(h)), ref,
                               rtol=0, atol=1e-6)


def test_range_doppler_on_a_straight_orbit() -> None:
    """Satellite along +y at 7 km/s from x = 7000 km; a point at x = 6400 km, y = 87.5 km is
    seen broadside at t = 87500 / 7000 = 12.5 s from 600 km."""
    rd = RangeDoppler(_ann(), annotation_orbit(_ann()))
    assert rd.line_k == pytest.approx(0.5) and rd.line_b == pytest.approx(0.001)
    p = np.array([[6.4e6, 87500.0, 0.0], [6.4e6, 87500.0 - 7000.0 * 10, 0.0]])
    t, r = rd.zero_doppler(p)
    np.testing.assert_allclose(t, [12.5, 2.5], atol=1e-9)
    np.testing.assert_allclose(r, [6e5, 6e5], atol=1e-6)
    line, pixel = rd.line_pixel(p)
    assert line[0] == pytest.approx((12.5 - 0.5 * 1.2e6 / C - 0.001) / 0.002, abs=1e-6)
    # at 12.5 s: sr0 585 km, coefficients (200, 1.6, 2e-6); x = 15 km:
    # 200 + 1.6 * 15000 + 2e-6 * 15000^2 = 24650 m = 2465 px
    assert pixel[0] == pytest.approx(2465.0, abs=1e-6)
    # at 2.5 s: sr0 589 km, (120, 1.52, 1.2e-6); x = 11 km: 120 + 16720 + 145.2 = 16985.2 m
    assert pixel[1] == pytest.approx(1698.52, abs=1e-6)


def test_zero_doppler_on_a_circular_orbit() -> None:
    """Satellite on a circle of 7000 km in the equator plane at 1 mrad/s: a point at azimuth
    angle w t0, 6400 km from the axis and 100 km above the plane, is seen at t0 from
    sqrt(600^2 + 100^2) km. Newton's iteration from the middle (12.5 s) must converge for points
    at the first and last line as well."""
    w, radius = 1e-3, 7.0e6
    t = np.arange(-60.0, 90.0, 10.0)
    orb = Orbit(t, np.c_[radius * np.cos(w * t), radius * np.sin(w * t), np.zeros_like(t)], "circle")
    t0 = np.array([[0.0], [20.0], [25.0]])  # a (3, 1) block of points, as the reader gives
    p = np.stack([6.4e6 * np.cos(w * t0), 6.4e6 * np.sin(w * t0), np.full((3, 1), 1e5)], axis=-1)
    tz, r = RangeDoppler(_ann(), orb).zero_doppler(p)
    assert tz.shape == r.shape == (3, 1)
    # the degree-5 fit of the circle over 140 s is 0.05 mm off: 1e-8 s, 0.1 mm
    np.testing.assert_allclose(tz, t0, rtol=0, atol=1e-6)
    np.testing.assert_allclose(r, np.hypot(6e5, 1e5), rtol=0, atol=1e-3)


def test_ground_range_needs_grd_polynomials() -> None:
    rd = RangeDoppler(_ann(srgr_times=np.zeros(0)), annotation_orbit(_ann()))
    with pytest.raises(ValueError, match="the annotation has no slant-to-ground-range polynomials"):
        rd.ground_range(np.array([1.0]), np.array([6e5]))


def _heights(lines, pixels) -> GridHeights:  # noqa: ANN001
    """Grid heights of h(l, p) = 2 + 0.5 l + 0.01 p + 0.0001 l p, which bilinear interpolation
    reproduces exactly between the nodes."""
    L, P = np.meshgrid(np.asarray(lines, float), np.asarray(pixels, float), indexing="ij")
    return GridHeights(_ann(grid_line=L.ravel(), grid_pixel=P.ravel(),
                            grid_height=(2 + 0.5 * L + 0.01 * P + 0.0001 * L * P).ravel()))


def _h(line, pixel):  # noqa: ANN001, ANN202
    return 2 + 0.5 * line + 0.01 * pixel + 0.0001 * line * pixel


@pytest.mark.parametrize("lines,pixels", [([0, 100], [0, 1000, 3000]), ([0, 100, 300], [0, 1000])])
def test_grid_heights_bilinear_and_held_beyond_the_grid(lines, pixels) -> None:  # noqa: ANN001
    gh = _heights(lines, pixels)
    l_end, p_end = lines[-1], pixels[-1]
    ql = np.array([0.0, 50.0, 80.0, 250.0, -40.0, l_end + 50.0, 30.0])
    qp = np.array([0.0, 500.0, 2500.0, 1500.0, -100.0, p_end + 100.0, p_end + 100.0])
    cl, cp = np.clip(ql, 0, l_end), np.clip(qp, 0, p_end)
    np.testing.assert_allclose(gh(ql, qp), _h(cl, cp), atol=1e-9)


def test_grid_heights_of_a_single_line_or_pixel() -> None:
    one_line = _heights([200], [0, 1000, 3000])
    np.testing.assert_allclose(one_line(np.array([0.0, 500.0]), np.array([500.0, 2000.0])),
                               [_h(200, 500), _h(200, 2000)], atol=1e-9)
    one_pixel = _heights([0, 100, 300], [700])
    np.testing.assert_allclose(one_pixel(np.array([50.0, 250.0]), np.array([0.0, 9000.0])),
                               [_h(50, 700), _h(250, 700)], atol=1e-9)


def test_grid_heights_irregular_grid_uses_the_mean() -> None:
    gh = GridHeights(_ann(grid_line=np.array([0.0, 0.0, 100.0]), grid_pixel=np.array([0.0, 10.0, 10.0]),
                          grid_height=np.array([10.0, 20.0, 60.0])))
    np.testing.assert_allclose(gh(np.array([0.0, 50.0]), np.array([0.0, 5.0])), [30.0, 30.0])


def test_lagrange3_through_the_nodes_and_exact_for_a_quadratic() -> None:
    nodes = (-500.0, 2000.0, 4500.0)
    q = lambda h: 3.0 - 0.002 * h + 1e-6 * h * h  # noqa: E731
    v = [np.array([q(h), 10.0 * k]) for k, h in enumerate(nodes)]
    for h in (-500.0, 0.0, 150.0, 2000.0, 3900.0, 4500.0):
        # second column: 0, 10, 20 at the nodes, a straight line: 10 per 2500 m
        np.testing.assert_allclose(lagrange3(np.float64(h), nodes, *v), [q(h), (h + 500.0) / 250.0],
                                   rtol=0, atol=1e-12)


def test_quadratic_in_height_coefficients() -> None:
    """v(h) = 3 + 2 u + 0.5 u^2 with u = (h - 2000) / 1000: at -500, 2000, 4500 m (u = -2.5, 0,
    2.5) it is 1.125, 3, 11.125; the coefficients come back."""
    v = [np.array([1.125, 2.0, 0.0]), np.array([3.0, 4.0, 0.0]), np.array([11.125, 6.0, 0.0])]
    a, b, c = quadratic_in_height((-500.0, 2000.0, 4500.0), *v)
    np.testing.assert_allclose(a, [3.0, 4.0, 0.0], rtol=0, atol=1e-12)
    np.testing.assert_allclose(b, [2.0, 0.8, 0.0], rtol=0, atol=1e-12)  # linear: 2 per 2.5 u
    np.testing.assert_allclose(c, [0.5, 0.0, 0.0], rtol=0, atol=1e-12)  # zeros: all zero


# -- annotation XML --------------------------------------------------------------------------
def _osv(t: str, k: int) -> str:
    return (f"<orbit><time>{t}</time><position><x>{k}.5</x><y>{-k}</y><z>{10 * k}</z></position>"
            f"<velocity><x>{k}</x><y>2</y><z>3</z></velocity></orbit>")


def _gp(t: str, line: int, pixel: int, k: int) -> str:
    return (f"<geolocationGridPoint><azimuthTime>{t}</azimuthTime><slantRangeTime>{5e-3 + k * 1e-4}"
            f"</slantRangeTime><line>{line}</line><pixel>{pixel}</pixel><latitude>{41 + k}</latitude>"
            f"<longitude>{13 - k}</longitude><height>{100 * k}</height><incidenceAngle>{30 + k}"
            "</incidenceAngle></geolocationGridPoint>")


def _annotation_xml(n_orbit: int = 4, n_grid: int = 4, convs: bool = True) -> bytes:
    orbits = "".join(_osv(f"2021-12-23T05:11:{10 + 10 * k:02d}.000000", k) for k in range(n_orbit))
    grid = "".join(_gp(f"2021-12-23T05:11:{22 + k:02d}.500000", 100 * k, 10 * k, k)
                   for k in range(n_grid))
    conv = ("<coordinateConversion><coordinateConversionList>"
            "<coordinateConversion><azimuthTime>2021-12-23T05:11:24.000000</azimuthTime><slantRangeTime>5e-3"
            "</slantRangeTime><sr0>800000.0</sr0><srgrCoefficients>1.0 2.0 3.0</srgrCoefficients>"
            "<gr0>0.0</gr0><grsrCoefficients>4.0 5.0</grsrCoefficients></coordinateConversion>"
            "<coordinateConversion><azimuthTime>2021-12-23T05:11:34.000000</azimuthTime><slantRangeTime>5e-3"
            "</slantRangeTime><sr0>800100.0</sr0><srgrCoefficients>6.0 7.0 8.0</srgrCoefficients>"
            "<gr0>1.0</gr0><grsrCoefficients>9.0 10.0</grsrCoefficients></coordinateConversion>"
            "</coordinateConversionList></coordinateConversion>") if convs else ""
    return (
        "<product><adsHeader><missionId>\n  s1b\n</missionId><productType>grd</productType>"
        "<polarisation>vv</polarisation><mode>iw</mode></adsHeader>"
        "<generalAnnotation><productInformation><pass> Descending </pass>"
        "<radarFrequency>5.405000454334350e+09</radarFrequency></productInformation>"
        f"<orbitList>{orbits}</orbitList></generalAnnotation>"
        "<imageAnnotation><imageInformation>"
        "<productFirstLineUtcTime>2021-12-23T05:11:22.250000Z</productFirstLineUtcTime>"
        "<productLastLineUtcTime>2021-12-23T05:11:47.125000</productLastLineUtcTime>"
        "<slantRangeTime>5.3e-03</slantRangeTime><rangePixelSpacing>1.0e+01</rangePixelSpacing>"
        "<azimuthPixelSpacing>1.1e+01</azimuthPixelSpacing><azimuthTimeInterval>1.5e-03</azimuthTimeInterval>"
        "<numberOfSamples>26102</numberOfSamples><numberOfLines>16705</numberOfLines>"
        "<incidenceAngleMidSwath>3.9e+01</incidenceAngleMidSwath></imageInformation></imageAnnotation>"
        f"<geolocationGrid><geolocationGridPointList>{grid}</geolocationGridPointList></geolocationGrid>"
        f"{conv}</product>").encode()


def test_parse_annotation_fields() -> None:
    from coalmine.runtime.preprocess.s1grd.annotation import parse_annotation

    a = parse_annotation(_annotation_xml(), "a.xml")
    assert (a.mission, a.mode, a.product_type, a.polarisation, a.pass_direction) == (
        "S1B", "IW", "GRD", "VV", "Descending")
    assert a.epoch == np.datetime64("2021-12-23T05:11:22.250", "ns")
    assert a.last_line_time == 24.875  # 05:11:47.125 - 05:11:22.25
    assert (a.lines, a.samples) == (16705, 26102)
    assert (a.azimuth_time_interval, a.range_pixel_spacing, a.azimuth_pixel_spacing) == (1.5e-3, 10.0, 11.0)
    assert (a.slant_range_time, a.radar_frequency, a.incidence_mid_swath) == (5.3e-3, 5.405000454334350e9, 39.0)
    np.testing.assert_array_equal(a.orbit_times, [-12.25, -2.25, 7.75, 17.75])
    np.testing.assert_array_equal(a.orbit_pos, [[0.5, 0, 0], [1.5, -1, 10], [2.5, -2, 20], [3.5, -3, 30]])
    np.testing.assert_array_equal(a.orbit_vel, [[0, 2, 3], [1, 2, 3], [2, 2, 3], [3, 2, 3]])
    np.testing.assert_allclose(a.grid_time, [0.25, 1.25, 2.25, 3.25], rtol=0, atol=1e-12)
    np.testing.assert_allclose(a.grid_srt, [5e-3, 5.1e-3, 5.2e-3, 5.3e-3], rtol=1e-12)
    np.testing.assert_array_equal(a.grid_line, [0, 100, 200, 300])
    np.testing.assert_array_equal(a.grid_pixel, [0, 10, 20, 30])
    np.testing.assert_array_equal(a.grid_lat, [41, 42, 43, 44])
    np.testing.assert_array_equal(a.grid_lon, [13, 12, 11, 10])
    np.testing.assert_array_equal(a.grid_height, [0, 100, 200, 300])
    np.testing.assert_array_equal(a.grid_incidence, [30, 31, 32, 33])
    np.testing.assert_array_equal(a.srgr_times, [1.75, 11.75])
    np.testing.assert_array_equal(a.srgr_sr0, [800000.0, 800100.0])
    np.testing.assert_array_equal(a.srgr_coeffs, [[1, 2, 3], [6, 7, 8]])
    np.testing.assert_array_equal(a.grsr_gr0, [0.0, 1.0])
    np.testing.assert_array_equal(a.grsr_coeffs, [[4, 5], [9, 10]])
    b = parse_annotation(_annotation_xml(convs=False), "b.xml")  # not GRD: no polynomials
    assert b.srgr_times.shape == (0,) and b.srgr_coeffs.shape == (0, 1) and b.grsr_gr0.shape == (0,)


def test_parse_time_to_the_nanosecond_with_or_without_z() -> None:
    import warnings

    from coalmine.runtime.preprocess.s1grd.annotation import parse_time

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy deprecates parsing a time zone
        t = parse_time(" 2021-12-23T05:11:22.123456789Z ")
    assert t.dtype == np.dtype("datetime64[ns]")
    assert t - np.datetime64("2021-12-23T05:11:22", "s") == np.timedelta64(123456789, "ns")


def test_parse_annotation_refusals_whole_text() -> None:
    from coalmine.runtime.preprocess.s1grd.annotation import parse_annotation

    with pytest.raises(InputError) as e:
        parse_annotation(_annotation_xml(n_orbit=3), "a.xml")
    assert str(e.value) == ("Sentinel-1 a.xml has 3 orbit state vectors; at least 4 are needed to "
                            "geocode: the annotation is damaged, download the product again")
    assert parse_annotation(_annotation_xml(n_orbit=4, n_grid=4), "a.xml").grid_line.size == 4
    with pytest.raises(InputError) as e:
        parse_annotation(_annotation_xml(n_grid=3), "a.xml")
    assert str(e.value) == "Sentinel-1 a.xml has no geolocation grid; download the product again"
    with pytest.raises(InputError) as e:
        parse_annotation(_annotation_xml().replace(b"<numberOfLines>16705</numberOfLines>", b""), "a.xml")
    assert str(e.value) == ("Sentinel-1 a.xml lacks <numberOfLines>; the file is not a Sentinel-1 "
                            "Level-1 annotation or it is damaged: download the product again")
    with pytest.raises(InputError) as e:
        parse_annotation(b"<product>", "a.xml")
    assert str(e.value).startswith("Sentinel-1 a.xml is not valid XML (no element found")
    assert str(e.value).endswith("); the product is damaged: download it again")


def _vector(line: int, pixels: str, values: str) -> str:
    return (f"<calibrationVector><line>{line}</line><pixel>{pixels}</pixel>"
            f"<sigmaNought>{values}</sigmaNought>"
            + f"<betaNought>{' '.join('1' for _ in pixels.split())}</betaNought>"
            + "</calibrationVector>")


def test_parse_calibration_orders_vectors_by_line() -> None:
    from coalmine.runtime.preprocess.s1grd.annotation import parse_calibration

    xml = ("<calibration><calibrationInformation><absoluteCalibrationConstant>1.393e+00"
           "</absoluteCalibrationConstant></calibrationInformation><calibrationVectorList>"
           + _vector(50, "0 40", "600.5 601") + _vector(0, "0 40", "500 502") + "</calibrationVectorList>"
           "</calibration>")
    cal = parse_calibration(xml.encode(), "c.xml")
    assert sorted(cal.luts) == ["betaNought", "sigmaNought"] and cal.absolute_constant == 1.393
    s = cal.luts["sigmaNought"]
    assert s.lines.tolist() == [0, 50] and s.lines.dtype == np.int64
    assert [p.tolist() for p in s.pixels] == [[0, 40], [0, 40]]
    assert [v.tolist() for v in s.values] == [[500.0, 502.0], [600.5, 601.0]]
    bare = parse_calibration(("<calibration><calibrationVectorList>" + _vector(0, "0", "7")
                              + "</calibrationVectorList></calibration>").encode(), "c.xml")
    assert bare.absolute_constant == 1.0


def test_parse_calibration_refusals_whole_text() -> None:
    from coalmine.runtime.preprocess.s1grd.annotation import parse_calibration

    with pytest.raises(InputError) as e:
        parse_calibration(b"<calibration><calibrationVectorList/></calibration>", "c.xml")
    assert str(e.value) == ("Sentinel-1 c.xml holds no calibration vectors; the file is damaged: "
                            "download the product again")
    bad = "<calibration><calibrationVectorList>" + _vector(0, "0 40 80", "1 2") + "</calibrationVectorList></calibration>"
    with pytest.raises(InputError) as e:
        parse_calibration(bad.encode(), "c.xml")
    assert str(e.value) == ("Sentinel-1 c.xml: a <sigmaNought> vector has 2 values for 3 pixels; "
                            "the file is damaged: download the product again")
    empty = "<calibration><calibrationVectorList>" + _vector(0, "", "") + "</calibrationVectorList></calibration>"
    with pytest.raises(InputError, match="a <sigmaNought> vector has 0 values for 0 pixels"):
        parse_calibration(empty.encode(), "c.xml")


def _az(swath: str, lines: str, values: str) -> str:
    return (f"<noiseAzimuthVector><swath>{swath}</swath><firstAzimuthLine>1</firstAzimuthLine>"
            "<firstRangeSample>2</firstRangeSample><lastAzimuthLine>300</lastAzimuthLine>"
            f"<lastRangeSample>400</lastRangeSample><line>{lines}</line>"
            f"<noiseAzimuthLut>{values}</noiseAzimuthLut></noiseAzimuthVector>")


def test_parse_noise_both_layouts() -> None:
    from coalmine.runtime.preprocess.s1grd.annotation import parse_noise

    new = ("<noise><noiseRangeVectorList><noiseRangeVector><line>7</line><pixel>0 9</pixel>"
           "<noiseRangeLut>3.5 4.5</noiseRangeLut></noiseRangeVector></noiseRangeVectorList>"
           "<noiseAzimuthVectorList>" + _az(" IW2 ", "1 150 300", "0.5 1 1.5")
           + "</noiseAzimuthVectorList></noise>")
    n = parse_noise(new.encode(), "n.xml")
    assert n.range.lines.tolist() == [7] and n.range.values[0].tolist() == [3.5, 4.5]
    (b,) = n.azimuth
    assert (b.swath, b.first_line, b.last_line, b.first_sample, b.last_sample) == ("IW2", 1, 300, 2, 400)
    assert b.lines.tolist() == [1, 150, 300] and b.values.tolist() == [0.5, 1.0, 1.5]
    old = ("<noise><noiseVectorList><noiseVector><line>0</line><pixel>0 5</pixel>"
           "<noiseLut>8 9</noiseLut></noiseVector></noiseVectorList></noise>")
    n = parse_noise(old.encode(), "n.xml")
    assert n.range.values[0].tolist() == [8.0, 9.0] and n.azimuth == []


def test_parse_noise_refusals_whole_text() -> None:
    from coalmine.runtime.preprocess.s1grd.annotation import parse_noise

    with pytest.raises(InputError) as e:
        parse_noise(b"<noise><noiseRangeVectorList/></noise>", "n.xml")
    assert str(e.value) == ("Sentinel-1 n.xml holds no noise vectors; the file is damaged: "
                            "download the product again")
    bad = ("<noise><noiseRangeVectorList><noiseRangeVector><line>7</line><pixel>0 9</pixel>"
           "<noiseRangeLut>3.5 4.5</noiseRangeLut></noiseRangeVector></noiseRangeVectorList>"
           "<noiseAzimuthVectorList>" + _az("IW1", "1 150", "0.5 1 1.5") + "</noiseAzimuthVectorList></noise>")
    with pytest.raises(InputError) as e:
        parse_noise(bad.encode(), "n.xml")
    assert str(e.value) == ("Sentinel-1 n.xml: an azimuth noise vector has 3 values for 2 lines; "
                            "download the product again")
    with pytest.raises(InputError, match="an azimuth noise vector has 0 values for 0 lines"):
        parse_noise(bad.replace("1 150", "").replace("0.5 1 1.5", "").encode(), "n.xml")


@pytest.mark.parametrize(("drop", "tag"), [
    ("<time>2021-12-23T05:11:10.000000</time>", "time"),  # an orbit state vector's time
    ("<x>0.5</x>", "x"),  # its position
    ("<velocity><x>0</x>", "x"),  # its velocity
    ("<azimuthTime>2021-12-23T05:11:22.500000</azimuthTime>", "azimuthTime"),  # a grid point's time
    ("<line>0</line>", "line"),  # a grid point's line
    ("<azimuthTime>2021-12-23T05:11:24.000000</azimuthTime>", "azimuthTime"),  # a range conversion's
    ("<sr0>800000.0</sr0>", "sr0"),
    ("<gr0>0.0</gr0>", "gr0"),
])
def test_a_missing_element_of_a_vector_is_named_with_the_file(drop, tag) -> None:
    from coalmine.runtime.preprocess.s1grd.annotation import parse_annotation

    xml = _annotation_xml()
    assert xml.count(drop.encode()) == 1
    keep = "<velocity>" if drop.startswith("<velocity>") else ""
    with pytest.raises(InputError) as e:
        parse_annotation(xml.replace(drop.encode(), keep.encode()), "a.xml")
    assert str(e.value) == (f"Sentinel-1 a.xml lacks <{tag}>; the file is not a Sentinel-1 Level-1 "
                            "annotation or it is damaged: download the product again")


_NOISE = ("<noise><noiseRangeVectorList><noiseRangeVector><line>7</line><pixel>0 9</pixel>"
          "<noiseRangeLut>3.5 4.5</noiseRangeLut></noiseRangeVector></noiseRangeVectorList>"
          "<noiseAzimuthVectorList>" + _az("IW2", "1 150 300", "0.5 1 1.5") + "</noiseAzimuthVectorList></noise>")


@pytest.mark.parametrize(("drop", "tag"), [
    ("<line>7</line>", "line"), ("<firstAzimuthLine>1</firstAzimuthLine>", "firstAzimuthLine"),
    ("<lastAzimuthLine>300</lastAzimuthLine>", "lastAzimuthLine"),
    ("<firstRangeSample>2</firstRangeSample>", "firstRangeSample"),
    ("<lastRangeSample>400</lastRangeSample>", "lastRangeSample"),
])
def test_a_missing_element_of_a_noise_vector_is_named_with_the_file(drop, tag) -> None:
    from coalmine.runtime.preprocess.s1grd.annotation import parse_noise

    assert _NOISE.count(drop) == 1
    with pytest.raises(InputError) as e:
        parse_noise(_NOISE.replace(drop, "").encode(), "n.xml")
    assert str(e.value) == (f"Sentinel-1 n.xml lacks <{tag}>; the file is not a Sentinel-1 Level-1 "
                            "annotation or it is damaged: download the product again")


def test_calibration_and_noise_files_that_are_not_xml_or_lack_a_line_are_named() -> None:
    from coalmine.runtime.preprocess.s1grd.annotation import parse_calibration, parse_noise

    for parse, name, data in ((parse_calibration, "c.xml", b"<calibration>"), (parse_noise, "n.xml", b"<noise>")):
        with pytest.raises(InputError) as e:
            parse(data, name)
        assert str(e.value).startswith(f"Sentinel-1 {name} is not valid XML (no element found")
    cal = ("<calibration><calibrationVectorList>" + _vector(0, "0 5", "7 8").replace("<line>0</line>", "")
           + "</calibrationVectorList></calibration>")
    with pytest.raises(InputError) as e:
        parse_calibration(cal.encode(), "c.xml")
    assert str(e.value).startswith("Sentinel-1 c.xml lacks <line>;")
