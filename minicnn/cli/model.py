"""minicnn train / eval / flops / compact: one model at a time."""

from __future__ import annotations

from pathlib import Path

import click

from minicnn import paper
from minicnn.cli.common import backend_option, data_options, progress, refuse_overwrite, sgd_options
from minicnn.errors import MiniCNNError


def _print_epoch(record: dict) -> None:
    status = "  DIVERGED (a loss or weight is NaN/inf)" if record["diverged"] else ""
    click.echo(f"epoch {record['epoch']:3d}  train loss {record['train_loss']:.4f}  "
               f"train acc {record['train_acc']:6.2%}  test acc {record['test_acc']:6.2%}  "
               f"{record['images_per_s']:8,.0f} img/s{status}")


@click.command()
@click.option("--arch", default=paper.ARCH, show_default=True,
              help="Preset (paper, conv2, conv4) or a spec string such as 'conv8,relu,pool2,flatten,linear10'.")
@click.option("--epochs", type=click.IntRange(min=1), default=paper.BASELINE_EPOCHS, show_default=True)
@click.option("--lr", type=float, default=paper.BASELINE_LR, show_default=True,
              help="SGD learning rate, > 0 (the paper's baseline uses 0.8).")
@sgd_options
@data_options
@backend_option
@click.option("--out", type=click.Path(dir_okay=False), default="runs/baseline.h5", show_default=True,
              help="HDF5 checkpoint, rewritten after every epoch. Rerunning with the same settings resumes it.")
@click.option("--force", is_flag=True, help="Start over even if --out holds a run with other settings.")
def train(arch, epochs, lr, batch_size, momentum, weight_decay, seed, data_path, normalize, train_limit,
          test_limit, backend, out, force):
    """Train a model on CIFAR-10 with plain SGD and save an HDF5 checkpoint.

    Prints train and test accuracy after every epoch. A NaN/inf loss or weight stops the run and is
    recorded as diverged (at high learning rates that is a result, not a crash). An interrupted run
    resumes from its last finished epoch when rerun with the same --out and settings.
    """
    from minicnn.study.config import TrainConfig
    from minicnn.study.training import run_training

    config = TrainConfig(arch=arch, epochs=epochs, lr=lr, batch_size=batch_size, momentum=momentum,
                         weight_decay=weight_decay, seed=seed, normalize=normalize, train_limit=train_limit,
                         test_limit=test_limit)
    result = run_training(config, out, data_path=data_path, backend=backend, force=force,
                          progress_factory=progress, on_epoch=_print_epoch, echo=click.echo)
    click.echo(f"final: train acc {result['train_acc']:.2%}  test acc {result['test_acc']:.2%}"
               f"{'  (DIVERGED)' if result['diverged'] else ''}  -> {out}")


@click.command("eval")
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@data_options
@backend_option
def eval_cmd(checkpoint, data_path, normalize, train_limit, test_limit, backend):
    """Print the train and test accuracy of a checkpoint.

    The normalisation stored in the checkpoint is used unless --normalize is given explicitly. A
    checkpoint whose training diverged (NaN or infinite weights, or a recorded NaN/inf loss) is
    refused: it has no accuracy to measure.
    """
    from minicnn.io.checkpoint import load_trained
    from minicnn.io.data import load_cifar10, make_normalizer
    from minicnn.nn.train import evaluate

    model, info = load_trained(checkpoint, backend=backend)
    source = click.get_current_context().get_parameter_source("normalize")
    if source == click.core.ParameterSource.DEFAULT:
        normalize = info["config"].get("normalize", normalize)
    dataset = load_cifar10(data_path, train_limit=train_limit, test_limit=test_limit)
    norm = make_normalizer(normalize, dataset)
    train_m = evaluate(model, dataset.x_train, dataset.y_train, norm)
    test_m = evaluate(model, dataset.x_test, dataset.y_test, norm)
    click.echo(f"{checkpoint}: {model.arch}, {model.num_params():,} parameters, epoch {info['epoch']}")
    click.echo(f"train acc {train_m['acc']:.2%} (loss {train_m['loss']:.4f}) on {len(dataset.y_train):,} images")
    click.echo(f"test acc  {test_m['acc']:.2%} (loss {test_m['loss']:.4f}) on {len(dataset.y_test):,} images")


