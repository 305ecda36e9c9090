"""A sweep on this machine three ways, side by side: `--jobs 1`, `--jobs 2` and `--scheduler local:2` (a
Dask LocalCluster of two one-thread workers), each from start (worker processes or cluster included) to
its last results.csv; then the Dask scheduler's cost per task, from 1,000 no-op tasks of minicnn's task
wrapper (``minicnn.study.distributed.run_task``: the worker's threads and its one-task-at-a-time lock,
no data), so the cost at 100 machines can be estimated on paper.

    python benchmarks/bench_distributed.py [--data PATH] [--train-limit 2000] [--test-limit 1000]

The grid: seeds 0,1 x oneshot, iterative x unstructured, structured x lr 0.01 x amounts 0, .5, .9,
1 fine-tuning epoch: 2 baselines and 8 configurations. Data: --data, else MINICNN_DATA, else the cache.
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import time
from pathlib import Path

from minicnn.ladder.machine import cpu_model

GRID = dict(schedules=("oneshot", "iterative"), methods=("unstructured", "structured"), lrs=(0.01,),
            amounts=(0.0, 0.5, 0.9), seeds=(0, 1), epochs=1)


def values(out: Path) -> list:
    """results.csv's rows without the wall time."""
    with open(out / "results.csv", newline="") as fh:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(fh)]


def time_sweeps(config, data_path, folder: Path) -> dict:
    """{mode: (seconds, rows)} of the grid run each way into a fresh folder."""
    from minicnn.study.distributed import run_sweep_dask
    from minicnn.study.sweep import run_sweep

    modes = {"--jobs 1": lambda out: run_sweep(config, out, jobs=1, data_path=data_path, echo=lambda *_: None),
             "--jobs 2": lambda out: run_sweep(config, out, jobs=2, data_path=data_path, echo=lambda *_: None),
             "--scheduler local:2": lambda out: run_sweep_dask(config, out, "local:2", data_path=data_path,
                                                               echo=lambda *_: None)}
    timed = {}
    for i, (mode, run) in enumerate(modes.items()):
        t0 = time.perf_counter()
        run(folder / str(i))
        timed[mode] = (time.perf_counter() - t0, values(folder / str(i)))
        print(f"  {mode}: {timed[mode][0]:.1f} s", file=sys.stderr, flush=True)
    return timed


def scheduler_overhead(n_tasks: int = 1000) -> float:
    """Seconds per task of ``n_tasks`` no-op tasks through a 2 x 1-thread LocalCluster (after a warm-up)."""
    import distributed

    from minicnn.study.distributed import LOCAL_WORKER_ENV, run_task

    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address="127.0.0.1:0", env=LOCAL_WORKER_ENV) as cluster, \
            distributed.Client(cluster) as client:
        client.gather(client.map(run_task, ["noop"] * 20, [None] * 20, pure=False))
        t0 = time.perf_counter()
        client.gather(client.map(run_task, ["noop"] * n_tasks, [None] * n_tasks, pure=False))
        return (time.perf_counter() - t0) / n_tasks


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=None)
    ap.add_argument("--train-limit", type=int, default=2000)
    ap.add_argument("--test-limit", type=int, default=1000)
    args = ap.parse_args()

    import distributed

    from minicnn.study.config import SweepConfig
    from minicnn.study.sweep import available_threads

    config = SweepConfig(**GRID, train_limit=args.train_limit, test_limit=args.test_limit)
    print(f"CPU: {cpu_model()}; {available_threads()} threads; Dask distributed {distributed.__version__}")
    print(f"grid: 2 baselines + {len(config.runs(Path('.')))} configurations x {len(config.amounts)} amounts, "
          f"{args.train_limit} train / {args.test_limit} test images, 1 epoch per step\n")
    with tempfile.TemporaryDirectory(prefix="bench-distributed-") as tmp:
        timed = time_sweeps(config, args.data, Path(tmp))
    reference = timed["--jobs 2"][1]
    print("| how | threads per task | wall time | results.csv = --jobs 2's (but seconds) |")
    print("|---|---|---|---|")
    threads = {"--jobs 1": available_threads(), "--jobs 2": max(1, available_threads() // 2), "--scheduler local:2": 1}
    for mode, (seconds, rows) in timed.items():
        print(f"| `{mode}` | {threads[mode]} | {seconds:.1f} s | {'yes' if rows == reference else 'no'} |")

    per_task = scheduler_overhead()
    print(f"\nscheduler: {per_task * 1e3:.2f} ms per no-op task ({1 / per_task:,.0f} tasks/s through 2 workers)")
    for machines, workers in ((100, 2), (100, 16)):
        needed = machines * workers / 120  # tasks finishing per second when each takes ~2 minutes
        print(f"{machines} machines x {workers} workers, ~2-minute tasks: {needed:.1f} tasks/s to schedule, "
              f"{needed * per_task:.2%} of this scheduler's time")


if __name__ == "__main__":
    main()
