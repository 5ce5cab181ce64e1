"""Sentinel-1 GRD products (SAFE folder, zip, COG-SAFE) straight into the preprocessing.

The study's SNAP chain -- apply orbit, thermal noise removal, border noise removal, calibration
to sigma0, Range-Doppler terrain correction -- done in NumPy on windows of the Sentinel-2 grid,
block-exact and in bounded memory. Modules, one concern each:

* :mod:`.product` -- finding the VV annotation, calibration, noise XML and measurement; refusals;
* :mod:`.annotation` -- parsing the XML into arrays;
* :mod:`.radiometry` -- noise removal, border noise masking, calibration LUTs;
* :mod:`.orbit` -- state vectors (annotation or ``.EOF``), polynomial interpolation;
* :mod:`.geocoding` -- Range-Doppler: map point + height -> image line/pixel, on a lattice;
* :mod:`.dem` -- DEM heights on the target grid, geoid -> ellipsoid;
* :mod:`.reader` -- :class:`GrdReader`, what the stack code uses.
"""

from .product import looks_like_s1_product, open_product
from .reader import GrdReader

__all__ = ["GrdReader", "looks_like_s1_product", "open_product"]
