"""Sweeps: the paper's grid (schedules x methods x learning rates x amounts x seeds) as pruning runs in
worker processes that split the cores between them, resumable, merged into one results table.

    OUT/sweep.json               the settings (SweepConfig); more seeds on a rerun extend the sweep
    OUT/baselines/seedS.h5       one paper baseline per seed, shared by every run of that seed
    OUT/runs/SCHEDULE-METHOD-lrLR-seedS/   one pruning run each (see minicnn.study.runs)
    OUT/results.csv / .h5        every finished row, rewritten as runs finish
"""

from __future__ import annotations

import itertools
import os
import signal
import time
from pathlib import Path

from minicnn.errors import MiniCNNError
from minicnn.study.config import PruneConfig, SweepConfig, TrainConfig
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
    config, path, data_path, backend = args
    from minicnn.study.training import run_training

    result = run_training(config, path, data_path=data_path, backend=backend, echo=lambda *_: None)
    return config.seed, result["test_acc"], result["diverged"]


def _prune_job(args):
    config, run_dir, data_path, backend = args
    t0 = time.perf_counter()
    rows = run_prune(config, run_dir, data_path=data_path, backend=backend, echo=lambda *_: None)
    return str(run_dir), rows, time.perf_counter() - t0


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
    stored = read_settings(out_dir / "sweep.json")
    extendable = SweepConfig.EXTENDABLE if stored is not None and set(stored.get("seeds", [])) <= set(sweep.seeds) \
        else ()  # more seeds extend a sweep; its runs are kept
    claim_dir(out_dir, "sweep.json", sweep, force, ("runs", "baselines", "results.csv", "results.h5"), "a sweep",
              extendable)
    load_cifar10(data_path, train_limit=1, test_limit=1)  # fail early (and build the cache once) if data is missing

    cores = available_threads()
    jobs = max(1, min(jobs, cores))
    threads = max(1, cores // jobs)
    grid = sweep.runs(out_dir)
    try:
        with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn"), initializer=_worker_init,
                                 initargs=(threads, os.getpid())) as pool:
            t0 = _run_grid(pool, sweep, grid, out_dir, jobs, threads, data_path, backend, echo, on_run_done)
    except BrokenProcessPool:
        raise MiniCNNError("a sweep worker process died (killed, perhaps by the out-of-memory killer); finished "
                           "configurations are kept: rerun the same command to resume") from None
    rows = collect_rows(grid)
    save_results(rows, out_dir / "results.csv", out_dir / "results.h5")
    echo(f"sweep finished in {(time.perf_counter() - t0) / 60:.1f} min (after baselines): {len(rows)} rows")
    return rows


def _run_grid(pool, sweep: SweepConfig, grid, out_dir: Path, jobs: int, threads: int, data_path, backend: str,
              echo, on_run_done) -> float:
    """The baselines, then every configuration of ``grid``, in ``pool``; merges the results as configurations
    finish. Returns when the configurations started (after the baselines), as time.perf_counter()."""
    from concurrent.futures import as_completed

    base_jobs = [(TrainConfig.paper_baseline(sweep, seed), str(sweep.baseline_path(out_dir, seed)), data_path,
                  backend) for seed in sweep.seeds]
    echo(f"sweep: {len(grid)} configurations x {len(sweep.amounts)} amounts, {jobs} worker(s) x "
         f"{threads} thread(s); baselines first")
    for seed, acc, diverged in pool.map(_train_baseline_job, base_jobs):
        echo(f"baseline seed {seed}: test acc {acc:.2%}" + ("  DIVERGED" if diverged else ""))

    t0 = time.perf_counter()
    futures = [pool.submit(_prune_job, (cfg, run_dir, data_path, backend)) for cfg, run_dir in submission_order(grid)]
    finished, worked = 0, 0  # worked: configurations that ran steps now (not finished earlier)
    for fut in as_completed(futures):
        run_dir, rows, seconds = fut.result()
        finished += 1
        worked += seconds > 1.0
        save_results(collect_rows(grid), out_dir / "results.csv", out_dir / "results.h5")
        eta = (time.perf_counter() - t0) / max(worked, 1) * (len(grid) - finished)
        last = rows[-1] if rows else None
        echo(f"{Path(run_dir).name}: {seconds:.0f} s"
             + (f", at amount {last.amount:g}: test acc {last.test_acc_after:.2%}" if last else "")
             + f"; {finished}/{len(grid)} done" + (f", about {eta / 60:.1f} min left" if worked else ""))
        if on_run_done is not None:
            on_run_done(finished, len(grid))
    return t0
