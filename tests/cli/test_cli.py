"""The command line on a small synthetic HDF5 cache: train, resume, eval, and clean one-line errors that
leave existing files untouched."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import assert_clean_error, invoke
from click.testing import CliRunner

from minicnn.cli import cli
from minicnn.io.checkpoint import load_checkpoint

LIMITS = ["--train-limit", "256", "--test-limit", "128"]


@pytest.fixture(autouse=True)
def _no_user_data(monkeypatch, tmp_path):
    """Nothing here may read or build the user's CIFAR-10 cache: every command gets --data."""
    monkeypatch.delenv("MINICNN_DATA", raising=False)
    monkeypatch.setenv("MINICNN_CACHE", str(tmp_path / "cache"))


def train_args(cache, out, *extra) -> list:
    return ["train", "--epochs", "1", *LIMITS, "--data", cache, "--out", out, *extra]


def assert_ok(result):
    assert result.exit_code == 0, result.output
    assert result.exception is None


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under folder (recursively) and its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def trained(make_synthetic_cache, tmp_path_factory):
    """A checkpoint made by `train --epochs 1 ...` on the synthetic cache: (cache path, checkpoint path)."""
    cache = make_synthetic_cache(512, 128)
    out = tmp_path_factory.mktemp("trained") / "runs" / "x.h5"
    result = CliRunner().invoke(cli, [str(a) for a in train_args(cache, out)])
    assert result.exit_code == 0, result.output
    return cache, out


@pytest.fixture
def work(trained, tmp_path):
    """A fresh folder holding a copy of the trained checkpoint (ck.h5) and a non-checkpoint file."""
    cache, ckpt = trained
    folder = tmp_path / "work"
    folder.mkdir()
    shutil.copy2(ckpt, folder / "ck.h5")
    (folder / "notes.txt").write_text("not a checkpoint\n")
    return cache, folder


# -------------------------------------------------------------------------------------- happy paths
def test_help_lists_commands():
    result = invoke("--help")
    assert_ok(result)
    listed = re.findall(r"^  (\S+)", result.output.split("Commands:")[1], flags=re.M)
    for command in ("train", "eval", "data"):
        assert command in listed
    assert sorted(listed) == sorted(cli.commands)
    for command in cli.commands:  # every command's own help works
        assert_ok(invoke(command, "--help"))


def test_train_writes_a_checkpoint(trained):
    cache, out = trained
    model, info = load_checkpoint(out)
    assert model.arch == "paper" and model.num_params() == 20714
    assert info["epoch"] == 1 and len(info["history"]) == 1
    assert info["config"]["train_limit"] == 256 and info["config"]["test_limit"] == 128
    assert info["config"]["lr"] == 0.8 and info["config"]["batch_size"] == 512
    final = info["extra"]["final"]
    assert 0.0 <= final["test_acc"] <= 1.0 and final["diverged"] is False
    assert not [p for p in out.parent.iterdir() if p.name != out.name], "temporary files left behind"


def test_train_prints_progress_and_result(make_synthetic_cache, tmp_path):
    out = tmp_path / "p.h5"
    result = invoke("train", "--epochs", "2", *LIMITS, "--batch-size", "64", "--lr", "0.05", "--momentum", "0.9",
                    "--data", make_synthetic_cache(512, 128), "--out", out)
    assert_ok(result)
    assert re.search(r"epoch\s+1 .*train loss .*test acc", result.output)
    assert re.search(r"epoch\s+2 .*train loss .*test acc", result.output)
    assert "final:" in result.output and str(out) in result.output
    _, info = load_checkpoint(out)
    assert info["epoch"] == 2
    assert info["extra"]["final"]["test_acc"] > 0.3  # chance is 0.1; the synthetic colours are easy


def test_rerun_does_nothing_and_longer_run_resumes(work):
    cache, folder = work
    ckpt = folder / "ck.h5"
    before = ckpt.read_bytes()
    again = invoke(*train_args(cache, ckpt))
    assert_ok(again)
    assert "nothing to do" in again.output
    assert ckpt.read_bytes() == before
    longer = invoke("train", "--epochs", "2", *LIMITS, "--data", cache, "--out", ckpt)
    assert_ok(longer)
    assert "resuming" in longer.output and "after epoch 1" in longer.output
    assert re.search(r"epoch\s+2 ", longer.output) and not re.search(r"epoch\s+1 ", longer.output)
    _, info = load_checkpoint(ckpt)
    assert info["epoch"] == 2 and [r["epoch"] for r in info["history"]] == [1, 2]


def test_eval_prints_accuracies(trained):
    cache, ckpt = trained
    result = invoke("eval", ckpt, "--data", cache, *LIMITS)
    assert_ok(result)
    train_line = re.search(r"train acc\s+([\d.]+)% .* on 256 images", result.output)
    test_line = re.search(r"test acc\s+([\d.]+)% .* on 128 images", result.output)
    assert train_line and test_line, result.output
    final = load_checkpoint(ckpt)[1]["extra"]["final"]
    # the same model on the same images: the accuracy the run recorded
    assert float(test_line.group(1)) == pytest.approx(100 * final["test_acc"], abs=0.006)
    assert float(train_line.group(1)) == pytest.approx(100 * final["train_acc"], abs=0.006)
    assert "20,714 parameters" in result.output


def test_different_config_needs_force(work):
    cache, folder = work
    ckpt = folder / "ck.h5"
    before = snapshot(folder)
    refused = invoke(*train_args(cache, ckpt, "--lr", "0.1"))
    assert_clean_error(refused, "other settings", "--force")
    assert snapshot(folder) == before
    forced = invoke(*train_args(cache, ckpt, "--lr", "0.1", "--force"))
    assert_ok(forced)
    _, info = load_checkpoint(ckpt)
    assert info["config"]["lr"] == 0.1


