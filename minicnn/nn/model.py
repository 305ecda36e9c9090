"""Architectures: presets, spec strings, and the Sequential container.

A spec string is a comma-separated list of layers, applied in order to a (3, 32, 32) image:

    conv<F>[k<K>][s<S>][p<P>]   convolution with F filters (default k3, s1, p = K//2, "same")
    relu                        ReLU
    pool<K>[s<S>]               max pooling (default stride = K)
    flatten                     (C, H, W) -> C*H*W
    linear<O>                   fully connected with O outputs

The paper's model is ``conv8,relu,pool2,flatten,linear10`` (20,714 parameters). Every size must be
positive (a padding may be 0). A spec is planned first (``plan_spec``: every shape, without allocating)
and sized against the memory available (minicnn.nn.footprint), so a degenerate or oversized spec is
refused with a one-line error before anything is built.
"""

from __future__ import annotations

import math
import re

import numpy as np

from minicnn.errors import MiniCNNError
from minicnn.nn.backend import get_backend
from minicnn.nn.footprint import check_fits, check_parameters
from minicnn.nn.layers import Conv2d, Flatten, Layer, Linear, MaxPool2d, ReLU
from minicnn.nn.pixels import as_floats
from minicnn.nn.ref.im2col import conv_output_size

PRESETS = {
    "paper": "conv8,relu,pool2,flatten,linear10",
    # Frankle & Carbin's Lottery Ticket CIFAR-10 networks
    "conv2": "conv64,relu,conv64,relu,pool2,flatten,linear256,relu,linear256,relu,linear10",
    "conv4": "conv64,relu,conv64,relu,pool2,conv128,relu,conv128,relu,pool2,flatten,"
             "linear256,relu,linear256,relu,linear10",
}
INPUT_SHAPE = (3, 32, 32)
NUM_CLASSES = 10

_TOKEN = {
    "conv": re.compile(r"conv(\d+)(?:k(\d+))?(?:s(\d+))?(?:p(\d+))?"),
    "pool": re.compile(r"pool(\d+)(?:s(\d+))?"),
    "linear": re.compile(r"(?:linear|fc)(\d+)"),
    "relu": re.compile(r"relu"),
    "flatten": re.compile(r"flatten"),
}


