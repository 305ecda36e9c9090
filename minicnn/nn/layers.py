"""Layers: thin stateful wrappers over the pure ops of a backend (minicnn.nn.ref or minicnn.nn.fast).

Every layer has
- ``params`` / ``grads``: dicts name -> float32 array ('weight' (F, C, KH, KW) or (O, D), 'bias'),
- ``masks``: dict name -> float32 array of 0/1 beside a pruned parameter (absent = nothing pruned),
- ``forward(x, ops)`` and ``backward(dout, ops, need_dx)`` that keep the op's cache in between.
Pruned entries are kept exactly 0 in ``params`` (pruning zeroes them, SGD masks their updates), so
the forward pass computes w * mask without a multiplication.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import numpy as np

from minicnn.nn.ref.im2col import conv_output_size


def torch_default_init(rng: np.random.Generator, weight_shape: tuple, fan_in: int, dtype=np.float32):
    """PyTorch's default init for Conv2d/Linear: Kaiming-uniform with a=sqrt(5) for the weight, which
    reduces to U(-1/sqrt(fan_in), 1/sqrt(fan_in)), and the same bound for the bias."""
    bound = 1.0 / math.sqrt(fan_in)
    weight = rng.uniform(-bound, bound, size=weight_shape).astype(dtype)
    bias = rng.uniform(-bound, bound, size=weight_shape[0]).astype(dtype)
    return weight, bias


class PendingBackward(NamedTuple):
    """What a conv's backward needs from its forward pass: the op's backward function (plain conv, or a
    fused conv -> ReLU [-> pool]), the op's cache, and whether it takes the weight mask."""

    backward: Callable
    cache: object
    takes_mask: bool


class Layer:
    """Base class: no parameters, identity shape."""

    kind = "layer"
    prunable = False

    def __init__(self, name: str):
        self.name = name
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.masks: dict[str, np.ndarray] = {}
        self._cache = None

    def output_shape(self, input_shape: tuple) -> tuple:
        """Shape of one example's output, (C, H, W) or (D,), from one example's input shape."""
        return input_shape

    def config(self) -> dict:
        """Hyperparameters that rebuild this layer (for checkpoints)."""
        return {"kind": self.kind, "name": self.name}

    def __repr__(self):
        args = ", ".join(f"{k}={v}" for k, v in self.config().items() if k not in ("kind", "name"))
        return f"{type(self).__name__}({args})"


class Conv2d(Layer):
    """Convolution, weight (F, C, KH, KW), bias (F,). Input (N, C, H, W) -> output (N, F, OH, OW)."""

    kind = "conv"
    prunable = True

    def __init__(self, name, in_channels, out_channels, kernel_size=3, stride=1, padding=1, rng=None):
        super().__init__(name)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        fan_in = in_channels * kernel_size * kernel_size
        w, b = torch_default_init(rng or np.random.default_rng(0),
                                  (out_channels, in_channels, kernel_size, kernel_size), fan_in)
        self.params = {"weight": w, "bias": b}

    def config(self):
        return {"kind": self.kind, "name": self.name, "in_channels": self.in_channels,
                "out_channels": self.out_channels, "kernel_size": self.kernel_size,
                "stride": self.stride, "padding": self.padding}

    def output_shape(self, input_shape):
        _, h, w = input_shape
        k, s, p = self.kernel_size, self.stride, self.padding
        return (self.out_channels, conv_output_size(h, k, s, p), conv_output_size(w, k, s, p))

    def forward(self, x, ops):
        out, cache = ops.conv2d_forward(x, self.params["weight"], self.params["bias"], self.stride, self.padding)
        self._cache = PendingBackward(ops.conv2d_backward, cache, takes_mask=False)
        return out

    def forward_block(self, x, ops, pool: "MaxPool2d | None", for_backward: bool = True):
        """This conv, a ReLU and ``pool`` (or no pool: None) in one fused op (see minicnn/ref/block.py).
        for_backward=False: inference, no backward follows (the fast kernels then skip its caches)."""
        w, b = self.params["weight"], self.params["bias"]
        if pool is None:
            out, cache = ops.conv_relu_forward(x, w, b, self.stride, self.padding)
        else:
            out, cache = ops.conv_relu_pool_forward(x, w, b, self.stride, self.padding, pool.kernel_size,
                                                    pool.stride, for_backward)
        backward = ops.conv_relu_backward if pool is None else ops.conv_relu_pool_backward
        self._cache = PendingBackward(backward, cache, takes_mask=True) if for_backward else None
        return out

    def backward(self, dout, ops, need_dx=True):
        """dout is the gradient of this layer's output, or of the block's output after forward_block."""
        if self._cache is None:
            raise RuntimeError(f"{self.name}: backward without a forward pass for backward "
                               "(the last forward ran with for_backward=False)")
        pending = self._cache
        if pending.takes_mask:  # the fused kernels skip the gradient of pruned weights (SGD would mask it anyway)
            grads = pending.backward(dout, pending.cache, need_dx, self.masks.get("weight"))
        else:
            grads = pending.backward(dout, pending.cache, need_dx)
        dx, self.grads["weight"], self.grads["bias"] = grads
        return dx


