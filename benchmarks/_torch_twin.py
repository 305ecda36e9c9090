"""The PyTorch twin of a minicnn model, for the benchmarks: same layers, PyTorch's own modules."""

from __future__ import annotations


def torch_model(template):
    """nn.Sequential mirroring ``template.layers`` (a minicnn Sequential). Parameters are PyTorch's
    own default-initialised ones; copy minicnn's over when the same weights are needed."""
    from torch import nn

    build = {
        "conv": lambda c: nn.Conv2d(c["in_channels"], c["out_channels"], c["kernel_size"], c["stride"], c["padding"]),
        "linear": lambda c: nn.Linear(c["in_features"], c["out_features"]),
        "relu": lambda c: nn.ReLU(),
        "pool": lambda c: nn.MaxPool2d(c["kernel_size"], c["stride"]),
        "flatten": lambda c: nn.Flatten(),
    }
    return nn.Sequential(*[build[layer.config()["kind"]](layer.config()) for layer in template.layers])
