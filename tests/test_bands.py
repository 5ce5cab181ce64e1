"""The band table: positions of each group in the stack, stack recognition, band selection."""

from __future__ import annotations

import pytest
from coalmine.runtime import bands
from coalmine.runtime.bands import BAND_NAMES, S2_BANDS, band_positions, is_stack_bands


def test_group_positions_in_the_stack():
    # 9 Sentinel-2 bands, then NDVI NDCI BAI, then VV, then the 10 textures: 9 + 3 + 1 + 10 = 23
    assert bands.S2_SLICE == slice(0, 9)
    assert bands.INDEX_SLICE == slice(9, 12)
    assert bands.VV_INDEX == 12
    assert bands.GLCM_SLICE == slice(13, 23)
    assert BAND_NAMES[9:12] == ("NDVI", "NDCI", "BAI") and BAND_NAMES[12] == "VV"
    assert BAND_NAMES[13] == "GLCM_contrast" and BAND_NAMES[22] == "GLCM_correlation"
    assert bands.DERIVED_BANDS == frozenset(BAND_NAMES[9:])


def test_span_of_a_group_by_hand():
    # B04 is the 3rd band and B05 the 4th (0-based 2 and 3); GLCM_asm is band 13 + 3 = 16
    assert bands._span(("B04", "B05")) == slice(2, 4)
    assert bands._span(("GLCM_asm",)) == slice(16, 17)
    assert bands._span(("VV", "GLCM_contrast")) == slice(12, 14)
    with pytest.raises(AssertionError, match=r"band group \('B02', 'B04'\) is not contiguous in BAND_NAMES"):
        bands._span(("B02", "B04"))
    with pytest.raises(AssertionError, match="is not contiguous"):
        bands._span(("B03", "B02"))  # out of order


@pytest.mark.parametrize("names,expected", [
    (BAND_NAMES, True),
    (BAND_NAMES[::-1], True),  # any order
    (("B02", "NDVI"), True),  # any subset with a derived band
    (("VV",), True),
    (S2_BANDS, False),  # a raw Sentinel-2 GeoTIFF
    ((), False),
    (("VV", "VV"), False),  # duplicates
    (("B02", "NDVI", "B13"), False),  # a name outside the layout
    (("NDVI", None), False),  # an undescribed band
])
def test_is_stack_bands(names, expected):
    assert is_stack_bands(names) is expected


def test_band_positions():
    assert band_positions(BAND_NAMES, BAND_NAMES) is None
    assert band_positions(("VV", "NDVI", "B02"), ("B02", "VV")) == [2, 0]
    assert band_positions(BAND_NAMES, ("BAI", "B12")) == [11, 8]
    with pytest.raises(KeyError) as e:
        band_positions(("VV", "NDVI"), ("NDVI", "B02", "B03"))
    assert e.value.args[0] == ["B02", "B03"]
