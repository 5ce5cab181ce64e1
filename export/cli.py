"""``coal-export BUNDLE``: ONNX fp32 (+ ``--fp16``, ``--int8``) and a TensorRT engine, with parity gates.

Thin: parse options, call :func:`coalmine.export.api.export_bundle`, print the parity table on
stdout. Logs and the "engine skipped because …" notice go to stderr.
"""

from __future__ import annotations

import logging

import click
from coalmine.runtime.backends.tensorrt import DEFAULT_MAX_BATCH
from coalmine.runtime.cli.options import (
    CONTEXT_SETTINGS,
    handle_errors,
    quiet_opt,
    setup_logging,
    verbose_opt,
)

log = logging.getLogger("coalmine.export")


@click.command(context_settings=CONTEXT_SETTINGS)
@click.argument("bundle", type=click.Path(file_okay=False, dir_okay=True, path_type=str))
@click.option("--fp16/--no-fp16", default=False, help="Also write model.fp16.onnx (FP32 inputs/outputs), gated "
              "on ≥ 99.5 % mask agreement and ≤ 1 point mine-IoU drop against ONNX fp32.")
@click.option("--int8/--no-int8", default=False, help="Also write model.int8.onnx (QDQ, for CPU-only "
              "workstations), calibrated on the bundle's validation tiles, gated on ≥ 99 % mask agreement.")
@click.option("--engine/--no-engine", default=None, help="Build a TensorRT engine for this GPU.  "
              "[default: auto = build when the TensorRT builder and a CUDA GPU are present]")
@click.option("--max-batch", type=int, default=DEFAULT_MAX_BATCH, help="Largest batch of the engine's "
              "optimisation profile (recorded in the bundle; coal-run clamps its batch to it).")
@click.option("--tile", type=int, default=None, help="Engine tile size in pixels, a multiple of 32 (recorded in "
              "the bundle as coal-run's default tile).  [default: the recorded one, else max(bundle tile, 256)]")
@click.option("--workspace", default="1GiB", help="TensorRT builder workspace limit (1GiB suits a 6 GB card).")
@click.option("--json", "as_json", is_flag=True, default=False, help="Print the full report as JSON "
              "instead of the table.")
@verbose_opt
@quiet_opt
@handle_errors("coal-export")
def main(bundle: str, fp16: bool, int8: bool, engine: bool | None, max_batch: int, tile: int | None,
         workspace: str, as_json: bool, verbose: int, quiet: bool) -> None:
    """Export the model BUNDLE (folder written by coal-train) to ONNX and TensorRT, in place.

    Each artefact is compared with its reference on the bundle's validation tiles and written
    only if it passes (ONNX fp32 vs PyTorch: |Δlogit| ≤ 1e-3 + 1e-3·|logit| and ≥ 99.9 % mask
    agreement, also at a second input shape). A failed check keeps the previous files and exits 1.

    \b
    Example:
        coal-export models/tapin --fp16 --int8
    """
    setup_logging(verbose, quiet)
    from coalmine.export.api import export_bundle

    result = export_bundle(bundle, fp16=fp16, int8=int8, engine=engine, max_batch=max_batch,
                           tile=tile, workspace=workspace, progress=not quiet)
    if as_json:
        import json

        click.echo(json.dumps({k: v for k, v in result.items() if k != "table"}, indent=2))
    else:
        click.echo(result["table"])
        click.echo(f"report: {result['report_path']}")


if __name__ == "__main__":  # pragma: no cover
    main()
