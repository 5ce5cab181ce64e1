"""``coal-run``: map open-pit coal mines in one scene and measure them in hectares.

Thin: parse options, call :func:`coalmine.runtime.run.run_scene`, print the summary JSON
on stdout. Progress and the backend choice go to stderr.
"""

from __future__ import annotations

import json

import click

from ..options import BACKENDS, PRECISIONS, InputOptions, RunOptions
from .options import (
    CONTEXT_SETTINGS,
    handle_errors,
    input_options,
    quiet_opt,
    setup_logging,
    verbose_opt,
)

#: The defaults shown by --help are RunOptions' own.
D = RunOptions()


def _batch(value: str) -> int | str:
    """``--batch-size``: a whole number of tiles, else the text (RunOptions refuses all but 'auto')."""
    return int(value) if value.strip().lstrip("+-").isdigit() else value


@click.command(context_settings=CONTEXT_SETTINGS)
@click.argument("scene", type=click.Path(path_type=str))
@click.option("--s1", type=click.Path(path_type=str), default=None,
              help="Sentinel-1 VV sigma0 file (or GRD product), when SCENE is raw Sentinel-2 input (not a "
                   "stack); a folder of them with a folder of acquisitions.")
@click.option("--bundle", "-b", "bundle", type=click.Path(path_type=str), required=True,
              help="Model bundle folder (bundle.json + model.onnx).")
@click.option("--out", "-o", "out", type=click.Path(path_type=str), default=".",
              help="Output folder for *_prob.tif, *_mask.tif, *_mines.geojson, *_summary.json.")
@click.option("--aoi", type=click.Path(path_type=str), default=None,
              help="Areas of interest (GeoJSON, GeoPackage, Shapefile… any CRS): hectares per area.")
@click.option("--aoi-name-field", default=None, help="AOI property with the area's name [default: name].")
@click.option("--backend", type=click.Choice(BACKENDS), default=D.backend,
              help="Inference backend; auto picks the fastest that works and says why.")
@click.option("--precision", type=click.Choice(PRECISIONS), default=D.precision,
              help="ONNX Runtime model: auto takes the bundle's INT8 model on CPU or FP16 model on CUDA "
                   "when coal-export wrote one, else FP32.")
@click.option("--tile", type=int, default=None,
              help="Inference tile in px, a multiple of 32 [default: max(bundle tile, 256)].")
@click.option("--overlap", type=int, default=None, help="Tile overlap in px [default: the bundle's].")
@click.option("--batch-size", "batch_size", default=str(D.batch_size),
              help="Tiles per inference call, or 'auto' (fits the GPU memory budget; 4 on CPU).")
@click.option("--gpu-mem", "gpu_mem", type=float, default=D.gpu_mem_gb, help="GPU memory budget in GiB.")
@click.option("--threshold", type=float, default=None, help="Mine probability threshold [default: the bundle's].")
@click.option("--min-area", "min_area", type=float, default=D.min_area_ha,
              help="Minimum mapping unit for the polygons, in hectares.")
@click.option("--prefix", default=None, help="Output file prefix [default: the scene's file name].")
@click.option("--block", type=int, default=D.block, help="Block size in px (memory is bounded by it).")
@click.option("--threads", type=int, default=None, help="CPU threads for ONNX Runtime [default: all cores].")
@input_options
@verbose_opt
@quiet_opt
@handle_errors("coal-run")
def main(scene: str, s1: str | None, bundle: str, out: str, aoi: str | None, aoi_name_field: str | None,
         backend: str, precision: str, tile: int | None, overlap: int | None, batch_size: str, gpu_mem: float,
         threshold: float | None, min_area: float, prefix: str | None, block: int, threads: int | None,
         s2_offset: float | None, s1_units: str, scl: str | None, dem: str | None, orbit: str | None,
         verbose: int, quiet: bool) -> None:
    """Map open-pit coal mines in SCENE and measure them in hectares.

    SCENE is a 23-band stack written by coal-prepare, or raw Sentinel-2 L2A input (multi-band
    GeoTIFF, folder of band files or SAFE folder) together with --s1, or a folder of a period's
    acquisitions, mapped as their cloud-free composite (see coal-prepare).

    \b
    Example:
      coal-run scene.tif --bundle models/tapin --out maps --aoi districts.gpkg
    """
    setup_logging(verbose, quiet)
    from ..run import run_scene

    options = RunOptions(
        backend=backend, precision=precision, tile=tile, overlap=overlap, batch_size=_batch(batch_size),
        gpu_mem_gb=gpu_mem, threshold=threshold, min_area_ha=min_area, block=block, threads=threads,
        prefix=prefix, aoi_name_field=aoi_name_field, progress=not quiet,
        inputs=InputOptions(s2_offset=s2_offset, s1_units=s1_units, scl=scl, dem=dem, orbit=orbit),
    )
    summary = run_scene(scene, bundle, out, s1=s1, aoi=aoi, options=options)
    click.echo(json.dumps(summary, indent=2))
