"""Mutation testing of the numeric and input modules (mutmut 3). A tool for engineers, not CI.

A mutant is a one-line change to the code (``<`` -> ``<=``, ``-1000.0`` -> ``-999.0``, an argument
dropped...). A test suite that lets a mutant pass cannot tell the changed code from the real one.
This script runs mutmut on the modules whose silent failure puts wrong numbers into maps and
reports — the preprocessing (with the annual composites and Sentinel-1 GRD products), raster
helpers, band table, tiling, outputs, areas, accuracy metrics and GLCM wrapper — each group with
its own relevant tests only, and prints the score per module and every surviving mutant. It also
checks a short list of **named mutants**: hand-written bugs of the kind mutmut does not generate
(a wrong band in the index table, the Lee filter run in dB, ...), each of which must make the tests
fail.

Usage (from the repository root, in the project's virtual environment)::

    python benchmarks/mutation.py                 # all groups + the named mutants, 2 workers
    python benchmarks/mutation.py tiling metrics  # some groups only
    python benchmarks/mutation.py --named         # the named mutants only (a minute)
    python benchmarks/mutation.py --list          # the groups, their modules and tests
    python benchmarks/mutation.py preprocess --only indices speckle  # some modules of a group

Results: ``build/mutation/report.md`` (score table, surviving mutants with their diffs) and
``report.json``; mutmut's own work folders are ``build/mutation/<group>/`` (``mutmut browse``
works there). About 8,000 mutants in all: on 2 cores the whole run takes about an hour and three
quarters (``preprocess`` alone 35 min), so run the group of the code you change (or one module with
``--only``); benchmarks/RESULTS.md gives each group's wall time.

Why it stages the package: the repository maps ``runtime/`` to ``coalmine.runtime`` (and
``train/``, ``export/`` likewise), and the editable install redirects ``import coalmine.runtime``
to the checkout with an import hook. mutmut derives a module's name from its path and puts its
mutated copies first on ``sys.path``; run in the checkout it would mutate ``runtime.tiling`` while
the tests import the untouched ``coalmine.runtime.tiling`` and every mutant would "survive". So
each group gets a folder with ``src/coalmine/{runtime,train,export}`` (copies, plus the compiled
``_glcm`` module), the tests and the pytest settings, and mutmut runs there with the editable
redirect switched off (for subprocesses too), so the mutated files are the ones imported. mutmut's
own forced-failure check and the named mutants prove that mutants reach the tests.
"""

from __future__ import annotations

import argparse
import dataclasses
import filecmp
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: package folder in the checkout -> import path
PACKAGES = {"runtime": "coalmine/runtime", "train": "coalmine/train", "export": "coalmine/export"}


@dataclass(frozen=True)
class Group:
    """Modules mutated together and the tests that are relevant to them."""

    name: str
    modules: tuple[str, ...]  # paths in the checkout
    tests: tuple[str, ...]


GROUPS = (
    Group("preprocess",
          tuple(f"runtime/preprocess/{m}.py" for m in ("s2", "s1", "indices", "speckle", "stack", "warp")),
          ("tests/test_input_numbers.py", "tests/test_prepare.py", "tests/test_prepare_errors.py",
           "tests/test_prepare_realdata.py", "tests/test_s2_zip.py", "tests/test_s2_reader.py",
           "tests/test_stack_source.py", "tests/test_s1_units.py", "tests/test_s1_reader.py",
           "tests/test_warp.py", "tests/test_run.py")),
    # the grid value and raster reading of the preprocessing (and of coal-run and the monitor)
    Group("raster", ("runtime/raster.py",),
          ("tests/test_raster.py", "tests/test_input_numbers.py", "tests/test_prepare.py",
           "tests/test_prepare_errors.py", "tests/test_map_numbers.py")),
    Group("bands", ("runtime/bands.py",),
          ("tests/test_bands.py", "tests/test_input_numbers.py", "tests/test_prepare.py", "tests/test_run.py")),
    Group("tiling", ("runtime/tiling.py",),
          ("tests/test_tiling.py", "tests/test_map_numbers.py", "tests/test_run.py")),
    Group("outputs", ("runtime/outputs.py",),
          ("tests/test_outputs.py", "tests/test_map_numbers.py", "tests/test_run.py")),
    Group("areas", ("runtime/areas.py",), ("tests/test_areas.py", "tests/test_no_data.py", "tests/test_run.py")),
    # yearly composites: the acquisition list, the per-pixel median and the composite's blocks
    Group("composite",
          tuple(f"runtime/preprocess/{m}.py" for m in ("acquisitions", "median", "composite")),
          ("tests/test_composite.py", "tests/test_composite_cli.py", "tests/test_composite_clouds.py",
           "tests/test_composite_units.py")),
    # Sentinel-1 GRD: annotation, orbit, noise removal and calibration, geocoding
    Group("grd",
          tuple(f"runtime/preprocess/s1grd/{m}.py" for m in ("annotation", "orbit", "radiometry", "geocoding")),
          ("tests/test_grd.py", "tests/test_grd_pipeline.py", "tests/test_grd_units.py")),
    Group("metrics", ("train/metrics.py",), ("tests/test_metrics.py",)),
    Group("texture", ("runtime/texture.py",), ("tests/test_texture.py",)),
)


