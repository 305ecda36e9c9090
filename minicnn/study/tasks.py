"""The tasks of a sweep as units that run anywhere: each runs in a private temporary folder, takes its
settings and the bytes of the files it resumes from, and returns its results and the bytes of the
files it wrote, so the machine that runs it needs no access to the sweep's folder.

    train_baseline   one seed's paper baseline   -> {'checkpoint': bytes of OUT/baselines/seedS.h5, ...}
    prune            one (configuration, seed)   -> {'rows', 'files': {path in the run folder: bytes}}

``run`` wraps both for a worker process: one task at a time per process with the process's share of
threads (Numba's setting, made before Numba starts), and the data checked against the client's
``fingerprint``. Nothing here imports Dask (``minicnn.study.distributed`` submits these) or, at import
time, Numba.
"""

from __future__ import annotations

import hashlib
import os
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

from minicnn.errors import DataError

_ONE_AT_A_TIME = threading.Lock()  # a worker process runs one task at a time, on all its threads
_LOADED: dict = {}  # the data this process loaded last: {(cache file, its mtime, limits): (dataset, fingerprint)}


def use_threads(n: int) -> None:
    """Let the calling thread's Numba kernels use ``n`` threads. Before Numba starts, it is also told
    to start no more, and not to pin them: several workers share a machine, and pinned threads of each
    would all sit on its first cores (the user's own settings win)."""
    if "numba" not in sys.modules:
        os.environ.setdefault("NUMBA_NUM_THREADS", str(n))
        os.environ.setdefault("OMP_PROC_BIND", "false")
    import numba

    numba.set_num_threads(max(1, min(n, numba.config.NUMBA_NUM_THREADS)))  # Numba's setting is per thread


def fingerprint(dataset) -> str:
    """sha256 of the images, labels and channel statistics of both splits (as loaded: after the limits)."""
    import numpy as np

    digest = hashlib.sha256()
    for name in ("x_train", "y_train", "x_test", "y_test", "channel_mean", "channel_std"):
        arr = np.ascontiguousarray(getattr(dataset, name))
        digest.update(f"{name} {arr.dtype.str} {arr.shape}\0".encode())
        digest.update(arr.tobytes())
    return digest.hexdigest()


def data_spec(data_path, train_limit, test_limit, dataset) -> dict:
    """What a task needs to load the client's data and check it: ``data_path`` (None: the worker's own
    MINICNN_DATA, cache or download), the limits and the fingerprint of the client's ``dataset``."""
    return {"path": None if data_path is None else str(data_path), "train_limit": train_limit,
            "test_limit": test_limit, "fingerprint": fingerprint(dataset)}


def checked_dataset(data: dict):
    """The dataset ``data`` (a ``data_spec``) describes, as this machine has it (loaded once per process);
    DataError when it differs from the client's."""
    from minicnn.io.data import load_cache, prepare, resolve_source

    source = prepare(resolve_source(data["path"]))
    key = (str(source), source.stat().st_mtime_ns, data["train_limit"], data["test_limit"])
    if key not in _LOADED:
        _LOADED.clear()
        dataset = load_cache(source, train_limit=data["train_limit"], test_limit=data["test_limit"])
        _LOADED[key] = (dataset, fingerprint(dataset))
    dataset, found = _LOADED[key]
    if found != data["fingerprint"]:
        raise DataError(f"worker {socket.gethostname()} (pid {os.getpid()}) reads other CIFAR-10 data than the "
                        f"client: {source} has fingerprint {found[:16]}, the client's {data['fingerprint'][:16]}; "
                        f"give every machine the same data (MINICNN_DATA or its cache)")
    return dataset


def train_baseline(config, checkpoint: bytes | None, backend: str, *, dataset) -> dict:
    """Train (or resume, from ``checkpoint``: the bytes of an unfinished or finished baseline) the
    baseline ``config`` (a TrainConfig). Returns {'seed', 'test_acc', 'diverged', 'checkpoint' (bytes),
    'seconds'}."""
    from minicnn.study.training import run_training

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="minicnn-task-") as tmp:
        path = Path(tmp) / "baseline.h5"
        if checkpoint is not None:
            path.write_bytes(checkpoint)
        result = run_training(config, path, dataset=dataset, backend=backend, echo=lambda *_: None)
        return {"seed": config.seed, "test_acc": result["test_acc"], "diverged": result["diverged"],
                "checkpoint": path.read_bytes(), "seconds": time.perf_counter() - t0}


def prune(config, files: dict[str, bytes], baseline: dict, backend: str, *, dataset) -> dict:
    """Run (or resume) the pruning run ``config`` (a PruneConfig) in a private folder holding ``files``
    (its run folder so far, as ``io.files.read_tree`` reads it), from ``baseline`` (what
    ``train_baseline`` returned). Returns {'rows', 'files' (those new or changed), 'seconds'}: written
    into the run folder, they make it what ``run_prune`` would have left there."""
    from minicnn.io.files import read_tree, write_tree
    from minicnn.study.runs import run_prune

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="minicnn-task-") as tmp:
        run_dir, baseline_file = Path(tmp) / "run", Path(tmp) / "baseline.h5"
        write_tree(run_dir, files)
        baseline_file.write_bytes(baseline["checkpoint"])
        rows = run_prune(config, run_dir, dataset=dataset, backend=backend, echo=lambda *_: None,
                         baseline_file=baseline_file)
        written = {name: blob for name, blob in read_tree(run_dir).items() if files.get(name) != blob}
    return {"rows": rows, "files": written, "seconds": time.perf_counter() - t0}


TASKS = {"baseline": train_baseline, "prune": prune}


def run(kind: str, threads: int, data: dict | None, *args) -> dict:
    """Run task ``kind`` (``TASKS``, or 'noop') with ``args`` in this worker process: after the tasks
    before it, on ``threads`` threads, on the data ``data`` describes (checked). 'noop' does only that
    (and loads no data): it measures what a task costs around its work."""
    with _ONE_AT_A_TIME:
        use_threads(threads)
        if kind == "noop":
            return {"seconds": 0.0}
        return TASKS[kind](*args, dataset=checked_dataset(data))
