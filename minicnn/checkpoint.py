"""HDF5 checkpoints and atomic file writes.

Checkpoint layout (h5py):
    /params/<layer>/{weight,bias}        float32
    /masks/<layer>/{weight[,bias]}       uint8 0/1, only for pruned parameters
    /optimizer/velocity/<layer>/<param>  float32 momentum buffers (absent with momentum 0)
    attrs: format ("minicnn-checkpoint"), version, epoch, model (JSON: layer list), config (JSON:
           training settings), history (JSON: one dict per epoch), extra (JSON: final metrics, ...)
Every file is written to a temporary name in the same directory and renamed into place, so an
interrupted write never leaves a half-written file where a good one was.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from minicnn.errors import CheckpointError, MiniCNNError

FORMAT = "minicnn-checkpoint"
VERSION = 1


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


def save_checkpoint(path, model, optimizer=None, *, config: dict | None = None, epoch: int = 0,
                    history: list | None = None, extra: dict | None = None) -> Path:
    """Write ``model`` (params, masks), the optimizer's momentum buffers, config and history."""
    import h5py

    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = FORMAT
            f.attrs["version"] = VERSION
            f.attrs["epoch"] = int(epoch)
            f.attrs["model"] = json.dumps(model.config())
            f.attrs["config"] = json.dumps(config or {})
            f.attrs["history"] = json.dumps(history or [])
            f.attrs["extra"] = json.dumps(extra or {})
            for layer in model.layers:
                for name, arr in layer.params.items():
                    f.create_dataset(f"params/{layer.name}/{name}", data=arr)
                for name, mask in layer.masks.items():
                    f.create_dataset(f"masks/{layer.name}/{name}", data=mask.astype(np.uint8))
            if optimizer is not None:
                for key, v in optimizer.velocity.items():
                    f.create_dataset(f"optimizer/velocity/{key.replace('.', '/')}", data=v)
    return Path(path)


def load_checkpoint(path, backend: str = "fast"):
    """Read a checkpoint -> (model, info) with info = {'config', 'epoch', 'history', 'velocity'}."""
    import h5py

    from minicnn.model import model_from_config

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; pass the .h5 file written by `minicnn train`")
    try:
        f = h5py.File(path, "r")
    except OSError:
        raise CheckpointError(f"{path} is not an HDF5 file; pass a checkpoint written by `minicnn train`") from None
    with f:
        if f.attrs.get("format") != FORMAT:
            raise CheckpointError(f"{path} is not a minicnn checkpoint; pass a file written by `minicnn train`")
        try:
            model = model_from_config(json.loads(f.attrs["model"]), backend=backend)
            for layer in model.layers:
                for name in layer.params:
                    arr = f[f"params/{layer.name}/{name}"][()]
                    if arr.shape != layer.params[name].shape:
                        raise CheckpointError(f"{path}: {layer.name}.{name} has shape {arr.shape}, "
                                              f"expected {layer.params[name].shape}; the file is damaged")
                    layer.params[name] = np.ascontiguousarray(arr, dtype=np.float32)
                if f"masks/{layer.name}" in f:
                    for name, ds in f[f"masks/{layer.name}"].items():
                        layer.masks[name] = ds[()].astype(np.float32)
            velocity = {}
            if "optimizer/velocity" in f:
                for lname, grp in f["optimizer/velocity"].items():
                    for pname, ds in grp.items():
                        velocity[f"{lname}.{pname}"] = ds[()]
            info = {"config": json.loads(f.attrs["config"]), "epoch": int(f.attrs["epoch"]),
                    "history": json.loads(f.attrs["history"]), "velocity": velocity,
                    "extra": json.loads(f.attrs.get("extra", "{}"))}
        except (KeyError, ValueError) as exc:
            raise CheckpointError(f"{path} is an incomplete or damaged minicnn checkpoint ({exc}); "
                                  f"retrain or pass another file") from None
    return model, info


def load_model(path, backend: str = "fast"):
    """Alias of load_checkpoint: -> (model, info)."""
    return load_checkpoint(path, backend)


# ------------------------------------------------------------------------------------------ results
#: Columns of a results table, in order. One row per (schedule, method, scope, lr, amount, seed).
RESULT_COLUMNS = (
    "schedule", "method", "scope", "lr", "seed", "step", "amount", "remaining",
    "params_total", "params_nonzero", "params_effective", "remaining_effective",
    "flops_dense", "flops_effective", "training_flops_effective",
    "test_acc_before", "test_acc_after", "train_acc", "train_loss", "test_loss",
    "epochs", "seconds", "diverged",
)
_TEXT_COLUMNS = ("schedule", "method", "scope")


def save_results(rows: list[dict], csv_path, h5_path=None) -> None:
    """Write the rows as CSV (and as HDF5, one dataset per column), each file atomically."""
    import csv

    with atomic_path(csv_path) as tmp:
        with open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=RESULT_COLUMNS, extrasaction="ignore")
            writer.writeheader()
            for row in rows:
                writer.writerow({k: _csv_value(row.get(k)) for k in RESULT_COLUMNS})
    if h5_path is not None:
        import h5py

        with atomic_path(h5_path) as tmp:
            with h5py.File(tmp, "w") as f:
                f.attrs["format"] = "minicnn-results"
                f.attrs["version"] = VERSION
                for col in RESULT_COLUMNS:
                    values = [row.get(col) for row in rows]
                    if col in _TEXT_COLUMNS:
                        f.create_dataset(col, data=np.array([str(v) for v in values], dtype=h5py.string_dtype()))
                    else:
                        f.create_dataset(col, data=np.array([np.nan if v is None else v for v in values],
                                                            dtype=np.float64))


def _csv_value(v):
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, float):
        return f"{v:.6g}"
    return v


def load_results(path) -> list[dict]:
    """Rows of a results CSV (or of a directory holding results.csv), numbers parsed."""
    import csv

    path = Path(path)
    if path.is_dir():
        path = path / "results.csv"
    if not path.is_file():
        raise MiniCNNError(f"no results at {path}; pass the --out directory of `minicnn prune` or `minicnn sweep`")
    rows = []
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None or "amount" not in reader.fieldnames:
            raise MiniCNNError(f"{path} is not a minicnn results table (no 'amount' column)")
        for raw in reader:
            row = {}
            for k, v in raw.items():
                if k in _TEXT_COLUMNS or v is None:
                    row[k] = v
                elif k in ("step", "seed", "epochs", "params_total", "params_nonzero", "params_effective",
                           "flops_dense", "flops_effective", "training_flops_effective"):
                    row[k] = int(float(v))
                elif k == "diverged":
                    row[k] = v in ("1", "True", "true")
                else:
                    row[k] = float(v) if v != "" else float("nan")
            rows.append(row)
    return rows
