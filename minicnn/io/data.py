"""CIFAR-10: locate, verify, convert once to an HDF5 cache, load, normalise and batch.

Where the data comes from (first match wins):

1. the ``data`` argument (``--data PATH`` on the command line),
2. the environment variable ``MINICNN_DATA``,
3. the cache file ``cache_path()`` if it already exists and is valid,
4. an official archive or unpacked folder lying next to the cache file,
5. a download of the official binary archive into the cache folder.

A source may be an official archive (``cifar-10-binary.tar.gz`` or ``cifar-10-python.tar.gz``), an
unpacked folder (``cifar-10-batches-bin/``, ``cifar-10-batches-py/`` or the folder holding one of
them), an http(s) URL of an archive, or an HDF5 cache built earlier (``.h5``).

Every batch file is checked against the md5 of the official file before it is decoded. The images are
converted once to an uncompressed HDF5 cache (uint8, NCHW) so later loads take a fraction of a second.
Normalisation to float32 happens per batch (``normalize``), never in the cache.

Shapes use N (images), C (channels, 3: red, green, blue), H and W (32 each).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import pickle
import sys
import tarfile
import tempfile
import time
import urllib.parse
import urllib.request
import zlib
from pathlib import Path
from typing import Iterator

import h5py
import numpy as np

from minicnn.errors import DataError

# ------------------------------------------------------------------------------------ official data
BINARY_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
BINARY_ARCHIVE_MD5 = "c32a1d4ab5d03f1284b67883e8d87530"
PYTHON_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
PYTHON_ARCHIVE_MD5 = "c58f30108f718f92721af3b95e74349a"

#: md5 of each official archive, keyed by its URL. Only used to check downloads: a re-packed archive
#: (such as one sorted by name or re-compressed) has another container md5 but the same members.
ARCHIVE_MD5 = {BINARY_URL: BINARY_ARCHIVE_MD5, PYTHON_URL: PYTHON_ARCHIVE_MD5}

BINARY_FOLDER = "cifar-10-batches-bin"
PYTHON_FOLDER = "cifar-10-batches-py"

#: Member file names of the two official versions: five train batches, one test batch, class names.
TRAIN_MEMBERS = {
    "binary": tuple(f"data_batch_{i}.bin" for i in range(1, 6)),
    "python": tuple(f"data_batch_{i}" for i in range(1, 6)),
}
TEST_MEMBER = {"binary": "test_batch.bin", "python": "test_batch"}
META_MEMBER = {"binary": "batches.meta.txt", "python": "batches.meta"}

#: md5 of every official member file. ``batches.meta.txt`` has no published hash, so it is not
#: verified (its class names are checked for shape only).
MEMBER_MD5 = {
    "data_batch_1.bin": "5dd7e06a14cb22eb9f671a540d1b7c25",
    "data_batch_2.bin": "5ea93a67294ea407fff1d09f752e9692",
    "data_batch_3.bin": "942cd6a4bcdd0dd3c604fbe906cb4421",
    "data_batch_4.bin": "ae636b3ba5c66a11e91e8cb52e771fcb",
    "data_batch_5.bin": "53f37980c15c3d472c316c40844f3f0d",
    "test_batch.bin": "803d5f7f4d78ea53de84dbe85f74fb6d",
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
    "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
}

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
IMAGE_SHAPE = (3, 32, 32)
IMAGE_BYTES = 3 * 32 * 32
RECORD_BYTES = 1 + IMAGE_BYTES  # binary version: one label byte, then the red, green, blue planes

# ----------------------------------------------------------------------------------------- the cache
ENV_DATA = "MINICNN_DATA"
ENV_CACHE = "MINICNN_CACHE"
CACHE_NAME = "cifar10.h5"
FORMAT_VERSION = 1

_ALL_MEMBERS = frozenset(
    [*TRAIN_MEMBERS["binary"], *TRAIN_MEMBERS["python"], *TEST_MEMBER.values(), *META_MEMBER.values()]
)
_SOURCE_HINT = (
    "point --data PATH or MINICNN_DATA at cifar-10-binary.tar.gz, cifar-10-python.tar.gz, "
    "an unpacked cifar-10-batches-bin/ or cifar-10-batches-py/ folder, or a minicnn .h5 cache"
)


@dataclasses.dataclass(repr=False)
class Dataset:
    """CIFAR-10 (or a stand-in of the same layout) in memory.

    x_train: (N, 3, 32, 32) uint8, C-contiguous, channels red, green, blue.
    y_train: (N,) int64 labels in 0..9.
    x_test, y_test: the same for the test split.
    classes: the 10 class names in label order.
    channel_mean, channel_std: (3,) float64, per-channel mean and population standard deviation of
        the FULL training set in [0, 1] pixel units (also when only the first images were loaded).
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: list[str]
    channel_mean: np.ndarray
    channel_std: np.ndarray

    @property
    def n_train(self) -> int:
        return int(self.x_train.shape[0])

    @property
    def n_test(self) -> int:
        return int(self.x_test.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __repr__(self) -> str:
        return (
            f"Dataset(x_train={self.x_train.shape} {self.x_train.dtype}, "
            f"x_test={self.x_test.shape} {self.x_test.dtype}, classes={len(self.classes)})"
        )


# ------------------------------------------------------------------------------------ locating data
def resolve_source(data: str | os.PathLike | None) -> str | None:
    """The data location the user asked for: ``data`` if given, else ``$MINICNN_DATA``, else None."""
    if data is not None and str(data) != "":
        return str(data)
    env = os.environ.get(ENV_DATA, "").strip()
    return env or None


def cache_path() -> Path:
    """Where the HDF5 cache lives: ``$MINICNN_CACHE/cifar10.h5``, else
    ``$XDG_CACHE_HOME/minicnn/cifar10.h5``, else ``~/.cache/minicnn/cifar10.h5``."""
    env = os.environ.get(ENV_CACHE, "").strip()
    if env:
        return Path(env).expanduser() / CACHE_NAME
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "minicnn" / CACHE_NAME


def _is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _say(progress: bool, message: str) -> None:
    if progress:
        print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------- downloads
def download_file(url: str, dest: str | os.PathLike, *, md5: str | None = None,
                  progress: bool = False) -> Path:
    """Download ``url`` to ``dest`` atomically (temporary file in the same folder, then rename).

    When ``md5`` is given the downloaded bytes must have it, else DataError. Network problems raise
    OSError (``urllib.error.URLError`` is one) so the caller can explain what to do offline.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=dest.name + ".", suffix=".part.tmp", dir=dest.parent)
    tmp = Path(tmp_name)
    digest = hashlib.md5()
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
            total = int(response.headers.get("Content-Length") or 0)
            done, next_report = 0, 0.1
            while True:
                chunk = response.read(1 << 20)
                if not chunk:
                    break
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if total and done / total >= next_report:
                    _say(progress, f"  downloaded {done / 1e6:.0f} of {total / 1e6:.0f} MB")
                    next_report += 0.1
        if md5 is not None and digest.hexdigest() != md5:
            raise DataError(
                f"the download of {url} has md5 {digest.hexdigest()}, expected {md5}: it is corrupt "
                f"or incomplete; run the command again, or download it by hand and {_SOURCE_HINT}"
            )
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            tmp.unlink()
    return dest


def _download_into(url: str, folder: Path, progress: bool) -> Path:
    """Download an archive URL into ``folder`` (reusing a finished earlier download)."""
    name = Path(urllib.parse.urlparse(url).path).name or "cifar-10-download.tar.gz"
    dest = folder / name
    if dest.is_file():
        _say(progress, f"using the earlier download {dest}")
        return dest
    _say(progress, f"downloading {url} to {dest}")
    try:
        return download_file(url, dest, md5=ARCHIVE_MD5.get(url), progress=progress)
    except OSError as exc:
        raise DataError(
            f"could not download {url} ({_one_line(exc)}); put the archive in {folder}, "
            f"or {_SOURCE_HINT}"
        ) from None


# ------------------------------------------------------------------------------- reading the source
def _read_tar(path: Path, progress: bool) -> dict[str, bytes]:
    """The CIFAR-10 member files of a tar archive (any compression), by base name, streamed."""
    members: dict[str, bytes] = {}
    try:
        with tarfile.open(path, mode="r|*") as tar:
            for member in tar:
                name = member.name.rsplit("/", 1)[-1]
                if not member.isfile() or name not in _ALL_MEMBERS:
                    continue
                if name in members:
                    raise DataError(
                        f"{path} holds {name} twice; it is not an official CIFAR-10 archive: "
                        f"{_SOURCE_HINT}"
                    )
                _say(progress, f"  reading {member.name}")
                members[name] = tar.extractfile(member).read()
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise DataError(
            f"could not read the archive {path} ({_one_line(exc)}); it is truncated or corrupt: "
            f"delete it and download it again"
        ) from None
    return members


def _member_folder(folder: Path) -> Path:
    """The folder that holds the batch files: ``folder`` itself or its official sub-folder."""
    for candidate in (folder / BINARY_FOLDER, folder / PYTHON_FOLDER, folder):
        if candidate.is_dir() and any((candidate / n).is_file() for n in _ALL_MEMBERS):
            return candidate
    raise DataError(
        f"the folder {folder} holds no CIFAR-10 batch files (data_batch_1.bin ... or "
        f"data_batch_1 ...); {_SOURCE_HINT}"
    )


def _read_folder(folder: Path, progress: bool) -> dict[str, bytes]:
    """The CIFAR-10 member files of an unpacked folder, by base name."""
    inner = _member_folder(folder)
    members = {}
    for name in sorted(_ALL_MEMBERS):
        file = inner / name
        if file.is_file():
            _say(progress, f"  reading {file}")
            try:
                members[name] = file.read_bytes()
            except OSError as exc:
                raise DataError(f"could not read {file} ({_one_line(exc)}); check its permissions") from None
    return members


def _detect_format(members: dict[str, bytes], where: Path) -> str:
    """'binary' or 'python': which official version the member files are."""
    for fmt in ("binary", "python"):
        if all(n in members for n in (*TRAIN_MEMBERS[fmt], TEST_MEMBER[fmt])):
            return fmt
    fmt = "binary" if any(n.endswith(".bin") for n in members) else "python"
    missing = [n for n in (*TRAIN_MEMBERS[fmt], TEST_MEMBER[fmt]) if n not in members]
    if len(missing) == 6:
        raise DataError(f"{where} is not a CIFAR-10 archive or minicnn cache; {_SOURCE_HINT}")
    raise DataError(
        f"{where} lacks {', '.join(missing)}; it is incomplete: delete it and download the archive "
        f"again, or {_SOURCE_HINT}"
    )


def _verify_members(members: dict[str, bytes], fmt: str, where: Path) -> dict[str, str]:
    """Check every member with a known official md5; return the md5 of every member used."""
    names = [*TRAIN_MEMBERS[fmt], TEST_MEMBER[fmt]]
    if META_MEMBER[fmt] in members:
        names.append(META_MEMBER[fmt])
    md5s = {}
    for name in names:
        got = hashlib.md5(members[name]).hexdigest()
        expected = MEMBER_MD5.get(name)
        if expected is not None and got != expected:
            raise DataError(
                f"{name} in {where} has md5 {got}, expected {expected}: the archive is corrupt; "
                f"delete it and download it again from {BINARY_URL}"
            )
        md5s[name] = got
    return md5s


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles the python-version batches: plain containers and numpy arrays, nothing else."""

    _ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),
    }

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a CIFAR-10 batch")
        if module.startswith("numpy.core") and hasattr(np, "_core"):
            module = "numpy._core" + module[len("numpy.core"):]
        return super().find_class(module, name)


