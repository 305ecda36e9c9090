"""HDF5 checkpoints and atomic file writes.

Checkpoint layout (h5py):
    /params/<layer>/{weight,bias}        float32
    /masks/<layer>/{weight[,bias]}       uint8 0/1, only for pruned parameters
    /optimizer/velocity/<layer>/<param>  float32 momentum buffers (absent with momentum 0)
    attrs: format ("minicnn-checkpoint"), version, epoch, model (JSON: layer list), config (JSON:
           training settings), history (JSON: one dict per epoch), extra (JSON: final metrics, ...)
The file is written atomically (minicnn.io.files.write_hdf5).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from minicnn.errors import CheckpointError
from minicnn.io.files import write_hdf5

FORMAT = "minicnn-checkpoint"
VERSION = 1


class UnknownVersion(CheckpointError):
    """A minicnn checkpoint of a format version this minicnn does not read."""


def save_checkpoint(path, model, optimizer=None, *, config: dict | None = None, epoch: int = 0,
                    history: list | None = None, extra: dict | None = None) -> Path:
    """Write ``model`` (params, masks), the optimizer's momentum buffers, config and history."""
    def fill(f):
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

    return write_hdf5(path, fill)


def load_checkpoint(path, backend: str = "fast"):
    """Read a checkpoint -> (model, info) with info = {'config', 'epoch', 'history', 'velocity'}."""
    import h5py

    from minicnn.nn.model import model_from_config

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
        version = f.attrs.get("version")
        if not isinstance(version, (int, np.integer)) or int(version) != VERSION:
            raise UnknownVersion(f"{path} is a minicnn checkpoint of format version {version}, and this minicnn "
                                 f"reads version {VERSION} only; use the minicnn that wrote it, or retrain")
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


def load_trained(path, backend: str = "fast", role: str = "checkpoint"):
    """``load_checkpoint`` for a command that needs a trained model (to evaluate, prune or compact it):
    CheckpointError when a weight is NaN or infinite, or the checkpoint records that its training
    diverged (a non-finite loss), since any accuracy, pruning or compaction of it would be meaningless.
    ``role`` names the file in the message ('baseline', ...)."""
    from minicnn.nn.train import weights_finite

    model, info = load_checkpoint(path, backend=backend)
    finite = weights_finite(model)
    recorded = [info["history"][-1] if info["history"] else {}, info["extra"].get("final", {}),
                info["extra"].get("row", {})]
    if not finite or any(isinstance(r, dict) and r.get("diverged") for r in recorded):
        what = "holds NaN or infinite weights" if not finite else "records a NaN or infinite loss"
        raise CheckpointError(f"{role} {path} {what} (its training diverged); retrain it with a smaller --lr "
                              f"or pass another file")
    return model, info


def read_extra(path) -> dict:
    """The ``extra`` dict of a checkpoint (final metrics, a step's result row, ...) without loading the
    model; {} when the file cannot be read."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return json.loads(f.attrs.get("extra", "{}"))
    except (OSError, ValueError):
        return {}
