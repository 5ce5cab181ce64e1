"""CSV tables for spreadsheets and scripts: the one CSV writer of coalmine.

Every CSV coalmine writes (the monitor's reports, the trainer's epoch log) goes through
:func:`write_csv`: the standard library's :mod:`csv` module does the quoting (a name with a
comma, a quote or a line break stays one cell), the file is UTF-8 with the CRLF line ends of
RFC 4180 (the module's default dialect), and it is written under a temporary name and renamed
when complete.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ._io import atomic_output


def write_csv(path: str | os.PathLike[str], header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Path:
    """Write ``header`` then ``rows`` to ``path`` as CSV; ``None`` becomes an empty cell.

    Returns:
        The path written.

    Example:
        >>> write_csv("areas.csv", ["year", "ha"], [[2019, 12.5], [2020, None]])   # doctest: +SKIP
    """
    target = Path(path)
    with atomic_output(target) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(header)
            w.writerows(rows)
    return target
