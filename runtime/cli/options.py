"""Options and error handling shared by every coalmine command.

Commands stay thin: parse, call a library function, report. Data goes to stdout,
logs and progress to stderr. A :class:`~coalmine.runtime.errors.CoalmineError`
becomes one line on stderr and the error's exit code (2 usage, 1 data); ``-v``
adds the traceback.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from ..errors import CoalmineError

F = TypeVar("F", bound=Callable[..., Any])

verbose_opt = click.option(
    "-v", "--verbose", count=True, help="More log output on stderr; -v also shows tracebacks."
)
quiet_opt = click.option(
    "-q", "--quiet", is_flag=True, default=False, help="No progress bar and no info messages."
)

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "show_default": True, "max_content_width": 100}


def _input_option_list() -> list[Callable[[F], F]]:
    from ..options import S1_UNITS, InputOptions

    d = InputOptions()
    return [
        click.option("--s2-offset", type=float, default=d.s2_offset,
                     help="Sentinel-2 DN offset (BOA_ADD_OFFSET, e.g. -1000) of raw input; default: from "
                          "the product metadata, else guessed from the date with a warning."),
        click.option("--s1-units", type=click.Choice(S1_UNITS), default=d.s1_units,
                     help="Units of the Sentinel-1 values of raw input."),
        click.option("--scl", type=str, default=d.scl,
                     help="Sentinel-2 SCL raster masking cloud, shadow, cirrus and no-data pixels of raw "
                          "input ('auto': the SCL file beside the Sentinel-2 bands)."),
        click.option("--dem", type=str, default=d.dem,
                     help="DEM raster (any CRS; heights above EGM2008 or the ellipsoid) for terrain "
                          "correction of a Sentinel-1 GRD product given as --s1; recommended over "
                          "open pits.  [default: the product's geolocation-grid heights]"),
        click.option("--orbit", type=str, default=d.orbit,
                     help="Sentinel-1 precise orbit file (S1?_OPER_AUX_POEORB_*.EOF), or a folder of "
                          "them, for a GRD product.  [default: the product's state vectors]"),
    ]


def _preprocessing_option_list() -> list[Callable[[F], F]]:
    from ..options import EDGE_METHODS, SPECKLE_FILTERS

    return [
        click.option("--speckle", type=click.Choice(SPECKLE_FILTERS), default=None,
                     help="Speckle filter of Sentinel-1 ('none' for input that is already filtered).  "
                          "[default: lee, or the bundle's with --glcm-edges BUNDLE]"),
        click.option("--speckle-window", type=int, default=None,
                     help="Lee filter window in pixels (odd).  [default: 5, or the bundle's]"),
        click.option("--glcm-edges", type=str, default=None, metavar="METHOD|PATH",
                     help=f"GLCM bin edges: {' or '.join(EDGE_METHODS)} (coal-train: quantiles of the training "
                          "VV), or a model bundle (folder or bundle.json; its whole preprocessing, speckle "
                          "settings included unless given here), or a JSON/text list of dB thresholds.  "
                          "[default: coal-prepare equal_width, coal-train equal_frequency]"),
        click.option("--db-range", type=(float, float), default=None, metavar="LOW HIGH",
                     help="dB range of equal-width GLCM edges.  [default: -25 5]"),
    ]


def preprocessing_options(fn: F) -> F:
    """Add the options that choose how a stack is computed (``--speckle``, ``--speckle-window``,
    ``--glcm-edges``, ``--db-range``): one declaration for coal-prepare and coal-train, read into
    :class:`~coalmine.runtime.options.PreprocessingOptions`. coal-run and coal-monitor take the
    bundle's preprocessing instead."""
    for opt in reversed(_preprocessing_option_list()):
        fn = opt(fn)
    return fn


def input_options(fn: F) -> F:
    """Add the options that describe raw inputs (``--s2-offset``, ``--s1-units``, ``--scl``,
    ``--dem``, ``--orbit``): one
    declaration for coal-prepare, coal-run and coal-train, read into
    :class:`~coalmine.runtime.options.InputOptions` (the monitor's ``[run]`` table has the same keys)."""
    for opt in reversed(_input_option_list()):
        fn = opt(fn)
    return fn


def setup_logging(verbose: int = 0, quiet: bool = False) -> None:
    """Log to stderr: WARNING when quiet, INFO by default, DEBUG with -v."""
    level = logging.WARNING if quiet else (logging.DEBUG if verbose else logging.INFO)
    root = logging.getLogger("coalmine")
    root.handlers.clear()
    h = logging.StreamHandler(sys.stderr)
    h.setFormatter(logging.Formatter("%(message)s" if not verbose else "%(levelname)s %(name)s: %(message)s"))
    root.addHandler(h)
    root.setLevel(level)
    root.propagate = False
    # One call configures the whole coalmine logger tree for one command: levels that an
    # earlier command in the same process set on child loggers must not leak into this one.
    for name, lg in logging.Logger.manager.loggerDict.items():
        if name.startswith("coalmine.") and isinstance(lg, logging.Logger):
            lg.setLevel(logging.NOTSET)


def handle_errors(prog: str) -> Callable[[F], F]:
    """Decorate a click command body: CoalmineError -> one stderr line + exit code.

    The wrapped function must accept ``verbose`` (from :data:`verbose_opt`).
    """

    def deco(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except CoalmineError as exc:
                if kwargs.get("verbose"):
                    import traceback

                    traceback.print_exc(file=sys.stderr)
                click.echo(f"{prog}: error: {exc}", err=True)
                sys.exit(exc.exit_code)
            except KeyboardInterrupt:
                click.echo(f"{prog}: interrupted; partial outputs were removed", err=True)
                sys.exit(130)

        return wrapper  # type: ignore[return-value]

    return deco
