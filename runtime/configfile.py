"""Reading TOML configuration files: one loader and one vocabulary for coal-monitor and coal-train.

Both configurations are read with :func:`read_toml` and checked with the helpers here, so they
behave alike:

* a key the configuration does not know is refused by name (a typo never silently changes what
  is done), and so is a value of the wrong type, naming the key and the file;
* paths are relative to the configuration file's folder; ``~`` is the home folder, and
  environment variables (``$DATA`` or ``${DATA}``) are expanded. A variable that is not set
  is refused, naming it: it never turns into a folder called ``$DATA``;
* scenes are listed as ``[[scenes]]`` tables (:mod:`coalmine.runtime.scenes`).

``tomllib`` (Python 3.11) or its back-port ``tomli`` parses the file; what is written here is
only the checking that a schema needs and TOML leaves to the reader.

Example:
    >>> raw, src = read_toml("monitor.toml", "coal-monitor configuration")   # doctest: +SKIP
    >>> expand_path("$DATA/s2", src.parent, src, "folder")                  # doctest: +SKIP
    PosixPath('/mnt/data/s2')
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .errors import ConfigError, InputNotFoundError

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, published as tomli
    import tomli as tomllib

log = logging.getLogger("coalmine.config")

#: ``$NAME`` or ``${NAME}`` in a path.
_ENV_VAR = re.compile(r"\$(?:\{(?P<braced>[^}]*)\}|(?P<plain>[A-Za-z_][A-Za-z0-9_]*))")


def read_toml(path: str | os.PathLike[str], what: str) -> tuple[dict[str, Any], Path]:
    """Parse a TOML file; return its content and its absolute path.

    Args:
        path: the file.
        what: what the file is, for messages ("coal-monitor configuration").

    Raises:
        InputNotFoundError: the file does not exist.
        ConfigError: it is not valid TOML (or not UTF-8).
    """
    src = Path(path).expanduser().absolute()
    if not src.is_file():
        raise InputNotFoundError(f"{what} {src} does not exist; pass the path of your TOML file")
    try:
        with open(src, "rb") as f:
            return tomllib.load(f), src
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{src} is not valid TOML ({exc}); fix the syntax at that line") from exc


def refuse_unknown(table: dict[str, Any], known: Iterable[str], src: Path, where: str = "") -> None:
    """Refuse the keys of ``table`` that are not ``known``, naming the first and listing the known.

    ``where`` is the table's place (``"run"``, ``"scenes[2]"``; empty for the top level).
    """
    known = set(known)
    unknown = sorted(set(table) - known)
    if unknown:
        raise ConfigError(
            f"{src}: unknown key '{where + '.' if where else ''}{unknown[0]}'"
            + (f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else "")
            + f"; known keys{' in ' + where if where else ''}: {', '.join(sorted(known))}"
        )


def typed(table: dict[str, Any], key: str, types: type | tuple[type, ...], src: Path, where: str = "",
          default: Any = None) -> Any:
    """``table[key]`` (or ``default`` when absent), refused unless of one of ``types``.

    A TOML boolean is refused where ``bool`` is not among ``types`` (``bool`` is an ``int``
    to Python), and a whole number is accepted where ``float`` is.
    """
    if key not in table:
        return default
    v = table[key]
    kinds = types if isinstance(types, tuple) else (types,)
    accept = (*kinds, int) if float in kinds else kinds
    if (isinstance(v, bool) and bool not in kinds) or not isinstance(v, accept):
        want = " or ".join(_TYPE_WORDS.get(t, t.__name__) for t in kinds)
        raise ConfigError(f"{src}: {where + '.' if where else ''}{key} must be {want}, got {v!r}")
    return v


_TYPE_WORDS = {str: "a string", int: "a whole number", float: "a number", bool: "true or false",
               dict: "a table", list: "an array"}


def expand_path(value: Any, base: Path, src: Path, key: str) -> Path:
    """A path from a configuration: ``~`` and environment variables expanded, relative to ``base``.

    Raises:
        ConfigError: ``value`` is not a non-empty string, or names an environment variable
            that is not set (naming it, the key and the file).
    """
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{src}: {key} must be a path string, got {value!r}")
    unset = [m.group("braced") if m.group("braced") is not None else m.group("plain")
             for m in _ENV_VAR.finditer(value)]
    unset = [name for name in unset if name not in os.environ]
    if unset:
        raise ConfigError(
            f"{src}: {key} = {value!r} uses the environment variable ${unset[0]}, which is not set; "
            "set it before running, or write the path out")
    p = Path(os.path.expandvars(value)).expanduser()
    return p if p.is_absolute() else base / p


def tables(raw: dict[str, Any], key: str, src: Path, old: str | None = None) -> list[dict[str, Any]]:
    """The array of tables ``[[key]]`` (empty when absent); ``[[old]]`` is read as the same with
    a warning naming the new spelling (never both).

    Raises:
        ConfigError: the value is not an array of tables, or both spellings are used.
    """
    if old is not None and old in raw:
        if key in raw:
            raise ConfigError(f"{src}: both [[{key}]] and [[{old}]] are given; write every entry as [[{key}]]")
        log.warning("%s: [[%s]] is the old spelling of [[%s]]; it is read the same, but write [[%s]]",
                    src, old, key, key)
        key, value = old, raw[old]
    else:
        value = raw.get(key, [])
    if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
        raise ConfigError(f"{src}: '{key}' must be an array of tables ([[{key}]])")
    return value
