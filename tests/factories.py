"""Small seeded test inputs shared by the test suites.

- :func:`make_tiny_bundle`: a complete bundle whose ``model.onnx`` is a tiny graph built with
  ``onnx.helper`` (runs in milliseconds on the CPU), with a real normalisation and the
  default preprocessing, so ``coal-run`` and friends can be tested end to end without torch.
- :func:`make_stack` / :func:`write_stack`: a 23-band float32 stack GeoTIFF with the band
  descriptions and the ``COALMINE_PREPROCESSING`` tag, as coal-prepare writes it.
- :func:`write_vector` / :func:`write_gpkg`: polygon layers written by GDAL (pyogrio);
  :func:`write_gpkg_blobs`: a GeoPackage of hand-made geometry blobs (curves).
- :class:`StackSource`: a minimal reader with the ``SceneSource`` interface for stacks.

Example:
    >>> b = make_tiny_bundle(tmp_path / "bundle")             # doctest: +SKIP
    >>> p = write_stack(tmp_path / "scene.tif", make_stack(96, 128, seed=1))  # doctest: +SKIP
"""

from __future__ import annotations

import json
import sqlite3
import struct
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from coalmine.runtime.bands import BAND_NAMES, N_BANDS
from coalmine.runtime.bundle import Bundle, ModelSpec, Normalization, Preprocessing
from rasterio.crs import CRS
from rasterio.windows import Window

#: Tag in which coal-prepare records the preprocessing parameters of a stack.
PREP_TAG = "COALMINE_PREPROCESSING"
UTM50S = CRS.from_epsg(32750)
#: A 10 m UTM 50S grid near Tapin (South Kalimantan).
DEFAULT_TRANSFORM = Affine(10.0, 0.0, 300000.0, 0.0, -10.0, 9700000.0)


# -- ONNX models -----------------------------------------------------------------------------
def tiny_onnx(path: Path, *, kind: str = "conv", seed: int = 0, n_bands: int = N_BANDS,
              input_name: str = "input", output_name: str = "logits", bias: float = 0.0) -> Path:
    """Write a tiny fully convolutional ONNX model (dynamic batch and spatial axes).

    kinds:
        ``"linear"``: logits = sum of the normalised bands / sqrt(n) + bias (a 1x1 conv;
            every pixel depends on itself only, so tiling cannot change the result).
        ``"conv"``: 3x3 conv (23 -> 4) + ReLU + 5x5 dilated conv (dilation 2, 4 -> 1): an
            11 px receptive field with zero padding at tile borders, so tiling *could*
            leave seams unless tiles overlap and blend.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    x = helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["N", n_bands, "H", "W"])
    y = helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["N", 1, "H", "W"])
    if kind == "linear":
        w = np.full((1, n_bands, 1, 1), 1.0 / np.sqrt(n_bands), dtype=np.float32)
        inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.array([bias], np.float32), "b")]
        nodes = [helper.make_node("Conv", [input_name, "w", "b"], [output_name], pads=[0, 0, 0, 0])]
    elif kind == "conv":
        w1 = (rng.standard_normal((4, n_bands, 3, 3)) / np.sqrt(9 * n_bands)).astype(np.float32)
        b1 = (rng.standard_normal(4) * 0.1).astype(np.float32)
        w2 = (rng.standard_normal((1, 4, 5, 5)) / np.sqrt(25 * 4) * 3).astype(np.float32)
        b2 = np.array([bias], np.float32)
        inits = [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2"))]
        nodes = [
            helper.make_node("Conv", [input_name, "w1", "b1"], ["h1"], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["h1"], ["h2"]),
            helper.make_node("Conv", ["h2", "w2", "b2"], [output_name], pads=[4, 4, 4, 4], dilations=[2, 2]),
        ]
    else:
        raise ValueError(f"unknown tiny model kind {kind!r}")
    graph = helper.make_graph(nodes, f"tiny_{kind}", [x], [y], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="coalmine-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def unet_onnx(path: Path, *, tile: int = 64, seed: int = 0) -> Path:
    """Export a randomly initialised smp U-Net-ResNet34 (23 bands -> 1 logit) to ONNX.

    Uses torch (tests and benchmarks only; the runtime never imports it).
    """
    import torch
    from coalmine.train.model import build_model

    torch.manual_seed(seed)
    model = build_model(ModelSpec()).eval()
    x = torch.zeros(1, N_BANDS, tile, tile)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        torch.onnx.export(
            model, (x,), str(path), input_names=["input"], output_names=["logits"], opset_version=17,
            dynamic_axes={"input": {0: "N", 2: "H", 3: "W"}, "logits": {0: "N", 2: "H", 3: "W"}},
            dynamo=False,
        )
    return path


def make_tiny_bundle(
    path: Path,
    *,
    kind: str = "conv",
    seed: int = 0,
    tile: int = 64,
    overlap: int = 16,
    threshold: float = 0.5,
    preprocessing: Preprocessing | None = None,
    normalization: Normalization | None = None,
    bias: float = 0.0,
    onnx_file: Path | None = None,
    bundle_id: str = "tiny-test",
) -> Bundle:
    """A complete bundle in ``path`` with a tiny ONNX model (see :func:`tiny_onnx`).

    The normalisation matches :func:`make_stack`'s value ranges (mean 0.5, std 0.25 for
    every band), so normalised inputs are roughly standard normal.

    Args:
        onnx_file: use this ONNX file instead (e.g. from :func:`unet_onnx`); copied in.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    if onnx_file is not None:
        (path / "model.onnx").write_bytes(Path(onnx_file).read_bytes())
    else:
        tiny_onnx(path / "model.onnx", kind=kind, seed=seed, bias=bias)
    b = Bundle(
        path=path,
        bundle_id=bundle_id,
        bands=BAND_NAMES,
        preprocessing=preprocessing or Preprocessing(),
        normalization=normalization or Normalization(mean=(0.5,) * N_BANDS, std=(0.25,) * N_BANDS),
        tile_size=tile,
        overlap=overlap,
        threshold=threshold,
        created="2026-01-01T00:00:00+00:00",
        training={"note": "made by tests/factories.py", "code_version": "test"},
    )
    b.save()
    return b


