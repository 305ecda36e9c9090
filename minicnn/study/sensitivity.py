"""Sensitivity analysis (Distiller's ``--sense``): each prunable layer pruned alone, at increasing amounts,
and the model's test accuracy and loss measured right after pruning, without fine-tuning. It shows which
layers tolerate pruning and which do not, to choose per-layer amounts.

Every (layer, amount) starts from a fresh copy of the given model, so the model (and the checkpoint it
came from) is never changed. The layer is pruned by ``prune_model(..., names=[layer])``: exactly the mask
pruning every layer at that amount would give it, the other layers untouched. Structured pruning skips
the last prunable layer (its rows are the classes), as ``prune_model`` does.

    sensitivity.csv   one header line, one line per (layer, amount); the columns of ``SensitivityRow``
    sensitivity.h5    one dataset per column; attrs: format "minicnn-sensitivity", version, checkpoint,
                      test_acc_unpruned, test_loss_unpruned
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from minicnn.errors import MiniCNNError
from minicnn.nn.model import model_from_config
from minicnn.nn.train import evaluate
from minicnn.pruning.criteria import Context
from minicnn.pruning.flops import count
from minicnn.pruning.masks import check_amounts, check_method_scope, parse_amounts, prune_model
from minicnn.study.results import read_table, write_table

FORMAT = "minicnn-sensitivity"
VERSION = 1
STEM = "sensitivity"


@dataclass(frozen=True)
class SensitivityRow:
    """One layer pruned alone to one amount, measured on the test split without fine-tuning."""

    layer: str
    method: str                      # unstructured | structured
    criterion: str                   # what ranked the weights (minicnn.pruning.criteria)
    seed: int                        # the random criterion's seed
    amount: float                    # cumulative fraction of the layer's weights (or slices) pruned
    unit: str                        # what `pruned` and `total` count: weights, filters or neurons
    pruned: int
    total: int
    test_acc: float                  # fraction
    test_loss: float
    acc_drop: float                  # unpruned test accuracy - test_acc
    params_effective: int            # whole model: nonzero and not dead


COLUMNS = tuple(f.name for f in dataclasses.fields(SensitivityRow))
TEXT_COLUMNS = tuple(f.name for f in dataclasses.fields(SensitivityRow) if f.type == "str")


def copy_model(model):
    """An independent copy of ``model``: same layers, parameters and masks, same backend."""
    clone = model_from_config(model.config(), backend=model.backend)
    for mine, theirs in zip(clone.layers, model.layers):
        mine.params = {k: v.copy() for k, v in theirs.params.items()}
        mine.masks = {k: m.copy() for k, m in theirs.masks.items()}
    return clone


def sensitive_layers(model, method: str) -> list[str]:
    """Names of the layers a sensitivity analysis prunes: every prunable layer; structured, all but the
    last (the classes). MiniCNNError when there is none."""
    names = [layer.name for layer in model.prunable_layers()]
    if method == "structured":
        names = names[:-1]
    if not names:
        raise MiniCNNError(f"the model has no layer to prune {method}ly (structured pruning leaves the "
                           f"output layer alone); prune --unstructured")
    return names


def sensitivity(model, dataset, normalizer, amounts, method: str = "unstructured", criterion: str = "magnitude",
                seed: int = 0, batch_size: int = 512, on_row=None) -> tuple[dict, list[SensitivityRow]]:
    """Prune each layer of ``sensitive_layers(model, method)`` alone to each of ``amounts`` (on a copy of
    ``model``, which is left as it is) and measure test accuracy and loss without fine-tuning.

    dataset: a Dataset (test split measured; training split for gradmag's gradients); normalizer: uint8
    batch -> float32 batch; seed: the random criterion's (step 0); batch_size: gradmag's batches.
    ``on_row(row)`` is called after each row. A model that already carries masks keeps them: an amount
    below a layer's pruned fraction prunes nothing more there.
    Returns (unpruned {'acc', 'loss'}, rows in layer order, then amount order).
    """
    amounts = parse_amounts(amounts) if isinstance(amounts, str) else check_amounts(amounts)
    check_method_scope(method, "layer")
    names = sensitive_layers(model, method)
    unpruned = evaluate(model, dataset.x_test, dataset.y_test, normalizer)
    rows = []
    for name in names:
        for amount in amounts:
            trial = copy_model(model)
            context = Context(seed=seed, step=0, model=trial, images=dataset.x_train, labels=dataset.y_train,
                              normalize=normalizer, batch_size=batch_size)
            entry = prune_model(trial, amount, method, "layer", criterion, context, names=[name])[name]
            measured = evaluate(trial, dataset.x_test, dataset.y_test, normalizer)
            row = SensitivityRow(layer=name, method=method, criterion=criterion, seed=int(seed), amount=amount,
                                 unit=entry["unit"], pruned=entry["pruned"], total=entry["total"],
                                 test_acc=measured["acc"], test_loss=measured["loss"],
                                 acc_drop=unpruned["acc"] - measured["acc"],
                                 params_effective=count(trial)["totals"]["params_effective"])
            rows.append(row)
            if on_row is not None:
                on_row(row)
    return unpruned, rows


def most_sensitive(rows: list[SensitivityRow]):
    """(row, amount): the layer with the largest accuracy drop at the amount below 1, measured for every
    layer, where the layers' drops differ most (largest minus smallest; ties: the larger amount, then the
    first layer); (None, None) when there is no such amount. Near 100 % every layer collapses to chance, so
    the largest amount alone would call layers alike that differ well before it."""
    layers = list(dict.fromkeys(r.layer for r in rows))
    common = set.intersection(*({r.amount for r in rows if r.layer == name} for name in layers)) if layers else set()
    below = [a for a in common if a < 1.0]
    if not below:
        return None, None

    def spread(amount):
        drops = [r.acc_drop for r in rows if r.amount == amount]
        return max(drops) - min(drops), amount

    amount = max(below, key=spread)
    at = [r for r in rows if r.amount == amount]
    return max(at, key=lambda r: r.acc_drop), amount


def save_sensitivity(rows: list[SensitivityRow], out_dir, unpruned: dict, checkpoint: str = "") -> list[Path]:
    """Write ``out_dir``/sensitivity.csv and .h5 atomically; returns their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, h5_path = out_dir / f"{STEM}.csv", out_dir / f"{STEM}.h5"
    attrs = {"format": FORMAT, "version": VERSION, "checkpoint": str(checkpoint),
             "test_acc_unpruned": float(unpruned["acc"]), "test_loss_unpruned": float(unpruned["loss"])}
    write_table(rows, COLUMNS, TEXT_COLUMNS, csv_path, h5_path, attrs)
    return [csv_path, h5_path]


