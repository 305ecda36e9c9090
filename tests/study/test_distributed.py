"""`minicnn sweep --scheduler` (minicnn.study.distributed) on loopback Dask clusters: the same folder and
bits as `--jobs 1` at the same threads per task, through a worker killed mid-task and a client killed
mid-sweep; workers with other data are refused; without Dask, one line says how to install it."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from minicnn.cli import cli
from minicnn.errors import MiniCNNError
from minicnn.study.config import SweepConfig

GRID = dict(schedules=("oneshot",), methods=("unstructured",), lrs=(0.01,), amounts=(0.0, 0.5), seeds=(0, 1),
            epochs=1, batch_size=64)
GRID_ARGS = ["--schedules", "oneshot", "--methods", "unstructured", "--lrs", "0.01", "--amounts", "0,.5",
             "--seeds", "0,1", "--epochs", "1", "--batch-size", "64"]


def _h5_values(path: Path) -> dict:
    values = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: values.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset)
                     and "seconds" not in name else None)
    return values


def assert_same_sweep(ref: Path, out: Path) -> None:
    """The same files (hidden temporaries aside), every HDF5 array bit for bit, every results.csv cell but
    the wall time, and the same settings files (the folder's own name aside)."""
    files = lambda root: sorted(p.relative_to(root).as_posix() for p in root.rglob("*")  # noqa: E731
                                if p.is_file() and not p.name.startswith("."))
    assert files(out) == files(ref)
    for name in files(ref):
        a, b = ref / name, out / name
        if name.endswith(".h5"):
            va, vb = _h5_values(a), _h5_values(b)
            assert va.keys() == vb.keys(), name
            for key in va:
                x, y = va[key], vb[key]
                if x.dtype.kind == "f":  # bit for bit (NaN included)
                    x, y = x.view(np.uint8), y.view(np.uint8) if y.dtype == x.dtype else y
                assert np.array_equal(x, y), (name, key)
        elif name.endswith(".csv"):
            ra, rb = list(csv.DictReader(open(a))), list(csv.DictReader(open(b)))
            assert [{k: v for k, v in r.items() if k != "seconds"} for r in ra] == \
                   [{k: v for k, v in r.items() if k != "seconds"} for r in rb], name
        else:
            assert a.read_text().replace(str(ref), "OUT") == b.read_text().replace(str(out), "OUT"), name


@pytest.fixture(scope="module")
def data(make_synthetic_cache) -> Path:
    return make_synthetic_cache(256, 128)


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory) -> Path:
    """The grid run with --jobs 1 at one thread per task (the threads a one-thread Dask worker gives it)."""
    pytest.importorskip("distributed")  # only the Dask tests use it
    from minicnn.study.sweep import run_sweep

    out = tmp_path_factory.mktemp("jobs1") / "out"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NUMBA_NUM_THREADS", "1")
        run_sweep(SweepConfig(**GRID), out, jobs=1, data_path=str(data), echo=lambda *_: None)
    return out


@pytest.fixture(scope="module")
def cluster(data):
    """Two one-thread workers on loopback whose own MINICNN_DATA is ``data``."""
    distributed = pytest.importorskip("distributed")
    from minicnn.study.distributed import LOCAL_WORKER_ENV

    env = {**LOCAL_WORKER_ENV, "MINICNN_DATA": str(data)}
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address="127.0.0.1:0", env=env) as c:
        yield c


def test_local_cluster_equals_jobs_1(data, reference, tmp_path):
    pytest.importorskip("distributed")
    from minicnn.study.distributed import run_sweep_dask

    lines = []
    rows = run_sweep_dask(SweepConfig(**GRID), tmp_path / "out", "local:2", data_path=str(data), echo=lines.append)
    assert len(rows) == 4
    assert_same_sweep(reference, tmp_path / "out")
    progress = [line for line in lines if " done" in line]
    assert len(progress) == 4 and progress[-1].split("; ")[-1].startswith("4/4 done")  # 2 baselines + 2 runs
    from minicnn.study.distributed import _has_bokeh

    assert any(line.startswith("Dask dashboard: http://127.0.0.1:") for line in lines) == _has_bokeh()


def test_progress_lines_give_done_total_and_time_left():
    from minicnn.study.sweep import Progress

    lines = []
    progress = Progress(3, lines.append)
    progress.finished("baseline seed 0: test acc 10.00%", 0.5)  # found finished: no pace yet
    progress.finished("oneshot-unstructured-lr0.01-seed0: 2 s", 2.0)
    assert lines[0] == "baseline seed 0: test acc 10.00%; 1/3 done"
    assert lines[1].startswith("oneshot-unstructured-lr0.01-seed0: 2 s; 2/3 done, about ") and lines[1].endswith(
        " min left")


