"""``coal-prepare``: raw Sentinel-2 L2A bands + Sentinel-1 VV -> the 23-band stack GeoTIFF."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import click

from .options import (
    CONTEXT_SETTINGS,
    handle_errors,
    input_options,
    quiet_opt,
    setup_logging,
    verbose_opt,
)


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
@click.option("--s2", "s2", required=True, type=click.Path(path_type=Path),
              help="Sentinel-2 L2A: multi-band GeoTIFF with band descriptions, folder of "
                   "B02..B12 band files (JP2/GeoTIFF), or SAFE folder.")
@click.option("--s1", "s1", required=True, type=click.Path(path_type=Path),
              help="Sentinel-1 VV: a GRD product as downloaded (S1?_IW_GRDH_….SAFE folder, its .zip, "
                   "or the COG-SAFE variant), or a calibrated sigma0 raster (linear power or dB; "
                   "geotransform or GCPs).")
@click.option("-o", "--out", "out", required=True, type=click.Path(path_type=Path),
              help="Output stack GeoTIFF (23 float32 bands).")
@input_options
@click.option("--speckle", type=click.Choice(["lee", "none"]), default="lee",
              help="Speckle filter ('none' for input that is already filtered).")
@click.option("--speckle-window", type=int, default=5, help="Lee filter window (odd).")
@click.option("--glcm-edges", type=click.Path(path_type=Path), default=None,
              help="GLCM bin edges: a model bundle (folder or bundle.json; its whole preprocessing "
                   "is used, speckle settings included, unless given here) or a JSON/text list "
                   "of dB thresholds.  [default: equal width over --db-range]")
@click.option("--db-range", type=(float, float), default=None,
              help="dB range for equal-width GLCM edges.  [default: -25 5]")
@click.option("--block", type=int, default=1024,
              help="Block size in pixels; memory grows with its square, not with the scene.")
@click.option("--cog", is_flag=True, default=False, help="Write a Cloud-Optimised GeoTIFF.")
@click.option("--timings", type=click.Path(path_type=Path), default=None,
              help="Write seconds per stage (read, warp, speckle, GLCM, write) to this JSON file.")
@quiet_opt
@verbose_opt
@handle_errors("coal-prepare")
def main(s2: Path, s1: Path, out: Path, s2_offset: float | None, s1_units: str, speckle: str,
         speckle_window: int, glcm_edges: Path | None, db_range: tuple[float, float] | None,
         scl: str | None, dem: str | None, orbit: str | None, block: int, cog: bool,
         timings: Path | None, quiet: bool, verbose: int) -> None:
    """Build the 23-band stack (S2 bands, indices, VV dB, 10 GLCM textures) of one scene.

    Example: coal-prepare --s2 S2B_MSIL2A_20210704.SAFE --s1 S1A_IW_GRDH_1SDV_….zip --dem dem.tif -o scene.tif
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
    path = prepare_scene(s2, s1, out, prep, s2_offset=s2_offset, s1_units=s1_units, scl=scl,
                         dem=dem, orbit=orbit, block=block, cog=cog, progress=not quiet, timings=t)
    if timings is not None:
        timings.write_text(json.dumps(t, indent=2) + "\n", encoding="utf-8")
    click.echo(str(path))
