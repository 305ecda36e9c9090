"""A model in torch.nn.utils.prune's layout, written with torch.save or safetensors, and read back.

Export (full size, masks kept, so training can continue elsewhere with the masks holding): per layer
with parameters, named as in minicnn (``conv1``, ``fc1``, ...: the names of an ``nn.Sequential`` built
from an OrderedDict of the layer list),

    <layer>.weight                          a parameter nothing of which is pruned, and likewise bias
    <layer>.weight_orig, <layer>.weight_mask  a pruned parameter: the values (pruned entries 0.0) and
                                            its 0/1 mask, float32, as prune.custom_from_mask leaves them
    <layer>.bias_orig, <layer>.bias_mask    the bias of structured-pruned filters (minicnn masks it)

plus string metadata (minicnn.io.export.export_metadata): the spec string, the layer list as JSON and
the preprocessing. ``--format safetensors`` stores them in the file's metadata (numpy + safetensors
only); ``--format torch`` saves ``{'state_dict': ..., 'metadata': ...}`` with torch.save (loadable
with torch.load(weights_only=True)).

Import accepts such a file, a plain state_dict (``<layer>.weight``/``.bias``), or the pruning layout
written by PyTorch itself (then ``weight_orig`` may hold the pruned values: the weight is
``weight_orig * weight_mask``, pruned entries exactly 0.0). Layers are named as minicnn names them or
by their index in an ``nn.Sequential`` of the same layer list (``0.weight``, ``4.bias`` for the paper's
model). Every key and shape is checked against the architecture first: the first mismatch, missing key
or unknown layer is refused in one line.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from minicnn.errors import CheckpointError
from minicnn.io.export import effective, export_metadata, require
from minicnn.io.files import atomic_path


def pruning_state_dict(model) -> dict[str, np.ndarray]:
    """{key: float32 array} of ``model`` in torch.nn.utils.prune's layout (see the module docstring)."""
    state = {}
    for layer in model.param_layers():
        for name, param in layer.params.items():
            mask = layer.masks.get(name)
            if mask is None:
                state[f"{layer.name}.{name}"] = effective(param, None)
            else:
                state[f"{layer.name}.{name}_orig"] = effective(param, mask)
                state[f"{layer.name}.{name}_mask"] = np.ascontiguousarray(mask != 0, dtype=np.float32)
    return state


def save_state_dict(model, out, fmt: str, prep: dict) -> Path:
    """Write ``model`` in the pruning layout as ``fmt`` 'torch' or 'safetensors', atomically."""
    state, meta = pruning_state_dict(model), export_metadata(model, prep)
    if fmt == "safetensors":
        require("safetensors", "--format safetensors")
        from safetensors.numpy import save

        blob = _metadata_in_order(save(state, metadata=meta))
    elif fmt == "torch":
        torch = require("torch", "--format torch")
        buffer = io.BytesIO()  # a buffer, not the path: torch.save would name the archive after the file
        torch.save({"state_dict": {k: torch.from_numpy(v) for k, v in state.items()}, "metadata": meta}, buffer)
        blob = buffer.getvalue()
    else:
        raise ValueError(f"unknown state_dict format {fmt!r}")
    with atomic_path(out) as tmp:
        Path(tmp).write_bytes(blob)
    return Path(out)


def _metadata_in_order(blob: bytes) -> bytes:
    """The safetensors library writes the metadata entries in a random order (a Rust HashMap), so the
    same model would not give the same bytes twice: rewrite the header with them sorted. The header
    keeps its length (the same entries, reordered) and the tensor data is untouched."""
    size = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8:8 + size])
    ordered = {"__metadata__": dict(sorted(header.pop("__metadata__", {}).items())), **header}
    text = json.dumps(ordered, separators=(",", ":"), ensure_ascii=False).encode()
    if len(text) > size:  # another JSON escaping than the library's: keep its header as it is
        return blob
    return blob[:8] + text + b" " * (size - len(text)) + blob[8 + size:]


def _looks_like_safetensors(path: Path) -> bool:
    """A safetensors file starts with its header's length (8 bytes) and the header's '{'."""
    with open(path, "rb") as f:
        return f.read(9)[8:] == b"{"


