"""minicnn export / import: a model leaves minicnn (ONNX, PyTorch's pruning layout) or comes in."""

from __future__ import annotations

from pathlib import Path

import click

from minicnn.cli.common import refuse_overwrite
from minicnn.errors import MiniCNNError

_SUFFIX = {"onnx": ".onnx", "torch": ".pt", "safetensors": ".safetensors"}


def _never_ours(_path: Path) -> bool:
    return False  # an existing --out is replaced only with --force


def _out_path(out, source, suffix: str, force: bool) -> Path:
    """--out (default: SOURCE with ``suffix``), refused if it is SOURCE or exists without --force."""
    out = Path(out or Path(source).with_suffix(suffix))
    if out.resolve() == Path(source).resolve():
        raise MiniCNNError(f"--out must differ from the input file {source}")
    refuse_overwrite(out, force, _never_ours)
    return out


@click.command("export")
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option("--format", "fmt", type=click.Choice(list(_SUFFIX)), default="onnx", show_default=True,
              help="onnx: the compacted model as an ONNX graph (needs onnx); torch: a state_dict in "
                   "torch.nn.utils.prune's layout, torch.save (needs PyTorch); safetensors: the same "
                   "state_dict as .safetensors (needs only safetensors).")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="Output file [default: CHECKPOINT with suffix .onnx, .pt or .safetensors].")
@click.option("--include-preprocessing", is_flag=True,
              help="onnx only: put the checkpoint's normalisation in the graph, so it takes uint8 images "
                   "(input 'image') instead of preprocessed float32 ones (input 'input').")
@click.option("--data", "data_path", metavar="PATH", default=None,
              help="CIFAR-10 archive, folder or cache whose channel mean/std a --normalize standard model "
                   "needs (default: $MINICNN_DATA, then the cache). Unused for center and unit.")
@click.option("--force", is_flag=True, help="Replace --out if it exists.")
def export_cmd(checkpoint, fmt, out, include_preprocessing, data_path, force):
    """Write a checkpoint for use outside minicnn.

    \b
    ONNX: the model compacted (filters removed by structured pruning, and the
    next layer's columns that read them, physically dropped, as `minicnn
    compact`) as Conv/Relu/MaxPool/Flatten/Gemm, opset 21. Input 'input'
    float32 (N, 3, 32, 32) with a dynamic batch N, preprocessed as the
    checkpoint's --normalize (stated in the model's metadata); output 'logits'
    (N, 10). Runs in ONNX Runtime.
    \b
    torch / safetensors: full size, every pruned layer as weight_orig +
    weight_mask (+ bias_orig/bias_mask where filters were removed), the rest as
    weight/bias, the architecture and preprocessing in the metadata: attach
    the masks with torch.nn.utils.prune.custom_from_mask, load_state_dict, and
    training continues with the masks holding (README shows how).
    \b
    Examples:
      minicnn export runs/baseline.h5 --out model.onnx
      minicnn export step.h5 --format onnx --include-preprocessing --out m.onnx
      minicnn export step.h5 --format safetensors --out pruned.safetensors
      minicnn export step.h5 --format torch --out pruned.pt

    Needs pip install -e ".[export]" (onnx, onnxruntime, safetensors); --format torch needs PyTorch.
    """
    from minicnn.io.checkpoint import load_checkpoint
    from minicnn.io.export import preprocessing, require

    if include_preprocessing and fmt != "onnx":
        raise MiniCNNError("--include-preprocessing applies to --format onnx only")
    require(fmt, f"--format {fmt}")  # the package is named as the format
    model, info = load_checkpoint(checkpoint, backend="ref")
    out = _out_path(out, checkpoint, _SUFFIX[fmt], force)
    prep = preprocessing(info["config"].get("normalize", "center"), data_path)
    if fmt == "onnx":
        from minicnn.io.export import describe_input
        from minicnn.io.onnx_export import OPSET, onnx_model, save_onnx
        from minicnn.pruning.compact import compact, compact_summary

        small, _ = compact(model)
        proto = onnx_model(small, prep, include_preprocessing, compacted=False)
        save_onnx(proto, out)
        click.echo(f"{checkpoint} -> {out}: ONNX opset {OPSET}, compacted ({compact_summary(model, small)}), "
                   f"{out.stat().st_size:,} bytes; input {proto.graph.input[0].name!r}: "
                   f"{describe_input(prep, include_preprocessing)}")
    else:
        from minicnn.io.torch_layout import save_state_dict

        save_state_dict(model, out, fmt, prep)
        pruned = sorted(f"{layer.name}.{p}" for layer in model.param_layers() for p in layer.masks)
        click.echo(f"{checkpoint} -> {out}: {fmt} state_dict, {model.arch} ({model.spec}), "
                   f"pruned: {', '.join(pruned) or 'none'}; preprocessing {prep['formula']}")


@click.command("import")
@click.argument("source", type=click.Path(dir_okay=False))
@click.option("--arch", default=None, metavar="NAME|SPEC",
              help="Preset (paper, conv2, conv4) or spec string of the model [default: the architecture "
                   "recorded in files minicnn exported; required for other files].")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="The minicnn checkpoint to write [default: SOURCE with suffix .h5].")
@click.option("--normalize", type=click.Choice(["center", "unit", "standard"]), default=None,
              help="The preprocessing the model was trained with [default: the file's metadata, else center].")
@click.option("--force", is_flag=True, help="Replace --out if it exists.")
def import_cmd(source, arch, out, normalize, force):
    """Turn a PyTorch state_dict (.pt/.pth via torch.save, or .safetensors) into a minicnn checkpoint
    that eval, prune, flops and compact accept.

    \b
    Accepted: a plain state_dict (<layer>.weight, <layer>.bias), or
    torch.nn.utils.prune's layout (<layer>.weight_orig + <layer>.weight_mask;
    the weight becomes weight_orig * weight_mask and the mask is kept). Layers
    are named as minicnn names them (conv1, conv2, fc1, ...) or by their
    index in an nn.Sequential of the same layers (0.weight, 4.weight for
    the paper's model). Every key and shape is checked against --arch; the
    first mismatch, missing key or unknown layer is named in one line.
    \b
    Examples:
      minicnn import pruned.safetensors --out pruned.h5
      minicnn import model.pt --arch paper --out model.h5
      minicnn import net.pt --arch 'conv16,relu,pool2,flatten,linear10' --normalize standard
    """
    from minicnn.io.torch_layout import import_state_dict

    out = _out_path(out, source, ".h5", force)
    model, config = import_state_dict(source, arch, out, normalize)
    pruned = sorted(f"{layer.name}.{p}" for layer in model.param_layers() for p in layer.masks)
    click.echo(f"{source} -> {out}: {model.arch} ({model.spec}), {model.num_params():,} parameters, "
               f"masks on {', '.join(pruned) or 'nothing'}, --normalize {config['normalize']}")
