"""The mutation script's own guard: every named mutant still finds the line it changes, and every
module and test a group names exists. A refactor that moves such a line must move the mutant with
it (the script reports an unfound one as "not applicable"; this test says so in CI)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("mutation_script", REPO / "benchmarks" / "mutation.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up while the class is made
    spec.loader.exec_module(mod)
    return mod


MUTATION = _script()


@pytest.mark.parametrize("m", MUTATION.NAMED, ids=[m.name for m in MUTATION.NAMED])
def test_each_named_mutant_finds_its_line_once(m):
    text = (REPO / m.path).read_text(encoding="utf-8")
    assert text.count(m.old) == 1, f"{m.name}: {m.old!r} is in {m.path} {text.count(m.old)} times"
    assert all((REPO / t).is_file() for t in m.tests)


@pytest.mark.parametrize("g", MUTATION.GROUPS, ids=[g.name for g in MUTATION.GROUPS])
def test_each_group_names_files_that_exist(g):
    missing = [f for f in g.modules + g.tests if not (REPO / f).is_file()]
    assert not missing, f"group {g.name} names missing files {missing}"
