"""The 23-band input specification: names, order and index formulas.

This module is the one home of the band layout. The stack builder
(:class:`coalmine.runtime.preprocess.stack.RawSource`) writes each group at the position given
here (:data:`S2_SLICE`, :data:`INDEX_SLICE`, :data:`VV_INDEX`, :data:`GLCM_SLICE`); a prepared
stack is recognised by its band descriptions (:func:`is_stack_bands`), not by equality with
:data:`BAND_NAMES`, so a bundle may use another list of these bands; and the compiled GLCM
kernel's feature order is held equal to :data:`GLCM_FEATURES` (``coalmine.runtime.texture``
refuses a kernel built otherwise). Docs and other modules quote it.
"""

from __future__ import annotations

from collections.abc import Sequence

#: Sentinel-2 L2A bands used, in stack order (20 m bands are resampled to 10 m).
S2_BANDS: tuple[str, ...] = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B11", "B12")
#: Bands that Sentinel-2 delivers at 10 m; the others come at 20 m.
S2_10M_BANDS: tuple[str, ...] = ("B02", "B03", "B04", "B08")

#: Normalised-difference indices: name -> (a, b) meaning (a - b) / (a + b).
INDICES: dict[str, tuple[str, str]] = {
    "NDVI": ("B08", "B04"),
    "NDCI": ("B08", "B11"),  # the study's "normalized difference coal index"
    "BAI": ("B02", "B08"),  # the study's "built-up area index"
}

#: The Sentinel-1 band: sigma0 VV in dB, speckle-filtered, on the Sentinel-2 grid.
S1_BAND = "VV"

#: GLCM feature names, in the kernel's output order (quoted by coalmine.runtime.texture).
GLCM_FEATURES: tuple[str, ...] = (
    "contrast",
    "dissimilarity",
    "homogeneity",
    "asm",
    "energy",
    "max_prob",
    "entropy",
    "glcm_mean",
    "glcm_variance",
    "correlation",
)
GLCM_BANDS: tuple[str, ...] = tuple(f"GLCM_{f}" for f in GLCM_FEATURES)

#: The default band spec: 9 S2 bands, 3 indices, VV, 10 GLCM textures of VV.
BAND_NAMES: tuple[str, ...] = S2_BANDS + tuple(INDICES) + (S1_BAND,) + GLCM_BANDS
N_BANDS = len(BAND_NAMES)

#: The stack stores float32 with NaN as nodata.
STACK_DTYPE = "float32"
STACK_NODATA = float("nan")


def _span(group: tuple[str, ...]) -> slice:
    """Where ``group`` sits in :data:`BAND_NAMES` (it must be contiguous and in order)."""
    start = BAND_NAMES.index(group[0])
    if BAND_NAMES[start : start + len(group)] != group:
        raise AssertionError(f"band group {group} is not contiguous in BAND_NAMES")
    return slice(start, start + len(group))


#: Positions of each group in the stack the builder writes.
S2_SLICE: slice = _span(S2_BANDS)
INDEX_SLICE: slice = _span(tuple(INDICES))
VV_INDEX: int = BAND_NAMES.index(S1_BAND)
GLCM_SLICE: slice = _span(GLCM_BANDS)

#: Bands that only a prepared stack holds (a raw Sentinel-2 GeoTIFF never does).
DERIVED_BANDS: frozenset[str] = frozenset(BAND_NAMES) - frozenset(S2_BANDS)


def is_stack_bands(names: Sequence[str | None]) -> bool:
    """True if band descriptions ``names`` describe a prepared stack.

    A stack's bands are distinct names of this module's layout, at least one of them derived
    (an index, VV or a GLCM texture), which tells it from a raw Sentinel-2 GeoTIFF whose
    descriptions name only Sentinel-2 bands. Any subset or order qualifies; whether it holds
    what a bundle needs is :func:`band_positions`' question.

    Example:
        >>> is_stack_bands(BAND_NAMES), is_stack_bands(S2_BANDS), is_stack_bands(("VV", "VV"))
        (True, False, False)
    """
    known = set(BAND_NAMES)
    return (len(names) > 0 and all(n in known for n in names) and len(set(names)) == len(names)
            and any(n in DERIVED_BANDS for n in names))


def band_positions(have: Sequence[str], want: Sequence[str]) -> list[int] | None:
    """Positions in ``have`` of the bands ``want``, or None when the lists are equal.

    Raises:
        KeyError: listing the bands of ``want`` that ``have`` lacks (callers word the message).

    Example:
        >>> band_positions(("VV", "NDVI"), ("NDVI",)), band_positions(BAND_NAMES, BAND_NAMES)
        ([1], None)
    """
    if tuple(have) == tuple(want):
        return None
    missing = [b for b in want if b not in have]
    if missing:
        raise KeyError(missing)
    return [list(have).index(b) for b in want]


assert N_BANDS == 23
