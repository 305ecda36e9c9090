"""Sweeps: the paper's grid (schedules x methods x learning rates x amounts x seeds) as pruning runs in
worker processes that split the cores between them, resumable, merged into one results table.

    OUT/sweep.json               the settings (SweepConfig); more seeds on a rerun extend the sweep
    OUT/baselines/seedS.h5       one paper baseline per seed, shared by every run of that seed
    OUT/runs/SCHEDULE-METHOD-lrLR-seedS/   one pruning run each (see minicnn.study.runs); -CRITERION after
                                 METHOD when the sweep's criterion is not magnitude
    OUT/results.csv / .h5        every finished row, rewritten as runs finish

``run_sweep`` runs the grid in processes on this machine; ``minicnn.study.distributed`` runs the same
grid on a Dask cluster and writes the same folder. Both use the helpers below.
"""

from __future__ import annotations

import itertools
import os
import signal
import time
from pathlib import Path

from minicnn.errors import MiniCNNError
from minicnn.study.config import PruneConfig, SweepConfig, TrainConfig, rewind_epochs
from minicnn.study.results import ResultRow, load_results, save_results
from minicnn.study.rundir import claim_dir, read_settings
from minicnn.study.runs import run_prune


def available_threads() -> int:
    """The threads this process may use: the user's NUMBA_NUM_THREADS when set, else every core."""
    try:
        return max(1, int(os.environ["NUMBA_NUM_THREADS"]))
    except (KeyError, ValueError):
        return os.cpu_count() or 1


def _die_with_parent(parent: int) -> None:
    """Linux: have the kernel SIGKILL this worker when the sweep's process dies, however it dies (even
    by SIGKILL), so that no orphaned worker keeps writing into run folders that a rerun resumes."""
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, int(signal.SIGKILL))  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return  # not Linux: an orphan finishes its configuration and exits
    if os.getppid() != parent:  # the sweep died before prctl took effect
        os._exit(1)


def _worker_init(threads: int, parent: int) -> None:
    """Runs first in each sweep worker process: its share of the cores, before any kernel runs."""
    _die_with_parent(parent)
    os.environ["NUMBA_NUM_THREADS"] = str(threads)
    if threads == 1:  # pinning one-thread workers would put them all on the first core
        os.environ["OMP_PROC_BIND"] = "false"
    import numba

    numba.set_num_threads(threads)


def _train_baseline_job(args):
    config, path, data_path, backend, snapshots = args
    from minicnn.study.training import run_training

    result = run_training(config, path, data_path=data_path, backend=backend, echo=lambda *_: None,
                          snapshots=snapshots)
    return config.seed, result["test_acc"], result["diverged"]


def _prune_job(args):
    config, run_dir, data_path, backend = args
    t0 = time.perf_counter()
    rows = run_prune(config, run_dir, data_path=data_path, backend=backend, echo=lambda *_: None)
    return str(run_dir), rows, time.perf_counter() - t0


class Progress:
    """One line per finished task: what it did, then done/total and, once a task has worked (run more
    than a second: not merely found finished), the time left at the average pace so far."""

    def __init__(self, total: int, echo):
        self.total, self.echo, self.done, self.worked, self.t0 = total, echo, 0, 0, time.perf_counter()

    def finished(self, text: str, seconds: float) -> None:
        self.done += 1
        self.worked += seconds > 1.0
        eta = (time.perf_counter() - self.t0) / max(self.worked, 1) * (self.total - self.done)
        self.echo(f"{text}; {self.done}/{self.total} done"
                  + (f", about {eta / 60:.1f} min left" if self.worked else ""))


def describe_run(run_dir, seconds: float, rows: list[ResultRow]) -> str:
    """'NAME: 12 s, at amount 0.5: test acc 41.20%': a finished configuration, for the progress line."""
    last = rows[-1] if rows else None
    return (f"{Path(run_dir).name}: {seconds:.0f} s"
            + (f", at amount {last.amount:g}: test acc {last.test_acc_after:.2%}" if last else ""))


def describe_baseline(seed: int, acc: float, diverged: bool) -> str:
    return f"baseline seed {seed}: test acc {acc:.2%}" + ("  DIVERGED" if diverged else "")


