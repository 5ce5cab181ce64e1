"""Each install line of the README installs what the commands it promises import.

For every ``pip install ".[extras]"  # ... coal-x ...`` line of the README's install block:

1. **The requirement set** of the line is resolved from ``pyproject.toml`` (base dependencies +
   the extras) and then transitively from the installed distributions' own metadata, markers
   evaluated for this interpreter (``onnxruntime-gpu`` stands in as ``onnxruntime``, the same
   module; a distribution not installed here counts with its own name only).
2. **Static check**: from each command's entry module, every coalmine module it can reach by
   import statements, including imports inside functions (the code imports heavy packages
   lazily, so importing a module proves little), is parsed. Every third-party import (a
   statement not guarded by ``except ImportError``, or an ``optional_import("x")`` call) must be
   provided by the requirement set, unless it belongs to an extra listed below as optional for
   that command (``coal-monitor --scheduler`` needs ``[cluster]``; ``coal-run`` uses TensorRT when
   ``[tensorrt]`` is there).
3. **Dynamic check**: in a fresh interpreter whose import system refuses every installed
   top-level package outside the requirement set, those modules are imported and each command's
   ``--help`` runs.

This checks the declared dependency graph against the code without a network; that pip
resolves the set from PyPI is not tested here.
"""

from __future__ import annotations

import ast
import importlib.metadata as md
import json
import re
import subprocess
import sys
from functools import cache, lru_cache
from pathlib import Path

import pytest
from coalmine.runtime._optional import OPTIONAL
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
PACKAGES = {"coalmine.runtime": REPO / "runtime", "coalmine.train": REPO / "train", "coalmine.export": REPO / "export"}
#: The install lines the README must keep.
REQUIRED_LINES = ({"cpu"}, {"gpu"}, {"cpu", "export"}, {"cpu", "train"}, {"cpu", "cluster"})
#: Extras a command uses when present and does without otherwise.
OPTIONAL_FOR = {
    "coal-run": {"tensorrt"},
    "coal-monitor": {"tensorrt", "cluster", "fetch"},
    "coal-export": {"tensorrt"},
    "coal-demo": {"tensorrt", "cluster", "fetch"},
}
#: Installed as the same importable module as the first.
SAME_MODULE = {"onnxruntime-gpu": "onnxruntime"}


