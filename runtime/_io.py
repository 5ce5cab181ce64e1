"""Small helpers for writing outputs safely: temp names, rename when complete."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import OutputError


def ensure_output_dir(path: str | os.PathLike[str], option: str = "--out") -> Path:
    """Create ``path`` if needed and check that we can write into it.

    Raises:
        OutputError: the folder cannot be created or written, naming ``option``.
    """
    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create output folder {p} ({exc.strerror}); choose another {option}") from exc
    if not os.access(p, os.W_OK | os.X_OK):
        raise OutputError(f"output folder {p} is not writable; choose another {option} or fix its permissions")
    return p


@contextlib.contextmanager
def atomic_output(target: str | os.PathLike[str], option: str = "--out") -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it to ``target`` on success.

    On any exception the temporary file is removed, so nothing half-written is left.

    Example:
        >>> with atomic_output("scene.tif") as tmp:   # doctest: +SKIP
        ...     write_raster(tmp)
    """
    target = Path(target)
    ensure_output_dir(target.parent if str(target.parent) else Path("."), option)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=f".partial{target.suffix}", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        for side in tmp_path.parent.glob(tmp_path.name + ".*"):  # e.g. GDAL .aux.xml / .ovr
            side.unlink(missing_ok=True)
        raise