def claim_sweep(sweep: SweepConfig, out_dir: Path, force: bool) -> None:
    """Make ``out_dir`` hold ``sweep`` (see rundir.claim_dir); more seeds extend a stored sweep."""
    stored = read_settings(out_dir / "sweep.json")
    extendable = SweepConfig.EXTENDABLE if stored is not None and set(stored.get("seeds", [])) <= set(sweep.seeds) \
        else ()  # more seeds extend a sweep; its runs are kept
    claim_dir(out_dir, "sweep.json", sweep, force, ("runs", "baselines", "results.csv", "results.h5"), "a sweep",
              extendable)


def merge_results(grid, out_dir: Path) -> list[ResultRow]:
    """Write every finished row of the grid's runs into out_dir/results.csv/.h5; returns them."""
    rows = collect_rows(grid)
    save_results(rows, out_dir / "results.csv", out_dir / "results.h5")
    return rows


def collect_rows(grid) -> list[ResultRow]:
    """All finished rows of a sweep's runs, in grid order."""
    rows = []
    for _, run_dir in grid:
        if (run_dir / "results.csv").exists():
            rows.extend(load_results(run_dir))
    return rows


def submission_order(grid: list[tuple[PruneConfig, Path]]) -> list[tuple[PruneConfig, Path]]:
    """The grid with its methods interleaved (unstructured, structured, unstructured, ...). The first
    configurations to finish are then a fair sample for the estimate of the time left: unstructured
    steps take about 1.7x as long as compacted structured ones, and the grid lists them first."""
    by_method: dict[str, list] = {}
    for item in grid:
        by_method.setdefault(item[0].method, []).append(item)
    return [item for group in itertools.zip_longest(*by_method.values()) for item in group if item is not None]


def run_sweep(sweep: SweepConfig, out_dir, *, jobs: int = 1, data_path=None, backend: str = "fast",
              force: bool = False, echo=print, on_run_done=None) -> list[ResultRow]:
    """Run (or resume) a whole grid: one baseline per seed, then every configuration in ``jobs`` worker
    processes that split the cores between them. Writes out_dir/results.csv/.h5 (all rows) after every
    configuration; returns the rows. ``on_run_done(done, total)`` is called as configurations finish."""
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool
    from multiprocessing import get_context

    from minicnn.io.data import load_cifar10

    out_dir = Path(out_dir)
    claim_sweep(sweep, out_dir, force)
    load_cifar10(data_path, train_limit=1, test_limit=1)  # fail early (and build the cache once) if data is missing

    cores = available_threads()
    jobs = max(1, min(jobs, cores))
    threads = max(1, cores // jobs)
    grid = sweep.runs(out_dir)
    try:
        with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn"), initializer=_worker_init,
                                 initargs=(threads, os.getpid())) as pool:
            progress = _run_grid(pool, sweep, grid, out_dir, jobs, threads, data_path, backend, echo, on_run_done)
    except BrokenProcessPool:
        raise MiniCNNError("a sweep worker process died (killed, perhaps by the out-of-memory killer); finished "
                           "configurations are kept: rerun the same command to resume") from None
    rows = merge_results(grid, out_dir)
    echo(f"sweep finished in {(time.perf_counter() - progress.t0) / 60:.1f} min (after baselines): {len(rows)} rows")
    return rows


def _run_grid(pool, sweep: SweepConfig, grid, out_dir: Path, jobs: int, threads: int, data_path, backend: str,
              echo, on_run_done) -> "Progress":
    """The baselines, then every configuration of ``grid``, in ``pool``; merges the results as configurations
    finish. Returns the progress of the configurations (started after the baselines)."""
    from concurrent.futures import as_completed

    base_jobs = [(TrainConfig.paper_baseline(sweep, seed), str(sweep.baseline_path(out_dir, seed)), data_path,
                  backend, rewind_epochs(sweep.rewind)) for seed in sweep.seeds]
    echo(f"sweep: {len(grid)} configurations x {len(sweep.amounts)} amounts, {jobs} worker(s) x "
         f"{threads} thread(s); baselines first")
    for seed, acc, diverged in pool.map(_train_baseline_job, base_jobs):
        echo(describe_baseline(seed, acc, diverged))

    progress = Progress(len(grid), echo)
    futures = [pool.submit(_prune_job, (cfg, run_dir, data_path, backend)) for cfg, run_dir in submission_order(grid)]
    for fut in as_completed(futures):
        run_dir, rows, seconds = fut.result()
        merge_results(grid, out_dir)
        progress.finished(describe_run(run_dir, seconds, rows), seconds)
        if on_run_done is not None:
            on_run_done(progress.done, len(grid))
    return progress