# ---------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("extra,fragment", [
    (["--lr", "-1"], "--lr"),
    (["--lr", "0"], "--lr"),
    (["--batch-size", "0"], "--batch-size"),
    (["--epochs", "0"], "--epochs"),
    (["--train-limit", "-5"], "--train-limit"),
    (["--normalize", "sideways"], "--normalize"),
    (["--arch", "bogus", "--force"], "bogus"),
    (["--arch", "conv8,relu,pool2,flatten,linear7", "--force"], "linear10"),
])
def test_bad_options_leave_checkpoint_untouched(work, extra, fragment):
    """Rejected before any work is done; --force where given shows nothing is overwritten early."""
    cache, folder = work
    before = snapshot(folder)
    result = invoke("train", "--epochs", "1", *LIMITS, "--data", cache, "--out", folder / "ck.h5", *extra)
    assert_clean_error(result, fragment)
    assert snapshot(folder) == before


def test_missing_data_path(work):
    cache, folder = work
    before = snapshot(folder)
    missing = folder / "no-such-archive.tar.gz"
    for out in (folder / "new.h5", folder / "ck.h5"):
        result = invoke(*train_args(missing, out, "--force"))
        assert_clean_error(result, "does not exist")
        assert snapshot(folder) == before
    assert_clean_error(invoke("eval", folder / "ck.h5", "--data", missing), "does not exist")


def test_corrupt_data_file(work):
    cache, folder = work
    junk = folder / "junk.bin"
    junk.write_bytes(np.random.default_rng(0).integers(0, 256, 20000, dtype=np.uint8).tobytes())
    fake_h5 = folder / "fake.h5"
    fake_h5.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(1000))  # an HDF5 signature and nothing else
    before = snapshot(folder)
    for data in (junk, fake_h5):
        result = invoke(*train_args(data, folder / "ck.h5", "--force"))
        assert_clean_error(result)
        assert snapshot(folder) == before
        assert_clean_error(invoke("eval", folder / "ck.h5", "--data", data))
        assert snapshot(folder) == before


@pytest.mark.parametrize("where", ["under_a_file", "proc"])
def test_unwritable_out(work, where):
    cache, folder = work
    if where == "proc":
        if not Path("/proc").is_dir():
            pytest.skip("no /proc")
        out = Path("/proc/minicnn-test-x.h5")
    else:
        out = folder / "notes.txt" / "x.h5"
    before = snapshot(folder)
    result = invoke(*train_args(cache, out))
    assert_clean_error(result, str(out))
    assert snapshot(folder) == before
    assert not out.exists()


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root can write a read-only folder")
def test_read_only_folder(work):
    cache, folder = work
    locked = folder / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        assert_clean_error(invoke(*train_args(cache, locked / "x.h5")))
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o700)


def test_eval_of_a_non_checkpoint(work):
    cache, folder = work
    before = snapshot(folder)
    assert_clean_error(invoke("eval", folder / "notes.txt", "--data", cache), "notes.txt")
    assert_clean_error(invoke("eval", cache, "--data", cache), "checkpoint")  # HDF5, but a data cache
    assert_clean_error(invoke("eval", folder / "missing.h5", "--data", cache))
    assert snapshot(folder) == before


def test_out_is_an_existing_non_checkpoint_file(work):
    """train refuses to overwrite a file it did not write."""
    cache, folder = work
    before = snapshot(folder)
    result = invoke(*train_args(cache, folder / "notes.txt"))
    assert_clean_error(result, "notes.txt", "not a minicnn checkpoint")
    assert snapshot(folder) == before
    cache_bytes = Path(cache).read_bytes()
    result = invoke(*train_args(cache, cache))  # not even the data cache it is reading
    assert_clean_error(result, "not a minicnn checkpoint")
    assert Path(cache).read_bytes() == cache_bytes


_COUNT_COMPILES = """
import sys
from numba.core import event
compiled = []
class Count(event.Listener):
    def on_start(self, ev):
        compiled.append(ev.data["dispatcher"].py_func.__qualname__)
    def on_end(self, ev):
        pass
event.register("numba:compile", Count())
from click.testing import CliRunner
from minicnn.cli import cli
result = CliRunner().invoke(cli, sys.argv[1:])
assert result.exit_code == 0, result.output
print("compiled:", ",".join(compiled))
"""


@pytest.mark.slow
def test_data_prepare_compiles_what_the_first_train_needs(tmp_path, make_synthetic_cache):
    """With an empty kernel cache (a fresh install), `minicnn data prepare` compiles the kernels of a
    paper-model training run, so that the first `minicnn train` compiles nothing."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "kernels"), "MINICNN_CACHE": str(tmp_path / "data")}
    env.pop("MINICNN_DATA", None)
    data = str(make_synthetic_cache(256, 64))
    prepare = subprocess.run([sys.executable, "-c", "from minicnn.cli import cli; cli()", "data", "prepare",
                              "--source", data], env=env, capture_output=True, text=True)
    assert prepare.returncode == 0, prepare.stdout + prepare.stderr
    assert "compiling the training kernels" in prepare.stdout
    assert any((tmp_path / "kernels").rglob("*.nbc"))
    train = subprocess.run([sys.executable, "-c", _COUNT_COMPILES, "train", "--epochs", "1", "--train-limit", "128",
                            "--test-limit", "64", "--data", data, "--out", str(tmp_path / "m.h5")], env=env,
                           capture_output=True, text=True)
    assert train.returncode == 0, train.stdout + train.stderr
    assert train.stdout.strip().splitlines()[-1] == "compiled:", train.stdout
