"""``coal-prepare``: raw Sentinel-2 L2A bands + Sentinel-1 VV -> the 23-band stack GeoTIFF."""

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
@click.option("--s2", "s2", required=True, type=click.Path(path_type=Path),
              help="Sentinel-2 L2A: multi-band GeoTIFF with band descriptions, folder of "
                   "B02..B12 band files (JP2/GeoTIFF), or SAFE folder.")
@click.option("--s1", "s1", required=True, type=click.Path(path_type=Path),
              help="Sentinel-1 VV: a GRD product as downloaded (S1?_IW_GRDH_….SAFE folder, its .zip, "
                   "or the COG-SAFE variant), or a calibrated sigma0 raster (linear power or dB; "
                   "geotransform or GCPs).")
@click.option("-o", "--out", "out", required=True, type=click.Path(path_type=Path),
              help="Output stack GeoTIFF (23 float32 bands).")
@click.option("--block", type=int, default=1024,
              help="Block size in pixels; memory grows with its square, not with the scene.")
@click.option("--cog", is_flag=True, default=False, help="Write a Cloud-Optimised GeoTIFF.")
@click.option("--timings", type=click.Path(path_type=Path), default=None,
              help="Write seconds per stage (read, warp, speckle, GLCM, write) to this JSON file.")
@input_options
@preprocessing_options
@quiet_opt
@verbose_opt
@handle_errors("coal-prepare")
def main(s2: Path, s1: Path, out: Path, block: int, cog: bool, timings: Path | None, s2_offset: float | None,
         s1_units: str, scl: str | None, dem: str | None, orbit: str | None, speckle: str | None, speckle_window: int | None, glcm_edges: str | None,
         db_range: tuple[float, float] | None, quiet: bool, verbose: int) -> None:
    """Build the 23-band stack (S2 bands, indices, VV dB, 10 GLCM textures) of one scene.

    Example: coal-prepare --s2 S2B_MSIL2A_20210704.SAFE --s1 S1A_IW_GRDH_1SDV_….zip --dem dem.tif -o scene.tif
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
    path = prepare_scene(s2, s1, out, prep, block=block, cog=cog, progress=not quiet, timings=t,
                         **inputs.reader_args())
    if timings is not None:
        from .._io import atomic_write_json

        atomic_write_json(timings, t, "--timings")
    click.echo(str(path))
