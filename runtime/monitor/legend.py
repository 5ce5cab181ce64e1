"""What the values of the monitor's rasters mean and how they are drawn.

One home for the class codes, names and colours shared by the raster writers (the COGs' colour
tables, so QGIS shows them ready-styled), the report's map previews and its legends.

Yearly composite masks (uint8):

====  ==========  ==========================
code  meaning     colour
====  ==========  ==========================
0     not mined   light grey
1     mined       coal brown
255   nodata      transparent (clouds, edges)
====  ==========  ==========================

Change maps between two composites (uint8):

====  ==================  ===========================
code  meaning             colour
====  ==================  ===========================
0     stable non-mine     light grey
1     newly mined         red
2     no longer mined     green (replanted/reclaimed)
3     stable mine         dark brown
255   nodata              transparent (either year)
====  ==================  ===========================
"""

from __future__ import annotations

from ..raster import NODATA

RGBA = tuple[int, int, int, int]

NOT_MINED, MINED = 0, 1
MASK_NAMES: dict[int, str] = {MINED: "mined", NOT_MINED: "not mined"}
MASK_COLORS: dict[int, RGBA] = {
    NOT_MINED: (235, 235, 230, 255),
    MINED: (92, 58, 33, 255),
    NODATA: (255, 255, 255, 0),
}

STABLE_NON_MINE, NEWLY_MINED, NO_LONGER_MINED, STABLE_MINE = 0, 1, 2, 3
CLASS_NAMES: dict[int, str] = {
    STABLE_NON_MINE: "stable non-mine",
    NEWLY_MINED: "newly mined",
    NO_LONGER_MINED: "no longer mined",
    STABLE_MINE: "stable mine",
}
CHANGE_COLORS: dict[int, RGBA] = {
    STABLE_NON_MINE: (225, 225, 220, 255),
    NEWLY_MINED: (215, 48, 39, 255),
    NO_LONGER_MINED: (26, 152, 80, 255),
    STABLE_MINE: (92, 58, 33, 255),
    NODATA: (255, 255, 255, 0),
}
