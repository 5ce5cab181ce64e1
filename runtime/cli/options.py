"""Options and error handling shared by every coalmine command.

Commands stay thin: parse, call a library function, report. Data goes to stdout,
logs and progress to stderr. A :class:`~coalmine.runtime.errors.CoalmineError`
becomes one line on stderr and the error's exit code (2 usage, 1 data); so does an
operating-system error (a full disk: exit 1) and, as a last resort, any other exception
(exit 1, marked as a bug); ``-v`` adds the traceback. Ctrl-C exits 130 and SIGTERM (a
service manager stopping the command, ``kill``) is handled the same way and exits 143:
both remove what the run had half-written.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import sys
import threading
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


def quiet_libtiff() -> None:
    """Stop libtiff printing bare lines such as ``_tiffWriteProc: No space left on device.`` on stderr.

    GDAL's GeoTIFF driver gives libtiff a per-file error handler, but a failed write or seek is
    reported through libtiff's process-wide handler, whose default prints to stderr; GDAL then
    raises the error itself (a RasterioIOError, which the commands report in one line). The
    process-wide handlers are cleared in the libtiff that rasterio's GDAL uses.
    """
    import ctypes

    import rasterio  # noqa: F401 - maps GDAL and its libtiff into the process

    try:
        with open("/proc/self/maps", encoding="utf-8") as f:
            libs = sorted({ln.split()[-1] for ln in f if "libtiff" in ln and ln.split()[-1].startswith("/")})
    except OSError:
        return
    for lib in libs:
        try:
            tiff = ctypes.CDLL(lib, mode=getattr(os, "RTLD_NOLOAD", 0))
            for fn in (tiff.TIFFSetErrorHandler, tiff.TIFFSetWarningHandler):
                fn.restype, fn.argtypes = ctypes.c_void_p, [ctypes.c_void_p]
                fn(None)
        except (OSError, AttributeError):
            continue


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
    if not verbose:
        quiet_libtiff()
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
            verbose = kwargs.get("verbose")

            def fail(message: str, code: int) -> None:
                if verbose:
                    import traceback

                    traceback.print_exc(file=sys.stderr)
                click.echo(f"{prog}: {message}", err=True)
                sys.exit(code)

            previous = _catch_sigterm()
            try:
                return fn(*args, **kwargs)
            except CoalmineError as exc:
                fail(f"error: {exc}", exc.exit_code)
            except Terminated:
                fail("terminated (SIGTERM); partial outputs were removed", 143)
            except KeyboardInterrupt:
                fail("interrupted; partial outputs were removed", 130)
            except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
                raise
            except OSError as exc:  # the file system said no (a full disk, permissions): not a bug
                fail(f"error: {_os_error(exc)}", 1)
            except Exception as exc:  # noqa: BLE001 - the last resort: one line, the traceback with -v
                first = (str(exc).strip().splitlines() or [""])[0][:300]
                fail(f"error: unexpected {type(exc).__name__}: {first} (a bug: rerun with -v and report "
                     "the traceback)", 1)
            finally:
                _restore_sigterm(previous)

        return wrapper  # type: ignore[return-value]

    return deco


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like Ctrl-C so the same cleanup runs."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Terminated()


def _catch_sigterm() -> Any:
    """Handle SIGTERM like Ctrl-C while a command runs (main thread only); returns the previous handler."""
    if threading.current_thread() is not threading.main_thread():
        return None
    try:
        return signal.signal(signal.SIGTERM, _on_sigterm)
    except (ValueError, OSError):
        return None


def _restore_sigterm(previous: Any) -> None:
    if previous is not None:
        signal.signal(signal.SIGTERM, previous)


def _os_error(exc: OSError) -> str:
    """One line for an operating-system error, with the file and the way out."""
    from .._io import DISK_FULL, disk_hint

    where = exc.filename or ""
    text = exc.strerror or (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    if exc.errno in DISK_FULL:
        if not where:  # the free space of an unknown folder would mislead
            return f"cannot write an output ({text}); free space on the output folder's disk and run again"
        folder = os.path.dirname(os.fspath(where)) or "."
        return f"cannot write {where} ({text}); {disk_hint(folder, 'output folder')}"
    return f"{text}: {where}" if where else text
