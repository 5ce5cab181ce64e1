"""The monitor's shape: dependencies run one way, SQL lives in the ledger, paths in the layout.

The import graph is read from the source with ``ast`` (nothing is imported), so a cycle hidden
in a function body counts like any other.
"""

from __future__ import annotations

import ast
from pathlib import Path

import coalmine.runtime.monitor as monitor
import pytest
from coalmine.runtime.monitor.layout import MonitorLayout, scene_folder_name

PACKAGE = "coalmine.runtime.monitor"
SOURCES = {p.stem: p for p in Path(monitor.__file__).parent.glob("*.py")}

#: Each module may import only modules of a lower rank: the coordinator, then the stages (which
#: never import each other), then the values they share. A new module must be placed here.
RANKS = {
    "__init__": 5,
    "scheduler": 4,
    "yearly": 3, "change": 3, "reports": 3, "cluster": 3, "composites": 3,
    "qgis": 3,
    "pipeline": 2, "maps": 2,
    "layout": 1, "ledger": 1, "config": 1, "legend": 1, "models": 1, "backdrop": 1, "modelcard": 1,
}


def _sibling(node: ast.ImportFrom | ast.Import) -> list[str]:
    """The monitor modules an import statement names (relative or absolute)."""
    if isinstance(node, ast.Import):
        return [a.name.split(".")[3] for a in node.names if a.name.startswith(PACKAGE + ".")]
    if node.level == 1:  # from .x import y / from . import x
        return [node.module.split(".")[0]] if node.module else [a.name for a in node.names]
    if node.level == 0 and node.module and node.module.startswith(PACKAGE + "."):
        return [node.module.split(".")[3]]
    if node.level == 0 and node.module == PACKAGE:
        return [a.name for a in node.names]
    return []


def _imports(path: Path) -> tuple[set[str], set[str]]:
    """(siblings imported at module level, siblings imported inside a function)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top: set[str] = set()
    inner: set[str] = set()

    def walk(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                (inner if in_function else top).update(_sibling(child))
            walk(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    walk(tree, False)
    return top, inner


def test_the_import_reader_sees_hidden_and_absolute_imports(tmp_path):
    src = tmp_path / "m.py"
    src.write_text(
        "from .ledger import Ledger\nimport coalmine.runtime.monitor.layout\n"
        "def f():\n    from .scheduler import plan\n    from coalmine.runtime.monitor import yearly\n"
    )
    assert _imports(src) == ({"ledger", "layout"}, {"scheduler", "yearly"})


def test_no_function_level_imports_of_monitor_modules():
    hidden = {name: sorted(_imports(p)[1]) for name, p in SOURCES.items() if _imports(p)[1]}
    assert hidden == {}


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_dependencies_run_one_way(name):
    assert name in RANKS, f"place the new module {name} in RANKS"
    top, _ = _imports(SOURCES[name])
    upward = sorted(m for m in top if RANKS.get(m, 0) >= RANKS[name])
    assert upward == [], f"{name} imports modules of its own rank or above: {upward}"


def test_sql_only_in_the_ledger():
    for name, path in SOURCES.items():
        if name == "ledger":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                assert "sqlite3" not in [a.name for a in node.names], name
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                assert node.func.attr not in ("execute", "executemany", "executescript", "tx"), (
                    f"{name}:{node.lineno} speaks SQL outside the ledger"
                )


def test_layout_paths_match_what_the_ledger_records(tmp_path):
    lay = MonitorLayout(tmp_path, tmp_path / "ledger.sqlite")
    assert lay.rel(lay.yearly_mask(2019)) == "yearly/mask_2019.tif"
    assert lay.rel(lay.change_map(2018, 2019)) == "change/change_2018_2019.tif"
    assert lay.path("yearly/mask_2019.tif") == tmp_path / "yearly" / "mask_2019.tif"
    d = lay.scene_dir("2019-07-14", "/data/S2 #1 (copy).tif")
    assert d.parent == tmp_path / "scenes"
    assert d.name.startswith("2019-07-14_S2_1_copy_") and len(d.name.rsplit("_", 1)[1]) == 8
    assert scene_folder_name("2019-07-14", "/a/x.tif") != scene_folder_name("2019-07-14", "/b/x.tif")
    assert lay.report_files()["html"] == tmp_path / "report.html"
    assert set(lay.work_dirs) == {tmp_path, *(tmp_path / d for d in ("scenes", "yearly", "change", "reports",
                                                                   "composites"))}
    assert lay.rel(lay.composite_dir(2019)) == "composites/2019"
