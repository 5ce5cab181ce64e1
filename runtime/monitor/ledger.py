"""The monitoring ledger (SQLite) and the run lock.

The ledger is the memory of a scheduled monitor: for every scene its inputs (path, size,
modification time, SHA-256 of the content), the bundle and options it was processed
with, its status (``pending`` → ``running`` → ``done`` / ``failed``), timings, outputs,
error and hectares per AOI; and for every year the composite and its hectares per AOI.

Why it survives a power cut or ``kill -9`` at any moment:

- SQLite in WAL mode with ``synchronous=FULL``: a committed transaction is on disk, an
  uncommitted one vanishes.
- A scene's outputs are written under temporary names and renamed into place *before* the
  single transaction that marks the scene ``done`` and inserts its hectares. A kill before
  that commit leaves the row ``running``; the next run (which holds the lock, so nobody else
  is running) treats it as interrupted and processes it again, replacing the outputs. A kill
  after the commit changes nothing. Hectares are therefore never lost nor counted twice.
- Only the coordinator process writes the ledger; workers return results.

The run lock is an exclusive ``flock`` on ``<output>/.coal-monitor.lock``: the kernel drops
it when the holder dies, so a killed run never leaves a stale lock behind.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import socket
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._io import hash_file
from ..errors import CoalmineError, OutputError

SCHEMA_VERSION = 1
STATUSES = ("pending", "running", "done", "failed")
LOCK_NAME = ".coal-monitor.lock"

#: Exit code of a run refused because another run holds the lock (sysexits EX_TEMPFAIL:
#: "try again later", which cron wrappers and systemd understand as transient).
EXIT_LOCKED = 75

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    started TEXT NOT NULL, finished TEXT, pid INTEGER, host TEXT,
    status TEXT NOT NULL DEFAULT 'running',
    processed INTEGER DEFAULT 0, unchanged INTEGER DEFAULT 0, failed INTEGER DEFAULT 0,
    message TEXT
);
CREATE TABLE IF NOT EXISTS scenes (
    key TEXT PRIMARY KEY,
    path TEXT NOT NULL, s1_path TEXT, date TEXT NOT NULL, year INTEGER NOT NULL,
    size INTEGER, mtime_ns INTEGER, nfiles INTEGER, sha256 TEXT,
    s1_size INTEGER, s1_mtime_ns INTEGER, s1_nfiles INTEGER, s1_sha256 TEXT,
    bundle_id TEXT, options TEXT,
    status TEXT NOT NULL CHECK (status IN ('pending', 'running', 'done', 'failed')),
    token TEXT, attempts INTEGER NOT NULL DEFAULT 0, run_id INTEGER,
    started TEXT, finished TEXT, seconds REAL, timings TEXT, outputs TEXT,
    total_ha REAL, nodata_share REAL, backend TEXT, error TEXT
);
CREATE TABLE IF NOT EXISTS scene_areas (
    key TEXT NOT NULL REFERENCES scenes(key) ON DELETE CASCADE,
    aoi TEXT NOT NULL, hectares REAL NOT NULL,
    PRIMARY KEY (key, aoi)
);
CREATE TABLE IF NOT EXISTS years (
    year INTEGER PRIMARY KEY, rule TEXT NOT NULL, fingerprint TEXT NOT NULL,
    n_scenes INTEGER NOT NULL, composite TEXT NOT NULL, total_ha REAL NOT NULL,
    valid_share REAL, updated TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS year_areas (
    year INTEGER NOT NULL REFERENCES years(year) ON DELETE CASCADE,
    aoi TEXT NOT NULL, hectares REAL NOT NULL,
    PRIMARY KEY (year, aoi)
);
CREATE TABLE IF NOT EXISTS changes (
    from_year INTEGER NOT NULL, to_year INTEGER NOT NULL, fingerprint TEXT NOT NULL,
    raster TEXT NOT NULL, stats TEXT NOT NULL, updated TEXT NOT NULL,
    PRIMARY KEY (from_year, to_year)
);
"""


class LedgerLockedError(CoalmineError, RuntimeError):
    """Another ``coal-monitor`` run holds the lock on this output folder."""

    exit_code = EXIT_LOCKED


def now() -> str:
    """UTC time stamp, ISO 8601, seconds."""
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()


