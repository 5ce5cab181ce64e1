"""``coal-prepare``: raw Sentinel-2 L2A bands + Sentinel-1 VV -> the 23-band stack GeoTIFF.

One acquisition of each gives the stack of that scene; several (``--s2``/``--s1`` repeated, a
folder of acquisitions or a glob pattern, with ``--start``/``--end``) give the annual composite
(:mod:`coalmine.runtime.preprocess.composite`) on one output grid.
"""

from __future__ import annotations

from pathlib import Path

import click

from .options import (
    CONTEXT_SETTINGS,
    handle_errors,
    input_options,
    preprocessing_options,
    quiet_opt,
    setup_logging,
    verbose_opt,
)


@click.command(context_settings=CONTEXT_SETTINGS)
@click.option("--s2", "s2", required=True, multiple=True, type=str,
              help="Sentinel-2 L2A: multi-band GeoTIFF with band descriptions, folder of "
                   "B02..B12 band files (JP2/GeoTIFF), or SAFE folder (or its zip). Repeat it, or give a "
                   "folder of acquisitions or a quoted glob pattern, for a composite of all of them.")
@click.option("--s1", "s1", required=True, multiple=True, type=str,
              help="Sentinel-1 VV: a GRD product as downloaded (S1?_IW_GRDH_….SAFE folder, its .zip, "
                   "or the COG-SAFE variant), or a calibrated sigma0 raster (linear power or dB; "
                   "geotransform or GCPs). Repeat it, or give a folder or pattern, to average several "
                   "acquisitions.")
@click.option("-o", "--out", "out", required=True, type=click.Path(path_type=Path),
              help="Output stack GeoTIFF (23 float32 bands).")
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
@input_options
@preprocessing_options
@quiet_opt
@verbose_opt
@handle_errors("coal-prepare")
def main(s2: tuple[str, ...], s1: tuple[str, ...], out: Path, block: int | None, start: str | None,
         end: str | None, like: Path | None, grid_from: Path | None, crs: str | None, res: float,
         dilation: int | None, memory: str, cog: bool, timings: Path | None, s2_offset: float | None,
         s1_units: str, scl: str | None, dem: str | None, orbit: str | None, speckle: str | None,
         speckle_window: int | None, glcm_edges: str | None,
         db_range: tuple[float, float] | None, quiet: bool, verbose: int) -> None:
    """Build the 23-band stack (S2 bands, indices, VV dB, 10 GLCM textures) of one scene, or the
    composite of all acquisitions of a period.

    Examples: coal-prepare --s2 S2B_MSIL2A_20210704.SAFE --s1 S1A_IW_GRDH_1SDV_….zip --dem dem.tif -o scene.tif;
    coal-prepare --s2 downloads/s2 --s1 downloads/s1 --start 2023-01-01 --end 2023-12-31 -o tapin_2023.tif
    """
    setup_logging(verbose, quiet)
    from ..errors import UsageError
    from ..options import InputOptions, PreprocessingOptions
    from ..preprocess import prepare_scene

    if timings is not None and timings.is_dir():  # found before the work, not after it
        raise UsageError(f"--timings {timings} is a folder; give the file name, e.g. {timings}/timings.json")

    inputs = InputOptions(s2_offset=s2_offset, s1_units=s1_units, scl=scl, dem=dem, orbit=orbit)
    prep, _ = PreprocessingOptions(speckle=speckle, speckle_window=speckle_window, glcm_edges=glcm_edges,
                                   db_range=db_range).preprocessing(default_edges="equal_width")
    t: dict[str, object] = {}
    composite, one_s2, one_s1 = _composite_options(s2, s1, start, end, like, grid_from, crs, dilation, scl)
    if composite is not None:
        from ..preprocess.prepare_composite import parse_memory, prepare_composite

        path = prepare_composite(list(s2), list(s1), out, prep, s2_offset=inputs.s2_offset,
                                 s1_units=inputs.s1_units, dem=inputs.dem, orbit=inputs.orbit,
                                 memory=parse_memory(memory), block=block,
                                 cog=cog, progress=not quiet, timings=t, **composite,
                                 grid=_output_grid(like, grid_from, crs, res))
    else:
        path = prepare_scene(one_s2, one_s1, out, prep, block=1024 if block is None else block, cog=cog,
                             progress=not quiet, timings=t, **inputs.reader_args())
    if timings is not None:
        from .._io import atomic_write_json

        atomic_write_json(timings, t, "--timings")
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
