"""The official CIFAR-10 archives: where to download them, their md5s, and reading, verifying and
decoding an archive or unpacked folder into a ``Dataset``.

A source is an official archive (``cifar-10-binary.tar.gz`` or ``cifar-10-python.tar.gz``, or a
re-packed copy with the same members), an unpacked folder (``cifar-10-batches-bin/``,
``cifar-10-batches-py/`` or the folder holding one of them), or an http(s) URL of an archive.
Every batch file is checked against the md5 of the official file before it is decoded. An archive
that cannot be read whole is called corrupt, with its md5 next to the official archive's.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import sys
import tarfile
import urllib.parse
import urllib.request
import zlib
from pathlib import Path
from typing import Iterator

import numpy as np

from minicnn.errors import DataError, one_line
from minicnn.io.dataset import CLASSES, IMAGE_SHAPE, Dataset, channel_stats
from minicnn.io.files import atomic_path

BINARY_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
BINARY_ARCHIVE_MD5 = "c32a1d4ab5d03f1284b67883e8d87530"
PYTHON_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
PYTHON_ARCHIVE_MD5 = "c58f30108f718f92721af3b95e74349a"

#: md5 of each official archive, keyed by its URL. Used to check downloads and to describe an archive
#: that cannot be read: a re-packed archive (sorted by name, re-compressed) has another container md5
#: but the same members, and the members are what is verified.
ARCHIVE_MD5 = {BINARY_URL: BINARY_ARCHIVE_MD5, PYTHON_URL: PYTHON_ARCHIVE_MD5}

BINARY_FOLDER = "cifar-10-batches-bin"
PYTHON_FOLDER = "cifar-10-batches-py"
#: Official archives and folders, as they may lie next to the cache.
LOCAL_NAMES = ("cifar-10-binary.tar.gz", "cifar-10-python.tar.gz", BINARY_FOLDER, PYTHON_FOLDER)

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

IMAGE_BYTES = 3 * 32 * 32
RECORD_BYTES = 1 + IMAGE_BYTES  # binary version: one label byte, then the red, green, blue planes

_ALL_MEMBERS = frozenset(
    [*TRAIN_MEMBERS["binary"], *TRAIN_MEMBERS["python"], *TEST_MEMBER.values(), *META_MEMBER.values()]
)
SOURCE_HINT = (
    "point --data PATH or MINICNN_DATA at cifar-10-binary.tar.gz, cifar-10-python.tar.gz, "
    "an unpacked cifar-10-batches-bin/ or cifar-10-batches-py/ folder, or a minicnn .h5 cache"
)


def say(progress: bool, message: str) -> None:
    if progress:
        print(message, file=sys.stderr, flush=True)


def is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))


def source_stamp(path: Path) -> str:
    """What identifies an archive file or unpacked folder as it is now: its resolved path and the size
    and modification time of the file (of every member file, for a folder). A cache records the stamp
    of the source it was built from, so a source named again is reused only when it is that file."""
    path = Path(path).expanduser().resolve()
    files = [path] if path.is_file() else sorted(p for p in _member_folder(path).iterdir() if p.name in _ALL_MEMBERS)
    stats = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    return json.dumps({"path": str(path), "files": stats})


def file_md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# --------------------------------------------------------------------------------------- downloads
def download_file(url: str, dest: str | os.PathLike, *, md5: str | None = None,
                  progress: bool = False) -> Path:
    """Download ``url`` to ``dest`` atomically (temporary file in the same folder, then rename).

    When ``md5`` is given the downloaded bytes must have it, else DataError. Network problems raise
    OSError (``urllib.error.URLError`` is one) so the caller can explain what to do offline.
    """
    dest = Path(dest)
    digest = hashlib.md5()
    with atomic_path(dest) as tmp:
        with open(tmp, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
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
                    say(progress, f"  downloaded {done / 1e6:.0f} of {total / 1e6:.0f} MB")
                    next_report += 0.1
        if md5 is not None and digest.hexdigest() != md5:
            raise DataError(
                f"the download of {url} has md5 {digest.hexdigest()}, expected {md5}: it is corrupt "
                f"or incomplete; run the command again, or download it by hand and {SOURCE_HINT}"
            )
    return dest


def url_file(url: str, folder: Path) -> Path:
    """Where an archive URL is downloaded to in ``folder``."""
    return folder / (Path(urllib.parse.urlparse(url).path).name or "cifar-10-download.tar.gz")


def download_into(url: str, folder: Path, progress: bool) -> Path:
    """Download an archive URL into ``folder`` (reusing a finished earlier download)."""
    dest = url_file(url, folder)
    if dest.is_file():
        say(progress, f"using the earlier download {dest}")
        return dest
    say(progress, f"downloading {url} to {dest}")
    try:
        return download_file(url, dest, md5=ARCHIVE_MD5.get(url), progress=progress)
    except OSError as exc:
        raise DataError(
            f"could not download {url} ({one_line(exc)}); put the archive in {folder}, or {SOURCE_HINT}"
        ) from None


# ------------------------------------------------------------------------------- reading the source
class _Unreadable(Exception):
    """An archive that cannot be read whole (detail in the message); reported with its md5."""


def _corrupt(path: Path, detail: str) -> DataError:
    """The error for an archive file that cannot be read whole: its md5 beside the official one."""
    url = PYTHON_URL if "python" in path.name else BINARY_URL
    official, name = ARCHIVE_MD5[url], url.rsplit("/", 1)[-1]
    try:
        got = file_md5(path)
    except OSError as exc:
        return DataError(f"could not read {path} ({one_line(exc)}); check its permissions")
    if got == official:
        return DataError(f"{path} has the md5 of the official {name} ({got}) but could not be read "
                         f"({detail}); check the disk it lies on")
    return DataError(f"{path} is truncated or corrupt ({detail}): its md5 is {got}, the official {name}'s is "
                     f"{official}; delete it and download it again from {url}")


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
                    raise DataError(f"{path} holds {name} twice; it is not an official CIFAR-10 archive: "
                                    f"{SOURCE_HINT}")
                say(progress, f"  reading {member.name}")
                members[name] = tar.extractfile(member).read()
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise _Unreadable(one_line(exc) or type(exc).__name__) from None
    return members


def _member_folder(folder: Path) -> Path:
    """The folder that holds the batch files: ``folder`` itself or its official sub-folder."""
    for candidate in (folder / BINARY_FOLDER, folder / PYTHON_FOLDER, folder):
        if candidate.is_dir() and any((candidate / n).is_file() for n in _ALL_MEMBERS):
            return candidate
    raise DataError(f"the folder {folder} holds no CIFAR-10 batch files (data_batch_1.bin ... or "
                    f"data_batch_1 ...); {SOURCE_HINT}")


def _read_folder(folder: Path, progress: bool) -> dict[str, bytes]:
    """The CIFAR-10 member files of an unpacked folder, by base name."""
    inner = _member_folder(folder)
    members = {}
    for name in sorted(_ALL_MEMBERS):
        file = inner / name
        if file.is_file():
            say(progress, f"  reading {file}")
            try:
                members[name] = file.read_bytes()
            except OSError as exc:
                raise DataError(f"could not read {file} ({one_line(exc)}); check its permissions") from None
    return members


def _missing(members: dict[str, bytes]) -> tuple[str, list[str]]:
    """(format, the train and test members it lacks): 'binary' or 'python', whichever is closer."""
    for fmt in ("binary", "python"):
        if all(n in members for n in (*TRAIN_MEMBERS[fmt], TEST_MEMBER[fmt])):
            return fmt, []
    fmt = "binary" if any(n.endswith(".bin") for n in members) else "python"
    return fmt, [n for n in (*TRAIN_MEMBERS[fmt], TEST_MEMBER[fmt]) if n not in members]


def _gzip_magic(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(2) == b"\x1f\x8b"


def check_source(source: Path) -> None:
    """A quick look before reading: DataError unless ``source`` is a folder holding batch files or a
    tar archive."""
    if source.is_dir():
        _member_folder(source)
        return
    try:
        is_tar = tarfile.is_tarfile(source)
    except OSError as exc:
        raise DataError(f"could not read {source} ({one_line(exc)}); check its permissions") from None
    if not is_tar:
        if source.name in LOCAL_NAMES or _gzip_magic(source):  # meant as an archive: say how it differs
            raise _corrupt(source, "not a readable tar archive")
        raise DataError(f"{source} is not a CIFAR-10 archive or minicnn cache; {SOURCE_HINT}")


def read_members(source: Path, progress: bool = False) -> tuple[str, dict[str, bytes]]:
    """(format, member bytes by base name) of an archive file or unpacked folder, every train and test
    member present; DataError naming what is wrong otherwise."""
    check_source(source)
    if source.is_dir():
        members = _read_folder(source, progress)
        fmt, missing = _missing(members)
        if missing:
            raise DataError(f"{source} lacks {', '.join(missing)}; it is incomplete: unpack the archive again, "
                            f"or {SOURCE_HINT}")
        return fmt, members
    try:
        members = _read_tar(source, progress)
    except _Unreadable as exc:
        raise _corrupt(source, str(exc)) from None
    fmt, missing = _missing(members)
    if len(missing) == 6:
        raise DataError(f"{source} is not a CIFAR-10 archive or minicnn cache; {SOURCE_HINT}")
    if missing:
        raise _corrupt(source, f"it lacks {', '.join(missing)}")
    return fmt, members


def iter_members(source: str | os.PathLike) -> Iterator[tuple[str, bytes]]:
    """(base name, bytes) of every CIFAR-10 member of an archive or unpacked folder (for checksums)."""
    path = Path(source).expanduser()
    if not path.exists():
        raise DataError(f"the data path {path} does not exist; {SOURCE_HINT}")
    if path.is_dir():
        members = _read_folder(path, False)
    else:
        try:
            members = _read_tar(path, False)
        except _Unreadable as exc:
            raise _corrupt(path, str(exc)) from None
    yield from sorted(members.items())


def verify_members(members: dict[str, bytes], fmt: str, where: Path) -> dict[str, str]:
    """Check every member with a known official md5; return the md5 of every member used."""
    names = [*TRAIN_MEMBERS[fmt], TEST_MEMBER[fmt]]
    if META_MEMBER[fmt] in members:
        names.append(META_MEMBER[fmt])
    md5s = {}
    for name in names:
        got = hashlib.md5(members[name]).hexdigest()
        expected = MEMBER_MD5.get(name)
        if expected is not None and got != expected:
            raise DataError(f"{name} in {where} has md5 {got}, expected {expected}: the archive is corrupt; "
                            f"delete it and download it again from {BINARY_URL}")
        md5s[name] = got
    return md5s


# ------------------------------------------------------------------------------------------ decoding
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
        raise DataError(f"{name} in {where} cannot be read ({one_line(exc)}); the archive is corrupt: delete it "
                        f"and download it again") from None
    if not isinstance(obj, dict):
        raise DataError(f"{name} in {where} is not a CIFAR-10 batch; {SOURCE_HINT}")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _decode_member(blob: bytes, fmt: str, name: str, where: Path) -> tuple[np.ndarray, np.ndarray]:
    """One batch file -> (x (n, 3, 32, 32) uint8, y (n,) uint8)."""
    if fmt == "binary":
        if len(blob) % RECORD_BYTES:
            raise DataError(f"{name} in {where} is {len(blob)} bytes, not a whole number of {RECORD_BYTES}-byte "
                            f"records; the archive is corrupt: delete it and download it again")
        records = np.frombuffer(blob, dtype=np.uint8).reshape(-1, RECORD_BYTES)
        y = records[:, 0].copy()
        x = records[:, 1:].reshape(-1, *IMAGE_SHAPE).copy()
    else:
        batch = _unpickle(blob, name, where)
        try:
            pixels = np.asarray(batch["data"])
            y = np.asarray(batch["labels"], dtype=np.int64)
        except (KeyError, TypeError, ValueError):
            raise DataError(f"{name} in {where} has no 'data'/'labels' entries; {SOURCE_HINT}") from None
        if pixels.dtype != np.uint8 or pixels.ndim != 2 or pixels.shape[1] != IMAGE_BYTES \
                or y.shape != (pixels.shape[0],):
            raise DataError(f"{name} in {where} holds data of shape {pixels.shape} {pixels.dtype} and "
                            f"{y.size} labels, expected (n, {IMAGE_BYTES}) uint8 and n labels; {SOURCE_HINT}")
        x = np.ascontiguousarray(pixels.reshape(-1, *IMAGE_SHAPE))
    if y.size and (y.min() < 0 or y.max() >= len(CLASSES)):
        raise DataError(f"{name} in {where} has labels outside 0..9; {SOURCE_HINT}")
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


def decode_source(source: Path, progress: bool = False) -> tuple[Dataset, str, dict[str, str]]:
    """Read, verify and decode an archive or folder -> (dataset, format, md5 of every member used)."""
    fmt, members = read_members(source, progress)
    md5s = verify_members(members, fmt, source)
    xs, ys = [], []
    for name in TRAIN_MEMBERS[fmt]:
        x, y = _decode_member(members.pop(name), fmt, name, source)
        xs.append(x)
        ys.append(y)
    x_test, y_test = _decode_member(members.pop(TEST_MEMBER[fmt]), fmt, TEST_MEMBER[fmt], source)
    x_train = np.concatenate(xs)
    del xs
    mean, std = channel_stats(x_train)
    dataset = Dataset(x_train=x_train, y_train=np.concatenate(ys), x_test=x_test, y_test=y_test,
                      classes=_decode_classes(members, fmt, source), channel_mean=mean, channel_std=std)
    return dataset, fmt, md5s