@dataclass(frozen=True)
class NamedMutant:
    """A hand-written bug: ``old`` replaced by ``new`` in ``path`` must make ``tests`` fail."""

    name: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]


NAMED = (
    NamedMutant("NDCI from B12 instead of B11", "runtime/bands.py",
                '"NDCI": ("B08", "B11")', '"NDCI": ("B08", "B12")', ("tests/test_input_numbers.py",)),
    NamedMutant("BAI with its sign flipped", "runtime/bands.py",
                '"BAI": ("B02", "B08")', '"BAI": ("B08", "B02")', ("tests/test_input_numbers.py",)),
    NamedMutant("baseline 04.00 gives +1000", "runtime/preprocess/s2.py",
                "v = -1000.0 if base >= 4.0 else 0.0", "v = 1000.0 if base >= 4.0 else 0.0",
                ("tests/test_input_numbers.py",)),
    NamedMutant("date guess puts 2022-01-25 before the change", "runtime/preprocess/s2.py",
                "v = -1000.0 if md.date >= OFFSET_START else 0.0",
                "v = -1000.0 if md.date > OFFSET_START else 0.0", ("tests/test_input_numbers.py",)),
    NamedMutant("Lee filter applied in dB", "runtime/preprocess/stack.py",
                "power = lee_filter(power, prep.s1.speckle_window, enl)\n        vv = power_to_db(power)",
                "power = 10 ** (lee_filter(power_to_db(power), prep.s1.speckle_window, enl) / 10)\n"
                "        vv = power_to_db(power)",
                ("tests/test_input_numbers.py",)),
    NamedMutant("mask level with floor instead of ceil", "runtime/outputs.py",
                "int(math.ceil(threshold * PROB_SCALE - 1e-9))", "int(math.floor(threshold * PROB_SCALE))",
                ("tests/test_map_numbers.py",)),
    NamedMutant("valid pixel: any band finite instead of all", "runtime/run.py",
                "valid = np.isfinite(x[:, rs, cs]).all(axis=0)", "valid = np.isfinite(x[:, rs, cs]).any(axis=0)",
                ("tests/test_map_numbers.py",)),
    NamedMutant("blending ramp linear instead of raised cosine", "runtime/tiling.py",
                "rise = 0.5 - 0.5 * np.cos(np.pi * (i + 0.5) / overlap)", "rise = (i + 0.5) / overlap",
                ("tests/test_tiling.py",)),
    NamedMutant("kappa chance agreement from row totals only", "train/metrics.py",
                "pe = float((rows * cols).sum())", "pe = float((rows * rows).sum())", ("tests/test_metrics.py",)),
)

#: Lines (with the whole statement they start) that mutmut leaves alone: logging calls.
LOG_CALL = r"^\s*log\.(debug|info|warning|error)\("
#: Mutmut's status names that count as detected.
DETECTED = ("killed", "timeout", "caught by type check", "segfault")

