"""Output rasters and polygons of ``coal-run``, written under temporary names.

- ``*_prob.tif``: uint8 probability, ``round(p * 250)`` (0..250, so 1 step = 0.004),
  255 = nodata. Quantising to 250 steps keeps a one-byte COG and exact decimal reading
  (value / 250).
- ``*_mask.tif``: uint8 0/1, 255 = nodata. It is defined **from the quantised probability**:
  ``mask = prob_u8 >= ceil(threshold * 250)``, so thresholding the probability COG at
  ``threshold`` in QGIS reproduces the mask exactly, pixel for pixel.
- Both are written window by window into a tiled GeoTIFF, then converted with rio-cogeo's
  ``cog_translate`` (overviews: average for the probability, nearest for the mask), all inside
  the run's hidden work folder (:class:`~coalmine.runtime._io.WorkFolder`), and renamed into the
  output folder when every output is complete (:class:`OutputSet`). A run killed at any moment
  leaves only that folder, which the next run in the output folder removes.
- ``*_mines.geojson``: the mask's mine polygons in EPSG:4326 with ``area_ha`` (geodesic).
  Polygonisation uses GDAL's polygonizer on a striped 0/1 mine raster **on disk**
  (``rasterio.features.shapes(rasterio.band(ds, 1))``), which scans the raster line by line:
  memory follows the number and size of polygons, not the scene size, and polygons that
  cross block or strip boundaries come out whole (no merging step, no decimation). Features
  are streamed to the file one by one. Polygons smaller than the minimum mapping unit are
  left out of the GeoJSON (the raster hectares are not filtered; the summary gives both).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import rasterio
from rasterio.windows import Window

from ._io import WorkFolder, fsync_path, write_failure
from .areas import geodesic_area_ha
from .errors import OutputError
from .raster import NODATA, gdal_writes_checked, to_cog

log = logging.getLogger("coalmine.runtime.outputs")

PROB_SCALE = 250


def quantize_prob(prob: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """uint8 probability ``round(p * 250)``, 255 where not ``valid``.

    Example:
        >>> quantize_prob(np.array([[0.0, 0.5, 1.0]]), np.array([[True, True, False]])).tolist()
        [[0, 125, 255]]
    """
    q = np.rint(np.clip(prob, 0.0, 1.0) * PROB_SCALE).astype(np.uint8)
    q[~valid] = NODATA
    return q


def mask_level(threshold: float) -> int:
    """Smallest quantised probability counted as mine: ``ceil(threshold * 250)``.

    Example:
        >>> mask_level(0.5), mask_level(0.3)
        (125, 75)
    """
    return int(math.ceil(threshold * PROB_SCALE - 1e-9))


def mask_from_prob(q: np.ndarray, threshold: float) -> np.ndarray:
    """0/1 mask from a quantised probability (255 stays 255)."""
    m = (q >= mask_level(threshold)).astype(np.uint8)
    m[q == NODATA] = NODATA
    return m


def write_feature_collection(f: TextIO, features: Iterable[dict[str, Any]], **members: Any) -> None:
    """Stream a GeoJSON FeatureCollection to ``f``, one feature in memory at a time.

    The collection's members (``name``...) and each feature are serialised by :mod:`json`;
    the features go between the brackets of the ``features`` member that json wrote for a
    placeholder, one per line.
    """
    head, tail = json.dumps({"type": "FeatureCollection", **members, "features": [0]}).rsplit("[0]", 1)
    f.write(head + "[\n")
    for i, feat in enumerate(features):
        f.write(("" if i == 0 else ",\n") + json.dumps(feat, separators=(",", ":"), allow_nan=False))
    f.write("\n]" + tail + "\n")


class OutputSet:
    """The rasters and files of one run, under temporary names until :meth:`commit`.

    Args:
        out_dir: output folder (created; must be writable).
        prefix: file name prefix, e.g. the scene's stem.
        crs, transform, width, height: the input grid (copied exactly to the rasters).

    Use as a context manager: on an exception every temporary file is removed and no
    final file is touched.

    Example:
        >>> with OutputSet("out", "scene", crs, transform, w, h) as outs:  # doctest: +SKIP
        ...     outs.write(window, prob_u8, mask_u8)
        ...     outs.finish_rasters(); outs.commit()
    """

    def __init__(self, out_dir: str | os.PathLike[str], prefix: str, crs: Any, transform: Any,
                 width: int, height: int, tags: dict[str, str] | None = None) -> None:
        self.work = WorkFolder(out_dir, what="run")
        self.out_dir = self.work.out_dir
        self._ds: dict[str, Any] = {}
        try:
            self._open(prefix, crs, transform, width, height, tags)
        except (rasterio.errors.RasterioError, OSError) as exc:
            self.abort()
            raise write_failure(self.out_dir, exc, f"into {self.out_dir}") from exc
        except BaseException:  # Ctrl-C or SIGTERM before the caller's ``with`` could clean up
            self.abort()
            raise

    def _open(self, prefix: str, crs: Any, transform: Any, width: int, height: int,
              tags: dict[str, str] | None) -> None:
        """Name the outputs and open the staging rasters in the work folder."""
        self.prefix = prefix
        self.final = {
            "prob": self.out_dir / f"{prefix}_prob.tif",
            "mask": self.out_dir / f"{prefix}_mask.tif",
            "mines": self.out_dir / f"{prefix}_mines.geojson",
            "summary": self.out_dir / f"{prefix}_summary.json",
        }
        self.tmp: dict[str, Path] = {k: self._temp(v.name) for k, v in self.final.items()}
        self.stage = {"prob": self._temp(f"{prefix}_prob.stage.tif"), "mask": self._temp(f"{prefix}_mask.stage.tif"),
                      "mines": self._temp(f"{prefix}_mines.stage.tif")}
        profile = {
            "driver": "GTiff", "dtype": "uint8", "count": 1, "width": width, "height": height,
            "crs": crs, "transform": transform, "nodata": NODATA, "tiled": True,
            "blockxsize": 256, "blockysize": 256, "compress": "deflate", "BIGTIFF": "IF_SAFER",
        }
        self.tags = tags or {}
        # "mines" (1 = mine, 0 = anything else, no nodata) only feeds the polygonizer, so that
        # nodata areas are not traced into polygons that would then be thrown away. It is
        # striped and uncompressed (1 byte/px on disk, temporary): GDAL's polygonizer reads
        # scanlines, and from a tiled compressed raster that was 20x slower on a 10980^2 scene.
        mines_profile = {k: v for k, v in profile.items() if k not in ("blockxsize", "blockysize", "compress")}
        mines_profile.update(nodata=None, tiled=False, blockysize=16)
        profiles = {"prob": profile, "mask": profile, "mines": mines_profile}
        for k, p in self.stage.items():
            self._ds[k] = rasterio.open(p, "w", **profiles[k])

    def _temp(self, name: str) -> Path:
        return self.work.path / name

    def write(self, window: Window, prob_u8: np.ndarray, mask_u8: np.ndarray) -> None:
        """Write one window of both rasters (called from the writer thread only).

        Raises:
            OutputError: the disk is full or the folder cannot be written.
        """
        try:
            self._ds["prob"].write(prob_u8, 1, window=window)
            self._ds["mask"].write(mask_u8, 1, window=window)
            self._ds["mines"].write((mask_u8 == 1).view(np.uint8), 1, window=window)
        except (rasterio.errors.RasterioError, OSError) as exc:
            raise write_failure(self.out_dir, exc, f"the maps of {self.prefix} into {self.out_dir}") from exc

    def _close_one(self, key: str) -> None:
        ds = getattr(self, "_ds", {}).pop(key, None)
        if ds is not None and not ds.closed:
            ds.close()

    def close_stage(self, keys: tuple[str, ...] = ("prob", "mask", "mines")) -> None:
        """Close staging GeoTIFFs (idempotent)."""
        for k in keys:
            self._close_one(k)

    def finish_rasters(self) -> None:
        """Turn the staging rasters into COGs under their temporary final names."""
        try:
            with gdal_writes_checked(self.out_dir, f"the maps of {self.prefix} into {self.out_dir}"):
                self.close_stage(("prob", "mask", "mines"))  # the last blocks are written on close
        except (rasterio.errors.RasterioError, OSError) as exc:
            if isinstance(exc, OutputError):
                raise
            raise write_failure(self.out_dir, exc, f"the maps of {self.prefix} into {self.out_dir}") from exc
        resampling = {"prob": "average", "mask": "nearest"}
        for k in ("prob", "mask"):
            to_cog(self.stage[k], self.tmp[k], nodata=NODATA, overview_resampling=resampling[k],
                   tags=self.tags, name=self.final[k])
            self.stage[k].unlink(missing_ok=True)

    def write_mines(self, mask_path: Path | None = None, *, min_area_ha: float = 0.0) -> dict[str, Any]:
        """Polygonise the mine pixels into ``*_mines.geojson`` (temporary name); return counts.

        Args:
            mask_path: a raster where 1 = mine (default: the run's staged 1-bit mine raster).
            min_area_ha: polygons below this geodesic area are left out.

        Returns:
            ``{"polygons": n_kept, "dropped_below_mmu": n, "area_ha": sum of kept areas}``.
        """
        from rasterio.features import shapes
        from rasterio.warp import transform_geom

        mask_path = mask_path or self.stage["mines"]
        kept = dropped = 0
        total = 0.0
        def features() -> Iterator[dict[str, Any]]:
            nonlocal kept, dropped, total
            band = rasterio.band(ds, 1)
            for geom, value in shapes(band, mask=band, connectivity=4, transform=ds.transform):
                if int(value) != 1:
                    continue  # nodata (255) regions are polygonised too, and skipped here
                g = transform_geom(ds.crs, "EPSG:4326", geom, precision=7)
                area = geodesic_area_ha(g)
                if area < min_area_ha:
                    dropped += 1
                    continue
                kept += 1
                total += area
                yield {"type": "Feature", "id": kept, "properties": {"id": kept, "area_ha": round(area, 4)},
                       "geometry": g}

        try:
            with rasterio.open(mask_path) as ds, open(self.tmp["mines"], "w", encoding="utf-8") as f:
                write_feature_collection(f, features(), name=self.prefix + "_mines")
        except OSError as exc:
            raise write_failure(self.out_dir, exc, f"{self.final['mines'].name}") from exc
        return {"polygons": kept, "dropped_below_mmu": dropped, "area_ha": total}

    def write_summary(self, summary: dict[str, Any]) -> None:
        """Write the summary JSON under its temporary name."""
        try:
            with open(self.tmp["summary"], "w", encoding="utf-8") as f:
                json.dump(summary, f, indent=2, allow_nan=False)
                f.write("\n")
        except OSError as exc:
            raise write_failure(self.out_dir, exc, f"{self.final['summary'].name}") from exc

    def commit(self) -> dict[str, Path]:
        """Rename every temporary output to its final name (flushed to disk before, the folders
        after: see :func:`~coalmine.runtime._io.fsync_path`); return the final paths."""
        for k, final in self.final.items():
            fsync_path(self.tmp[k])
            os.replace(self.tmp[k], final)
        for folder in {p.parent for p in self.final.values()}:
            fsync_path(folder)
        self.abort()  # remove the work folder and what is left in it (staging files)
        return dict(self.final)

    def abort(self) -> None:
        """Remove every temporary file, the run's work folder with them (used on failure)."""
        try:
            self.close_stage()
        except Exception:  # noqa: BLE001 - closing a broken dataset must not hide the cause
            pass
        self.work.close()

    def __enter__(self) -> OutputSet:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is not None:
            self.abort()
