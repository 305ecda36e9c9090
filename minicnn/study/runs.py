"""Pruning runs: a schedule of amounts applied to a trained baseline, fine-tuned after every step,
measured, checkpointed and resumable.

A run lives in one directory:
    run.json             the run's settings (PruneConfig); a rerun with other settings is refused
    baseline.h5          the trained baseline (unless --baseline points elsewhere)
    steps/NNN_amount_A.h5   the model after step NNN (pruned to A, fine-tuned)
    results.csv / .h5    one row per finished step (minicnn.study.results.ResultRow)
A step starts from the baseline (oneshot) or the previous step's model (iterative, agp, lth); lth then
rewinds the survivors (its rewind source: the baseline's seed for init, else the snapshot OUT/baseline.epochK.h5
its training saved), agp prunes while it fine-tunes. Every row records the fine-tuning budget spent to reach
it (epochs_spent, train_flops_spent: this step's, plus the previous row's but for oneshot).
Each step's checkpoint and the results are written atomically after the step finishes; a rerun
skips finished steps and redoes an unfinished one from the previous step's checkpoint. Fine-tuning
is deterministic for a given seed and thread count, so a resumed run reproduces the uninterrupted
one's table (wall times aside).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np

from minicnn.errors import MiniCNNError
from minicnn.io.checkpoint import load_checkpoint, load_trained, read_extra, save_checkpoint
from minicnn.io.data import load_cifar10, make_normalizer
from minicnn.nn.model import build_model, resolve_arch
from minicnn.nn.train import Optimizer, SGDConfig, evaluate, fit, has_diverged
from minicnn.pruning.compact import compact, expand_into
from minicnn.pruning.criteria import Context
from minicnn.pruning.masks import prune_model
from minicnn.pruning.schedules import AGP_STEPS, agp_interval, agp_updates, parameters_of, rewind
from minicnn.study.config import PruneConfig, TrainConfig, rewind_epochs
from minicnn.study.results import ResultRow, load_results, save_results
from minicnn.study.rundir import claim_dir, read_settings, step_path
from minicnn.study.training import run_training, snapshot_path


def prepare_run_dir(out_dir: Path, config: PruneConfig, force: bool) -> list[ResultRow]:
    """Create or reopen a run directory; returns the rows already finished there.

    A directory holding a run with other settings is refused (MiniCNNError) unless ``force``, which
    deletes that run's steps and results first.
    """
    out_dir = Path(out_dir)
    claim_dir(out_dir, "run.json", config, force, ("steps", "results.csv", "results.h5"), "a pruning run")
    rows = load_results(out_dir) if (out_dir / "results.csv").exists() else []
    finished = []
    for row in _with_checkpoint(out_dir, rows):  # the step's checkpoint holds its row at full precision
        stored = read_extra(step_path(out_dir, row.step, row.amount)).get("row")
        finished.append(ResultRow.from_dict(stored) if stored else row)
    return finished


def _with_checkpoint(out_dir: Path, rows: list[ResultRow]) -> list[ResultRow]:
    """The rows whose step checkpoint is there: the finished steps (a row without one is redone)."""
    return [row for row in rows if step_path(out_dir, row.step, row.amount).exists()]


def is_finished(config: PruneConfig, out_dir) -> bool:
    """Whether ``out_dir`` holds the run ``config`` with every step finished (rerunning it does nothing)."""
    out_dir = Path(out_dir)
    stored = read_settings(out_dir / "run.json")
    if stored is None or config.differences(stored) or not (out_dir / "results.csv").is_file():
        return False
    try:
        rows = load_results(out_dir)
    except MiniCNNError:  # damaged: the rerun reports it
        return False
    return {r.step for r in _with_checkpoint(out_dir, rows)} == set(range(len(config.amounts)))


def measure(model, dataset, normalizer, run_model=None) -> dict:
    """Accuracy and loss on both splits and the parameter/FLOP counts of ``model``: the ResultRow fields
    a step measures after fine-tuning. ``run_model``, if given, computes the same function faster (the
    compacted model) and is the one evaluated."""
    from minicnn.pruning.flops import count

    totals = count(model)["totals"]
    run_model = model if run_model is None else run_model
    train_m = evaluate(run_model, dataset.x_train, dataset.y_train, normalizer)
    test_m = evaluate(run_model, dataset.x_test, dataset.y_test, normalizer)
    return {"params_total": totals["params"], "params_nonzero": totals["params_nonzero"],
            "params_effective": totals["params_effective"],
            "remaining_effective": totals["params_effective"] / totals["params"],
            "flops_dense": totals["flops_dense"], "flops_effective": totals["flops_effective"],
            "training_flops_effective": totals["training_flops_effective"],
            "train_acc": train_m["acc"], "train_loss": train_m["loss"],
            "test_acc_after": test_m["acc"], "test_loss": test_m["loss"]}


def _baseline(config: PruneConfig, out_dir: Path, dataset, backend: str, progress_factory, echo,
              baseline_file=None):
    """(path, model, info) of the trained baseline to prune: ``baseline_file`` (a copy of ``config.baseline``
    lying elsewhere), ``config.baseline``, or the paper's baseline trained into ``out_dir/baseline.h5``
    (reused when it is there). Checked against the config."""
    baseline = baseline_file if baseline_file is not None else config.baseline
    if baseline is None:
        baseline = out_dir / "baseline.h5"
        base_cfg = config.baseline_config()
        echo(f"baseline: {baseline} (arch {config.arch}, lr {base_cfg.lr}, {base_cfg.epochs} epochs)")
        run_training(base_cfg, baseline, dataset=dataset, backend=backend, progress_factory=progress_factory,
                     echo=echo, snapshots=rewind_epochs(config.rewind))
    model, info = load_trained(baseline, backend=backend, role="baseline")
    if model.spec != resolve_arch(config.arch)[1]:
        its_arch = model.arch if model.arch != "custom" else repr(model.spec)
        raise MiniCNNError(f"baseline {baseline} is a {model.arch!r} model ({model.spec}), not "
                           f"{config.arch!r}; pass --arch {its_arch} or another --baseline")
    if info["config"].get("normalize", config.normalize) != config.normalize:
        raise MiniCNNError(f"baseline {baseline} was trained with --normalize "
                           f"{info['config'].get('normalize')}; pass the same --normalize")
    return baseline, model, info


def _step_progress(progress_factory, step: int, n_steps: int, amount: float):
    """The epoch bars of a step also say which step of the schedule it is."""
    if progress_factory is None:
        return None
    prefix = f"step {step + 1}/{n_steps} (amount {amount:g}),"
    return lambda label, n: progress_factory(f"{prefix} {label}", n)


def run_step(config: PruneConfig, step: int, model, dataset, normalizer, progress_factory=None, rewind_to=None,
             velocity=None):
    """Prune ``model`` (the previous step's, or the baseline) to ``config.amounts[step]`` in place,
    fine-tune it and measure it. Returns (row without its wall time, history, optimizer or None); the
    row's epochs_spent and train_flops_spent are this step's alone (run_prune adds the earlier steps').

    lth: ``rewind_to`` ({layer: {param: array}}) is restored after pruning (masks kept); the row's
    test_acc_before is the pruned model's, before the rewind. agp: see :func:`_agp_step` (``velocity``:
    the momentum buffers the previous target's fine-tuning ended with)."""
    from minicnn.pruning.flops import count

    if config.schedule == "agp":
        return _agp_step(config, step, model, dataset, normalizer, progress_factory, velocity)
    amount = config.amounts[step]
    context = Context(seed=config.seed, step=step, model=model, images=dataset.x_train, labels=dataset.y_train,
                      normalize=normalizer, batch_size=config.batch_size)
    prune_model(model, amount, config.method, config.scope, config.criterion, context)
    before = None
    if rewind_to is not None:
        before = evaluate(model, dataset.x_test, dataset.y_test, normalizer)["acc"]
        rewind(model, rewind_to)
    optimizer = Optimizer(SGDConfig(config.lr, config.momentum, config.weight_decay))
    # fine-tune the compact model (removed filters physically dropped: faster, same function),
    # then write it back into the full-size model that checkpoints and masks describe
    trained, kept = compact(model) if config.compact else (model, None)
    if before is None:
        before = evaluate(trained, dataset.x_test, dataset.y_test, normalizer)["acc"]
    per_image = count(model)["totals"]["training_flops_effective"]  # the masks hold through fine-tuning
    history = fit(trained, optimizer, dataset, epochs=config.epochs, batch_size=config.batch_size,
                  normalizer=normalizer, seed=config.seed * 1000 + step + 1, test_every_epoch=False,
                  progress_factory=_step_progress(progress_factory, step, len(config.amounts), amount))
    if kept is not None:
        expand_into(model, trained, kept)
        optimizer = None  # its buffers have the compact shapes
    spent = per_image * len(dataset.y_train) * len(history)
    return _row(config, step, model, trained, dataset, normalizer, before, history, spent), history, optimizer


def _agp_step(config: PruneConfig, step: int, model, dataset, normalizer, progress_factory, velocity):
    """One AGP target: fine-tune ``config.epochs`` epochs from the previous target's model while the masks
    follow the cubic ramp from the previous target (0 for the first) to this one (minicnn.pruning.schedules:
    ``agp_steps`` updates, ``agp_interval`` batches apart). The full-size model trains (the masks change
    as it does); train FLOPs are summed batch by batch with the masks of the moment. test_acc_before is
    NaN: the pruning happens during training."""
    from minicnn.pruning.flops import count

    amount = config.amounts[step]
    per_epoch = math.ceil(len(dataset.y_train) / config.batch_size)
    n = config.agp_steps or AGP_STEPS
    inside, after = agp_updates(config.amounts[step - 1] if step else 0.0, amount, n,
                                agp_interval(per_epoch, config.agp_interval), config.epochs * per_epoch)
    pending = sorted(inside.items()) + [(None, s) for s in after]
    state = {"per_image": count(model)["totals"]["training_flops_effective"], "spent": 0, "update": 0}

    def update(sparsity):
        state["update"] += 1
        context = Context(seed=config.seed, step=step * (n + 1) + state["update"], model=model,
                          images=dataset.x_train, labels=dataset.y_train, normalize=normalizer,
                          batch_size=config.batch_size)
        prune_model(model, sparsity, config.method, config.scope, config.criterion, context)
        state["per_image"] = count(model)["totals"]["training_flops_effective"]

    def before_batch(epoch, batch, n_images):
        while pending and pending[0][0] == epoch * per_epoch + batch:
            update(pending.pop(0)[1])
        state["spent"] += state["per_image"] * n_images

    optimizer = Optimizer(SGDConfig(config.lr, config.momentum, config.weight_decay), dict(velocity or {}))
    history = fit(model, optimizer, dataset, epochs=config.epochs, batch_size=config.batch_size,
                  normalizer=normalizer, seed=config.seed * 1000 + step + 1, test_every_epoch=False,
                  progress_factory=_step_progress(progress_factory, step, len(config.amounts), amount),
                  before_batch=before_batch)
    for _, sparsity in pending:  # beyond the budget's batches (or after a divergence): at its end
        update(sparsity)
    row = _row(config, step, model, model, dataset, normalizer, math.nan, history, state["spent"])
    return row, history, optimizer


def _row(config: PruneConfig, step: int, model, trained, dataset, normalizer, before: float, history,
         spent: int) -> dict:
    """The step's ResultRow fields but its wall time: ``model`` measured (on ``trained``, the same function)."""
    measured = measure(model, dataset, normalizer, run_model=trained)
    diverged = has_diverged(model, history, measured["train_loss"], measured["test_loss"])
    amount = config.amounts[step]
    return dict(schedule=config.schedule, method=config.method, scope=config.scope, lr=config.lr, seed=config.seed,
                step=step, amount=amount, remaining=1 - amount, test_acc_before=before, epochs=config.epochs,
                diverged=diverged, criterion=config.criterion, epochs_spent=len(history), train_flops_spent=spent,
                **measured)


def _rewind_source(config: PruneConfig, baseline: Path, info: dict, backend: str) -> dict | None:
    """lth: the parameters every step rewinds to: the baseline's initial weights (rebuilt from the seed its
    checkpoint records: the same bits) or its snapshot after epoch k (saved by its training run); None for
    the other schedules (``info``: the baseline checkpoint's). MiniCNNError when the baseline saved no such
    snapshot."""
    if config.schedule != "lth":
        return None
    if config.rewind == "init":
        seed = info["config"].get("seed", config.seed)
        return parameters_of(build_model(config.arch, np.random.default_rng(seed), backend=backend))
    k, path = int(config.rewind), snapshot_path(baseline, int(config.rewind))
    if not path.is_file():
        fix = (f"choose --rewind init or an epoch up to {info['epoch']}" if k > info["epoch"] else
               "pass --rewind init, or let the run train its own baseline (no --baseline; delete an old "
               "OUT/baseline.h5) so that it saves the epoch")
        raise MiniCNNError(f"--rewind {k}: the baseline {baseline} saved no weights after epoch {k} "
                           f"({path.name} is missing); {fix}")
    snap, snap_info = load_checkpoint(path, backend=backend)
    if TrainConfig.from_dict(snap_info["config"]).differences(info["config"], ignore=TrainConfig.EXTENDABLE):
        raise MiniCNNError(f"--rewind {k}: {path} belongs to another training run than {baseline}; delete it")
    return parameters_of(snap)


def run_prune(config: PruneConfig, out_dir, *, data_path=None, dataset=None, backend: str = "fast",
              force: bool = False, echo=print, progress_factory=None, step_progress=None,
              baseline_file=None) -> list[ResultRow]:
    """Run (or resume) one pruning schedule; returns all result rows.

    Without ``config.baseline``, the paper's baseline is trained into ``out_dir/baseline.h5`` (or reused
    if it is already there with the same settings). ``baseline_file``: read the baseline from there
    instead of ``config.baseline`` (a copy on another machine), while the run's settings still name
    ``config.baseline``. ``step_progress(done, total)`` is called as steps finish.
    """
    out_dir = Path(out_dir)
    rows = prepare_run_dir(out_dir, config, force)
    amounts = config.amounts
    done = {r.step for r in rows}
    if len(done) == len(amounts):
        echo(f"{out_dir}: all {len(amounts)} steps already finished")
        return sorted(rows, key=lambda r: r.step)

    if dataset is None:
        dataset = load_cifar10(data_path, train_limit=config.train_limit, test_limit=config.test_limit)
    normalizer = make_normalizer(config.normalize, dataset)
    baseline, base_model, base_info = _baseline(config, out_dir, dataset, backend, progress_factory, echo,
                                                baseline_file)
    rewind_to = _rewind_source(config, Path(baseline), base_info, backend)
    stored = config.to_dict()

    for step, amount in enumerate(amounts):
        if step in done:
            continue
        t0 = time.perf_counter()
        start = baseline if config.schedule == "oneshot" or step == 0 else step_path(out_dir, step - 1,
                                                                                      amounts[step - 1])
        model, info = load_checkpoint(start, backend=backend)
        if model.arch != base_model.arch or model.spec != base_model.spec:
            raise MiniCNNError("a step checkpoint does not match the baseline's architecture; pass --force")
        velocity = info["velocity"] if config.schedule == "agp" and step else None  # one continuous run
        values, history, optimizer = run_step(config, step, model, dataset, normalizer, progress_factory,
                                              rewind_to, velocity)
        if config.schedule != "oneshot" and step:  # the budget spent so far: every earlier step's too
            previous = next(r for r in rows if r.step == step - 1)
            for key in ("epochs_spent", "train_flops_spent"):
                values[key] = values[key] + getattr(previous, key) if getattr(previous, key) >= 0 else -1
        row = ResultRow(**values, seconds=time.perf_counter() - t0)
        save_checkpoint(step_path(out_dir, step, amount), model, optimizer, config={**stored, "step": step},
                        epoch=len(history), history=history, extra={"row": row.to_dict()})
        rows = sorted([r for r in rows if r.step != step] + [row], key=lambda r: r.step)
        save_results(rows, out_dir / "results.csv", out_dir / "results.h5")
        echo(format_row(row))
        if step_progress is not None:
            step_progress(len(rows), len(amounts))
    return rows


def format_row(row: ResultRow) -> str:
    return (f"{row.schedule:9s} {row.method:12s} lr {row.lr:<7g} amount {row.amount:5.3f}  "
            f"params {row.params_effective:6d}  FLOPs {row.flops_effective:8d}  "
            f"test before {row.test_acc_before:6.2%}  after {row.test_acc_after:6.2%}  "
            f"train {row.train_acc:6.2%}  x{row.compression_ratio:.3g} params, x{row.theoretical_speedup:.3g} "
            f"FLOPs, {row.epochs_spent} epochs spent{'  DIVERGED' if row.diverged else ''}")


def format_table(rows: list[ResultRow]) -> str:
    """The results as an aligned text table (compression: total / nonzero parameters; speedup: dense /
    effective FLOPs; epochs: fine-tuning epochs spent to reach the row)."""
    head = (f"{'schedule':9s} {'method':12s} {'criterion':9s} {'lr':>7s} {'seed':>10s} {'amount':>6s} {'params':>7s} {'FLOPs':>9s} "
            f"{'test before':>11s} {'test after':>10s} {'train':>7s} {'compr':>7s} {'speedup':>7s} {'epochs':>6s} "
            f"{'time s':>7s}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r.schedule:9s} {r.method:12s} {r.criterion:9s} {r.lr:7g} {r.seed:10d} {r.amount:6.3f} "
                     f"{r.params_effective:7d} {r.flops_effective:9d} {r.test_acc_before:11.2%} "
                     f"{r.test_acc_after:10.2%} {r.train_acc:7.2%} {r.compression_ratio:7.3g} "
                     f"{r.theoretical_speedup:7.3g} {r.epochs_spent:6d} {r.seconds:7.1f}"
                     f"{'  diverged' if r.diverged else ''}")
    return "\n".join(lines)
