"""Compaction: physically drop what structured pruning removed, so a smaller model runs faster.

A conv filter or hidden linear neuron is *removed* when its weight mask slice is all 0 and its bias
is masked: its output is then exactly 0 (after ReLU and pooling too). Compaction deletes those
units and, in the next conv or linear layer, the input channels / columns that read them (after a
flatten, channel c of a (C, H, W) map is the block of columns c*H*W .. (c+1)*H*W - 1). The compact
model computes exactly the same function.

A unit whose weights are all zero but whose bias is live is kept: it is a constant map, not zero.

``expand_into`` is the inverse: it writes a compact model's parameters back into the full-size model
it came from (removed entries stay 0), so checkpoints and masks keep the original shapes. Fine-tuning
a structured-pruned model therefore runs compact and is stored full-size.
"""

from __future__ import annotations

import copy

import numpy as np

from minicnn.nn.layers import Conv2d, Flatten, Linear
from minicnn.nn.model import Sequential


def removed_units(layer) -> np.ndarray:
    """Boolean (F,) of a conv/linear layer: units whose weights and bias are masked out."""
    w_mask = layer.masks.get("weight")
    b_mask = layer.masks.get("bias")
    n = layer.params["weight"].shape[0]
    if w_mask is None or b_mask is None:
        return np.zeros(n, dtype=bool)
    return ~w_mask.reshape(n, -1).any(axis=1) & (b_mask == 0)


def compact(model: Sequential) -> tuple[Sequential, list]:
    """-> (compact model, kept) where kept[i] is, for layer i, a pair (kept output units or None,
    kept input columns or None) of index arrays into the full layer's weight (None = all)."""
    from minicnn.nn.model import INPUT_SHAPE

    layers, kept = [], []
    live = None  # kept channels / features of the current activation (None = all of them)
    shape = INPUT_SHAPE  # the full model's activation shape before the current layer
    last = model.prunable_layers()[-1]  # the output layer: its rows are the classes, never dropped
    for layer in model.layers:
        new = copy.copy(layer)
        new.params, new.grads, new.masks, new._cache = dict(layer.params), {}, dict(layer.masks), None
        out_idx, in_idx = None, None
        if isinstance(layer, (Conv2d, Linear)):
            in_idx = live
            dead = removed_units(layer) if layer is not last else np.zeros(layer.params["weight"].shape[0], bool)
            out_idx = np.flatnonzero(~dead) if dead.any() else None
            for store in (new.params, new.masks):
                for name, arr in store.items():
                    if out_idx is not None:
                        arr = arr[out_idx]
                    if in_idx is not None and name == "weight":
                        arr = arr[:, in_idx]
                    store[name] = np.ascontiguousarray(arr)
            f_out, f_in = new.params["weight"].shape[:2]
            if isinstance(layer, Conv2d):
                new.out_channels, new.in_channels = f_out, f_in
            else:
                new.out_features, new.in_features = f_out, f_in
            live = out_idx
        elif isinstance(layer, Flatten) and live is not None:
            spatial = int(np.prod(shape[1:]))  # channel c -> columns c*H*W ... (c+1)*H*W - 1
            live = (live[:, None] * spatial + np.arange(spatial)[None, :]).reshape(-1)
        kept.append((out_idx, in_idx))
        layers.append(new)
        shape = layer.output_shape(shape)
    return Sequential(layers, model.spec, model.arch, model.backend), kept


def expand_into(full: Sequential, small: Sequential, kept: list) -> None:
    """Write the compact model's parameters back into ``full`` (in place) at their original places."""
    for big, little, (out_idx, in_idx) in zip(full.layers, small.layers, kept):
        for name, arr in little.params.items():
            target = big.params[name]
            rows = slice(None) if out_idx is None else out_idx
            if name == "weight" and in_idx is not None:
                target[np.ix_(np.arange(target.shape[0])[rows], in_idx)] = arr
            else:
                target[rows] = arr


def compact_summary(full: Sequential, small: Sequential) -> str:
    """'conv1 8->3 filters, fc1 2048->768 inputs' style description."""
    parts = []
    for big, little in zip(full.layers, small.layers):
        if big.params and big.params["weight"].shape != little.params["weight"].shape:
            parts.append(f"{big.name} {tuple(big.params['weight'].shape)}->{tuple(little.params['weight'].shape)}")
    return ", ".join(parts) if parts else "nothing to remove"
