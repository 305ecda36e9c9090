"""A sweep killed with SIGKILL at several points, then rerun, ends exactly where an uninterrupted sweep
does: the same results (every cell but the wall time) and the same checkpoints (every array), and no
temporary file left anywhere.

The kill points, in one sweep folder, each followed by a rerun of the same command:
  1. the sweep's process, when its baseline's first epoch is saved (mid-baseline);
  2. its worker process, when the first pruning step is saved (the sweep must then end with one
     `Error:` line, and a rerun resume);
  3. the sweep's process, when a temporary file of a step checkpoint or results table is seen (mid-save
     when the poll catches one; else at the next step file);
  4. the sweep's process, when it writes the merged results table (between configurations);
  5. writers killed inside ``atomic_path`` while saving the merged results, the settings and a run's
     results (a save killed for certain, not by timing), leaving their temporary files behind.
After every kill no process of the sweep remains (its workers die with it). Linux only (/proc).
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")

CLI = [sys.executable, "-c", "from minicnn.cli import cli; cli()"]
GRID = ["--schedules", "oneshot,iterative", "--methods", "structured", "--lrs", "0.1", "--amounts", "0,.3,.6,.9",
        "--epochs", "2", "--train-limit", "1024", "--test-limit", "256", "--jobs", "1"]
TIMEOUT = 120


def _env(tmp_path: Path) -> dict:
    env = dict(os.environ, MINICNN_CACHE=str(tmp_path / "cache"), NUMBA_NUM_THREADS="1")
    env.pop("MINICNN_DATA", None)
    return env


def _sweep(data: str, out: Path, env: dict) -> subprocess.Popen:
    return subprocess.Popen([*CLI, "sweep", *GRID, "--data", data, "--out", str(out)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _children(pid: int) -> list[int]:
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    return kids


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _worker(pid: int) -> int | None:
    for kid in _children(pid):
        try:
            if b"spawn_main" in Path(f"/proc/{kid}/cmdline").read_bytes():
                return kid
        except OSError:
            continue
    return None


def _temp_files(out: Path) -> list[Path]:
    return [p for p in out.rglob(".*.tmp")]


def _kill_when(proc: subprocess.Popen, ready, *, victim=None) -> tuple[str, str]:
    """Poll ``ready()`` every 0.5 ms; when it holds, SIGKILL ``victim(proc.pid)`` (default: the sweep's own
    process). Returns the sweep's output; fails if the sweep ends first. Checks that no process of the
    sweep outlives the kill."""
    family: set[int] = set()
    deadline = time.monotonic() + TIMEOUT
    while not ready():
        assert proc.poll() is None, "the sweep ended before the kill point:\n" + proc.communicate()[1]
        assert time.monotonic() < deadline, "the kill point never came"
        family.update(_children(proc.pid))
        time.sleep(0.0005)
    target = proc.pid if victim is None else victim(proc.pid)
    assert target is not None
    os.kill(target, signal.SIGKILL)
    out, err = proc.communicate(timeout=TIMEOUT)
    family.update(kid for kid in _children(proc.pid))
    for _ in range(200):  # workers get SIGKILL when the sweep's process dies (PR_SET_PDEATHSIG)
        if not any(_alive(pid) for pid in family):
            break
        time.sleep(0.05)
    assert not any(_alive(pid) for pid in family), "a worker outlived the sweep"
    return out, err


def _new_file(out: Path, pattern: str, before: set) -> callable:
    return lambda: any(str(p) not in before for p in out.glob(pattern))


_HALF_SAVE = """
import sys, time
from minicnn.io.files import atomic_path
with atomic_path(sys.argv[1]) as tmp:
    tmp.write_bytes(b"half of a file")
    print("writing", flush=True)
    time.sleep(60)
"""


def _killed_mid_save(path: Path, env: dict) -> None:
    """A writer SIGKILLed inside atomic_path(path): it leaves path's temporary file behind."""
    proc = subprocess.Popen([sys.executable, "-c", _HALF_SAVE, str(path)], env=env, stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "writing"
    proc.kill()
    proc.wait()


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(fh)]


def _arrays(path: Path) -> dict[str, np.ndarray]:
    found = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: found.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return {k: v for k, v in found.items() if k != "seconds"}


def assert_same_sweep(a: Path, b: Path) -> None:
    for table in sorted(a.rglob("results.csv")):
        assert _rows(table) == _rows(b / table.relative_to(a)), table
    checkpoints = sorted(p.relative_to(a) for p in a.rglob("*.h5"))
    assert checkpoints == sorted(p.relative_to(b) for p in b.rglob("*.h5"))
    for name in checkpoints:
        x, y = _arrays(a / name), _arrays(b / name)
        assert x.keys() == y.keys(), name
        for key in x:
            assert x[key].dtype == y[key].dtype and x[key].shape == y[key].shape, (name, key)
            if x[key].dtype.kind in "fc":  # bit for bit
                assert x[key].tobytes() == y[key].tobytes(), (name, key)
            else:  # text columns hold Python objects
                assert np.array_equal(x[key], y[key]), (name, key)


def test_sweep_killed_at_several_points_resumes_exactly(tmp_path, make_synthetic_cache):
    data = str(make_synthetic_cache(1024, 256, seed=11))
    env = _env(tmp_path)
    ref, out = tmp_path / "ref", tmp_path / "cut"
    whole = _sweep(data, ref, env)
    stdout, stderr = whole.communicate(timeout=TIMEOUT)
    assert whole.returncode == 0, stderr
    assert "1 worker(s) x 1 thread(s)" in stdout  # NUMBA_NUM_THREADS=1 is respected

    # 1. the sweep, mid-baseline
    _kill_when(_sweep(data, out, env), lambda: (out / "baselines" / "seed0.h5").exists())
    # 2. its worker, at the first step checkpoint: the sweep ends with one line
    _, err = _kill_when(_sweep(data, out, env), lambda: any(out.glob("runs/*/steps/000_*.h5")), victim=_worker)
    errors = [line for line in err.splitlines() if line.startswith("Error:")]
    assert errors and len(errors) == 1 and "worker process died" in errors[0] and "Traceback" not in err, err
    # 3. the sweep, mid-save if the poll catches a temporary file, else at the next step file
    steps = {str(p) for p in out.glob("runs/*/steps/*.h5")}
    saving = lambda: any("amount" in p.name or "results" in p.name for p in _temp_files(out))  # noqa: E731
    _kill_when(_sweep(data, out, env), lambda: saving() or _new_file(out, "runs/*/steps/*.h5", steps)())
    print(f"killed mid-save: {bool(_temp_files(out))}")
    # 4. the sweep, when it (re)writes the merged results
    merged = out / "results.csv"
    stamp = merged.stat().st_mtime_ns if merged.exists() else None
    _kill_when(_sweep(data, out, env), lambda: merged.exists() and merged.stat().st_mtime_ns != stamp)
    # 5. writers killed inside atomic_path, for certain
    for path in (out / "results.csv", out / "results.h5", out / "sweep.json",
                 out / "runs" / "iterative-structured-lr0.1-seed0" / "results.csv"):
        _killed_mid_save(path, env)
    assert len(_temp_files(out)) >= 4

    last = _sweep(data, out, env)
    stdout, stderr = last.communicate(timeout=TIMEOUT)
    assert last.returncode == 0, stderr
    assert_same_sweep(ref, out)
    assert _temp_files(out) == [] and not list(out.rglob("*.probe"))