# -- input fingerprints --------------------------------------------------------------------------


@dataclass(frozen=True)
class InputStat:
    """What identifies an input's content: size, newest mtime, file count and SHA-256."""

    size: int
    mtime_ns: int
    nfiles: int
    sha256: str = ""

    def same_stat(self, other: InputStat | None) -> bool:
        return other is not None and (self.size, self.mtime_ns, self.nfiles) == (
            other.size, other.mtime_ns, other.nfiles
        )


def _files(path: Path) -> list[Path]:
    if path.is_dir():
        # A SAFE folder or a folder of band files: every regular file, in a stable order.
        return sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
    return [path]


def stat_input(path: Path) -> InputStat:
    """Size (sum), newest mtime and number of files of a file or folder, without reading it."""
    files = _files(path)
    size = 0
    mtime = 0
    for f in files:
        st = f.stat()
        size += st.st_size
        mtime = max(mtime, st.st_mtime_ns)
    return InputStat(size=size, mtime_ns=mtime, nfiles=len(files))


def hash_input(path: Path) -> str:
    """SHA-256 of a file, or of a folder's files (relative names and contents), streamed."""
    h = hashlib.sha256()
    root = path if path.is_dir() else path.parent
    for f in _files(path):
        if path.is_dir():
            h.update(f.relative_to(root).as_posix().encode() + b"\0")
        hash_file(h, f)
    return h.hexdigest()


def fingerprint(path: Path, known: InputStat | None = None) -> InputStat:
    """The input's :class:`InputStat`; the hash is reused from ``known`` when size, mtime and
    file count are unchanged (the cheap pre-check), else computed by streaming the content."""
    st = stat_input(path)
    if known is not None and known.sha256 and st.same_stat(known):
        return InputStat(st.size, st.mtime_ns, st.nfiles, known.sha256)
    return InputStat(st.size, st.mtime_ns, st.nfiles, hash_input(path))


# -- the lock ---------------------------------------------------------------------------------------


class RunLock:
    """Exclusive, non-blocking lock on an output folder for the duration of one run.

    Example:
        >>> with RunLock("monitor-out"):     # doctest: +SKIP
        ...     ...                           # only one coal-monitor here at a time
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.path = Path(folder) / LOCK_NAME
        self._fh: Any = None

    def acquire(self) -> None:
        """Take the lock or raise :class:`LedgerLockedError` naming the holder."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 - held for the run
        try:
            _lock_nb(fh)
        except OSError:
            fh.seek(0)
            holder = fh.read().strip() or "unknown process"
            fh.close()
            raise LedgerLockedError(
                f"another coal-monitor run ({holder}) holds the lock {self.path}; "
                "this run did nothing — wait for it to finish (a timer will simply retry later)"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} on {socket.gethostname()}, started {now()}")
        fh.flush()
        self._fh = fh

    def release(self) -> None:
        if self._fh is not None:
            # The file stays; only the lock goes (removing it would race a waiting run).
            with contextlib.suppress(OSError):
                self._fh.seek(0)
                self._fh.truncate()
            self._fh.close()
            self._fh = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _lock_nb(fh: Any) -> None:
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        fh.seek(0)
        msvcrt.locking(fh.fileno(), msvcrt.LK_NBLCK, 1)
        return
    fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)


# -- the ledger -------------------------------------------------------------------------------------


