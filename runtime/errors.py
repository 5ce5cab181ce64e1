"""One error hierarchy for coalmine.

Every error subclasses :class:`CoalmineError` and the builtin that matches its
meaning, so callers can catch either. A message says what was given, what was
expected and how to fix it, and names the file, band or option concerned.

CLIs print ``str(error)`` as one line on stderr and exit with ``error.exit_code``:
2 for usage errors (bad options, bad configuration), 1 for data errors, 69 for a remote
service (STAC catalogue, file server) that cannot be reached.
"""

from __future__ import annotations


class CoalmineError(Exception):
    """Base of every error coalmine raises on purpose."""

    exit_code = 1


class UsageError(CoalmineError, ValueError):
    """An option, argument or configuration value is wrong (exit code 2)."""

    exit_code = 2


class ConfigError(UsageError):
    """A configuration file (TOML) is malformed or names unknown keys."""


class InputError(CoalmineError, ValueError):
    """An input file exists but its content cannot be used (exit code 1)."""


class InputNotFoundError(InputError, FileNotFoundError):
    """An input path does not exist."""


class ConfigPathError(ConfigError, InputNotFoundError):
    """A file or folder that a configuration file names does not exist (exit code 2, like every
    error whose fix is in the configuration; a missing input given on the command line is an
    :class:`InputNotFoundError`, exit code 1)."""


class RasterError(InputError):
    """A raster cannot be read, is truncated, or lacks something required."""


class CRSError(RasterError):
    """A raster has no CRS, or two inputs cannot be put on one grid."""


class BandError(RasterError):
    """A required band is missing, duplicated or in the wrong order."""


class NoValidDataError(InputError):
    """An input has no valid pixel at all (all NaN, all nodata DN, all masked): nothing can be
    measured, so there is no figure — never 0 ha."""


class UnitsError(InputError):
    """Pixel values are not in the expected physical units (e.g. raw GRD DN given as sigma0)."""


class BundleError(InputError):
    """A model bundle is missing, incomplete or inconsistent."""


class OutputError(CoalmineError, OSError):
    """An output cannot be written (unwritable folder, full disk).

    ``disk_full`` is True when the disk (or quota) ran out: no input is at fault, so a monitor
    run stops rather than count the scene as failed.
    """

    disk_full = False


class BackendError(CoalmineError, RuntimeError):
    """An inference backend cannot be used on this machine."""


class ServiceUnavailableError(CoalmineError, ConnectionError):
    """A catalogue or file server cannot be reached, or keeps failing, after retries (exit code 69,
    EX_UNAVAILABLE: nothing is wrong with the input; a later run resumes)."""

    exit_code = 69


class MissingDependencyError(CoalmineError, ImportError):
    """An optional package is needed; the message gives the pip command (see ``_optional``)."""

