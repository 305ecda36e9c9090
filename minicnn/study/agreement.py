"""Mask agreement: how far two pruning runs keep the same weights, from a sweep's step checkpoints.

The agreement of two masks is the Jaccard overlap of their kept weights, |A ∩ B| / |A ∪ B| over every
prunable weight of the model (1 when they keep the same weights; 1 also when both keep none). Two kinds
of pairs are compared at each amount:

- ``criteria``: the same run (schedule, method, scope, lr, seed) pruned by two criteria;
- ``seeds``: the same configuration and criterion with two seeds.

Runs are the folders ``SWEEP/runs/*`` (settings in ``run.json``, step checkpoints in
``steps/NNN_amount_A.h5``, ``minicnn.study.rundir``); the masks come from ``load_checkpoint``. Pairs whose
masks differ in shape (a compacted checkpoint) are skipped. Each row averages its pairs.

The step checkpoints stay where the study ran; ``save_agreement`` keeps the rows as a CSV (the report
writes ``mask_agreement.csv`` beside itself) that ``load_agreement`` reads where the checkpoints are not.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from minicnn.study.curves import amount_key, fmt_lr, lr_key
from minicnn.study.results import read_table, write_table
from minicnn.study.rundir import read_settings

_STEP = re.compile(r"^\d+_amount_([0-9.]+)\.h5$")


@dataclass(frozen=True)
class AgreementRow:
    """Mean Jaccard overlap of kept weights over ``pairs`` pairs of runs at one amount."""

    kind: str            # "criteria" (two criteria, same seed) or "seeds" (two seeds, same criterion)
    schedule: str
    method: str
    scope: str
    lr: float
    amount: float
    first: str           # a criterion (for seeds: the criterion of both)
    second: str
    jaccard: float       # mean over pairs
    jaccard_min: float
    pairs: int


COLUMNS = tuple(f.name for f in dataclasses.fields(AgreementRow))
TEXT_COLUMNS = tuple(f.name for f in dataclasses.fields(AgreementRow) if f.type == "str")


def save_agreement(rows: list[AgreementRow], csv_path) -> Path:
    """Write the rows as a CSV file (floats with 6 significant digits), atomically; returns its path."""
    write_table(rows, COLUMNS, TEXT_COLUMNS, csv_path)
    return Path(csv_path)


def load_agreement(csv_path) -> list[AgreementRow]:
    """The rows of a CSV ``save_agreement`` wrote, each cell typed as its column."""
    return read_table(csv_path, AgreementRow, "rerun `minicnn report` where the step checkpoints are to rewrite it")


def jaccard(kept_a: np.ndarray, kept_b: np.ndarray) -> float:
    """|A ∩ B| / |A ∪ B| of two boolean arrays of kept entries (1.0 when both keep nothing)."""
    a, b = np.asarray(kept_a, dtype=bool).ravel(), np.asarray(kept_b, dtype=bool).ravel()
    if a.shape != b.shape:
        raise ValueError(f"masks of {a.size} and {b.size} entries cannot be compared")
    union = int(np.count_nonzero(a | b))
    return 1.0 if union == 0 else int(np.count_nonzero(a & b)) / union


def kept_weights(path) -> np.ndarray:
    """The kept (mask 1) entries of every prunable weight of a checkpoint, flattened and concatenated."""
    from minicnn.io.checkpoint import load_checkpoint

    model, _info = load_checkpoint(path, backend="ref")
    parts = []
    for layer in model.prunable_layers():
        mask = layer.masks.get("weight")
        parts.append(np.ones(layer.params["weight"].size, bool) if mask is None else mask.ravel() != 0)
    return np.concatenate(parts) if parts else np.zeros(0, bool)


def _runs(sweep_dir: Path) -> list[tuple[dict, dict[float, Path]]]:
    """(settings, {amount: step checkpoint}) of every run folder with settings and steps."""
    found = []
    for run in sorted((Path(sweep_dir) / "runs").glob("*")):
        settings = read_settings(run / "run.json")
        if not settings:
            continue
        steps = {}
        for path in sorted((run / "steps").glob("*.h5")):
            match = _STEP.match(path.name)
            if match:
                steps[amount_key(match.group(1))] = path
        if steps:
            found.append((settings, steps))
    return found


def as_folders(folders) -> list[Path]:
    """A folder, several, or None as a list of Paths."""
    if folders is None:
        return []
    return [Path(folders)] if isinstance(folders, (str, Path)) else [Path(f) for f in folders]


def mask_agreement(sweep_dirs) -> list[AgreementRow]:
    """Agreement rows of one sweep folder or several (runs of different folders pair up as well): criteria
    pairs, then seed pairs, each by configuration and amount. The same run in two folders pairs with nothing."""
    runs = [run for folder in as_folders(sweep_dirs) for run in _runs(folder)]
    cache: dict[Path, np.ndarray] = {}

    def kept(path):
        if path not in cache:
            cache[path] = kept_weights(path)
        return cache[path]

    groups: dict[tuple, list] = {}
    for (sa, steps_a), (sb, steps_b) in itertools.combinations(runs, 2):
        config_a, config_b = _config(sa), _config(sb)
        if config_a != config_b:
            continue
        crit_a, crit_b = sa.get("criterion", "magnitude"), sb.get("criterion", "magnitude")
        if crit_a != crit_b and sa["seed"] == sb["seed"]:
            kind, first, second = "criteria", *sorted((crit_a, crit_b), key=_criterion_rank)
        elif crit_a == crit_b and sa["seed"] != sb["seed"]:
            kind, first, second = "seeds", crit_a, crit_b
        else:
            continue
        for amount in sorted(set(steps_a) & set(steps_b)):
            a, b = kept(steps_a[amount]), kept(steps_b[amount])
            if a.shape == b.shape:
                groups.setdefault((kind, *config_a, amount, first, second), []).append(jaccard(a, b))
    rows = [AgreementRow(key[0], key[1], key[2], key[3], key[4], key[5], key[6], key[7], float(np.mean(v)),
                         float(np.min(v)), len(v)) for key, v in groups.items()]
    return sorted(rows, key=lambda r: (r.kind != "criteria", r.schedule, r.method, r.scope, -r.lr,
                                       _criterion_rank(r.first), _criterion_rank(r.second), r.amount))


def _config(settings: dict) -> tuple:
    return (settings["schedule"], settings["method"], settings.get("scope", "layer"), lr_key(settings["lr"]))


def _criterion_rank(name: str) -> tuple:
    order = ("magnitude", "random", "gradmag")
    return (order.index(name) if name in order else len(order), name)


def agreement_table(rows: list[AgreementRow]) -> list[str]:
    """Markdown lines: one table row per agreement row (Jaccard as mean, min over pairs)."""
    lines = ["| pair | configuration | amount | Jaccard (mean) | Jaccard (min) | pairs |",
             "|---|---|---:|---:|---:|---:|"]
    for r in rows:
        pair = f"{r.first} vs {r.second}" if r.kind == "criteria" else f"seeds ({r.first})"
        config = f"{r.schedule} {r.method}, {r.scope} scope, lr {fmt_lr(r.lr)}"
        lines.append(f"| {pair} | {config} | {r.amount:g} | {r.jaccard:.3f} | {r.jaccard_min:.3f} | {r.pairs} |")
    return lines