# -- stacks ----------------------------------------------------------------------------------
def _smooth(rng: np.random.Generator, h: int, w: int, scale: float) -> np.ndarray:
    """A smooth random field in [0, 1] (low-pass filtered noise, by FFT)."""
    noise = rng.standard_normal((h, w))
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    filt = np.exp(-((fy**2 + fx**2) * (scale**2) * 2 * np.pi**2))
    f = np.fft.irfft2(np.fft.rfft2(noise) * filt, s=(h, w))
    f -= f.min()
    return f / max(float(f.max()), 1e-12)


def make_stack(h: int, w: int, *, seed: int = 0, scale: float = 8.0, nodata: tuple[int, int, int, int] | None = None,
               nan_band: int = 12) -> np.ndarray:
    """A smooth seeded float32 (23, h, w) stack in [0, 1] with blob-like structures.

    Args:
        scale: feature size in pixels (larger: bigger blobs).
        nodata: optional (row0, row1, col0, col1) rectangle set to NaN in band ``nan_band``
            only (one NaN band is enough to make a pixel nodata).
    """
    rng = np.random.default_rng(seed)
    base = _smooth(rng, h, w, scale)
    x = np.empty((N_BANDS, h, w), dtype=np.float32)
    for b in range(N_BANDS):
        x[b] = 0.7 * base + 0.3 * _smooth(rng, h, w, scale / 2)
    if nodata is not None:
        r0, r1, c0, c1 = nodata
        x[nan_band, r0:r1, c0:c1] = np.nan
    return x


def write_stack(path: Path, data: np.ndarray, *, crs: Any = UTM50S, transform: Affine = DEFAULT_TRANSFORM,
                preprocessing: Preprocessing | None = None, band_names: tuple[str, ...] = BAND_NAMES,
                tag: bool = True, block: int = 64) -> Path:
    """Write a float32 stack GeoTIFF as coal-prepare does (descriptions, NaN nodata, prep tag)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n, h, w = data.shape
    tiled = h >= block and w >= block
    profile = {"driver": "GTiff", "dtype": "float32", "count": n, "height": h, "width": w, "crs": crs,
               "transform": transform, "nodata": float("nan"), "compress": "deflate"}
    if tiled:
        profile.update(tiled=True, blockxsize=block, blockysize=block)
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(data.astype(np.float32))
        for i, name in enumerate(band_names[:n], start=1):
            ds.set_band_description(i, name)
        if tag:
            ds.update_tags(**{PREP_TAG: json.dumps((preprocessing or Preprocessing()).to_dict())})
    return path


class StackSource:
    """Minimal ``SceneSource`` over a stack GeoTIFF (for tests that bypass ``open_scene``)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._ds = rasterio.open(self.path)
        self.crs, self.transform = self._ds.crs, self._ds.transform
        self.width, self.height = self._ds.width, self._ds.height
        self.bands = tuple(self._ds.descriptions)
        self.res, self.bounds = self._ds.res, self._ds.bounds
        tag = self._ds.tags().get(PREP_TAG)
        self.preprocessing = Preprocessing.from_dict(json.loads(tag)) if tag else None
        self.reads: list[Window] = []

    def read(self, window: Window) -> np.ndarray:
        self.reads.append(window)
        return self._ds.read(window=window).astype(np.float32, copy=False)

    def close(self) -> None:
        self._ds.close()

    def __enter__(self) -> StackSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- vector files ------------------------------------------------------------------------------
