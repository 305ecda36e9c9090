"""The HDF5 cache of CIFAR-10: where it lives, building it once from a source, checking, loading and
describing it.

Where the data comes from:

1. a source the user names (``--data PATH``, ``--source``, else ``$MINICNN_DATA``) is the one used or
   refused: a .h5 cache is checked and used as it is; an archive, folder or URL is used through the
   cache only when the cache was built from exactly that file (its path, size and modification time,
   see ``archive.source_stamp``), else it is read, verified and converted again, replacing the cache;
2. with no source named: the cache file ``cache_path()`` if it exists and was built from the official
   files, else an official archive or unpacked folder lying next to it, else a download of the
   official binary archive into the cache folder.

Layout: datasets ``x_train`` (N, 3, 32, 32) uint8, ``y_train`` (N,) uint8, ``x_test``, ``y_test``
(uncompressed, contiguous); attributes ``format_version``, ``classes`` (JSON list), ``channel_mean`` and
``channel_std`` ((3,) float64, [0, 1] units, full training set), ``member_md5`` (JSON object: member
file -> md5 it was built from), ``source``, ``source_format`` ('binary', 'python' or free text such as
'synthetic'), ``source_stamp`` (JSON, the source file as it was read). Written atomically.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import h5py
import numpy as np

from minicnn.errors import DataError, one_line
from minicnn.io import archive
from minicnn.io.archive import SOURCE_HINT, say
from minicnn.io.dataset import CLASSES, IMAGE_SHAPE, Dataset
from minicnn.io.files import write_hdf5

ENV_DATA = "MINICNN_DATA"
ENV_CACHE = "MINICNN_CACHE"
CACHE_NAME = "cifar10.h5"
FORMAT_VERSION = 1


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


def write_cache(dataset: Dataset, path: str | os.PathLike, *, source: str = "", source_format: str = "",
                member_md5: dict[str, str] | None = None, source_stamp: str = "") -> Path:
    """Write ``dataset`` as a minicnn HDF5 cache (layout in the module docstring), atomically.
    Also useful to save a synthetic stand-in (``minicnn.io.dataset.make_synthetic``) for quick runs."""
    def fill(f):
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
        f.attrs["source_stamp"] = source_stamp

    return write_hdf5(path, fill)


def cache_problem(path: Path, *, official: bool) -> str | None:
    """Why ``path`` is not a usable cache (None when it is). ``official`` also requires that it was
    built from members whose md5s equal the official ones (``archive.MEMBER_MD5``)."""
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
        return one_line(exc)
    if official:
        for fmt in ("binary", "python"):
            names = [*archive.TRAIN_MEMBERS[fmt], archive.TEST_MEMBER[fmt]]
            if all(md5s.get(n) is not None and md5s.get(n) == archive.MEMBER_MD5.get(n) for n in names):
                return None
        return "not built from the official CIFAR-10 files"
    return None


def _built_from(cache: Path, source: Path) -> bool:
    """Whether ``cache`` is a valid official cache built from exactly the file or folder ``source``."""
    if cache_problem(cache, official=True) is not None:
        return False
    with h5py.File(cache, "r") as f:
        stamp = str(f.attrs.get("source_stamp", ""))
    return stamp != "" and stamp == archive.source_stamp(source)


def load_cache(path: str | os.PathLike, *, train_limit: int | None = None,
               test_limit: int | None = None) -> Dataset:
    """Load a minicnn HDF5 cache: the first ``train_limit`` / ``test_limit`` images of each split
    (all when None or larger than the split). Labels come back as int64."""
    path = Path(path)
    problem = cache_problem(path, official=False)
    if problem is not None:
        raise DataError(f"{path} is not a CIFAR-10 archive or minicnn cache ({problem}); {SOURCE_HINT}")
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


def _convert(source: Path, target: Path, progress: bool) -> Path:
    """Read, verify and decode an archive or folder, and write the cache ``target``."""
    start = time.perf_counter()
    archive.check_source(source)
    say(progress, f"converting {source} -> {target}")
    stamp = archive.source_stamp(source)
    dataset, fmt, md5s = archive.decode_source(source, progress)
    write_cache(dataset, target, source=str(source), source_format=fmt, member_md5=md5s, source_stamp=stamp)
    say(progress, f"wrote {target} in {time.perf_counter() - start:.1f} s")
    return target


def _named_source(source: str, target: Path, progress: bool) -> Path:
    """The cache for a source the user named: the .h5 itself, or ``target`` built from that source."""
    if archive.is_url(source):
        download = archive.url_file(source, target.parent)
        if download.is_file() and _built_from(target, download):
            return target
        return _convert(archive.download_into(source, target.parent, progress), target, progress)
    path = Path(source).expanduser()
    if not path.exists():
        raise DataError(f"the data path {path} does not exist; {SOURCE_HINT}")
    if path.is_file() and h5py.is_hdf5(path):
        problem = cache_problem(path, official=False)
        if problem is not None:
            raise DataError(f"{path} is not a CIFAR-10 archive or minicnn cache ({problem}); rebuild it with "
                            f"`minicnn data prepare`, or {SOURCE_HINT}")
        return path
    if _built_from(target, path):
        return target
    return _convert(path, target, progress)


def prepare(source: str | os.PathLike | None = None, *, download: bool = True, progress: bool = False,
            cache: str | os.PathLike | None = None) -> Path:
    """Make sure an HDF5 cache of CIFAR-10 exists and return its path.

    source: archive, unpacked folder, http(s) URL or .h5 cache; None means ``$MINICNN_DATA``, else
        the existing cache, else an archive in the cache folder, else a download (module docstring).
    download: allow downloading the official binary archive when no source is named and nothing
        local is found.
    progress: print what happens to stderr.
    cache: the cache file to build (default ``cache_path()``).
    """
    target = Path(cache).expanduser() if cache is not None else cache_path()
    source = resolve_source(source)
    if source is not None:
        return _named_source(source, target, progress)
    if cache_problem(target, official=True) is None:
        return target
    for name in archive.LOCAL_NAMES:
        if (target.parent / name).exists():
            return _convert(target.parent / name, target, progress)
    archive_hint = (
        f"put cifar-10-binary.tar.gz (or cifar-10-python.tar.gz) from {archive.BINARY_URL.rsplit('/', 1)[0]}/ "
        f"in {target.parent}, or point --data PATH or MINICNN_DATA at it"
    )
    if not download:
        raise DataError(f"CIFAR-10 not found (no cache at {target}); run `minicnn data prepare` to "
                        f"download it, or {archive_hint}")
    dest = target.parent / Path(archive.BINARY_URL).name
    say(progress, f"downloading {archive.BINARY_URL} to {dest}")
    try:
        downloaded = archive.download_file(archive.BINARY_URL, dest, md5=archive.BINARY_ARCHIVE_MD5,
                                           progress=progress)
    except OSError as exc:
        raise DataError(f"CIFAR-10 not found and the download failed ({one_line(exc)}); {archive_hint}") from None
    return _convert(downloaded, target, progress)


def info(path: str | os.PathLike) -> dict:
    """Facts about a cache file: sizes, per-split and per-class counts, statistics, md5s."""
    path = Path(path)
    problem = cache_problem(path, official=False)
    if problem is not None:
        raise DataError(f"{path} is not a CIFAR-10 archive or minicnn cache ({problem}); {SOURCE_HINT}")
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
    result["official"] = cache_problem(path, official=True) is None
    return result