def _unpickle(blob: bytes, name: str, where: Path) -> dict:
    """A python-version member as a dict with str keys."""
    try:
        obj = _BatchUnpickler(io.BytesIO(blob), encoding="latin1").load()
    except Exception as exc:  # a corrupt pickle can raise almost anything
        raise DataError(
            f"{name} in {where} cannot be read ({_one_line(exc)}); the archive is corrupt: delete it "
            f"and download it again"
        ) from None
    if not isinstance(obj, dict):
        raise DataError(f"{name} in {where} is not a CIFAR-10 batch; {_SOURCE_HINT}")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _decode_member(blob: bytes, fmt: str, name: str, where: Path) -> tuple[np.ndarray, np.ndarray]:
    """One batch file -> (x (n, 3, 32, 32) uint8, y (n,) uint8)."""
    if fmt == "binary":
        if len(blob) % RECORD_BYTES:
            raise DataError(
                f"{name} in {where} is {len(blob)} bytes, not a whole number of {RECORD_BYTES}-byte "
                f"records; the archive is corrupt: delete it and download it again"
            )
        records = np.frombuffer(blob, dtype=np.uint8).reshape(-1, RECORD_BYTES)
        y = records[:, 0].copy()
        x = records[:, 1:].reshape(-1, *IMAGE_SHAPE).copy()
    else:
        batch = _unpickle(blob, name, where)
        try:
            pixels = np.asarray(batch["data"])
            y = np.asarray(batch["labels"], dtype=np.int64)
        except (KeyError, TypeError, ValueError):
            raise DataError(f"{name} in {where} has no 'data'/'labels' entries; {_SOURCE_HINT}") from None
        if pixels.dtype != np.uint8 or pixels.ndim != 2 or pixels.shape[1] != IMAGE_BYTES \
                or y.shape != (pixels.shape[0],):
            raise DataError(
                f"{name} in {where} holds data of shape {pixels.shape} {pixels.dtype} and "
                f"{y.size} labels, expected (n, {IMAGE_BYTES}) uint8 and n labels; {_SOURCE_HINT}"
            )
        x = np.ascontiguousarray(pixels.reshape(-1, *IMAGE_SHAPE))
    if y.size and (y.min() < 0 or y.max() >= len(CLASSES)):
        raise DataError(f"{name} in {where} has labels outside 0..9; {_SOURCE_HINT}")
    return x, y.astype(np.uint8)


