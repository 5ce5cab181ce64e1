"""Options across the commands: every ``--option`` that a message names exists.

Messages (refusals, warnings, hints) are found in the source as string literals: every
``--name`` in them must be an option of the command the message names just before it
(``coal-prepare --glcm-edges``), or else of at least one coalmine command. Options of other
tools (``dask worker --resources``) are attributed to that tool and left alone.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [ROOT / "runtime", ROOT / "train", ROOT / "export"]
#: ``--name`` not preceded by a word character or another dash.
OPTION = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
#: A command named in a message; for coalmine commands the group's subcommand counts too.
COMMAND = re.compile(r"\b(coal-[a-z]+(?: evaluate)?|dask [a-z]+|pip|projsync|gdal[a-z_.]*)\b")
#: Options that the Sentinel-1 GRD reader's messages name before the commands offer them
#: (allowed in that package only; they pass the check by themselves once a command has them).
NOT_YET_OFFERED = {"runtime/preprocess/s1grd/": {"--dem", "--orbit"}}


def commands() -> dict[str, click.Command]:
    from coalmine.export.cli import main as export_main
    from coalmine.runtime.cli.fetch import main as fetch_main
    from coalmine.runtime.cli.monitor import main as monitor_main
    from coalmine.runtime.cli.prepare import main as prepare_main
    from coalmine.runtime.cli.run import main as run_main
    from coalmine.train.cli import main as train_main
    from coalmine.train.demo import main as demo_main

    assert isinstance(train_main, click.Group)
    return {
        "coal-prepare": prepare_main, "coal-run": run_main, "coal-monitor": monitor_main,
        "coal-train": train_main.commands["train"], "coal-train evaluate": train_main.commands["evaluate"],
        "coal-export": export_main, "coal-demo": demo_main, "coal-fetch": fetch_main,
    }


def options_of(cmd: click.Command) -> set[str]:
    params = cmd.get_params(click.Context(cmd))  # with the help option
    return {o for p in params if isinstance(p, click.Option) for o in (*p.opts, *p.secondary_opts)}


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                ids.add(id(body[0].value))
    return ids


def message_strings() -> list[tuple[str, str]]:
    """(where, text) of every string literal and f-string of the package, docstrings excepted
    (those describe the code; the help texts of click options are included)."""
    found = []
    for root in SOURCES:
        for path in sorted(root.rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            docs = _docstrings(tree)
            inner = {id(v) for n in ast.walk(tree) if isinstance(n, ast.JoinedStr) for v in n.values}
            for node in ast.walk(tree):
                if isinstance(node, ast.JoinedStr):
                    text = "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
                elif (isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs
                      and id(node) not in inner):
                    text = node.value
                else:
                    continue
                if OPTION.search(text):
                    found.append((f"{path.relative_to(ROOT)}:{node.lineno}", text))
    return found


#: A clause ends here: an option after it is no longer the command's named before it.
CLAUSE_END = re.compile(r"[;,():—]")


def named_options(text: str) -> list[tuple[str | None, str]]:
    """(command or None, option) for each ``--option`` in ``text``: the command named before it
    in the same clause ("re-run coal-prepare with --bundle"), else None."""
    out = []
    for m in OPTION.finditer(text):
        before = list(COMMAND.finditer(text, 0, m.start()))
        cmd = before[-1] if before else None
        if cmd is not None and CLAUSE_END.search(text, cmd.end(), m.start()):
            cmd = None
        out.append((cmd.group(1) if cmd else None, m.group()))
    return out


def test_the_scan_finds_messages_and_attributes_options() -> None:
    assert named_options("prepare it again with coal-prepare --glcm-edges b or --db-range; or pass --s1") == [
        ("coal-prepare", "--glcm-edges"), ("coal-prepare", "--db-range"), (None, "--s1")]
    assert named_options("re-run coal-prepare with --bundle b") == [("coal-prepare", "--bundle")]
    assert named_options("start them with 'dask worker ADDRESS --resources GPU=1'") == [
        ("dask worker", "--resources")]
    texts = [t for _, t in message_strings()]
    assert any("--glcm-edges" in t for t in texts) and len(texts) > 50


def test_every_option_a_message_names_exists() -> None:
    cmds = commands()
    every = set().union(*(options_of(c) for c in cmds.values()))
    wrong = []
    for where, text in message_strings():
        for cmd, opt in named_options(text):
            if cmd is None:
                ok = opt in every or any(where.startswith(p) and opt in o for p, o in NOT_YET_OFFERED.items())
            elif cmd in cmds:
                ok = opt in options_of(cmds[cmd])
            else:
                ok = True  # another tool's option
            if not ok:
                wrong.append(f"{where}: {cmd or 'any command'} has no {opt}: {text!r}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("name", ["coal-prepare", "coal-run", "coal-monitor", "coal-train",
                                  "coal-train evaluate", "coal-export", "coal-demo", "coal-fetch"])
def test_every_command_shows_help_with_its_options(name) -> None:
    cmd = commands()[name]
    r = CliRunner().invoke(cmd, ["--help"])
    assert r.exit_code == 0, r.output
    for opt in options_of(cmd):
        if opt.startswith("--"):
            assert opt in r.output, opt
