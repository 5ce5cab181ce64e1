"""The record of fetched STAC items (``fetch.sqlite`` in the download folder) and its lock.

One row per STAC item id: what kind it is, when it was acquired, its cloud cover, where its
files are, their sizes and pixel hashes, how its DN offset was decided and — for a Sentinel-2
acquisition — the Sentinel-1 item paired with it. An item is recorded only after its files are
verified and renamed into place (one SQLite transaction, WAL, ``synchronous=FULL``), so a fetch
killed at any moment leaves either a recorded item or nothing that counts; an item in the
record is never fetched again. A second table keeps one row per fetch run (the date range
searched, whether the catalogue answered) for "since the last run" searches.

SQLite comes with Python and is crash-safe; a JSON file would need the same care by hand.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import socket
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._io import create_empty
from ..errors import CoalmineError, OutputError

RECORD_NAME = "fetch.sqlite"
LOCK_NAME = ".coal-fetch.lock"
EXIT_LOCKED = 75

_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    stac_id       TEXT PRIMARY KEY,
    kind          TEXT NOT NULL,          -- 's2' or 's1'
    collection    TEXT NOT NULL,
    catalogue     TEXT NOT NULL,
    acquired      TEXT NOT NULL,          -- ISO 8601, UTC
    cloud_cover   REAL,                   -- eo:cloud_cover of the item (whole tile), percent
    window_cloud  REAL,                   -- percent of the window's valid pixels that SCL masks
    status        TEXT NOT NULL,          -- 'fetched' or 'empty' (no valid pixel over the AOIs)
    path          TEXT,                   -- folder (S2) or file (S1), relative to the download folder
    s1_id         TEXT,                   -- S2: the Sentinel-1 item paired with it
    dn_offset     REAL,                   -- S2: BOA_ADD_OFFSET written beside the bands
    offset_source TEXT,
    baseline      TEXT,
    files         TEXT,                   -- JSON list of {name, bytes, pixels_sha256, window} (rasters)
                                          -- or {name, bytes, sha256} (whole files: GRD XML)
    bytes         INTEGER,
    seconds       REAL,
    fetched_at    TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    started   TEXT NOT NULL,
    finished  TEXT,
    catalogue TEXT NOT NULL,
    start     TEXT NOT NULL,                -- date range searched
    end       TEXT NOT NULL,
    status    TEXT NOT NULL,                -- 'running', 'ok', 'failed'
    new_items INTEGER DEFAULT 0,
    message   TEXT
);
"""


class FetchLockedError(CoalmineError):
    """Another coal-fetch (or a monitor's fetch) is writing to the same download folder (exit 75)."""

    exit_code = EXIT_LOCKED


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class ItemRow:
    """One recorded item (the columns of ``items``)."""

    stac_id: str
    kind: str
    collection: str
    catalogue: str
    acquired: str
    cloud_cover: float | None
    window_cloud: float | None
    status: str
    path: str | None
    s1_id: str | None
    dn_offset: float | None
    offset_source: str | None
    baseline: str | None
    files: list[dict[str, Any]]
    bytes: int
    seconds: float
    fetched_at: str

    @property
    def date(self) -> dt.date:
        return dt.datetime.fromisoformat(self.acquired).date()


