"""Writing outputs safely, and hashing files: the one home of both.

A long run keeps its temporary files in **one hidden folder of its own** inside the output
folder (:class:`WorkFolder`, ``.coalmine-<what>.<random>.tmp``), holding an exclusive
``flock`` on its ``owner`` file for as long as it lives. The kernel releases that lock when the
process ends however it ends (SIGKILL, power cut), so the next run in that folder removes every
work folder whose lock it can take — the leftovers of a killed run — and never one that is still
in use. Outputs are renamed from there into place when complete (same file system: atomic).

Every file coalmine writes for a user goes through a temporary name beside its target and is
renamed only when complete (:func:`atomic_output`, :func:`atomic_write_bytes`,
:func:`atomic_write_text`, :func:`atomic_write_json`), so a crash or a refused input never
leaves a half-written file under the final name. The temporary file is created the way a
plain ``open(path, "w")`` creates one, with mode ``0o666`` filtered by the process umask
(0644 under the usual umask 022), not the 0600 of tempfile's private temporary files: a colleague, a web
server serving the report or a Dask worker under another account can read what was written.
The rename keeps that mode. The file's bytes are flushed to disk before the rename and the
folder after it (:func:`fsync_path`), so a power cut leaves the old file or the whole new one,
never an empty or partial file under the final name.

:func:`sha256_file` (and :func:`hash_file` for a digest over several files) is the one place
that streams a file's bytes into SHA-256.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import secrets
import shutil
import socket
import time
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


#: Name pattern of the hidden per-run work folders (see :class:`WorkFolder`).
WORK_PREFIX = ".coalmine-"
WORK_SUFFIX = ".tmp"
OWNER_FILE = "owner"
#: A work folder that has no owner file after this many seconds is a leftover (its run died
#: between creating the folder and locking the file).
WORK_GRACE_S = 60.0


class WorkFolder:
    """A hidden folder for one run's temporary files inside ``out_dir``, removed when the run
    ends, and by the next run if this one is killed.

    The run holds an exclusive ``flock`` on ``<folder>/owner`` (which records pid, host and
    start time for people) until :meth:`close`. Creating a WorkFolder first removes the work
    folders of runs that are gone (:func:`sweep_work_folders`).

    Args:
        out_dir: the output folder (created).
        option: the option that named it, for messages.
        what: a word naming the kind of run in the folder name (``run``, ``prepare``).

    Example:
        >>> with WorkFolder("maps", what="run") as work:   # doctest: +SKIP
        ...     tmp = work.path / "scene_prob.tif"
    """

    def __init__(self, out_dir: str | os.PathLike[str], option: str = "--out", what: str = "run") -> None:
        self.out_dir = ensure_output_dir(out_dir, option)
        sweep_work_folders(self.out_dir)
        self.path = self.out_dir / f"{WORK_PREFIX}{what}.{secrets.token_hex(6)}{WORK_SUFFIX}"
        self._fd: int | None = None
        try:
            self.path.mkdir()
            self._fd = os.open(self.path / OWNER_FILE, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.write(self._fd, f"pid {os.getpid()} on {socket.gethostname()}, started "
                               f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
        except BaseException as exc:  # a full disk, or Ctrl-C/SIGTERM half-way: leave nothing
            self.close()
            if isinstance(exc, OSError):
                raise write_failure(self.out_dir, exc, f"into {self.out_dir}", option) from exc
            raise

    def close(self) -> None:
        """Remove the folder and everything left in it (idempotent)."""
        shutil.rmtree(self.path, ignore_errors=True)
        if self._fd is not None:
            os.close(self._fd)  # releases the lock
            self._fd = None

    def __enter__(self) -> WorkFolder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def sweep_work_folders(folder: str | os.PathLike[str]) -> list[Path]:
    """Remove the work folders in ``folder`` whose run is gone; return them.

    A folder is gone when the exclusive lock on its owner file can be taken (the kernel freed it
    when its process ended), or when it has had no owner file for :data:`WORK_GRACE_S` seconds.
    A folder whose lock is held belongs to a live run and is left alone.
    """
    removed = []
    for d in Path(folder).glob(f"{WORK_PREFIX}*{WORK_SUFFIX}"):
        if not d.is_dir() or d.is_symlink():
            continue
        owner = d / OWNER_FILE
        try:
            fd = os.open(owner, os.O_RDWR | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            try:
                stale = time.time() - d.stat().st_mtime > WORK_GRACE_S
            except OSError:
                continue
            if stale:
                shutil.rmtree(d, ignore_errors=True)
                removed.append(d)
            continue
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)  # a live run holds it
            continue
        try:
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d)
        finally:
            os.close(fd)
    return removed


#: errno values that mean the disk (or the user's share of it) is full.
DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def disk_hint(folder: str | os.PathLike[str], option: str = "--out") -> str:
    """The advice for a write that failed in ``folder``: how much space is left there and what
    to do, e.g. ``"0 bytes free now on the disk holding out (...): free space there or choose another --out"``."""
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return f"check free disk space and permissions, or choose another {option}"
    return (f"{_size(free)} free now on the disk holding {folder} (a full disk makes GDAL and SQLite report "
            f"write errors): free space there or choose another {option}")


def write_failure(folder: str | os.PathLike[str], exc: BaseException, what: str, option: str = "--out") -> OutputError:
    """An :class:`OutputError` for a failed write of ``what`` into ``folder``, naming the cause
    (GDAL reports a full disk only as "Write failed"; the free space tells)."""
    cause = exc
    while cause.__cause__ is not None and not getattr(cause, "strerror", None):
        cause = cause.__cause__
    reason = getattr(cause, "strerror", None) or (str(cause).strip().splitlines() or [type(cause).__name__])[0]
    full = getattr(cause, "errno", None) in DISK_FULL or _free(folder) < LOW_SPACE
    # the free space only where the disk is (nearly) full: beside a missing folder it would mislead
    hint = disk_hint(folder, option) if full else f"check free disk space and permissions, or choose another {option}"
    err = OutputError(f"cannot write {what} ({reason}); {hint}")
    err.disk_full = full
    return err


#: Free bytes below which a failed write is taken for a full disk.
LOW_SPACE = 1 << 20


def _free(folder: str | os.PathLike[str]) -> int:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return LOW_SPACE


def _size(n: int) -> str:
    for unit in ("bytes", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000  # type: ignore[assignment]
    return f"{n} bytes"


@contextlib.contextmanager
def atomic_output(target: str | os.PathLike[str], option: str = "--out",
                  work: WorkFolder | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``target`` (or in the run's ``work`` folder, which must be
    on the same file system); rename it to ``target`` on success.

    The folder is created if needed. On any exception the temporary file (and any GDAL side
    file) is removed and ``target`` is left as it was. The file gets the umask's mode and is
    flushed to disk with its folder (see the module docstring), whatever writes into it. A full
    disk while writing (``ENOSPC``, ``EDQUOT``, ``EFBIG``, which Python reports without a file
    name) becomes an :class:`OutputError` naming ``target`` and the space left (see
    :func:`write_failure`).

    Example:
        >>> with atomic_output("scene.tif") as tmp:   # doctest: +SKIP
        ...     write_raster(tmp)
    """
    target = Path(target)
    folder = ensure_output_dir(target.parent if str(target.parent) else Path("."), option)
    if target.is_dir() and not target.is_symlink():
        raise OutputError(f"{target} is a folder, where a file is to be written; move it or choose another {option}")
    tmp = temp_path(work.path / target.name if work is not None else target, option)
    try:
        yield tmp
        fsync_path(tmp)
        os.replace(tmp, target)
    except BaseException as exc:
        remove_temp(tmp)
        if isinstance(exc, OSError) and not isinstance(exc, OutputError) and exc.errno in DISK_FULL:
            raise write_failure(target.parent, exc, str(target), option) from exc
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
