"""Atomic file writes: every file minicnn writes goes to a temporary name in the same folder and is
renamed into place, so an interrupted write never leaves a half-written file where a good one was.

The temporary file of ``DIR/NAME`` is ``DIR/.NAME.PID.XXXXXXXX.tmp`` (PID: the writing process). A
process killed while writing (SIGKILL, power loss) leaves it behind; the next write of the same
``DIR/NAME`` removes such files whose process is gone (and ``.NAME.XXXXXXXX.tmp`` files, the name
earlier versions used), and nothing else.

A full disk, a quota or a file size limit (``ulimit -f``) met while writing ends in one MiniCNNError
naming the file; the temporary file is removed and the file it would have replaced is untouched.
HDF5 files are built in memory and written in one go (``write_hdf5``), so that such an error meets a
plain write rather than the HDF5 library half-way through its file.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import io
import os
import re
import tempfile
from pathlib import Path

from minicnn.errors import MiniCNNError

#: errno -> what to call it. h5py reports these inside its own OSError text ("errno = 28, ...").
_NO_ROOM = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file too large (the file size limit, as set by `ulimit -f`, was reached)",
}
_NO_ROOM_TEXT = {
    errno.ENOSPC: ("no space left on device",),
    errno.EDQUOT: ("disk quota exceeded",),
    errno.EFBIG: ("file too large",),
}


def _no_room(exc: BaseException | None) -> str | None:
    """What ran out ('no space left on device', ...) when ``exc``, or an exception it was raised while
    handling, says a write found no room; else None. h5py raises OSError or, when it closes a file
    after a failed write, RuntimeError, with the errno only in its text."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, OSError) and exc.errno in _NO_ROOM:
            return _NO_ROOM[exc.errno]
        if isinstance(exc, (OSError, RuntimeError)):
            text = str(exc).lower()
            for number, phrases in _NO_ROOM_TEXT.items():
                if f"errno = {number}," in text or any(p in text for p in phrases):
                    return _NO_ROOM[number]
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return None


def _temp_prefix(path: Path) -> str:
    return f".{path.name}.{os.getpid()}."


def _stale_temp_files(path: Path) -> list[Path]:
    """Temporary files of ``path`` (atomic_path's names) left by processes that no longer run."""
    own = re.compile(rf"\.{re.escape(path.name)}\.(?:(\d+)\.)?[a-z0-9_]{{8}}\.tmp")
    stale = []
    try:
        names = os.listdir(path.parent)
    except OSError:
        return []
    for name in names:
        match = own.fullmatch(name)
        if match is None:
            continue
        pid = int(match.group(1)) if match.group(1) else None
        if pid is not None and _running(pid):
            continue
        stale.append(path.parent / name)
    return stale


def _running(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # someone else's process: leave its file alone
    return not _exited(pid)


def _exited(pid: int) -> bool:
    """Linux: whether ``pid`` is a zombie, a process that has ended but is not yet reaped by its parent
    (a sweep worker killed with its sweep waits for init): os.kill still finds it, but it writes no more."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return False
    return stat[stat.rindex(b")") + 2:][:1] in (b"Z", b"X")  # the state follows the command name's ')'


def _cannot_write(path: Path, exc: OSError) -> MiniCNNError:
    """The one-line error for a path whose folder cannot be created or written."""
    for parent in path.parents:
        if parent.exists() or parent.is_symlink():
            if not parent.is_dir():
                return MiniCNNError(f"cannot write {path}: {parent} is a file, not a folder; choose another location")
            break
    room = _no_room(exc)
    if room is not None:
        return MiniCNNError(f"{room} while writing {path}; nothing written was lost")
    return MiniCNNError(f"cannot write {path}: {exc.strerror or exc}; choose a writable location")


def _new_temp(path: Path) -> Path:
    """Create ``path``'s folder and an empty temporary file of ``path`` in it, after removing the stale
    ones; MiniCNNError naming ``path`` when that is not possible."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        for stale in _stale_temp_files(path):
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()
        fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise _cannot_write(path, exc) from None
    os.close(fd)
    return Path(tmp)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside ``path``; on success rename it over ``path``, else delete it.

    Removes the stale temporary files of ``path`` first (see the module docstring). A write that finds
    no room (disk full, quota, file size limit) raises MiniCNNError naming ``path``."""
    path = Path(path)
    try:
        tmp = _new_temp(path)
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; results should read like any other file
        os.replace(tmp, path)
    except BaseException as exc:
        # every temporary file of ``path`` this process made: also one whose creation a Ctrl-C interrupted
        # before its name was known here
        for own in path.parent.glob(f"{glob.escape(_temp_prefix(path))}*.tmp"):
            with contextlib.suppress(OSError):
                own.unlink()
        room = _no_room(exc)
        if room is not None:
            raise MiniCNNError(f"{room} while writing {path}; nothing written was lost") from None
        raise


def check_writable(path: str | os.PathLike) -> None:
    """Fail early, before hours of work, if ``path`` cannot be created or replaced (its folder cannot be
    made or written). Also removes ``path``'s stale temporary files."""
    os.unlink(_new_temp(Path(path)))


def write_hdf5(path: str | os.PathLike, fill) -> Path:
    """Write an HDF5 file atomically: ``fill(f)`` writes into an h5py.File held in memory, whose bytes then
    go to the temporary file in one plain write. A full disk or a file size limit thus fails a plain
    write (one clean error), never the HDF5 library half-way through its own file."""
    import h5py

    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        fill(f)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(buffer.getbuffer())
    return Path(path)


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