class FetchRecord:
    """The SQLite record in a download folder.

    Example:
        >>> with FetchRecord("downloads") as rec:      # doctest: +SKIP
        ...     rec.has("S2B_50MLA_20230715_0_L2A")
    """

    def __init__(self, folder: str | os.PathLike[str], readonly: bool = False) -> None:
        self.folder = Path(folder)
        self.path = self.folder / RECORD_NAME
        try:
            if readonly:  # a dry run writes nothing, not even an empty record
                self._con = sqlite3.connect(f"{self.path.absolute().as_uri()}?mode=ro", uri=True,
                                            timeout=30, isolation_level=None)
            else:
                self.folder.mkdir(parents=True, exist_ok=True)
                create_empty(self.path)  # the umask's mode (SQLite alone would make it 0644)
                self._con = sqlite3.connect(self.path, timeout=30, isolation_level=None)
                self._con.execute("PRAGMA journal_mode=WAL")
                self._con.execute("PRAGMA synchronous=FULL")
                self._con.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise OutputError(f"cannot open the fetch record {self.path} ({exc}); choose another "
                              "--out or fix its permissions") from exc
        self._con.row_factory = sqlite3.Row

    def close(self) -> None:
        self._con.close()

    def __enter__(self) -> FetchRecord:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        self._con.execute("BEGIN IMMEDIATE")
        try:
            yield self._con
            self._con.execute("COMMIT")
        except BaseException:
            self._con.execute("ROLLBACK")
            raise

    # -- items -------------------------------------------------------------------------------
    def has(self, stac_id: str) -> bool:
        return self._con.execute("SELECT 1 FROM items WHERE stac_id = ?", (stac_id,)).fetchone() is not None

    def get(self, stac_id: str) -> ItemRow | None:
        r = self._con.execute("SELECT * FROM items WHERE stac_id = ?", (stac_id,)).fetchone()
        return _row(r) if r else None

    def put(self, row: ItemRow) -> None:
        d = row.__dict__.copy()
        d["files"] = json.dumps(row.files)
        cols = ", ".join(d)
        with self._tx() as con:
            con.execute(f"INSERT OR REPLACE INTO items ({cols}) VALUES ({', '.join('?' * len(d))})",
                        tuple(d.values()))

    def pair(self, s2_id: str, s1_id: str) -> None:
        with self._tx() as con:
            con.execute("UPDATE items SET s1_id = ? WHERE stac_id = ?", (s1_id, s2_id))

    def items(self, kind: str | None = None) -> list[ItemRow]:
        q = "SELECT * FROM items" + (" WHERE kind = ?" if kind else "") + " ORDER BY acquired, stac_id"
        return [_row(r) for r in self._con.execute(q, (kind,) if kind else ())]

    # -- runs --------------------------------------------------------------------------------
    def start_run(self, catalogue: str, start: dt.date, end: dt.date) -> int:
        with self._tx() as con:
            cur = con.execute("INSERT INTO runs (started, catalogue, start, end, status) VALUES (?, ?, ?, ?, 'running')",
                              (now(), catalogue, start.isoformat(), end.isoformat()))
            return int(cur.lastrowid or 0)

    def finish_run(self, run_id: int, status: str, new_items: int, message: str = "") -> None:
        with self._tx() as con:
            con.execute("UPDATE runs SET finished = ?, status = ?, new_items = ?, message = ? WHERE id = ?",
                        (now(), status, new_items, message, run_id))

    def last_complete_end(self, catalogue: str) -> dt.date | None:
        """End of the date range of the last run on ``catalogue`` that searched and fetched everything."""
        r = self._con.execute("SELECT end FROM runs WHERE status = 'ok' AND catalogue = ? ORDER BY id DESC LIMIT 1",
                              (catalogue,)).fetchone()
        return dt.date.fromisoformat(r[0]) if r else None

    def last_run(self) -> dict[str, Any] | None:
        r = self._con.execute("SELECT * FROM runs ORDER BY id DESC LIMIT 1").fetchone()
        return dict(r) if r else None


@dataclass(frozen=True)
class Acquisition:
    """A fetched Sentinel-2 acquisition, with its Sentinel-1 partner once there is one."""

    s2: Path
    date: dt.date
    s1: Path | None
    row: ItemRow


def acquisitions(folder: str | os.PathLike[str]) -> list[Acquisition]:
    """The Sentinel-2 acquisitions fetched into ``folder`` (none when it has no record yet).

    Read only; what is recorded is complete on disk (recorded after the rename).
    """
    folder = Path(folder)
    if not (folder / RECORD_NAME).is_file():
        return []
    with FetchRecord(folder, readonly=True) as rec:
        rows = rec.items()
    by_id = {r.stac_id: r for r in rows}
    out = []
    for r in rows:
        if r.kind != "s2" or r.status != "fetched" or not r.path:
            continue
        s1 = by_id.get(r.s1_id or "")
        s1_path = folder / s1.path if s1 is not None and s1.path else None
        out.append(Acquisition(folder / r.path, r.date, s1_path, r))
    return out


def report_rows(folder: str | os.PathLike[str]) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """What a report shows of a download folder: one row per recorded item, and the last run."""
    folder = Path(folder)
    if not (folder / RECORD_NAME).is_file():
        return [], None
    with FetchRecord(folder, readonly=True) as rec:
        rows, last = rec.items(), rec.last_run()
    out = []
    for r in rows:
        if r.status == "empty":
            state = "no data over the AOIs"
        elif r.kind == "s2" and r.s1_id is None:
            state = "waiting for Sentinel-1"
        else:
            state = "fetched"
        out.append({"date": r.date.isoformat(), "kind": "Sentinel-2" if r.kind == "s2" else "Sentinel-1",
                    "stac_id": r.stac_id, "cloud_cover": r.cloud_cover, "window_cloud": r.window_cloud,
                    "status": state, "s1_id": r.s1_id or "", "megabytes": r.bytes / 1e6,
                    "fetched_at": r.fetched_at})
    return out, last


def _row(r: sqlite3.Row) -> ItemRow:
    d = dict(r)
    d["files"] = json.loads(d["files"] or "[]")
    return ItemRow(**d)


class FolderLock:
    """Exclusive, non-blocking ``flock`` on a download folder for one fetch (released if killed).

    Example:
        >>> with FolderLock("downloads"):    # doctest: +SKIP
        ...     ...
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.path = Path(folder) / LOCK_NAME
        self._fh: Any = None

    def __enter__(self) -> FolderLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 - held for the fetch
        try:
            import fcntl

            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.seek(0)
            holder = fh.read().strip() or "unknown process"
            fh.close()
            raise FetchLockedError(
                f"another fetch ({holder}) is writing to {self.path.parent}; this one did nothing — "
                "wait for it to finish (a timer will simply retry later)") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} on {socket.gethostname()}, started {now()}")
        fh.flush()
        self._fh = fh
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fh is not None:
            with contextlib.suppress(OSError):
                self._fh.seek(0)
                self._fh.truncate()
            self._fh.close()
            self._fh = None
