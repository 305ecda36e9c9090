"""The kernels as plain Python (NUMBA_DISABLE_JIT=1) and as cached machine code: both must compute
what the compiled kernels do."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from _fast_compare import ROOT, run_python


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_split_step_equals_its_python_twin(dtype, rng):
    """The vector de-interleave (minicnn/nn/fast/_simd.py) against the plain loop it stands for, at odd
    offsets in all three arrays."""
    from numba import njit

    from minicnn.nn.fast._simd import STEP, _split_step_python, _split_step_vector

    @njit
    def compiled(src, s, even, e, odd, o):
        _split_step_vector(src, s, even, e, odd, o)

    src = rng.standard_normal(2 * STEP + 9).astype(dtype)
    for s, e, o in [(0, 0, 0), (3, 5, 1), (9, 2, 7)]:
        got_even, got_odd = np.full(STEP + 8, -1.0, dtype), np.full(STEP + 8, -1.0, dtype)
        want_even, want_odd = got_even.copy(), got_odd.copy()
        compiled(src, s, got_even, e, got_odd, o)
        _split_step_python(src, s, want_even, e, want_odd, o)
        np.testing.assert_array_equal(got_even, want_even)
        np.testing.assert_array_equal(got_odd, want_odd)
        np.testing.assert_array_equal(want_even[e:e + STEP], src[s:s + 2 * STEP:2])  # the twin does what it says


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_four_lane_sparse_steps_equal_their_python_twins(dtype, rng):
    """The sparse linear layer's 4-lane steps (minicnn/nn/fast/_simd_linear.py) against the plain loops
    they stand for, bit for bit: runs of kept weights of odd and even length, empty, and repeated slots."""
    from numba import njit

    from minicnn.nn.fast._simd_linear import _dot4_python, _dot4_vector, _grads4_python, _grads4_vector

    @njit
    def compiled(values, slots, start, stop, table, out, o, grad_out, k, dvalues, dtable):
        _dot4_vector(values, slots, start, stop, table, out, o)
        _grads4_vector(values, slots, start, stop, grad_out, k, table, dvalues, dtable)

    values, table = rng.standard_normal(9).astype(dtype), rng.standard_normal(4 * 6).astype(dtype)
    slots = np.array([5, 0, 3, 3, 1, 4, 2, 0, 5], dtype=np.int64)
    grad_out = rng.standard_normal(12).astype(dtype)
    for start, stop, o, k in [(0, 9, 0, 0), (2, 6, 3, 8), (4, 4, 1, 4), (3, 4, 0, 2)]:
        got = [rng.standard_normal(8).astype(dtype), rng.standard_normal(4 * 9).astype(dtype),
               rng.standard_normal(4 * 6).astype(dtype)]
        want = [a.copy() for a in got]
        compiled(values, slots, start, stop, table, got[0], o, grad_out, k, got[1], got[2])
        _dot4_python(values, slots, start, stop, table, want[0], o)
        _grads4_python(values, slots, start, stop, grad_out, k, table, want[1], want[2])
        for a, b in zip(got, want):
            np.testing.assert_array_equal(a, b)
    # the twin does what it says: the logits' four lanes are the dot products (to rounding)
    out = np.zeros(4, dtype)
    _dot4_python(values, slots, 0, 9, table, out, 0)
    np.testing.assert_allclose(out, (values[:, None] * table.reshape(6, 4)[slots]).sum(axis=0), rtol=1e-5, atol=1e-5)


def class_steps(matrix):
    """matrix (K, L) class-interleaved, as _simd_linear's dense steps read a weight: (ceil(L / STEP), K,
    STEP), entry (k, e) at [e // STEP, k, e % STEP], zeros past L."""
    from minicnn.nn.fast._simd import STEP

    n_class, length = matrix.shape
    n_steps = -(-length // STEP)
    padded = np.zeros((n_class, n_steps * STEP), matrix.dtype)
    padded[:, :length] = matrix
    return np.ascontiguousarray(padded.reshape(n_class, n_steps, STEP).transpose(1, 0, 2))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n_class, flat_len", [(10, 2176), (7, 37), (3, 16), (1, 5)])
def test_dense_logits_equal_their_twin_and_the_products(dtype, n_class, flat_len, rng):
    """The dense linear layer's logits over a group (minicnn/nn/fast/_simd_linear.py) against their
    plain twin bit for bit: whole blocks of classes and classes left, whole vector steps and a masked last
    one (the entries past the group's pooled values never read); the twin against the products."""
    from numba import njit

    from minicnn.nn.fast._simd_linear import _dense_logits4_vector, dense_logits4_loops

    @njit
    def compiled(fc_steps, fc_b, pooled, z_t, n_class, flat_len):
        _dense_logits4_vector(fc_steps, fc_b, pooled, z_t, n_class, flat_len)

    fc = rng.standard_normal((n_class, flat_len)).astype(dtype)
    fc_b = rng.standard_normal(n_class).astype(dtype)
    pooled = rng.standard_normal(4 * flat_len + 3).astype(dtype)
    pooled[-3:] = np.nan  # past the group's: never read
    got, want = np.full(4 * n_class + 2, -7.0, dtype), np.full(4 * n_class + 2, -7.0, dtype)
    compiled(class_steps(fc).ravel(), fc_b, pooled, got[:-2], n_class, flat_len)
    dense_logits4_loops(class_steps(fc).ravel(), fc_b, pooled, want[:-2], n_class, flat_len)
    np.testing.assert_array_equal(got, want)
    assert np.all(got[-2:] == -7.0)
    tol = dict(rtol=1e-5, atol=1e-4) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)
    images = pooled[:4 * flat_len].reshape(4, flat_len)
    np.testing.assert_allclose(want[:-2].reshape(n_class, 4), (images @ fc.T + fc_b).T, **tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [272, 37, 16, 5, 0])
def test_window_codes_equal_their_python_twin(dtype, n, rng):
    """The 2x2 max-pool with its codes as vectors (minicnn/nn/fast/_simd_window.py) against the plain loop it
    stands for, bit for bit (signed zeros too), and the NaN flag alike: ties (the first maximum wins),
    -0.0 and 0.0, windows blocked by ReLU, an inf, a NaN; whole vector steps and a masked last one, the
    entries past n untouched; the twin against NumPy's max and argmax."""
    from numba import njit

    from minicnn.nn.fast._simd_window import _window_codes_python, _window_codes_vector

    @njit
    def compiled(conv, at, pooled, code):
        return _window_codes_vector(conv, at, pooled, code)

    at = 3
    conv = rng.integers(-3, 4, (2, 2, at + n + 20)).astype(dtype)  # small integers: many ties and zeros
    conv[0, 1, at:at + n:7] = -0.0
    for poison in (None, np.inf, np.nan):
        if poison is not None and n:
            conv[1, 0, at + n // 2] = poison
        got = (np.full(n + 4, -7.0, dtype), np.full(n + 4, 9, np.int8))
        want = (got[0].copy(), got[1].copy())
        flag = compiled(conv, at, got[0][:n], got[1][:n])
        assert flag == _window_codes_python(conv, at, want[0][:n], want[1][:n])
        np.testing.assert_array_equal(got[0].view(f"u{got[0].itemsize}"), want[0].view(f"u{want[0].itemsize}"))
        np.testing.assert_array_equal(got[1], want[1])
        assert np.all(got[0][n:] == -7.0) and np.all(got[1][n:] == 9)
        assert flag == (poison is not None and poison != poison and n > 0)  # NaN flags; inf alone does not
        windows = conv[:, :, at:at + n].reshape(4, n)
        finite = ~np.isnan(windows).any(axis=0)
        best = windows.max(axis=0)
        np.testing.assert_array_equal(want[0][:n][finite], np.maximum(best, 0)[finite])
        np.testing.assert_array_equal(want[1][:n][finite], np.where(best > 0, windows.argmax(axis=0), 4)[finite])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n_class, flat_len", [(10, 2176), (10, 37), (3, 16), (1, 5)])
def test_dense_linear_backward_equals_its_twin_and_the_products(dtype, n_class, flat_len, rng):
    """The dense linear layer's backward over a group (minicnn/nn/fast/_simd_linear.py) against its plain
    twin bit for bit, whole vector steps and a masked last one (pooled's and dpooled's entries past the
    group's untouched); the twin against the matrix products it stands for."""
    from numba import njit

    from minicnn.nn.fast._simd import STEP
    from minicnn.nn.fast._simd_linear import _dense_grads4_vector, dense_grads4_loops

    @njit
    def compiled(dz, pooled, fc_steps, dfc_steps, dfcb, dpooled, n_class, flat_len):
        _dense_grads4_vector(dz, pooled, fc_steps, dfc_steps, dfcb, dpooled, n_class, flat_len)

    dz = rng.standard_normal((4, n_class)).astype(dtype)
    pooled = rng.standard_normal(4 * flat_len + 3).astype(dtype)  # 3 entries past the group's: never read
    fc = rng.standard_normal((n_class, flat_len)).astype(dtype)
    fc_steps = class_steps(fc)
    n_steps = -(-flat_len // STEP)
    dfc0 = class_steps(rng.standard_normal((n_class, flat_len)).astype(dtype))
    dfcb0 = rng.standard_normal(n_class).astype(dtype)
    got = [dfc0.copy(), dfcb0.copy(), np.full(4 * flat_len + 3, -7.0, dtype)]
    want = [a.copy() for a in got]
    pooled[-3:] = np.nan
    compiled(dz.ravel(), pooled, fc_steps.ravel(), got[0].ravel(), got[1], got[2], n_class, flat_len)
    dense_grads4_loops(dz.ravel(), pooled, fc_steps.ravel(), want[0].ravel(), want[1], want[2], n_class, flat_len)
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)
    assert np.all(got[2][4 * flat_len:] == -7.0)
    # the twin does what it says, to rounding
    tol = dict(rtol=1e-5, atol=1e-4) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)
    images = pooled[:4 * flat_len].reshape(4, flat_len)
    dfc = want[0].transpose(1, 0, 2).reshape(n_class, n_steps * STEP)[:, :flat_len]
    base = dfc0.transpose(1, 0, 2).reshape(n_class, n_steps * STEP)[:, :flat_len]
    np.testing.assert_allclose(dfc, base + dz.T @ images, **tol)
    np.testing.assert_allclose(want[1], dfcb0 + dz.sum(axis=0), **tol)
    np.testing.assert_allclose(want[2][:4 * flat_len].reshape(4, flat_len), dz @ fc, **tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("zero_blocked", [False, True])
def test_unblocked_sums_equal_their_python_twin(dtype, zero_blocked, rng):
    """The vector lane sums of pool2's gradient sums (minicnn/nn/fast/_simd.py) against the plain loop they
    stand for, bit for bit, over lanes already holding sums; an inf in a blocked entry and a NaN in a
    kept one reach check as the docstring says."""
    from numba import njit

    from minicnn.nn.fast._simd import STEP, _unblocked_sums_python, _unblocked_sums_vector

    @njit
    def compiled(grad, code, whole, lanes, check):
        _unblocked_sums_vector(grad, code, whole, lanes, check, zero_blocked)

    whole = 5 * STEP
    code = rng.integers(0, 5, size=whole + 7).astype(np.int8)  # entries past whole are not read
    grad = rng.standard_normal(whole + 7).astype(dtype)
    start_lanes = rng.standard_normal(STEP).astype(dtype)
    for poison in (None, "blocked inf", "kept nan"):
        g = grad.copy()
        if poison == "blocked inf":
            code[21], g[21] = 4, np.inf
        if poison == "kept nan":
            code[50], g[50] = 1, np.nan
        got = (g.copy(), start_lanes.copy(), np.zeros(STEP, dtype))
        want = (g.copy(), start_lanes.copy(), np.zeros(STEP, dtype))
        compiled(got[0], code, whole, got[1], got[2])
        with np.errstate(invalid="ignore"):  # inf * 0, on purpose
            _unblocked_sums_python(want[0], code, whole, want[1], want[2], zero_blocked)
        for a, b in zip(got, want):
            np.testing.assert_array_equal(a, b)
        kept = np.where(code[:whole] < 4, g[:whole], 0).astype(dtype).reshape(-1, STEP)
        sums = start_lanes.copy()
        for row in kept:  # the twin does what it says: entry q into lane q % STEP, in order
            sums += row
        np.testing.assert_array_equal(want[1], sums)
        assert np.isnan(want[2]).any() == (poison == "kept nan" or (poison == "blocked inf" and not zero_blocked))
        if zero_blocked:
            np.testing.assert_array_equal(want[0][:whole], kept.reshape(-1))
        np.testing.assert_array_equal(want[0][whole:], g[whole:])


def test_prefetch_compiles_and_changes_nothing(rng):
    """The prefetch hint (minicnn/nn/fast/_simd.py) compiles to LLVM's prefetch and leaves the array as it was."""
    from numba import njit

    from minicnn.nn.fast._simd import _prefetch_vector

    @njit
    def touch(a):
        for i in range(0, a.size, 16):
            _prefetch_vector(a, i)
        return a.sum()

    a = rng.standard_normal(100).astype(np.float32)
    before = a.copy()
    np.testing.assert_allclose(touch(a), before.sum(), rtol=1e-5)
    np.testing.assert_array_equal(a, before)
    assert "prefetch" in touch.inspect_asm(touch.signatures[0])


# --------------------------------------------------------------------- kernels as plain Python
def test_fast_kernels_as_plain_python():
    """With NUMBA_DISABLE_JIT=1 the kernels run as ordinary Python (prange is range): their logic,
    not only the compiled code, must equal the reference (tests/nn/_plain_python_kernels.py)."""
    proc = run_python([str(Path(__file__).with_name("_plain_python_kernels.py"))], timeout=600, NUMBA_DISABLE_JIT="1")
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    errors = json.loads(line[len("RESULT "):])
    expected = {"conv forward", "conv dx", "conv dw", "conv db", "im2col", "col2im", "pool forward",
                "pool backward", "relu forward", "relu backward", "linear forward", "linear dx", "linear dw",
                "linear db", "softmax loss", "softmax dlogits", "sgd m=0.0", "sgd m=0.9", "block forward",
                "block dx", "block dw", "block db", "conv-relu forward", "conv-relu dx", "conv-relu dw",
                "conv-relu db", "convnet loss", "convnet logits", "convnet dw", "convnet db", "convnet dfc_w",
                "convnet dfc_b", "convnet inference", "conv pair", "winograd forward", "winograd dx", "winograd dw",
                "winograd db"}
    expected |= {f"convnet {kind} {name}" for kind in ("pixels", "sparse", "taps")
                 for name in ("loss", "logits", "dw", "db", "dfc_w", "dfc_b")}
    assert set(errors) == expected
    # each value is max |fast - ref| / (ATOL + RTOL |ref|): below 1 means within tolerance
    bad = {k: v for k, v in errors.items() if not v <= 1.0}
    assert not bad, bad


def test_fast_maxpool_as_plain_python_on_a_wide_image():
    script = ("import numpy as np\n"
              "from minicnn.nn.backend import get_backend\n"
              "f, r = get_backend('fast'), get_backend('ref')\n"
              "x = np.random.default_rng(0).random((1, 1, 2, 300)).astype(np.float32)\n"
              "(o, c), (o2, c2) = f.maxpool2d_forward(x, 2), r.maxpool2d_forward(x, 2)\n"
              "g = np.ones_like(o)\n"
              "assert np.array_equal(f.maxpool2d_backward(g, c), r.maxpool2d_backward(g, c2))\n")
    proc = run_python(["-c", script], timeout=300, NUMBA_DISABLE_JIT="1")
    assert proc.returncode == 0, proc.stderr[-2000:]


# --------------------------------------------------------------------- the compiled-kernel cache
def test_kernel_cache_folder_follows_every_fast_source(tmp_path, monkeypatch):
    """A kernel's cached machine code includes the helpers it calls from other files, which Numba does
    not re-check: the cache folder is named after all of minicnn/nn/fast's sources, so a change to any one
    of them (here the vector helper only) compiles afresh."""
    import shutil

    import numba

    from minicnn.nn.fast import _jit

    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    sources = tmp_path / "fast"
    shutil.copytree(ROOT / "minicnn" / "nn" / "fast", sources, ignore=shutil.ignore_patterns("__pycache__"))
    first = _jit._kernel_cache_dir(sources)
    assert first == _jit._kernel_cache_dir(sources)
    assert Path(first).parent == sources / "__pycache__"
    with open(sources / "_simd.py", "a") as f:
        f.write("# changed\n")
    assert _jit._kernel_cache_dir(sources) != first
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "mine"))
    assert _jit._kernel_cache_dir(sources) is None  # the user's choice stands
    if _jit._CACHE_DIR is not None:
        assert numba.config.CACHE_DIR == _jit._CACHE_DIR


