"""Type stub of the compiled GLCM kernel (cpp_glcm/binding.cpp). Private: use texture.py."""

import numpy as np
import numpy.typing as npt

N_FEATURES: int
#: Feature names in output order (must equal coalmine.runtime.bands.GLCM_FEATURES).
FEATURES: tuple[str, ...]
MIN_WINDOW: int
MAX_WINDOW: int
MIN_LEVELS: int
MAX_LEVELS: int

def features(
    levels: npt.NDArray[np.uint8],
    n_levels: int,
    window: int,
    distance: int,
    nodata: int | None,
    threads: int | None = None,
    region: tuple[int, int, int, int] | None = None,
) -> npt.NDArray[np.float32]:
    """Ten GLCM features, float32 (10, height, width), of ``region`` (row_off, col_off, height,
    width; default the whole raster). The GIL is released while computing."""

def check_levels(
    levels: npt.NDArray[np.uint8],
    n_levels: int,
    nodata: int | None,
    threads: int | None = None,
) -> None:
    """Raise ValueError naming the first pixel that is neither a level below n_levels nor nodata."""

def hardware_threads() -> int:
    """Number of hardware threads (at least 1)."""
