"""``coal-prepare``: raw Sentinel-2 L2A bands + Sentinel-1 VV -> the 23-band stack GeoTIFF.

One acquisition of each gives the stack of that scene; several (``--s2``/``--s1`` repeated, a
folder of acquisitions or a glob pattern, with ``--start``/``--end``) give the annual composite
(:mod:`coalmine.runtime.preprocess.composite`) on one output grid.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import click

from .options import CONTEXT_SETTINGS, handle_errors, quiet_opt, setup_logging, verbose_opt


def _prep_from_file(path: Path):  # noqa: ANN202 - returns (GlcmParams, Preprocessing | None)
    """GLCM parameters from a bundle (folder or bundle.json), a JSON list/dict, or a text list.

    For a bundle, its whole Preprocessing is returned too, so the stack is made exactly as the
    training data was (speckle filter included).
    """
    from ..bundle import BUNDLE_JSON, GlcmParams, load_bundle
    from ..errors import InputNotFoundError, UsageError

    if not path.exists():
        raise InputNotFoundError(f"--glcm-edges {path} does not exist; give a bundle folder, "
                                 "its bundle.json, or a JSON/text file of bin edges")
    if path.is_dir() or path.name == BUNDLE_JSON:
        prep = load_bundle(path).preprocessing
        return prep.glcm, prep
    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        data = text.replace(",", " ").split()
    if isinstance(data, dict):
        data = data.get("edges", data.get("preprocessing", {}).get("glcm", {}).get("edges"))
    try:
        edges = tuple(float(x) for x in data)  # type: ignore[union-attr]
    except (TypeError, ValueError) as exc:
        raise UsageError(f"--glcm-edges {path} does not hold a list of numbers (bin edges in dB); "
                         "write them as a JSON list or one per line") from exc
    if len(edges) < 1 or any(a >= b for a, b in zip(edges, edges[1:], strict=False)):
        raise UsageError(f"--glcm-edges {path}: the {len(edges)} edges must be strictly increasing")
    return GlcmParams(levels=len(edges) + 1, edges=edges, edges_method="given",
                      db_range=(edges[0], edges[-1])), None


@click.command(context_settings=CONTEXT_SETTINGS)
@click.option("--s2", "s2", required=True, multiple=True, type=str,
              help="Sentinel-2 L2A: multi-band GeoTIFF with band descriptions, folder of "
                   "B02..B12 band files (JP2/GeoTIFF), or SAFE folder. Repeat it, or give a folder "
                   "of acquisitions or a quoted glob pattern, for a composite of all of them.")
@click.option("--s1", "s1", required=True, multiple=True, type=str,
              help="Sentinel-1 VV sigma0 raster (linear power or dB; geotransform or GCPs). Repeat "
                   "it, or give a folder or pattern, to average several acquisitions.")
@click.option("-o", "--out", "out", required=True, type=click.Path(path_type=Path),
              help="Output stack GeoTIFF (23 float32 bands).")
@click.option("--s2-offset", type=float, default=None,
              help="Sentinel-2 DN offset (BOA_ADD_OFFSET, e.g. -1000); default: from the "
                   "product metadata, else guessed from the date with a warning.")
@click.option("--s1-units", type=click.Choice(["auto", "linear", "db"]), default="auto",
              help="Units of the Sentinel-1 values.")
@click.option("--speckle", type=click.Choice(["lee", "none"]), default="lee",
              help="Speckle filter ('none' for input that is already filtered).")
@click.option("--speckle-window", type=int, default=5, help="Lee filter window (odd).")
@click.option("--glcm-edges", type=click.Path(path_type=Path), default=None,
              help="GLCM bin edges: a model bundle (folder or bundle.json; its whole preprocessing "
                   "is used, speckle settings included, unless given here) or a JSON/text list "
                   "of dB thresholds.  [default: equal width over --db-range]")
@click.option("--db-range", type=(float, float), default=None,
              help="dB range for equal-width GLCM edges.  [default: -25 5]")
@click.option("--scl", type=str, default=None,
              help="Sentinel-2 SCL raster to mask cloud, shadow, cirrus and no-data pixels "
                   "('auto': the SCL file in the --s2 folder).")
@click.option("--block", type=int, default=None,
              help="Block size in pixels; memory grows with its square, not with the scene.  "
                   "[default: 1024 for one scene; from --memory for a composite]")
@click.option("--start", type=str, default=None,
              help="Composite: first day of the period (YYYY-MM-DD); acquisitions found in a "
                   "folder or by a pattern outside the period are left out, named ones refused.")
@click.option("--end", type=str, default=None, help="Composite: last day of the period (YYYY-MM-DD).")
@click.option("--like", type=click.Path(path_type=Path), default=None,
              help="Composite: the output grid of this raster (CRS, transform, size).  "
                   "[default: the earliest Sentinel-2 acquisition's B02 grid]")
@click.option("--grid-from", "grid_from", type=click.Path(path_type=Path), default=None,
              help="Composite: the output grid over the extent of these AOIs (vector file); every "
                   "acquisition that intersects it contributes, across tiles, UTM zones and frames.")
@click.option("--crs", type=str, default=None,
              help="CRS of the --grid-from grid (e.g. EPSG:32750).  [default: UTM zone of the AOIs]")
@click.option("--res", type=float, default=10.0, help="Pixel size of the --grid-from grid (CRS units).")
@click.option("--dilation", type=int, default=None,
              help="Composite: grow each acquisition's SCL clouds and shadows by this many pixels.  "
                   "[default: 5 (50 m)]")
@click.option("--memory", type=str, default="4G",
              help="Composite: memory budget; sets the block size (peak RSS stays near it).")
@click.option("--cog", is_flag=True, default=False, help="Write a Cloud-Optimised GeoTIFF.")
@click.option("--timings", type=click.Path(path_type=Path), default=None,
              help="Write seconds per stage (read, warp, speckle, GLCM, write) to this JSON file.")
@quiet_opt
@verbose_opt
@handle_errors("coal-prepare")
def main(s2: tuple[str, ...], s1: tuple[str, ...], out: Path, s2_offset: float | None, s1_units: str,
         speckle: str, speckle_window: int, glcm_edges: Path | None,
         db_range: tuple[float, float] | None, scl: str | None, block: int | None, start: str | None,
         end: str | None, like: Path | None, grid_from: Path | None, crs: str | None, res: float,
         dilation: int | None, memory: str, cog: bool, timings: Path | None, quiet: bool,
         verbose: int) -> None:
    """Build the 23-band stack (S2 bands, indices, VV dB, 10 GLCM textures) of one scene, or the
    composite of all acquisitions of a period.

    Examples: coal-prepare --s2 S2B_MSIL2A_20210704.SAFE --s1 vv_db.tif -o scene.tif;
    coal-prepare --s2 downloads/s2 --s1 downloads/s1 --start 2023-01-01 --end 2023-12-31 -o tapin_2023.tif
    """
    setup_logging(verbose, quiet)
    from ..bundle import GlcmParams, Preprocessing, S1Params
    from ..errors import UsageError
    from ..preprocess import prepare_scene

    if glcm_edges is not None and db_range is not None:
        raise UsageError("give either --glcm-edges or --db-range, not both")
    bundle_prep = None
    if glcm_edges is not None:
        glcm, bundle_prep = _prep_from_file(glcm_edges)
    elif db_range is not None:
        lo, hi = db_range
        if not lo < hi:
            raise UsageError(f"--db-range {lo:g} {hi:g}: the low end must be below the high end")
        glcm = GlcmParams(db_range=(lo, hi)).with_default_edges()
    else:
        glcm = GlcmParams().with_default_edges()
    if bundle_prep is not None:
        # A bundle's preprocessing is used whole; options given on the command line still win.
        ctx = click.get_current_context()
        given = {n for n in ("speckle", "speckle_window")
                 if ctx.get_parameter_source(n) == click.core.ParameterSource.COMMANDLINE}
        s1p = bundle_prep.s1
        s1p = replace(s1p, units=s1_units,
                      speckle_filter=speckle if "speckle" in given else s1p.speckle_filter,
                      speckle_window=(speckle_window if "speckle_window" in given
                                      else s1p.speckle_window))
        prep = replace(bundle_prep, s1=s1p)
    else:
        prep = Preprocessing(
            s1=S1Params(units=s1_units, speckle_filter=speckle, speckle_window=speckle_window),
            glcm=glcm,
        )
    t: dict[str, object] = {}
    composite, one_s2, one_s1 = _composite_options(s2, s1, start, end, like, grid_from, crs, dilation, scl)
    if composite is not None:
        from ..preprocess.prepare_composite import parse_memory, prepare_composite

        path = prepare_composite(list(s2), list(s1), out, prep, s2_offset=s2_offset, s1_units=s1_units,
                                 memory=parse_memory(memory), block=block, cog=cog,
                                 progress=not quiet, timings=t, **composite,
                                 grid=_output_grid(like, grid_from, crs, res))
    else:
        path = prepare_scene(one_s2, one_s1, out, prep, s2_offset=s2_offset, s1_units=s1_units, scl=scl,
                             block=1024 if block is None else block, cog=cog, progress=not quiet,
                             timings=t)
    if timings is not None:
        timings.write_text(json.dumps(t, indent=2) + "\n", encoding="utf-8")
    click.echo(str(path))


def _composite_options(s2: tuple[str, ...], s1: tuple[str, ...], start: str | None, end: str | None,
                       like: Path | None, grid_from: Path | None, crs: str | None, dilation: int | None,
                       scl: str | None) -> tuple[dict[str, object] | None, Path, Path]:
    """The composite's settings (None when the arguments name one scene: one acquisition of
    each input), and the single scene's Sentinel-2 and Sentinel-1 paths."""
    from ..errors import UsageError
    from ..preprocess.acquisitions import Period, expand
    from ..preprocess.composite import DEFAULT_DILATION

    if like is not None and grid_from is not None:
        raise UsageError("give either --like or --grid-from, not both")
    if crs is not None and grid_from is None:
        raise UsageError("--crs sets the CRS of the --grid-from grid; add --grid-from AOI or drop --crs")
    items2, items1 = expand(s2, "s2"), expand(s1, "s1")
    asked = [o for o, v in (("--start", start), ("--end", end), ("--like", like), ("--grid-from", grid_from),
                            ("--dilation", dilation)) if v is not None]
    if len(items2) == 1 and len(items1) == 1 and not asked:
        return None, items2[0].path, items1[0].path
    if scl is not None:
        raise UsageError(f"--scl {scl}: a composite masks every acquisition with its own SCL; drop --scl")
    settings = {"period": Period.of(start, end), "dilation": DEFAULT_DILATION if dilation is None else dilation}
    return settings, items2[0].path, items1[0].path


def _output_grid(like: Path | None, grid_from: Path | None, crs: str | None, res: float):  # noqa: ANN202
    """The composite's output grid from --like or --grid-from (None: the first acquisition's)."""
    from ..errors import CRSError
    from ..preprocess.prepare_composite import aoi_grid
    from ..raster import Grid, check_crs, open_raster

    if like is not None:
        with open_raster(like, "--like") as ds:
            check_crs(ds, "--like")
            if ds.crs is None:
                raise CRSError(f"--like {like} is geocoded by ground control points only; give a raster "
                               "on a map grid (CRS + geotransform), e.g. a stack from coal-prepare")
            return Grid(ds.crs, ds.transform, ds.width, ds.height)
    if grid_from is not None:
        return aoi_grid(grid_from, crs, res)
    return None


if __name__ == "__main__":
    main()
