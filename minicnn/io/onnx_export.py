"""ONNX export: a minicnn model, compacted, as an ONNX graph built with the onnx package's helpers
(no PyTorch involved).

The graph (opset ``OPSET``, IR version ``IR_VERSION``):

    input  'input'  float32 (N, 3, 32, 32), N dynamic, preprocessed as the checkpoint's --normalize
           [or, with include_preprocessing, 'image' uint8 (N, 3, 32, 32) -> Cast -> Div 255
            -> Sub 0.5 | Sub mean[c] -> Div std[c], the same float32 operations as minicnn.io.data.normalize]
    conv   Conv (kernel, stride, pads from the layer), bias included
    relu   Relu
    pool   MaxPool (kernel, stride, no padding, floor)
    flatten Flatten(axis=1)
    linear Gemm(x, W, b, transB=1)   W is (out, in) as in minicnn and PyTorch
    output 'logits' float32 (N, 10)

The model is compacted first (minicnn.pruning.compact: removed filters and the next layer's columns
that read them are physically dropped, as `minicnn compact`), so structured pruning makes the file and
the inference smaller. Unstructured-pruned weights are stored as dense tensors with exact zeros (ONNX
has no sparse Conv/Gemm), so they cost the same size and time as dense ones.

The metadata (``metadata_props``) holds the architecture, the compact layer list and the preprocessing
(minicnn.io.export.export_metadata).

Opset 21 (ONNX 1.16, 2024): every operator used here has had its current definition since opset 13
or earlier; 21 is recent and read by every ONNX Runtime since 1.18.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from minicnn.io.export import effective, export_metadata, require
from minicnn.io.files import atomic_path
from minicnn.nn.layers import Conv2d, Flatten, Linear, MaxPool2d, ReLU

OPSET = 21
IR_VERSION = 10
INPUT = "input"
UINT8_INPUT = "image"
OUTPUT = "logits"


def _preprocessing_nodes(helper, numpy_helper, prep: dict) -> tuple[list, list, str]:
    """Cast + Div/Sub nodes turning uint8 'image' into the float32 input the first layer expects."""
    nodes = [helper.make_node("Cast", [UINT8_INPUT], ["pixels"], to=1, name="cast")]  # 1 = FLOAT
    consts = {"scale": np.float32(255.0)}
    nodes.append(helper.make_node("Div", ["pixels", "scale"], ["unit"], name="scale"))
    x = "unit"
    if prep["normalize"] == "center":
        consts["center"] = np.float32(0.5)
        nodes.append(helper.make_node("Sub", [x, "center"], ["centered"], name="center"))
        x = "centered"
    elif prep["normalize"] == "standard":
        consts["channel_mean"] = np.asarray(prep["mean"], np.float32).reshape(1, 3, 1, 1)
        consts["channel_std"] = np.asarray(prep["std"], np.float32).reshape(1, 3, 1, 1)
        nodes.append(helper.make_node("Sub", [x, "channel_mean"], ["centered"], name="subtract_mean"))
        nodes.append(helper.make_node("Div", ["centered", "channel_std"], ["standardised"], name="divide_std"))
        x = "standardised"
    inits = [numpy_helper.from_array(np.asarray(v, np.float32), name) for name, v in consts.items()]
    return nodes, inits, x


def _layer_nodes(helper, numpy_helper, layer, x: str, y: str) -> tuple[list, list]:
    """(nodes, initializers) computing ``layer`` from tensor ``x`` into tensor ``y``."""
    name = layer.name
    if isinstance(layer, (Conv2d, Linear)):
        inits = [numpy_helper.from_array(effective(layer.params[p], layer.masks.get(p)), f"{name}.{p}")
                 for p in ("weight", "bias")]
        inputs = [x, f"{name}.weight", f"{name}.bias"]
        if isinstance(layer, Conv2d):
            k, s, p = layer.kernel_size, layer.stride, layer.padding
            node = helper.make_node("Conv", inputs, [y], name=name, kernel_shape=[k, k], strides=[s, s],
                                    pads=[p, p, p, p])
        else:
            node = helper.make_node("Gemm", inputs, [y], name=name, transB=1)
        return [node], inits
    if isinstance(layer, ReLU):
        return [helper.make_node("Relu", [x], [y], name=name)], []
    if isinstance(layer, MaxPool2d):
        k, s = layer.kernel_size, layer.stride
        return [helper.make_node("MaxPool", [x], [y], name=name, kernel_shape=[k, k], strides=[s, s])], []
    if isinstance(layer, Flatten):
        return [helper.make_node("Flatten", [x], [y], name=name, axis=1)], []
    raise TypeError(f"no ONNX form for layer {name} ({type(layer).__name__})")


def onnx_model(model, prep: dict, include_preprocessing: bool = False, compacted: bool = True):
    """The ONNX ModelProto of ``model`` (compacted first unless ``compacted`` is False); ``prep`` is
    minicnn.io.export.preprocessing's dict. Checked with onnx.checker before it is returned."""
    onnx = require("onnx", "--format onnx")
    from onnx import TensorProto, helper, numpy_helper

    from minicnn.pruning.compact import compact

    if compacted:
        model, _ = compact(model)
    nodes, inits, x = [], [], UINT8_INPUT if include_preprocessing else INPUT
    if include_preprocessing:
        nodes, inits, x = _preprocessing_nodes(helper, numpy_helper, prep)
    for i, layer in enumerate(model.layers):
        y = OUTPUT if i == len(model.layers) - 1 else f"{layer.name}.out"
        layer_nodes, layer_inits = _layer_nodes(helper, numpy_helper, layer, x, y)
        nodes += layer_nodes
        inits += layer_inits
        x = y
    in_type = TensorProto.UINT8 if include_preprocessing else TensorProto.FLOAT
    graph = helper.make_graph(
        nodes, f"minicnn_{model.arch}",
        [helper.make_tensor_value_info(UINT8_INPUT if include_preprocessing else INPUT, in_type, ["N", 3, 32, 32])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["N", model.layers[-1].out_features])],
        initializer=inits)
    proto = helper.make_model(graph, producer_name="minicnn", opset_imports=[helper.make_opsetid("", OPSET)],
                              ir_version=IR_VERSION)
    meta = export_metadata(model, prep, uint8_input=include_preprocessing)
    proto.doc_string = f"minicnn {model.arch} ({model.spec}); input: {meta['input']}; output: logits (N, 10)"
    helper.set_model_props(proto, meta)
    onnx.checker.check_model(proto, full_check=True)
    return proto


def save_onnx(proto, out) -> Path:
    """Write an ONNX ModelProto atomically."""
    with atomic_path(out) as tmp:
        Path(tmp).write_bytes(proto.SerializeToString())
    return Path(out)
