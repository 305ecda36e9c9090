"""Pruning: masks beside the weights, unstructured or structured, layerwise or global, from a criterion's
scores (:mod:`minicnn.pruning.criteria`; the default, magnitude, is L1 unstructured and L2 structured).
The semantics below hold for every criterion, with "smallest |w|" / "L2 norm" read as "lowest score".

Semantics
---------
- Prunable: the weights of every conv and linear layer. Biases are not pruned by unstructured pruning.
- Amounts are **cumulative targets**: the fraction of each prunable tensor that is pruned after the
  step (the paper's Table 1). The number pruned is ``round(amount * n)`` with Python's round (half to
  even), as ``torch.nn.utils.prune``; n counts entries (unstructured) or dim-0 slices (structured).
- Iterative: step k raises each tensor from its previous count to the new count by pruning the
  smallest among the still-unpruned; masks only ever shrink. That is exactly torch's repeated-pruning
  container with integer amounts (new - previous): tests prove mask equality.
- One-shot: from the trained baseline straight to each amount.
- L1 unstructured: smallest |w| per tensor (layerwise, as the paper); ``--scope global``
  (``scope="global"``) ranks all prunable weights together.
- L2 structured: whole dim-0 slices (conv filters, hidden neurons) by L2 norm, as
  ``ln_structured(n=2, dim=0)``. The output layer's rows are the classes and are not structurally
  pruned. A removed filter's bias is masked too (torch leaves it, keeping a constant ReLU(b) map
  alive), and the next layer's weights that read only dead inputs count as removed in the effective
  counts.
- Masks hold through fine-tuning: forward uses w*mask, the gradient, momentum and weight decay are
  masked; a pruned weight is exactly 0.0 after any number of steps.

Details
-------
A mask is a float32 array of 0 (pruned) and 1 (kept) with the shape of its parameter, stored in
``layer.masks[name]``; no entry means nothing of that parameter is pruned. Pruned entries are set to
exactly 0.0 in ``layer.params``, so the forward pass needs no multiplication by the mask.

With a previous mask, a target below the current pruned count prunes nothing more (masks never grow
back). A structured slice counts as already pruned when its mask is all zero, as in torch's container.

Ties (equal |w| or equal norms) are broken by position: the entry or slice with the lower flat index is
pruned first. torch leaves the order of ties to ``torch.topk``, which does not promise one, so the
equality with torch holds for tie-free weights (any trained or randomly initialised float weights).

One call of :func:`prune_model` is both a one-shot prune (on a model without masks) and one step of an
iterative schedule (on a model that already carries the previous step's masks).
"""

from __future__ import annotations

import math

import numpy as np

from minicnn.errors import CheckpointError, MiniCNNError
from minicnn.paper import METHODS, SCOPES
from minicnn.pruning.criteria import Context, get_criterion, magnitude


# ------------------------------------------------------------------------------------------ amounts
_AMOUNTS_HINT = "give comma-separated fractions in [0, 1] in increasing order, e.g. 0.1,0.5,0.9"


def parse_amounts(text: str) -> list[float]:
    """'0.1,0.5,0.9' -> [0.1, 0.5, 0.9]: fractions in [0, 1], strictly increasing (see check_amounts).

    Raises MiniCNNError (one line: the problem and the fix) for an empty list, an empty item, a
    non-number, or what check_amounts refuses.
    """
    if text is None or not str(text).strip():
        raise MiniCNNError(f"no pruning amounts given; {_AMOUNTS_HINT}")
    values = []
    for raw in str(text).split(","):
        item = raw.strip()
        if not item:
            raise MiniCNNError(f"empty item in pruning amounts {text!r}; {_AMOUNTS_HINT}")
        try:
            values.append(float(item))
        except ValueError:
            raise MiniCNNError(f"pruning amount {item!r} is not a number; {_AMOUNTS_HINT}") from None
    return check_amounts(values)


def check_amounts(values) -> list[float]:
    """A sequence of amounts as floats, each finite, in [0, 1], given once and in increasing order;
    MiniCNNError (one line) for the first that is not, or for an empty sequence."""
    amounts: list[float] = []
    for value in values:
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise MiniCNNError(f"pruning amount {value!r} is not a number; {_AMOUNTS_HINT}") from None
        if not math.isfinite(value):
            raise MiniCNNError(f"pruning amount {value} is not a finite number; {_AMOUNTS_HINT}")
        if value < 0.0 or value > 1.0:
            raise MiniCNNError(f"pruning amount {value:g} is outside [0, 1]; {_AMOUNTS_HINT}")
        if value in amounts:
            raise MiniCNNError(f"pruning amount {value:g} is repeated; give each amount once ({_AMOUNTS_HINT})")
        if amounts and value < amounts[-1]:
            raise MiniCNNError(f"pruning amounts are not increasing ({amounts[-1]:g} then {value:g}); "
                               f"sort them, e.g. {','.join(f'{a:g}' for a in sorted(amounts + [value]))}")
        amounts.append(value)
    if not amounts:
        raise MiniCNNError(f"no pruning amounts given; {_AMOUNTS_HINT}")
    return amounts