# Run inside the staged folder: drop the editable install's import redirect for coalmine, then run
# a module as ``python -m`` would. Subprocesses started by tests get SKBUILD_EDITABLE_SKIP instead.
LAUNCHER = '''"""Run a module with the editable install's redirect of `coalmine` switched off."""
import os
import runpy
import sys


def _redirects_coalmine(finder):
    known = getattr(finder, "known_source_files", None) or {}
    return any(str(k).startswith("coalmine") for k in known)


sys.meta_path[:] = [f for f in sys.meta_path if not _redirects_coalmine(f)]
# The staged package comes first for this process (when it exists already) and for every process
# the tests start. It is not put in PYTHONPATH before this interpreter starts: a sys.path entry that
# does not exist yet (mutmut creates mutants/src later) is cached as "nothing here" for good.
src = os.environ["COALMINE_MUTATION_SRC"]
if os.path.isdir(src):
    sys.path.insert(0, src)
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p)
sys.argv = sys.argv[1:]
if sys.argv[0] == "-c":
    exec(sys.argv[1])
else:
    runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
'''


# The staged folder's own conftest.py (beside tests/, so the repository's tests/conftest.py is
# untouched): with mutmut's per-test timings at hand, run a mutant's tests cheapest file first
# (by the file's total time, so one slow end-to-end test puts its file last) and fastest test first
# within a file, so a killed mutant usually dies in its first, cheapest test.
ORDER_CONFTEST = '''"""Run the cheapest tests first (mutation testing only)."""
import json
from pathlib import Path


def pytest_collection_modifyitems(config, items):
    stats = Path("mutmut-stats.json")
    if not stats.is_file():
        return
    dur = json.loads(stats.read_text()).get("duration_by_test", {})
    total = {}
    for it in items:
        f = it.nodeid.split("::", 1)[0]
        total[f] = total.get(f, 0.0) + dur.get(it.nodeid, 1.0)
    items.sort(key=lambda it: (total[it.nodeid.split("::", 1)[0]], it.nodeid.split("::", 1)[0],
                               dur.get(it.nodeid, 1e9)))
'''


def editable_build_dirs() -> list[str]:
    """Build folders of scikit-build-core editable finders that redirect ``coalmine``."""
    out = []
    for f in sys.meta_path:
        known = getattr(f, "known_source_files", None) or {}
        if any(str(k).startswith("coalmine") for k in known) and getattr(f, "path", None):
            out.append(str(f.path))
    return out


def glcm_extension() -> Path:
    spec = importlib.util.find_spec("coalmine.runtime._glcm")
    if spec is None or not spec.origin:
        sys.exit("mutation: the compiled coalmine.runtime._glcm is not importable; install the "
                 "project first (pip install -e . or tools/new_worktree.sh)")
    return Path(spec.origin)


def stage(folder: Path, pyproject_extra: str = "") -> None:
    """Write ``folder`` with src/coalmine/..., tests/, pyproject.toml and the launcher."""
    if folder.exists():
        shutil.rmtree(folder)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for src, dst in PACKAGES.items():
        shutil.copytree(REPO / src, folder / "src" / dst, ignore=ignore)
    ext = glcm_extension()
    shutil.copy2(ext, folder / "src" / "coalmine" / "runtime" / ext.name)
    shutil.copytree(REPO / "tests", folder / "tests", ignore=ignore)
    (folder / "pyproject.toml").write_text((REPO / "pyproject.toml").read_text() + pyproject_extra)
    (folder / "_launch.py").write_text(LAUNCHER)
    (folder / "conftest.py").write_text(ORDER_CONFTEST)
    shared = REPO.parent / "shared"
    if shared.is_dir():  # tests/conftest.py finds the real Sentinel files beside the checkout
        (folder / "shared").symlink_to(shared)
        (folder / "mutants").mkdir()
        (folder / "mutants" / "shared").symlink_to(shared)