# -- the README's lines -------------------------------------------------------------------------------
def install_lines() -> list[tuple[frozenset[str], list[str], str]]:
    """(extras, commands named in the comment, the line) of the README's Install block."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    block = text.split("## Install", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    out = []
    for line in block.strip().splitlines():
        m = re.match(r'pip install "\.\[([a-z0-9,-]+)\]"\s+#\s*(.*)$', line.strip())
        assert m, f"README install line not in the form pip install \".[extras]\"  # comment: {line!r}"
        extras = frozenset(m.group(1).split(","))
        commands = re.findall(r"\bcoal-[a-z]+\b", m.group(2))
        out.append((extras, commands, line.strip()))
    return out


LINES = install_lines()


def test_readme_lists_the_documented_install_lines():
    have = [set(e) for e, _, _ in LINES]
    for want in REQUIRED_LINES:
        assert want in have, f"README install block has no line for .[{','.join(sorted(want))}]"
    scripts = set(PYPROJECT["project"]["scripts"])
    named = {c for _, cmds, _ in LINES for c in cmds}
    assert named <= scripts, f"README names commands that do not exist: {named - scripts}"
    assert scripts <= named, f"no README install line gives {sorted(scripts - named)}"
    for extras, _, line in LINES:
        assert extras <= set(PYPROJECT["project"]["optional-dependencies"]), line


# -- the test command ----------------------------------------------------------------------------------
#: Extras that need an NVIDIA GPU (or conflict with [cpu]); their tests skip with a reason without one.
GPU_EXTRAS = {"gpu", "gpu-cu12", "tensorrt", "tensorrt-cu12"}
TEST_INSTALL = re.compile(r'pip install (?:-e )?"\.\[([a-z0-9,-]+)\]"(?:` \(every extra| && python -m pytest)')


def test_the_test_command_and_ci_install_every_extra_the_tests_use():
    """The README's test command, its development install and ``.ci/run`` install the same extras:
    all of them but the GPU ones, so no test of an installable feature skips (or fails) in CI for
    a missing package."""
    readme = TEST_INSTALL.findall((REPO / "README.md").read_text(encoding="utf-8"))
    ci = TEST_INSTALL.findall((REPO / ".ci" / "run").read_text(encoding="utf-8"))
    want = set(PYPROJECT["project"]["optional-dependencies"]) - GPU_EXTRAS
    assert len(readme) == 2 and len(ci) == 1, (readme, ci)
    for extras in readme + ci:
        assert set(extras.split(",")) == want, f"installs .[{extras}], the tests use .[{','.join(sorted(want))}]"


# -- requirement sets ---------------------------------------------------------------------------------
def _dist_requires(name: str) -> list[str] | None:
    try:
        return md.requires(SAME_MODULE.get(name, name)) or []
    except md.PackageNotFoundError:
        return None


def requirement_set(extras: frozenset[str]) -> set[str]:
    """Canonical names of every distribution ``pip install ".[extras]"`` installs."""
    todo = [(Requirement(r), frozenset()) for r in PYPROJECT["project"]["dependencies"]]
    todo += [(Requirement(r), frozenset()) for e in sorted(extras)
             for r in PYPROJECT["project"]["optional-dependencies"][e]]
    seen: dict[str, set[str]] = {}
    while todo:
        req, parent_extras = todo.pop()
        if req.marker is not None and not any(
                req.marker.evaluate({"extra": e}) for e in (parent_extras or {""})):
            continue
        name = canonicalize_name(req.name)
        done = seen.setdefault(name, set())
        wanted = {""} | set(req.extras)
        if wanted <= done:
            continue
        done |= wanted
        for r in _dist_requires(name) or []:
            todo.append((Requirement(r), frozenset(wanted)))
    return set(seen)


@lru_cache(maxsize=1)
def module_owners() -> dict[str, set[str]]:
    """Top-level importable name -> canonical names of the installed distributions providing it."""
    owners: dict[str, set[str]] = {}
    for mod, dists in md.packages_distributions().items():
        owners.setdefault(mod, set()).update(canonicalize_name(d) for d in dists)
    return owners


def provided_modules(dists: set[str]) -> set[str]:
    names = {m for m, owners in module_owners().items() if owners & dists}
    for d in dists:  # not installed here: assume the distribution's own name
        if _dist_requires(d) is None:
            names.add(d.replace("-", "_"))
        if d in SAME_MODULE:
            names |= provided_modules({SAME_MODULE[d]})
    return names


# -- what the code imports ------------------------------------------------------------------------------
def module_path(name: str) -> Path | None:
    for pkg, root in PACKAGES.items():
        if name == pkg or name.startswith(pkg + "."):
            rel = name[len(pkg):].lstrip(".").split(".") if name != pkg else []
            base = root.joinpath(*rel)
            if (base / "__init__.py").is_file():
                return base / "__init__.py"
            if base.with_suffix(".py").is_file():
                return base.with_suffix(".py")
            return None
    return None


def _catches_import_error(handler: ast.ExceptHandler) -> bool:
    names = []
    for t in ([handler.type] if not isinstance(handler.type, ast.Tuple) else handler.type.elts):
        if isinstance(t, ast.Name):
            names.append(t.id)
    return bool({"ImportError", "ModuleNotFoundError"} & set(names))


@cache
def scan(name: str) -> tuple[tuple[tuple[str, int, str], ...], tuple[str, ...]]:
    """(third-party imports as (top-level name, line, how), coalmine modules imported) of a module.

    ``how`` is "import" or "optional_import"; imports guarded by ``except ImportError`` and
    ``if TYPE_CHECKING:`` blocks are left out.
    """
    path = module_path(name)
    assert path is not None, name
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_pkg = path.name == "__init__.py"
    package = name if is_pkg else name.rsplit(".", 1)[0]
    third: list[tuple[str, int, str]] = []
    ours: set[str] = set()

    def absolute(mod: str | None, level: int) -> str:
        if level == 0:
            return mod or ""
        base = package.split(".")
        base = base[: len(base) - (level - 1)]
        return ".".join(base + ([mod] if mod else []))

    def note(full: str, lineno: int, how: str) -> None:
        if full.split(".")[0] == "coalmine":
            ours.add(full)
        elif full.split(".")[0] not in sys.stdlib_module_names and full != "__future__":
            third.append((full.split(".")[0], lineno, how))

    def visit(node: ast.AST, guarded: bool) -> None:
        if isinstance(node, ast.Try):
            catches = any(_catches_import_error(h) for h in node.handlers)
            for child in node.body:
                visit(child, guarded or catches)
            for child in [*node.handlers, *node.orelse, *node.finalbody]:
                visit(child, guarded)
            return
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child, guarded)
            return
        if isinstance(node, ast.If) and ast.unparse(node.test).startswith("sys.version_info"):
            # the branch this interpreter takes, as the requirement markers are evaluated for it
            taken = eval(compile(ast.Expression(node.test), str(path), "eval"), {"sys": sys})  # noqa: S307
            for child in node.body if taken else node.orelse:
                visit(child, guarded)
            return
        if isinstance(node, ast.Import) and not guarded:
            for a in node.names:
                note(a.name, node.lineno, "import")
        elif isinstance(node, ast.ImportFrom) and not guarded:
            base = absolute(node.module, node.level)
            note(base, node.lineno, "import")
            if base.startswith("coalmine"):
                for a in node.names:  # "from . import engine" imports a module
                    if module_path(f"{base}.{a.name}") is not None:
                        ours.add(f"{base}.{a.name}")
        elif isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) == "optional_import":
            for arg in node.args:
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    third.append((arg.value.split(".")[0], node.lineno, f"optional_import({arg.value!r})"))
                    break  # the first layout names the package; the others are its alternatives
        for child in ast.iter_child_nodes(node):
            visit(child, guarded)

    visit(tree, False)
    ours = {m for m in ours if module_path(m) is not None}
    return tuple(third), tuple(sorted(ours))


def reachable(entry: str) -> list[str]:
    """Every coalmine module ``entry`` can import, directly or through others (and their packages)."""
    seen: set[str] = set()
    todo = [entry]
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for k in range(2, len(parts) + 1):  # importing a.b.c imports a.b first
            m = ".".join(parts[:k])
            if m not in seen and module_path(m) is not None:
                seen.add(m)
                todo.append(m)
        todo += [m for m in scan(name)[1] if m not in seen]
    return sorted(seen)


def entry_module(command: str) -> str:
    return PYPROJECT["project"]["scripts"][command].split(":")[0]


def optional_extra(top: str) -> str | None:
    for module, (_, extra) in OPTIONAL.items():
        if module.split(".")[0] == top:
            return extra
    return None


def missing_imports(extras: frozenset[str], command: str) -> list[str]:
    allowed = provided_modules(requirement_set(extras))
    optional = OPTIONAL_FOR.get(command, set())
    bad = []
    for name in reachable(entry_module(command)):
        for top, line, how in scan(name)[0]:
            if top in allowed or optional_extra(top) in optional:
                continue
            where = module_path(name).relative_to(REPO)
            bad.append(f"{where}:{line} {how} {top}")
    return sorted(set(bad))


@pytest.mark.parametrize("extras,commands,line", LINES, ids=[ln for _, _, ln in LINES])
def test_every_import_of_the_commands_is_installed_by_the_line(extras, commands, line):
    for command in commands:
        assert missing_imports(extras, command) == [], f"{line}: {command} needs packages it does not install"


def test_the_static_check_sees_lazy_imports():
    """Without segmentation-models-pytorch in [export], coal-export would fail at run time (it
    rebuilds the U-Net to load model.pt); the check must say so from the import inside a function."""
    saved = PYPROJECT["project"]["optional-dependencies"]["export"]
    try:
        PYPROJECT["project"]["optional-dependencies"]["export"] = [
            r for r in saved if not r.startswith("segmentation-models-pytorch")]
        bad = missing_imports(frozenset({"cpu", "export"}), "coal-export")
    finally:
        PYPROJECT["project"]["optional-dependencies"]["export"] = saved
    assert any("train/model.py" in b and "segmentation_models_pytorch" in b for b in bad), bad


# -- the dynamic check ---------------------------------------------------------------------------------
BLOCKER = r"""
import importlib, importlib.abc, json, sys
cfg = json.loads(sys.argv[1])
blocked = set(cfg["blocked"])

