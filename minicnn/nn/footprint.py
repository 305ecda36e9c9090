"""Memory a model needs, estimated from its layer shapes before anything is allocated, so that an
architecture too large for the machine is refused with its size instead of being killed mid-way.

Training at batch N holds at least, in float32: every parameter four times (the weights, their
gradients, the momentum buffers and the masks of a pruned model), the input batch, every layer's
output (kept for the backward pass) and, during backward, two gradients as large as the largest
output. The reference backend's unfolded inputs (im2col) and NumPy's temporaries come on top: this is
a lower estimate, so a model refused by it cannot train here, and none that could is refused.
"""

from __future__ import annotations

import math
import os

from minicnn.errors import MiniCNNError

FLOAT_BYTES = 4
#: Copies of each parameter in training: weight, gradient, momentum, mask.
PARAM_COPIES = 4
#: Assumed free memory when the machine's cannot be read.
FALLBACK_AVAILABLE = 16 * 10**9


def available_memory() -> int:
    """Bytes of memory available to a new allocation: MemAvailable of /proc/meminfo, else the free
    physical pages, else FALLBACK_AVAILABLE."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return FALLBACK_AVAILABLE


def size_text(n_bytes: int) -> str:
    """1234567 -> '1.2 MB' (powers of 1000)."""
    for unit, scale in (("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if n_bytes >= scale:
            return f"{n_bytes / scale:.1f} {unit}"
    return f"{n_bytes} bytes"


def parameter_count(plan) -> int:
    """Parameters of a planned model: rows (kind, args, in_shape, out_shape) as ``model.plan_spec``."""
    total = 0
    for kind, args, in_shape, out_shape in plan:
        if kind == "conv":
            f, k = args[0], args[1]
            total += f * in_shape[0] * k * k + f
        elif kind == "linear":
            total += out_shape[0] * in_shape[0] + out_shape[0]
    return total


def training_bytes(plan, batch_size: int) -> tuple[int, int]:
    """(parameter bytes, activation bytes) of one training step at ``batch_size`` (module docstring)."""
    params = parameter_count(plan) * PARAM_COPIES * FLOAT_BYTES
    if not plan:
        return params, 0
    outputs = [math.prod(out_shape) for _kind, _args, _in_shape, out_shape in plan]
    per_image = math.prod(plan[0][2]) + sum(outputs) + 2 * max(outputs)
    return params, per_image * batch_size * FLOAT_BYTES


def _too_large(what: str, need: int, fix: str) -> None:
    available = available_memory()
    if need > available:
        raise MiniCNNError(f"{what}, more than the {size_text(available)} of memory available; {fix}")


def check_fits(plan, name: str, batch_size: int | None) -> None:
    """MiniCNNError naming the size when the model ``name`` (trained at ``batch_size``; with None only its
    parameters) needs more memory than the machine has available."""
    n_params = parameter_count(plan)
    if batch_size is None:
        need = n_params * PARAM_COPIES * FLOAT_BYTES
        _too_large(f"architecture {name!r} is too large: {n_params:,} parameters need about {size_text(need)}",
                   need, "choose a smaller --arch")
        return
    params, activations = training_bytes(plan, batch_size)
    _too_large(f"architecture {name!r} is too large: training it at batch {batch_size} needs about "
               f"{size_text(params + activations)} ({n_params:,} parameters: {size_text(params)}; activations: "
               f"{size_text(activations)})", params + activations,
               "choose a smaller --arch or --batch-size")


def check_parameters(n_params: int, where: str) -> None:
    """MiniCNNError when a stored model's ``n_params`` parameters cannot be held in memory."""
    need = n_params * PARAM_COPIES * FLOAT_BYTES
    _too_large(f"{where} describes a model of {n_params:,} parameters (about {size_text(need)})", need,
               "the file is damaged or not meant for this machine")
