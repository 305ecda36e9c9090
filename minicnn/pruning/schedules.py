"""The arithmetic of the schedules beyond the paper's: AGP's sparsity ramp and LTH's rewinding.

AGP (gradual magnitude pruning, Zhu & Gupta 2017). One ramp per target amount s_f, starting at the
previous target s_i (0 for the first) with t0 = 0 at the ramp's start; t counts training batches:

    s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (n * dt))**3,   t = t0 + i * dt,  i = 1 ... n

Mask update i happens before training batch i * dt of the target's budget (so the first one after dt
batches) and prunes, with the run's criterion among the still-unpruned weights, up to s_t: the count is
round(s_t * n_entries), rounded as every amount is (``minicnn.pruning.masks.num_to_prune``). Updates that
fall at or beyond the budget's last batch are applied at its end, so a target's row is always at s_f.

LTH (lottery tickets, Frankle & Carbin 2019; rewinding, Frankle et al. 2020). After a pruning step every
parameter goes back to its rewind value (initialisation, or the baseline at epoch k), the masks stay and
pruned entries are 0.
"""

from __future__ import annotations

import numpy as np

#: AGP's defaults: mask updates per target, and the interval between them as a fraction of an epoch.
AGP_STEPS = 10
AGP_INTERVAL_FRACTION = 0.1


def agp_sparsity(s_i: float, s_f: float, i: int, n: int) -> float:
    """s_t of the cubic ramp from ``s_i`` to ``s_f`` after update ``i`` of ``n`` (t - t0 = i * dt)."""
    return s_f + (s_i - s_f) * (1.0 - i / n) ** 3


def agp_interval(batches_per_epoch: int, interval: int | None = None) -> int:
    """dt in batches: ``interval`` if given, else a tenth of an epoch's batches (floor, at least 1)."""
    return interval if interval is not None else max(1, int(batches_per_epoch * AGP_INTERVAL_FRACTION))


def agp_updates(s_i: float, s_f: float, n: int, dt: int, total_batches: int) -> tuple[dict, list]:
    """The ramp as ({batch index t: sparsity} for the updates inside the budget, [sparsities applied at
    its end]), in order; every sparsity from :func:`agp_sparsity`."""
    inside, after = {}, []
    for i in range(1, n + 1):
        s = agp_sparsity(s_i, s_f, i, n)
        if i * dt < total_batches:
            inside[i * dt] = s
        else:
            after.append(s)
    return inside, after


def parameters_of(model) -> dict[str, dict[str, np.ndarray]]:
    """{layer: {param: copy}} of every parameter: what a rewind restores."""
    return {layer.name: {k: p.copy() for k, p in layer.params.items()} for layer in model.param_layers()}


def rewind(model, saved: dict[str, dict[str, np.ndarray]]) -> None:
    """Reset every parameter of ``model`` to ``saved`` ({layer: {param: array}}, same shapes), then zero
    the masked entries again: kept entries equal the saved values, pruned ones are exactly 0."""
    for layer in model.param_layers():
        for name, param in layer.params.items():
            value = saved[layer.name][name]
            if value.shape != param.shape:
                raise ValueError(f"rewind value of {layer.name}.{name} has shape {value.shape}, not {param.shape}")
            param[...] = value
            mask = layer.masks.get(name)
            if mask is not None:
                param[mask == 0] = 0.0