def read_state_dict(path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """(state, metadata) of a .safetensors file or a torch.save file (a state_dict, or a dict holding
    one under 'state_dict' with optional 'metadata'). Arrays come back as NumPy arrays."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist; pass a .pt/.pth or .safetensors file")
    if path.suffix == ".safetensors" or _looks_like_safetensors(path):
        require("safetensors", "importing a .safetensors file")
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="numpy") as f:
                return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"{path} is not a readable safetensors file ({' '.join(str(exc).split())})") from None
    torch = require("torch", "importing a PyTorch file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a file that is not its own
        raise CheckpointError(f"{path} is not a PyTorch file torch.load can read with weights_only=True "
                              f"({' '.join(str(exc).split())[:120]}); pass a state_dict saved with torch.save "
                              f"or a .safetensors file") from None
    meta = {}
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        meta = {str(k): str(v) for k, v in (obj.get("metadata") or {}).items()}
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} does not hold a state_dict (a dict of tensor names to tensors); "
                              f"save model.state_dict() with torch.save")
    return {str(k): v.detach().cpu().numpy() for k, v in obj.items()}, meta


def _layer_lookup(model) -> dict[str, object]:
    """Key prefix -> layer: the minicnn name and the index in an nn.Sequential of the same layers."""
    lookup = {}
    for i, layer in enumerate(model.layers):
        if layer.params:
            lookup[layer.name] = layer
            lookup[str(i)] = layer
    return lookup


def _group_keys(state: dict, model, where: str) -> dict[str, tuple[str, dict[str, np.ndarray]]]:
    """{layer name: (the prefix the file uses for it, {field: array})} with fields such as 'weight',
    'weight_orig', 'weight_mask'; refuses keys that name no layer or no parameter of it, and a layer
    named twice."""
    lookup, groups = _layer_lookup(model), {}
    names = ", ".join(f"{layer.name} (or {i})" for i, layer in enumerate(model.layers) if layer.params)
    for key, arr in state.items():
        prefix, _, field = key.rpartition(".")
        layer = lookup.get(prefix)
        if layer is None:
            raise CheckpointError(f"{where}: key {key!r} names no layer of {model.spec!r}; its layers with "
                                  f"parameters are {names}")
        if field.removesuffix("_orig").removesuffix("_mask") not in layer.params:
            raise CheckpointError(f"{where}: key {key!r} is not a parameter of {layer.name} "
                                  f"(expected {', '.join(layer.params)}, or *_orig with *_mask)")
        used, fields = groups.setdefault(layer.name, (prefix, {}))
        if used != prefix:
            raise CheckpointError(f"{where}: layer {layer.name} is named both {used!r} and {prefix!r}; "
                                  f"use one naming")
        fields[field] = arr
    return groups


def _param_and_mask(fields: dict, name: str, key: str, where: str) -> tuple[np.ndarray, np.ndarray | None]:
    """One parameter (and its mask) from a layer's fields: plain ``name``, or ``name_orig`` with
    ``name_mask``. ``key`` is the parameter's key in the file, for messages."""
    plain, orig, mask = fields.get(name), fields.get(f"{name}_orig"), fields.get(f"{name}_mask")
    if plain is not None and (orig is not None or mask is not None):
        raise CheckpointError(f"{where}: {key} is there both plain and in the pruning layout (_orig/_mask); "
                              f"keep one")
    if plain is not None:
        return plain, None
    if orig is None:
        raise CheckpointError(f"{where}: missing key {key!r} (or {key}_orig with {key}_mask)")
    if mask is None:
        raise CheckpointError(f"{where}: missing key {key + '_mask'!r} beside {key + '_orig'!r}")
    if mask.shape != orig.shape:
        raise CheckpointError(f"{where}: {key}_mask has shape {tuple(mask.shape)} but {key}_orig has "
                              f"{tuple(orig.shape)}")
    if not np.isin(mask, (0, 1)).all():
        raise CheckpointError(f"{where}: {key}_mask holds values other than 0 and 1")
    return orig, mask


def load_state_dict_into(model, state: dict, where: str) -> None:
    """Set ``model``'s parameters and masks from a plain or pruning-layout state_dict (NumPy arrays),
    after checking every key and shape: a CheckpointError names the first problem."""
    groups = _group_keys(state, model, where)
    loaded = []
    for layer in model.param_layers():
        prefix, fields = groups.get(layer.name, (layer.name, {}))
        for name, current in layer.params.items():
            key = f"{prefix}.{name}"
            value, mask = _param_and_mask(fields, name, key, where)
            named = key if prefix == layer.name else f"{key} ({layer.name}.{name})"
            if tuple(value.shape) != current.shape:
                raise CheckpointError(f"{where}: {named} has shape {tuple(value.shape)}, but {model.spec!r} "
                                      f"needs {current.shape}; pass the --arch the model was built with")
            if not np.issubdtype(value.dtype, np.floating):
                raise CheckpointError(f"{where}: {named} is {value.dtype}, not a floating-point tensor")
            mask = None if mask is None else np.ascontiguousarray(mask != 0, dtype=np.float32)
            loaded.append((layer, name, effective(value, mask), mask))
    for layer, name, value, mask in loaded:  # nothing changes unless everything fits
        layer.params[name] = value
        if mask is not None:
            layer.masks[name] = mask


def import_state_dict(path, arch: str | None, out, normalize: str | None = None) -> tuple:
    """Read ``path`` (see read_state_dict), build ``arch`` (default: the architecture in the file's
    metadata), load the weights and masks, and save a minicnn checkpoint at ``out``. The checkpoint's
    normalisation is ``normalize``, else the file's, else 'center'. Returns (model, config)."""
    from minicnn.errors import MiniCNNError
    from minicnn.io.checkpoint import save_checkpoint
    from minicnn.nn.model import build_model

    state, meta = read_state_dict(path)
    if arch is None:
        arch = meta.get("arch") if meta.get("arch") not in (None, "custom") else meta.get("spec")
        if arch is None:
            raise MiniCNNError(f"{path} does not say its architecture; pass --arch (a preset or a spec string "
                               f"such as 'conv8,relu,pool2,flatten,linear10')")
    model = build_model(arch, np.random.default_rng(0), backend="ref")
    load_state_dict_into(model, state, str(path))
    config = {"arch": arch, "normalize": normalize or meta.get("normalize") or "center",
              "imported_from": Path(path).name}
    save_checkpoint(out, model, config=config)
    return model, config
