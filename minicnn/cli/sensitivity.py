"""minicnn sensitivity: every prunable layer pruned alone at increasing amounts, without fine-tuning."""

from __future__ import annotations

from pathlib import Path

import click

from minicnn import paper
from minicnn.cli.common import backend_option, data_options, refuse_overwrite
from minicnn.errors import MiniCNNError
from minicnn.pruning.criteria import CRITERIA, DEFAULT


@click.command("sensitivity")
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option("--amounts", default=",".join(f"{a:g}" for a in paper.AMOUNTS), show_default=True,
              help="Comma-separated fractions of each layer to prune, increasing, in [0, 1].")
@click.option("--structured/--unstructured", default=False, show_default=True,
              help="Whole filters/neurons by L2 norm (the output layer is skipped), or single weights.")
@click.option("--criterion", type=click.Choice(list(CRITERIA)), default=DEFAULT, show_default=True,
              help="What ranks the weights (gradmag uses the first training batches).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random criterion.")
@data_options
@backend_option
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Folder for the table and figure [default: <CHECKPOINT stem>-sensitivity beside it].")
@click.option("--force", is_flag=True, help="Replace a table in --out written for another checkpoint.")
def sensitivity_cmd(checkpoint, amounts, structured, criterion, seed, data_path, normalize, train_limit,
                    test_limit, backend, out_dir, force):
    """Prune each prunable layer of CHECKPOINT alone, at each amount, and measure test accuracy and
    loss right after pruning, WITHOUT fine-tuning (Distiller's sensitivity analysis): how much each
    layer tolerates, to choose per-layer amounts. Each trial starts from the checkpoint's weights; the
    file is never changed.

    \b
    Writes into --out:
      sensitivity.csv, .h5   one row per (layer, amount): layer, method, criterion,
                             seed, amount, unit, pruned, total, test_acc, test_loss,
                             acc_drop (unpruned - pruned), params_effective
      sensitivity.png, .svg  test accuracy vs amount, one curve per layer,
                             the unpruned accuracy dashed
    Prints the table and the most sensitive layer: the largest accuracy drop at the
    amount below 1 where the layers differ most. The normalisation stored in the checkpoint is used unless
    --normalize is given. A checkpoint whose training diverged is refused.
    """
    from minicnn.io.checkpoint import load_trained
    from minicnn.io.data import load_cifar10, make_normalizer
    from minicnn.pruning.masks import parse_amounts
    from minicnn.study import sensitivity as sense
    from plots.sensitivity import sensitivity_figure

    amount_list = parse_amounts(amounts)
    method = "structured" if structured else "unstructured"
    out = Path(out_dir) if out_dir else Path(checkpoint).parent / f"{Path(checkpoint).stem}-sensitivity"
    if out.exists() and not out.is_dir():
        raise MiniCNNError(f"--out {out} is a file; pass a folder")
    model, info = load_trained(checkpoint, backend=backend)
    sense.sensitive_layers(model, method)
    refuse_overwrite(out / f"{sense.STEM}.h5", force, lambda p: sense.written_for(p, checkpoint))
    if click.get_current_context().get_parameter_source("normalize") == click.core.ParameterSource.DEFAULT:
        normalize = info["config"].get("normalize", normalize)
    dataset = load_cifar10(data_path, train_limit=train_limit, test_limit=test_limit)
    norm = make_normalizer(normalize, dataset)
    unpruned, rows = sense.sensitivity(model, dataset, norm, amount_list, method, criterion, seed=seed,
                                       batch_size=info["config"].get("batch_size", paper.BATCH_SIZE))
    paths = sense.save_sensitivity(rows, out, unpruned, checkpoint=str(checkpoint))
    paths += sensitivity_figure(rows, unpruned["acc"], out,
                                title=f"{Path(checkpoint).name}: {method}, {criterion}, no fine-tuning")
    click.echo(f"{checkpoint}: {model.arch}, test acc on {len(dataset.y_test):,} images, each layer pruned "
               f"alone ({method}, {criterion}), no fine-tuning")
    click.echo(sense.format_table(rows, unpruned))
    worst, at = sense.most_sensitive(rows)
    if worst is not None:
        click.echo(f"most sensitive: {worst.layer} (test acc {unpruned['acc']:.2%} -> {worst.test_acc:.2%} "
                   f"at amount {at:g})")
    for path in paths:
        click.echo(str(path))