def _check_amount(amount) -> float:
    try:
        value = float(amount)
    except (TypeError, ValueError):
        raise MiniCNNError(f"pruning amount {amount!r} is not a number; give a fraction in [0, 1]") from None
    if not (0.0 <= value <= 1.0):
        raise MiniCNNError(f"pruning amount {amount!r} is outside [0, 1]; give a fraction in [0, 1]")
    return value


def num_to_prune(amount: float, n: int) -> int:
    """How many of n entries (or slices) a cumulative ``amount`` prunes: Python's round(amount * n),
    half to even, exactly as torch.nn.utils.prune converts a float amount."""
    return int(round(_check_amount(amount) * n))


# ---------------------------------------------------------------------------------- pure mask maths
def _start_mask(weight: np.ndarray, mask) -> np.ndarray:
    if mask is None:
        return np.ones(weight.shape, dtype=np.float32)
    mask = np.asarray(mask)
    if mask.shape != weight.shape:
        raise MiniCNNError(f"mask shape {mask.shape} does not match weight shape {weight.shape}")
    out = (mask != 0).astype(np.float32)
    return out


def unstructured_mask(scores: np.ndarray, amount: float, mask: np.ndarray | None = None) -> np.ndarray:
    """Mask that prunes the round(amount * scores.size) entries of lowest score in total: the one
    construction every criterion's unstructured masks share (:mod:`minicnn.pruning.criteria`).

    scores: the weight's shape, one score per entry; mask: None (nothing pruned yet) or the current 0/1
    mask of that shape. With a mask, only still-unpruned entries are candidates and the pruned count is
    raised from the current one to the target (nothing more if the target is not above it); ties go to
    the lower flat index. Returns a new float32 0/1 array; the inputs are not modified.
    """
    scores = np.asarray(scores)
    new = _start_mask(scores, mask)
    flat = new.reshape(-1)
    target = num_to_prune(amount, scores.size)
    extra = target - (flat.size - int(np.count_nonzero(flat)))
    if extra <= 0:
        return new
    alive = np.flatnonzero(flat)
    order = np.argsort(scores.reshape(-1)[alive], kind="stable")
    flat[alive[order[:extra]]] = 0.0
    return new


def _structured_weight(weight) -> np.ndarray:
    weight = np.asarray(weight)
    if weight.ndim < 2:
        raise MiniCNNError(f"structured pruning needs a weight with at least 2 dimensions, got shape "
                           f"{weight.shape}")
    return weight


def structured_mask(weight: np.ndarray, scores: np.ndarray, amount: float,
                    mask: np.ndarray | None = None) -> np.ndarray:
    """Mask that prunes the round(amount * F) dim-0 slices (filters / neurons) of lowest score: the
    construction every criterion's structured masks share.

    weight: (F, ...) with at least 2 dimensions; scores: (F,), one per slice; mask: None or the current
    0/1 mask of the weight's shape. A slice whose mask is all zero counts as already pruned; the count is
    raised from there to the target among the other slices. Entries already masked inside a kept slice
    stay masked. Returns a new float32 0/1 array.
    """
    weight = _structured_weight(weight)
    new = _start_mask(weight, mask)
    rows = new.reshape(new.shape[0], -1)
    alive = np.flatnonzero(rows.any(axis=1))
    target = num_to_prune(amount, weight.shape[0])
    extra = target - (weight.shape[0] - alive.size)
    if extra <= 0:
        return new
    order = np.argsort(np.asarray(scores)[alive], kind="stable")
    rows[alive[order[:extra]]] = 0.0
    return new