def test_worker_threads_equal_its_nthreads(cluster):
    distributed = pytest.importorskip("distributed")

    def probe():
        import numba

        from minicnn.study.distributed import run_task

        run_task("noop", None)
        return numba.get_num_threads(), os.environ.get("OMP_PROC_BIND")

    with distributed.Client(cluster) as client:
        assert client.submit(probe, pure=False).result() == (1, "false")


def _kill_first_busy_worker(watcher, pids: dict, killed: list) -> None:
    """SIGKILL the first worker seen running a task, 0.2 s into it (its first task also imports and loads)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not killed:
        busy = [(addr, key) for addr, keys in watcher.processing().items() for key in keys]
        if busy:
            time.sleep(0.2)
            os.kill(pids[busy[0][0]], signal.SIGKILL)
            killed.append(busy[0][1])
        time.sleep(0.02)


def test_worker_killed_mid_task_finishes_identical(cluster, data, reference, tmp_path):
    distributed = pytest.importorskip("distributed")
    from minicnn.study.distributed import run_sweep_dask

    with distributed.Client(cluster) as watcher:
        watcher.restart()  # fresh worker processes: their first task imports minicnn, so a kill lands in it
        pids = watcher.run(os.getpid)
        killed: list = []
        killer = threading.Thread(target=_kill_first_busy_worker, args=(watcher, pids, killed))
        killer.start()
        run_sweep_dask(SweepConfig(**GRID), tmp_path / "out", cluster.scheduler_address, data_path=str(data),
                       echo=lambda *_: None)
        killer.join()
    assert killed, "no task was seen running"
    starts = [t for t in cluster.scheduler.story(killed[0]) if t[2] == "processing"]
    assert len(starts) >= 2, f"{killed[0]} was not rerun: {starts}"
    assert_same_sweep(reference, tmp_path / "out")


def test_client_killed_mid_sweep_resumes_identical(cluster, data, reference, tmp_path):
    pytest.importorskip("distributed")
    from minicnn.study.distributed import run_sweep_dask

    out = tmp_path / "out"
    client = subprocess.Popen([sys.executable, "-c", "from minicnn.cli import cli; cli()", "sweep", *GRID_ARGS,
                               "--data", str(data), "--scheduler", cluster.scheduler_address, "--out", str(out)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not list(out.glob("baselines/seed*.h5")) and client.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    client.send_signal(signal.SIGKILL)
    client.wait()
    assert client.returncode == -signal.SIGKILL, "the sweep ended before it was killed"
    assert not (out / "results.csv").exists() or len(list(csv.DictReader(open(out / "results.csv")))) < 4
    run_sweep_dask(SweepConfig(**GRID), out, cluster.scheduler_address, data_path=str(data), echo=lambda *_: None)
    assert_same_sweep(reference, out)


def test_workers_with_other_data_are_refused(cluster, make_synthetic_cache, tmp_path):
    pytest.importorskip("distributed")
    other = make_synthetic_cache(256, 128, seed=1)  # same shape, other pixels than the workers' MINICNN_DATA
    result = CliRunner().invoke(cli, ["sweep", *GRID_ARGS, "--data", str(other), "--scheduler",
                                      cluster.scheduler_address, "--out", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert "reads other CIFAR-10 data than the client" in result.output and "fingerprint" in result.output
    assert len(result.output.strip().splitlines()[-1]) > 40 and result.output.strip().splitlines()[-1].startswith(
        "Error: worker ")


def test_missing_distributed_says_how_to_install(monkeypatch, synthetic_cache, tmp_path):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed -> ImportError
    result = CliRunner().invoke(cli, ["sweep", *GRID_ARGS, "--data", str(synthetic_cache), "--scheduler", "local:2",
                                      "--out", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "Error: --scheduler needs Dask's distributed package; install it: pip install -e \".[distributed]\""]
    assert not (tmp_path / "out").exists()  # refused before touching --out


def test_jobs_and_scheduler_exclude_each_other(synthetic_cache, tmp_path):
    result = CliRunner().invoke(cli, ["sweep", *GRID_ARGS, "--data", str(synthetic_cache), "--jobs", "2",
                                      "--scheduler", "local:2", "--out", str(tmp_path / "out")])
    assert result.exit_code == 1 and "--jobs and --scheduler exclude each other" in result.output


@pytest.mark.parametrize("text, error", [("local:0", "N >= 1"), ("local:x", "N >= 1"), ("host:8786", "neither")])
def test_bad_scheduler_addresses(text, error):
    from minicnn.study.distributed import parse_scheduler

    with pytest.raises(MiniCNNError, match=error):
        parse_scheduler(text)
    assert parse_scheduler("local:3") == ("local", 3)
    assert parse_scheduler("tcp://10.0.0.1:8786") == ("tcp", "tcp://10.0.0.1:8786")
