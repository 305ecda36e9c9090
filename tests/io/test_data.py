"""CIFAR-10 data layer: archive decoding in both official formats, md5 checks, cache, normalisation.

Fake archives are a few images per batch, written here byte by byte from the published format, with
the expected md5 table swapped for the fakes' md5s. The real-data test runs when MINICNN_DATA points
at an existing archive (e.g. /work/shared/datasets/cifar10/cifar-10-binary.tar.gz).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import pickle
import shutil
import tarfile
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from minicnn.io import archive, cache, data, dataset
from minicnn.cli import cli
from minicnn.errors import DataError

REAL_DATA = os.environ.get("MINICNN_DATA", "")  # read before any fixture changes the environment

FOLDER = {"binary": "cifar-10-batches-bin", "python": "cifar-10-batches-py"}
ARCHIVE = {"binary": "cifar-10-binary.tar.gz", "python": "cifar-10-python.tar.gz"}
FAKE_CLASSES = ["plane", "car", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path, monkeypatch):
    """No test sees the user's data or cache."""
    monkeypatch.delenv("MINICNN_DATA", raising=False)
    monkeypatch.setenv("MINICNN_CACHE", str(tmp_path / "cache"))


# ------------------------------------------------------------------------------------ fake archives
class Fake:
    """A fake CIFAR-10 in one official format: the unpacked folder, the .tar.gz, what it must load."""

    def __init__(self, root: Path, fmt: str, n_batch: int = 6, n_test: int = 5, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.fmt = fmt
        self.parent = root / f"src-{fmt}"
        self.folder = self.parent / FOLDER[fmt]
        self.folder.mkdir(parents=True)
        # Images are drawn as HWC (how a picture is stored) and written plane by plane below, so the
        # expected NCHW arrays do not rely on any reshape the loader might also use.
        hwc = rng.integers(0, 256, size=(5 * n_batch + n_test, 32, 32, 3), dtype=np.uint8)
        labels = rng.integers(0, 10, size=hwc.shape[0])
        train_names = [f"data_batch_{i}" for i in range(1, 6)]
        for b, name in enumerate([*train_names, "test_batch"]):
            lo = b * n_batch
            hi = lo + (n_batch if b < 5 else n_test)
            self._write_batch(name, hwc[lo:hi], labels[lo:hi])
        if fmt == "binary":
            (self.folder / "batches.meta.txt").write_bytes(("\n".join(FAKE_CLASSES) + "\n\n").encode())
        else:
            meta = {b"label_names": [c.encode() for c in FAKE_CLASSES], b"num_vis": 3072}
            (self.folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
        (self.folder / "readme.html").write_text("<html>not data</html>")
        n_train = 5 * n_batch
        self.x_train = np.ascontiguousarray(hwc[:n_train].transpose(0, 3, 1, 2))
        self.y_train = labels[:n_train].astype(np.int64)
        self.x_test = np.ascontiguousarray(hwc[n_train:].transpose(0, 3, 1, 2))
        self.y_test = labels[n_train:].astype(np.int64)
        self.md5 = {p.name: hashlib.md5(p.read_bytes()).hexdigest()
                    for p in self.folder.iterdir() if p.name != "readme.html"}
        self.archive = root / f"archives-{fmt}" / ARCHIVE[fmt]
        make_tar(self.folder, self.archive)

    def _write_batch(self, name: str, hwc: np.ndarray, labels: np.ndarray) -> None:
        planes = [hwc[i, :, :, c].tobytes() for i in range(len(hwc)) for c in range(3)]
        if self.fmt == "binary":
            records = [bytes([int(labels[i])]) + b"".join(planes[3 * i:3 * i + 3]) for i in range(len(hwc))]
            (self.folder / f"{name}.bin").write_bytes(b"".join(records))
        else:
            rows = np.frombuffer(b"".join(planes), dtype=np.uint8).reshape(len(hwc), 3072)
            batch = {b"batch_label": name.encode(), b"labels": [int(v) for v in labels],
                     b"data": rows, b"filenames": [f"img{i}.png".encode() for i in range(len(hwc))]}
            if name == "data_batch_2":  # keys as the official files give them with encoding="latin1"
                batch = {k.decode(): v for k, v in batch.items()}
            blob = pickle.dumps(batch, protocol=2)
            # the official files were written with numpy 1.x, whose arrays name numpy.core
            blob = blob.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")
            (self.folder / name).write_bytes(blob)


def make_tar(folder: Path, dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(dest, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    return dest


@pytest.fixture(params=["binary", "python"])
def fake(request, tmp_path, monkeypatch):
    f = Fake(tmp_path, request.param)
    monkeypatch.setattr(archive, "MEMBER_MD5", dict(f.md5))
    return f


@pytest.fixture
def fake_bin(tmp_path, monkeypatch):
    f = Fake(tmp_path, "binary")
    monkeypatch.setattr(archive, "MEMBER_MD5", dict(f.md5))
    return f


def assert_matches(ds: dataset.Dataset, f: Fake, n_train=None, n_test=None):
    n_train = f.x_train.shape[0] if n_train is None else n_train
    n_test = f.x_test.shape[0] if n_test is None else n_test
    assert ds.x_train.dtype == np.uint8 and ds.x_train.flags.c_contiguous
    assert ds.y_train.dtype == np.int64 and ds.y_test.dtype == np.int64
    np.testing.assert_array_equal(ds.x_train, f.x_train[:n_train])
    np.testing.assert_array_equal(ds.y_train, f.y_train[:n_train])
    np.testing.assert_array_equal(ds.x_test, f.x_test[:n_test])
    np.testing.assert_array_equal(ds.y_test, f.y_test[:n_test])
    assert ds.classes == FAKE_CLASSES
    # statistics always describe the FULL training set, in [0, 1] units, population std
    full = f.x_train.astype(np.float64) / 255.0
    np.testing.assert_allclose(ds.channel_mean, full.mean(axis=(0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(ds.channel_std, full.std(axis=(0, 2, 3)), rtol=1e-10)


# ---------------------------------------------------------------------------------------- round trip
def test_archive_round_trip(fake, tmp_path):
    path = cache.prepare(str(fake.archive))
    assert path == tmp_path / "cache" / "cifar10.h5"
    assert_matches(data.load_cifar10(str(fake.archive)), fake)
    assert_matches(data.load_cifar10(str(path)), fake)  # the .h5 itself as the source


@pytest.mark.parametrize("level", ["inner", "parent"])
def test_folder_round_trip(fake, level):
    folder = fake.folder if level == "inner" else fake.parent
    assert_matches(data.load_cifar10(str(folder)), fake)


def test_env_var_source(fake, monkeypatch):
    monkeypatch.setenv("MINICNN_DATA", str(fake.archive))
    assert cache.resolve_source(None) == str(fake.archive)
    assert cache.resolve_source("elsewhere") == "elsewhere"
    assert_matches(data.load_cifar10(), fake)


def test_cache_layout(fake_bin):
    path = cache.prepare(str(fake_bin.archive))
    with h5py.File(path, "r") as f:
        assert set(f.keys()) == {"x_train", "y_train", "x_test", "y_test"}
        assert f["x_train"].shape == (30, 3, 32, 32) and f["x_train"].dtype == np.uint8
        assert f["y_train"].dtype == np.uint8 and f["x_test"].shape == (5, 3, 32, 32)
        assert f["x_train"].compression is None
        assert f.attrs["format_version"] == cache.FORMAT_VERSION
        assert json.loads(f.attrs["classes"]) == FAKE_CLASSES
        assert f.attrs["channel_mean"].shape == (3,) and f.attrs["channel_std"].shape == (3,)
        assert json.loads(f.attrs["member_md5"]) == fake_bin.md5
        assert f.attrs["source_format"] == "binary"
    assert not list(path.parent.glob("*.tmp"))


def test_limits(fake_bin):
    ds = data.load_cifar10(str(fake_bin.archive), train_limit=7, test_limit=2)
    assert_matches(ds, fake_bin, n_train=7, n_test=2)
    ds = data.load_cifar10(str(fake_bin.archive), train_limit=10_000)  # more than there is: all
    assert ds.n_train == 30
    for bad in (0, -3, 2.5, True, "7"):
        with pytest.raises(DataError, match="train_limit"):
            data.load_cifar10(str(fake_bin.archive), train_limit=bad)


def test_valid_cache_is_not_rebuilt(fake_bin, monkeypatch):
    path = cache.prepare(str(fake_bin.archive))

    def fail(*args, **kwargs):
        raise AssertionError("the archive was read again")

    monkeypatch.setattr(cache, "_convert", fail)
    assert cache.prepare(str(fake_bin.archive)) == path
    assert cache.prepare(None) == path
    assert data.load_cifar10().n_train == 30


def test_cache_from_other_md5s_is_rebuilt(fake_bin, monkeypatch):
    path = cache.prepare(str(fake_bin.archive))
    table = dict(archive.MEMBER_MD5, **{"data_batch_1.bin": "0" * 32})
    monkeypatch.setattr(archive, "MEMBER_MD5", table)  # the cache no longer matches "official" md5s
    with pytest.raises(DataError, match="data_batch_1.bin"):
        cache.prepare(str(fake_bin.archive))
    assert path.exists()


def test_cache_path_precedence(monkeypatch, tmp_path):
    assert cache.cache_path() == tmp_path / "cache" / "cifar10.h5"
    monkeypatch.delenv("MINICNN_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.cache_path() == tmp_path / "xdg" / "minicnn" / "cifar10.h5"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache.cache_path() == Path.home() / ".cache" / "minicnn" / "cifar10.h5"


def test_archive_in_cache_folder_is_used(fake_bin, tmp_path, monkeypatch):
    monkeypatch.setattr(archive, "download_file", _no_network)
    (tmp_path / "cache").mkdir()
    shutil.copy(fake_bin.archive, tmp_path / "cache" / "cifar-10-binary.tar.gz")
    assert_matches(data.load_cifar10(), fake_bin)


# ------------------------------------------------------------------------------------ verification
@pytest.mark.parametrize("packed", [True, False])
def test_md5_mismatch_names_member(fake, packed):
    name = "data_batch_3.bin" if fake.fmt == "binary" else "data_batch_3"
    member = fake.folder / name
    blob = bytearray(member.read_bytes())
    blob[-1] ^= 0xFF
    member.write_bytes(bytes(blob))
    source = make_tar(fake.folder, fake.archive) if packed else fake.folder
    with pytest.raises(DataError, match=f"{name} in .* corrupt") as err:
        data.load_cifar10(str(source))
    assert "\n" not in str(err.value)
    assert not cache.cache_path().exists()


def test_missing_member(fake_bin):
    (fake_bin.folder / "test_batch.bin").unlink()
    with pytest.raises(DataError, match="lacks test_batch.bin"):
        cache.prepare(str(fake_bin.folder))


def test_truncated_archive(fake_bin, tmp_path):
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(fake_bin.archive.read_bytes()[: fake_bin.archive.stat().st_size // 2])
    with pytest.raises(DataError, match="truncated or corrupt"):
        cache.prepare(str(cut))


def _tar_gz(folder: Path) -> tuple[bytes, list[tarfile.TarInfo]]:
    """The uncompressed tar of ``folder`` (as the official archives lay it out) and its members."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(folder, arcname=folder.name)
    buf.seek(0)
    with tarfile.open(fileobj=buf, mode="r") as tar:
        members = tar.getmembers()
    return buf.getvalue(), members


@pytest.mark.parametrize("where", ["header", "data"])
def test_byte_flipped_archive_is_corrupt_with_its_md5(fake_bin, tmp_path, where):
    """A flipped byte in a member's header ends the tar stream early (tarfile stops quietly): that is a
    corrupt archive, named with its md5 and the official one, not an 'incomplete' one. In a member's
    data it fails that member's md5."""
    raw, members = _tar_gz(fake_bin.folder)
    third = [m for m in members if m.isfile()][2]
    blob = bytearray(raw)
    blob[third.offset + 10 if where == "header" else third.offset_data + 100] ^= 0x01
    flipped = tmp_path / "flipped" / "cifar-10-binary.tar.gz"
    flipped.parent.mkdir()
    flipped.write_bytes(gzip.compress(bytes(blob), mtime=0))
    with pytest.raises(DataError) as err:
        cache.prepare(str(flipped))
    message = str(err.value)
    assert "corrupt" in message and "incomplete" not in message and "\n" not in message
    if where == "header":
        assert hashlib.md5(flipped.read_bytes()).hexdigest() in message and archive.BINARY_ARCHIVE_MD5 in message
    else:
        assert f"{third.name.rsplit('/', 1)[-1]} in {flipped} has md5" in message
    assert not cache.cache_path().exists()


def test_named_source_is_used_or_refused_even_with_a_valid_cache(fake_bin, tmp_path, monkeypatch):
    path = cache.prepare(str(fake_bin.archive))
    built = path.read_bytes()
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(bytes(range(256)) * 40)
    random_h5 = tmp_path / "random.h5"
    random_h5.write_bytes(bytes(range(255, -1, -1)) * 16)
    for bad in (garbage, random_h5, tmp_path / "missing.tar.gz"):
        with pytest.raises(DataError, match=bad.name):
            data.load_cifar10(str(bad))
        monkeypatch.setenv("MINICNN_DATA", str(bad))
        with pytest.raises(DataError, match=bad.name):
            data.load_cifar10()
        monkeypatch.delenv("MINICNN_DATA")
        result = CliRunner().invoke(cli, ["data", "info", "--data", str(bad)])
        assert result.exit_code == 1 and bad.name in result.output and "channel mean" not in result.output
    assert path.read_bytes() == built
    assert data.load_cifar10().n_train == 30  # nothing named: the cache


def test_cache_stands_for_exactly_the_file_it_was_built_from(fake_bin, tmp_path, monkeypatch):
    converted = []
    convert = cache._convert
    monkeypatch.setattr(cache, "_convert", lambda *a: converted.append(a[0]) or convert(*a))
    cache.prepare(str(fake_bin.archive))
    cache.prepare(str(fake_bin.archive))
    assert converted == [fake_bin.archive]  # the same file: the cache is reused
    copy = tmp_path / "elsewhere" / "cifar-10-binary.tar.gz"
    copy.parent.mkdir()
    shutil.copy(fake_bin.archive, copy)
    cache.prepare(str(copy))
    assert converted[-1] == copy  # another file: verified and converted again
    os.utime(copy, ns=(1, 1))
    cache.prepare(str(copy))
    assert converted[-1] == copy and len(converted) == 3  # the same path, changed: again
    cache.prepare(str(fake_bin.folder))
    cache.prepare(str(fake_bin.folder))
    assert converted[-1] == fake_bin.folder and len(converted) == 4  # a folder too: converted once


def test_not_an_archive(tmp_path):
    text = tmp_path / "notes.tar.gz"
    text.write_text("hello")
    with pytest.raises(DataError, match="not a CIFAR-10 archive or minicnn cache"):
        data.load_cifar10(str(text))
    other = tmp_path / "other"
    other.mkdir()
    (other / "a.txt").write_text("x")
    with pytest.raises(DataError, match="not a CIFAR-10 archive or minicnn cache"):
        data.load_cifar10(str(make_tar(other, tmp_path / "other.tar.gz")))
    with pytest.raises(DataError, match="holds no CIFAR-10 batch files"):
        data.load_cifar10(str(other))
    h5 = tmp_path / "weights.h5"
    with h5py.File(h5, "w") as f:
        f["w"] = np.zeros(3)
    with pytest.raises(DataError, match="not a CIFAR-10 archive or minicnn cache"):
        data.load_cifar10(str(h5))
    with pytest.raises(DataError, match="does not exist"):
        data.load_cifar10(str(tmp_path / "missing.tar.gz"))


def test_unpickler_refuses_other_objects(tmp_path, monkeypatch):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    evil = pickle.dumps({b"data": os.getcwd, b"labels": []})  # a callable reference, not data
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(evil)
    monkeypatch.setattr(archive, "MEMBER_MD5", {})
    with pytest.raises(DataError, match="cannot be read"):
        cache.prepare(str(folder))


# ---------------------------------------------------------------------------------------- downloads
def _no_network(*args, **kwargs):
    raise OSError("Network is unreachable")


def test_offline_without_data(monkeypatch, tmp_path):
    monkeypatch.setattr(archive, "download_file", _no_network)
    with pytest.raises(DataError) as err:
        data.load_cifar10()
    message = str(err.value)
    assert "MINICNN_DATA" in message and "--data" in message
    assert str(tmp_path / "cache") in message and "cifar-10-binary.tar.gz" in message
    assert "Network is unreachable" in message and "\n" not in message
    with pytest.raises(DataError, match="minicnn data prepare"):
        cache.prepare(None, download=False)


def test_download_then_convert(fake_bin, monkeypatch, tmp_path):
    calls = []

    def fake_download(url, dest, *, md5=None, progress=False):
        calls.append((url, md5))
        Path(dest).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(fake_bin.archive, dest)
        return Path(dest)

    monkeypatch.setattr(archive, "download_file", fake_download)
    assert_matches(data.load_cifar10(), fake_bin)
    assert calls == [(archive.BINARY_URL, archive.BINARY_ARCHIVE_MD5)]
    assert (tmp_path / "cache" / "cifar-10-binary.tar.gz").exists()
    # a URL source downloads too, named after the URL; a non-official URL has no container md5
    cache.cache_path().unlink()
    assert_matches(data.load_cifar10("https://example.org/mirror/cifar-10-binary-copy.tar.gz"), fake_bin)
    assert calls[-1] == ("https://example.org/mirror/cifar-10-binary-copy.tar.gz", None)


def test_download_file_checks_md5(tmp_path):
    src = tmp_path / "payload.bin"
    src.write_bytes(b"some bytes" * 1000)
    good = hashlib.md5(src.read_bytes()).hexdigest()
    dest = tmp_path / "dl" / "payload.bin"
    assert archive.download_file(src.as_uri(), dest, md5=good) == dest
    assert dest.read_bytes() == src.read_bytes()
    dest2 = tmp_path / "dl" / "bad.bin"
    with pytest.raises(DataError, match="corrupt"):
        archive.download_file(src.as_uri(), dest2, md5="0" * 32)
    assert sorted(p.name for p in dest.parent.iterdir()) == ["payload.bin"]  # no partial files
    with pytest.raises(OSError):
        archive.download_file((tmp_path / "nothing").as_uri(), dest2)


# ------------------------------------------------------------------------------- normalise and batch
def test_normalize_exact_values():
    x = np.array([0, 255, 51, 102, 204, 153], dtype=np.uint8).reshape(1, 3, 1, 2)
    unit = data.normalize(x, "unit")
    assert unit.dtype == np.float32 and unit.shape == x.shape
    np.testing.assert_allclose(unit.ravel(), [0, 1, 0.2, 0.4, 0.8, 0.6], rtol=0, atol=1e-7)
    center = data.normalize(x, "center")
    np.testing.assert_allclose(center.ravel(), [-0.5, 0.5, -0.3, -0.1, 0.3, 0.1], rtol=0, atol=1e-7)
    assert center[0, 0, 0, 0] == -0.5 and center[0, 0, 0, 1] == 0.5
    std = data.normalize(x, "standard", mean=np.array([0.5, 0.2, 0.4]), std=np.array([0.5, 0.1, 0.2]))
    assert std.dtype == np.float32
    np.testing.assert_allclose(std.ravel(), [-1, 1, 0, 2, 2, 1], rtol=0, atol=1e-6)
    out = np.full(x.shape, 7.0, dtype=np.float32)
    assert data.normalize(x, "center", out=out) is out
    np.testing.assert_array_equal(out, center)


def test_normalize_errors():
    x = np.zeros((2, 3, 4, 4), dtype=np.uint8)
    with pytest.raises(DataError, match="center, unit, standard"):
        data.normalize(x, "minmax")
    with pytest.raises(DataError, match="mean and std"):
        data.normalize(x, "standard")
    with pytest.raises(DataError, match="out must be float32"):
        data.normalize(x, "unit", out=np.empty((2, 3, 4, 4), dtype=np.float64))
    assert data.NORMALIZATIONS == ("center", "unit", "standard")


def test_synthetic_dataset_and_explicit_cache(tmp_path):
    ds = dataset.make_synthetic(64, 16, np.random.default_rng(1))
    assert ds.x_train.shape == (64, 3, 32, 32) and ds.x_train.dtype == np.uint8
    assert ds.y_test.shape == (16,) and ds.y_test.dtype == np.int64
    assert ds.y_train.min() >= 0 and ds.y_train.max() <= 9 and len(ds.classes) == 10
    # the class colour is recoverable from the mean pixel of each image
    means = ds.x_train.mean(axis=(2, 3))
    nearest = np.argmin(((means[:, None, :] - dataset.SYNTHETIC_COLOURS[None]) ** 2).sum(-1), axis=1)
    assert (nearest == ds.y_train).mean() > 0.95
    again = dataset.make_synthetic(64, 16, np.random.default_rng(1))
    np.testing.assert_array_equal(ds.x_train, again.x_train)
    path = cache.write_cache(ds, tmp_path / "synthetic.h5", source="synthetic", source_format="synthetic")
    loaded = data.load_cifar10(str(path), train_limit=10)
    np.testing.assert_array_equal(loaded.x_train, ds.x_train[:10])
    np.testing.assert_array_equal(loaded.y_test, ds.y_test)
    np.testing.assert_allclose(loaded.channel_mean, ds.channel_mean)
    facts = cache.info(path)
    assert facts["n_train"] == 64 and facts["official"] is False


# ----------------------------------------------------------------------------------------------- CLI
def test_cli_prepare_and_info(fake_bin, tmp_path):
    runner = CliRunner()
    result = runner.invoke(cli, ["data", "prepare", "--source", str(fake_bin.archive)])
    assert result.exit_code == 0, result.output
    assert str(tmp_path / "cache" / "cifar10.h5") in result.output
    assert "30 train and 5 test images" in result.output
    result = runner.invoke(cli, ["data", "info"])
    assert result.exit_code == 0, result.output
    assert "30 images" in result.output and "5 images" in result.output
    assert "channel mean" in result.output and fake_bin.md5["data_batch_1.bin"] in result.output
    result = runner.invoke(cli, ["data", "info", "--json", "--data", str(fake_bin.folder)])
    facts = json.loads(result.output)
    assert facts["n_test"] == 5 and facts["classes"] == FAKE_CLASSES
    assert sum(facts["train_class_counts"].values()) == 30
    assert runner.invoke(cli, ["data", "prepare", "--help"]).output.count("MINICNN_CACHE") >= 1
    assert "MINICNN_DATA" in runner.invoke(cli, ["data", "info", "--help"]).output


@pytest.mark.parametrize("command", ["prepare", "info"])
def test_cli_bad_paths_give_clean_errors(command, tmp_path):
    runner = CliRunner()
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x00" * 100)
    flag = "--source" if command == "prepare" else "--data"
    for path in (tmp_path / "missing.tar.gz", junk):
        result = runner.invoke(cli, ["data", command, flag, str(path)])
        assert result.exit_code == 1
        assert isinstance(result.exception, SystemExit)
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
        assert "Traceback" not in result.output


def test_cli_info_without_data_does_not_download(monkeypatch):
    monkeypatch.setattr(archive, "download_file", lambda *a, **k: pytest.fail("tried to download"))
    result = CliRunner().invoke(cli, ["data", "info"])
    assert result.exit_code == 1 and "minicnn data prepare" in result.output


# ----------------------------------------------------------------------------------------- real data
@pytest.fixture(scope="session")
def real_cifar(tmp_path_factory):
    if not REAL_DATA or not Path(REAL_DATA).exists():
        pytest.skip("set MINICNN_DATA to a CIFAR-10 archive to run the real-data test")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MINICNN_DATA", REAL_DATA)
        mp.setenv("MINICNN_CACHE", str(tmp_path_factory.mktemp("real-cache")))
        start = time.perf_counter()
        path = cache.prepare()
        print(f"\nprepared {REAL_DATA} -> {path} in {time.perf_counter() - start:.2f} s")
        return path


@pytest.mark.slow
def test_real_cifar10(real_cifar):
    start = time.perf_counter()
    ds = data.load_cifar10(str(real_cifar))
    print(f"loaded the full cache in {time.perf_counter() - start:.3f} s")
    assert ds.x_train.shape == (50000, 3, 32, 32) and ds.x_test.shape == (10000, 3, 32, 32)
    assert ds.y_train[:10].tolist() == [6, 9, 9, 4, 1, 1, 2, 7, 8, 3]
    assert ds.y_test[:10].tolist() == [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]
    assert ds.x_test[0, 0, 0, :9].tolist() == [158, 159, 165, 166, 160, 156, 162, 159, 158]
    assert ds.x_test[0, 2, 31, -3:].tolist() == [124, 129, 110]
    assert np.bincount(ds.y_train).tolist() == [5000] * 10
    assert np.bincount(ds.y_test).tolist() == [1000] * 10
    assert ds.classes == list(dataset.CLASSES)
    np.testing.assert_allclose(ds.channel_mean, [0.49139968, 0.48215841, 0.44653091], atol=1e-8)
    np.testing.assert_allclose(ds.channel_std, [0.24703223, 0.24348513, 0.26158784], atol=1e-8)
    assert cache.info(real_cifar)["official"] is True
    small = data.load_cifar10(str(real_cifar), train_limit=1000, test_limit=100)
    np.testing.assert_array_equal(small.x_train, ds.x_train[:1000])
    np.testing.assert_array_equal(small.channel_std, ds.channel_std)
