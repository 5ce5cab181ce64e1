"""The monitoring ledger (SQLite) and the run lock.

The ledger is the memory of a scheduled monitor: for every scene its inputs (path, size,
modification time, SHA-256 of the content), the bundle, options and model state it was
processed under and the model file actually run (name, SHA-256, precision, backend; see
:mod:`.models`), its status (``pending`` → ``running`` → ``done`` / ``nodata`` / ``failed``),
timings, outputs, error, and hectares and valid share in total and per AOI; and for every year
the composite, its hectares and valid share per AOI and the models behind it.

**No data is not 0 ha.** A scene without a single valid pixel is ``nodata`` (no outputs, no
hectares); hectares of a scene, year or AOI with no valid pixel are NULL, never 0. Every figure
keeps its valid share beside it, so the reports can withhold figures that rest on too little
of the area (``min_valid_share``).

**Schema versions.** Version 2 added the model columns, the ``nodata`` status and the valid
shares. A version-1 ledger is migrated in place when opened (one transaction; the tables are
rebuilt with their rows kept). Its scenes do not say which model file produced them, so the
next run maps them again once; nothing else is lost.

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

from .._io import create_empty, hash_file
from ..errors import CoalmineError, OutputError

SCHEMA_VERSION = 2
STATUSES = ("pending", "running", "done", "nodata", "failed")
LOCK_NAME = ".coal-monitor.lock"

#: Exit code of a run refused because another run holds the lock (sysexits EX_TEMPFAIL:
#: "try again later", which cron wrappers and systemd understand as transient).
EXIT_LOCKED = 75

_META = "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"

#: The tables of schema 2, by name (the migration from schema 1 rebuilds each from its old rows).
_TABLES: dict[str, str] = {
    "runs": """CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    started TEXT NOT NULL, finished TEXT, pid INTEGER, host TEXT,
    status TEXT NOT NULL DEFAULT 'running',
    processed INTEGER DEFAULT 0, unchanged INTEGER DEFAULT 0, failed INTEGER DEFAULT 0,
    message TEXT
)""",
    "scenes": """CREATE TABLE IF NOT EXISTS scenes (
    key TEXT PRIMARY KEY,
    path TEXT NOT NULL, s1_path TEXT, date TEXT NOT NULL, year INTEGER NOT NULL,
    size INTEGER, mtime_ns INTEGER, nfiles INTEGER, sha256 TEXT,
    s1_size INTEGER, s1_mtime_ns INTEGER, s1_nfiles INTEGER, s1_sha256 TEXT,
    bundle_id TEXT, options TEXT, model_state TEXT,
    status TEXT NOT NULL CHECK (status IN ('pending', 'running', 'done', 'nodata', 'failed')),
    token TEXT, attempts INTEGER NOT NULL DEFAULT 0, run_id INTEGER,
    started TEXT, finished TEXT, seconds REAL, timings TEXT, outputs TEXT,
    total_ha REAL, nodata_share REAL, valid_share REAL, backend TEXT,
    model_file TEXT, model_sha256 TEXT, precision TEXT, error TEXT
)""",
    "scene_areas": """CREATE TABLE IF NOT EXISTS scene_areas (
    key TEXT NOT NULL REFERENCES scenes(key) ON DELETE CASCADE,
    aoi TEXT NOT NULL, hectares REAL, valid_share REAL,
    PRIMARY KEY (key, aoi)
)""",
    "years": """CREATE TABLE IF NOT EXISTS years (
    year INTEGER PRIMARY KEY, rule TEXT NOT NULL, fingerprint TEXT NOT NULL,
    n_scenes INTEGER NOT NULL, composite TEXT, total_ha REAL,
    valid_share REAL, models TEXT, updated TEXT NOT NULL
)""",
    "year_areas": """CREATE TABLE IF NOT EXISTS year_areas (
    year INTEGER NOT NULL REFERENCES years(year) ON DELETE CASCADE,
    aoi TEXT NOT NULL, hectares REAL, valid_share REAL,
    PRIMARY KEY (year, aoi)
)""",
    "changes": """CREATE TABLE IF NOT EXISTS changes (
    from_year INTEGER NOT NULL, to_year INTEGER NOT NULL, fingerprint TEXT NOT NULL,
    raster TEXT NOT NULL, stats TEXT NOT NULL, updated TEXT NOT NULL,
    PRIMARY KEY (from_year, to_year)
)""",
}

#: Added to schema 2 without a version step: a table and nullable columns, which a ledger made
#: before them gains when opened (coalmine versions that do not know them ignore them).
#: ``input_stats``: each input's size, mtime, file count and SHA-256 (compositing = "input"
#: hashes a year's acquisitions only when these change); ``years.observations``: what an input
#: composite rests on (JSON).
_ADDED_TABLES = ("""CREATE TABLE IF NOT EXISTS input_stats (
    path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, nfiles INTEGER NOT NULL,
    sha256 TEXT NOT NULL
)""",)
_ADDED_COLUMNS: dict[str, dict[str, str]] = {"years": {"observations": "TEXT"}}


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


def plan_row(prev: Any, input_change: str | None, *, bundle_id: str, options: str, models: Any, layout: Any,
             retry_failed: bool, max_attempts: int) -> tuple[str, bool, int]:
    """Whether the ledger row ``prev`` of an input (a scene, a year's composite) is processed
    this run: ``(reason, process, attempts)``, the attempts to record for it.

    ``input_change`` names how the input differs from ``prev`` (None: it does not). A changed
    input, bundle, run options or model file starts the attempts afresh; a done row whose
    outputs are gone, an interrupted one and a failed one with attempts left are done again.
    ``models`` is the run's :class:`~coalmine.runtime.monitor.models.ModelSet`, ``layout`` its
    :class:`~coalmine.runtime.monitor.layout.MonitorLayout`.
    """
    if prev is None:
        return "new", True, 0
    model_change = models.change_from(prev["model_state"]) if prev["status"] in ("done", "nodata") else None
    if input_change:
        reason, process, fresh = input_change, True, True
    elif prev["bundle_id"] != bundle_id or prev["options"] != options:
        reason, process, fresh = "bundle or run options changed", True, True
    elif model_change:
        reason, process, fresh = str(model_change), True, True
    elif prev["status"] == "nodata":
        reason, process, fresh = "unchanged", False, False
    elif prev["status"] == "done":
        outputs = json.loads(prev["outputs"] or "{}")
        mask = layout.path(outputs.get("folder", "")) / outputs.get("mask", "")
        present = bool(outputs.get("mask")) and mask.is_file()
        reason, process, fresh = ("unchanged", False, False) if present else ("outputs missing", True, False)
    elif prev["status"] in ("running", "pending"):
        reason, process, fresh = "interrupted earlier", True, False
    elif retry_failed or prev["attempts"] < max_attempts:
        reason, process, fresh = "retry after failure", True, False
    else:
        reason, process, fresh = "failed earlier", False, False
    return reason, process, 0 if fresh or retry_failed else prev["attempts"]


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
        try:
            fh.seek(0)
            fh.truncate()
            fh.write(f"pid {os.getpid()} on {socket.gethostname()}, started {now()}")
            fh.flush()
        except OSError as exc:  # a full disk: the lock holds, but the run could not write anything
            with contextlib.suppress(OSError):  # closing flushes the same bytes again
                fh.close()
            from .._io import disk_hint

            raise OutputError(f"cannot write the lock file {self.path} ({exc.strerror}); "
                              f"{disk_hint(self.path.parent, 'output folder')}") from exc
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
            create_empty(self.path)  # the umask's mode (SQLite alone would make it 0644)
            # isolation_level=None: we open transactions ourselves (BEGIN IMMEDIATE).
            self.conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise OutputError(f"cannot open the ledger {self.path} ({exc}); check the output folder") from exc
        self.conn.row_factory = sqlite3.Row
        try:
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=FULL")
            with self.tx() as c:
                c.execute(_META)
                fresh = c.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() is None
                if fresh:
                    for ddl in _TABLES.values():
                        c.execute(ddl)
                    c.execute("INSERT INTO meta(key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            ver = self.conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0]
            if str(ver) == "1":
                _migrate_1_to_2(self.conn)
                ver = SCHEMA_VERSION
            if str(ver) == str(SCHEMA_VERSION):
                with self.tx() as c:
                    for ddl in _ADDED_TABLES:
                        c.execute(ddl)
                    for table, cols in _ADDED_COLUMNS.items():
                        have = {r[1] for r in c.execute(f"PRAGMA table_info({table})")}
                        for col, kind in cols.items():
                            if col not in have:
                                c.execute(f"ALTER TABLE {table} ADD COLUMN {col} {kind}")
            self.conn.execute("PRAGMA foreign_keys=ON")
        except sqlite3.OperationalError as exc:  # disk full, read-only, I/O: the file itself is fine
            raise self._write_error(exc) from exc
        except sqlite3.DatabaseError as exc:
            raise OutputError(
                f"{self.path} is not a usable coal-monitor ledger ({exc}); move it aside to start a new one"
            ) from exc
        if int(ver) != SCHEMA_VERSION:
            raise OutputError(
                f"ledger {self.path} has schema version {ver}, this coalmine writes {SCHEMA_VERSION}; "
                "use the coalmine version that made it or move it aside"
            )

    # -- plumbing --
    @contextlib.contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: everything inside commits together or not at all.

        Raises:
            OutputError: SQLite cannot write (a full disk, a read-only folder); the transaction
                is rolled back and the ledger keeps its history.
        """
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise self._write_error(exc) from exc
        try:
            yield self.conn
            self.conn.execute("COMMIT")
        except BaseException as exc:
            with contextlib.suppress(sqlite3.Error):
                self.conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.OperationalError):
                raise self._write_error(exc) from exc
            raise

    def _write_error(self, exc: sqlite3.Error) -> OutputError:
        """The ledger could not be written: say why, and that its history is intact (never
        "move it aside", which would throw a healthy history away)."""
        from .._io import disk_hint

        full = "full" in str(exc).lower() or "i/o" in str(exc).lower()
        hint = disk_hint(self.path.parent, "output folder") if full else "fix the cause and run again"
        return OutputError(f"cannot write the ledger {self.path} ({exc}); its history is intact (the change "
                           f"was rolled back): {hint}")

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
        size, mtime_ns, nfiles, sha256, s1_*, bundle_id, options, model_state). Earlier hectares
        of a re-planned scene are removed here, so a changed scene never counts with stale areas.
        """
        cols = [
            "key", "path", "s1_path", "date", "year", "size", "mtime_ns", "nfiles", "sha256",
            "s1_size", "s1_mtime_ns", "s1_nfiles", "s1_sha256", "bundle_id", "options", "model_state",
        ]
        with self.tx() as c:
            for r in rows:
                vals = [r.get(k) for k in cols]
                c.execute(
                    f"INSERT INTO scenes({', '.join(cols)}, status) VALUES ({', '.join('?' * len(cols))}, 'pending') "
                    "ON CONFLICT(key) DO UPDATE SET "
                    + ", ".join(f"{k}=excluded.{k}" for k in cols[1:])
                    + ", status='pending', token=NULL, outputs=NULL, total_ha=NULL, nodata_share=NULL, "
                    "valid_share=NULL, error=NULL, started=NULL, finished=NULL, seconds=NULL, timings=NULL, "
                    "backend=NULL, model_file=NULL, model_sha256=NULL, precision=NULL",
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

    def input_stats(self, paths: list[str]) -> dict[str, InputStat]:
        """The recorded size, mtime, file count and SHA-256 of inputs (compositing = "input")."""
        out: dict[str, InputStat] = {}
        for p in paths:
            r = self.conn.execute("SELECT * FROM input_stats WHERE path=?", (p,)).fetchone()
            if r is not None:
                out[p] = InputStat(r["size"], r["mtime_ns"], r["nfiles"], r["sha256"])
        return out

    def save_input_stats(self, stats: dict[str, InputStat]) -> None:
        """Remember inputs' stats and hashes, so the next run hashes only what changed (one transaction)."""
        with self.tx() as c:
            c.executemany(
                "INSERT OR REPLACE INTO input_stats(path, size, mtime_ns, nfiles, sha256) VALUES (?, ?, ?, ?, ?)",
                [(p, st.size, st.mtime_ns, st.nfiles, st.sha256) for p, st in stats.items()],
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

        ``result`` has ``outputs``, ``areas_ha`` (``{"total": ha | None, "aois": {name: ha |
        None}}``), ``valid_share`` and ``aoi_valid_share``, ``nodata_share``, ``backend``,
        ``model`` (``{"file", "sha256", "precision"}``), ``timings``, ``seconds``; with
        ``no_data`` true the scene is recorded ``nodata`` (no valid pixel: no hectares at all).
        Only the attempt holding ``token`` may complete the row, so a duplicate result (e.g.
        a retried distributed task) cannot count twice. Returns whether the row was updated.
        """
        areas = result.get("areas_ha") or {}
        model = result.get("model") or {}
        shares = result.get("aoi_valid_share") or {}
        status = "nodata" if result.get("no_data") else "done"
        with self.tx() as c:
            cur = c.execute(
                "UPDATE scenes SET status=?, finished=?, seconds=?, timings=?, outputs=?, total_ha=?, "
                "nodata_share=?, valid_share=?, backend=?, model_file=?, model_sha256=?, precision=?, error=? "
                "WHERE key=? AND token=? AND status='running'",
                (
                    status, now(), result.get("seconds"), json.dumps(result.get("timings", {})),
                    json.dumps(result.get("outputs", {})), _opt_float(areas.get("total")),
                    result.get("nodata_share"), result.get("valid_share"), result.get("backend"),
                    model.get("file"), model.get("sha256"), model.get("precision"),
                    result.get("message") if status == "nodata" else None, key, token,
                ),
            )
            if cur.rowcount != 1:
                return False
            c.execute("DELETE FROM scene_areas WHERE key=?", (key,))
            c.executemany(
                "INSERT INTO scene_areas(key, aoi, hectares, valid_share) VALUES (?, ?, ?, ?)",
                [(key, name, _opt_float(ha), _opt_float(shares.get(name)))
                 for name, ha in (areas.get("aois") or {}).items()],
            )
        return True

    def unclaim(self, key: str, token: str) -> None:
        """Give a claimed scene back (``pending``, the attempt not counted): its run stopped for a
        cause outside the scene, such as a full disk."""
        with self.tx() as c:
            c.execute(
                "UPDATE scenes SET status='pending', token=NULL, attempts=MAX(attempts - 1, 0) "
                "WHERE key=? AND token=? AND status='running'",
                (key, token),
            )

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

    def year_areas(self) -> dict[int, dict[str, float | None]]:
        """``{year: {aoi: hectares}}``; None where the AOI had no valid pixel that year."""
        out: dict[int, dict[str, float | None]] = {}
        for r in self.conn.execute("SELECT year, aoi, hectares FROM year_areas ORDER BY year, aoi"):
            out.setdefault(r["year"], {})[r["aoi"]] = r["hectares"]
        return out

    def year_area_shares(self) -> dict[int, dict[str, float | None]]:
        """``{year: {aoi: valid share}}`` of the yearly composites."""
        out: dict[int, dict[str, float | None]] = {}
        for r in self.conn.execute("SELECT year, aoi, valid_share FROM year_areas ORDER BY year, aoi"):
            out.setdefault(r["year"], {})[r["aoi"]] = r["valid_share"]
        return out

    def set_year(
        self, year: int, rule: str, fp: str, n_scenes: int, composite: str | None, areas: dict[str, Any],
        valid_share: float, models: list[dict[str, Any]] | None = None,
        observations: dict[str, Any] | None = None,
    ) -> None:
        """Register a yearly composite, its hectares and valid share per AOI (``areas`` as
        :func:`coalmine.runtime.areas.mask_areas_ha` returns them) and the models of its scenes,
        in one transaction. A year whose scenes all had no valid pixel has no composite
        (``composite`` None) and no hectares. ``observations`` (compositing = "input"): how many
        acquisitions and clear observations the year rests on (see ``composites.py``)."""
        shares = areas.get("aoi_valid_share") or {}
        with self.tx() as c:
            c.execute("DELETE FROM years WHERE year=?", (year,))
            c.execute(
                "INSERT INTO years(year, rule, fingerprint, n_scenes, composite, total_ha, valid_share, models, "
                "updated, observations) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (year, rule, fp, n_scenes, composite, _opt_float(areas.get("total")), valid_share,
                 json.dumps(models or []), now(),
                 None if observations is None else json.dumps(observations, sort_keys=True)),
            )
            c.executemany(
                "INSERT INTO year_areas(year, aoi, hectares, valid_share) VALUES (?, ?, ?, ?)",
                [(year, k, _opt_float(v), _opt_float(shares.get(k))) for k, v in areas.get("aois", {}).items()],
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


def _opt_float(v: Any) -> float | None:
    return None if v is None else float(v)


# -- migrations -------------------------------------------------------------------------------------

#: Columns each schema-1 table shares with its schema-2 form (the new ones start NULL).
_V1_COLUMNS: dict[str, str] = {
    "runs": "id, started, finished, pid, host, status, processed, unchanged, failed, message",
    "scenes": "key, path, s1_path, date, year, size, mtime_ns, nfiles, sha256, s1_size, s1_mtime_ns, "
              "s1_nfiles, s1_sha256, bundle_id, options, status, token, attempts, run_id, started, "
              "finished, seconds, timings, outputs, total_ha, nodata_share, backend, error",
    "scene_areas": "key, aoi, hectares",
    "years": "year, rule, fingerprint, n_scenes, composite, total_ha, valid_share, updated",
    "year_areas": "year, aoi, hectares",
    "changes": "from_year, to_year, fingerprint, raster, stats, updated",
}


def _migrate_1_to_2(conn: sqlite3.Connection) -> None:
    """Rebuild every table of a schema-1 ledger in its schema-2 form, keeping the rows.

    SQLite cannot change a CHECK constraint or drop NOT NULL in place, so each table is
    created anew, filled from the old one, and swapped in (SQLite's documented procedure for
    other ALTER TABLE changes), all in one transaction with foreign keys off, so a kill leaves
    either the old ledger or the new one.
    """
    conn.execute("PRAGMA foreign_keys=OFF")  # no effect inside a transaction: set it before
    conn.execute("BEGIN IMMEDIATE")
    try:
        for name, ddl in _TABLES.items():
            cols = _V1_COLUMNS[name]
            conn.execute(ddl.replace(f"IF NOT EXISTS {name} (", f"{name}_v2 ("))
            conn.execute(f"INSERT INTO {name}_v2 ({cols}) SELECT {cols} FROM {name}")  # noqa: S608 - fixed names
            conn.execute(f"DROP TABLE {name}")
            conn.execute(f"ALTER TABLE {name}_v2 RENAME TO {name}")
        bad = conn.execute("PRAGMA foreign_key_check").fetchall()
        if bad:
            raise sqlite3.DatabaseError(f"{len(bad)} rows lost their scene or year in the migration")
        conn.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION),))
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
