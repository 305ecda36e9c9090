"""How long a new user waits: `minicnn --help`, and the first `minicnn train` of a fresh install (every
kernel compiled, the kernel cache empty) against a second one (kernels loaded from the cache).

Each command runs in its own process, as a user runs it, launch to exit, on the first 1,024 training
images of CIFAR-10 (or a synthetic stand-in when MINICNN_DATA is not set): one epoch, then the train and
test accuracy. The data cache is built once before the timings. Ends with the line
    cold start: N.N s      (the first `minicnn train` with an empty kernel cache, launch to exit)

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


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


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
        env["MINICNN_CACHE"] = str(work / "data-cache")
        train = ["train", "--epochs", "1", "--train-limit", "1024", "--test-limit", "1024", "--data", data]
        timed(["data", "prepare", "--data", data], env)  # the data cache, built once outside the timings

        rows = []
        for repeat in range(args.repeats):
            env["NUMBA_CACHE_DIR"] = str(work / f"kernels{repeat}")  # empty: a fresh install
            help_s = timed(["--help"], env)
            cold = timed(train + ["--out", str(work / f"cold{repeat}.h5")], env)
            warm = timed(train + ["--out", str(work / f"warm{repeat}.h5")], env)
            rows.append((help_s, cold, warm))

    print(f"CPU: {cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"{'':28s} {'seconds':>8s}")
    for help_s, cold, warm in rows:
        print(f"{'minicnn --help':28s} {help_s:8.1f}")
        print(f"{'train, cold (empty cache)':28s} {cold:8.1f}")
        print(f"{'train, warm (cached)':28s} {warm:8.1f}")
    print(f"cold start: {min(r[1] for r in rows):.1f} s")


if __name__ == "__main__":
    main()