class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in blocked:
            raise ModuleNotFoundError(f"No module named {name!r} (not installed by {cfg['line']})", name=name)
        return None

sys.meta_path.insert(0, Refuse())
for m in cfg["modules"]:
    importlib.import_module(m)
for command, entry in cfg["commands"].items():
    mod, fn = entry.split(":")
    main = getattr(importlib.import_module(mod), fn)
    try:
        main.main(["--help"], prog_name=command, standalone_mode=False)
    except SystemExit as exc:
        assert not exc.code, (command, exc.code)
bad = sorted(m for m in sys.modules if m.split(".")[0] in blocked)
print(json.dumps(bad))
"""


@pytest.mark.parametrize("extras,commands,line", LINES, ids=[ln for _, _, ln in LINES])
def test_the_commands_import_and_show_help_with_only_the_line_installed(extras, commands, line):
    dists = requirement_set(extras)
    absent = sorted(d for d in dists if _dist_requires(d) is None)
    allowed = provided_modules(dists)
    blocked = sorted({m for m in module_owners() if m not in allowed and m not in sys.stdlib_module_names
                      and m != "coalmine" and not m.startswith("_")})
    modules = sorted({m for c in commands for m in reachable(entry_module(c))})
    if absent:
        # e.g. onnxruntime-gpu or tensorrt on a machine without them: import only what needs nothing absent
        absent_mods = provided_modules(set(absent))
        modules = [m for m in modules if not {t for t, _, h in scan(m)[0] if h == "import"} & absent_mods]
    cfg = {"blocked": blocked, "modules": modules, "line": line,
           "commands": {c: PYPROJECT["project"]["scripts"][c] for c in commands}}
    out = subprocess.run([sys.executable, "-c", BLOCKER, json.dumps(cfg)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