def _decode_classes(members: dict[str, bytes], fmt: str, where: Path) -> list[str]:
    """Class names from the meta member; the official names when it is absent or malformed."""
    blob = members.get(META_MEMBER[fmt])
    if blob is None:
        return list(CLASSES)
    if fmt == "binary":
        names = [line.strip() for line in blob.decode("ascii", "replace").splitlines() if line.strip()]
    else:
        meta = _unpickle(blob, META_MEMBER[fmt], where)
        raw = meta.get("label_names", [])
        names = [n.decode("ascii", "replace") if isinstance(n, bytes) else str(n) for n in raw]
    return names if len(names) == len(CLASSES) else list(CLASSES)


def channel_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and population std of uint8 images in [0, 1] units.

    x: (N, C, H, W) uint8. Returns two (C,) float64 arrays. Counts pixel values with integer
    arithmetic, so the result does not depend on summation order and needs no float copy of x.
    """
    x = np.asarray(x)
    if x.dtype != np.uint8 or x.ndim != 4:
        raise DataError(f"channel_stats expects (N, C, H, W) uint8 images, got {x.shape} {x.dtype}")
    values = np.arange(256, dtype=np.int64)
    means, stds = [], []
    for c in range(x.shape[1]):
        counts = np.bincount(x[:, c].ravel(), minlength=256).astype(np.int64)
        n = int(counts.sum())
        if n == 0:
            means.append(0.0)
            stds.append(0.0)
            continue
        s1 = int((counts * values).sum())
        s2 = int((counts * values * values).sum())
        means.append(s1 / n / 255.0)
        stds.append(((s2 * n - s1 * s1) / (n * n)) ** 0.5 / 255.0)  # exact integer variance
    return np.array(means, dtype=np.float64), np.array(stds, dtype=np.float64)


def _convert(source: Path, target: Path, progress: bool) -> Path:
    """Read, verify and decode an archive or folder, and write the cache ``target``."""
    start = time.perf_counter()
    if source.is_dir():
        _member_folder(source)  # fails early when the folder holds no batch files
        _say(progress, f"converting {source} -> {target}")
        members = _read_folder(source, progress)
    else:
        try:
            is_tar = tarfile.is_tarfile(source)
        except OSError as exc:
            raise DataError(f"could not read {source} ({_one_line(exc)}); check its permissions") from None
        if not is_tar:
            raise DataError(f"{source} is not a CIFAR-10 archive or minicnn cache; {_SOURCE_HINT}")
        _say(progress, f"converting {source} -> {target}")
        members = _read_tar(source, progress)
    fmt = _detect_format(members, source)
    md5s = _verify_members(members, fmt, source)
    xs, ys = [], []
    for name in TRAIN_MEMBERS[fmt]:
        x, y = _decode_member(members.pop(name), fmt, name, source)
        xs.append(x)
        ys.append(y)
    x_test, y_test = _decode_member(members.pop(TEST_MEMBER[fmt]), fmt, TEST_MEMBER[fmt], source)
    x_train = np.concatenate(xs)
    del xs
    mean, std = channel_stats(x_train)
    dataset = Dataset(
        x_train=x_train, y_train=np.concatenate(ys), x_test=x_test, y_test=y_test,
        classes=_decode_classes(members, fmt, source), channel_mean=mean, channel_std=std,
    )
    write_cache(dataset, target, source=str(source), source_format=fmt, member_md5=md5s)
    _say(progress, f"wrote {target} in {time.perf_counter() - start:.1f} s")
    return target


def _local_archive(folder: Path) -> Path | None:
    """An official archive or unpacked folder lying in ``folder`` (the cache folder), if any."""
    for name in ("cifar-10-binary.tar.gz", "cifar-10-python.tar.gz", BINARY_FOLDER, PYTHON_FOLDER):
        if (folder / name).exists():
            return folder / name
    return None


# ---------------------------------------------------------------------------------------- the cache
def write_cache(dataset: Dataset, path: str | os.PathLike, *, source: str = "",
                source_format: str = "", member_md5: dict[str, str] | None = None) -> Path:
    """Write ``dataset`` as a minicnn HDF5 cache, atomically (temporary file, then rename).

    Layout: datasets ``x_train`` (N, 3, 32, 32) uint8, ``y_train`` (N,) uint8, ``x_test``, ``y_test``
    (uncompressed, contiguous); attributes ``format_version``, ``classes`` (JSON list),
    ``channel_mean`` and ``channel_std`` ((3,) float64, [0, 1] units, full training set),
    ``member_md5`` (JSON object: member file -> md5 it was built from), ``source``,
    ``source_format`` ('binary', 'python' or free text such as 'synthetic').
    Also useful to save a synthetic stand-in (``make_synthetic``) for quick command-line runs.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise DataError(
            f"cannot write the cache in {path.parent} ({_one_line(exc)}); set MINICNN_CACHE to a "
            f"writable folder"
        ) from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("x_train", data=np.ascontiguousarray(dataset.x_train, dtype=np.uint8))
            f.create_dataset("y_train", data=np.asarray(dataset.y_train).astype(np.uint8))
            f.create_dataset("x_test", data=np.ascontiguousarray(dataset.x_test, dtype=np.uint8))
            f.create_dataset("y_test", data=np.asarray(dataset.y_test).astype(np.uint8))
            f.attrs["format_version"] = FORMAT_VERSION
            f.attrs["classes"] = json.dumps(list(dataset.classes))
            f.attrs["channel_mean"] = np.asarray(dataset.channel_mean, dtype=np.float64)
            f.attrs["channel_std"] = np.asarray(dataset.channel_std, dtype=np.float64)
            f.attrs["member_md5"] = json.dumps(member_md5 or {}, sort_keys=True)
            f.attrs["source"] = source
            f.attrs["source_format"] = source_format
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as exc:
        raise DataError(
            f"cannot write the cache {path} ({_one_line(exc)}); set MINICNN_CACHE to a writable "
            f"folder with 200 MB free"
        ) from None
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _cache_problem(path: Path, *, official: bool) -> str | None:
    """Why ``path`` is not a usable cache (None when it is). ``official`` also requires that it was
    built from members whose md5s equal the official ones (``MEMBER_MD5``)."""
    if not path.is_file():
        return "no such file"
    try:
        with h5py.File(path, "r") as f:
            if int(f.attrs.get("format_version", -1)) != FORMAT_VERSION:
                return f"format version {f.attrs.get('format_version')} is not {FORMAT_VERSION}"
            for split in ("train", "test"):
                x, y = f.get(f"x_{split}"), f.get(f"y_{split}")
                if not isinstance(x, h5py.Dataset) or not isinstance(y, h5py.Dataset):
                    return f"x_{split} or y_{split} is missing"
                if x.dtype != np.uint8 or x.shape[1:] != IMAGE_SHAPE or y.shape != x.shape[:1]:
                    return f"x_{split} {x.shape} does not match y_{split} {y.shape}"
            classes = json.loads(f.attrs["classes"])
            if len(classes) != len(CLASSES):
                return f"{len(classes)} class names, expected {len(CLASSES)}"
            if np.shape(f.attrs["channel_mean"]) != (3,) or np.shape(f.attrs["channel_std"]) != (3,):
                return "channel_mean/channel_std are not 3 numbers"
            md5s = json.loads(f.attrs["member_md5"])
    except (OSError, KeyError, ValueError, TypeError) as exc:
        return _one_line(exc)
    if official:
        for fmt in ("binary", "python"):
            names = [*TRAIN_MEMBERS[fmt], TEST_MEMBER[fmt]]
            if all(md5s.get(n) is not None and md5s.get(n) == MEMBER_MD5.get(n) for n in names):
                return None
        return "not built from the official CIFAR-10 files"
    return None