def global_masks(scores: list, amount: float, masks: list | None = None) -> list[np.ndarray]:
    """Unstructured pruning of several tensors ranked together: round(amount * total entries) are pruned
    in all, those of lowest score across every tensor (among the still-unpruned ones).

    scores: one array per weight (its shape); masks: None or a list of the same length whose items are
    None or current masks. Returns one new float32 0/1 mask per weight.
    """
    scores = [np.asarray(s) for s in scores]
    if masks is None:
        masks = [None] * len(scores)
    if len(masks) != len(scores):
        raise MiniCNNError(f"{len(masks)} masks given for {len(scores)} weights")
    if not scores:
        return []
    flat_s = np.concatenate([s.reshape(-1) for s in scores])
    flat_m = np.concatenate([_start_mask(s, m).reshape(-1) for s, m in zip(scores, masks)])
    flat_new = unstructured_mask(flat_s, amount, flat_m)
    out, start = [], 0
    for s in scores:
        out.append(flat_new[start:start + s.size].reshape(s.shape).copy())
        start += s.size
    return out


def l1_unstructured_mask(weight: np.ndarray, amount: float, mask: np.ndarray | None = None) -> np.ndarray:
    """:func:`unstructured_mask` by |w|: the round(amount * weight.size) entries of smallest |w| go."""
    return unstructured_mask(np.abs(np.asarray(weight)), amount, mask)


def l2_structured_mask(weight: np.ndarray, amount: float, mask: np.ndarray | None = None) -> np.ndarray:
    """:func:`structured_mask` by L2 norm: the round(amount * F) slices of smallest ||weight[f]||_2 go."""
    weight = _structured_weight(weight)
    return structured_mask(weight, magnitude([weight], True, None)[0], amount, mask)


def global_l1_masks(weights: list, amount: float, masks: list | None = None) -> list[np.ndarray]:
    """:func:`global_masks` by |w| across every tensor."""
    return global_masks([np.abs(np.asarray(w)) for w in weights], amount, masks)


# ------------------------------------------------------------------------------------------- models
def _apply_mask(layer, name: str, mask: np.ndarray) -> None:
    """Store ``mask`` beside ``layer.params[name]`` and set the pruned entries to exactly 0.0."""
    mask = mask.astype(np.float32, copy=False)
    layer.masks[name] = mask
    layer.params[name][mask == 0] = 0.0


def _pruned_slices(mask: np.ndarray) -> np.ndarray:
    """Boolean (F,): slices of a (F, ...) mask that are entirely pruned."""
    return ~mask.reshape(mask.shape[0], -1).any(axis=1)


def check_method_scope(method: str, scope: str) -> None:
    """The one place that says which (method, scope) pairs exist; MiniCNNError for the others."""
    if method not in METHODS:
        raise MiniCNNError(f"unknown pruning method {method!r}; choose one of: {', '.join(METHODS)}")
    if scope not in SCOPES:
        raise MiniCNNError(f"unknown pruning scope {scope!r}; choose one of: {', '.join(SCOPES)}")
    if method == "structured" and scope == "global":
        raise MiniCNNError("structured pruning is layerwise only (filter norms of different layers are not "
                           "comparable): drop --scope global or prune --unstructured")


def _chosen(layers, names) -> list[bool]:
    """One flag per prunable layer: whether ``names`` (None: all of them) selects it. MiniCNNError for a
    name that is not a prunable layer."""
    if names is None:
        return [True] * len(layers)
    names = [names] if isinstance(names, str) else list(names)
    known = [layer.name for layer in layers]
    for name in names:
        if name not in known:
            raise MiniCNNError(f"no prunable layer named {name!r}; the prunable layers are {', '.join(known)}")
    return [layer.name in names for layer in layers]


