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
