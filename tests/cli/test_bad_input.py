"""Bad input to every command, as a hostile user would give it: each case must end with a non-zero exit,
exactly one line starting `Error:`, no traceback, and every file that was in the test's folder before
byte-identical afterwards (no temporary files left either).

The folder (built once, copied for every case) holds a small synthetic cache, a trained checkpoint and
damaged variants of it, a finished pruning run, damaged results tables and archives, and a cache folder
($MINICNN_CACHE) whose cache claims to be built from the official files, so that a bad source the user
names can be seen to be refused rather than replaced by that cache. Most cases run through click's
CliRunner (stderr mixed into the output); Ctrl-C and the file size limit (`ulimit -f`, as
RLIMIT_FSIZE: Python ignores SIGXFSZ, so writes past the limit fail with EFBIG) need a subprocess.
"""

from __future__ import annotations

import gzip
import io
import os
import resource
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from minicnn.cli import cli, keep_interrupts
from minicnn.io import archive, cache, dataset
from minicnn.io.checkpoint import load_checkpoint, save_checkpoint

LIMITS = ["--train-limit", "256", "--test-limit", "64"]
CLI = [sys.executable, "-c", "from minicnn.cli import cli; cli()"]


# ------------------------------------------------------------------------------------- the folder
def _fake_members_tar(dest: Path, *, cut: bool = False, flip: bool = False) -> None:
    """A tar.gz of the six binary-version members, two images each (not the official bytes); ``cut``: its
    first half; ``flip``: one bit of the third member's header flipped (tarfile then stops early)."""
    rng = np.random.default_rng(1)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name in [*archive.TRAIN_MEMBERS["binary"], archive.TEST_MEMBER["binary"]]:
            blob = rng.integers(0, 10, 2 * archive.RECORD_BYTES, dtype=np.uint8).tobytes()
            info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    raw = bytearray(buf.getvalue())
    if flip:
        buf.seek(0)
        with tarfile.open(fileobj=buf) as tar:
            raw[tar.getmembers()[2].offset + 10] ^= 0x01
    packed = gzip.compress(bytes(raw), mtime=0)
    dest.write_bytes(packed[: len(packed) // 2] if cut else packed)


def _results_variants(results: Path, folder: Path) -> None:
    text = results.read_text()
    header, first = text.splitlines()[:2]
    cells = first.split(",")
    cells[header.split(",").index("test_acc_after")] = "abc"
    (folder / "nonnum.csv").write_text(header + "\n" + ",".join(cells) + "\n")
    (folder / "amount_only.csv").write_text("amount\n0.5\n")
    (folder / "cut.csv").write_text(text[: len(text) - 25])  # cut mid-row
    (folder / "binary.csv").write_bytes(bytes(range(256)) * 8)
    (folder / "header.csv").write_text(header + "\n")


def _invoke(args, env=None):
    return CliRunner().invoke(cli, [str(a) for a in args], env=env)


@pytest.fixture(scope="module")
def template(tmp_path_factory, make_synthetic_cache) -> Path:
    w = tmp_path_factory.mktemp("bad-input") / "w"
    w.mkdir()
    synthetic = dataset.make_synthetic(256, 64, np.random.default_rng(3))
    cache.write_cache(synthetic, w / "data.h5", source="synthetic", source_format="synthetic")
    official = {n: archive.MEMBER_MD5[n] for n in [*archive.TRAIN_MEMBERS["binary"], archive.TEST_MEMBER["binary"]]}
    cache.write_cache(synthetic, w / "cache" / cache.CACHE_NAME, source="official-looking", source_format="binary",
                      member_md5=official)
    env = {"MINICNN_CACHE": str(w / "cache"), "MINICNN_DATA": None}
    result = _invoke(["train", "--epochs", "1", *LIMITS, "--data", w / "data.h5", "--out", w / "ck.h5"], env)
    assert result.exit_code == 0, result.output
    model, info = load_checkpoint(w / "ck.h5")
    model.layers[0].params["weight"][0, 0, 0, 0] = np.nan
    save_checkpoint(w / "nan.h5", model, config=info["config"], epoch=info["epoch"], history=info["history"])
    model, info = load_checkpoint(w / "ck.h5")  # finite weights, but its last epoch's loss overflowed
    history = [{**info["history"][-1], "test_loss": float("nan"), "diverged": True}]
    save_checkpoint(w / "divloss.h5", model, config=info["config"], epoch=info["epoch"], history=history)
    shutil.copy(w / "ck.h5", w / "v99.h5")
    with h5py.File(w / "v99.h5", "r+") as f:
        f.attrs["version"] = 99
    result = _invoke(["prune", "--schedule", "oneshot", "--structured", "--lr", "0.1", "--amounts", "0,.5",
                      "--epochs", "1", *LIMITS, "--baseline", w / "ck.h5", "--data", w / "data.h5", "--out", w / "run"],
                     env)
    assert result.exit_code == 0, result.output
    _results_variants(w / "run" / "results.csv", w)
    (w / "figs").mkdir()
    (w / "figs" / "dummy.png").write_bytes(b"\x89PNG not really")
    (w / "notes.txt").write_text("not a checkpoint\n")
    (w / "plainfile").write_text("a regular file\n")
    (w / "existing.md").write_text("# my own notes\n")
    rng = np.random.default_rng(0)
    (w / "random.h5").write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    (w / "garbage.bin").write_bytes(rng.integers(0, 256, 20000, dtype=np.uint8).tobytes())
    (w / "hdf5sig.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(1000))
    (w / "corrupt.tar.gz").write_bytes(b"\x1f\x8b" + rng.integers(0, 256, 5000, dtype=np.uint8).tobytes())
    _fake_members_tar(w / "fake.tar.gz")
    _fake_members_tar(w / "cut.tar.gz", cut=True)
    _fake_members_tar(w / "flipped.tar.gz", flip=True)
    (w / "nobatches").mkdir()
    (w / "nobatches" / "readme.txt").write_text("no data here\n")
    (w / "emptycache").mkdir()
    (w / "emptycache" / "keep.txt").write_text("an empty cache folder\n")
    shutil.copy(w / "run" / "steps" / "001_amount_0.5000.h5", w / "step.h5")
    shutil.copy(w / "ck.h5", w / "step.compact.h5")  # the default --out of `compact step.h5`, not its output
    return w


@pytest.fixture
def work(template, tmp_path) -> Path:
    folder = tmp_path / "w"
    shutil.copytree(template, folder)
    return folder


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_one_error(exit_code: int, output: str, fragments) -> str:
    assert exit_code != 0, output
    assert "Traceback" not in output, output
    errors = [line for line in output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, output
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


def assert_untouched(folder: Path, before: dict[str, bytes]) -> None:
    after = snapshot(folder)
    changed = [name for name, data in before.items() if after.get(name) != data]
    assert not changed, f"changed or removed: {changed}"
    temps = [name for name in after if Path(name).name.endswith(".tmp") or ".probe" in name]
    assert not temps, f"temporary files left: {temps}"


# --------------------------------------------------------------------------------------- the table
@dataclass
class Case:
    command: str
    args: list
    fragments: tuple = ()
    env: dict = field(default_factory=dict)

    def id(self) -> str:
        return f"{self.command}:{' '.join(self.args)}"[:90]


def case(command, args, *fragments, **env):
    return Case(command, args.split() if isinstance(args, str) else args, fragments, env)


W = "{w}"
TRAIN = f"train --epochs 1 {' '.join(LIMITS)} --data {W}/data.h5 --out {W}/new.h5"
PRUNE = f"prune --schedule oneshot --structured --lr 0.1 --amounts 0,.5 --epochs 1 {' '.join(LIMITS)} " \
        f"--baseline {W}/ck.h5 --data {W}/data.h5 --out {W}/newrun"
SWEEP = f"sweep --schedules oneshot --methods structured --lrs 0.1 --amounts 0,.5 --epochs 1 {' '.join(LIMITS)} " \
        f"--data {W}/data.h5 --out {W}/newsweep"
HUGE = "conv99999999,relu,pool2,flatten,linear10"
STRIDE0 = "conv8s0,relu,pool2,flatten,linear10"

CASES = [
    # data prepare
    case("data prepare", f"data prepare --source {W}/missing.tar.gz", "does not exist"),
    case("data prepare", f"data prepare --source {W}/garbage.bin", "garbage.bin", "not a CIFAR-10 archive"),
    case("data prepare", f"data prepare --source {W}/corrupt.tar.gz", "corrupt", "md5", archive.BINARY_ARCHIVE_MD5),
    case("data prepare", f"data prepare --source {W}/cut.tar.gz", "truncated or corrupt", "md5"),
    case("data prepare", f"data prepare --source {W}/fake.tar.gz", "data_batch_1.bin", "md5", "corrupt"),
    case("data prepare", f"data prepare --source {W}/flipped.tar.gz", "corrupt", "lacks", archive.BINARY_ARCHIVE_MD5),
    case("data prepare", f"data prepare --source {W}/nobatches", "holds no CIFAR-10 batch files"),
    case("data prepare", f"data prepare --source {W}/hdf5sig.h5", "not a CIFAR-10 archive or minicnn cache"),
    case("data prepare", f"data prepare --source {W}/data.h5 --data {W}/ck.h5", "once"),
    case("data prepare", "data prepare", "garbage.bin", MINICNN_DATA=f"{W}/garbage.bin"),
    case("data prepare", "data prepare --no-download", "not found", MINICNN_CACHE=f"{W}/emptycache"),
    case("data prepare", "data prepare --bogus", "--bogus"),
    # data info
    case("data info", f"data info --data {W}/random.h5", "random.h5", "not a CIFAR-10 archive"),
    case("data info", f"data info --data {W}/garbage.bin", "garbage.bin"),
    case("data info", f"data info --data {W}/missing.h5", "does not exist"),
    case("data info", f"data info --data {W}/ck.h5", "ck.h5", "not a CIFAR-10 archive or minicnn cache"),
    case("data info", f"data info --data {W}/corrupt.tar.gz", "corrupt", "md5"),
    case("data info", "data info", "random.h5", MINICNN_DATA=f"{W}/random.h5"),
    case("data info", "data info", "minicnn data prepare", MINICNN_CACHE=f"{W}/emptycache"),
    # train
    case("train", f"{TRAIN} --seed -1", "--seed", "4294967295"),
    case("train", f"{TRAIN} --seed 4294967296", "--seed"),
    case("train", f"{TRAIN} --seed abc", "--seed"),
    case("train", f"{TRAIN} --lr nan", "--lr", "finite"),
    case("train", f"{TRAIN} --lr inf", "--lr", "finite"),
    case("train", f"{TRAIN} --lr -1", "--lr"),
    case("train", f"{TRAIN} --lr 0", "--lr"),
    case("train", f"{TRAIN} --momentum nan", "--momentum"),
    case("train", f"{TRAIN} --momentum 1", "--momentum"),
    case("train", f"{TRAIN} --weight-decay nan", "--weight-decay"),
    case("train", f"{TRAIN} --weight-decay -1", "--weight-decay"),
    case("train", f"{TRAIN} --batch-size 0", "--batch-size"),
    case("train", f"{TRAIN} --epochs 0", "--epochs"),
    case("train", f"{TRAIN} --normalize sideways", "--normalize"),
    case("train", [*TRAIN.split(), "--arch", STRIDE0], "conv8s0", "stride"),
    case("train", [*TRAIN.split(), "--arch", HUGE], "too large", "GB"),
    case("train", [*TRAIN.split(), "--arch", "conv8,relu,pool64,linear10"], "nothing"),
    case("train", [*TRAIN.split(), "--arch", "bogus"], "bogus"),
    case("train", [*TRAIN.split(), "--arch", "conv8,relu,pool2,flatten,linear7"], "linear10"),
    case("train", f"{TRAIN.replace(f'{W}/data.h5', f'{W}/garbage.bin')}", "garbage.bin"),
    case("train", f"{TRAIN.replace(f'{W}/data.h5', f'{W}/corrupt.tar.gz')}", "corrupt", "md5"),
    case("train", f"{TRAIN.replace(f'{W}/data.h5', f'{W}/missing.tar.gz')}", "does not exist"),
    case("train", f"{TRAIN.replace(f'{W}/data.h5', f'{W}/flipped.tar.gz')}", "corrupt", "md5"),
    case("train", TRAIN.replace(f"--data {W}/data.h5 ", ""), "garbage.bin", MINICNN_DATA=f"{W}/garbage.bin"),
    case("train", f"{TRAIN.replace(f'{W}/new.h5', f'{W}/notes.txt')}", "not a minicnn checkpoint"),
    case("train", f"{TRAIN.replace(f'{W}/new.h5', f'{W}/plainfile/x.h5')}", "plainfile is a file, not a folder"),
    case("train", f"{TRAIN.replace(f'{W}/new.h5', f'{W}/v99.h5')}", "version 99"),
    case("train", f"{TRAIN.replace(f'{W}/new.h5', f'{W}/ck.h5')} --lr 0.5", "other settings", "lr"),
    case("train", f"{TRAIN.replace(f'{W}/new.h5', f'{W}/data.h5')}", "not a minicnn checkpoint"),
    case("train", f"{TRAIN} --bogus", "--bogus"),
    # eval
    case("eval", f"eval {W}/nan.h5 --data {W}/data.h5", "NaN or infinite"),
    case("eval", f"eval {W}/divloss.h5 --data {W}/data.h5", "records a NaN or infinite loss"),
    case("eval", f"eval {W}/v99.h5 --data {W}/data.h5", "version 99"),
    case("eval", f"eval {W}/notes.txt --data {W}/data.h5", "notes.txt"),
    case("eval", f"eval {W}/missing.h5 --data {W}/data.h5", "does not exist"),
    case("eval", f"eval {W}/data.h5 --data {W}/data.h5", "not a minicnn checkpoint"),
    case("eval", f"eval {W}/ck.h5 --data {W}/random.h5", "random.h5"),
    case("eval", f"eval {W}/ck.h5 --data {W}/fake.tar.gz", "md5", "corrupt"),
    case("eval", "eval", "CHECKPOINT"),
    # flops
    case("flops", ["flops", "--arch", STRIDE0], "conv8s0", "stride"),
    case("flops", ["flops", "--arch", HUGE], "too large", "parameters"),
    case("flops", ["flops", "--arch", "conv8,relu,pool2,flatten,linear7"], "linear10"),
    case("flops", ["flops", "--arch", "linear10,conv8"], "after flatten"),
    case("flops", ["flops", "--arch", "conv8k99p0,linear10"], "nothing"),
    case("flops", ["flops", "--arch", "linear0,linear10"], "positive"),
    case("flops", f"flops --arch paper --checkpoint {W}/ck.h5", "not both"),
    case("flops", f"flops --checkpoint {W}/notes.txt", "notes.txt"),
    case("flops", f"flops --checkpoint {W}/v99.h5", "version 99"),
    # prune
    case("prune", f"prune --structured --lr 0.1 --baseline {W}/ck.h5", "--schedule", "oneshot", "iterative"),
    case("prune", f"{PRUNE} --schedule sometimes", "sometimes"),
    case("prune", f"{PRUNE} --lr nan", "--lr", "finite"),
    case("prune", f"{PRUNE} --lr inf", "--lr"),
    case("prune", f"{PRUNE} --momentum nan", "--momentum"),
    case("prune", f"{PRUNE} --seed -1", "--seed"),
    case("prune", f"{PRUNE} --amounts 0.5,0.2", "increasing"),
    case("prune", f"{PRUNE} --amounts 1.5", "[0, 1]"),
    case("prune", f"{PRUNE} --amounts nan", "finite"),
    case("prune", f"{PRUNE.replace('ck.h5', 'nan.h5')}", "NaN or infinite"),
    case("prune", f"{PRUNE.replace('ck.h5', 'divloss.h5')}", "records a NaN or infinite loss"),
    case("prune", f"{PRUNE.replace('ck.h5', 'v99.h5')}", "version 99"),
    case("prune", f"{PRUNE.replace('ck.h5', 'notes.txt')}", "notes.txt"),
    case("prune", f"{PRUNE} --scope global", "layerwise"),
    case("prune", f"{PRUNE.replace(f'{W}/newrun', f'{W}/plainfile')}", "plainfile"),
    case("prune", f"{PRUNE.replace(f'{W}/newrun', f'{W}/run')} --lr 0.5", "other settings"),
    case("prune", f"{PRUNE.replace(f'{W}/data.h5', f'{W}/garbage.bin')}", "garbage.bin"),
    case("prune", [*PRUNE.split(), "--arch", STRIDE0], "stride"),
    # sweep
    case("sweep", f"{SWEEP} --seeds -1", "--seeds", "4294967295"),
    case("sweep", f"{SWEEP} --seeds 4294967296", "--seeds"),
    case("sweep", f"{SWEEP} --seeds a", "--seeds"),
    case("sweep", f"{SWEEP} --seeds 0,0", "--seeds", "repeats"),
    case("sweep", f"{SWEEP.replace('--lrs 0.1', '--lrs 0.01,0.01')}", "--lrs", "repeats"),
    case("sweep", f"{SWEEP.replace('--lrs 0.1', '--lrs nan')}", "--lrs", "finite"),
    case("sweep", f"{SWEEP.replace('--lrs 0.1', '--lrs 0.1,inf')}", "--lrs", "finite"),
    case("sweep", f"{SWEEP.replace('oneshot', 'oneshot,oneshot')}", "--schedules", "repeats"),
    case("sweep", f"{SWEEP.replace('structured', 'bogus')}", "bogus"),
    case("sweep", f"{SWEEP} --criteria magnitude,nope", "unknown pruning criterion 'nope'"),
    case("sweep", f"{SWEEP} --criteria random,random", "--criteria", "repeats"),
    case("sweep", f"{SWEEP} --rewind init", "--rewind applies only to the lth schedule", "--schedules"),
    case("sweep", f"{SWEEP.replace('oneshot', 'lth')} --rewind soon", "--rewind must be init or a baseline epoch"),
    case("sweep", f"{SWEEP.replace('structured', 'structured,structured')}", "--methods", "repeats"),
    case("sweep", f"{SWEEP} --jobs 0", "--jobs"),
    case("sweep", f"{SWEEP.replace(f'{W}/newsweep', f'{W}/plainfile')}", "plainfile"),
    case("sweep", f"{SWEEP.replace(f'{W}/data.h5', f'{W}/garbage.bin')}", "garbage.bin"),
    case("sweep", [*SWEEP.split(), "--arch", HUGE], "too large"),
    # compact
    case("compact", f"compact {W}/step.h5 --out {W}/ck.h5", "ck.h5", "--force"),
    case("compact", f"compact {W}/step.h5 --out {W}/run/results.csv", "results.csv", "--force"),
    case("compact", f"compact {W}/step.h5", "step.compact.h5", "--force"),
    case("compact", f"compact {W}/step.h5 --out {W}/step.h5", "must differ"),
    case("compact", f"compact {W}/step.h5 --out {W}/run", "run"),
    case("compact", f"compact {W}/step.h5 --out {W}/plainfile/x.h5", "plainfile is a file, not a folder"),
    case("compact", f"compact {W}/nan.h5 --out {W}/n.h5", "NaN or infinite"),
    case("compact", f"compact {W}/divloss.h5 --out {W}/n.h5", "records a NaN or infinite loss"),
    case("compact", f"compact {W}/v99.h5 --out {W}/n.h5", "version 99"),
    case("compact", f"compact {W}/notes.txt", "notes.txt"),
    # plot
    case("plot", f"plot {W}/ck.h5", "not a minicnn results table"),
    case("plot", f"plot {W}/nonnum.csv", "test_acc_after", "abc"),
    case("plot", f"plot {W}/amount_only.csv", "lacks the column"),
    case("plot", f"plot {W}/cut.csv", "cut short"),
    case("plot", f"plot {W}/binary.csv", "not a minicnn results table"),
    case("plot", f"plot {W}/header.csv", "no result rows"),
    case("plot", f"plot {W}/nowhere", "no results"),
    case("plot", f"plot {W}/run --out {W}/plainfile", "plainfile"),
    # report
    case("report", f"report {W}/run --out {W}/existing.md --figures {W}/figs", "existing.md", "--force"),
    case("report", f"report {W}/run --out {W}/ck.h5 --figures {W}/figs", "ck.h5", "--force"),
    case("report", f"report {W}/cut.csv --figures {W}/figs", "cut short"),
    case("report", f"report {W}/nonnum.csv --figures {W}/figs", "abc"),
    case("report", f"report {W}/ck.h5", "not a minicnn results table"),
    case("report", f"report {W}/run --out {W}/run --figures {W}/figs", "run"),
    case("report", f"report {W}/run --figures {W}/plainfile", "plainfile"),
    case("report", f"report {W}/run --out {W}/plainfile/R.md --figures {W}/figs", "plainfile is a file, not a folder"),
]


def _fill(value: str, work: Path) -> str:
    return str(value).replace(W, str(work))


@pytest.mark.parametrize("bad", CASES, ids=[c.id() for c in CASES])
def test_bad_input(bad: Case, work: Path):
    env = {"MINICNN_CACHE": str(work / "cache"), "MINICNN_DATA": None}
    env.update({k: _fill(v, work) for k, v in bad.env.items()})
    before = snapshot(work)
    result = _invoke([_fill(a, work) for a in bad.args], env)
    assert isinstance(result.exception, SystemExit), repr(result.exception)  # not an unhandled exception
    assert_one_error(result.exit_code, result.output, [_fill(f, work) for f in bad.fragments])
    assert_untouched(work, before)


def test_every_command_is_in_the_table():
    commands = {c.command for c in CASES} | {c.command for c in FULL_CASES}
    assert commands == {"data prepare", "data info", "train", "eval", "flops", "prune", "sweep", "compact", "plot",
                        "report"}
    assert len(CASES) + len(FULL_CASES) + 1 >= 60  # + Ctrl-C


# --------------------------------------------------------------------------- in a subprocess
def _run(args, work: Path, *, file_limit: int | None = None, timeout: float = 240) -> subprocess.CompletedProcess:
    env = dict(os.environ, MINICNN_CACHE=str(work / "cache"), NUMBA_NUM_THREADS="1")
    env.pop("MINICNN_DATA", None)

    def limit():
        if file_limit is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (file_limit, file_limit))

    return subprocess.run([*CLI, *[_fill(a, work) for a in args]], env=env, cwd=work, preexec_fn=limit,
                          capture_output=True, text=True, timeout=timeout)


#: A file size limit (bytes) below what each command must write: the write fails with EFBIG.
FULL_CASES = [
    case("train", TRAIN, "file too large", "new.h5"),
    case("train", f"{TRAIN.replace(f'{W}/new.h5', f'{W}/ck.h5').replace('--epochs 1', '--epochs 2')}",
         "file too large", "ck.h5"),
    case("prune", PRUNE, "file too large", "newrun"),
    case("sweep", SWEEP, "file too large", "newsweep"),
    case("report", f"report {W}/run --out {W}/R.md --figures {W}/figs", "file too large", "R.md"),
    case("compact", f"compact {W}/step.h5 --out {W}/small.h5", "file too large", "small.h5"),
]
FILE_LIMIT = 2048


@pytest.mark.parametrize("bad", FULL_CASES, ids=[c.id() for c in FULL_CASES])
def test_file_too_large(bad: Case, work: Path):
    """`ulimit -f` as RLIMIT_FSIZE: train, resume, prune, sweep, report and compact each end in one line
    naming the file, with what was there before intact and no temporary file left."""
    before = snapshot(work)
    done = _run(bad.args, work, file_limit=FILE_LIMIT)
    assert_one_error(done.returncode, done.stdout + done.stderr, [_fill(f, work) for f in bad.fragments])
    assert "nothing written was lost" in done.stderr
    assert_untouched(work, before)


def _checkpoint_epoch(path: Path) -> int:
    """The epoch of the checkpoint at path, 0 while there is none (it is replaced atomically)."""
    try:
        return load_checkpoint(path)[1]["epoch"] if path.exists() else 0
    except OSError:
        return 0


def test_ctrl_c_exits_130_with_one_line(work: Path):
    env = dict(os.environ, MINICNN_CACHE=str(work / "cache"), NUMBA_NUM_THREADS="1")
    env.pop("MINICNN_DATA", None)
    args = [_fill(a, work) for a in TRAIN.replace("--epochs 1", "--epochs 500").split()]
    before = snapshot(work)
    # SIGINT as in a terminal even where this runs as a shell's background job, which ignores it
    proc = subprocess.Popen([*CLI, *args], env=env, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    # signal once the second epoch's checkpoint is written: a run under way, its kernels compiled
    deadline = time.monotonic() + 120
    while _checkpoint_epoch(work / "new.h5") < 2 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, out + err
    assert_one_error(proc.returncode, out + err, ["interrupted"])
    assert_untouched(work, before)
    assert load_checkpoint(work / "new.h5")[1]["epoch"] >= 1  # resumable


def test_an_interrupt_python_could_only_print_is_sent_again(monkeypatch, capsys):
    """A Ctrl-C that arrives while a __del__ or a weakref callback runs (h5py's, as a checkpoint is
    written) becomes a KeyboardInterrupt that Python prints and drops; the CLI's hook sends it again,
    so the run still stops, and prints nothing. Without the hook the loop below runs out."""

    class InterruptedWhileFreed:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGINT)  # Python raises KeyboardInterrupt here, inside __del__

    monkeypatch.setattr(sys, "unraisablehook", keep_interrupts(sys.unraisablehook))
    # Python's own handler, also where this runs as a shell's background job (which ignores SIGINT)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    deadline = time.monotonic() + 10
    try:
        with pytest.raises(KeyboardInterrupt):
            InterruptedWhileFreed()  # freed at once
            while time.monotonic() < deadline:
                time.sleep(0.01)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert time.monotonic() < deadline
    assert "KeyboardInterrupt" not in capsys.readouterr().err
