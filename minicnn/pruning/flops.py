"""Analytic parameter and FLOP counts, dense and mask-aware ("effective"), per image.

Convention
----------
- 1 multiply-add = 2 FLOPs.
- Conv2d: 2*C*KH*KW*OH*OW*F for the weights + OH*OW*F for the bias.
- Linear: 2*in*out + out.
- ReLU: 1 per element. Max-pool: k*k - 1 comparisons per output element. Flatten: 0.
- Softmax cross-entropy is counted separately (``softmax_ce_flops``), K classes: K-1 comparisons for
  the max, K subtractions, K exponentials, K-1 additions, 1 logarithm and 1 subtraction = 4K per image
  (an exponential or logarithm counts as 1 FLOP). It is not part of the layer totals.
- Training FLOPs = 3 x forward FLOPs (the backward pass costs about two forward passes: one product
  for the input gradient, one for the weight gradient). This is a convention, not a measurement.

Dense FLOPs are what a dense kernel executes whatever the masks. Effective FLOPs count only the work
that can change the output:

- Forward liveness. Every image channel is live. A conv filter or linear neuron whose weights reading
  live inputs are all zero computes the constant b (its bias, 0 when masked). It is dead if that
  constant is 0, and after a ReLU also if it is negative (ReLU(b) = 0); a positive constant stays live
  (a constant ReLU(b) map, which torch keeps when it prunes a filter but not its bias). Pooling keeps
  a channel's state; flatten maps channel c of (C, H, W) to features c*H*W ... (c+1)*H*W - 1.
- Backward liveness. The network's outputs are always needed. A unit is needed when a nonzero weight
  of a live, needed unit downstream reads it (through ReLU, pooling and flatten unchanged).
- A unit is active when it is live and needed. Effective parameters: nonzero weights that connect an
  active input to an active unit, plus nonzero (unmasked) biases of active units. Effective FLOPs:
  2 per such weight per output position, 1 per such bias per output position, ReLU and pooling only on
  active channels or features.

"Nonzero" means nonzero after the mask (weight * mask), so a weight that happens to be exactly 0 is
treated like a pruned one.
"""

from __future__ import annotations

import numpy as np

from minicnn.nn.model import INPUT_SHAPE

TRAINING_FACTOR = 3
CONVENTION = ("1 multiply-add = 2 FLOPs; conv 2*C*KH*KW*OH*OW*F + OH*OW*F (bias); linear 2*in*out + out; "
              "ReLU 1 per element; max-pool k*k-1 comparisons per output; flatten 0; "
              "softmax-CE 4K per image, counted separately; training = 3 x forward; per image")


def _effective(layer, name: str) -> np.ndarray:
    """A parameter as the network uses it: params * mask (params are already 0 where masked)."""
    p = np.asarray(layer.params[name], dtype=np.float64)
    mask = layer.masks.get(name)
    return p if mask is None else p * mask


def _units(shape: tuple) -> int:
    return shape[0]


def _positions(shape: tuple) -> int:
    """Output positions per unit: OH*OW for (C, H, W), 1 for (D,)."""
    return int(np.prod(shape[1:])) if len(shape) > 1 else 1


def _forward_state(layer, const_in: np.ndarray, in_shape: tuple, out_shape: tuple) -> np.ndarray:
    """Per output unit: NaN when it depends on the input (live), else the constant it always holds
    (0 = dead)."""
    kind = layer.kind
    if kind in ("conv", "linear"):
        w = _effective(layer, "weight")
        b = _effective(layer, "bias")
        live_in = ~(const_in == 0)
        w_live = w[:, live_in]
        reads = (w_live != 0).reshape(w.shape[0], -1).any(axis=1)
        return np.where(reads, np.nan, b)
    if kind == "relu":
        return np.where(np.isnan(const_in), np.nan, np.maximum(const_in, 0.0))
    if kind == "flatten":
        if len(in_shape) == 1:
            return const_in.copy()
        return np.repeat(const_in, _positions(in_shape))
    if kind == "pool":
        return const_in.copy()
    raise ValueError(f"flops: no rule for layer kind {kind!r}")


def _needed_inputs(layer, active_out: np.ndarray, in_shape: tuple) -> np.ndarray:
    """Per input unit: is it read by an active output unit (through a nonzero weight)?"""
    kind = layer.kind
    if kind in ("conv", "linear"):
        w = _effective(layer, "weight")[active_out]
        if kind == "conv":
            return (w != 0).any(axis=(0, 2, 3))
        return (w != 0).any(axis=0)
    if kind == "flatten":
        if len(in_shape) == 1:
            return active_out.copy()
        return active_out.reshape(in_shape[0], -1).any(axis=1)
    return active_out.copy()  # relu, pool: channel to channel


def _layer_counts(layer, in_shape, out_shape, active_in, active_out) -> dict:
    kind = layer.kind
    pos = _positions(out_shape)
    n_active = int(active_out.sum())
    row = {"name": layer.name, "kind": kind, "output_shape": [int(d) for d in out_shape],
           "units": _units(out_shape), "units_active": n_active,
           "params": 0, "params_nonzero": 0, "params_effective": 0,
           "flops_dense": 0, "flops_effective": 0}
    if kind in ("conv", "linear"):
        w = _effective(layer, "weight")
        b = _effective(layer, "bias")
        counted = w != 0
        counted &= active_out.reshape((-1,) + (1,) * (w.ndim - 1))
        counted &= active_in.reshape((1, -1) + (1,) * (w.ndim - 2))
        n_w = int(counted.sum())
        n_b = int(((b != 0) & active_out).sum())
        fan_in = int(np.prod(w.shape[1:]))
        f = w.shape[0]
        row.update(params=int(w.size + b.size),
                   params_nonzero=int(np.count_nonzero(w) + np.count_nonzero(b)),
                   params_effective=n_w + n_b,
                   flops_dense=2 * fan_in * pos * f + pos * f,
                   flops_effective=2 * n_w * pos + n_b * pos)
    elif kind == "relu":
        row.update(flops_dense=int(np.prod(in_shape)), flops_effective=n_active * pos)
    elif kind == "pool":
        per = layer.kernel_size * layer.kernel_size - 1
        row.update(flops_dense=per * int(np.prod(out_shape)), flops_effective=per * n_active * pos)
    return row