@click.command("flops")
@click.option("--arch", default=None, metavar="NAME|SPEC",
              help="Preset (paper, conv2, conv4) or a spec string such as "
                   "'conv8,relu,pool2,flatten,linear10'. Default: paper.")
@click.option("--checkpoint", type=click.Path(dir_okay=False), default=None, metavar="PATH",
              help="Count a saved model instead, with its pruning masks.")
@click.option("--json", "as_json", is_flag=True, help="Print per-layer numbers and totals as JSON.")
def flops_cmd(arch, checkpoint, as_json):
    """Print parameters and FLOPs per layer, dense and effective (mask-aware), per image.

    \b
    Convention:
      1 multiply-add = 2 FLOPs
      conv:     2*C*KH*KW*OH*OW*F + OH*OW*F (bias)
      linear:   2*in*out + out
      ReLU:     1 per element; max-pool: k*k-1 comparisons per output; flatten: 0
      softmax cross-entropy: 4K per image for K classes, shown apart from the totals
      training: 3 x forward (backward ~ 2 x forward), a convention
    Dense FLOPs are what a dense kernel executes; effective FLOPs count only
    unmasked weights between live units and ReLU/pooling on live channels.
    Parameters: total, nonzero, effective (nonzero and not dead).
    """
    import json

    from minicnn.pruning import flops

    if arch is not None and checkpoint is not None:
        raise MiniCNNError("give --arch or --checkpoint, not both")
    if checkpoint is not None:
        from minicnn.io.checkpoint import load_checkpoint

        model, _info = load_checkpoint(checkpoint, backend="ref")
    else:
        import numpy as np

        from minicnn.nn.model import build_model

        model = build_model(arch or paper.ARCH, rng=np.random.default_rng(0), backend="ref")
    counts = flops.count(model)
    if as_json:
        click.echo(json.dumps(counts, indent=2))
    else:
        click.echo(f"model: {model.arch} ({model.spec})")
        click.echo(flops.format_table(counts))


def _compacted_from(checkpoint: str):
    """Whether a file is the compact checkpoint `minicnn compact CHECKPOINT` wrote (then it may be replaced)."""
    def ours(path: Path) -> bool:
        from minicnn.io.checkpoint import load_checkpoint

        try:
            _model, info = load_checkpoint(path, backend="ref")
        except MiniCNNError:
            return False
        source = info["config"].get("compacted_from")
        return source is not None and Path(source).resolve() == Path(checkpoint).resolve()
    return ours


@click.command("compact")
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="Where to write the compact checkpoint [default: CHECKPOINT with suffix .compact.h5].")
@click.option("--force", is_flag=True, help="Replace --out even if it is another file.")
def compact_cmd(checkpoint, out, force):
    """Physically drop the filters and neurons that structured pruning removed (and the next layer's
    inputs that read them). The compact model computes exactly the same outputs, faster.

    An existing --out is replaced only if it is an earlier compact copy of the same CHECKPOINT (or with
    --force). A checkpoint whose training diverged (NaN or infinite weights, or a recorded NaN/inf
    loss) is refused: which units are dead would be meaningless."""
    from minicnn.io.checkpoint import load_trained, save_checkpoint
    from minicnn.pruning.compact import compact, compact_summary

    model, info = load_trained(checkpoint, backend="ref")
    out = Path(out or Path(checkpoint).with_suffix(".compact.h5"))
    if out.resolve() == Path(checkpoint).resolve():
        raise MiniCNNError("--out must differ from CHECKPOINT (the full-size checkpoint is kept)")
    refuse_overwrite(out, force, _compacted_from(checkpoint))
    small, _ = compact(model)
    save_checkpoint(out, small, config={**info["config"], "compacted_from": str(checkpoint)}, epoch=info["epoch"],
                    history=info["history"], extra=info["extra"])
    click.echo(f"{checkpoint}: {compact_summary(model, small)}; "
               f"{model.num_params():,} -> {small.num_params():,} parameters -> {out}")
