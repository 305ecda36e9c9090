"""What every export shares: optional packages loaded on demand, the preprocessing a model expects,
and the metadata written beside its weights.

The export packages (onnx, onnxruntime, safetensors; torch for ``--format torch``) are optional:
``pip install -e ".[export]"``. They are imported only when an export or import needs them, and a
missing one is reported in one line that says what to install.

Preprocessing: a checkpoint records its ``--normalize`` (center, unit or standard). 'standard'
divides by the training set's per-channel mean and std, which the checkpoint does not hold; they are
read from the CIFAR-10 data (``--data``, ``$MINICNN_DATA`` or the cache: the full training set's
statistics, the ones training and ``minicnn eval`` use) and written into the exported file, so the
exported model carries everything it needs.
"""

from __future__ import annotations

import importlib
import json

import numpy as np

from minicnn.errors import MiniCNNError

#: How to install what an export needs, by import name.
INSTALL = {
    "onnx": 'pip install -e ".[export]" (or pip install onnx)',
    "onnxruntime": 'pip install -e ".[export]" (or pip install onnxruntime)',
    "safetensors": 'pip install -e ".[export]" (or pip install safetensors)',
    "torch": "pip install torch (or use --format safetensors, which needs only the safetensors package)",
}

#: Marks files written by minicnn's exports (the metadata key "format").
LAYOUT_FORMAT = "minicnn-export"
LAYOUT_VERSION = "1"

_FORMULAS = {
    "center": "x/255 - 0.5",
    "unit": "x/255",
    "standard": "(x/255 - mean[c]) / std[c]",
}


def require(module: str, purpose: str):
    """Import an optional package, or raise a one-line MiniCNNError saying how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MiniCNNError(f"{purpose} needs the {module} package, which is not installed; "
                           f"{INSTALL.get(module, f'pip install {module}')}") from None


def preprocessing(normalize: str, data_path=None) -> dict:
    """The input preprocessing of a model trained with ``--normalize normalize``:
    {'normalize', 'formula', 'mean', 'std'} with mean/std (3,) float64 lists in [0, 1] units for
    'standard' (read from the CIFAR-10 data, see the module docstring), None otherwise."""
    if normalize not in _FORMULAS:
        raise MiniCNNError(f"the checkpoint's normalisation {normalize!r} is unknown; "
                           f"expected one of {', '.join(_FORMULAS)}")
    mean = std = None
    if normalize == "standard":
        from minicnn.io.data import load_cifar10

        dataset = load_cifar10(data_path, train_limit=1, test_limit=1, download=False)
        mean, std = [float(v) for v in dataset.channel_mean], [float(v) for v in dataset.channel_std]
    return {"normalize": normalize, "formula": _FORMULAS[normalize], "mean": mean, "std": std}


def describe_input(prep: dict, uint8_input: bool) -> str:
    """One sentence on what the exported model takes as input."""
    images = "(N, 3, 32, 32) RGB CIFAR-10-sized images, NCHW"
    if uint8_input:
        return f"uint8 {images}, pixel values 0..255; the graph applies {prep['formula']} per channel itself"
    stats = ""
    if prep["mean"] is not None:
        stats = f" with mean={prep['mean']} std={prep['std']}"
    return f"float32 {images}, preprocessed as {prep['formula']} per channel{stats} (--normalize {prep['normalize']})"


def export_metadata(model, prep: dict, uint8_input: bool = False) -> dict[str, str]:
    """String key/value metadata written beside the weights (ONNX metadata_props, safetensors
    metadata, the torch file's 'metadata'): architecture, layer list and preprocessing. Nothing in it
    depends on file names or time, so the same model always gives the same bytes."""
    from minicnn.io.dataset import CLASSES

    meta = {
        "format": LAYOUT_FORMAT,
        "version": LAYOUT_VERSION,
        "arch": model.arch,
        "spec": model.spec,
        "layers": json.dumps(model.config()["layers"]),
        "normalize": prep["normalize"],
        "preprocessing": prep["formula"],
        "input": describe_input(prep, uint8_input),
        "classes": json.dumps(list(CLASSES)),
    }
    if prep["mean"] is not None:
        meta["channel_mean"] = json.dumps(prep["mean"])
        meta["channel_std"] = json.dumps(prep["std"])
    return meta


def effective(param: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """A parameter with its pruned entries exactly 0.0 (float32, C-contiguous)."""
    param = np.ascontiguousarray(param, dtype=np.float32)
    return param if mask is None else np.where(mask != 0, param, np.float32(0.0)).astype(np.float32)