def load_cache(path: str | os.PathLike, *, train_limit: int | None = None,
               test_limit: int | None = None) -> Dataset:
    """Load a minicnn HDF5 cache: the first ``train_limit`` / ``test_limit`` images of each split
    (all when None or larger than the split). Labels come back as int64."""
    path = Path(path)
    problem = _cache_problem(path, official=False)
    if problem is not None:
        raise DataError(f"{path} is not a CIFAR-10 archive or minicnn cache ({problem}); {_SOURCE_HINT}")
    with h5py.File(path, "r") as f:
        splits = {}
        for split, limit in (("train", train_limit), ("test", test_limit)):
            xd, yd = f[f"x_{split}"], f[f"y_{split}"]
            n = xd.shape[0] if limit is None else min(limit, xd.shape[0])
            x = np.empty((n, *IMAGE_SHAPE), dtype=np.uint8)
            if n:
                xd.read_direct(x, np.s_[:n])
            splits[split] = (x, yd[:n].astype(np.int64))
        return Dataset(
            x_train=splits["train"][0], y_train=splits["train"][1],
            x_test=splits["test"][0], y_test=splits["test"][1],
            classes=list(json.loads(f.attrs["classes"])),
            channel_mean=np.asarray(f.attrs["channel_mean"], dtype=np.float64),
            channel_std=np.asarray(f.attrs["channel_std"], dtype=np.float64),
        )


