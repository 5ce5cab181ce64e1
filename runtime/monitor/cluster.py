"""Run the monitor's scenes as Dask tasks: ``coal-monitor CONFIG.toml --scheduler ADDRESS``.

:class:`DaskExecutor` is the distributed twin of :class:`~.pipeline.LocalExecutor`: it runs
the same :func:`~.pipeline.process_scene` on Dask workers and hands each result back to the
coordinator (:func:`~.scheduler.run_monitor`), which alone writes the ledger. So the ledger's
guarantees (nothing lost, nothing counted twice, resume after a kill) hold unchanged: a
result counts only for the attempt token the coordinator registered.

What the executor adds:

- where: a scheduler address (``tcp://host:8786``), a scheduler file written by
  ``dask scheduler --scheduler-file`` (usual on Slurm), or ``local:N`` for a
  ``distributed.LocalCluster`` of N single-threaded worker processes on this machine;
- bounded work in flight: scenes are pulled from the coordinator's lazy iterable (which marks
  each one ``running`` as it is pulled) only as fast as workers free up;
- retries: a worker that dies mid-task is replaced and the task rescheduled by Dask itself
  (up to ``distributed.scheduler.allowed-failures``, then ``KilledWorker``); a task that
  raises is resubmitted up to ``retries`` times unless its error is about the input or the
  configuration (those would fail again); after that the error is reported and the
  coordinator records that scene failed while the others go on;
- GPUs: a task that will run on a GPU backend asks for the worker resource ``{"GPU": 1}``,
  so a worker started with ``dask worker ADDRESS --resources GPU=1`` runs one scene at a
  time on its GPU; when the cluster also has preprocessing workers (started with
  ``--resources CPU=1``), a raw scene's preprocessing (``coal-prepare``: S1 warp, speckle
  filter, GLCM) runs there first as its own task, and the GPU task maps the prepared stack,
  so GPUs do not wait on the CPU work;
- shared storage: tasks carry absolute paths only, the workers are checked to see the
  bundle, AOIs and output folder, and every result's mask must be visible to the
  coordinator before it is accepted;
- one attempt per scene folder at a time: a task holds an exclusive lock on its scene's lock
  file (``scenes/.locks/``) while it runs, so an attempt abandoned by a killed coordinator
  that is still running on a long-lived cluster finishes (or fails) before the new run's
  attempt starts, and the folder the ledger registers is the one written last.

dask and distributed are imported only here and only when a cluster is asked for, so
``coalmine.runtime`` works without them (``pip install "coalmine[cluster]"`` adds them).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._optional import optional_import
from ..backends import GPU_KINDS
from ..errors import (
    CoalmineError,
    ConfigError,
    InputError,
    OutputError,
    UsageError,
)
from .pipeline import SceneResult, SceneTask

if TYPE_CHECKING:
    from .config import MonitorConfig

log = logging.getLogger("coalmine.monitor")

#: Backends that need a GPU (from the backend registry); their tasks ask for one ``GPU`` worker resource.
GPU_BACKENDS = GPU_KINDS

#: Errors that would fail the same way on any worker: reported at once, not retried.
PERMANENT_ERRORS: tuple[type[BaseException], ...] = (InputError, UsageError)

DEFAULT_RETRIES = 2
DEFAULT_CONNECT_TIMEOUT = 30.0


class SchedulerUnavailableError(CoalmineError, ConnectionError):
    """No Dask scheduler answers at the given address (exit code 1)."""


class WorkerLostError(CoalmineError, RuntimeError):
    """The workers running a scene kept dying (Dask's ``KilledWorker``)."""


@dataclass(frozen=True)
class SchedulerAddress:
    """A parsed ``--scheduler`` value: ``kind`` is "local", "file" or "address"."""

    kind: str
    value: str
    n_workers: int = 0


def parse_scheduler(text: str, base: Path | None = None, label: str = "--scheduler") -> SchedulerAddress:
    """Parse a ``--scheduler`` value.

    Args:
        text: ``local`` or ``local:N`` (a LocalCluster of N worker processes, default 2),
            ``tcp://host:port`` / ``tls://host:port`` / ``host:port`` (a running scheduler),
            or the path of a scheduler JSON file (``dask scheduler --scheduler-file``).
        base: folder that a relative scheduler-file path is relative to (the config's).
        label: how messages name the value (the option or the config key).

    Returns:
        A :class:`SchedulerAddress`.

    Raises:
        UsageError: an empty value, ``local:`` with a count that is not a positive whole
            number, the dashboard's ``http://`` address, or an unknown scheme.

    Example:
        >>> parse_scheduler("local:4")
        SchedulerAddress(kind='local', value='local:4', n_workers=4)
        >>> parse_scheduler("10.0.0.5:8786").value
        'tcp://10.0.0.5:8786'
    """
    t = (text or "").strip()
    if not t:
        raise UsageError(f"{label} is empty; give tcp://HOST:8786, a scheduler JSON file, or local:N")
    if t == "local" or t.startswith("local:"):
        n = t.partition(":")[2] or "2"
        if not n.isdigit() or int(n) < 1:
            raise UsageError(
                f"{label} {t!r}: the number of local workers must be a whole number >= 1, e.g. local:2"
            )
        return SchedulerAddress("local", t, int(n))
    scheme, sep, rest = t.partition("://")
    if sep:
        if scheme in ("http", "https"):
            raise UsageError(
                f"{label} {t!r} looks like the Dask dashboard (a web page); give the scheduler's "
                f"own address instead, usually tcp://{rest.split(':')[0].rstrip('/')}:8786"
            )
        if scheme not in ("tcp", "tls", "ws", "wss", "inproc", "ucx"):
            raise UsageError(f"{label} {t!r}: unknown scheme '{scheme}://'; use tcp://HOST:PORT or tls://HOST:PORT")
        return SchedulerAddress("address", t)
    if t.endswith(".json") or os.sep in t:
        p = Path(t).expanduser()
        if not p.is_absolute() and base is not None:
            p = base / p
        if not p.is_file():
            raise UsageError(
                f"{label} {t!r}: scheduler file {p} does not exist; start the scheduler with "
                "'dask scheduler --scheduler-file PATH' on shared storage, or give tcp://HOST:PORT"
            )
        return SchedulerAddress("file", str(p))
    host, sep, port = t.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise UsageError(f"{label} {t!r} is not an address; use tcp://HOST:PORT (e.g. tcp://10.0.0.5:8786) or local:N")
    return SchedulerAddress("address", f"tcp://{t}")


class DaskExecutor:
    """Runs :func:`~.pipeline.process_scene` over tasks on a Dask cluster.

    Connects on :meth:`connect` (or the first :meth:`run`; also a context manager) and yields
    ``(task, result or exception)`` as tasks finish, in completion order.

    Args:
        scheduler: see :func:`parse_scheduler`.
        retries: extra attempts for a task that raised a transient error (lost workers are
            rescheduled by Dask itself and do not count here).
        max_in_flight: scenes submitted at once; 0 = one per worker thread (per GPU when
            tasks ask for GPUs) plus one queued per worker.
        gpu: "auto" (ask ``{"GPU": 1}`` for GPU backends, and for ``backend = "auto"`` when
            any worker advertises a GPU), True (always) or False (never).
        connect_timeout: seconds to wait for the scheduler.
        prepare_on_cpu: for GPU tasks on raw inputs, run the preprocessing as a separate task
            on the workers that advertise the ``CPU`` resource, when there are any.
        base: folder a relative scheduler file is relative to.
        label: how messages name the address (``--scheduler`` or ``cluster.scheduler``).

    Raises:
        UsageError: a malformed address or an out-of-range setting (at construction).
        MissingDependencyError: distributed is not installed, with the pip command (on connect).
        SchedulerUnavailableError: nothing answers at the address (on connect).

    Example:
        >>> with DaskExecutor("local:2") as ex:                       # doctest: +SKIP
        ...     summary = run_monitor(load_config("monitor.toml"), executor=ex)
    """

    name = "dask"

    def __init__(
        self,
        scheduler: str,
        *,
        retries: int = DEFAULT_RETRIES,
        max_in_flight: int = 0,
        gpu: bool | str = "auto",
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        prepare_on_cpu: bool = True,
        base: Path | None = None,
        label: str = "--scheduler",
    ) -> None:
        self.address = parse_scheduler(scheduler, base, label)
        self.label = label
        if retries < 0:
            raise UsageError(f"cluster retries must be >= 0, got {retries}")
        if max_in_flight < 0:
            raise UsageError(f"cluster max_in_flight must be >= 0 (0 = automatic), got {max_in_flight}")
        if gpu not in ("auto", True, False):
            raise UsageError(f"cluster gpu must be \"auto\", true or false, got {gpu!r}")
        if connect_timeout <= 0:
            raise UsageError(f"cluster connect_timeout must be > 0 seconds, got {connect_timeout}")
        self.retries = retries
        self.max_in_flight = max_in_flight
        self.gpu = gpu
        self.connect_timeout = float(connect_timeout)
        self.prepare_on_cpu = bool(prepare_on_cpu)
        self.client: Any = None
        self._cluster: Any = None
        self._checked: set[tuple[str, ...]] = set()

    # -- connection -------------------------------------------------------------------------

    def connect(self) -> DaskExecutor:
        """Start the LocalCluster or connect to the scheduler (idempotent)."""
        if self.client is not None:
            return self
        distributed = _import_distributed()
        a = self.address
        try:
            if a.kind == "local":
                self._cluster = distributed.LocalCluster(
                    n_workers=a.n_workers, threads_per_worker=1, processes=True,
                    dashboard_address=":0",  # a free port: never clash with another cluster
                )
                self.client = distributed.Client(self._cluster, timeout=self.connect_timeout)
            elif a.kind == "file":
                self.client = distributed.Client(scheduler_file=a.value, timeout=self.connect_timeout)
            else:
                self.client = distributed.Client(a.value, timeout=self.connect_timeout)
        except (OSError, TimeoutError) as exc:
            self.close()
            raise SchedulerUnavailableError(
                f"{self.label} {a.value}: no Dask scheduler answered within {self.connect_timeout:g} s "
                f"({_first_line(exc)}); start one with 'dask scheduler' and pass the address it prints "
                "(tcp://HOST:8786), or use local:N"
            ) from exc
        except ValueError as exc:  # distributed's own address parser
            self.close()
            raise UsageError(f"{self.label} {a.value} is not a Dask scheduler address ({_first_line(exc)})") from exc
        log.info(
            "Dask scheduler %s: %d worker(s)%s", self.client.scheduler.address, len(_workers(self.client)),
            f", dashboard {self.client.dashboard_link}" if a.kind == "local" and self._has_dashboard() else "",
        )
        return self

    def _has_dashboard(self) -> bool:
        return importlib.util.find_spec("bokeh") is not None

    def close(self) -> None:
        """Disconnect; a LocalCluster started here is shut down."""
        for obj in (self.client, self._cluster):
            if obj is not None:
                with contextlib.suppress(Exception):
                    obj.close()
        self.client = self._cluster = None

    def __enter__(self) -> DaskExecutor:
        return self.connect()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- running ----------------------------------------------------------------------------

    def run(
        self, fn: Callable[[SceneTask], SceneResult], tasks: Iterable[SceneTask]
    ) -> Iterator[tuple[SceneTask, SceneResult | BaseException]]:
        """Submit ``fn(task)`` for each task (pulled lazily), yield results as they complete.

        Raises:
            UsageError: a task carries a relative path (workers could not resolve it), or
                tasks need GPUs and none of the connected workers has the ``GPU`` resource.
            OutputError: the workers cannot see the bundle, AOIs or output folder (no
                shared storage).
        """
        self.connect()
        from distributed import as_completed

        workers = _workers(self.client)
        has_gpu = any(_gpus(w) > 0 for w in workers.values())
        # Workers offering preprocessing slots; a resource (not an address list) survives restarts.
        cpu_workers = any(float((w.get("resources") or {}).get("CPU", 0)) > 0 for w in workers.values())
        source = iter(tasks)
        inflight: dict[Any, tuple[SceneTask, int]] = {}
        stacks: dict[str, Path] = {}
        ac = as_completed(loop=self.client.loop)  # not the default client's: another may be newer
        limit = self.max_in_flight or 1  # until the first task says whether scenes use GPUs

        def submit(task: SceneTask, attempt: int) -> None:
            res = task_resources(task, self.gpu, has_gpu)
            key = f"{Path(task.scene).name}-{task.token}-{attempt}"
            if res and task.s1 is not None and cpu_workers and self.prepare_on_cpu:
                # A temporary name the monitor's start-up clean-up removes if we are killed.
                stack = Path(task.out_dir).parent / f".{Path(task.out_dir).name}.partial-stack-{task.token}-{attempt}.tif"
                stacks[task.key] = stack
                prep = self.client.submit(
                    prepare_stack, task, str(stack), key=f"coal-prepare-{key}", pure=False, resources={"CPU": 1}
                )
                fut = self.client.submit(process_prepared, fn, task, prep, key=f"coal-scene-{key}", pure=False,
                                         resources=res)
            else:
                fut = self.client.submit(run_exclusive, fn, task, key=f"coal-scene-{key}", pure=False,
                                         resources=res)
            inflight[fut] = (task, attempt)
            ac.add(fut)

        def pull() -> bool:
            nonlocal limit
            task = next(source, None)
            if task is None:
                return False
            check_task_paths(task)
            self._check_workers_see(task)
            wants_gpu = bool(task_resources(task, self.gpu, has_gpu))
            if not self.max_in_flight:
                limit = default_in_flight(workers, wants_gpu)
            if wants_gpu and not has_gpu and workers:
                raise UsageError(
                    f"run.backend = {task.options.get('backend', 'auto')!r} (or cluster gpu = true) needs GPU "
                    f"workers but none of the {len(workers)} worker(s) at {self.client.scheduler.address} "
                    "advertises one; start them with 'dask worker ADDRESS --resources GPU=1' (one per GPU)"
                )
            submit(task, 0)
            return True

        try:
            while len(inflight) < limit and pull():
                pass
            for fut in ac:
                task, attempt = inflight.pop(fut)
                stack = stacks.pop(task.key, None)
                if stack is not None:  # the prepared stack was only a hand-over between two tasks
                    stack.unlink(missing_ok=True)
                try:
                    res = fut.result()
                except Exception as exc:
                    if attempt < self.retries and not isinstance(exc, PERMANENT_ERRORS) and not _killed(exc):
                        log.warning(
                            "%s %s: attempt %d failed (%s); retrying (%d left)", task.date,
                            Path(task.scene).name, attempt + 1, _first_line(exc), self.retries - attempt,
                        )
                        submit(task, attempt + 1)
                        continue
                    if attempt:
                        log.warning("%s %s: giving up after %d attempts", task.date, Path(task.scene).name,
                                    attempt + 1)
                    yield task, _reported(exc)
                else:
                    yield task, _visible(res)
                while len(inflight) < limit and pull():
                    pass
        finally:
            if inflight:  # the coordinator stopped early (error, Ctrl-C): drop queued work
                with contextlib.suppress(Exception):
                    self.client.cancel(list(inflight))

    def _check_workers_see(self, task: SceneTask) -> None:
        """Fail early, with the fix, when workers do not share the coordinator's storage."""
        out_root = str(Path(task.out_dir).parent.parent)
        paths = tuple(p for p in (task.bundle, task.aois, out_root) if p)
        if paths in self._checked:
            return
        seen = self.client.run(_missing_paths, paths)
        bad = {w: m for w, m in seen.items() if m}
        if bad:
            w, missing = next(iter(sorted(bad.items())))
            raise OutputError(
                f"Dask worker {w} cannot see {missing[0]}"
                + (f" (nor {len(missing) - 1} more path(s))" if len(missing) > 1 else "")
                + f"; {len(bad)} of {len(seen)} worker(s) lack it. Workers read inputs and write outputs "
                "on shared storage at the same absolute paths as this machine: mount the bundle, AOIs, "
                "scenes and output folder there (NFS, Lustre, ...)"
            )
        self._checked.add(paths)


def prepare_stack(task: SceneTask, stack: str) -> str:
    """Worker side (CPU): write the 23-band stack of a raw scene with the bundle's preprocessing.

    Returns:
        ``stack``, for :func:`process_prepared`.
    """
    from ..bundle import load_bundle
    from ..options import RunOptions
    from ..preprocess import prepare_scene

    inputs = RunOptions.build(**task.options).inputs  # what the raw inputs are, as run_scene reads them
    prepare_scene(task.scene, task.s1, stack, load_bundle(task.bundle).preprocessing, progress=False,
                  **inputs.reader_args())
    return stack


def process_prepared(fn: Callable[[SceneTask], SceneResult], task: SceneTask, stack: str) -> SceneResult:
    """Worker side (GPU): ``fn`` (:func:`~.pipeline.process_scene`) on the prepared stack.

    The stack holds exactly what the raw inputs would give (the preprocessing is
    window-exact), so the result equals mapping the raw scene. (The scene's summary JSON
    names the temporary stack as its input; the ledger keeps the raw input's path.)
    """
    return run_exclusive(fn, dataclasses.replace(task, scene=stack, s1=None))


def run_exclusive(fn: Callable[[SceneTask], SceneResult], task: SceneTask) -> SceneResult:
    """Worker side: ``fn(task)`` while holding the scene folder's lock (see the module doc).

    The lock is ``flock`` on ``<output>/scenes/.locks/<folder>.lock`` (NFSv4 and most cluster
    file systems honour it across machines; Lustre needs the ``flock`` mount option). Where
    ``fcntl`` does not exist (Windows workers) the task runs unlocked.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        return fn(task)
    locks = Path(task.out_dir).parent / ".locks"
    locks.mkdir(parents=True, exist_ok=True)
    with open(locks / f"{Path(task.out_dir).name}.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)  # waits while an abandoned attempt at this scene still runs
        try:
            return fn(task)
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def task_resources(task: SceneTask, gpu: bool | str, cluster_has_gpu: bool) -> dict[str, float]:
    """The Dask worker resources a scene's task asks for: ``{"GPU": 1}`` or nothing.

    Example:
        >>> t = SceneTask(key="k", scene="/s.tif", date="2019-07-14", bundle="/b", out_dir="/o/scenes/x",
        ...               prefix="x", token="t", options={"backend": "tensorrt"})
        >>> task_resources(t, "auto", cluster_has_gpu=True)
        {'GPU': 1}
    """
    if gpu is True:
        return {"GPU": 1}
    if gpu is False:
        return {}
    backend = str(task.options.get("backend", "auto"))
    if backend in GPU_BACKENDS or (backend == "auto" and cluster_has_gpu):
        return {"GPU": 1}
    return {}


def default_in_flight(workers: dict[str, Any], gpu: bool) -> int:
    """Scenes to keep submitted: a slot per worker thread (per GPU) plus one queued per worker."""
    if not workers:
        return 2
    if gpu:
        slots = sum(int(_gpus(w)) for w in workers.values())
    else:
        slots = sum(int(w.get("nthreads", 1)) for w in workers.values())
    return max(1, slots) + len(workers)


def check_task_paths(task: SceneTask) -> None:
    """Refuse relative paths: a worker's working folder is not the coordinator's.

    Raises:
        UsageError: naming the field and the path.
    """
    for name in ("scene", "bundle", "out_dir", "aois", "s1"):
        v = getattr(task, name)
        if v is not None and not os.path.isabs(str(v)):
            raise UsageError(
                f"scene task {task.key}: {name} path {v!r} is relative; Dask workers need absolute paths "
                "on shared storage (load the configuration with load_config, which resolves them)"
            )


def executor_from_config(cfg: MonitorConfig, scheduler: str | None = None) -> DaskExecutor | None:
    """The executor asked for by ``--scheduler`` or the config's ``[cluster]`` table, or None.

    ``--scheduler`` overrides ``cluster.scheduler``; the other ``[cluster]`` keys
    (``retries``, ``max_in_flight``, ``gpu``, ``connect_timeout``) apply either way.

    Without a scheduler in either place the monitor runs locally (None), so a ``[cluster]``
    table may keep its settings for the runs that pass ``--scheduler``.

    Raises:
        ConfigError: a ``[cluster]`` value out of range or a bad ``cluster.scheduler``.
        UsageError: a bad ``--scheduler``.
    """
    opts = dict(getattr(cfg, "cluster", None) or {})
    from_config = opts.pop("scheduler", None)
    address = scheduler or from_config
    if address is None:
        return None
    if scheduler:  # a bad --scheduler is the option's fault: plain UsageError, named as such
        parse_scheduler(scheduler, Path.cwd())
        label, base = "--scheduler", Path.cwd()
    else:
        label, base = "cluster.scheduler", cfg.source.parent
    try:
        return DaskExecutor(address, base=base, label=label, **opts)
    except UsageError as exc:
        raise ConfigError(f"{cfg.source}: [cluster] {exc}") from exc


@contextlib.contextmanager
def open_executor(
    cfg: MonitorConfig, scheduler: str | None = None, *, dry_run: bool = False
) -> Iterator[DaskExecutor | None]:
    """Context manager for the CLI: a connected :class:`DaskExecutor`, or None for the local path.

    The settings are validated even for a dry run, which does not connect (it processes nothing).
    """
    ex = executor_from_config(cfg, scheduler)
    if ex is None or dry_run:
        yield None
        return
    with ex:
        yield ex


# -- helpers -------------------------------------------------------------------------------------


def _import_distributed() -> Any:
    return optional_import("distributed", purpose="running coal-monitor on a Dask cluster (--scheduler / [cluster])")


def _workers(client: Any) -> dict[str, Any]:
    """Every worker's info (older distributed returned only 5 unless asked for all)."""
    try:
        info = client.scheduler_info(n_workers=-1)
    except TypeError:  # distributed before the n_workers argument
        info = client.scheduler_info()
    return dict(info.get("workers", {}))


def _gpus(worker: dict[str, Any]) -> float:
    return float((worker.get("resources") or {}).get("GPU", 0))


def _missing_paths(paths: tuple[str, ...]) -> list[str]:
    """Run on each worker: which of ``paths`` it cannot see."""
    return [p for p in paths if not os.path.exists(p)]


def _killed(exc: BaseException) -> bool:
    return type(exc).__name__ == "KilledWorker"


def _reported(exc: BaseException) -> BaseException:
    """The error the coordinator records: lost workers explained, the rest as raised."""
    if _killed(exc):
        return WorkerLostError(
            "the Dask workers running this scene died repeatedly (KilledWorker after "
            "distributed.scheduler.allowed-failures); the scene may need more memory than a worker has: "
            "give workers more memory or lower run.tile / run.batch_size"
        )
    return exc


def _visible(res: SceneResult) -> SceneResult | BaseException:
    """Accept a worker's result only when its mask is visible here (shared storage)."""
    mask = Path(res.out_dir) / res.outputs.get("mask", "")
    if res.no_data or (res.outputs.get("mask") and mask.is_file()):  # a no-data scene has no mask
        return res
    return OutputError(
        f"a Dask worker wrote {mask} but this coordinator cannot see it; workers and coordinator need "
        "the output folder on shared storage at the same absolute path"
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
