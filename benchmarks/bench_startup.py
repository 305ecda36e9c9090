"""How long a new user waits: `minicnn --help`; a fresh install's `minicnn data prepare` (the data cache
built while a child process compiles the training kernels); the first `minicnn train` after it; and,
for comparison, a first `minicnn train` that compiles its kernels itself (after `data prepare
--no-compile`) and a warm one.

Each command runs in its own process, as a user runs it, launch to exit; a fresh install is an empty
kernel cache (NUMBA_CACHE_DIR) and an empty data cache (MINICNN_CACHE). Training: one epoch on the
first 1,024 training images of CIFAR-10 (MINICNN_DATA; else a synthetic stand-in), then the train and
test accuracy. Ends with the line
    cold start: N.N s      (a fresh install's first `minicnn train` after `minicnn data prepare`)

    python benchmarks/bench_startup.py [--repeats 1]
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def timed(args, env) -> float:
    """Seconds from launch to exit of ``minicnn ARGS`` in a fresh process; raises if it fails."""
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", "from minicnn.cli import cli; cli()", *args], env=env,
                          capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"minicnn {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return seconds


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=1, help="cold/warm pairs, each with a new empty cache")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        env = dict(os.environ)
        data = env.get("MINICNN_DATA")
        if not data:  # a synthetic stand-in, prepared once (not timed)
            import numpy as np

            from minicnn.io.cache import write_cache
            from minicnn.io.dataset import make_synthetic

            data = str(work / "synthetic.h5")
            write_cache(make_synthetic(1024, 1024, np.random.default_rng(0)), data)
            env["MINICNN_DATA"] = data  # where `train` finds it too
        train = ["train", "--epochs", "1", "--train-limit", "1024", "--test-limit", "1024"]

        rows = []
        for repeat in range(args.repeats):
            def fresh(name):  # an empty kernel cache and data cache
                env["NUMBA_CACHE_DIR"], env["MINICNN_CACHE"] = str(work / f"{name}{repeat}"), str(work / f"d{name}{repeat}")

            fresh("a")
            help_s = timed(["--help"], env)
            prepare = timed(["data", "prepare", "--data", data], env)
            first = timed(train + ["--out", str(work / f"first{repeat}.h5")], env)
            fresh("b")
            timed(["data", "prepare", "--no-compile", "--data", data], env)
            compiling = timed(train + ["--out", str(work / f"cold{repeat}.h5")], env)
            warm = timed(train + ["--out", str(work / f"warm{repeat}.h5")], env)
            rows.append({"minicnn --help": help_s, "data prepare (data + kernels)": prepare,
                         "first train after it": first, "train compiling its kernels": compiling,
                         "train, warm": warm})

    from minicnn.ladder.machine import cpu_model

    print(f"CPU: {cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    for name in rows[0]:
        print(f"{name:32s}" + "".join(f" {row[name]:6.1f} s" for row in rows))
    print(f"cold start: {min(row['first train after it'] for row in rows):.1f} s")


if __name__ == "__main__":
    main()