def write_vector(path: Path, features: list[tuple[dict[str, Any], dict[str, Any]]], *, crs: str = "EPSG:4326",
                 driver: str | None = None, layer: str | None = None) -> Path:
    """Write ``[(properties, GeoJSON geometry), ...]`` with GDAL (pyogrio), in the format the
    suffix names (or ``driver``); every property becomes a text field."""
    import shapely
    from pyogrio.raw import write

    path = Path(path)
    keys = sorted({k for props, _ in features for k in props})
    geoms = np.array([shapely.to_wkb(shapely.geometry.shape(g)) for _, g in features], dtype=object)
    values = [np.array([None if props.get(k) is None else str(props[k]) for props, _ in features], dtype=object)
              for k in keys]
    kinds = {g["type"] for _, g in features}
    write(path, geoms, values, keys, layer=layer, driver=driver, crs=crs,
          geometry_type=kinds.pop() if len(kinds) == 1 else "Unknown")
    return path


def write_gpkg(path: Path, features: list[tuple[dict[str, Any], dict[str, Any]]], *, epsg: int = 4326,
               table: str = "aois") -> Path:
    """A GeoPackage of polygons written by GDAL (see :func:`write_vector`)."""
    Path(path).unlink(missing_ok=True)
    return write_vector(path, features, crs=f"EPSG:{epsg}", driver="GPKG", layer=table)


def write_gpkg_blobs(path: Path, blobs: list[bytes], *, epsg: int, geometry_type: str, flags: int = 0b1) -> Path:
    """A GeoPackage whose geometry blobs are given as raw WKB, for geometry types GDAL's
    writers do not produce from WKB (curves): standard header ('GP', version 0, ``flags``,
    no envelope) + the WKB, in a table "aois" with a name column "aoi_<n>"."""
    path = Path(path)
    path.unlink(missing_ok=True)
    con = sqlite3.connect(path)
    con.executescript(
        """
        PRAGMA application_id = 1196444487;
        PRAGMA user_version = 10300;
        CREATE TABLE gpkg_spatial_ref_sys (srs_name TEXT NOT NULL, srs_id INTEGER PRIMARY KEY,
            organization TEXT NOT NULL, organization_coordsys_id INTEGER NOT NULL,
            definition TEXT NOT NULL, description TEXT);
        CREATE TABLE gpkg_contents (table_name TEXT PRIMARY KEY, data_type TEXT NOT NULL,
            identifier TEXT, description TEXT DEFAULT '', last_change DATETIME, min_x DOUBLE,
            min_y DOUBLE, max_x DOUBLE, max_y DOUBLE, srs_id INTEGER);
        CREATE TABLE gpkg_geometry_columns (table_name TEXT NOT NULL, column_name TEXT NOT NULL,
            geometry_type_name TEXT NOT NULL, srs_id INTEGER NOT NULL, z TINYINT NOT NULL,
            m TINYINT NOT NULL);
        CREATE TABLE aois (fid INTEGER PRIMARY KEY AUTOINCREMENT, geom BLOB, name TEXT);
        """
    )
    con.execute("INSERT INTO gpkg_spatial_ref_sys VALUES (?, ?, 'EPSG', ?, ?, '')",
                (f"EPSG:{epsg}", epsg, epsg, CRS.from_epsg(epsg).to_wkt()))
    con.execute("INSERT INTO gpkg_contents (table_name, data_type, identifier, srs_id) VALUES ('aois', 'features', 'aois', ?)",
                (epsg,))
    con.execute("INSERT INTO gpkg_geometry_columns VALUES ('aois', 'geom', ?, ?, 0, 0)", (geometry_type, epsg))
    for n, wkb in enumerate(blobs, start=1):
        header = b"GP" + bytes([0, flags]) + struct.pack("<i", epsg)
        con.execute("INSERT INTO aois (geom, name) VALUES (?, ?)", (header + wkb, f"aoi_{n}"))
    con.commit()
    con.close()
    return path


def box(x0: float, y0: float, x1: float, y1: float, n: int = 1) -> dict[str, Any]:
    """A GeoJSON Polygon rectangle with ``n`` vertices per edge (densified for reprojection)."""
    t = np.linspace(0.0, 1.0, n + 1)[:-1]
    ring = ([[x0 + (x1 - x0) * s, y0] for s in t] + [[x1, y0 + (y1 - y0) * s] for s in t]
            + [[x1 - (x1 - x0) * s, y1] for s in t] + [[x0, y1 - (y1 - y0) * s] for s in t])
    ring.append(ring[0])
    return {"type": "Polygon", "coordinates": [ring]}
