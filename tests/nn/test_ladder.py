"""Every rung of the kernel ladder (minicnn/ladder) equals the reference op, and stays short.

Each rung's training step (loss, logits, dw, db, dfc_w, dfc_b) is held to
minicnn.nn.ref.convnet.conv_relu_pool_linear_loss in float32, within |rung - ref| <= ATOL + RTOL*|ref|
(as tests/test_fast_vs_ref.py). The inputs are multiples of 1/4 and 1/8: the conv, the pooling
decisions and the logits are then exact in any summation order, so only the softmax's rounding
separates a rung from the reference, and a tie is a real tie. Rung 1 (plain Python loops) runs on the
smallest cases only.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import minicnn.ladder
from minicnn.ladder import RUNGS, load
from minicnn.nn.ref.convnet import conv_relu_pool_linear_loss as reference

ATOL = 1e-5
RTOL = 1e-4
NAMES = [name for name, _ in RUNGS]
LADDER = Path(minicnn.ladder.__file__).resolve().parent
OUTPUTS = ("loss", "logits", "dw", "db", "dfc_w", "dfc_b")

# (N, C, H, W, F, K, pad, classes)
CASES = [
    (3, 3, 32, 32, 8, 3, 1, 10),  # the paper's model
    (5, 2, 9, 11, 3, 3, 1, 4),  # odd sizes: the last conv row and column are not pooled
    (3, 3, 10, 8, 4, 3, 0, 3),  # no padding
    (2, 2, 7, 10, 3, 5, 2, 5),  # 5x5 filters (not rung 6's)
    (3, 1, 6, 6, 1, 3, 1, 2),  # one channel, one filter
    (7, 2, 8, 6, 2, 3, 1, 3),  # a batch that the threads do not split evenly
]
SMALL = {CASES[1], CASES[2], CASES[4]}  # rung 1's


def grid(rng, shape, denominator: int, top: int) -> np.ndarray:
    """Random multiples of 1/denominator in [-top/denominator, top/denominator], float32."""
    return (rng.integers(-top, top + 1, size=shape) / denominator).astype(np.float32)


def inputs(rng, case):
    n, c, h, w, f, k, pad, classes = case
    ph, pw = (h + 2 * pad - k + 1) // 2, (w + 2 * pad - k + 1) // 2
    return (grid(rng, (n, c, h, w), 4, 2), grid(rng, (f, c, k, k), 4, 2), grid(rng, f, 4, 2), pad,
            grid(rng, (classes, f * ph * pw), 8, 2), grid(rng, classes, 4, 2), rng.integers(0, classes, size=n))


def assert_same(got, want, what: str) -> None:
    assert isinstance(got[0], float), f"{what}: the loss is a float"
    for name, a, b in zip(OUTPUTS, got, want):
        a, b = np.asarray(a), np.asarray(b)
        assert a.shape == b.shape and a.dtype == b.dtype, f"{what} {name}: {a.shape} {a.dtype} != {b.shape} {b.dtype}"
        err = np.abs(a.astype(np.float64) - b)
        allowed = ATOL + RTOL * np.abs(b.astype(np.float64))
        assert np.all(err <= allowed), f"{what} {name}: |rung - ref| up to {np.max(err - allowed) + ATOL:.3g}"


def runs(name: str, case) -> bool:
    return (name != "rung1_loops" or case in SMALL) and (name != "rung6_ninetap" or case[5] == 3)


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(map(str, c)))
@pytest.mark.parametrize("name", NAMES)
def test_rung_equals_reference(name, case, rng):
    if not runs(name, case):
        pytest.skip("rung 1 runs the small cases; rung 6 takes 3x3 filters")
    args = inputs(rng, case)
    assert_same(load(name).conv_relu_pool_linear_loss(*args), reference(*args), name)


@pytest.mark.parametrize("name", NAMES)
def test_rung_pools_ties_as_reference(name, rng):
    """Ties: images of 2x2 blocks of equal values under a centre-only filter make windows of equal
    positive conv values (the first cell must win, or dw goes elsewhere), blocks of zeros and a filter
    whose bias ReLU clips everywhere make windows that pass no gradient."""
    x = np.repeat(np.repeat(grid(rng, (3, 2, 4, 5), 4, 2), 2, axis=2), 2, axis=3)  # (3, 2, 8, 10)
    x[1, :, :4] = 0.0
    w = np.zeros((3, 2, 3, 3), dtype=np.float32)
    w[0, :, 1, 1] = [0.5, 0.25]  # copies the blocks: ties at every window
    w[1] = grid(rng, (2, 3, 3), 4, 2)
    w[2, :, 1, 1] = 0.25
    b = np.array([0.0, 0.25, -8.0], dtype=np.float32)  # filter 2: ReLU passes nothing
    fc_w, fc_b = grid(rng, (4, 3 * 4 * 5), 8, 2), grid(rng, 4, 4, 2)
    args = (x, w, b, 1, fc_w, fc_b, np.array([0, 3, 1]))
    want = reference(*args)
    assert np.all(want[2][2] == 0) and np.any(want[2][0] != 0)
    assert_same(load(name).conv_relu_pool_linear_loss(*args), want, name)


def test_rung6_refuses_other_filters(rng):
    with pytest.raises(ValueError, match="3x3"):
        load("rung6_ninetap").conv_relu_pool_linear_loss(*inputs(rng, CASES[3]))


def test_rungs_are_short():
    """Every rung module is at most 120 lines, and every rung is on the list."""
    rungs = sorted(path.stem for path in LADDER.glob("rung*.py"))
    assert rungs == sorted(NAMES)
    for name in rungs:
        lines = (LADDER / f"{name}.py").read_text().count("\n")
        assert lines <= 120, f"{name}.py has {lines} lines"


def test_unknown_rung():
    with pytest.raises(ValueError, match="no rung"):
        load("rung8")


def test_harness_table_and_figure(tmp_path, monkeypatch):
    """The harness's table on a tiny batch (rungs 2 to 7: rung 1 as on the paper batch would take long),
    and the figure written as PNG and SVG."""
    from minicnn.ladder import __main__ as harness
    from plots.ladder import ladder_figure

    monkeypatch.setattr(harness, "RUNGS", [rung for rung in RUNGS if rung[0] != "rung1_loops"])
    result = harness.measure(batch_size=8, repeats=1, slow_batch=2, with_torch=False, min_seconds=0.0)
    assert [row["name"] for row in result["rows"]] == NAMES[1:] and result["torch"] is None
    assert all(row["rate"] > 0 for row in result["rows"]) and result["flops"] == 1_517_598
    table = harness.report(result)
    assert "GFLOP/s" in table and "% of peak" in table and "noisy" in table and "CPU:" in table
    paths = ladder_figure([row["idea"] for row in result["rows"]], [row["rate"] for row in result["rows"]], tmp_path,
                          torch_rate=1000.0, title="test")
    assert sorted(p.name for p in paths) == ["ladder.png", "ladder.svg"] and all(p.stat().st_size for p in paths)


_PLAIN_PYTHON_CHECK = """
import numpy as np
from minicnn.ladder import load
from minicnn.nn.ref.convnet import conv_relu_pool_linear_loss as reference
from test_ladder import CASES, assert_same, inputs
for case in (CASES[1], CASES[4]):
    args = inputs(np.random.default_rng(1), case)
    want = reference(*args)
    for name in ("rung3_numba_direct", "rung4_fused", "rung5_parity", "rung6_ninetap"):
        assert_same(load(name).conv_relu_pool_linear_loss(*args), want, name)
print("ok")
"""


def test_rungs_as_plain_python():
    """With NUMBA_DISABLE_JIT=1 the rungs' kernels run as ordinary Python (prange is range): their
    logic, not only the compiled code, equals the reference."""
    root = LADDER.parents[1]
    here = Path(__file__).resolve().parent
    env = dict(os.environ, NUMBA_DISABLE_JIT="1")
    env["PYTHONPATH"] = os.pathsep.join([str(root), str(here), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    proc = subprocess.run([sys.executable, "-c", _PLAIN_PYTHON_CHECK], env=env, cwd=root, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-4000:]
