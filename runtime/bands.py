"""The 23-band input specification: names, order and index formulas.

This module is the one home of the band list; docs and other modules quote it.
"""

from __future__ import annotations

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

assert N_BANDS == 23
