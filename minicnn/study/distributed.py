"""Sweeps on a Dask cluster (`minicnn sweep --scheduler`): the same grid as ``sweep.run_sweep``, as tasks
of Dask's distributed scheduler on any number of machines that share no filesystem.

    --scheduler tcp://HOST:PORT   a running scheduler (`dask scheduler`, workers: `dask worker`)
    --scheduler local:N           N one-thread worker processes on this machine, on loopback

A task is one seed's baseline or one (configuration, seed) run (``minicnn.study.tasks``); a run's task
depends on its seed's baseline task (a Dask future: the checkpoint's bytes travel between workers).
The client owns every write: a task gets its settings and the bytes of the files it resumes from,
works in a temporary folder on its worker and returns its rows and the bytes of the files it wrote,
and the client writes them atomically where ``run_sweep`` would have written them (settings first,
then step checkpoints, then results). So both paths leave the same folder, either resumes what the
other left, and a rerun skips finished configurations. Each worker reads CIFAR-10 from its own
MINICNN_DATA or cache (or downloads it; with local:N, the client's --data) and refuses data whose
fingerprint differs from the client's. A worker that dies mid-task has its task rerun elsewhere by
Dask (up to its ``distributed.scheduler.allowed-failures``, 3 by default).

Dask is imported only here, when a sweep asks for it, and this module imports nothing heavy at import
time: workers load it to run ``run_task`` and set their threads before Numba starts.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from pathlib import Path

from minicnn.errors import MiniCNNError, one_line

INSTALL_HINT = 'pip install -e ".[distributed]"'

#: What a local:N worker process starts with: one Numba thread, not pinned (N processes share the cores).
LOCAL_WORKER_ENV = {"NUMBA_NUM_THREADS": "1", "OMP_PROC_BIND": "false"}


def parse_scheduler(text: str) -> tuple[str, int | str]:
    """'local:N' -> ('local', N); 'tcp://HOST:PORT' -> ('tcp', the address); else MiniCNNError."""
    text = str(text).strip()
    if text.startswith("local:"):
        n = text[len("local:"):]
        if not n.isdigit() or int(n) < 1:
            raise MiniCNNError(f"--scheduler {text!r}: local:N needs a whole number N >= 1 of workers, e.g. local:2")
        return "local", int(n)
    if text.startswith("tcp://") and len(text) > len("tcp://"):
        return "tcp", text
    raise MiniCNNError(f"--scheduler {text!r} is neither tcp://HOST:PORT (a running Dask scheduler) nor local:N "
                       f"(N worker processes on this machine)")


def import_distributed():
    """Dask's distributed package, or MiniCNNError saying how to install it."""
    try:
        import distributed
    except ImportError:
        raise MiniCNNError(f"--scheduler needs Dask's distributed package; install it: {INSTALL_HINT}") from None
    return distributed


def run_task(kind: str, data: dict | None, *args):
    """A sweep task on a Dask worker: ``tasks.run`` with the worker's nthreads as its Numba threads."""
    from distributed import get_worker

    from minicnn.study import tasks

    return tasks.run(kind, get_worker().state.nthreads, data, *args)


@contextlib.contextmanager
def connect(scheduler: str, echo):
    """A Dask client of ``scheduler`` (see ``parse_scheduler``; local:N starts the cluster and stops it
    after), closed on leaving. Prints the dashboard's address when the scheduler serves one (a remote
    scheduler's pages need bokeh there)."""
    distributed = import_distributed()
    kind, where = parse_scheduler(scheduler)
    with contextlib.ExitStack() as stack:
        try:
            if kind == "local":
                cluster = stack.enter_context(distributed.LocalCluster(
                    n_workers=where, threads_per_worker=1, processes=True, host="127.0.0.1",
                    dashboard_address="127.0.0.1:0", env=LOCAL_WORKER_ENV))
                client = stack.enter_context(distributed.Client(cluster))
            else:
                client = stack.enter_context(distributed.Client(where))
        except OSError as exc:
            why = one_line(exc)
            if kind == "local":
                raise MiniCNNError(f"cannot start a Dask cluster on this machine ({why})") from None
            raise MiniCNNError(f"cannot reach the Dask scheduler {where} ({why}); start it with `dask scheduler` "
                               f"and workers with `dask worker {where}`") from None
        if "dashboard" in client.scheduler_info().get("services", {}) and (kind == "tcp" or _has_bokeh()):
            echo(f"Dask dashboard: {client.dashboard_link}")
        yield client


def _has_bokeh() -> bool:
    """Whether this machine can serve Dask's dashboard pages (a local scheduler serves them only with bokeh)."""
    import importlib.util

    return importlib.util.find_spec("bokeh") is not None


