"""``coal-train``: train a model bundle from scenes and labels; ``coal-train evaluate`` a bundle.

The command is a click group whose default subcommand is ``train``: ``coal-train ARGS`` is
``coal-train train ARGS`` unless the first argument names a subcommand (``train``,
``evaluate``) or asks for help. So the common case stays short::

    coal-train --scene stack_2019.tif --labels mines_2019.gpkg --out models/tapin
    coal-train train.toml --out models/tapin --epochs 100
    coal-train train.toml --out models/tapin --resume
    coal-train evaluate --bundle models/tapin --scene stack_2021.tif --labels mines_2021.gpkg

The bundle path goes to stdout; progress and logs to stderr.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
from coalmine.runtime.cli.options import (
    CONTEXT_SETTINGS,
    handle_errors,
    input_options,
    preprocessing_options,
    quiet_opt,
    setup_logging,
    verbose_opt,
)
from coalmine.runtime.errors import UsageError
from coalmine.runtime.options import INPUT_KEYS, PREPROCESSING_KEYS, InputOptions

PROG = "coal-train"


class _DefaultGroup(click.Group):
    """A group that runs ``train`` when the first argument is not a subcommand or help."""

    default_cmd = "train"

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = [self.default_cmd, *args]
        elif not args:
            args = [self.default_cmd]
        return super().parse_args(ctx, args)


def _scenes(scenes: tuple[str, ...], s1s: tuple[str, ...], labels: tuple[str, ...], split: str,
            opt: str) -> list[Any]:
    from .config import SceneSpec

    if len(labels) != len(scenes):
        raise UsageError(
            f"{len(scenes)} {opt} but {len(labels)} --{'test-' if split == 'test' else ''}labels given; "
            "give one labels file per scene, in the same order"
        )
    if s1s and len(s1s) != len(scenes):
        raise UsageError(
            f"{len(scenes)} {opt} but {len(s1s)} --{'test-' if split == 'test' else ''}s1 given; give one "
            "Sentinel-1 file per raw scene (or none when the scenes are 23-band stacks)"
        )
    return [
        SceneSpec(path=Path(s), labels=Path(lab), s1=Path(s1s[i]) if s1s else None, split=split)
        for i, (s, lab) in enumerate(zip(scenes, labels, strict=True))
    ]


@click.group(cls=_DefaultGroup, context_settings=CONTEXT_SETTINGS)
def main() -> None:
    """Train the U-Net-ResNet34 mine model (default subcommand: train) or evaluate a bundle.

    \b
    coal-train --scene S.tif --labels L.gpkg --out models/x     (same as: coal-train train ...)
    coal-train evaluate --bundle models/x --scene S.tif --labels L.gpkg
    """


@main.command("train", context_settings=CONTEXT_SETTINGS)
@click.argument("config", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--scene", "scenes", multiple=True, metavar="PATH",
              help="23-band stack, or raw Sentinel-2 (with --s1); repeat for more scenes.")
@click.option("--s1", "s1s", multiple=True, metavar="PATH",
              help="Sentinel-1 VV per raw --scene, same order: a GRD product (SAFE folder, zip, "
                   "COG-SAFE) or a sigma0 raster.")
@click.option("--labels", "labels", multiple=True, metavar="PATH",
              help="Labels per --scene: raster (0/1, any grid) or mine polygons (GeoJSON, GeoPackage, Shapefile…).")
@click.option("--test-scene", "test_scenes", multiple=True, metavar="PATH",
              help="A held-out test scene (never trained on); repeatable.")
@click.option("--test-s1", "test_s1s", multiple=True, metavar="PATH", help="Sentinel-1 per raw --test-scene.")
@click.option("--test-labels", "test_labels", multiple=True, metavar="PATH", help="Labels per --test-scene.")
@click.option("-o", "--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Bundle folder to write (work files go to OUT.work beside it).")
@click.option("--epochs", type=int, default=None, help="Most epochs  [config or 200]")
@click.option("--tile", type=int, default=None, help="Patch size in pixels, multiple of 32  [config or 128]")
@click.option("--batch-size", type=int, default=None, help="Patches per step  [config or 8]")
@click.option("--lr", type=float, default=None, help="Peak AdamW learning rate  [config or 0.001]")
@click.option("--seed", type=int, default=None, help="Random seed  [config or 0]")
@click.option("--val-fraction", type=float, default=None, help="Share of blocks for validation  [config or 0.2]")
@click.option("--block-tiles", type=int, default=None, help="Split block edge in tiles  [config or 4]")
@click.option("--buffer", type=int, default=None, help="Gap (px) between validation and training  [config or tile/2]")
@click.option("--max-patches", type=int, default=None, help="Cap on train+validation patches  [config or none]")
@click.option("--patience", type=int, default=None, help="Early-stopping patience in epochs, 0 = off  [config or 30]")
@click.option("--threshold", default=None, help="Decision threshold, or 'tune' on validation  [config or 0.5]")
@click.option("--device", default=None, help="auto, cpu, cuda or cuda:N  [config or auto]")
@click.option("--no-amp", is_flag=True, default=False, help="Disable mixed precision on CUDA.")
@click.option("--encoder-weights", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Local ResNet-34 weights (.pth) to start the encoder from; nothing is downloaded.")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Patch cache folder  [OUT.work/cache]")
@click.option("--resume", is_flag=True, default=False, help="Continue from the last checkpoint in OUT.work.")
@click.option("--overwrite", is_flag=True, default=False, help="Replace an existing OUT.")
@input_options
@preprocessing_options
@verbose_opt
@quiet_opt
@handle_errors(PROG)
def train_cmd(config: Path | None, scenes: tuple[str, ...], s1s: tuple[str, ...], labels: tuple[str, ...],
              test_scenes: tuple[str, ...], test_s1s: tuple[str, ...], test_labels: tuple[str, ...],
              out: Path, no_amp: bool, resume: bool, overwrite: bool, verbose: int, quiet: bool,
              **settings: Any) -> None:
    """Train a bundle from CONFIG (TOML) and/or --scene/--labels pairs."""
    setup_logging(verbose, quiet)
    from .api import train
    from .config import TrainConfig, load_config, with_overrides

    cfg = load_config(config) if config else TrainConfig()
    specs = list(cfg.scenes) + _scenes(scenes, s1s, labels, "train", "--scene")
    specs += _scenes(test_scenes, test_s1s, test_labels, "test", "--test-scene")
    ctx = click.get_current_context()
    for name in (*INPUT_KEYS, *PREPROCESSING_KEYS):  # shared options: only what was given overrides CONFIG
        if ctx.get_parameter_source(name) != click.core.ParameterSource.COMMANDLINE:
            settings[name] = None
    thr = settings.pop("threshold")
    if thr is not None and thr != "tune":
        try:
            thr = float(thr)
        except ValueError as exc:
            raise UsageError(f"--threshold {thr!r} is not a number; give e.g. 0.5 or 'tune'") from exc
    cfg = with_overrides(cfg, scenes=tuple(specs), threshold=thr, amp=False if no_amp else None, **settings)
    if not cfg.scenes:
        raise UsageError("no scene given; pass --scene and --labels, or a CONFIG file with [[scenes]] tables")
    path = train(cfg, out, progress=not quiet, resume=resume, overwrite=overwrite)
    import json as _json

    rep = _json.loads((path / "report.json").read_text(encoding="utf-8"))
    v = rep["validation"]
    click.echo(
        f"{PROG}: validation OA {100 * (v['overall_accuracy'] or 0):.1f} %, kappa "
        f"{(v['kappa'] or 0):.3f}, IoU mine {(v['iou_mine'] or 0):.3f} (threshold {rep['threshold']})",
        err=True,
    )
    click.echo(str(path))


@main.command("evaluate", context_settings=CONTEXT_SETTINGS)
@click.option("--bundle", required=True, type=click.Path(path_type=Path), help="Bundle folder from coal-train.")
@click.option("--scene", "--scenes", "scenes", multiple=True, required=True, metavar="PATH",
              help="Scene to evaluate (stack, or raw Sentinel-2 with --s1); repeatable.")
@click.option("--s1", "s1s", multiple=True, metavar="PATH", help="Sentinel-1 per raw --scene, same order.")
@click.option("--labels", "labels", multiple=True, metavar="PATH", help="Reference labels per --scene.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the report as JSON to this file ('-' = JSON on stdout instead of the table).")
@click.option("--device", default="auto", help="auto, cpu, cuda or cuda:N.")
@input_options
@verbose_opt
@quiet_opt
@handle_errors(PROG)
def evaluate_cmd(bundle: Path, scenes: tuple[str, ...], s1s: tuple[str, ...], labels: tuple[str, ...],
                 json_out: Path | None, device: str, s2_offset: float | None, s1_units: str, scl: str | None,
                 dem: str | None, orbit: str | None, verbose: int, quiet: bool) -> None:
    """Accuracy of a bundle on scenes with reference labels: the study's table plus JSON."""
    setup_logging(verbose, quiet)
    from coalmine.runtime._io import atomic_write_json

    from .api import evaluate
    from .report import format_report

    specs = _scenes(scenes, s1s, labels, "train", "--scene")
    inputs = InputOptions(s2_offset=s2_offset, s1_units=s1_units, scl=scl, dem=dem, orbit=orbit)
    rep = evaluate(bundle, specs, device=device, progress=not quiet, inputs=inputs)
    if json_out is not None and str(json_out) == "-":
        click.echo(json.dumps(rep, indent=2))
        return
    parts = []
    if len(rep["scenes"]) > 1:
        for s in rep["scenes"]:
            parts.append(format_report(s, f"scene {s['scene']}"))
    parts.append(format_report(rep["total"], f"all scenes (bundle {rep['bundle_id']}, threshold {rep['threshold']})"))
    click.echo("\n\n".join(parts))
    if json_out is not None:
        atomic_write_json(json_out, rep)
        click.echo(f"{PROG}: report written to {json_out}", err=True)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
