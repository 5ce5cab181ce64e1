"""coal-monitor on Dask: the same scenes through a LocalCluster of 2 worker processes.

One LocalCluster (2 single-threaded worker processes) serves the module; the executor reaches
it by its address, as it would a remote scheduler. Checked: results identical to the local
run (real run_scene, tiny ONNX bundle, synthetic raw scenes), a worker killed mid-task (the
scene is rescheduled and the ledger is still exact), a task that always raises (failed with
its error after the bounded retries, the others done), shared-storage and path checks, GPU
resources, and every refusal (bad address, missing distributed, bad [cluster] values).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import crash_points
import distributed  # the [cluster] extra, which the test command installs
import pytest
from click.testing import CliRunner
from coalmine.runtime.errors import (
    ConfigError,
    InputError,
    MissingDependencyError,
    OutputError,
    UsageError,
)
from coalmine.runtime.monitor import SceneResult, SceneTask, load_config, process_scene, run_monitor
from coalmine.runtime.monitor.cluster import (
    DaskExecutor,
    SchedulerUnavailableError,
    check_task_paths,
    default_in_flight,
    executor_from_config,
    parse_scheduler,
    task_resources,
)
from factories import make_tiny_bundle
from test_monitor_data import (
    ledger_state,
    make_mask_project,
    oracle_run_scene,
    report_tables,
    synth_config,
    write_aois,
    write_config,
)


@pytest.fixture(scope="module")
def cluster():
    """One LocalCluster of 2 worker processes (1 thread each) for the whole module."""
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
    ) as lc:
        yield lc


@pytest.fixture(scope="module")
def address(cluster) -> str:
    return cluster.scheduler_address


# -- runners used on the workers (module-level so workers import them by name) -------------------


def _marks(bundle: Any) -> Path:
    d = Path(bundle).parent / "marks"
    d.mkdir(exist_ok=True)
    return d


def kill_once_runner(scene: Any, bundle: Any, out_dir: Any, **kw: Any) -> dict[str, Any]:
    """The oracle runner, except that the first attempt at the 2017-07-15 scene kills its own
    worker process mid-task (after writing part of its output), like a power cut or OOM kill."""
    if "20170715" in Path(scene).name:
        marker = _marks(bundle) / "killed"
        if not marker.exists():
            marker.write_text(str(os.getpid()))
            (Path(out_dir) / "half_written.tmp").write_bytes(b"\0" * 1000)
            os._exit(1)
    return oracle_run_scene(scene, bundle, out_dir, **kw)


def failing_runner(scene: Any, bundle: Any, out_dir: Any, **kw: Any) -> dict[str, Any]:
    """2018-07-15 always raises a transient-looking error, 2019-07-15 an input error; each
    attempt is logged so the test can count them."""
    name = Path(scene).name
    if "20180715" in name or "20190715" in name:
        with open(_marks(bundle) / f"{name}.attempts", "a") as f:
            f.write(f"{os.getpid()}\n")
        if "20180715" in name:
            raise RuntimeError(f"GPU fell off the bus while mapping {name}")
        raise InputError(f"{name}: band B04 is all nodata; check the input")
    return oracle_run_scene(scene, bundle, out_dir, **kw)


def fake_scene(task: SceneTask) -> SceneResult:
    """A stand-in for process_scene: writes a mask file, sleeps a little, returns a result."""
    import time

    out = Path(task.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "m.tif").write_bytes(b"x")
    time.sleep(0.2)
    return SceneResult(key=task.key, token=task.token, out_dir=str(out), outputs={"mask": "m.tif"},
                       areas_ha={"total": 0.0, "aois": {}}, nodata_share=0.0, backend="fake", timings={},
                       seconds=0.2)


def stamped_scene(task: SceneTask) -> SceneResult:
    """fake_scene that first records (wall clock) when it started."""
    import time

    Path(task.out_dir).parent.joinpath("started").write_text(repr(time.time()))
    return fake_scene(task)


# -- helpers --------------------------------------------------------------------------------------


def _partials(root: Path) -> list[Path]:
    return [p for p in (root / "out" / "scenes").iterdir() if p.name.startswith(".") and p.name != ".locks"]


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    from coalmine.train.synth import make_series

    root = tmp_path_factory.mktemp("series")
    make_series(root / "series", range(2016, 2019), seed=5, size=64)
    return root / "series"


@pytest.fixture(scope="module")
def local_ref(tmp_path_factory, series) -> Path:
    """The synthetic project monitored by the local path (CLI, no scheduler): the reference."""
    from coalmine.runtime.cli.monitor import main

    local = _synth_project(tmp_path_factory.mktemp("ref") / "local", series)
    res = CliRunner().invoke(main, [str(local / "monitor.toml"), "-q"])
    assert res.exit_code == 0, res.output
    return local


def _synth_project(root: Path, series: Path, cluster: str = "") -> Path:
    root.mkdir(parents=True)
    shutil.copytree(series, root / "series")
    make_tiny_bundle(root / "bundle", kind="linear")
    write_aois(root / "aois.geojson")
    (root / "monitor.toml").write_text(synth_config(cluster))
    return root


# -- results identical to the local run ---------------------------------------------------------


def test_cluster_run_equals_local_run_through_the_cli(tmp_path, series, address, local_ref):
    """Real run_scene on 3 synthetic raw scenes: the [cluster] table, then --scheduler."""
    from coalmine.runtime.cli.monitor import main

    local = local_ref
    dask = _synth_project(tmp_path / "dask", series, f'[cluster]\nscheduler = "{address}"\nretries = 1\n')
    with distributed.Client(address) as c, distributed.get_task_stream(client=c) as ts:
        res = CliRunner().invoke(main, [str(dask / "monitor.toml"), "-q"])
    assert res.exit_code == 0, res.output
    assert res.stderr.strip().splitlines()[-1].startswith("coal-monitor: 3 new scenes processed, 0 unchanged, 0 failed")
    ran = [t for t in ts.data if str(t["key"]).startswith("coal-scene-")]
    assert len(ran) == 3 and all(str(t["worker"]).startswith("tcp://") for t in ran)  # on the workers

    assert ledger_state(dask) == ledger_state(local)
    assert report_tables(dask) == report_tables(local)
    scenes = ledger_state(dask)[0]
    assert [s[1] for s in scenes] == ["done"] * 3 and all(s[4] is not None for s in scenes)
    assert len(ledger_state(dask)[1]) == 6  # West and East hectares for each scene, once
    assert _partials(dask) == []

    # A second run through --scheduler finds nothing to do.
    res = CliRunner().invoke(main, [str(dask / "monitor.toml"), "-q", "--scheduler", address])
    assert res.exit_code == 0, res.output
    assert "0 new scenes processed, 3 unchanged, 0 failed" in res.stderr


def test_coordinator_killed_mid_run_then_restarted_equals_the_local_run(tmp_path, series, address, local_ref):
    """SIGKILL the coal-monitor process while its LocalCluster workers are inside scenes: the
    workers go with it (no orphans), and a restart on another cluster finishes the work."""
    import signal
    import time

    import psutil

    p = _synth_project(tmp_path / "p", series)
    marker = tmp_path / "paused"
    env = {k: v for k, v in os.environ.items() if not k.startswith("COALMINE_CRASH")}
    # the workers (LocalCluster processes) pause inside their first scene: a Dask worker preload
    env.update(crash_points.env("before_run:1", marker), DASK_DISTRIBUTED__WORKER__PRELOAD='["crash_points"]')
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "coal-monitor"), str(p / "monitor.toml"), "-q", "--scheduler", "local:2"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    t0 = time.monotonic()
    while not marker.exists():  # a worker is inside a scene, paused
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() - t0 < 120, "the run never reached a scene"
        time.sleep(0.1)
    children = psutil.Process(proc.pid).children(recursive=True)
    assert len(children) >= 2  # the worker processes
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    gone, alive = psutil.wait_procs(children, timeout=30)
    assert alive == []  # no orphaned workers keep mapping
    con = sqlite3.connect(p / "out" / "ledger.sqlite")
    assert con.execute("SELECT count(*) FROM scenes WHERE status='running'").fetchone()[0] >= 1
    con.close()

    from coalmine.runtime.cli.monitor import main

    res = CliRunner().invoke(main, [str(p / "monitor.toml"), "-q", "--scheduler", address])
    assert res.exit_code == 0, res.output
    assert ledger_state(p) == ledger_state(local_ref)
    assert report_tables(p) == report_tables(local_ref)
    assert _partials(p) == []


# -- failures --------------------------------------------------------------------------------------


def test_worker_killed_mid_task_is_rescheduled_and_the_ledger_is_exact(tmp_path):
    """On its own LocalCluster started by the executor (--scheduler local:2)."""
    ref = make_mask_project(tmp_path / "ref")
    run_monitor(load_config(ref["config"]), runner=oracle_run_scene)
    p = make_mask_project(tmp_path / "p")
    with DaskExecutor("local:2") as ex:
        assert len(ex.client.scheduler_info()["workers"]) == 2
        s = run_monitor(load_config(p["config"]), runner=kill_once_runner, executor=ex)
    assert ex.client is None  # the LocalCluster is shut down with the executor
    killed = p["root"] / "marks" / "killed"
    assert killed.is_file() and int(killed.read_text()) != os.getpid()  # a worker process died
    assert (s.processed, s.failed, s.exit_code) == (5, 0, 0)
    assert ledger_state(p["root"]) == ledger_state(ref["root"])  # nothing lost, nothing counted twice
    assert report_tables(p["root"]) == report_tables(ref["root"])
    assert _partials(p["root"]) == []  # the dead attempt's half-written folder is gone
    con = sqlite3.connect(p["root"] / "out" / "ledger.sqlite")
    assert con.execute("SELECT count(*) FROM scene_areas").fetchone()[0] == 10
    assert {a for (a,) in con.execute("SELECT attempts FROM scenes")} == {1}  # one claim each


def test_failing_task_is_retried_then_recorded_failed_and_the_others_finish(tmp_path, address):
    p = make_mask_project(tmp_path / "p")
    with DaskExecutor(address, retries=2) as ex:
        s = run_monitor(load_config(p["config"]), runner=failing_runner, executor=ex)
    assert (s.processed, s.failed, s.exit_code) == (3, 2, 1)
    marks = p["root"] / "marks"
    assert len((marks / "S2_20180715_scene.tif.attempts").read_text().split()) == 3  # 1 + 2 retries
    assert len((marks / "S2_20190715_scene.tif.attempts").read_text().split()) == 1  # input errors are final
    con = sqlite3.connect(p["root"] / "out" / "ledger.sqlite")
    rows = {Path(k).name: (st, err) for k, st, err in con.execute("SELECT key, status, error FROM scenes")}
    assert rows["S2_20180715_scene.tif"] == (
        "failed", "RuntimeError: GPU fell off the bus while mapping S2_20180715_scene.tif")
    assert rows["S2_20190715_scene.tif"] == ("failed", "S2_20190715_scene.tif: band B04 is all nodata; check the input")
    assert [st for n, (st, _) in sorted(rows.items()) if "2018" not in n and "2019" not in n] == ["done"] * 3
    assert "GPU fell off the bus" in s.report.read_text()


@pytest.mark.parametrize("max_in_flight, bound", [(1, 1), (0, 4)])  # 0: 2 threads + 1 queued per worker
def test_tasks_are_pulled_lazily_and_in_flight_work_is_bounded(tmp_path, address, max_in_flight, bound):
    (tmp_path / "bundle").mkdir()
    pulled, done, most = [], [], [0]

    def tasks():
        for i in range(8):
            most[0] = max(most[0], len(pulled) - len(done) + 1)
            pulled.append(i)
            yield SceneTask(key=f"k{i}", scene=str(tmp_path / f"s{i}.tif"), date="2019-07-14",
                            bundle=str(tmp_path / "bundle"), out_dir=str(tmp_path / "out" / "scenes" / f"s{i}"),
                            prefix=f"s{i}", token=f"t{i}")

    (tmp_path / "out").mkdir()
    with DaskExecutor(address, max_in_flight=max_in_flight) as ex:
        for task, res in ex.run(fake_scene, tasks()):
            assert isinstance(res, SceneResult) and res.key == task.key
            done.append(task.key)
    assert sorted(done) == [f"k{i}" for i in range(8)]
    assert most[0] == bound  # never more scenes claimed than the bound, and the bound is used


def test_an_abandoned_attempt_finishes_before_a_new_attempt_starts(tmp_path, address):
    """A killed coordinator's attempt still running on a long-lived cluster holds the scene's
    lock (as run_exclusive does; here the test holds it): the new attempt waits for it."""
    import fcntl
    import threading
    import time

    (tmp_path / "bundle").mkdir()
    out = tmp_path / "out" / "scenes" / "s0"
    (out.parent / ".locks").mkdir(parents=True)
    task = SceneTask(key="k", scene=str(tmp_path / "s0.tif"), date="2019-07-14", bundle=str(tmp_path / "bundle"),
                     out_dir=str(out), prefix="s0", token="new")
    fh = open(out.parent / ".locks" / "s0.lock", "a")
    fcntl.flock(fh, fcntl.LOCK_EX)
    released: list[float] = []

    def release_later():
        time.sleep(1.5)
        released.append(time.time())
        fcntl.flock(fh, fcntl.LOCK_UN)
        fh.close()

    th = threading.Thread(target=release_later)
    th.start()
    with DaskExecutor(address) as ex:
        [(t, res)] = list(ex.run(stamped_scene, iter([task])))
    th.join()
    assert isinstance(res, SceneResult)
    assert float((out.parent / "started").read_text()) >= released[0]  # it waited for the lock


def test_workers_that_cannot_see_the_storage_are_refused(tmp_path, address):
    task = SceneTask(key="k", scene=str(tmp_path / "s.tif"), date="2019-07-14", bundle=str(tmp_path / "nowhere"),
                     out_dir=str(tmp_path / "out" / "scenes" / "x"), prefix="x", token="t1")
    (tmp_path / "out").mkdir()
    with DaskExecutor(address) as ex, pytest.raises(OutputError) as e:
        list(ex.run(process_scene, iter([task])))
    msg = str(e.value)
    assert "cannot see " + str(tmp_path / "nowhere") in msg and "shared storage" in msg and "\n" not in msg


def test_relative_paths_are_refused():
    task = SceneTask(key="k", scene="incoming/s.tif", date="2019-07-14", bundle="/b", out_dir="/o/scenes/x",
                     prefix="x", token="t")
    with pytest.raises(UsageError, match=r"scene path 'incoming/s.tif' is relative; Dask workers need absolute"):
        check_task_paths(task)


def test_result_not_visible_to_the_coordinator_is_an_error(tmp_path):
    from coalmine.runtime.monitor.cluster import _visible

    res = SceneResult(key="k", token="t", out_dir=str(tmp_path / "elsewhere"), outputs={"mask": "m.tif"},
                      areas_ha={"total": 1.0, "aois": {}}, nodata_share=0.0, backend="cpu", timings={}, seconds=1.0)
    err = _visible(res)
    assert isinstance(err, OutputError) and "cannot see it" in str(err) and "shared storage" in str(err)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "m.tif").write_bytes(b"x")
    assert _visible(res) is res


# -- GPU resources -----------------------------------------------------------------------------


def _task(backend: str) -> SceneTask:
    return SceneTask(key="k", scene="/s.tif", date="2019-07-14", bundle="/b", out_dir="/o/scenes/x",
                     prefix="x", token="t", options={"backend": backend})


def test_gpu_tasks_ask_for_one_gpu():
    assert task_resources(_task("tensorrt"), "auto", cluster_has_gpu=False) == {"GPU": 1}
    assert task_resources(_task("cuda"), "auto", cluster_has_gpu=True) == {"GPU": 1}
    assert task_resources(_task("auto"), "auto", cluster_has_gpu=True) == {"GPU": 1}
    assert task_resources(_task("auto"), "auto", cluster_has_gpu=False) == {}
    assert task_resources(_task("cpu"), "auto", cluster_has_gpu=True) == {}
    assert task_resources(_task("cpu"), True, cluster_has_gpu=True) == {"GPU": 1}
    assert task_resources(_task("tensorrt"), False, cluster_has_gpu=True) == {}
    workers = {"a": {"nthreads": 4, "resources": {"GPU": 1}}, "b": {"nthreads": 2, "resources": {}}}
    assert default_in_flight(workers, gpu=True) == 1 + 2   # one per GPU + one queued per worker
    assert default_in_flight(workers, gpu=False) == 6 + 2  # one per thread + one queued per worker


def test_gpu_worker_maps_while_cpu_workers_prepare(tmp_path, series, local_ref):
    """A worker started as the README says (dask worker ADDRESS --resources GPU=1) takes every
    scene task, one at a time; the raw scenes' preprocessing runs on the CPU worker
    (--resources CPU=1); the
    ledger equals the local run's. (The "GPU" worker maps on the CPU here: gpu = true forces
    the resource request with backend = "cpu".)"""
    local = local_ref
    p = _synth_project(tmp_path / "dask", series)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0",
                                  resources={"CPU": 1}) as lc:
        gpu = subprocess.Popen(
            [str(Path(sys.executable).parent / "dask"), "worker", lc.scheduler_address, "--nthreads", "1",
             "--resources", "GPU=1", "--no-dashboard"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            with distributed.Client(lc.scheduler_address) as c:
                c.wait_for_workers(2, timeout=60)
                gpu_worker = next(a for a, w in c.scheduler_info()["workers"].items() if w["resources"].get("GPU"))
                with distributed.get_task_stream(client=c) as ts, DaskExecutor(lc.scheduler_address, gpu=True) as ex:
                    s = run_monitor(load_config(p / "monitor.toml"), executor=ex)
        finally:
            gpu.terminate()
            gpu.wait(30)
    assert (s.processed, s.failed) == (3, 0)
    where = [(str(t["key"]).split("-")[1], t["worker"]) for t in ts.data if str(t["key"]).startswith("coal-")]
    assert sorted(k for k, _ in where) == ["prepare"] * 3 + ["scene"] * 3
    assert all(w != gpu_worker for k, w in where if k == "prepare")
    assert all(w == gpu_worker for k, w in where if k == "scene")
    assert ledger_state(p) == ledger_state(local)
    assert report_tables(p) == report_tables(local)
    assert _partials(p) == []  # the hand-over stacks are removed


def test_gpu_backend_without_gpu_workers_is_refused(tmp_path, address):
    p = make_mask_project(tmp_path / "p")
    write_config(p["config"], extra='[run]\nbackend = "tensorrt"\n')
    with DaskExecutor(address) as ex, pytest.raises(UsageError) as e:
        run_monitor(load_config(p["config"]), runner=oracle_run_scene, executor=ex)
    assert "needs GPU workers but none of the 2 worker(s)" in str(e.value)
    assert "dask worker ADDRESS --resources GPU=1" in str(e.value)


# -- refusals ------------------------------------------------------------------------------------


@pytest.mark.parametrize("value, message", [
    ("local:0", "the number of local workers must be a whole number >= 1"),
    ("local:two", "the number of local workers must be a whole number >= 1"),
    ("http://10.0.0.5:8787/status", "looks like the Dask dashboard (a web page); give the scheduler's own "
                                    "address instead, usually tcp://10.0.0.5:8786"),
    ("ftp://host:21", "unknown scheme 'ftp://'"),
    ("my-scheduler", "is not an address; use tcp://HOST:PORT"),
    ("/nowhere/scheduler.json", "scheduler file /nowhere/scheduler.json does not exist"),
    ("", "--scheduler is empty"),
])
def test_bad_scheduler_values_are_refused(value, message):
    with pytest.raises(UsageError) as e:
        parse_scheduler(value)
    assert message in str(e.value)


def test_scheduler_values_parse():
    assert parse_scheduler("local").n_workers == 2
    assert parse_scheduler("local:3").n_workers == 3
    assert parse_scheduler("10.0.0.5:8786").value == "tcp://10.0.0.5:8786"
    assert parse_scheduler("tls://h:8786").value == "tls://h:8786"


def test_cluster_config_keys_are_checked(tmp_path):
    p = make_mask_project(tmp_path / "p")
    for extra, message in [
        ("[cluster]\nworkers = 4\n", "unknown key 'cluster.workers'; known keys in cluster: connect_timeout, gpu, "
                                     "max_in_flight, prepare_on_cpu, retries, scheduler"),
        ("[cluster]\nretries = true\n", "cluster.retries must be a whole number, got True"),
        ("[cluster]\nscheduler = 8786\n", "cluster.scheduler must be a string, got 8786"),
    ]:
        write_config(p["config"], extra=extra)
        with pytest.raises(ConfigError) as e:
            load_config(p["config"])
        assert message in str(e.value) and str(p["config"]) in str(e.value)
    for extra, message in [
        ('[cluster]\nscheduler = "local:2"\nretries = -1\n', "[cluster] cluster retries must be >= 0, got -1"),
        ('[cluster]\nscheduler = "local:2"\ngpu = "yes"\n', "cluster gpu must be \"auto\", true or false"),
        ('[cluster]\nscheduler = "http://h:8787"\n', "cluster.scheduler 'http://h:8787' looks like the Dask dashboard"),
    ]:
        write_config(p["config"], extra=extra)
        with pytest.raises(ConfigError) as e:
            executor_from_config(load_config(p["config"]))
        assert message in str(e.value) and str(p["config"]) in str(e.value)
    write_config(p["config"], extra='[cluster]\nretries = 4\n')  # settings kept for --scheduler runs
    cfg = load_config(p["config"])
    assert executor_from_config(cfg) is None
    assert executor_from_config(cfg, "local:3").retries == 4


def test_unreachable_scheduler_is_one_line_in_a_real_subprocess(tmp_path):
    p = make_mask_project(tmp_path / "p")
    write_config(p["config"], extra="[cluster]\nconnect_timeout = 1\n")
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "coal-monitor"), str(p["config"]), "--scheduler", "tcp://127.0.0.1:9"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(
        "coal-monitor: error: --scheduler tcp://127.0.0.1:9: no Dask scheduler answered within 1 s (")
    assert "start one with 'dask scheduler'" in lines[0]
    assert not (p["root"] / "out").exists()  # nothing was started or written


def test_cli_refuses_a_bad_scheduler_and_a_dry_run_does_not_connect(tmp_path):
    from coalmine.runtime.cli.monitor import main

    p = make_mask_project(tmp_path / "p")
    res = CliRunner().invoke(main, [str(p["config"]), "--scheduler", "http://10.0.0.5:8787"])
    assert res.exit_code == 2
    assert res.stderr.strip() == (
        "coal-monitor: error: --scheduler 'http://10.0.0.5:8787' looks like the Dask dashboard (a web page); "
        "give the scheduler's own address instead, usually tcp://10.0.0.5:8786")
    res = CliRunner().invoke(main, [str(p["config"]), "--scheduler", "tcp://127.0.0.1:9", "--dry-run"])
    assert res.exit_code == 0, res.output  # nothing to run, so no connection attempt
    assert "dry run: 5 scene(s) to process" in res.stderr
    assert "--scheduler ADDRESS" in CliRunner().invoke(main, ["--help"]).output


def test_unreachable_scheduler_error_class():
    with pytest.raises(SchedulerUnavailableError, match="no Dask scheduler answered within 0.5 s"):
        DaskExecutor("tcp://127.0.0.1:9", connect_timeout=0.5).connect()


def test_missing_distributed_gives_the_pip_hint(tmp_path, monkeypatch):
    from coalmine.runtime.cli.monitor import main

    p = make_mask_project(tmp_path / "p")
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed -> ImportError
    with pytest.raises(MissingDependencyError, match=r'pip install "coalmine\[cluster\]"'):
        DaskExecutor("local:2").connect()
    res = CliRunner().invoke(main, [str(p["config"]), "--scheduler", "local:2"])
    assert res.exit_code == 1
    assert res.stderr.strip() == (
        "coal-monitor: error: running coal-monitor on a Dask cluster (--scheduler / [cluster]) needs the "
        "Python package 'distributed', which is not installed; install it with: pip install \"coalmine[cluster]\""
    )


def test_runtime_imports_without_dask():
    code = (
        "import sys; sys.modules['distributed'] = None; sys.modules['dask'] = None\n"
        "import coalmine.runtime.cli.monitor, coalmine.runtime.monitor.cluster\n"
        "from coalmine.runtime.monitor.cluster import parse_scheduler; parse_scheduler('local:2')\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