class Linear(Layer):
    """Fully connected, weight (O, D), bias (O,). Input (N, D) -> output (N, O)."""

    kind = "linear"
    prunable = True

    def __init__(self, name, in_features, out_features, rng=None):
        super().__init__(name)
        self.in_features, self.out_features = in_features, out_features
        w, b = torch_default_init(rng or np.random.default_rng(0), (out_features, in_features), in_features)
        self.params = {"weight": w, "bias": b}

    def config(self):
        return {"kind": self.kind, "name": self.name, "in_features": self.in_features,
                "out_features": self.out_features}

    def output_shape(self, input_shape):
        return (self.out_features,)

    def forward(self, x, ops):
        mask = self.masks.get("weight")
        if mask is None:
            out, cache = ops.linear_forward(x, self.params["weight"], self.params["bias"])
        else:  # pruned: the fast twin switches to a sparse kernel when few weights remain
            out, cache = ops.masked_linear_forward(x, self.params["weight"], self.params["bias"], mask)
        self._cache = (mask is not None, cache)
        return out

    def backward(self, dout, ops, need_dx=True):
        masked, cache = self._cache
        backward = ops.masked_linear_backward if masked else ops.linear_backward
        dx, self.grads["weight"], self.grads["bias"] = backward(dout, cache, need_dx)
        return dx


class ReLU(Layer):
    kind = "relu"

    def forward(self, x, ops):
        out, self._cache = ops.relu_forward(x)
        return out

    def backward(self, dout, ops, need_dx=True):
        return ops.relu_backward(dout, self._cache)


class MaxPool2d(Layer):
    """Max pooling, no padding. Input (N, C, H, W) -> (N, C, OH, OW)."""

    kind = "pool"

    def __init__(self, name, kernel_size=2, stride=None):
        super().__init__(name)
        self.kernel_size = kernel_size
        self.stride = kernel_size if stride is None else stride

    def config(self):
        return {"kind": self.kind, "name": self.name, "kernel_size": self.kernel_size, "stride": self.stride}

    def output_shape(self, input_shape):
        c, h, w = input_shape
        k, s = self.kernel_size, self.stride
        return (c, conv_output_size(h, k, s, 0), conv_output_size(w, k, s, 0))

    def forward(self, x, ops):
        out, self._cache = ops.maxpool2d_forward(x, self.kernel_size, self.stride)
        return out

    def backward(self, dout, ops, need_dx=True):
        return ops.maxpool2d_backward(dout, self._cache)


class Flatten(Layer):
    """(N, C, H, W) -> (N, C*H*W), C-order as torch.flatten(x, 1)."""

    kind = "flatten"

    def output_shape(self, input_shape):
        return (int(np.prod(input_shape)),)

    def forward(self, x, ops):
        out, self._cache = ops.flatten_forward(x)
        return out

    def backward(self, dout, ops, need_dx=True):
        return ops.flatten_backward(dout, self._cache)