_WHOLE_OP_RUN = """
import sys
import numpy as np
from minicnn.nn.fast import convnet
rng = np.random.default_rng(0)
x = rng.standard_normal((64, 3, 32, 32)).astype(np.float32)
w, b = (rng.standard_normal((8, 3, 3, 3)) * 0.2).astype(np.float32), (rng.standard_normal(8) * 0.1).astype(np.float32)
fc_w, fc_b = (rng.standard_normal((10, 2048)) * 0.02).astype(np.float32), np.zeros(10, np.float32)
out = convnet.conv_relu_pool_linear_loss(x, w, b, 1, fc_w, fc_b, rng.integers(0, 10, 64))
np.savez(sys.argv[1], *[np.asarray(o) for o in out])
"""


def test_whole_model_op_same_compiled_or_cached(tmp_path):
    """A process that compiles the paper model's whole-model op and one that loads it from the kernel
    cache compute the same bits: training at lr 0.8 is chaotic, so a last-bit difference in one
    gradient sum (db, once) sent `minicnn train`'s first run to other accuracies than its second."""
    runs = []
    for name in ("compiled", "cached"):
        out = tmp_path / f"{name}.npz"
        proc = run_python(["-c", _WHOLE_OP_RUN, str(out)], timeout=600, NUMBA_CACHE_DIR=str(tmp_path / "kernels"))
        assert proc.returncode == 0, proc.stderr[-4000:]
        runs.append(np.load(out))
    for key, what in zip(runs[0].files, ("loss", "logits", "dw", "db", "dfc_w", "dfc_b")):
        np.testing.assert_array_equal(runs[0][key], runs[1][key], err_msg=what)