# ------------------------------------------------------------------------------------ public entry
def prepare(source: str | os.PathLike | None = None, *, download: bool = True, progress: bool = False,
            cache: str | os.PathLike | None = None) -> Path:
    """Make sure an HDF5 cache of CIFAR-10 exists and return its path.

    source: archive, unpacked folder, http(s) URL or .h5 cache (see the module docstring); None
        means ``$MINICNN_DATA``, else the existing cache, else an archive in the cache folder, else
        a download.
    download: allow downloading the official binary archive when nothing local is found.
    progress: print what happens to stderr.
    cache: the cache file to build (default ``cache_path()``).

    A valid cache is returned at once without reading the source again. A .h5 source is checked and
    returned as is. Every batch file is verified against its official md5 before it is decoded.
    """
    target = Path(cache).expanduser() if cache is not None else cache_path()
    source = resolve_source(source)
    if source is not None:
        if _is_url(source):
            if _cache_problem(target, official=True) is None:
                return target
            return _convert(_download_into(source, target.parent, progress), target, progress)
        path = Path(source).expanduser()
        if not path.exists():
            raise DataError(f"the data path {path} does not exist; {_SOURCE_HINT}")
        if path.is_file() and h5py.is_hdf5(path):
            problem = _cache_problem(path, official=False)
            if problem is not None:
                raise DataError(
                    f"{path} is not a CIFAR-10 archive or minicnn cache ({problem}); rebuild it with "
                    f"`minicnn data prepare`, or {_SOURCE_HINT}"
                )
            return path
        if _cache_problem(target, official=True) is None:
            return target
        return _convert(path, target, progress)

    if _cache_problem(target, official=True) is None:
        return target
    local = _local_archive(target.parent)
    if local is not None:
        return _convert(local, target, progress)
    archive_hint = (
        f"put cifar-10-binary.tar.gz (or cifar-10-python.tar.gz) from {BINARY_URL.rsplit('/', 1)[0]}/ "
        f"in {target.parent}, or point --data PATH or MINICNN_DATA at it"
    )
    if not download:
        raise DataError(f"CIFAR-10 not found (no cache at {target}); run `minicnn data prepare` to "
                        f"download it, or {archive_hint}")
    dest = target.parent / Path(BINARY_URL).name
    _say(progress, f"downloading {BINARY_URL} to {dest}")
    try:
        archive = download_file(BINARY_URL, dest, md5=BINARY_ARCHIVE_MD5, progress=progress)
    except OSError as exc:
        raise DataError(
            f"CIFAR-10 not found and the download failed ({_one_line(exc)}); {archive_hint}"
        ) from None
    return _convert(archive, target, progress)