def _in_order(files: dict[str, bytes]) -> dict[str, bytes]:
    """A run folder's files in the order ``run_prune`` writes them: settings, step checkpoints, results."""
    return dict(sorted(files.items(), key=lambda item: (item[0].startswith("results."), item[0])))


def _submit(client, sweep, out_dir: Path, todo, data: dict, backend: str) -> dict:
    """Submit the baselines of ``todo``'s seeds and ``todo``'s runs; {future key: (future, seed or run dir)}."""
    from minicnn.io.files import read_tree
    from minicnn.study.config import TrainConfig

    token = uuid.uuid4().hex[:8]
    submitted, baselines = {}, {}
    for seed in dict.fromkeys(cfg.seed for cfg, _ in todo):
        path = sweep.baseline_path(out_dir, seed)
        baselines[seed] = client.submit(run_task, "baseline", data, TrainConfig.paper_baseline(sweep, seed),
                                        path.read_bytes() if path.is_file() else None, backend,
                                        key=f"baseline-seed{seed}-{token}", priority=1)
        submitted[baselines[seed].key] = (baselines[seed], seed)
    for cfg, run_dir in todo:
        future = client.submit(run_task, "prune", data, cfg, read_tree(run_dir), baselines[cfg.seed], backend,
                               key=f"{run_dir.name}-{token}")
        submitted[future.key] = (future, run_dir)
    return submitted


def _result(future, distributed):
    """The task's result; its own error as raised, a task that kept killing its workers as MiniCNNError."""
    try:
        return future.result()
    except distributed.KilledWorker as exc:
        raise MiniCNNError(f"task {future.key} ended every worker that ran it ({exc}); see the workers' logs "
                           f"(out of memory?)") from None


def run_sweep_dask(sweep, out_dir, scheduler: str, *, data_path=None, backend: str = "fast", force: bool = False,
                   echo=print, on_run_done=None) -> list:
    """``sweep.run_sweep`` on the Dask cluster ``scheduler``: the same folder, rows and resumption.
    ``on_run_done(done, total)`` is called as configurations finish."""
    from minicnn.io.data import load_cifar10
    from minicnn.io.files import write_tree
    from minicnn.study import tasks
    from minicnn.study.config import rewind_epochs
    from minicnn.study.runs import is_finished
    from minicnn.study.sweep import (Progress, claim_sweep, describe_baseline, describe_run, merge_results,
                                     submission_order)

    kind, _ = parse_scheduler(scheduler)
    if rewind_epochs(sweep.rewind):
        raise MiniCNNError("--rewind EPOCH needs the baselines' epoch snapshots, which cluster tasks do not carry; "
                           "run this sweep with --jobs, or pass --rewind init")
    distributed = import_distributed()
    out_dir = Path(out_dir)
    claim_sweep(sweep, out_dir, force)
    dataset = load_cifar10(data_path, train_limit=sweep.train_limit, test_limit=sweep.test_limit)
    here = data_path if data_path is None or not Path(data_path).exists() else Path(data_path).resolve()
    data = tasks.data_spec(here if kind == "local" else None, sweep.train_limit, sweep.test_limit, dataset)
    del dataset
    grid = sweep.runs(out_dir)
    todo = [(cfg, run_dir) for cfg, run_dir in submission_order(grid) if not is_finished(cfg, run_dir)]
    t0 = time.perf_counter()
    with connect(scheduler, echo) as client:
        submitted = _submit(client, sweep, out_dir, todo, data, backend)
        echo(f"sweep on {scheduler}: {len(todo)} of {len(grid)} configurations x {len(sweep.amounts)} amounts to "
             f"run, after {len(submitted) - len(todo)} baseline(s); {len(client.scheduler_info()['workers'])} "
             f"worker(s) now")
        progress, configs_done = Progress(len(submitted), echo), len(grid) - len(todo)
        for future in distributed.as_completed([f for f, _ in submitted.values()]):
            item = submitted.pop(future.key)[1]  # dropped once written: the cluster may free its bytes
            result = _result(future, distributed)
            if isinstance(item, int):
                path = sweep.baseline_path(out_dir, item)
                if not path.is_file() or path.read_bytes() != result["checkpoint"]:
                    write_tree(path.parent, {path.name: result["checkpoint"]})
                progress.finished(describe_baseline(item, result["test_acc"], result["diverged"]), result["seconds"])
                continue
            write_tree(item, _in_order(result["files"]))
            merge_results(grid, out_dir)
            configs_done += 1
            progress.finished(describe_run(item, result["seconds"], result["rows"]), result["seconds"])
            if on_run_done is not None:
                on_run_done(configs_done, len(grid))
    rows = merge_results(grid, out_dir)
    echo(f"sweep finished in {(time.perf_counter() - t0) / 60:.1f} min: {len(rows)} rows")
    return rows
