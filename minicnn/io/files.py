"""Atomic file writes: every file minicnn writes goes to a temporary name in the same folder and is
renamed into place, so an interrupted write never leaves a half-written file where a good one was."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from minicnn.errors import MiniCNNError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside ``path``; on success rename it over ``path``, else delete it."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise MiniCNNError(f"cannot write {path}: {exc.strerror or exc}; choose a writable location") from None
    os.close(fd)
    try:
        yield Path(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; results should read like any other file
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def check_writable(path: str | os.PathLike) -> None:
    """Fail early, before hours of work, if ``path`` cannot be created or replaced."""
    with atomic_path(Path(path).with_name(Path(path).name + ".probe")) as tmp:
        tmp.write_bytes(b"")
    os.unlink(Path(path).with_name(Path(path).name + ".probe"))


def read_tree(folder: str | os.PathLike) -> dict[str, bytes]:
    """Every file under ``folder`` as {path relative to it, '/'-separated: bytes}; hidden files (the
    temporary names of unfinished atomic writes) are left out. An absent folder reads as empty."""
    folder = Path(folder)
    if not folder.is_dir():
        return {}
    return {path.relative_to(folder).as_posix(): path.read_bytes() for path in sorted(folder.rglob("*"))
            if path.is_file() and not any(part.startswith(".") for part in path.relative_to(folder).parts)}


def write_tree(folder: str | os.PathLike, files: dict[str, bytes]) -> None:
    """Write ``files`` ({relative path: bytes}, as ``read_tree`` returns) under ``folder``, each atomically,
    in the order given (a reader of the folder sees each file whole or not at all)."""
    folder = Path(folder)
    for name, blob in files.items():
        parts = Path(name).parts
        if Path(name).is_absolute() or not parts or ".." in parts:
            raise MiniCNNError(f"refusing to write {name!r} outside {folder}")
        with atomic_path(folder / name) as tmp:
            tmp.write_bytes(blob)