class Sequential:
    """Layers applied in order. Input (N, 3, 32, 32) float32 -> logits (N, 10)."""

    def __init__(self, layers: list[Layer], spec: str, arch: str, backend: str = "fast"):
        self.layers = layers
        self.spec = spec
        self.arch = arch
        self.set_backend(backend)

    def set_backend(self, name: str):
        self.backend = name
        self.ops = get_backend(name)
        self._backward_ready = False

    def _steps(self) -> list[tuple[int, int]]:
        """(first, last) layer indices of each execution step: a conv -> relu -> pool run is one fused
        step (ops.conv_relu_pool_*), so is a conv -> relu not followed by a pool (ops.conv_relu_*);
        every other layer is a step of its own."""
        steps, i, layers = [], 0, self.layers
        while i < len(layers):
            if i + 1 < len(layers) and isinstance(layers[i], Conv2d) and isinstance(layers[i + 1], ReLU):
                pooled = i + 2 < len(layers) and isinstance(layers[i + 2], MaxPool2d)
                steps.append((i, i + 2) if pooled else (i, i + 1))
                i += 3 if pooled else 2
            else:
                steps.append((i, i))
                i += 1
        return steps

    def _one_conv_net(self):
        """(conv, linear) if the model is conv (stride 1) -> ReLU -> 2x2 max-pool (stride 2) -> flatten ->
        linear, as the paper's: the ops.conv_relu_pool_linear_* run it whole, image by image. Else None."""
        kinds = [type(layer) for layer in self.layers]
        if kinds != [Conv2d, ReLU, MaxPool2d, Flatten, Linear]:
            return None
        conv, pool = self.layers[0], self.layers[2]
        if conv.stride != 1 or pool.kernel_size != 2 or pool.stride != 2:
            return None
        return conv, self.layers[4]

    def loss_and_gradients(self, x: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
        """One training pass: x (N, C, H, W) float or a PixelBatch (minicnn.nn.pixels), labels (N,) ->
        (mean softmax cross-entropy, logits (N, classes)), and every layer's ``grads`` filled. A one-conv
        network (see _one_conv_net) runs as one op, forward and backward together, and reads a
        PixelBatch's pixels itself; any other model layer by layer."""
        net = self._one_conv_net()
        if net is None:
            logits = self.forward(x)
            loss, dlogits = self.ops.softmax_cross_entropy(logits, labels)
            self.backward(dlogits)
            return loss, logits
        conv, fc = net
        loss, logits, dw, db, dfc_w, dfc_b = self.ops.conv_relu_pool_linear_loss(
            x, conv.params["weight"], conv.params["bias"], conv.padding, fc.params["weight"], fc.params["bias"],
            labels, conv.masks.get("weight"), fc.masks.get("weight"))
        conv.grads["weight"], conv.grads["bias"] = dw, db
        fc.grads["weight"], fc.grads["bias"] = dfc_w, dfc_b
        self._backward_ready = False  # the layers hold no caches of this pass
        return loss, logits

    def forward(self, x: np.ndarray, for_backward: bool = True) -> np.ndarray:
        """x: (N, C, H, W) float or a PixelBatch  ->  logits (N, classes). for_backward=False: inference,
        no backward follows (as torch.inference_mode: the fused kernels skip what only backward needs,
        and a one-conv network runs as one op)."""
        self._backward_ready = for_backward
        net = None if for_backward else self._one_conv_net()
        if net is not None:
            conv, fc = net
            return self.ops.conv_relu_pool_linear_forward(x, conv.params["weight"], conv.params["bias"], conv.padding,
                                                          fc.params["weight"], fc.params["bias"])
        x = as_floats(x)
        steps, i = self._steps(), 0
        while i < len(steps):
            first, last = steps[i]
            layer = self.layers[first]
            if not for_backward and self._conv_pair(steps, i):  # two fused steps as one op
                second = self.layers[steps[i + 1][0]]
                x = self.ops.conv_pair_forward(x, layer.params["weight"], layer.params["bias"], layer.padding,
                                               second.params["weight"], second.params["bias"], second.padding)
                layer._cache = second._cache = None
                i += 2
                continue
            if first == last:
                x = layer.forward(x, self.ops)
            else:  # a fused conv -> relu [-> pool] step
                pool = self.layers[last] if isinstance(self.layers[last], MaxPool2d) else None
                x = layer.forward_block(x, self.ops, pool, for_backward)
            i += 1
        return x

    def _conv_pair(self, steps: list[tuple[int, int]], i: int) -> bool:
        """Whether steps i and i + 1 are conv -> relu then conv -> relu -> 2x2 max-pool (stride 2), both
        convs of stride 1: ops.conv_pair_forward runs them at inference."""
        if i + 1 >= len(steps):
            return False
        (a, a_last), (b, b_last) = steps[i], steps[i + 1]
        if a_last - a != 1 or b_last - b != 2 or not isinstance(self.layers[b_last], MaxPool2d):
            return False
        pool = self.layers[b_last]
        return (self.layers[a].stride == 1 and self.layers[b].stride == 1 and pool.kernel_size == 2
                and pool.stride == 2)

    def backward(self, dlogits: np.ndarray) -> None:
        """Fill every layer's ``grads`` from dL/dlogits (N, classes). The first layer's input
        gradient is never computed (the input is data)."""
        if not self._backward_ready:
            raise RuntimeError("backward needs a forward pass for backward just before it; the last pass was an "
                               "inference forward (for_backward=False) or loss_and_gradients")
        d = dlogits
        for first, _ in reversed(self._steps()):
            d = self.layers[first].backward(d, self.ops, need_dx=first > 0)

    def param_layers(self) -> list[Layer]:
        return [layer for layer in self.layers if layer.params]

    def prunable_layers(self) -> list[Layer]:
        return [layer for layer in self.layers if layer.prunable]

    def layer(self, name: str) -> Layer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    def num_params(self) -> int:
        return sum(p.size for layer in self.layers for p in layer.params.values())

    def state(self) -> dict[str, np.ndarray]:
        """{'conv1.weight': array, ...}: every parameter, by layer and name."""
        return {f"{layer.name}.{k}": v for layer in self.layers for k, v in layer.params.items()}

    def config(self) -> dict:
        return {"arch": self.arch, "spec": self.spec, "layers": [layer.config() for layer in self.layers]}

    def __repr__(self):
        body = "\n".join(f"  {layer.name}: {layer!r}" for layer in self.layers)
        return f"Sequential(arch={self.arch!r}, {self.num_params():,} parameters)\n{body}"


def resolve_arch(arch: str) -> tuple[str, str]:
    """'paper' -> ('paper', its spec); a spec string -> ('custom', spec)."""
    if arch in PRESETS:
        return arch, PRESETS[arch]
    if "," in arch or any(arch.startswith(k) for k in ("conv", "linear", "fc")):
        return "custom", arch
    raise MiniCNNError(f"unknown architecture {arch!r}; use one of {', '.join(PRESETS)} "
                       f"or a spec string such as 'conv8,relu,pool2,flatten,linear10'")


def parse_spec(spec: str) -> list[tuple[str, tuple]]:
    """'conv8,relu' -> [('conv', (8, 3, 1, 1)), ('relu', ())]. Every size must be positive (a padding
    may be 0)."""
    parsed = []
    for token in [t.strip().lower() for t in spec.split(",") if t.strip()]:
        for kind, pattern in _TOKEN.items():
            m = pattern.fullmatch(token)
            if m:
                break
        else:
            raise MiniCNNError(f"cannot read layer {token!r} in architecture spec {spec!r}; "
                               f"layers are conv<F>[k<K>][s<S>][p<P>], relu, pool<K>[s<S>], flatten, linear<O>")
        if kind == "conv":
            f, k, s, p = m.groups()
            k = int(k or 3)
            args = (int(f), k, int(s or 1), int(p) if p is not None else k // 2)
            positive = args[:3]
            what = "filters, kernel size and stride"
        elif kind == "pool":
            k, s = m.groups()
            args = (int(k), int(s) if s else int(k))
            positive, what = args, "kernel size and stride"
        elif kind == "linear":
            args = (int(m.group(1)),)
            positive, what = args, "outputs"
        else:
            args, positive, what = (), (), ""
        if any(a <= 0 for a in positive):
            raise MiniCNNError(f"layer {token!r} in architecture spec {spec!r}: {what} must be positive")
        parsed.append((kind, args))
    if not parsed:
        raise MiniCNNError("empty architecture spec")
    return parsed


def _output_shape(kind: str, args: tuple, shape: tuple) -> tuple:
    """One example's output shape (as the layer's ``output_shape``), in Python integers."""
    if kind == "conv":
        f, k, s, p = args
        return (f, conv_output_size(shape[1], k, s, p), conv_output_size(shape[2], k, s, p))
    if kind == "pool":
        k, s = args
        return (shape[0], conv_output_size(shape[1], k, s, 0), conv_output_size(shape[2], k, s, 0))
    if kind == "flatten":
        return (math.prod(shape),)
    if kind == "linear":
        return (args[0],)
    return shape


def plan_spec(spec: str, input_shape: tuple = INPUT_SHAPE,
              num_classes: int = NUM_CLASSES) -> list[tuple[str, tuple, tuple, tuple]]:
    """The layers of a spec string with their shapes, computed without allocating anything: rows
    (kind, args, input shape, output shape) of one example, with the implicit flatten before a linear
    layer made explicit. MiniCNNError for a spec that cannot be built (a conv after flatten, an image
    shrunk to nothing, an output other than ``num_classes``)."""
    rows = []
    shape = tuple(input_shape)
    for kind, args in parse_spec(spec):
        if kind in ("conv", "pool") and len(shape) != 3:
            raise MiniCNNError(f"spec {spec!r}: {kind} after flatten/linear is not possible")
        if kind == "linear" and len(shape) != 1:
            rows.append(("flatten", (), shape, _output_shape("flatten", (), shape)))  # implicit flatten
            shape = rows[-1][3]
        out_shape = _output_shape(kind, args, shape)
        if any(d <= 0 for d in out_shape):
            raise MiniCNNError(f"spec {spec!r}: layer {len(rows) + 1} ({kind}) shrinks the {shape[1]}x{shape[2]} "
                               f"image to nothing {out_shape}")
        rows.append((kind, args, shape, out_shape))
        shape = out_shape
    if shape != (num_classes,):
        raise MiniCNNError(f"spec {spec!r} must end in linear{num_classes} (got output shape {shape})")
    return rows


def check_arch(arch: str, batch_size: int | None = None) -> None:
    """MiniCNNError unless ``arch`` (a preset or spec string) can be built and, at ``batch_size``,
    trained in the memory this machine has available (with None: its parameters fit)."""
    name, spec = resolve_arch(arch)
    check_fits(plan_spec(spec), spec if name == "custom" else name, batch_size)


def build_model(arch: str = "paper", rng: np.random.Generator | None = None, backend: str = "fast",
                input_shape: tuple = INPUT_SHAPE, num_classes: int = NUM_CLASSES) -> Sequential:
    """Build a freshly initialised model (PyTorch's default init) from a preset name or spec string.
    The spec is checked (``plan_spec``) and its parameters sized against the available memory first."""
    rng = rng if rng is not None else np.random.default_rng(0)
    name, spec = resolve_arch(arch)
    plan = plan_spec(spec, input_shape, num_classes)
    check_fits(plan, spec if name == "custom" else name, None)
    layers: list[Layer] = []
    counts: dict[str, int] = {}

    def next_name(prefix):
        counts[prefix] = counts.get(prefix, 0) + 1
        return f"{prefix}{counts[prefix]}"

    for kind, args, shape, _ in plan:
        if kind == "conv":
            layers.append(Conv2d(next_name("conv"), shape[0], *args, rng=rng))
        elif kind == "pool":
            layers.append(MaxPool2d(next_name("pool"), *args))
        elif kind == "relu":
            layers.append(ReLU(next_name("relu")))
        elif kind == "flatten":
            layers.append(Flatten(next_name("flatten")))
        else:
            layers.append(Linear(next_name("fc"), shape[0], args[0], rng=rng))
    return Sequential(layers, spec, name, backend)


def model_from_config(config: dict, backend: str = "fast") -> Sequential:
    """Rebuild a model (with fresh parameters) from ``Sequential.config()``: the layer list is used as
    stored, so a compacted model (fewer filters than its spec says) comes back with its own shapes."""
    builders = {
        "conv": lambda c: Conv2d(c["name"], c["in_channels"], c["out_channels"], c["kernel_size"], c["stride"],
                                 c["padding"]),
        "linear": lambda c: Linear(c["name"], c["in_features"], c["out_features"]),
        "pool": lambda c: MaxPool2d(c["name"], c["kernel_size"], c["stride"]),
        "relu": lambda c: ReLU(c["name"]),
        "flatten": lambda c: Flatten(c["name"]),
    }
    sizes = {"conv": lambda c: c["out_channels"] * (c["in_channels"] * c["kernel_size"] ** 2 + 1),
             "linear": lambda c: c["out_features"] * (c["in_features"] + 1)}
    try:
        check_parameters(sum(sizes[c["kind"]](c) for c in config["layers"] if c["kind"] in sizes),
                         "the model description")
        layers = [builders[c["kind"]](c) for c in config["layers"]]
    except (KeyError, TypeError) as exc:
        raise MiniCNNError(f"model description is damaged ({exc!r}); the file is not a valid checkpoint") from None
    return Sequential(layers, config["spec"], config["arch"], backend)