def _check_limit(value: int | None, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise DataError(f"{name} must be a positive whole number of images, got {value!r}")
    return int(value)


def load_cifar10(data: str | os.PathLike | None = None, *, train_limit: int | None = None,
                 test_limit: int | None = None, download: bool = True) -> Dataset:
    """Load CIFAR-10, building the cache first if needed (see ``prepare``).

    data: archive, folder, URL or .h5 cache; None -> ``$MINICNN_DATA`` -> the user cache.
    train_limit, test_limit: keep only the first N images of each split (positive ints).
    Returns a Dataset: x (N, 3, 32, 32) uint8, y (N,) int64, full-training-set channel statistics.
    """
    train_limit = _check_limit(train_limit, "train_limit")
    test_limit = _check_limit(test_limit, "test_limit")
    path = prepare(resolve_source(data), download=download)
    return load_cache(path, train_limit=train_limit, test_limit=test_limit)


def info(path: str | os.PathLike) -> dict:
    """Facts about a cache file: sizes, per-split and per-class counts, statistics, md5s."""
    path = Path(path)
    problem = _cache_problem(path, official=False)
    if problem is not None:
        raise DataError(f"{path} is not a CIFAR-10 archive or minicnn cache ({problem}); {_SOURCE_HINT}")
    with h5py.File(path, "r") as f:
        classes = json.loads(f.attrs["classes"])
        result = {
            "path": str(path.resolve()),
            "file_bytes": path.stat().st_size,
            "format_version": int(f.attrs["format_version"]),
            "source": str(f.attrs.get("source", "")),
            "source_format": str(f.attrs.get("source_format", "")),
            "classes": classes,
            "image_shape": list(IMAGE_SHAPE),
            "channel_mean": [float(v) for v in f.attrs["channel_mean"]],
            "channel_std": [float(v) for v in f.attrs["channel_std"]],
            "member_md5": json.loads(f.attrs["member_md5"]),
        }
        for split in ("train", "test"):
            y = f[f"y_{split}"][:]
            counts = np.bincount(y, minlength=len(classes))
            result[f"n_{split}"] = int(y.shape[0])
            result[f"{split}_class_counts"] = {c: int(k) for c, k in zip(classes, counts)}
    result["official"] = _cache_problem(path, official=True) is None
    return result


# ------------------------------------------------------------------------------ batches and scaling
NORMALIZATIONS = ("center", "unit", "standard")


def normalize(x_uint8: np.ndarray, mode: str, mean: np.ndarray | None = None,
              std: np.ndarray | None = None, out: np.ndarray | None = None) -> np.ndarray:
    """Scale uint8 images to float32.

    x_uint8: (N, C, H, W) uint8 (center and unit accept any shape).
    mode: 'center' -> x/255 - 0.5 (the default elsewhere: it lets the paper's lr 0.8 train),
          'unit' -> x/255, 'standard' -> (x/255 - mean[c]) / std[c] per channel.
    mean, std: (C,) in [0, 1] units, needed for 'standard' (Dataset.channel_mean/channel_std).
    out: optional float32 array of x's shape to write into.
    Returns float32 of x's shape.
    """
    if mode not in NORMALIZATIONS:
        raise DataError(f"unknown normalisation {mode!r}; choose one of {', '.join(NORMALIZATIONS)}")
    x = np.asarray(x_uint8)
    if out is None:
        out = np.empty(x.shape, dtype=np.float32)
    elif out.shape != x.shape or out.dtype != np.float32:
        raise DataError(f"normalize: out must be float32 of shape {x.shape}, got {out.dtype} {out.shape}")
    np.divide(x, np.float32(255.0), out=out, dtype=np.float32)
    if mode == "center":
        out -= np.float32(0.5)
    elif mode == "standard":
        if mean is None or std is None:
            raise DataError("normalisation 'standard' needs the channel mean and std of the training set")
        if x.ndim != 4 or x.shape[1] != len(mean) or len(std) != len(mean):
            raise DataError(f"normalisation 'standard' expects (N, {len(mean)}, H, W) images, got {x.shape}")
        m = np.asarray(mean, dtype=np.float32).reshape(1, -1, 1, 1)
        s = np.asarray(std, dtype=np.float32).reshape(1, -1, 1, 1)
        if np.any(s <= 0):
            raise DataError("normalisation 'standard' needs a positive std for every channel")
        out -= m
        out /= s
    return out


def iterate_batches(n: int, batch_size: int, rng: np.random.Generator | None) -> Iterator[np.ndarray]:
    """Index arrays (int64) covering range(n) once, ``batch_size`` at a time; the last may be shorter.

    With ``rng`` the order is ``rng.permutation(n)`` (a shuffled epoch), else 0, 1, ..., n-1.
    """
    if batch_size < 1:
        raise DataError(f"batch size must be at least 1, got {batch_size}")
    order = rng.permutation(n) if rng is not None else np.arange(n)
    for start in range(0, n, batch_size):
        yield order[start:start + batch_size]


# --------------------------------------------------------------------------------- synthetic stand-in
_SYNTHETIC_COLOURS = np.array([
    [200, 60, 60], [60, 200, 60], [60, 60, 200], [200, 200, 60], [200, 60, 200],
    [60, 200, 200], [128, 128, 128], [230, 140, 30], [30, 120, 230], [110, 30, 160],
], dtype=np.float64)


def make_synthetic(n_train: int, n_test: int, rng: np.random.Generator | None = None) -> Dataset:
    """A small CIFAR-shaped dataset for fast tests: each class has its own mean colour plus noise.

    Returns x (n, 3, 32, 32) uint8 and y (n,) int64 in 0..9 for both splits; a linear model on
    average colours separates the classes, so a short training run reaches high accuracy.
    """
    rng = np.random.default_rng(0) if rng is None else rng

    def split(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, len(CLASSES), size=n).astype(np.int64)
        noise = rng.normal(0.0, 30.0, size=(n, *IMAGE_SHAPE))
        x = _SYNTHETIC_COLOURS[y][:, :, None, None] + noise
        return np.clip(np.rint(x), 0, 255).astype(np.uint8), y

    x_train, y_train = split(n_train)
    x_test, y_test = split(n_test)
    mean, std = channel_stats(x_train)
    return Dataset(x_train, y_train, x_test, y_test, list(CLASSES), mean, std)


def iter_members(source: str | os.PathLike) -> Iterator[tuple[str, bytes]]:
    """(base name, bytes) of every CIFAR-10 member of an archive or unpacked folder (for checksums)."""
    path = Path(source).expanduser()
    if not path.exists():
        raise DataError(f"the data path {path} does not exist; {_SOURCE_HINT}")
    members = _read_folder(path, False) if path.is_dir() else _read_tar(path, False)
    yield from sorted(members.items())


def make_normalizer(mode: str, dataset):
    """A function uint8 batch (N, 3, H, W) -> float32 batch, with the dataset's channel statistics."""
    normalize(np.zeros((1, 3, 1, 1), np.uint8), mode, dataset.channel_mean, dataset.channel_std)  # validates mode
    return lambda x: normalize(x, mode, dataset.channel_mean, dataset.channel_std)
