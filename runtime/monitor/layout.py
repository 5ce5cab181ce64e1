"""Where a monitoring run keeps its files: one value, built once, handed to every stage.

Everything lives under the configured output folder (the ledger may be placed elsewhere)::

    report.html                      the report (one self-contained file)
    coalmine.qgs                     the QGIS project (relative paths to the files below)
    mines.gpkg                       mine polygons of every year (layer "mines", field "year")
    ledger.sqlite                    the ledger, unless the configuration names another path
    scenes/<date>_<stem>_<hash>/     one folder per scene (coal-run's outputs)
    yearly/mask_<year>.tif           yearly composites
    yearly/truecolour_<year>.tif     a true-colour picture of the year (context for the maps)
    composites/<year>/               compositing = "input": the year's composite stack, its
                                     quality COG and coal-run's outputs on it
    change/change_<y0>_<y1>.tif      change maps between consecutive years
    reports/*.csv, reports/*.png     tables and charts

The ledger records paths relative to the output folder (:meth:`MonitorLayout.rel`), so a
monitoring folder can be moved or mounted elsewhere as a whole.

Example:
    >>> lay = MonitorLayout(Path("/srv/tapin"), Path("/srv/tapin/ledger.sqlite"))
    >>> lay.rel(lay.yearly_mask(2019)), lay.rel(lay.change_map(2018, 2019))
    ('yearly/mask_2019.tif', 'change/change_2018_2019.tif')
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

SCENES_DIR = "scenes"
YEARLY_DIR = "yearly"
CHANGE_DIR = "change"
REPORTS_DIR = "reports"
COMPOSITES_DIR = "composites"

#: Report files under ``reports/``, by the key :func:`~.reports.write_reports` returns them with.
REPORT_FILES: dict[str, str] = {
    "yearly_csv": "yearly_areas.csv",
    "yearly_details_csv": "yearly_details.csv",
    "changes_csv": "changes.csv",
    "change_maps_csv": "change_maps.csv",
    "scenes_csv": "scenes.csv",
    "chart_aois": "chart_aois.png",
    "chart_total": "chart_total.png",
}
#: Written when the configuration has a ``[source]``: the acquisitions fetched from the catalogue.
FETCHED_CSV = "fetched.csv"


@dataclass(frozen=True)
class MonitorLayout:
    """The paths of one monitoring output folder.

    Attributes:
        root: the output folder.
        ledger: the SQLite ledger (``root/ledger.sqlite`` unless configured elsewhere).
    """

    root: Path
    ledger: Path

    @property
    def scenes(self) -> Path:
        return self.root / SCENES_DIR

    @property
    def yearly(self) -> Path:
        return self.root / YEARLY_DIR

    @property
    def change(self) -> Path:
        return self.root / CHANGE_DIR

    @property
    def composites(self) -> Path:
        return self.root / COMPOSITES_DIR

    @property
    def reports(self) -> Path:
        return self.root / REPORTS_DIR

    @property
    def html(self) -> Path:
        return self.root / "report.html"

    @property
    def qgis_project(self) -> Path:
        return self.root / "coalmine.qgs"

    @property
    def mines(self) -> Path:
        return self.root / "mines.gpkg"

    @property
    def work_dirs(self) -> tuple[Path, ...]:
        """The folders whose files are written under temporary names and renamed into place."""
        return (self.root, self.scenes, self.yearly, self.change, self.reports, self.composites)

    def scene_dir(self, date: str, scene: str) -> Path:
        """A scene's output folder: its date, a readable stem and a short hash of its path."""
        return self.scenes / scene_folder_name(date, scene)

    def composite_dir(self, year: int) -> Path:
        """The folder of a year's input composite and its map (compositing = "input")."""
        return self.composites / str(year)

    def yearly_mask(self, year: int) -> Path:
        return self.yearly / f"mask_{year}.tif"

    def truecolour(self, year: int) -> Path:
        return self.yearly / f"truecolour_{year}.tif"

    def change_map(self, from_year: int, to_year: int) -> Path:
        return self.change / f"change_{from_year}_{to_year}.tif"

    def report_files(self) -> dict[str, Path]:
        """Every report file by key (see :data:`REPORT_FILES`), ``html`` included."""
        return {**{k: self.reports / name for k, name in REPORT_FILES.items()}, "html": self.html}

    def rel(self, path: Path) -> str:
        """``path`` relative to the output folder, as the ledger records it (POSIX separators)."""
        return Path(path).relative_to(self.root).as_posix()

    def path(self, rel: str) -> Path:
        """The file a relative path recorded in the ledger names."""
        return self.root / rel


def scene_folder_name(date: str, scene: str) -> str:
    """Folder name of a scene's outputs: date, a readable stem and a short hash of the path.

    Example:
        >>> scene_folder_name("2019-07-14", "/data/S2_20190714.SAFE").rsplit("_", 1)[0]
        '2019-07-14_S2_20190714'
    """
    stem = Path(scene).name
    for suffix in (".tif", ".tiff", ".SAFE", ".vrt"):
        if stem.lower().endswith(suffix.lower()):
            stem = stem[: -len(suffix)]
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", stem)[:48] or "scene"
    return f"{date}_{stem}_{hashlib.sha256(scene.encode()).hexdigest()[:8]}"
