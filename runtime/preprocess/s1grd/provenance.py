"""How a scene's Sentinel-1 band was made, compared with how a bundle's training scenes' was.

``Preprocessing.s1`` records ``source`` ("raster" or "grd"), ``radiometry`` ("sigma0" or
"gamma0") and ``terrain`` ("dem", "none" or "unknown"). Backscatter made differently differs
systematically -- gamma0 is sigma0 / cos(incidence), about 1 dB brighter at 38 deg; without a DEM
slopes and pit walls land 5-20 px off -- so a model sees other numbers than in training. That is
a warning, not a refusal: the user may know the difference is small for their area.
"""

from __future__ import annotations

from typing import Any


def s1_differences(scene: Any, trained: Any) -> list[str]:
    """Sentences naming how the S1 of ``scene`` (an S1Params) differs from ``trained``'s.

    Unknown values ("unknown" terrain of a raster made elsewhere) are never a difference.
    """
    out = []
    a = getattr(scene, "radiometry", "sigma0")
    b = getattr(trained, "radiometry", "sigma0")
    if a != b:
        out.append(f"its Sentinel-1 VV is {a} but the model was trained on {b}")
    a = getattr(scene, "terrain", "unknown")
    b = getattr(trained, "terrain", "unknown")
    if a != b and "unknown" not in (a, b):
        def say(t: str) -> str:
            return "terrain-corrected with a DEM" if t == "dem" else "geocoded without a DEM"

        out.append(f"its Sentinel-1 VV was {say(a)} but the model's training scenes were {say(b)}")
    return out
