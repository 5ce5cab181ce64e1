"""Scene preprocessing: raw Sentinel-2 L2A + Sentinel-1 VV -> the 23-band stack.

One implementation serves ``coal-prepare`` (writes the stack), ``coal-run`` (raw inputs read
window by window) and ``coal-train``. Modules, one concern each:

* :mod:`.s2` — finding Sentinel-2 bands (multi-band GeoTIFF, folder, SAFE), DN offset rule, L1C refusal;
* :mod:`.s1` — Sentinel-1 VV: units, refusing raw GRD DN, warping onto the S2 grid;
* :mod:`.speckle` — Lee filter (linear power) and dB conversions;
* :mod:`.indices` — NDVI, NDCI, BAI with zero-denominator guard;
* :mod:`.warp` — windowed resampling of any raster onto the target grid
  (:class:`coalmine.runtime.raster.Grid`);
* :mod:`.stack` — :class:`SceneSource` (prepared stack or raw inputs) and :func:`open_scene`;
* :mod:`.prepare` — :func:`prepare_scene`, the streaming writer.
"""

from .prepare import prepare_scene
from .stack import (
    INPUTS_TAG,
    PREPROCESSING_TAG,
    RawSource,
    SceneSource,
    StackSource,
    is_stack,
    open_scene,
)

__all__ = [
    "INPUTS_TAG",
    "PREPROCESSING_TAG",
    "RawSource",
    "SceneSource",
    "StackSource",
    "is_stack",
    "open_scene",
    "prepare_scene",
]
