"""A full disk, a quota or a file size limit while writing: one clean error naming the file, the file
it would have replaced untouched, no temporary file left; and stale temporary files of a killed writer
removed by the next write of the same file (and nothing else removed).

Three mechanisms: an OSError raised inside ``atomic_path`` (every errno and h5py's wording), the file
size limit (RLIMIT_FSIZE, what `ulimit -f` sets; Python ignores SIGXFSZ, so a write past it fails with
EFBIG) in a subprocess, and a real full file system: a 256 kB tmpfs, where mounting one is permitted.
The command-level cases of the file size limit are in test_bad_input.py.
"""

from __future__ import annotations

import errno
import os
import resource
import shutil
import subprocess
import sys

import pytest
from click.testing import CliRunner

from minicnn.cli import cli
from minicnn.errors import MiniCNNError
from minicnn.io.files import atomic_path, check_writable

CLI = [sys.executable, "-c", "from minicnn.cli import cli; cli()"]


@pytest.mark.parametrize("exc, says", [
    (OSError(errno.ENOSPC, "No space left on device"), "no space left on device"),
    (OSError(errno.EDQUOT, "Disk quota exceeded"), "disk quota exceeded"),
    (OSError(errno.EFBIG, "File too large"), "file too large"),
    (OSError("Can't synchronously write data (file write failed: ..., errno = 28, error message = 'No space "
             "left on device', ...)"), "no space left on device"),
    (RuntimeError("Can't decrement id ref count (unable to extend file properly, errno = 27, error message = "
                  "'File too large')"), "file too large"),
])
def test_no_room_is_one_clean_error(tmp_path, exc, says):
    target = tmp_path / "results.csv"
    target.write_text("the earlier results\n")
    with pytest.raises(MiniCNNError) as err:
        with atomic_path(target) as tmp:
            tmp.write_text("half of the new")
            raise exc
    assert str(err.value).startswith(says)
    assert f"while writing {target}; nothing written was lost" in str(err.value)
    assert target.read_text() == "the earlier results\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.csv"]


def test_other_errors_pass_through(tmp_path):
    with pytest.raises(OSError, match="Permission denied"):
        with atomic_path(tmp_path / "x.csv"):
            raise OSError(errno.EACCES, "Permission denied")
    assert list(tmp_path.iterdir()) == []


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_temp_files_of_the_same_output_are_removed(tmp_path):
    dead, alive = _dead_pid(), os.getppid()
    names = {
        f".x.h5.{dead}.abcd_123.tmp": False,      # a killed writer of x.h5: removed
        ".x.h5.k2j4h5g6.tmp": False,              # the name earlier versions gave it: removed
        f".x.h5.{alive}.abcdefgh.tmp": True,      # a running writer of x.h5: kept
        f".y.h5.{dead}.abcdefgh.tmp": True,       # another output's: kept
        "x.h5.abcdefgh.tmp": True,                # not atomic_path's name: kept
        f".x.h5.{dead}.abcdefgh.tmp.bak": True,   # not atomic_path's name: kept
        ".x.h5.toolong123.tmp": True,             # not atomic_path's name: kept
        "x.h5": True,
    }
    for name in names:
        (tmp_path / name).write_text(name)
    with atomic_path(tmp_path / "x.h5") as tmp:
        tmp.write_text("new")
    kept = {p.name for p in tmp_path.iterdir()}
    assert kept == {name for name, keep in names.items() if keep}
    assert (tmp_path / "x.h5").read_text() == "new"
    (tmp_path / f".x.h5.{dead}.zzzzzzzz.tmp").write_text("left by a kill")
    check_writable(tmp_path / "x.h5")  # a command's early check cleans too
    assert not (tmp_path / f".x.h5.{dead}.zzzzzzzz.tmp").exists()


def test_output_under_a_regular_file(tmp_path):
    (tmp_path / "f").write_text("a file")
    with pytest.raises(MiniCNNError, match=f"{tmp_path / 'f'} is a file, not a folder"):
        with atomic_path(tmp_path / "f" / "sub" / "x.h5"):
            pass


def test_cache_write_past_the_file_size_limit(tmp_path):
    """write_cache (what `minicnn data prepare` does last) under `ulimit -f 64` (64 kB)."""
    target = tmp_path / "cifar10.h5"
    target.write_bytes(b"the earlier cache")
    code = ("import numpy as np; from minicnn.io import cache, dataset; "
            f"cache.write_cache(dataset.make_synthetic(64, 16), {str(target)!r})")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536)))
    assert done.returncode != 0
    assert f"MiniCNNError: file too large (the file size limit, as set by `ulimit -f`, was reached) while " \
           f"writing {target}; nothing written was lost" in done.stderr
    assert target.read_bytes() == b"the earlier cache"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cifar10.h5"]


# ------------------------------------------------------------------------------------ a real tmpfs
@pytest.fixture
def small_tmpfs(tmp_path):
    """A 256 kB tmpfs mounted at tmp_path/disk (skipped where mounting is not permitted)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here ({done.stderr.strip() or done.returncode}); "
                    f"the file size limit tests cover the same code")
    try:
        yield disk
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def test_full_tmpfs(small_tmpfs, tmp_path, make_synthetic_cache):
    """train and resume onto a full disk: one line, the checkpoint that was there intact, no temp file."""
    data = str(make_synthetic_cache(256, 64, seed=5))
    env = {"MINICNN_CACHE": str(tmp_path / "cache"), "MINICNN_DATA": None}
    ckpt = small_tmpfs / "ck.h5"
    args = ["train", "--epochs", "1", "--train-limit", "256", "--test-limit", "64", "--data", data, "--out", str(ckpt)]
    result = CliRunner().invoke(cli, args, env=env)
    assert result.exit_code == 0, result.output
    used = ckpt.stat().st_size
    fill = small_tmpfs / "fill"
    with open(fill, "wb") as fh:  # leave less room than a checkpoint needs
        free = os.statvfs(small_tmpfs).f_bavail * os.statvfs(small_tmpfs).f_frsize
        fh.write(bytes(max(0, free - used // 2)))
    before = ckpt.read_bytes()
    for extra in (["--epochs", "2"], ["--epochs", "1", "--force"]):  # resume; start over
        result = CliRunner().invoke(cli, [*args, *extra], env=env)
        assert result.exit_code != 0
        errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
        assert errors == [f"Error: no space left on device while writing {ckpt}; nothing written was lost"], \
            result.output
        assert ckpt.read_bytes() == before
        assert sorted(p.name for p in small_tmpfs.iterdir()) == ["ck.h5", "fill"]


def test_a_killed_writer_not_yet_reaped_counts_as_gone(tmp_path):
    """A writer that has ended but that its parent has not reaped (a zombie: a sweep worker killed with
    its sweep, waiting for init) still answers os.kill; its temporary file is stale all the same."""
    import time

    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        for _ in range(200):  # until it has exited; Popen reaps only on poll() or wait()
            with open(f"/proc/{zombie.pid}/stat") as fh:
                if fh.read().rsplit(")", 1)[1].split()[0] == "Z":
                    break
            time.sleep(0.01)
        else:
            pytest.fail("the child did not exit")
        os.kill(zombie.pid, 0)  # still found
        (tmp_path / f".x.h5.{zombie.pid}.abcdefgh.tmp").write_text("left by a kill")
        with atomic_path(tmp_path / "x.h5") as tmp:
            tmp.write_text("new")
        assert sorted(p.name for p in tmp_path.iterdir()) == ["x.h5"]
    finally:
        zombie.wait()
