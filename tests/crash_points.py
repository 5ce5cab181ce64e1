"""Pause points for the SIGKILL crash tests, installed from outside the production code.

A test starts coal-monitor in a subprocess with ``COALMINE_CRASH_AT=phase:n`` and
``COALMINE_CRASH_MARKER=file`` in the environment and this folder on ``PYTHONPATH``:

- the coordinator runs ``python -c "import crash_points; crash_points.install(); <cli main>"``
  (see :data:`COORDINATOR`);
- Dask workers of a LocalCluster load it as a worker preload
  (``DASK_DISTRIBUTED__WORKER__PRELOAD='["crash_points"]'``: Dask calls :func:`dask_setup`).

:func:`install` wraps the function that runs at the chosen moment; at its n-th call the wrapper
writes the marker file and sleeps, so the test can SIGKILL the process there:

``before_run``     ``coalmine.runtime.run.run_scene`` — inside a scene, before mapping
                   (the scene's temporary folder exists, nothing is in it yet);
``before_rename``  ``_io.replace_folder`` — a scene's outputs are complete in its temporary
                   folder, not yet renamed;
``before_commit``  ``Ledger.complete`` — the outputs are in place, the ledger transaction
                   that registers them has not begun.
"""

from __future__ import annotations

import functools
import os
import time
from pathlib import Path
from typing import Any

#: The coordinator's command line (then the coal-monitor arguments).
COORDINATOR = "import crash_points; crash_points.install(); from coalmine.runtime.cli.monitor import main; main()"


def env(phase: str, marker: Path, seconds: float = 120.0) -> dict[str, str]:
    """The environment variables that make :func:`install` pause at ``phase`` (``name:n``)."""
    return {
        "COALMINE_CRASH_AT": phase,
        "COALMINE_CRASH_MARKER": str(marker),
        "COALMINE_CRASH_SLEEP": str(seconds),
        "PYTHONPATH": os.pathsep.join(p for p in (str(Path(__file__).parent), os.environ.get("PYTHONPATH")) if p),
    }


def install() -> None:
    """Wrap the function of the phase named by ``COALMINE_CRASH_AT``; nothing when it is unset."""
    spec = os.environ.get("COALMINE_CRASH_AT")
    if not spec:
        return
    phase, _, nth = spec.partition(":")
    if phase == "before_run":
        import coalmine.runtime.run as owner

        name = "run_scene"
    elif phase == "before_rename":
        import coalmine.runtime._io as owner

        name = "replace_folder"
    elif phase == "before_commit":
        from coalmine.runtime.monitor.ledger import Ledger as owner

        name = "complete"
    else:
        raise ValueError(f"unknown crash phase {phase!r}")
    original = getattr(owner, name)
    calls = [0]

    @functools.wraps(original)
    def paused(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] == int(nth or 1):
            Path(os.environ["COALMINE_CRASH_MARKER"]).write_text(phase)
            time.sleep(float(os.environ.get("COALMINE_CRASH_SLEEP", "120")))
        return original(*args, **kwargs)

    setattr(owner, name, paused)


def dask_setup(worker: Any) -> None:
    """Dask's worker preload hook."""
    install()