def env_for(src: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["COALMINE_MUTATION_SRC"] = str(src)
    skip = [p for p in env.get("SKBUILD_EDITABLE_SKIP", "").split(os.pathsep) if p]
    env["SKBUILD_EDITABLE_SKIP"] = os.pathsep.join(skip + editable_build_dirs())
    env.pop("MUTANT_UNDER_TEST", None)
    return env


def run_in(folder: Path, args: list[str], env: dict[str, str], log: Path | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, str(folder / "_launch.py"), *args]
    r = subprocess.run(cmd, cwd=folder, env=env, capture_output=True, text=True)
    if log is not None:
        log.write_text(f"$ {' '.join(cmd)}\n{r.stdout}\n{r.stderr}")
    return r


def check_imports_staged(folder: Path, src: Path, env: dict[str, str]) -> None:
    code = "import coalmine.runtime.tiling as m, coalmine.train.metrics as t; print(m.__file__); print(t.__file__)"
    r = run_in(folder, ["-c", code], env)
    files = r.stdout.split()
    if r.returncode or not files or not all(Path(f).resolve().is_relative_to(src.resolve()) for f in files):
        sys.exit(f"mutation: the staged package is not what the tests import ({r.stdout.strip()} {r.stderr.strip()}); "
                 "the editable install's redirect could not be switched off")


# -- named mutants ---------------------------------------------------------------------------------

def run_named(work: Path) -> list[dict[str, object]]:
    folder = work / "named"
    stage(folder)
    src = folder / "src"
    env = env_for(src)
    check_imports_staged(folder, src, env)
    tests = sorted({t for m in NAMED for t in m.tests})
    clean = run_in(folder, ["pytest", "-q", "-x", "-p", "no:cacheprovider", *tests], env)
    if clean.returncode != 0:
        sys.exit(f"mutation: the tests fail without any mutant:\n{clean.stdout[-3000:]}")
    results = []
    for m in NAMED:
        target = src / PACKAGES[m.path.split("/", 1)[0]] / m.path.split("/", 1)[1]
        orig = target.read_text()
        if orig.count(m.old) != 1:
            results.append({"name": m.name, "status": "not applicable", "detail": f"{m.path} no longer has {m.old!r}"})
            continue
        target.write_text(orig.replace(m.old, m.new))
        try:
            t = time.perf_counter()
            r = run_in(folder, ["pytest", "-q", "-p", "no:cacheprovider", *m.tests], env)
            failed = [ln for ln in r.stdout.splitlines() if ln.startswith("FAILED")]
            results.append({"name": m.name, "path": m.path, "status": "killed" if r.returncode else "survived",
                            "by": failed, "seconds": round(time.perf_counter() - t, 1)})
        finally:
            target.write_text(orig)
    return results


# -- mutmut groups ---------------------------------------------------------------------------------

def present(paths: tuple[str, ...]) -> tuple[str, ...]:
    """The files that exist in this checkout (modules move in refactors; an older one lacks tests)."""
    return tuple(p for p in paths if (REPO / p).is_file())


def mutmut_config(g: Group) -> str:
    only = [f'"src/{PACKAGES[m.split("/", 1)[0]]}/{m.split("/", 1)[1]}"' for m in present(g.modules)]
    tests = ", ".join(f'"{t}"' for t in present(g.tests))
    return (
        "\n\n[tool.mutmut]\n"
        'source_paths = ["src"]\n'
        f"only_mutate = [{', '.join(only)}]\n"
        f"pytest_add_cli_args_test_selection = [{tests}]\n"
        # Left to the normal suite: tests that start coal-* in a subprocess (they check the entry
        # points, not the numbers), the real U-Net run (a torch export of ResNet-34, 15 s; the
        # tiny ONNX models of the other run tests go through the same tiling and blending) and the
        # training on a GRD product (45 s; the GRD numbers are checked by test_grd*.py).
        'pytest_add_cli_args = ["-p", "no:cacheprovider", "-k", '
        '"not subprocess and not real_unet and not train_on_a_grd"]\n'
        'also_copy = ["conftest.py"]\n'
        "use_git_change_detection = false\n"
        # log calls report, they do not compute: their text is not what this score is about
        f"do_not_mutate_patterns = ['{LOG_CALL}']\n"
        # fork straight from mutmut's process (the default) hangs: the statistics run leaves GDAL and
        # ONNX Runtime threads behind, and a forked child can block on a lock one of them held.
        'process_isolation = "forkserver"\n'
    )


_RESULT_RE = re.compile(r"^\s*(\S+): (.+)$")


def module_of(mutant: str) -> str:
    parts = mutant.split(".")
    for i in range(len(parts) - 1, -1, -1):
        if parts[i].startswith(("x_", "x\u01c1")):
            return ".".join(parts[:i])
    return mutant.rsplit(".", 1)[0]


def same_sources(folder: Path) -> bool:
    """True if the package staged in ``folder`` is the checkout's current code."""
    for src, dst in PACKAGES.items():
        here = {p.relative_to(REPO / src) for p in (REPO / src).rglob("*.py")}
        there = {p.relative_to(folder / "src" / dst) for p in (folder / "src" / dst).rglob("*.py")}
        if here != there or any(not filecmp.cmp(REPO / src / f, folder / "src" / dst / f, shallow=False)
                                for f in here):
            return False
    return True


def statuses_of(folder: Path, env: dict[str, str]) -> dict[str, str]:
    res = run_in(folder, ["mutmut", "results", "--all", "true"], env)
    out = {}
    for line in res.stdout.splitlines():
        m = _RESULT_RE.match(line)
        if m and "__mutmut_" in m.group(1):
            out[m.group(1)] = m.group(2).strip()
    return out


def run_group(g: Group, work: Path, jobs: int, keep: bool = False) -> dict[str, object]:
    folder = work / g.name
    src = folder / "mutants" / "src"
    env = env_for(src)
    reuse = keep and (folder / "mutants" / "mutmut-stats.json").is_file() and same_sources(folder)
    runs = [["mutmut", "run", "--max-children", str(jobs)]]
    if reuse:
        # Same code, new tests: retest the earlier survivors first, then whatever is unchecked.
        shutil.rmtree(folder / "tests")
        shutil.copytree(REPO / "tests", folder / "tests", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        (folder / "pyproject.toml").write_text((REPO / "pyproject.toml").read_text() + mutmut_config(g))
        again = sorted(n for n, st in statuses_of(folder, env).items() if st not in DETECTED and st != "not checked")
        if again:
            runs.insert(0, runs[0] + again)
    else:
        if keep:
            print(f"    {g.name}: the code changed since the last run (or there was none): a full run",
                  file=sys.stderr)
        stage(folder, mutmut_config(g))
    t0, load0 = time.perf_counter(), os.getloadavg()
    with open(folder / "mutmut-run.log", "w") as log:  # mutmut's progress, readable while it runs
        for args in runs:
            r = subprocess.run([sys.executable, str(folder / "_launch.py"), *args], cwd=folder, env=env,
                               stdout=log, stderr=subprocess.STDOUT, text=True)
    wall = time.perf_counter() - t0
    out: dict[str, object] = {"group": g.name, "modules": list(present(g.modules)), "tests": list(present(g.tests)),
                              "wall_s": round(wall, 1), "load_before": [round(x, 2) for x in load0],
                              "load_after": [round(x, 2) for x in os.getloadavg()], "returncode": r.returncode}
    statuses = statuses_of(folder, env)
    out["kept"] = reuse
    per_module: dict[str, dict[str, int]] = {}
    for name, st in statuses.items():
        c = per_module.setdefault(module_of(name), {})
        c[st] = c.get(st, 0) + 1
    survivors = []
    for name, st in sorted(statuses.items()):
        if st in DETECTED:
            continue
        diff = run_in(folder, ["mutmut", "show", name], env).stdout
        survivors.append({"name": name, "status": st, "diff": diff.strip()})
    out["per_module"] = per_module
    out["survivors"] = survivors
    if r.returncode and not statuses:
        out["error"] = (folder / "mutmut-run.log").read_text()[-3000:]
    return out


def score(counts: dict[str, int]) -> tuple[int, int, float | None]:
    total = sum(counts.values())
    found = sum(v for k, v in counts.items() if k in DETECTED)
    return found, total, (100.0 * found / total if total else None)


def report(groups: list[dict[str, object]], named: list[dict[str, object]], wall: float) -> str:
    lines = ["# Mutation testing report", "",
             f"mutmut {_version('mutmut')}, Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
             f"wall {wall / 60:.1f} min, load average at the end {os.getloadavg()[0]:.2f}", ""]
    if groups:
        lines += ["| group | module | mutants | killed | survived | no tests | timeout | other | score |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
        all_counts: dict[str, int] = {}
        for g in groups:
            pm = g.get("per_module") or {}
            if not pm:
                lines.append(f"| {g['group']} | {', '.join(g['modules'])} | 0 | | | | | | — |")
            for mod, c in sorted(pm.items()):
                for k, v in c.items():
                    all_counts[k] = all_counts.get(k, 0) + v
                found, total, s = score(c)
                other = total - sum(c.get(k, 0) for k in ("killed", "survived", "no tests", "timeout"))
                lines.append(f"| {g['group']} | {mod} | {total} | {c.get('killed', 0)} | {c.get('survived', 0)} | "
                             f"{c.get('no tests', 0)} | {c.get('timeout', 0)} | {other} | {s:.1f} % |")
        found, total, s = score(all_counts)
        lines += [f"| **all** | | **{total}** | | | | | | **{s:.1f} %** |" if total else "", ""]
        lines += ["Wall time per group: " + ", ".join(f"{g['group']} {g['wall_s'] / 60:.1f} min" for g in groups), ""]
    if named:
        lines += ["## Named mutants", "", "| mutant | status | failing test |", "|---|---|---|"]
        for n in named:
            by = (n.get("by") or [""])[0].replace("FAILED ", "")
            lines.append(f"| {n['name']} | {n['status']} | {by} |")
        lines.append("")
    for g in groups:
        surv = g.get("survivors") or []
        if surv:
            lines += [f"## Surviving mutants: {g['group']}", ""]
            for s in surv:
                lines += [f"### {s['name']} ({s['status']})", "", "```diff", str(s["diff"]), "```", ""]
    return "\n".join(lines)


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "?"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("groups", nargs="*", help=f"groups to run (default: all): {', '.join(g.name for g in GROUPS)}")
    ap.add_argument("--jobs", type=int, default=2, help="mutants tested in parallel")
    ap.add_argument("--work", type=Path, default=REPO / "build" / "mutation", help="work and report folder")
    ap.add_argument("--named", action="store_true", help="only check the named mutants")
    ap.add_argument("--no-named", action="store_true", help="skip the named mutants")
    ap.add_argument("--keep", action="store_true",
                    help="reuse a group's earlier run when the code is unchanged: take the current tests, "
                         "retest its survivors, then finish what was left unchecked")
    ap.add_argument("--only", nargs="+", metavar="NAME", default=None,
                    help="mutate only the modules of the chosen groups whose file name (without .py) is one of "
                         "these, e.g. --only s2 indices; the group's folder gets their names as a suffix")
    ap.add_argument("--list", action="store_true", help="print the groups and exit")
    a = ap.parse_args(argv)
    if a.list:
        for g in GROUPS:
            gone = sorted(set(g.modules + g.tests) - set(present(g.modules + g.tests)))
            print(f"{g.name}: {' '.join(present(g.modules))}\n    tests: {' '.join(present(g.tests))}"
                  + (f"\n    not in this checkout: {' '.join(gone)}" if gone else ""))
        return 0
    if importlib.util.find_spec("mutmut") is None:
        print("mutation: mutmut is not installed; pip install 'mutmut>=3.3'", file=sys.stderr)
        return 2
    unknown = set(a.groups) - {g.name for g in GROUPS}
    if unknown:
        print(f"mutation: unknown group(s) {', '.join(sorted(unknown))}; see --list", file=sys.stderr)
        return 2
    chosen = [] if a.named else [g for g in GROUPS if (not a.groups or g.name in a.groups) and present(g.modules)]
    if a.only:
        chosen = [dataclasses.replace(g, name=f"{g.name}-{'-'.join(sorted(a.only))}",
                                      modules=tuple(m for m in g.modules if Path(m).stem in a.only))
                  for g in chosen]
        chosen = [g for g in chosen if present(g.modules)]
        if not chosen:
            print(f"mutation: no module of the chosen groups is named {' or '.join(a.only)}; see --list",
                  file=sys.stderr)
            return 2
    a.work = a.work.resolve()
    a.work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    named = [] if a.no_named else run_named(a.work)
    for n in named:
        print(f"named mutant: {n['status']:>8}  {n['name']}", file=sys.stderr)
    results = []
    for g in chosen:
        print(f"mutation: {g.name} ({', '.join(present(g.modules))}) ...", file=sys.stderr)
        results.append(run_group(g, a.work, a.jobs, a.keep))
        pm = results[-1].get("per_module") or {}
        for mod, c in sorted(pm.items()):
            found, total, s = score(c)
            print(f"    {mod}: {found}/{total} detected ({s:.1f} %) in {results[-1]['wall_s'] / 60:.1f} min",
                  file=sys.stderr)
        if results[-1].get("error"):
            print(f"    mutmut failed:\n{results[-1]['error']}", file=sys.stderr)
    wall = time.perf_counter() - t0
    text = report(results, named, wall)
    (a.work / "report.md").write_text(text)
    (a.work / "report.json").write_text(json.dumps({"groups": results, "named": named, "wall_s": round(wall, 1)},
                                                   indent=1))
    print(text)
    bad_named = [n for n in named if n["status"] != "killed"]
    return 1 if bad_named or any(g.get("error") for g in results) else 0


if __name__ == "__main__":
    sys.exit(main())
