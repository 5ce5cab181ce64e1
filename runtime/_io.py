"""Writing outputs safely, and hashing files: the one home of both.

Every file coalmine writes for a user goes through a temporary name beside its target and is
renamed only when complete (:func:`atomic_output`, :func:`atomic_write_bytes`,
:func:`atomic_write_text`, :func:`atomic_write_json`), so a crash or a refused input never
leaves a half-written file under the final name. The temporary file is created the way a
plain ``open(path, "w")`` creates one, with mode ``0o666`` filtered by the process umask
(0644 under the usual umask 022), not the 0600 of :func:`tempfile.mkstemp`: a colleague, a web
server serving the report or a Dask worker under another account can read what was written.
The rename keeps that mode. The file's bytes are flushed to disk before the rename and the
folder after it (:func:`fsync_path`), so a power cut leaves the old file or the whole new one,
never an empty or partial file under the final name.

:func:`sha256_file` (and :func:`hash_file` for a digest over several files) is the one place
that streams a file's bytes into SHA-256.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import OutputError

#: Bytes read at a time when hashing.
HASH_CHUNK = 1 << 20


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


def temp_path(target: str | os.PathLike[str], option: str = "--out", tag: str = "partial") -> Path:
    """Create an empty, uniquely named hidden file beside ``target`` and return its path.

    The name is ``.<target name>.<random>.<tag><target suffix>`` (the suffix is kept so that
    writers that pick a format from it, such as matplotlib, still work). The file is created
    with ``O_CREAT | O_EXCL`` and mode ``0o666``, so the umask decides its final permissions
    exactly as for ``open(path, "w")``. The caller renames it into place or removes it.

    Raises:
        OutputError: the folder cannot be written, naming ``option``.
    """
    target = Path(target)
    folder = target.parent if str(target.parent) else Path(".")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        p = folder / f".{target.name}.{secrets.token_hex(4)}.{tag}{target.suffix}"
        try:
            fd = os.open(p, flags, 0o666)
        except FileExistsError:
            continue
        except OSError as exc:
            raise OutputError(f"cannot write into {folder} ({exc.strerror}); choose another {option}") from exc
        os.close(fd)
        return p
    raise OutputError(f"cannot find a free temporary name beside {target}; clean up hidden files in {folder}")


def fsync_path(path: str | os.PathLike[str]) -> None:
    """Flush a file's bytes, or a folder's entries, to disk (best effort).

    A rename is durable only once its folder is flushed: call this on the folder after
    ``os.replace`` and on a file before renaming it into place. Where the system cannot
    (a folder on Windows, a file system without fsync) nothing happens: the write itself
    already succeeded.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def create_empty(path: str | os.PathLike[str]) -> Path:
    """Create ``path`` as an empty file with the umask's mode, unless it exists already.

    For files another library creates with a mode of its own: SQLite makes a new database
    0644 whatever the umask (0664 under umask 002 is what a shared group folder wants), and
    its ``-wal``/``-shm``/``-journal`` files take the database file's mode. An empty file is a
    valid empty database, so calling this before ``sqlite3.connect`` is all it takes.

    Raises:
        OSError: the file cannot be created (the caller names the option).
    """
    p = Path(path)
    try:
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
    except FileExistsError:
        return p
    os.close(fd)
    return p


def remove_temp(path: Path) -> None:
    """Remove a temporary file and the side files GDAL may have put beside it (.aux.xml, .ovr)."""
    path.unlink(missing_ok=True)
    for side in path.parent.glob(path.name + ".*"):
        side.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_output(target: str | os.PathLike[str], option: str = "--out") -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it to ``target`` on success.

    The folder is created if needed. On any exception the temporary file (and any GDAL side
    file) is removed and ``target`` is left as it was. The file gets the umask's mode and is
    flushed to disk with its folder (see the module docstring), whatever writes into it.

    Example:
        >>> with atomic_output("scene.tif") as tmp:   # doctest: +SKIP
        ...     write_raster(tmp)
    """
    target = Path(target)
    folder = ensure_output_dir(target.parent if str(target.parent) else Path("."), option)
    tmp = temp_path(target, option)
    try:
        yield tmp
        fsync_path(tmp)
        os.replace(tmp, target)
    except BaseException:
        remove_temp(tmp)
        raise
    fsync_path(folder)


@contextlib.contextmanager
def atomic_folder(target: str | os.PathLike[str], tag: str | int | None = None,
                  option: str = "--out") -> Iterator[Path]:
    """Yield an empty folder beside ``target`` to fill; it then takes ``target``'s place whole.

    The folder is ``.<name>.partial-<tag>`` (``tag``: the process id unless given, e.g. an
    attempt token), made with the umask's mode; a leftover of that name is removed first.
    When the block ends without an exception (a ``return`` inside it included) the folder
    replaces ``target`` (:func:`replace_folder`); on an exception it is removed and
    ``target`` is left as it was.

    Example:
        >>> with atomic_folder("model") as tmp:   # doctest: +SKIP
        ...     (tmp / "bundle.json").write_text("{}")
    """
    target = Path(target)
    tag = os.getpid() if tag is None else tag
    ensure_output_dir(target.parent if str(target.parent) else Path("."), option)
    tmp = target.parent / f".{target.name}.partial-{tag}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        replace_folder(tmp, target, tag)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def replace_folder(tmp: str | os.PathLike[str], target: str | os.PathLike[str], tag: str | int | None = None) -> None:
    """Replace the folder ``target`` by the complete folder ``tmp`` (two renames; the old copy
    is removed after). A kill between the renames leaves no ``target`` and the old copy
    as ``.<name>.old-<tag>``, never a mix of old and new files.
    """
    tmp, target = Path(tmp), Path(target)
    old = target.parent / f".{target.name}.old-{os.getpid() if tag is None else tag}"
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    fsync_path(target.parent)
    shutil.rmtree(old, ignore_errors=True)


def atomic_write_bytes(target: str | os.PathLike[str], data: bytes | memoryview, option: str = "--out") -> Path:
    """Write ``data`` to ``target`` through a temporary file (see :func:`atomic_output`)."""
    with atomic_output(target, option) as tmp, open(tmp, "wb") as f:
        f.write(data)
    return Path(target)


def atomic_write_text(target: str | os.PathLike[str], text: str, option: str = "--out") -> Path:
    """Write UTF-8 ``text`` to ``target`` through a temporary file (see :func:`atomic_output`)."""
    return atomic_write_bytes(target, text.encode("utf-8"), option)


def atomic_write_json(target: str | os.PathLike[str], data: Any, option: str = "--out") -> Path:
    """Write ``data`` as indented JSON (no NaN/Infinity: they are not JSON) plus a newline.

    Raises:
        ValueError: ``data`` holds NaN or infinity; nothing is written.
    """
    return atomic_write_text(target, json.dumps(data, indent=2, allow_nan=False) + "\n", option)


def hash_file(h: Any, path: str | os.PathLike[str]) -> None:
    """Stream the bytes of the file ``path`` into the hash object ``h`` (bounded memory)."""
    with open(path, "rb") as f:
        while block := f.read(HASH_CHUNK):
            h.update(block)


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file's bytes.

    Example:
        >>> sha256_file("model.onnx")[:12]   # doctest: +SKIP
        '3f1c0a9e77b2'
    """
    h = hashlib.sha256()
    hash_file(h, path)
    return h.hexdigest()