def prune_model(model, amount: float, method: str = "unstructured", scope: str = "layer",
                criterion: str = "magnitude", context: Context | None = None, names=None) -> dict:
    """Prune ``model`` in place to the cumulative target ``amount``, on top of the masks it has.

    ``criterion`` (a name in ``minicnn.pruning.criteria.CRITERIA``) scores the weights, lowest pruned
    first; ``context`` is what it needs beyond them (the run's seed and step, the training data). With
    "magnitude" (the default, no context needed):
    method "unstructured": L1 on the weights of every conv and linear layer (biases untouched), per
    tensor (scope "layer") or ranked across all of them (scope "global").
    method "structured": L2 norm of dim-0 slices (conv filters, hidden linear neurons), per layer; the
    network's last prunable layer (its rows are the classes) is left alone. The bias of each removed
    slice is masked as well.

    Returns {layer_name: {"unit", "pruned", "total", "weights_pruned", "weights_total"}}: for
    unstructured pruning the unit is "weights"; for structured it is "filters" (conv) or "neurons"
    (linear), and "pruned"/"total" count slices.

    ``names`` (names of prunable layers; None: every one) prunes only those and leaves the others'
    weights and masks untouched. The criterion still scores every layer, so a named layer gets exactly
    the mask a call without ``names`` gives it. With scope "global" the named layers are ranked together;
    structured, the last layer stays unpruned even when named. The summary covers every prunable layer.
    """
    amount = _check_amount(amount)
    check_method_scope(method, scope)
    score = get_criterion(criterion)
    layers = model.prunable_layers()
    if not layers:
        raise MiniCNNError("the model has no conv or linear layer to prune")
    chosen = _chosen(layers, names)
    weights = [layer.params["weight"] for layer in layers]
    scores = score(weights, method == "structured", context if context is not None else Context())

    if method == "unstructured":
        picked = [i for i, yes in enumerate(chosen) if yes]
        current = [layers[i].masks.get("weight") for i in picked]
        if scope == "global":
            new_masks = global_masks([scores[i] for i in picked], amount, current)
        else:
            new_masks = [unstructured_mask(scores[i], amount, m) for i, m in zip(picked, current)]
        for i, old, new in zip(picked, current, new_masks):
            if old is None and new.all():
                continue  # nothing pruned: keep "no mask"
            _apply_mask(layers[i], "weight", new)
    else:
        for layer, slice_scores, yes in zip(layers[:-1], scores, chosen):
            if not yes:
                continue
            old = layer.masks.get("weight")
            new = structured_mask(layer.params["weight"], slice_scores, amount, old)
            if old is None and new.all():
                continue
            _apply_mask(layer, "weight", new)
            dead = _pruned_slices(new)
            if dead.any():
                bias_mask = layer.masks.get("bias")
                bias_mask = (np.ones(dead.shape, np.float32) if bias_mask is None
                             else bias_mask.astype(np.float32, copy=True))
                bias_mask[dead] = 0.0
                _apply_mask(layer, "bias", bias_mask)

    summary = {}
    for layer in layers:
        w = layer.params["weight"]
        mask = layer.masks.get("weight")
        weights_pruned = 0 if mask is None else int(mask.size - np.count_nonzero(mask))
        entry = {"unit": "weights", "pruned": weights_pruned, "total": int(w.size),
                 "weights_pruned": weights_pruned, "weights_total": int(w.size)}
        if method == "structured":
            slices = 0 if mask is None else int(_pruned_slices(mask).sum())
            entry.update(unit="filters" if layer.kind == "conv" else "neurons",
                         pruned=slices, total=int(w.shape[0]))
        summary[layer.name] = entry
    return summary


def masks_of(model) -> dict[str, dict[str, np.ndarray]]:
    """{layer_name: {param_name: mask copy}} for every layer that carries a mask (for checkpoints)."""
    return {layer.name: {k: m.copy() for k, m in layer.masks.items()}
            for layer in model.layers if layer.masks}


def set_masks(model, masks: dict) -> None:
    """Replace every mask of ``model`` with ``masks`` ({layer_name: {param_name: mask}}, as
    :func:`masks_of` returns): layers not named lose their masks; pruned entries are zeroed.
    Raises CheckpointError for an unknown layer or parameter, a wrong shape or values other than 0/1.
    """
    by_name = {layer.name: layer for layer in model.layers}
    checked = {}
    for layer_name, entries in (masks or {}).items():
        if layer_name not in by_name:
            raise CheckpointError(f"mask for unknown layer {layer_name!r}; the model has "
                                  f"{', '.join(by_name)}: use a checkpoint of the same architecture")
        layer = by_name[layer_name]
        for param_name, mask in entries.items():
            if param_name not in layer.params:
                raise CheckpointError(f"mask for unknown parameter {layer_name}.{param_name}; use a "
                                      f"checkpoint of the same architecture")
            mask = np.asarray(mask)
            shape = layer.params[param_name].shape
            if mask.shape != shape:
                raise CheckpointError(f"mask {layer_name}.{param_name} has shape {mask.shape}, the "
                                      f"parameter {shape}; use a checkpoint of the same architecture")
            if not np.isin(mask, (0, 1)).all():
                raise CheckpointError(f"mask {layer_name}.{param_name} holds values other than 0 and 1; "
                                      f"the file is damaged")
            checked[(layer_name, param_name)] = mask.astype(np.float32)
    for layer in model.layers:
        layer.masks = {}
    for (layer_name, param_name), mask in checked.items():
        _apply_mask(by_name[layer_name], param_name, mask)


def sparsity(model) -> float:
    """Fraction of all prunable weights (conv and linear weights, not biases) that are masked."""
    total = pruned = 0
    for layer in model.prunable_layers():
        total += layer.params["weight"].size
        mask = layer.masks.get("weight")
        if mask is not None:
            pruned += mask.size - int(np.count_nonzero(mask))
    return pruned / total if total else 0.0