def test_freed_memory_kept_on_glibc_unless_the_user_chose(monkeypatch):
    """The fast backend asks glibc's malloc to keep freed memory (minicnn/nn/fast/heap.py): it does on
    glibc, and leaves a user's MALLOC_TOP_PAD_ alone."""
    import platform

    from minicnn.nn.fast.heap import keep_freed_memory

    if platform.libc_ver()[0] == "glibc":
        assert keep_freed_memory() is True
    monkeypatch.setenv("MALLOC_TOP_PAD_", "1024")
    assert keep_freed_memory() is False


def test_openblas_threads_told_not_to_spin_unless_the_user_chose():
    """Importing minicnn sets OPENBLAS_THREAD_TIMEOUT (read when NumPy's OpenBLAS loads: minicnn/__init__.py)
    before NumPy is imported, and leaves a user's own value alone."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    script = "import sys, minicnn, os; print('numpy' in sys.modules, os.environ['OPENBLAS_THREAD_TIMEOUT'])"
    for user, want in ((None, "False 4"), ("9", "False 9")):
        run_env = env if user is None else dict(env, OPENBLAS_THREAD_TIMEOUT=user)
        proc = subprocess.run([sys.executable, "-c", script], env=run_env, cwd=ROOT, capture_output=True, text=True,
                              timeout=120)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert proc.stdout.split("\n")[0] == want


def test_import_torch_gives_the_thread_its_cores_back():
    """With OMP_PROC_BIND=true, Numba's OpenMP runtime binds the main thread to one core when its threads
    start; PyTorch's runtime, loaded after it, would then see that core only. import_torch restores the
    cores the process had when minicnn was imported, around the import."""
    import os

    pytest.importorskip("torch")
    if (os.cpu_count() or 1) < 2:
        pytest.skip("one core: nothing to pin apart")
    # the child starts on every core, as a fresh process would (this one's thread may be bound already)
    script = ("import os; os.environ['OMP_PROC_BIND'] = 'true'; os.sched_setaffinity(0, range(os.cpu_count()))\n"
              "import numpy as np\n"
              "from minicnn.nn.fast._jit import PROCESS_CORES\n"
              "from minicnn.nn.fast.act import relu_forward\n"
              "from minicnn.ladder.machine import import_torch\n"
              "relu_forward(np.ones((64, 64), np.float32))\n"  # Numba's threads start here
              "import_torch()\n"
              "print(sorted(os.sched_getaffinity(0)) == sorted(PROCESS_CORES))\n")
    proc = run_python(["-c", script], timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "True"