def count(model, input_shape: tuple = INPUT_SHAPE) -> dict:
    """Parameters and FLOPs of ``model`` per layer and in total, dense and effective, per image.

    Returns {"input_shape", "convention", "layers": [row, ...], "totals": {...}} where each row has
    name, kind, output_shape, units (channels or features), units_active, params, params_nonzero,
    params_effective, flops_dense, flops_effective (forward), and totals has params, params_nonzero,
    params_effective, flops_dense, flops_effective, training_flops_dense, training_flops_effective
    (3 x forward) and softmax_ce_flops (4K, not included in the other totals). Plain ints and lists,
    ready for JSON.
    """
    layers = list(model.layers)
    shapes = [tuple(int(d) for d in input_shape)]
    for layer in layers:
        shapes.append(tuple(int(d) for d in layer.output_shape(shapes[-1])))

    # forward: which units are constant (and which constants), starting from a live image
    consts = [np.full(_units(shapes[0]), np.nan)]
    for i, layer in enumerate(layers):
        consts.append(_forward_state(layer, consts[-1], shapes[i], shapes[i + 1]))

    # backward: which units reach the outputs; active = live and needed
    active = [None] * (len(layers) + 1)
    needed = np.ones(_units(shapes[-1]), dtype=bool)
    for i in range(len(layers), 0, -1):
        active[i] = ~(consts[i] == 0) & needed
        needed = _needed_inputs(layers[i - 1], active[i], shapes[i - 1])
    active[0] = ~(consts[0] == 0) & needed

    rows = [_layer_counts(layer, shapes[i], shapes[i + 1], active[i], active[i + 1])
            for i, layer in enumerate(layers)]
    totals = {key: int(sum(r[key] for r in rows))
              for key in ("params", "params_nonzero", "params_effective", "flops_dense", "flops_effective")}
    totals["training_flops_dense"] = TRAINING_FACTOR * totals["flops_dense"]
    totals["training_flops_effective"] = TRAINING_FACTOR * totals["flops_effective"]
    totals["softmax_ce_flops"] = 4 * _units(shapes[-1])
    return {"input_shape": list(shapes[0]), "convention": CONVENTION, "layers": rows, "totals": totals}


def training_matmul_flops(model, input_shape: tuple = INPUT_SHAPE) -> int:
    """FLOPs per image of a dense training step as PyTorch's FLOP counter (``torch.utils.flop_counter``)
    counts them: the conv and linear multiply-adds x 2 (no biases, activations or pooling) of the forward
    pass, of the weight gradients, and of the input gradients of every such layer but the first (nothing
    asks for the image's gradient). What a training step computes; benchmarks divide it by time."""
    rows = [r for r in count(model, input_shape)["layers"] if r["kind"] in ("conv", "linear")]
    if not rows:
        return 0
    # flops_dense = 2 * multiply-adds + one bias add per output
    products = [r["flops_dense"] - int(np.prod(r["output_shape"])) for r in rows]
    return 3 * sum(products) - products[0]


def format_table(counts: dict) -> str:
    """An aligned per-layer table with a totals row, training FLOPs and the convention."""
    head = ("layer", "kind", "output", "params", "nonzero", "effective", "FLOPs dense", "FLOPs effective")
    body = []
    for r in counts["layers"]:
        body.append((r["name"], r["kind"], "x".join(str(d) for d in r["output_shape"]),
                     f"{r['params']:,}", f"{r['params_nonzero']:,}", f"{r['params_effective']:,}",
                     f"{r['flops_dense']:,}", f"{r['flops_effective']:,}"))
    t = counts["totals"]
    total = ("total", "", "", f"{t['params']:,}", f"{t['params_nonzero']:,}", f"{t['params_effective']:,}",
             f"{t['flops_dense']:,}", f"{t['flops_effective']:,}")
    widths = [max(len(row[i]) for row in [head, total, *body]) for i in range(len(head))]
    left = 3  # name, kind and shape columns are left-aligned, numbers right-aligned

    def line(row):
        return "  ".join(c.ljust(w) if i < left else c.rjust(w)
                         for i, (c, w) in enumerate(zip(row, widths))).rstrip()

    rule = "-" * len(line(head))
    dense, eff = t["flops_dense"], t["flops_effective"]
    share = f" ({eff / dense:.1%} of dense)" if dense else ""
    lines = [line(head), rule, *(line(r) for r in body), rule, line(total), "",
             f"forward FLOPs per image:  dense {dense:,}, effective {eff:,}{share}",
             f"training FLOPs per image: dense {t['training_flops_dense']:,}, "
             f"effective {t['training_flops_effective']:,} (3 x forward)",
             f"softmax cross-entropy:    {t['softmax_ce_flops']:,} FLOPs per image (not in the totals)",
             f"convention: {counts['convention']}"]
    return "\n".join(lines)