def load_sensitivity(path) -> list[SensitivityRow]:
    """The rows of a sensitivity CSV (``save_sensitivity``'s), each cell typed as its column."""
    return read_table(path, SensitivityRow, "rerun `minicnn sensitivity` to rewrite it")


def written_for(h5_path, checkpoint) -> bool:
    """Whether ``h5_path`` is a sensitivity table this module wrote for ``checkpoint`` (then a rerun may
    replace it)."""
    import h5py

    try:
        with h5py.File(h5_path, "r") as f:
            return (f.attrs.get("format") == FORMAT
                    and Path(str(f.attrs.get("checkpoint"))).resolve() == Path(checkpoint).resolve())
    except (OSError, ValueError):
        return False


def format_table(rows: list[SensitivityRow], unpruned: dict) -> str:
    """Test accuracy (%) per amount (lines) and layer (columns), with the unpruned accuracy on top."""
    layers = list(dict.fromkeys(r.layer for r in rows))
    amounts = list(dict.fromkeys(r.amount for r in rows))
    acc = {(r.layer, r.amount): r.test_acc for r in rows}
    width = max([8] + [len(name) + 2 for name in layers])
    lines = [f"{'amount':>7}" + "".join(f"{name:>{width}}" for name in layers),
             f"{'none':>7}" + "".join(f"{unpruned['acc']:>{width}.2%}" for _ in layers)]
    for amount in amounts:
        cells = [f"{acc[(name, amount)]:>{width}.2%}" if (name, amount) in acc else " " * width for name in layers]
        lines.append(f"{amount:>7g}" + "".join(cells))
    return "\n".join(lines)
