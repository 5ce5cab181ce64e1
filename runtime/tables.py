"""CSV tables for spreadsheets and scripts: the one CSV writer of coalmine.

Every CSV coalmine writes (the monitor's reports, the trainer's epoch log) goes through
:func:`write_csv`: the standard library's :mod:`csv` module does the quoting (a name with a
comma, a quote or a line break stays one cell), the file is UTF-8 with the CRLF line ends of
RFC 4180 (the module's default dialect), and it is written under a temporary name and renamed
when complete.

Text cells cannot become formulas. Spreadsheet programs evaluate a cell that starts with
``=``, ``+``, ``-`` or ``@`` (and some a leading tab or carriage return) as a formula, so an
area named ``=HYPERLINK("http://…")`` would turn into a live link or worse when a CSV is
opened ("CSV injection"). As OWASP recommends, such a text cell — header cells included — is
written with a leading apostrophe (``'=HYPERLINK(…)``), which spreadsheets show as text and
a reader can strip. Numbers are never touched: ``-2.5`` stays the number ``-2.5``.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ._io import atomic_output

#: First characters that make a spreadsheet read a text cell as a formula.
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: Any) -> Any:
    """``value`` as a CSV cell that no spreadsheet evaluates: text starting with one of
    :data:`FORMULA_TRIGGERS` gets a leading apostrophe; anything else is returned unchanged.

    Example:
        >>> safe_cell("=1+2"), safe_cell("@SUM(A1)"), safe_cell(-2.5), safe_cell("Pit 1")
        ("'=1+2", "'@SUM(A1)", -2.5, 'Pit 1')
    """
    if isinstance(value, str) and value.startswith(FORMULA_TRIGGERS):
        return "'" + value
    return value


def write_csv(path: str | os.PathLike[str], header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Path:
    """Write ``header`` then ``rows`` to ``path`` as CSV; ``None`` becomes an empty cell and
    text that a spreadsheet would run as a formula is neutralised (:func:`safe_cell`).

    Returns:
        The path written.

    Example:
        >>> write_csv("areas.csv", ["year", "ha"], [[2019, 12.5], [2020, None]])   # doctest: +SKIP
    """
    target = Path(path)
    with atomic_output(target) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow([safe_cell(v) for v in header])
            w.writerows([safe_cell(v) for v in row] for row in rows)
    return target
