"""The only switch between the NumPy reference and the Numba fast path."""

from __future__ import annotations

import importlib
from types import SimpleNamespace

from minicnn.errors import MiniCNNError

BACKENDS = ("fast", "ref")
OPS = {
    "conv": ("conv2d_forward", "conv2d_backward"),
    "pool": ("maxpool2d_forward", "maxpool2d_backward"),
    "act": ("relu_forward", "relu_backward", "flatten_forward", "flatten_backward"),
    "dense": ("linear_forward", "linear_backward", "masked_linear_forward", "masked_linear_backward"),
    "loss": ("softmax_cross_entropy",),
    "sgd": ("sgd_step",),
    "im2col": ("im2col", "col2im"),
    "block": ("conv_relu_pool_forward", "conv_relu_pool_backward", "conv_relu_forward", "conv_relu_backward",
              "conv_pair_forward"),
    "convnet": ("conv_relu_pool_linear_loss", "conv_relu_pool_linear_forward"),
}
_loaded: dict[str, SimpleNamespace] = {}


def get_backend(name: str = "fast") -> SimpleNamespace:
    """Return a namespace with every op (conv2d_forward, ..., sgd_step) of backend ``name``."""
    if name not in BACKENDS:
        raise MiniCNNError(f"unknown backend {name!r}; choose one of: {', '.join(BACKENDS)}")
    if name not in _loaded:
        ops = {}
        for module, names in OPS.items():
            mod = importlib.import_module(f"minicnn.nn.{name}.{module}")
            ops.update({n: getattr(mod, n) for n in names})
        _loaded[name] = SimpleNamespace(name=name, **ops)
    return _loaded[name]