class Ledger:
    """The SQLite ledger of one monitoring output folder (coordinator side only).

    Example:
        >>> with Ledger("monitor/ledger.sqlite") as led:   # doctest: +SKIP
        ...     print([r["status"] for r in led.scenes()])
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: we open transactions ourselves (BEGIN IMMEDIATE).
            self.conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise OutputError(f"cannot open the ledger {self.path} ({exc}); check the output folder") from exc
        self.conn.row_factory = sqlite3.Row
        try:
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=FULL")
            self.conn.execute("PRAGMA foreign_keys=ON")
            # Each CREATE ... IF NOT EXISTS is atomic on its own; executescript manages its own
            # transaction, so it runs outside ours.
            self.conn.executescript(_SCHEMA)
            with self.tx():
                self.conn.execute(
                    "INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
                )
        except sqlite3.DatabaseError as exc:
            raise OutputError(
                f"{self.path} is not a usable coal-monitor ledger ({exc}); move it aside to start a new one"
            ) from exc
        ver = self.conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0]
        if int(ver) != SCHEMA_VERSION:
            raise OutputError(
                f"ledger {self.path} has schema version {ver}, this coalmine writes {SCHEMA_VERSION}; "
                "use the coalmine version that made it or move it aside"
            )

    # -- plumbing --
    @contextlib.contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: everything inside commits together or not at all."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- runs --
    def start_run(self) -> int:
        with self.tx() as c:
            cur = c.execute(
                "INSERT INTO runs(started, pid, host) VALUES (?, ?, ?)", (now(), os.getpid(), socket.gethostname())
            )
            return int(cur.lastrowid)

    def finish_run(self, run_id: int, status: str, processed: int, unchanged: int, failed: int, message: str) -> None:
        with self.tx() as c:
            c.execute(
                "UPDATE runs SET finished=?, status=?, processed=?, unchanged=?, failed=?, message=? WHERE id=?",
                (now(), status, processed, unchanged, failed, message, run_id),
            )

    def runs(self) -> list[sqlite3.Row]:
        return self.conn.execute("SELECT * FROM runs ORDER BY id").fetchall()

    # -- scenes --
    def scene(self, key: str) -> sqlite3.Row | None:
        return self.conn.execute("SELECT * FROM scenes WHERE key=?", (key,)).fetchone()

    def scenes(self, status: str | None = None) -> list[sqlite3.Row]:
        if status is None:
            return self.conn.execute("SELECT * FROM scenes ORDER BY date, path").fetchall()
        return self.conn.execute("SELECT * FROM scenes WHERE status=? ORDER BY date, path", (status,)).fetchall()

    def scene_areas(self, key: str) -> dict[str, float]:
        rows = self.conn.execute("SELECT aoi, hectares FROM scene_areas WHERE key=? ORDER BY aoi", (key,))
        return {r["aoi"]: r["hectares"] for r in rows}

    def mark_pending(self, rows: list[dict[str, Any]]) -> None:
        """Record (insert or refresh) the scenes a run is about to process, all in one transaction.

        Each dict has the scene columns of the planned input (key, path, s1_path, date, year,
        size, mtime_ns, nfiles, sha256, s1_*, bundle_id, options). Earlier hectares of a
        re-planned scene are removed here, so a changed scene never counts with stale areas.
        """
        cols = [
            "key", "path", "s1_path", "date", "year", "size", "mtime_ns", "nfiles", "sha256",
            "s1_size", "s1_mtime_ns", "s1_nfiles", "s1_sha256", "bundle_id", "options",
        ]
        with self.tx() as c:
            for r in rows:
                vals = [r.get(k) for k in cols]
                c.execute(
                    f"INSERT INTO scenes({', '.join(cols)}, status) VALUES ({', '.join('?' * len(cols))}, 'pending') "
                    "ON CONFLICT(key) DO UPDATE SET "
                    + ", ".join(f"{k}=excluded.{k}" for k in cols[1:])
                    + ", status='pending', token=NULL, outputs=NULL, total_ha=NULL, nodata_share=NULL, "
                    "error=NULL, started=NULL, finished=NULL, seconds=NULL, timings=NULL, backend=NULL",
                    vals,
                )
                c.execute("DELETE FROM scene_areas WHERE key=?", (r["key"],))

    def refresh_input_stats(self, stats: list[tuple[str, InputStat, InputStat | None]]) -> None:
        """Record the new size, mtime and file count of inputs whose content is unchanged
        (touched files), so the next run's cheap pre-check skips hashing them again.

        ``stats`` holds (scene key, Sentinel-2 stat, Sentinel-1 stat or None); one transaction.
        """
        with self.tx() as c:
            for key, st, s1st in stats:
                c.execute("UPDATE scenes SET size=?, mtime_ns=?, nfiles=? WHERE key=?", (st.size, st.mtime_ns, st.nfiles, key))
                if s1st is not None:
                    c.execute(
                        "UPDATE scenes SET s1_size=?, s1_mtime_ns=?, s1_nfiles=? WHERE key=?",
                        (s1st.size, s1st.mtime_ns, s1st.nfiles, key),
                    )

    def claim(self, key: str, token: str, run_id: int) -> None:
        """Mark a scene ``running`` under a fresh attempt token (committed before work starts)."""
        with self.tx() as c:
            c.execute(
                "UPDATE scenes SET status='running', token=?, run_id=?, started=?, attempts=attempts+1 "
                "WHERE key=?",
                (token, run_id, now(), key),
            )

    def complete(self, key: str, token: str, result: dict[str, Any]) -> bool:
        """Register a finished scene and its hectares in ONE transaction.

        Only the attempt holding ``token`` may complete the row, so a duplicate result (e.g.
        a retried distributed task) cannot count twice. Returns whether the row was updated.
        """
        areas = result["areas_ha"]
        with self.tx() as c:
            cur = c.execute(
                "UPDATE scenes SET status='done', finished=?, seconds=?, timings=?, outputs=?, total_ha=?, "
                "nodata_share=?, backend=?, error=NULL WHERE key=? AND token=? AND status='running'",
                (
                    now(), result.get("seconds"), json.dumps(result.get("timings", {})),
                    json.dumps(result["outputs"]), float(areas["total"]), result.get("nodata_share"),
                    result.get("backend"), key, token,
                ),
            )
            if cur.rowcount != 1:
                return False
            c.execute("DELETE FROM scene_areas WHERE key=?", (key,))
            c.executemany(
                "INSERT INTO scene_areas(key, aoi, hectares) VALUES (?, ?, ?)",
                [(key, name, float(ha)) for name, ha in areas.get("aois", {}).items()],
            )
        return True

    def fail(self, key: str, token: str, error: str, seconds: float | None = None) -> None:
        with self.tx() as c:
            c.execute(
                "UPDATE scenes SET status='failed', finished=?, seconds=?, error=? "
                "WHERE key=? AND token=? AND status='running'",
                (now(), seconds, error, key, token),
            )

    # -- years and changes --
    def years(self) -> list[sqlite3.Row]:
        return self.conn.execute("SELECT * FROM years ORDER BY year").fetchall()

    def year_areas(self) -> dict[int, dict[str, float]]:
        out: dict[int, dict[str, float]] = {}
        for r in self.conn.execute("SELECT year, aoi, hectares FROM year_areas ORDER BY year, aoi"):
            out.setdefault(r["year"], {})[r["aoi"]] = r["hectares"]
        return out

    def set_year(
        self, year: int, rule: str, fp: str, n_scenes: int, composite: str, areas: dict[str, Any],
        valid_share: float,
    ) -> None:
        """Register a yearly composite and its hectares per AOI in one transaction."""
        with self.tx() as c:
            c.execute("DELETE FROM years WHERE year=?", (year,))
            c.execute(
                "INSERT INTO years(year, rule, fingerprint, n_scenes, composite, total_ha, valid_share, updated) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (year, rule, fp, n_scenes, composite, float(areas["total"]), valid_share, now()),
            )
            c.executemany(
                "INSERT INTO year_areas(year, aoi, hectares) VALUES (?, ?, ?)",
                [(year, k, float(v)) for k, v in areas.get("aois", {}).items()],
            )

    def drop_years_except(self, keep: set[int]) -> None:
        with self.tx() as c:
            for r in c.execute("SELECT year FROM years").fetchall():
                if r["year"] not in keep:
                    c.execute("DELETE FROM years WHERE year=?", (r["year"],))

    def changes(self) -> list[sqlite3.Row]:
        return self.conn.execute("SELECT * FROM changes ORDER BY from_year").fetchall()

    def set_change(self, y0: int, y1: int, fp: str, raster: str, stats: dict[str, Any]) -> None:
        with self.tx() as c:
            c.execute(
                "INSERT OR REPLACE INTO changes(from_year, to_year, fingerprint, raster, stats, updated) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (y0, y1, fp, raster, json.dumps(stats), now()),
            )

    def drop_changes_except(self, keep: set[tuple[int, int]]) -> None:
        with self.tx() as c:
            for r in c.execute("SELECT from_year, to_year FROM changes").fetchall():
                if (r["from_year"], r["to_year"]) not in keep:
                    c.execute("DELETE FROM changes WHERE from_year=? AND to_year=?", (r[0], r[1]))
